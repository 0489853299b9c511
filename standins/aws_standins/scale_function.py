"""The scale-test function (deploy/lambda/standin-scale.yaml): the real handler without the model compute.

A TEST MODE, never deployed: each invocation runs cosmicai.function.handler.handler as the real function
does (validates the event, reads its partition from S3, writes the predictions and timings objects
back), but the engine predicts z = 0 for every row instead of loading and running the model. Rows and
object ids are real, so the workflow's merge still accounts for every input row; what it measures is
the dispatch (Snakemake, the executor plugin, the Invoke API, S3 round trips), not inference.
Each invocation lasts at least COSMICAI_SCALE_HOLD_S seconds (its environment), standing in for the compute.

At most COSMICAI_SCALE_SLOTS environments run the handler's work at once (default: this machine's CPU
count); the others wait their turn, then hold. On Lambda every environment has CPUs of its own; here
1,000 threads share a few cores, one GIL and h5py's lock, and left to run together after a stall they
storm (load average 150-350, 98 % system CPU, invocations past the 300 s timeout). Waiting for a slot
counts in the hold, so an invocation still lasts max(hold, work).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cosmicai.function import handler as real


class NullEngine:
    """Predicts 0 for every row, instantly (the InferenceEngine protocol)."""

    runtime = "null"
    device = "cpu"
    precision = "fp32"
    threads = 0

    def predict(self, images: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        return np.zeros(len(images), np.float32)


def _null_engine(event: Any, root: Path) -> tuple[NullEngine, float]:
    return NullEngine(), 0.0


HOLD_ENV = "COSMICAI_SCALE_HOLD_S"  # the function's environment (standin-scale.yaml): seconds each invocation lasts
SLOTS_ENV = "COSMICAI_SCALE_SLOTS"  # the function's environment: environments that run the handler's work at once
_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


def _work_slots() -> threading.BoundedSemaphore:
    """The server-wide bound on environments doing work at once (created on the first invocation)."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(int(os.environ.get(SLOTS_ENV) or os.cpu_count() or 1))
        return _slots


def handler(event: Any, context: Any) -> dict:
    """The real handler with the model's download, load and compute left out; then held for HOLD_ENV seconds.

    The hold stands in for the compute time (a thread asleep costs nothing), so that invocations
    overlap as they do on Lambda, where each one lasts seconds to minutes.
    """
    started = time.monotonic()
    with _work_slots():
        result = real.handler(event, context, load_engine=_null_engine)
    time.sleep(max(0.0, float(os.environ.get(HOLD_ENV, "0")) - (time.monotonic() - started)))
    return result
