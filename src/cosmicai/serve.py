"""The engine service of a group job: the model loaded once, partitions inferred on request.

A group job (workflow/rules/infer.smk) is one `cosmicai serve` process, which loads the engine and
writes its address (127.0.0.1 and a free port) to a small JSON file, and one `cosmicai infer --server`
client per partition, which sends its partition and output paths and waits for the answer. Each
partition keeps its own outputs, log and exit status; the service works through the requests in
order, reading the next partition while it computes the current one.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

from cosmicai.atomic import write_json
from cosmicai.errors import CosmicaiError

POLL_S = 0.2
GRACE_S = 3.0


class ServiceLost(CosmicaiError):
    """The group's engine service is not there or died (killed, out of memory): a retry may succeed."""


class _Queue:
    """Requests in arrival order, worked through one at a time; the next one's reads start early."""

    def __init__(self, engine: object, load_s: float) -> None:
        self.engine, self.load_s = engine, load_s
        self.cv = threading.Condition()
        self.todo: collections.deque = collections.deque()
        self.failed: list[dict] = []  # answered only when nothing is left to do (see run)
        self.broken: str | None = None  # the engine could not be loaded: why
        self.served = 0

    def submit(self, request: dict) -> dict:
        """Queue a request and wait for its reply (called from the connection's thread)."""
        item = {"request": request, "done": threading.Event(), "batches": None}
        with self.cv:
            self.todo.append(item)
            self.cv.notify()
        item["done"].wait()
        return item["reply"]

    def run(self) -> None:
        """The worker loop: one partition at a time through the engine."""
        while True:
            with self.cv:
                while not self.todo:
                    self.cv.wait()
                item = self.todo.popleft()
                following = self.todo[0] if self.todo else None
            if following is not None and following["batches"] is None:
                following["batches"] = _start_reading(following["request"])
            item["reply"] = self._infer(item)
            # A failed partition's job ends the group job (Snakemake then stops its other members), so
            # its answer waits until the partitions queued behind it are done.
            if item["reply"]["ok"]:
                item["done"].set()
            else:
                self.failed.append(item)
            with self.cv:  # a grace period for members whose request is still on its way
                idle = not self.failed or not self.cv.wait_for(lambda: self.todo, timeout=GRACE_S)
            if idle:
                for waiting in self.failed:
                    waiting["done"].set()
                self.failed.clear()

    def _infer(self, item: dict) -> dict:
        from cosmicai.infer import check_partition, infer_partition

        req = item["request"]
        if self.broken is not None:
            return {"ok": False, "error": self.broken, "retryable": False}
        try:
            check_partition(req["partition"], req.get("sha256"))
            timings = infer_partition(
                req["partition"],
                self.engine,
                req["output"],
                None,
                req["batch_size"],
                req["on_invalid"],
                model_load_s=0.0 if self.served else self.load_s,
                progress=False,
                batches=item["batches"],
            )
        except CosmicaiError as exc:  # bad input: more resources would not help
            return {"ok": False, "error": str(exc), "retryable": False}
        except Exception as exc:  # noqa: BLE001 - reported to the client, the service goes on
            return {"ok": False, "error": f"{req['partition']}: {type(exc).__name__}: {exc}", "retryable": True}
        self.served += 1
        timings.update(engine_load_s=self.load_s, engine_served=self.served, engine_pid=os.getpid())
        write_json(req["sidecar"], timings)
        return {"ok": True, "timings": timings}


def _start_reading(request: dict):  # an iterator of (batch, wait_s), or None
    """Start streaming a queued partition's batches in the background; None if it cannot be opened yet."""
    from cosmicai.data.dataset import iter_batches
    from cosmicai.infer import prefetch

    if not Path(request["partition"]).is_file():
        return None
    return prefetch(iter_batches(request["partition"], request["batch_size"]))


def serve(address: str | os.PathLike, engine_args: dict) -> None:
    """Publish the address at once (the members' jobs wait for it), load the engine, answer until terminated."""
    from cosmicai.engines.loader import load_engine

    queue = _Queue(None, 0.0)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = json.loads(self.rfile.readline())
            reply = queue.submit(request)
            self.wfile.write((json.dumps(reply, default=float) + "\n").encode())

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        request_queue_size = 1024  # every member of a group connects at once

    parent = os.getppid()

    def orphaned() -> None:  # the group job's Snakemake is gone: nobody will stop this service
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    with Server(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=orphaned, daemon=True).start()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.server_address[:2]
        write_json(address, {"host": host, "port": port, "pid": os.getpid()})
        t = time.perf_counter()
        try:
            queue.engine = load_engine(**engine_args)
        except CosmicaiError as exc:  # every partition's job reports it; the service waits to be stopped
            print(f"cosmicai serve: error: {exc}", flush=True)
            queue.broken = str(exc)
        queue.load_s = time.perf_counter() - t
        if queue.engine is not None:
            print(
                f"engine loaded in {queue.load_s:.1f} s: {queue.engine.runtime} on {queue.engine.device} ({queue.engine.precision})",
                flush=True,
            )
        queue.run()


def ask(address: str | os.PathLike, request: dict, wait_s: float = 900.0) -> dict:
    """Send one request to the group's engine service (waiting for it to come up) and return its reply."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            where = json.loads(Path(address).read_text())
            with socket.create_connection((where["host"], where["port"]), timeout=10) as conn:
                conn.settimeout(None)  # the job's wall-time limit bounds the wait for the answer
                conn.sendall((json.dumps(request) + "\n").encode())
                line = conn.makefile("rb").readline()
            break
        except (FileNotFoundError, ValueError, KeyError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise ServiceLost(
                    address, f"no engine service answered within {wait_s:.0f} s (see its log under logs/serve_engine/)"
                ) from None
            time.sleep(POLL_S)
    if not line:
        raise ServiceLost(address, "the engine service ended without answering (see its log under logs/serve_engine/)")
    return json.loads(line)
