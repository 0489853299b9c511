"""The real workflow, end to end, through `snakemake --profile profiles/local` on a tiny dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.workflow import snakemake, tiny_config


@pytest.mark.timeout(600)
def test_local_profile_end_to_end(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint)
    dry = snakemake(tmp_path, "local", config, "-n")
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"^infer_job\s+4$", dry.stdout, re.M)  # partitions_per_job auto: one partition per job for so few

    proc = snakemake(tmp_path, "local", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = tmp_path / "results"
    merged = pq.read_table(res / "predictions.parquet")
    with h5py.File(tiny_dataset) as f:
        np.testing.assert_array_equal(merged.column("object_id").to_numpy(), f["object_id"][:])
        np.testing.assert_allclose(merged.column("z_spec").to_numpy(), f["redshift"][:])
    assert np.isfinite(merged.column("z_pred").to_numpy()).all()
    metrics = json.loads((res / "metrics" / "metrics.json").read_text())
    assert metrics["metrics"]["n"] == 300
    run = json.loads((res / "summary" / "run_summary.json").read_text())
    assert run["rows"] == 300 and run["partitions"] == 4 and run["wall_s"] > 0
    accounting = run["row_accounting"]  # rows in (manifest) = rows out (predictions), per partition
    assert accounting["rows_in"] == accounting["rows_out"] == 300 and accounting["rows_lost"] == 0
    assert all(p["rows_in"] == p["rows_out"] for p in accounting["per_partition"])
    cost = json.loads((res / "summary" / "cost_summary.json").read_text())
    assert cost["backend"] == "local" and cost["lines"][0]["resource"] == "cpu_hours"
    for png in ("z_pred_vs_z_spec", "delta_vs_z_spec", "partition_timings"):
        assert (res / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    for sidecar in (res / "predictions").glob("*.json"):
        timing = json.loads(sidecar.read_text())
        assert timing["peak_rss_mb"] > 0 and timing["bits_per_s"] > 0 and 0 < timing["cpu_s"]

    again = snakemake(tmp_path, "local", config, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    "override,message",
    [
        ({"partition_mb": 0}, "invalid config: partition_mb: 0 is less than or equal to the minimum of 0"),
        ({"bogus_key": 1}, "'bogus_key' was unexpected"),
        ({"inference": {"batch_size": "big"}}, "invalid config: inference"),
        ({"inference": {"bogus": 1}}, "invalid config: inference: Additional properties are not allowed ('bogus' was unexpected)"),
        ({"inference": {"compile": "yes"}}, "invalid config: inference.compile: 'yes' is not of type 'boolean'"),
        ({"dataset": 5}, "invalid config: dataset: 5 is not of type 'string'"),
    ],
)
def test_bad_config_stops_with_key(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, override: dict, message: str) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint)
    for key, value in override.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    proc = snakemake(tmp_path, "local", config, "-n")
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_dataset_stops_dry_run(tmp_path: Path, random_checkpoint: Path) -> None:
    proc = snakemake(tmp_path, "local", tiny_config(tmp_path / "absent.h5", random_checkpoint), "-n")
    assert proc.returncode != 0
    assert f"{tmp_path / 'absent.h5'}: no such file" in proc.stdout + proc.stderr
