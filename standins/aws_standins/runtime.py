"""One Lambda execution environment: an awslambdaric worker process and the Runtime API it polls."""

from __future__ import annotations

import fcntl
import http.server
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

from .config import FunctionConfig, worker_base_env
from .limits import Sandbox

log = logging.getLogger("aws_standins")

RUNTIME_PREFIX = "/2018-06-01/runtime/"
PAGE = os.sysconf("SC_PAGE_SIZE")

PF_FORKNOEXEC = 0x40  # task flag: forked but has not exec'd (include/linux/sched.h)
YOUNG_COPY_S = 1.0  # a fork this young that has not exec'd is on its way to exec (or a vfork sharing our memory)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """Pids of all descendants of pid (children of every thread, recursively)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
                found.extend(children)
                stack.extend(children)
        except (OSError, ValueError):
            continue
    return found


def _is_young_copy(pid: int) -> bool:
    """A fork that has not exec'd and is younger than YOUNG_COPY_S: its pages are its parent's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return True  # gone already
    # Fields after the command: state is [0], flags [6], starttime [19] (proc(5) numbers them 3, 9, 22).
    flags, started = int(stat[6]), int(stat[19]) / CLOCK_TICKS
    return bool(flags & PF_FORKNOEXEC) and uptime - started < YOUNG_COPY_S


def _uss_bytes(pid: int) -> int:
    """Private (unshared) resident bytes of a process, from /proc/PID/smaps_rollup."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return total


class Invocation:
    """One event on its way through a worker, and what came back."""

    def __init__(self, payload: bytes, arn: str, timeout_s: float, client_context: str | None = None) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.arn = arn
        self.timeout_s = timeout_s
        self.client_context = client_context
        self.trace_id = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"
        self.started: float | None = None  # monotonic time the worker took the event
        self.finished: float | None = None
        self.outcome = ""  # response | error | timeout | oom | exit
        self.body = b""
        self.error_type = ""
        self.done = threading.Event()

    def finish(self, outcome: str, body: bytes = b"", error_type: str = "") -> None:
        """Record the first outcome; later ones (e.g. a kill after a response) are ignored."""
        if self.done.is_set():
            return
        self.finished = time.monotonic()
        self.outcome, self.body, self.error_type = outcome, body, error_type
        self.done.set()


