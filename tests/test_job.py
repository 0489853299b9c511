"""An inference job (cosmicai infer --job --partitions): one engine for several partitions, each with its own outputs;
a rerun reuses what an earlier attempt finished with the same data, model and settings, and nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cosmicai.data.integrity import partition_read
from cosmicai.data.partition import write_partitions
from cosmicai.errors import CosmicaiError
from cosmicai.infer import run_infer
from cosmicai.infer_job import run_job
from cosmicai.job import load_sidecars, per_job

NAMES = ["part_00000", "part_00001", "part_00002"]


def _run(tmp: Path, manifest: Path, checkpoint: Path, onnx: Path) -> tuple[list[dict], list[str]]:
    return run_job(
        manifest, "job_00000", NAMES, tmp / "pred", tmp / "pred" / "jobs" / "job_00000.json", checkpoint, batch_size=32, onnx=onnx
    )


def test_job_matches_single_partitions_and_reuses_finished_ones(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, onnx_graph: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    write_partitions(tiny_dataset, None, 1.5, manifest)  # 4 partitions of 75 rows
    runs, reused = _run(tmp_path, manifest, random_checkpoint, onnx_graph)
    assert reused == [] and [t["partition"] for t in runs] == NAMES
    assert runs[0]["model_load_s"] > 0 and runs[1]["model_load_s"] == runs[2]["model_load_s"] == 0  # one engine
    for name in NAMES:  # the same predictions as a job of its own
        alone = tmp_path / "alone" / f"{name}.parquet"
        run_infer(partition_read(manifest, name), random_checkpoint, alone, batch_size=32, onnx=onnx_graph)
        np.testing.assert_array_equal(
            pq.read_table(tmp_path / "pred" / f"{name}.parquet").column("z_pred"), pq.read_table(alone).column("z_pred")
        )
    record = tmp_path / "pred" / "jobs" / "job_00000.json"
    assert [t["partition"] for t in load_sidecars([record])] == NAMES

    # A killed attempt: part_00001 lost its sidecar (not committed). The rerun infers it alone.
    (tmp_path / "pred" / "part_00001.json").unlink()
    kept = {n: (tmp_path / "pred" / f"{n}.json").stat().st_mtime_ns for n in ("part_00000", "part_00002")}
    runs, reused = _run(tmp_path, manifest, random_checkpoint, onnx_graph)
    assert reused == ["part_00000", "part_00002"]
    assert all((tmp_path / "pred" / f"{n}.json").stat().st_mtime_ns == t for n, t in kept.items())
    assert json.loads(record.read_text())["reused"] == reused

    # A changed model file changes the key: nothing is reused.
    os.utime(onnx_graph, ns=(os.stat(onnx_graph).st_atime_ns, os.stat(onnx_graph).st_mtime_ns + 10**9))
    _, reused = _run(tmp_path, manifest, random_checkpoint, onnx_graph)
    assert reused == []


def test_job_refuses_unknown_partition(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    manifest = tmp_path / "manifest.json"
    write_partitions(tiny_dataset, None, 1.5, manifest)
    with pytest.raises(CosmicaiError, match="no partition 'part_00009' in the manifest"):
        run_job(manifest, "job_00000", ["part_00009"], tmp_path / "pred", tmp_path / "r.json", random_checkpoint)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("setting,n,expected", [("auto", 4, 1), ("auto", 500, 1), ("auto", 501, 2), ("auto", 10_486, 21), (16, 4, 16)])
def test_per_job(setting: int | str, n: int, expected: int) -> None:
    assert per_job(setting, n) == expected


def test_bad_row_names_the_file_the_partition_and_the_row(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, onnx_graph: Path
) -> None:
    import shutil

    import h5py

    bad = tmp_path / "bad.h5"
    shutil.copy(tiny_dataset, bad)
    with h5py.File(bad, "r+") as f:
        f["magnitudes"][80, 0] = np.nan
    manifest = tmp_path / "manifest.json"
    write_partitions(bad, None, 1.5, manifest)
    with pytest.raises(
        CosmicaiError, match=r"bad\.h5: partition part_00001 \(rows 75-150\): 1 row\(s\) with NaN or Inf .* first at row 80"
    ):
        _run(tmp_path, manifest, random_checkpoint, onnx_graph)
    assert (tmp_path / "pred" / "part_00000.json").exists()  # the partition before it is kept for the rerun
    assert not (tmp_path / "pred" / "part_00001.parquet").exists() and not (tmp_path / "pred" / "jobs").exists()
