"""Merging checks that every input row of every partition is accounted for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cosmicai.data.merge import merge_predictions
from cosmicai.data.partition import write_partitions
from cosmicai.data.predictions import write_predictions
from cosmicai.errors import CosmicaiError


def _fake_predictions(dataset: Path, preds: Path, manifest: dict) -> None:
    import h5py

    for e in manifest["partitions"]:
        with h5py.File(dataset) as f:
            ids = f["object_id"][e["start"] : e["stop"]]
        n = len(ids)
        write_predictions(preds / f"{e['name']}.parquet", ids, np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n, bool))


@pytest.fixture()
def partitioned(tmp_path: Path, tiny_dataset: Path) -> tuple[Path, Path, dict]:
    parts, preds = tmp_path / "parts", tmp_path / "preds"
    manifest = write_partitions(tiny_dataset, None, 2, parts / "manifest.json")
    _fake_predictions(tiny_dataset, preds, manifest)
    return parts, preds, manifest


def test_merge_concatenates_in_order(tmp_path: Path, partitioned: tuple[Path, Path, dict]) -> None:
    parts, preds, manifest = partitioned
    assert merge_predictions(parts / "manifest.json", preds, tmp_path / "all.parquet") == 300
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 300


def test_short_partition_named(tmp_path: Path, partitioned: tuple[Path, Path, dict]) -> None:
    parts, preds, manifest = partitioned
    victim = preds / "part_00001.parquet"
    table = pq.read_table(victim).slice(0, 10)
    pq.write_table(table, victim)
    with pytest.raises(CosmicaiError, match="part_00001 has 10 predictions, expected"):
        merge_predictions(parts / "manifest.json", preds, tmp_path / "all.parquet")
    assert not (tmp_path / "all.parquet").exists()


def test_wrong_ids_named(tmp_path: Path, partitioned: tuple[Path, Path, dict]) -> None:
    parts, preds, manifest = partitioned
    victim = preds / "part_00000.parquet"
    t = pq.read_table(victim)
    ids = t.column("object_id").to_numpy().copy()
    ids[3] = -1
    n = len(ids)
    write_predictions(victim, ids, np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n, bool))
    with pytest.raises(CosmicaiError, match="part_00000: object_ids differ"):
        merge_predictions(parts / "manifest.json", preds, tmp_path / "all.parquet")


def test_overlapping_ranges_refused(tmp_path: Path, partitioned: tuple[Path, Path, dict]) -> None:
    import json

    parts, preds, manifest = partitioned
    manifest["partitions"][1]["start"] -= 1  # one row in two partitions
    (parts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CosmicaiError, match="do not cover the source's rows exactly once"):
        merge_predictions(parts / "manifest.json", preds, tmp_path / "all.parquet")
    assert not (tmp_path / "all.parquet").exists()


def _cut_short(manifest: dict) -> None:
    manifest["partitions"][-1]["stop"] -= 40  # the last range and every count edited to agree: only the source disagrees
    manifest["partitions"][-1]["rows"] -= 40
    manifest["rows"] -= 40


def _extended(manifest: dict) -> None:
    manifest["partitions"][-1]["stop"] += 10
    manifest["partitions"][-1]["rows"] += 10
    manifest["rows"] += 10


def _reordered(manifest: dict) -> None:
    parts = manifest["partitions"]
    parts[0], parts[1] = parts[1], parts[0]


@pytest.mark.parametrize("edit", [_cut_short, _extended, _reordered], ids=["cut-short", "extended", "reordered"])
def test_manifest_checked_against_the_source(edit, tmp_path: Path, partitioned: tuple[Path, Path, dict]) -> None:
    import json

    from helpers.cli import run_cli

    parts, preds, manifest = partitioned
    edit(manifest)
    (parts / "manifest.json").write_text(json.dumps(manifest))
    if edit is _cut_short:  # the jobs predict what the manifest says, so every partition's predictions agree with it
        _fake_predictions(Path(manifest["source"]["uri"]), preds, manifest)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("merge", "--manifest", parts / "manifest.json", "--predictions-dir", preds, "--output", out / "all.parquet")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "do not cover the source's rows exactly once" in lines[0], proc.stderr
    assert str(parts / "manifest.json") in lines[0] and "has 300" in lines[0]
    assert not any(out.iterdir())


def test_rows_lost_counted_against_the_source(tmp_path: Path, partitioned: tuple[Path, Path, dict]) -> None:
    import json

    from cosmicai.reporting.summary import row_accounting

    parts, preds, manifest = partitioned
    _cut_short(manifest)
    (parts / "manifest.json").write_text(json.dumps(manifest))
    _fake_predictions(Path(manifest["source"]["uri"]), preds, manifest)
    acc = row_accounting(parts / "manifest.json", preds)
    assert (acc["rows_in"], acc["manifest_rows"], acc["rows_out"], acc["rows_lost"]) == (300, 260, 260, 40)