class _RuntimeAPIHandler(http.server.BaseHTTPRequestHandler):
    """Lambda Runtime API for exactly one worker (its own port), so requests need no routing."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; Nagle + delayed ACK adds 40 ms
    server: _RuntimeAPIServer

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("runtime-api %s: " + fmt, self.server.worker.name, *args)

    def _reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        worker = self.server.worker
        if self.path != RUNTIME_PREFIX + "invocation/next":
            self._reply(404)
            return
        inv = worker.next_invocation()
        if inv is None:  # shutting down: the worker exits when next fails
            self._reply(500, b'{"errorType":"Runtime.Shutdown"}')
            return
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000 + inv.timeout_s * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": inv.arn,
            "Lambda-Runtime-Trace-Id": inv.trace_id,
        }
        if inv.client_context:
            headers["Lambda-Runtime-Client-Context"] = inv.client_context
        self._reply(200, inv.payload, headers)

    def do_POST(self) -> None:
        worker = self.server.worker
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type", "")
        parts = self.path[len(RUNTIME_PREFIX) :].split("/")
        if parts == ["init", "error"]:
            worker.init_failed(body, error_type)
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            if not worker.complete(parts[1], parts[2], body, error_type):
                self._reply(400, b'{"errorType":"InvalidRequestID","errorMessage":"unknown request id"}')
                return
        else:
            self._reply(404)
            return
        self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})


class _RuntimeAPIServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        super().__init__(("127.0.0.1", 0), _RuntimeAPIHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A worker that exits (init error, kill) resets its keep-alive connection: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Worker:
    """A `python -m awslambdaric handler` process with memory watchdog, log capture and its Runtime API."""

    def __init__(self, fn: FunctionConfig, region: str, tmp_root: Path, poll_s: float) -> None:
        self.fn = fn
        self.name = f"{fn.name}/{uuid.uuid4().hex[:8]}"
        self.region = region
        self.poll_s = poll_s
        self.tmpdir = tmp_root / self.name
        self.ready = threading.Event()  # set on first `next` (init done), init error or death
        self.init_ms = 0.0
        self.init_error: tuple[bytes, str] | None = None
        self.alive = True
        self.oom = False  # killed by the memory watchdog
        self.exit_reason = ""  # as AWS words it: "signal: killed", "exit status 1"
        self.peak_rss = 0
        self.last_used = time.monotonic()
        self._lock = threading.Lock()
        self._next: list[Invocation | None] = []
        self._next_cv = threading.Condition(self._lock)
        self._current: Invocation | None = None
        self._log: list[str] = []
        self._reading = threading.Lock()
        self._api = _RuntimeAPIServer(self)
        self._proc: subprocess.Popen[bytes] | None = None
        self.sandbox = Sandbox(self.name, fn.memory_mb, fn.ephemeral_storage_mb, self.tmpdir)

    def start(self) -> None:
        """Spawn the worker process (a cold start)."""
        threading.Thread(target=self._api.serve_forever, name=f"rapi-{self.name}", daemon=True).start()
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.sandbox.setup()  # CPU share and memory limit (cgroup), /tmp of ephemeral_storage_mb
        env = worker_base_env()
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self._api.server_address[1]}",
                "AWS_LAMBDA_FUNCTION_NAME": self.fn.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.fn.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.fn.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + self.name.split("/")[1],
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "_HANDLER": self.fn.handler,
                "LAMBDA_TASK_ROOT": self.fn.code_dirs[0] if self.fn.code_dirs else os.getcwd(),
                "TMPDIR": str(self.tmpdir),  # private /tmp per execution environment, as on AWS
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.fn.code_dirs:
            env["PYTHONPATH"] = os.pathsep.join(self.fn.code_dirs)
        env.update(self.fn.environment)
        self._spawned = time.monotonic()
        self._proc = subprocess.Popen(
            [*self.sandbox.prefix(), self.fn.python, "-m", "awslambdaric", self.fn.handler],
            env=env,
            cwd=env["LAMBDA_TASK_ROOT"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            start_new_session=True,  # own process group: kill the handler's children too
        )
        log.info("cold start %s pid %d", self.name, self._proc.pid)
        threading.Thread(target=self._read_output, name=f"out-{self.name}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True).start()

    # --- called from the Runtime API ---

    def next_invocation(self) -> Invocation | None:
        """Block until an event is queued for this worker (long poll)."""
        with self._next_cv:
            if not self.ready.is_set():
                self.init_ms = (time.monotonic() - self._spawned) * 1000
                self.ready.set()
            while not self._next:
                self._next_cv.wait()
            inv = self._next.pop(0)
            if inv is not None:
                inv.started = time.monotonic()
            return inv

    def complete(self, request_id: str, kind: str, body: bytes, error_type: str) -> bool:
        """Record the handler's response or error for the current event."""
        inv = self._current
        if inv is None or inv.request_id != request_id:
            return False
        if self.sandbox.oom_killed():
            # The kernel killed a process of this environment at memory_mb (a child, say): Lambda ends the whole
            # environment with Runtime.OutOfMemory, whatever the handler made of it.
            self.kill(oom=True)
            inv.finish("oom")
            return True
        inv.finish(kind, body, error_type or "")
        return True

    def init_failed(self, body: bytes, error_type: str) -> None:
        """awslambdaric could not import the handler; it exits right after this."""
        self.init_error = (body, error_type)
        self.init_ms = (time.monotonic() - self._spawned) * 1000
        self.ready.set()

    # --- called by the pool ---

    def deliver(self, inv: Invocation) -> bool:
        """Hand an event to the worker's pending `next`; False if the worker is already dead."""
        with self._next_cv:
            # Same lock as the exit path in _watch, so a dying worker either refuses or fails the event.
            if not self.alive:
                return False
            self._current = inv
            self._next.append(inv)
            self._next_cv.notify()
            return True

    def take_log(self) -> list[str]:
        """Return and clear the output captured since the last call, after draining the pipe."""
        deadline = time.monotonic() + 0.2
        # The handler flushes before posting its response, but our reader may lag behind the pipe.
        while self._proc and self._proc.stdout and time.monotonic() < deadline:
            try:
                pending = fcntl.ioctl(self._proc.stdout.fileno(), termios.FIONREAD, b"\0\0\0\0")
            except (OSError, ValueError):
                break
            if int.from_bytes(pending, "little") == 0:
                break
            time.sleep(0.002)
        with self._reading, self._lock:
            lines, self._log = self._log, []
        return lines

    def max_memory_mb(self) -> int:
        """Peak RSS of the environment in MiB (VmHWM, or the watchdog's peak once dead)."""
        hwm = 0
        if self.alive and self._proc:
            try:
                for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1]) * 1024
            except OSError:
                pass
        peak = max(hwm, self.peak_rss) // (1024 * 1024)
        return max(peak, self.fn.memory_mb) if self.oom else peak  # killed at the limit: it reached it

    def kill(self, oom: bool = False) -> None:
        """SIGKILL the worker's process group and stop feeding it events (oom: as the memory limit does)."""
        with self._lock:
            self.oom = self.oom or oom
            self.alive = False
            self._next.append(None)
            self._next_cv.notify_all()
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def freeze(self) -> None:
        """SIGSTOP the worker's process group: it stops making progress until killed."""
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Kill the process, stop its Runtime API and remove its /tmp."""
        self.kill()
        if self._proc:
            self._proc.wait()
        self._api.shutdown()
        self._api.server_close()
        self.sandbox.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    # --- background threads ---

    def _read_output(self) -> None:
        assert self._proc and self._proc.stdout
        fd = self._proc.stdout.fileno()
        partial = ""
        poller = select.poll()  # not select(): fds above 1024 are likely with hundreds of workers
        poller.register(fd, select.POLLIN)
        while True:
            # Wait outside the lock, read inside it: take_log() then sees unread bytes (FIONREAD) or waits for us.
            poller.poll()
            with self._reading:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                # awslambdaric joins multi-line error reports with '\r' to keep them one CloudWatch event.
                text = partial + chunk.decode("utf-8", "replace").replace("\r", "\n")
                *lines, partial = text.split("\n")
                with self._lock:
                    self._log.extend(lines)
            for line in lines:
                log.info("[%s] %s", self.name, line)
        if partial:
            with self._lock:
                self._log.append(partial)

    def memory_bytes(self) -> int:
        """Memory the environment uses now: the worker's RSS plus the private pages (USS) of its descendants.

        A child's own RSS would count the pages it shares with its parent again: a fork (or vfork) that
        has not exec'd yet maps the parent's whole image (imports run `ldconfig`, `uname` and the like),
        and summing RSS over the tree once reported ~1450 MB for a 950 MB worker. Such a young,
        not-yet-exec'd copy is skipped (vfork shares the very address space, so even its private pages
        are the parent's); other descendants add only what is theirs alone.
        """
        assert self._proc
        pid = self._proc.pid
        try:
            total = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            return 0
        for child in _descendants(pid):
            if not _is_young_copy(child):
                total += _uss_bytes(child)
        return total

    def _watch(self) -> None:
        """Poll for exit and measure memory; enforce memory_mb as an RSS limit where the kernel's cgroup does not."""
        assert self._proc
        while self._proc.poll() is None:
            used = self.memory_bytes()
            self.peak_rss = max(self.peak_rss, used)
            over = used > self.fn.memory_mb * 1024 * 1024 and not self.sandbox.limits_memory
            if over or self.sandbox.oom_killed():  # polled limit, or the kernel's OOM kill of any of its processes
                log.warning("%s over %d MB (%d MB): killed", self.name, self.fn.memory_mb, used >> 20)
                self.kill(oom=True)
            time.sleep(self.poll_s)
        code = self._proc.returncode
        with self._lock:
            self.oom = self.oom or self.sandbox.oom_killed()  # the kernel killed it at memory_mb
            self.alive = False
            # Worded like Go's ProcessState, which AWS's error messages quote.
            self.exit_reason = f"signal: {(signal.strsignal(-code) or str(-code)).lower()}" if code < 0 else f"exit status {code}"
            inv = self._current
        log.info("%s exited (%s)", self.name, self.exit_reason)
        self.ready.set()
        if inv is not None:
            inv.finish("oom" if self.oom else "exit")
