"""Resume: SIGKILL Snakemake and its jobs mid-way; the rerun infers only the missing partitions, byte-identical result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.cli import env_with_venv
from helpers.processes import done_partitions, group_gone, incomplete_outputs
from helpers.workflow import snakemake, snakemake_cmd, tiny_config

N_PARTS = 6  # 300 rows at partition_mb 1.0
PER_JOB = 3  # two inference jobs of three partitions


def _start_detached(workdir: Path, config: dict) -> subprocess.Popen:
    """Snakemake in a process group of its own (its jobs join it), output to a log file."""
    log = open(workdir / "killed-run.log", "w")
    return subprocess.Popen(
        snakemake_cmd(workdir, "local", config),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env_with_venv(),
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_mid_run_then_resume(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint, partition_mb=1.0)
    config["inference"]["partitions_per_job"] = PER_JOB
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()

    full = snakemake(reference, "local", config)
    assert full.returncode == 0, full.stderr[-3000:]
    assert re.search(rf"^infer_job\s+{N_PARTS // PER_JOB}$", full.stdout + full.stderr, re.M)  # the job table's width varies

    proc = _start_detached(killed, config)
    pred_dir = killed / "results" / "predictions"
    deadline = time.time() + 300
    while len(done_partitions(pred_dir)) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert group_gone(proc.pid), "jobs of the killed run are still running"

    kept = done_partitions(pred_dir)  # every partition with its sidecar is finished, whatever its job's state
    jobs_left = incomplete_outputs(killed)
    assert 1 <= len(kept) < N_PARTS and jobs_left, (kept, jobs_left)  # really killed mid-way, in a job
    finished_jobs = {p["partition"] for r in (pred_dir / "jobs").glob("*.json") for p in json.loads(r.read_text())["partitions"]}
    assert not (killed / "results" / "predictions.parquet").exists()

    assert snakemake(killed, "local", config, "--unlock").returncode == 0
    resumed = snakemake(killed, "local", config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = sorted((pred_dir / "jobs").glob("job_*.json"))
    reused = {name for r in records for name in json.loads(r.read_text())["reused"]}
    assert reused == set(kept) - finished_jobs, (reused, kept)  # the rerun inferred only the partitions not finished before
    after = done_partitions(pred_dir)
    assert all(after[name] == st for name, st in kept.items()), "a finished partition ran again"
    assert len(after) == N_PARTS

    merged = killed / "results" / "predictions.parquet"
    assert merged.read_bytes() == (reference / "results" / "predictions.parquet").read_bytes()
    meta = pq.read_metadata(merged)
    assert meta.num_rows == 300
    assert not any(re.search("time|date", name) for name in meta.schema.names)
    assert set(meta.metadata or {}) <= {b"ARROW:schema"} and pq.read_schema(merged).metadata is None  # no run-specific metadata
    accounting = json.loads((killed / "results" / "summary" / "run_summary.json").read_text())["row_accounting"]
    assert accounting["rows_in"] == accounting["rows_out"] == 300 and accounting["rows_lost"] == 0
