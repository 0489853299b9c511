"""Resource requests of one inference job (Slurm's --mem and --time): memory and wall-time limit.

A request is an upper bound padded for machines other than the ones measured, unlike the planner's
calibration (cosmicai.planning.calibration), which holds what one job was measured to use and how fast it
ran. tests/test_sizing.py checks that a request covers the calibration's measured peak memory.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from cosmicai.data.dataset import ROW_BYTES
from cosmicai.planning import calibration

# Where a job's engine runs, which decides its host memory and its rate.
EnginePath = Literal["gpu", "torch-cpu", "cpu-graph"]

# Host memory of the engine's process before weights and activations, measured with `cosmicai infer`:
# ~250 MB for the CPU graph (ONNX Runtime, OpenVINO; it never imports torch), ~760 MB for Python, torch
# and timm on CPU; PyTorch with CUDA maps its libraries and context into host memory, ~2.5 GB. Padded.
RUNTIME_MB: dict[EnginePath, float] = {"gpu": 3000, "torch-cpu": 800, "cpu-graph": 350}
# Activations per row of a forward pass on the host (~0.35 MB at 32x32 fp32 on CPU); on the GPU path they live on the device.
HOST_ACTIVATION_MB_PER_ROW: dict[EnginePath, float] = {"gpu": 0.0, "torch-cpu": 0.5, "cpu-graph": 0.5}
OUTPUT_BYTES_PER_ROW = 64  # z_pred, ids, z_spec, mag_r, valid and pyarrow's copies when writing
PARTITIONS_IN_FLIGHT = 2  # the partition being computed and the next one read ahead
BATCHES_READ = 3  # forward-pass batches held per partition in flight: the one computed and two read ahead
MEMORY_MARGIN = 1.25  # for machines, libraries and allocators other than the ones measured
# AstroMAE's 15.8M fp32 parameters (60 MiB), rounded up: the size assumed until the checkpoint exists.
DEFAULT_MODEL_MB = 64.0

# Pessimistic rates for the wall-time limit. On CPU the shipped calibration's Slurm rate per thread
# (fp32; measured on this project's dev machine, which swings 2x under load) taken RATE_MARGIN times
# slower: a site's nodes may be older, shared or oversubscribed. On a GPU (94K rows/s fp32 on an H200)
# reading the data from a shared filesystem at ~100 MB/s is the bound.
RATE_MARGIN = 12.0
SHARED_FS_MB_PER_S = 100.0
CHECKPOINT_READ_MB_PER_S = 20.0  # the checkpoint from a shared filesystem, cold
STARTUP_S = 120.0  # interpreter, imports and CUDA start
MIN_RUNTIME_MIN = 5  # below this a queue's scheduling granularity, not the job, decides


def engine_path(gpu: bool, runtime: str) -> EnginePath:
    """The engine's path: PyTorch on CUDA, PyTorch on CPU, or a CPU graph runtime (onnxruntime, openvino)."""
    if gpu:
        return "gpu"
    return "torch-cpu" if runtime == "torch" else "cpu-graph"


def model_mb(checkpoint: str | os.PathLike) -> float:
    """Size of a checkpoint's weights in MB (DEFAULT_MODEL_MB while it does not exist yet)."""
    path = Path(checkpoint)
    return path.stat().st_size / 2**20 if path.exists() else DEFAULT_MODEL_MB


def retry_factor(attempt: int, failed: bool) -> int:
    """2^(attempt-1); 1 when a failure that more resources cannot fix (bad input, wrong checkpoint) was recorded."""
    if attempt > 1 and failed:
        return 1
    return 2 ** (attempt - 1)


def job_memory_mb(path: EnginePath, partitions: int, rows_per_partition: int, batch_size: int, model_mb: float) -> float:
    """Expected peak host memory of one job inferring its partitions two at a time, unpadded."""
    in_flight = min(PARTITIONS_IN_FLIGHT, partitions)
    read_mb = BATCHES_READ * batch_size * ROW_BYTES / 2**20
    output_mb = rows_per_partition * OUTPUT_BYTES_PER_ROW / 2**20
    return (
        RUNTIME_MB[path]
        + 2 * model_mb  # the weights and the state_dict they are loaded from
        + batch_size * HOST_ACTIVATION_MB_PER_ROW[path]
        + in_flight * (read_mb + output_mb)
    )


def mem_mb(
    path: EnginePath, partitions: int, rows_per_partition: int, batch_size: int, model_mb: float, attempt: int = 1, failed: bool = False
) -> int:
    """The job's memory request in MB: its expected peak with a margin, doubled per retry."""
    need = job_memory_mb(path, partitions, rows_per_partition, batch_size, model_mb)
    return int(MEMORY_MARGIN * need) * retry_factor(attempt, failed)


@functools.cache
def calibrated_rows_per_s_per_thread() -> float:
    """The shipped calibration's Slurm CPU rate per thread (fp32), not a user's installed one."""
    return calibration.load(calibration.DEFAULT_FILE)["slurm"].per_thread()


def rows_per_s(path: EnginePath, threads: int, per_thread: float | None = None) -> float:
    """The pessimistic inference rate the wall-time limit assumes (per_thread: the measured CPU rate, default the calibration's)."""
    if path == "gpu":
        return SHARED_FS_MB_PER_S * 2**20 / ROW_BYTES
    measured = calibrated_rows_per_s_per_thread() if per_thread is None else per_thread
    return measured / RATE_MARGIN * threads


def runtime_min(
    path: EnginePath, partitions: int, rows_per_partition: int, threads: int, model_mb: float, attempt: int = 1, failed: bool = False
) -> int:
    """The job's wall-time limit in minutes (at least MIN_RUNTIME_MIN), doubled per retry."""
    seconds = STARTUP_S + model_mb / CHECKPOINT_READ_MB_PER_S + partitions * rows_per_partition / rows_per_s(path, threads)
    return max(MIN_RUNTIME_MIN, -(-int(seconds) // 60)) * retry_factor(attempt, failed)
