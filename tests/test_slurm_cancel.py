"""A Slurm job cancelled with scancel fails its Snakemake job (executor plugin `cosmicai-slurm`).

snakemake-executor-plugin-slurm 2.8.0 reads sacct's `CANCELLED by <uid>` as "still running" and waits
forever; src/snakemake_executor_plugin_cosmicai_slurm reports it as failed. The run goes through the
real local Slurm with a one-rule workflow (no model: the plugin is what is tested).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import env_with_venv
from helpers.slurm import require_slurm, sacct_states

from snakemake_executor_plugin_cosmicai_slurm import cancelled_states

SNAKEFILE = """
rule all:
    input: "done.txt"
rule sleepy:
    output: "done.txt"
    resources: slurm_partition="debug", runtime=5, mem_mb=100
    shell: "touch started.txt; sleep 300; touch {output}"
"""


def test_cancelled_states_reads_sacct_output() -> None:
    out = "101|CANCELLED by 0\n102|RUNNING\n103|CANCELLED\n104|COMPLETED\n105|FAILED\n"
    assert cancelled_states(out) == {"101": "CANCELLED by 0", "103": "CANCELLED"}
    assert cancelled_states("") == {}


@pytest.mark.timeout(180)
def test_scancelled_job_fails_the_run(tmp_path: Path) -> None:
    require_slurm()
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    cmd = ["snakemake", "--executor", "cosmicai-slurm", "--jobs", "1", "--retries", "0", "--default-resources", "slurm_account=",
           "--cosmicai-slurm-init-seconds-before-status-checks", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_with_venv())
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "started.txt").exists():  # the job runs on the node
            assert time.monotonic() < deadline and proc.poll() is None, "the job never started"
            time.sleep(0.2)
        log = next((tmp_path / ".snakemake" / "slurm_logs" / "rule_sleepy").glob("*.log"))
        job_id = log.stem
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        cancelled_at = time.monotonic()
        out, _ = proc.communicate(timeout=90)  # the slurm plugin alone never returns here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - cancelled_at
    assert sacct_states([job_id])[job_id].startswith("CANCELLED by ")
    assert proc.returncode == 1, out[-3000:]
    assert re.search(rf"SLURM job '{job_id}' was cancelled, SLURM status is: 'CANCELLED by \d+'", out), out[-3000:]
    assert not (tmp_path / "done.txt").exists()
    print(f"\nscancel of job {job_id}: the run failed {seconds:.1f} s later")


ARRAY_SNAKEFILE = """
rule all:
    input: expand("done_{i}.txt", i=[1, 2])
rule sleepy:
    output: "done_{i}.txt"
    resources: slurm_partition="debug", runtime=5, mem_mb=100
    shell: "touch started_{wildcards.i}.txt; sleep 300; touch {output}"
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scancelled_array_job_fails_the_run(tmp_path: Path) -> None:
    """Array tasks are tracked as <jobid>_<task>: a cancelled array is found by its tasks' ids, not waited on."""
    require_slurm()
    (tmp_path / "Snakefile").write_text(ARRAY_SNAKEFILE)
    cmd = ["snakemake", "--executor", "cosmicai-slurm", "--jobs", "2", "--retries", "0", "--default-resources", "slurm_account=",
           "--cosmicai-slurm-array-jobs", "sleepy", "--cosmicai-slurm-init-seconds-before-status-checks", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_with_venv())
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("started_*.txt")):  # a task runs on the node
            assert time.monotonic() < deadline and proc.poll() is None, "no array task started"
            time.sleep(0.2)
        queued = subprocess.run(["squeue", "-h", "-o", "%F|%Z"], capture_output=True, text=True, check=True, timeout=30).stdout
        (array_id,) = {line.split("|")[0] for line in queued.splitlines() if line.split("|")[1] == str(tmp_path)}
        subprocess.run(["scancel", array_id], check=True, timeout=30)
        out, _ = proc.communicate(timeout=120)  # without the array check, the run waits for its tasks forever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out[-3000:]
    assert re.search(rf"SLURM job '{array_id}_\d+' was cancelled, SLURM status is: 'CANCELLED", out), out[-3000:]
    assert not list(tmp_path.glob("done_*.txt"))
