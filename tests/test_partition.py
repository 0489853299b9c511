"""Partition arithmetic, partition files and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cosmicai.data.dataset import ROW_BYTES, inspect
from cosmicai.data.partition import partition_count, partition_ranges, partitions_for_bytes, write_partitions
from cosmicai.resources import sha256_file


@pytest.mark.parametrize("mb,expected", [(25, 517), (50, 259), (75, 173), (100, 130)])
def test_paper_partition_counts(mb: int, expected: int) -> None:
    # The paper's cost table: 12.6 GiB in partitions of 25/50/75/100 MiB gives these request counts.
    assert partitions_for_bytes(12.6 * 2**30, mb) == expected
    # Its 659,178 samples at our row size are 12.59 GiB: the same counts, or one fewer.
    assert expected - 1 <= partition_count(659_178, mb) <= expected


def test_row_bytes_is_model_input_size() -> None:
    assert ROW_BYTES == 5 * 32 * 32 * 4 + 5 * 4 + 4 + 8


def test_small_dataset_is_one_partition_and_bad_size_refused() -> None:
    assert partition_count(10, 100) == 1
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="partition_mb must be > 0"):
            partition_count(100, bad)
    with pytest.raises(ValueError, match="the dataset has no rows"):
        partition_count(0, 100)


@pytest.mark.parametrize("mb", [1e-9, 0.01, ROW_BYTES / 2**20 * 0.999])
def test_partition_smaller_than_a_row_refused(mb: float) -> None:
    with pytest.raises(ValueError, match=f"partition_mb {mb} is smaller than one row"):
        partition_count(3000, mb)


@pytest.mark.parametrize("n_rows", [1, 2, 3, 299, 300, 3000])
@pytest.mark.parametrize("rows_per_mb", [1, 1.5, 2, 51.1])
def test_never_more_partitions_than_rows_none_empty(n_rows: int, rows_per_mb: float) -> None:
    """At sizes of one row and up (one row is ROW_BYTES, about 0.02 MiB), every partition holds at least one row."""
    mb = rows_per_mb * ROW_BYTES / 2**20
    n = partition_count(n_rows, mb)
    assert 1 <= n <= n_rows
    assert all(stop > start for start, stop in partition_ranges(n_rows, n))


def test_ranges_cover_all_rows_evenly() -> None:
    ranges = partition_ranges(1003, 7)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1003
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_row_range_manifest_writes_no_data(tmp_path: Path, tiny_dataset: Path) -> None:
    outdir = tmp_path / "parts"
    manifest = write_partitions(tiny_dataset, None, 1.5, outdir / "manifest.json")
    assert sorted(p.name for p in outdir.iterdir()) == ["manifest.json"]  # the manifest only
    assert json.loads((outdir / "manifest.json").read_text()) == manifest
    assert manifest["version"] == 2 and manifest["copy"] is False and manifest["rows"] == 300
    src = manifest["source"]
    assert src["uri"] == str(tiny_dataset.absolute()) and src["size"] == tiny_dataset.stat().st_size
    assert src["mtime"] == tiny_dataset.stat().st_mtime and len(src["meta_sha256"]) == len(src["sample_sha256"]) == 64
    parts = manifest["partitions"]
    assert len(parts) == 4 and parts[0]["start"] == 0 and parts[-1]["stop"] == 300
    assert all(a["stop"] == b["start"] for a, b in zip(parts, parts[1:]))
    row_bytes = 5 * 64 * 64 * 4 + 5 * 4 + 8 + 4  # the tiny dataset's 64x64 cutouts as stored
    assert all(p["rows"] == p["stop"] - p["start"] and p["bytes"] == p["rows"] * row_bytes for p in parts)


def test_write_partitions_copy_manifest(tmp_path: Path, tiny_dataset: Path) -> None:
    manifest = write_partitions(tiny_dataset, tmp_path / "parts", 1.5, tmp_path / "parts" / "manifest.json", copy=True)
    assert len(manifest["partitions"]) == partition_count(300, 1.5) == 4 and manifest["copy"] is True
    assert json.loads((tmp_path / "parts" / "manifest.json").read_text()) == manifest
    ids = []
    with h5py.File(tiny_dataset) as f:
        all_ids, crop = f["object_id"][:], f["images"][:, :, 16:48, 16:48]
    for entry in manifest["partitions"]:
        path = tmp_path / "parts" / entry["path"]
        info = inspect(path)
        assert (info.height, info.width, info.n_rows) == (32, 32, entry["rows"])
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
        with h5py.File(path) as f:
            ids.extend(f["object_id"][:])
            np.testing.assert_array_equal(f["images"][:], crop[entry["start"] : entry["stop"]])
    np.testing.assert_array_equal(ids, all_ids)
