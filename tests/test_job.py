"""An inference job (cosmicai infer --job --partitions): one engine for several partitions, each with its own outputs;
a rerun reuses what an earlier attempt finished with the same data, model and settings, and nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cosmicai.data.partition import write_partitions
from cosmicai.errors import CosmicaiError
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
    for name in NAMES:  # the same predictions as a job of its own (its own engine, no read-ahead)
        alone = tmp_path / "alone"
        run_job(
            manifest, f"alone_{name}", [name], alone, alone / "jobs" / f"{name}.json", random_checkpoint, batch_size=32, onnx=onnx_graph
        )
        np.testing.assert_array_equal(
            pq.read_table(tmp_path / "pred" / f"{name}.parquet").column("z_pred"), pq.read_table(alone / f"{name}.parquet").column("z_pred")
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


def test_ledger_reuses_only_what_is_finished_with_the_same_key(tmp_path: Path) -> None:
    from cosmicai.data.integrity import PartitionRead
    from cosmicai.job import JobLedger

    reads = [PartitionRead(n, "data.h5", 10 * i, 10 * i + 10) for i, n in enumerate(NAMES)]
    pred = tmp_path / "pred"
    pred.mkdir()
    for name, key in (("part_00000", "k0"), ("part_00001", "old")):  # part_00001: done with another key
        (pred / f"{name}.parquet").write_bytes(b"")
        (pred / f"{name}.json").write_text(json.dumps({"partition": name, "key": key}))
    (pred / "part_00002.json").write_text(json.dumps({"partition": "part_00002", "key": "k2"}))  # its predictions lost
    keys = {"part_00000": "k0", "part_00001": "k1", "part_00002": "k2"}
    ledger = JobLedger("job_00004", reads, keys, pred, pred / "jobs" / "job_00004.json")
    assert ledger.reused == ["part_00000"] and [r.name for r in ledger.todo] == ["part_00001", "part_00002"]
    with pytest.raises(CosmicaiError, match="partition part_00001 of job_00004 is not done"):
        ledger.write_record()
    for read in ledger.todo:
        ledger.commit(read.name, {"partition": read.name})
    assert json.loads((pred / "part_00001.json").read_text()) == {"partition": "part_00001", "key": "k1", "job": "job_00004"}
    ledger.write_record()
    record = json.loads((pred / "jobs" / "job_00004.json").read_text())
    assert record["job"] == "job_00004" and record["reused"] == ["part_00000"]
    assert [t["partition"] for t in record["partitions"]] == NAMES
    assert load_sidecars([pred / "jobs" / "job_00004.json"]) == record["partitions"]
