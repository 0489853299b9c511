"""Execution environments as threads of the stand-in itself: the `mode: thread` of a function, for scale tests.

1,000 concurrent awslambdaric processes would need tens of GB; a thread needs little. The handler
module is imported once into the server (the first environment's Init Duration), and every
environment calls it on its own thread with a Lambda-like context. The Invoke API in front is the
same as in process mode (concurrency limit, 429 with Retry-After, REPORT lines, payload limits,
throttle and lost-response faults); what a thread cannot have is left out and documented: no memory
or CPU limit, no /tmp of its own (the server's TMPDIR), a timeout abandons the thread rather than
killing it, and crash/timeout/oom faults end the invocation without stopping the handler.

All environments share one allocator. glibc's raises its mmap threshold to the largest block freed
(up to 32 MiB), after which the S3 reads' 1 MiB buffers come from per-thread arenas and stay
resident once freed: about 2-3 MB kept per environment, 3 GB at 1,000 in flight, where separate
processes would each reuse their own. The first thread environment fixes the threshold at 128 KiB
(`mallopt(M_MMAP_THRESHOLD)`), so a freed buffer goes back to the system as it would with one
environment per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import FunctionConfig

_handlers: dict[str, tuple[Callable[[Any, Any], Any], float]] = {}
_import_lock = threading.Lock()
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's initial threshold, kept fixed (see the module docstring)


def _fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its initial value (True when set; False on another C library)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): no mallopt, nothing to fix
        return False


def _handler(fn: FunctionConfig) -> tuple[Callable[[Any, Any], Any], float]:
    """The handler function (imported once per server) and the milliseconds its import took."""
    with _import_lock:
        if not _handlers:
            _fix_mmap_threshold()
        if fn.handler not in _handlers:
            os.environ.update(fn.environment)  # the server's environment is the function's (one thread-mode function per server)
            t = time.perf_counter()
            module, _, name = fn.handler.rpartition(".")
            _handlers[fn.handler] = (getattr(importlib.import_module(module), name), (time.perf_counter() - t) * 1000)
            return _handlers[fn.handler]
        return _handlers[fn.handler][0], 0.0


class _Context:
    """The fields of awslambdaric's LambdaContext that handlers use."""

    def __init__(self, inv: Any, fn: FunctionConfig) -> None:
        self.aws_request_id = inv.request_id
        self.invoked_function_arn = inv.arn
        self.function_name = fn.name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = str(fn.memory_mb)
        self._deadline = time.monotonic() + inv.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class ThreadWorker:
    """One execution environment on a thread; the same interface as runtime.Worker for the pool."""

    def __init__(self, fn: FunctionConfig, region: str, tmp_root: Path, poll_s: float) -> None:
        self.fn = fn
        self.ready = threading.Event()
        self.init_ms = 0.0
        self.init_error: tuple[bytes, str] | None = None
        self.alive = True
        self.oom = False
        self.exit_reason = ""
        self.last_used = time.monotonic()
        self._handler: Callable[[Any, Any], Any] | None = None
        self._current: Any = None

    def start(self) -> None:
        """A cold start: the handler module's import (once per server), then ready."""
        try:
            self._handler, self.init_ms = _handler(self.fn)
        except Exception as exc:  # as awslambdaric reports an import failure
            body = json.dumps({"errorMessage": str(exc), "errorType": "Runtime.ImportModuleError"}).encode()
            self.init_error = (body, "Runtime.ImportModuleError")
        self.ready.set()

    def deliver(self, inv: Any) -> bool:
        """Run the event on a new thread; False once the environment was killed."""
        if not self.alive:
            return False
        self._current = inv
        inv.started = time.monotonic()
        threading.Thread(target=self._run, args=(inv,), daemon=True).start()
        return True

    def _run(self, inv: Any) -> None:
        assert self._handler is not None
        try:
            result = self._handler(json.loads(inv.payload or b"null"), _Context(inv, self.fn))
            inv.finish("response", json.dumps(result).encode())
        except Exception as exc:
            body = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "requestId": inv.request_id,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            inv.finish("error", json.dumps(body).encode(), type(exc).__name__)

    def kill(self, oom: bool = False) -> None:
        """End the environment: its invocation ends now (the thread itself runs on, abandoned)."""
        self.oom = self.oom or oom
        self.alive = False
        self.exit_reason = "signal: killed"
        if self._current is not None:
            self._current.finish("oom" if oom else "exit")

    def freeze(self) -> None:
        """No way to stop a thread: the pool's deadline still answers Sandbox.Timedout."""

    def take_log(self) -> list[str]:
        return []  # the handler's output goes to the server's stdout

    def max_memory_mb(self) -> int:
        return 0  # not measured per environment in thread mode

    def close(self) -> None:
        self.alive = False
