"""Integrity: a partition's sha256 is checked where it is read; corrupted chunks are refused; rows in = rows out."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosmicai.data.partition import write_partitions
from cosmicai.reporting.summary import row_accounting
from helpers.cli import assert_clean_failure, run_cli


@pytest.fixture(scope="module")
def partitions(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny dataset in 4 partitions with their manifest."""
    outdir = tmp_path_factory.mktemp("parts")
    write_partitions(tiny_dataset, outdir, 1.5, outdir / "manifest.json")
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


def test_infer_checks_the_manifest_sha256(partitions: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    part, manifest = _copy_partition(partitions, tmp_path)
    proc = run_cli("infer", part, "--manifest", manifest, "--checkpoint", random_checkpoint, "--output", tmp_path / "p.parquet")
    assert proc.returncode == 0, proc.stderr
    assert pq.read_metadata(tmp_path / "p.parquet").num_rows == json.loads(manifest.read_text())["partitions"][1]["rows"]


def test_flipped_byte_in_a_chunk_is_caught_by_sha256(partitions: Path, tmp_path: Path, random_checkpoint: Path) -> None:
    part, manifest = _copy_partition(partitions, tmp_path)
    _flip_mid_chunk(part)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", part, "--manifest", manifest, "--checkpoint", random_checkpoint, "--output", out / "p.parquet")
    assert_clean_failure(proc, part, "sha256 mismatch: expected", out)
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
    named, message = part, "sha256 mismatch: expected 00000000"
    check = ["--sha256", "0" * 64]
    if case == "not in the manifest":
        part = part.rename(tmp_path / "part_99999.h5")
        named, message, check = part, "not listed in the partition manifest", ["--manifest", str(manifest)]
    elif case == "manifest missing":
        named, message, check = tmp_path / "absent.json", "no such file", ["--manifest", str(tmp_path / "absent.json")]
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("infer", part, *check, "--checkpoint", random_checkpoint, "--output", out / "p.parquet")
    assert_clean_failure(proc, named, message, out)


def test_row_accounting_finds_a_short_partition(partitions: Path, tmp_path: Path) -> None:
    plan = json.loads((partitions / "manifest.json").read_text())
    for entry in plan["partitions"]:
        rows = entry["rows"] - (3 if entry["name"] == "part_00002" else 0)
        pq.write_table(pa.table({"object_id": np.arange(rows), "z_pred": np.zeros(rows, np.float32)}), tmp_path / f"{entry['name']}.parquet")
    acc = row_accounting(partitions / "manifest.json", tmp_path)
    assert acc["rows_in"] == 300 and acc["rows_out"] == 297 and acc["rows_lost"] == 3
    assert acc["partitions_mismatched"] == ["part_00002"]
    assert [p["rows_in"] for p in acc["per_partition"]] == [e["rows"] for e in plan["partitions"]]
