"""Inference jobs' resource requests (cosmicai.sizing): memory, wall-time limit, retries."""

from __future__ import annotations

import pytest

from cosmicai import sizing
from cosmicai.data.dataset import ROW_BYTES
from cosmicai.planning import calibration

JOB = {"partitions": 10, "rows_per_partition": 3000, "model_mb": 64.0}


def test_engine_path() -> None:
    assert sizing.engine_path(True, "torch") == "gpu"
    assert sizing.engine_path(False, "torch") == "torch-cpu"
    assert sizing.engine_path(False, "onnxruntime") == "cpu-graph"
    assert sizing.engine_path(False, "openvino") == "cpu-graph"


@pytest.mark.parametrize("path", ["gpu", "torch-cpu", "cpu-graph"])
def test_memory_grows_with_batch_size(path: sizing.EnginePath) -> None:
    small, large = (sizing.mem_mb(path, batch_size=b, **JOB) for b in (256, 4096))
    assert small < large


def test_gpu_path_keeps_activations_off_the_host() -> None:
    """On the GPU path a larger batch costs host memory only for the rows read ahead, not activations."""
    read = sizing.BATCHES_READ * 2 * ROW_BYTES / 2**20  # per extra row of batch: 3 batches x 2 partitions in flight
    for path, per_row in (("gpu", read), ("cpu-graph", read + 0.5)):
        grown = sizing.job_memory_mb(path, 10, 3000, 1512, 64.0) - sizing.job_memory_mb(path, 10, 3000, 512, 64.0)
        assert grown == pytest.approx(1000 * per_row)
    # but it maps CUDA's libraries into host memory
    assert (
        sizing.mem_mb("gpu", batch_size=512, **JOB)
        > sizing.mem_mb("torch-cpu", batch_size=512, **JOB)
        > sizing.mem_mb("cpu-graph", batch_size=512, **JOB)
    )


def test_memory_counts_two_partitions_in_flight() -> None:
    one = sizing.job_memory_mb("cpu-graph", 1, 100_000, 512, 64.0)
    two = sizing.job_memory_mb("cpu-graph", 2, 100_000, 512, 64.0)
    assert two > one
    assert sizing.job_memory_mb("cpu-graph", 50, 100_000, 512, 64.0) == two


def test_retries_double_unless_a_failure_was_recorded() -> None:
    first = sizing.mem_mb("cpu-graph", batch_size=512, **JOB)
    assert [sizing.mem_mb("cpu-graph", batch_size=512, attempt=a, **JOB) for a in (1, 2, 3)] == [first, 2 * first, 4 * first]
    assert sizing.mem_mb("cpu-graph", batch_size=512, attempt=3, failed=True, **JOB) == first
    limit = sizing.runtime_min("cpu-graph", threads=2, **JOB)
    assert sizing.runtime_min("cpu-graph", threads=2, attempt=2, **JOB) == 2 * limit
    assert sizing.runtime_min("cpu-graph", threads=2, attempt=2, failed=True, **JOB) == limit
    assert sizing.retry_factor(1, failed=True) == 1


def test_runtime_floor_is_five_minutes() -> None:
    assert sizing.runtime_min("gpu", partitions=1, rows_per_partition=10, threads=1, model_mb=1.0) == 5
    assert sizing.MIN_RUNTIME_MIN == 5


def test_runtime_grows_with_rows_and_shrinks_with_threads() -> None:
    big = {"partitions": 20, "rows_per_partition": 50_000, "model_mb": 64.0}
    two, eight = (sizing.runtime_min("cpu-graph", threads=t, **big) for t in (2, 8))
    assert two > eight > sizing.MIN_RUNTIME_MIN
    # 1M rows at the pessimistic rate: 25 rows/s per thread from the shipped calibration's 600 rows/s on 2 threads
    seconds = sizing.STARTUP_S + 64.0 / sizing.CHECKPOINT_READ_MB_PER_S + 1_000_000 / sizing.rows_per_s("cpu-graph", 2)
    assert two == -(-int(seconds) // 60)


def test_cpu_rate_is_the_calibrations_with_a_margin() -> None:
    """The wall-time limit's rate is the calibration's measured one, not a second copy of it."""
    slurm = calibration.load(calibration.DEFAULT_FILE)["slurm"]
    assert sizing.rows_per_s("cpu-graph", 4) == pytest.approx(slurm.per_thread() * 4 / sizing.RATE_MARGIN)
    assert sizing.rows_per_s("cpu-graph", 4, per_thread=100.0) == pytest.approx(400 / sizing.RATE_MARGIN)
    assert sizing.rows_per_s("gpu", 1) == pytest.approx(sizing.SHARED_FS_MB_PER_S * 2**20 / ROW_BYTES)


@pytest.mark.parametrize("partition_mb", [10, 67, 101])
def test_request_covers_the_calibrations_measured_peak(partition_mb: int) -> None:
    """Every CPU-graph section's measured peak memory (batch 512) fits in the request for that job."""
    rows = int(partition_mb * 2**20 / ROW_BYTES)
    request = sizing.mem_mb("cpu-graph", partitions=10, rows_per_partition=rows, batch_size=512, model_mb=sizing.DEFAULT_MODEL_MB)
    sections = calibration.load(calibration.DEFAULT_FILE)
    measured = {name: cal.peak_memory_mb(partition_mb) for name, cal in sections.items() if cal.runtime in ("onnxruntime", "openvino")}
    assert any(measured.values())
    assert all(request >= peak for peak in measured.values()), (request, measured)


def test_model_mb(tmp_path) -> None:
    weights = tmp_path / "m.safetensors"
    assert sizing.model_mb(weights) == sizing.DEFAULT_MODEL_MB
    weights.write_bytes(b"\0" * 3 * 2**20)
    assert sizing.model_mb(weights) == 3.0
