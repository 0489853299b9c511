"""A failed partition never hangs its job: every read-ahead thread is stopped and joined before the process exits.

A reader thread left inside h5py at exit holds h5py's lock while the interpreter shuts down, and the exit
then waited forever (a corrupt chunk in the second of five partitions: 2 to 4 of 5 tries hung)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers.cli import BIN

from cosmicai.data.dataset import ROW_BYTES
from cosmicai.data.partition import write_partitions
from cosmicai.errors import CosmicaiError
from cosmicai.infer_job import run_job

N_ROWS, N_PARTS = 500, 5
PARTS = [f"part_{i:05d}" for i in range(N_PARTS)]
CHUNK_ROWS = 25


@pytest.fixture()
def corrupt_manifest(tmp_path: Path) -> Path:
    """Five row-range partitions of a gzip-chunked dataset whose chunk at rows 125-150 (the second partition) is corrupt."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        images = rng.normal(size=(N_ROWS, 5, 64, 64)).astype(np.float32)
        f.create_dataset("images", data=images, chunks=(CHUNK_ROWS, 5, 64, 64), compression="gzip")
        f["magnitudes"] = rng.normal(20, 1, (N_ROWS, 5)).astype(np.float32)
        f["object_id"] = np.arange(N_ROWS, dtype=np.int64)
        info = f["images"].id.get_chunk_info(125 // CHUNK_ROWS)
    with open(data, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        chunk = fh.read(16)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0x01 for b in chunk))
    manifest = write_partitions(data, None, N_ROWS * ROW_BYTES / N_PARTS / 2**20 * 1.0001, tmp_path / "manifest.json")
    assert [(p["start"], p["stop"]) for p in manifest["partitions"]][1] == (100, 200)
    return tmp_path / "manifest.json"


def test_failed_partition_joins_every_reader(corrupt_manifest: Path, tmp_path: Path, random_checkpoint: Path, onnx_graph: Path) -> None:
    before = set(threading.enumerate())
    with pytest.raises(CosmicaiError, match="partition part_00001 .*cannot read 'images'"):
        run_job(
            corrupt_manifest,
            "job_00000",
            PARTS,
            tmp_path / "pred",
            tmp_path / "rec.json",
            random_checkpoint,
            batch_size=32,
            runtime="onnxruntime",
            onnx=onnx_graph,
        )
    assert set(threading.enumerate()) <= before  # no reader left running (the next partition's had started)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_corrupt_chunk_exits_20_times(corrupt_manifest: Path, tmp_path: Path, random_checkpoint: Path, onnx_graph: Path) -> None:
    """The job's process, 20 times: each prints its one line and exits non-zero within seconds of it."""
    pred = tmp_path / "pred"
    cmd = [str(BIN / "cosmicai"), "infer", "--manifest", str(corrupt_manifest), "--job", "job_00000", "--partitions", *PARTS,
           "--predictions-dir", str(pred), "--record", str(pred / "jobs" / "job_00000.json"), "--checkpoint", str(random_checkpoint),
           "--runtime", "onnxruntime", "--onnx", str(onnx_graph), "--batch-size", "32"]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results = []
    for _ in range(20):
        shutil.rmtree(pred, ignore_errors=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        line = proc.stderr.readline()
        said = time.perf_counter()
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        results.append((rc, round(said - start, 2), round(time.perf_counter() - said, 2), line.strip()))
    print("\n".join(f"exit {rc}: error after {t1} s, exited {t2} s later" for rc, t1, t2, _ in results))
    hung = [r for r in results if r[0] is None]
    assert not hung, f"{len(hung)} of 20 hung after their error line"
    for rc, _, _, line in results:
        assert rc == 1 and "partition part_00001 (rows 100-200): cannot read 'images' (corrupt or truncated data)" in line, line
    assert not (pred / "jobs").exists()
