"""Per-function worker pools: concurrency limits, warm reuse, timeouts and the AWS-shaped result of an invoke."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from .config import FAULTS, FunctionConfig, ServerConfig
from .inprocess import ThreadWorker
from .runtime import Invocation, Worker

log = logging.getLogger("aws_standins")

MAX_PAYLOAD = 6 * 1024 * 1024  # synchronous request and response limit on AWS
LOG_TAIL = 4096  # X-Amz-Log-Result carries the last 4 KB


@dataclasses.dataclass
class InvokeResult:
    """What the Invoke API answers: status, headers, body (None: drop the connection)."""

    status: int
    headers: dict[str, str]
    body: bytes | None


def error_body(error_type: str, message: str) -> bytes:
    """A platform error payload (timeouts, crashes), which AWS sends without a stack trace."""
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class FunctionPool:
    """Workers of one function: idle ones are reused (warm), new ones spawned up to the concurrency limit."""

    def __init__(self, fn: FunctionConfig, server: ServerConfig, tmp_root: Path, poll_s: float) -> None:
        self.fn = fn
        self.server = server
        self.tmp_root = tmp_root
        self.poll_s = poll_s
        self.arn = f"arn:aws:lambda:{server.region}:{server.account_id}:function:{fn.name}"
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._busy = 0
        self._workers: set[Worker] = set()  # every live worker, so shutdown can kill busy ones too
        self.stats: dict[str, Any] = {
            "invocations": 0,
            "cold_starts": 0,
            "throttles": 0,
            "errors": 0,
            "peak_concurrency": 0,
            "faults": dict.fromkeys(FAULTS, 0),
        }

    def _fault(self, name: str, payload: bytes | None = None) -> bool:
        """Whether fault `name` fires now; counted in stats when it does."""
        if not self.fn.faults.hit(name, payload):
            return False
        log.warning("%s: injecting fault %s", self.fn.name, name)
        with self._lock:
            self.stats["faults"][name] += 1
        return True

    def _acquire(self) -> tuple[Worker | ThreadWorker, bool] | None:
        """Reserve a worker (warm if possible); None means throttle."""
        throttle = self._fault("throttle")
        with self._lock:
            if throttle or self._busy >= self.fn.concurrency_limit(self.server.account_concurrency):
                self.stats["throttles"] += 1
                return None
            self._busy += 1
            self.stats["peak_concurrency"] = max(self.stats["peak_concurrency"], self._busy)
            while self._idle:
                worker = self._idle.pop()  # most recently used first, like Lambda's warm routing
                if worker.alive:
                    return worker, False
                self._workers.discard(worker)
                threading.Thread(target=worker.close, daemon=True).start()
            self.stats["cold_starts"] += 1
        kind = ThreadWorker if self.fn.mode == "thread" else Worker
        worker = kind(self.fn, self.server.region, self.tmp_root, self.poll_s)
        with self._lock:
            self._workers.add(worker)
        worker.start()
        return worker, True

    def _release(self, worker: Worker | ThreadWorker) -> None:
        with self._lock:
            self._busy -= 1
            if worker.alive:
                worker.last_used = time.monotonic()
                self._idle.append(worker)
                return
            self._workers.discard(worker)
        # Closing waits for the process and the Runtime API thread; the caller need not.
        threading.Thread(target=worker.close, daemon=True).start()

    def invoke(self, payload: bytes, tail: bool, client_context: str | None = None) -> InvokeResult:
        """Run one synchronous invocation and shape the answer like AWS."""
        if self._fault("service_error"):
            body = json.dumps({"Type": "Service", "message": "An internal error occurred (injected by the stand-in)."}).encode()
            return InvokeResult(500, {"x-amzn-ErrorType": "ServiceException", "Content-Type": "application/json"}, body)
        acquired = self._acquire()
        if acquired is None:
            reason = (
                "ReservedFunctionConcurrentInvocationLimitExceeded"
                if self.fn.reserved_concurrency is not None
                else "ConcurrentInvocationLimitExceeded"
            )
            body = json.dumps({"Reason": reason, "Type": "User", "message": "Rate Exceeded."}).encode()
            # AWS's TooManyRequestsException carries retryAfterSeconds in the Retry-After header.
            headers = {
                "x-amzn-ErrorType": "TooManyRequestsException",
                "Content-Type": "application/json",
                "Retry-After": f"{self.fn.retry_after_s:g}",
            }
            return InvokeResult(429, headers, body)
        worker, cold = acquired
        with self._lock:
            self.stats["invocations"] += 1
        inv = Invocation(payload, self.arn, float(self.fn.timeout_s), client_context)
        try:
            self._run(worker, inv, cold)
            return self._answer(worker, inv, cold, tail)
        finally:
            self._release(worker)

    def _run(self, worker: Worker, inv: Invocation, cold: bool) -> None:
        """Deliver the event and wait for its outcome, killing the worker on timeout."""
        timeout = inv.timeout_s
        # Init may run up to the function timeout on its own (AWS retries slow inits within the invoke).
        if cold and not worker.ready.wait(max(timeout, 10.0)):
            worker.kill()
            inv.finish("timeout")
            return
        if worker.init_error is not None:
            worker.kill()
            body, error_type = worker.init_error
            inv.finish("error", body, error_type)
            return
        if not worker.deliver(inv):
            inv.finish("oom" if worker.oom else "exit")  # died during init, or killed since
            return
        if self._fault("crash", inv.payload):
            worker.kill()  # the runtime dies with the event in hand: Runtime.ExitError
        elif self._fault("timeout", inv.payload):
            worker.freeze()  # stops making progress, as a hung download would; the deadline below kills it
        elif self._fault("oom", inv.payload):
            worker.kill(oom=True)  # reported as the memory watchdog's kill: Runtime.OutOfMemory
        end = time.monotonic() + timeout
        while not inv.done.wait(max(0.0, end - time.monotonic())):
            if inv.started is not None and inv.started + timeout > time.monotonic():
                end = inv.started + timeout  # the deadline counts from when the worker took the event
                continue
            inv.finish("timeout")
            worker.kill()
            break

    def _answer(self, worker: Worker, inv: Invocation, cold: bool, tail: bool) -> InvokeResult:
        """Build status, headers, body and the START/END/REPORT log for a finished invocation."""
        rid = inv.request_id
        started = inv.started or inv.finished or time.monotonic()
        duration = max(0.0, ((inv.finished or started) - started) * 1000)
        headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": rid}
        lines = worker.take_log()
        body, status_note = inv.body, ""
        if inv.outcome == "response" and len(body) > MAX_PAYLOAD:
            body = error_body(
                "Function.ResponseSizeTooLarge", f"Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."
            )
            headers["X-Amz-Function-Error"] = "Unhandled"
        elif inv.outcome == "error":
            headers["X-Amz-Function-Error"] = "Unhandled"
            if worker.init_error is not None:
                status_note = f"\tStatus: error\tError Type: {inv.error_type}"
        elif inv.outcome == "timeout":
            duration = inv.timeout_s * 1000
            message = f"Task timed out after {inv.timeout_s:.2f} seconds"
            lines.append(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.000Z {rid} {message}")
            body = error_body("Sandbox.Timedout", f"RequestId: {rid} Error: {message}")
            headers["X-Amz-Function-Error"] = "Unhandled"
            status_note = "\tStatus: timeout"
        elif inv.outcome in ("oom", "exit"):
            error_type = "Runtime.OutOfMemory" if inv.outcome == "oom" else "Runtime.ExitError"
            message = f"RequestId: {rid} Error: Runtime exited with error: {worker.exit_reason or 'signal: killed'}"
            lines += [message, error_type]
            body = error_body(error_type, message)
            headers["X-Amz-Function-Error"] = "Unhandled"
            status_note = f"\tStatus: error\tError Type: {error_type}"
        if "X-Amz-Function-Error" in headers:
            with self._lock:
                self.stats["errors"] += 1
        init_ms = worker.init_ms if cold else 0.0
        report = (
            f"REPORT RequestId: {rid}\tDuration: {duration:.2f} ms\t"
            # AWS bills the init phase too (container images always; zip runtimes since 2025-08).
            f"Billed Duration: {math.ceil(duration + init_ms)} ms\tMemory Size: {self.fn.memory_mb} MB\t"
            f"Max Memory Used: {worker.max_memory_mb()} MB\t"
            + (f"Init Duration: {init_ms:.2f} ms\t" if cold else "")
            + status_note.lstrip("\t")
            + ("\t" if status_note else "")
        )
        text = (
            "\n".join(
                (["INIT_START Runtime Version: python:standin"] if cold else [])
                + [f"START RequestId: {rid} Version: $LATEST"]
                + lines
                + [f"END RequestId: {rid}", report]
            )
            + "\n"
        )
        log.info("%s %s", self.fn.name, report.strip())
        if tail:
            headers["X-Amz-Log-Result"] = base64.b64encode(text.encode()[-LOG_TAIL:]).decode()
        # Only a completed invocation has a response to lose: its output is written, the caller never hears.
        if inv.outcome == "response" and self._fault("lost_response", inv.payload):
            return InvokeResult(0, headers, None)
        return InvokeResult(200, headers, body)

    def reap_idle(self, now: float) -> None:
        """Stop warm workers idle longer than idle_timeout_s (Lambda recycles environments too)."""
        with self._lock:
            stale = [w for w in self._idle if now - w.last_used > self.fn.idle_timeout_s or not w.alive]
            self._idle = [w for w in self._idle if w not in stale]
            self._workers.difference_update(stale)
        for worker in stale:
            worker.close()

    def retire_idle(self) -> None:
        """Stop all idle workers, so a config change applies to the next (cold) start."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._workers.difference_update(idle)
        for worker in idle:
            worker.kill()
            threading.Thread(target=worker.close, daemon=True).start()

    def take_all(self) -> list[Worker]:
        """Hand over every worker, busy ones included, for shutdown."""
        with self._lock:
            workers, self._workers, self._idle = list(self._workers), set(), []
        return workers

    def snapshot(self) -> dict[str, object]:
        """Counters and pool sizes for the admin endpoint."""
        with self._lock:
            return {**self.stats, "faults": dict(self.stats["faults"]), "busy": self._busy, "idle": len(self._idle)}
