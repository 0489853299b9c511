"""Integrity: a row-range partition's source is checked against the manifest's identity before a row is read;
a copied partition's sha256 where it is read; corrupted chunks are refused; rows in = rows out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.cli import assert_clean_failure, run_cli

from cosmicai.data.partition import write_partitions
from cosmicai.data.synth import synthesize
from cosmicai.reporting.summary import row_accounting


@pytest.fixture(scope="module")
def partitions(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny dataset in 4 copied partitions (partition_copy) with their manifest."""
    outdir = tmp_path_factory.mktemp("parts")
    write_partitions(tiny_dataset, outdir, 1.5, outdir / "manifest.json", copy=True)
    return outdir


def _flip_mid_chunk(path: Path, dataset: str = "images", chunk: int = 0, nbytes: int = 1) -> None:
    """XOR bytes in the middle of one stored chunk of `dataset` (the file's data region, not its metadata)."""
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        data = bytearray(f.read(nbytes))
        f.seek(info.byte_offset + info.size // 2)
        f.write(bytes(b ^ 0x01 for b in data))  # the lowest mantissa bit of a float32: no NaN, just a wrong value


def _copy_partition(partitions: Path, tmp_path: Path, name: str = "part_00001.h5") -> tuple[Path, Path]:
    """A private copy of one partition next to a copy of the manifest (same file name, so the entry matches)."""
    part = tmp_path / name
    part.write_bytes((partitions / name).read_bytes())
    manifest = tmp_path / "manifest.json"
    manifest.write_text((partitions / "manifest.json").read_text())
    return part, manifest


@pytest.fixture()
def row_ranges(tmp_path: Path, tiny_dataset: Path) -> tuple[Path, Path]:
    """A private copy of the tiny dataset and its row-range manifest."""
    data = tmp_path / "data.h5"
    shutil.copy2(tiny_dataset, data)
    write_partitions(data, None, 1.5, tmp_path / "manifest.json")
    return data, tmp_path / "manifest.json"


def _infer(manifest: Path, partition: str, checkpoint: Path, out: Path) -> subprocess.CompletedProcess:
    """A job of one partition, as rule infer_job runs it: its outputs in `out` (PARTITION.parquet, .json, jobs/job_00000.json)."""
    out.mkdir(exist_ok=True)
    job = ("--job", "job_00000", "--partitions", partition, "--predictions-dir", out, "--record", out / "jobs" / "job_00000.json")
    return run_cli("infer", "--manifest", manifest, *job, "--checkpoint", checkpoint)


def test_row_range_partition_reads_only_its_rows(row_ranges: tuple[Path, Path], tmp_path: Path, random_checkpoint: Path) -> None:
    data, manifest = row_ranges
    proc = _infer(manifest, "part_00001", random_checkpoint, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(manifest.read_text())["partitions"][1]
    with h5py.File(data) as f:
        ids = f["object_id"][entry["start"] : entry["stop"]]
    np.testing.assert_array_equal(pq.read_table(tmp_path / "out" / "part_00001.parquet").column("object_id").to_numpy(), ids)
    timings = json.loads((tmp_path / "out" / "part_00001.json").read_text())
    assert timings["partition"] == "part_00001" and timings["rows"] == entry["rows"]


def _touch(data: Path) -> None:
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _append(data: Path) -> None:
    with open(data, "ab") as f:
        f.write(b"\0" * 16)


def _rewrite_keeping_size_and_mtime(data: Path) -> None:
    st = data.stat()
    synthesize(data, 300, seed=99, size=64)  # other galaxies, same layout and size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))


def _fewer_rows_keeping_mtime(data: Path) -> None:
    st = data.stat()
    synthesize(data, 250, seed=3, size=64)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    "change,message",
    [
        (_touch, "changed since partitioning: mtime"),
        (_append, "changed since partitioning: size"),
        (_rewrite_keeping_size_and_mtime, "changed since partitioning: sampled content hash differs"),
        (_fewer_rows_keeping_mtime, "changed since partitioning: size"),
    ],
    ids=["touched", "appended", "rewritten-same-size-and-mtime", "shape-changed"],
)
def test_changed_source_is_refused(change, message: str, row_ranges: tuple[Path, Path], tmp_path: Path, random_checkpoint: Path) -> None:
    data, manifest = row_ranges
    size = data.stat().st_size
    change(data)
    if change is _rewrite_keeping_size_and_mtime:
        assert data.stat().st_size == size
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(_infer(manifest, "part_00002", random_checkpoint, out), data, message, out)


def test_row_range_past_the_end(row_ranges: tuple[Path, Path], tmp_path: Path, random_checkpoint: Path) -> None:
    data, manifest = row_ranges
    edited = json.loads(manifest.read_text())
    edited["partitions"][-1]["stop"] += 10
    manifest.write_text(json.dumps(edited))
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(
        _infer(manifest, "part_00003", random_checkpoint, out), data, "rows [225, 310) are past the end of the dataset (300 rows)", out
    )


def test_infer_checks_the_manifest_sha256(partitions: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    part, manifest = _copy_partition(partitions, tmp_path)
    proc = _infer(manifest, "part_00001", random_checkpoint, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert pq.read_metadata(tmp_path / "out" / "part_00001.parquet").num_rows == json.loads(manifest.read_text())["partitions"][1]["rows"]


def test_flipped_byte_in_a_chunk_is_caught_by_sha256(partitions: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    part, manifest = _copy_partition(partitions, tmp_path)
    _flip_mid_chunk(part)
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(_infer(manifest, "part_00001", random_checkpoint, out), part, "sha256 mismatch: expected", out)
    # without the check the flip goes unnoticed: uncompressed HDF5 chunks carry no checksum
    proc = run_cli("infer", part, "--checkpoint", random_checkpoint, "--output", out / "p.parquet")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("filters", [{"compression": "gzip"}, {"fletcher32": True}], ids=["gzip", "fletcher32"])
def test_corrupted_chunk_is_a_read_error(filters: dict, tmp_path: Path, random_checkpoint: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=rng.normal(size=(300, 5, 32, 32)).astype(np.float32), chunks=(64, 5, 32, 32), **filters)
        f["magnitudes"] = rng.normal(20, 1, (300, 5)).astype(np.float32)
        f["object_id"] = np.arange(300, dtype=np.int64)
    _flip_mid_chunk(path, chunk=2, nbytes=16)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", path, "--checkpoint", random_checkpoint, "--output", out / "p.parquet")
    assert_clean_failure(proc, path, "cannot read 'images' (corrupt or truncated data)", out)


@pytest.mark.parametrize("case", ["wrong --sha256", "not in the manifest", "manifest missing"])
def test_integrity_arguments(case: str, partitions: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    part, manifest = _copy_partition(partitions, tmp_path, "part_00002.h5")
    out = tmp_path / "out"
    out.mkdir()
    if case == "wrong --sha256":
        proc = run_cli("infer", part, "--sha256", "0" * 64, "--checkpoint", random_checkpoint, "--output", out / "p.parquet")
        assert_clean_failure(proc, part, "sha256 mismatch: expected 00000000", out)
    elif case == "not in the manifest":
        assert_clean_failure(
            _infer(manifest, "part_99999", random_checkpoint, out), manifest, "no partition 'part_99999' in the manifest", out
        )
    else:
        absent = tmp_path / "absent.json"
        assert_clean_failure(_infer(absent, "part_00002", random_checkpoint, out), absent, "no such file", out)


def test_row_accounting_finds_a_short_partition(partitions: Path, tmp_path: Path) -> None:
    parsed = json.loads((partitions / "manifest.json").read_text())
    for entry in parsed["partitions"]:
        rows = entry["rows"] - (3 if entry["name"] == "part_00002" else 0)
        pq.write_table(
            pa.table({"object_id": np.arange(rows), "z_pred": np.zeros(rows, np.float32)}), tmp_path / f"{entry['name']}.parquet"
        )
    acc = row_accounting(partitions / "manifest.json", tmp_path)
    assert acc["rows_in"] == 300 and acc["rows_out"] == 297 and acc["rows_lost"] == 3
    assert acc["partitions_mismatched"] == ["part_00002"]
    assert [p["rows_in"] for p in acc["per_partition"]] == [e["rows"] for e in parsed["partitions"]]
