"""Tiny Lambda handlers the stand-in tests run through awslambdaric (imported by worker processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

LOADED_AT = time.time()  # module import is the init phase; warm calls see the same value


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the event with some context fields, printing a line for the log tail."""
    print(f"echo got {sorted(event)}")
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "loaded_at": LOADED_AT,
        "pid": os.getpid(),
        "env": {k: os.environ.get(k) for k in ("STANDIN_TEST_VAR", "TMPDIR")},
    }


def fail(event: dict[str, Any], context: Any) -> None:
    """Raise, so the caller gets a FunctionError with message and stack."""
    raise ValueError(f"bad partition: {event.get('partition')}")


def sleep(event: dict[str, Any], context: Any) -> dict[str, float]:
    """Sleep event['seconds'] (for timeouts and concurrency)."""
    time.sleep(float(event.get("seconds", 1.0)))
    return {"slept": float(event.get("seconds", 1.0))}


def hog(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Touch event['mb'] MiB of memory (pages written, so RSS really grows)."""
    block = bytearray(int(event["mb"]) * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(float(event.get("hold_s", 0.3)))  # stay over the limit long enough for the watchdog
    return {"mb": len(block) >> 20}


def fork_copies(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Hold event['mb'] MiB, then fork event['forks'] copies that share it, sleep event['hold_s'] and exit without exec."""
    block = bytearray(int(event["mb"]) * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    pids = []
    for _ in range(int(event.get("forks", 2))):
        pid = os.fork()
        if pid == 0:
            time.sleep(float(event.get("hold_s", 1.5)))
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return {"mb": len(block) >> 20, "forks": len(pids)}


def child_hog(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Run a child process that touches event['mb'] MiB of its own and holds it for event['hold_s']."""
    code = (
        f"b = bytearray({int(event['mb'])} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        f"import time; time.sleep({float(event.get('hold_s', 1.0))})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return {"mb": int(event["mb"])}
