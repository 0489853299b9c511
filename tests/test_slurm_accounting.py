"""Unit tests for cosmicai.accounting.slurm: parsing sacct text, no Slurm needed."""

import shutil
import subprocess
import time

import pytest

from cosmicai.accounting import slurm as sa

# Real output of `sacct --parsable2 --noheader --format=<SACCT_FIELDS>` from the
# local Slurm (scripts/slurm-local.sh): a snakemake GPU job with its .batch and
# srun (.0) steps, a CPU job, a failed job and a cancelled one.
SAMPLE = """\
8|10e90438-ff79-41c6-b8be-4bc739e9a612|gpu|COMPLETED|0:0|2026-11-28T14:51:48|2026-11-28T14:51:54|00:00:06|6|1|billing=1,cpu=1,gres/gpu=1,mem=500M,node=1|billing=1,cpu=1,gres/gpu=1,mem=500M,node=1||vm|rule_gpu
8.batch|batch||COMPLETED|0:0|2026-11-28T14:51:48|2026-11-28T14:51:54|00:00:06|6|1||cpu=1,gres/gpu=1,mem=500M,node=1|179936K|vm|
8.0|python3||COMPLETED|0:0|2026-11-28T14:51:50|2026-11-28T14:51:53|00:00:03|3|1||cpu=1,gres/gpu=1,mem=500M,node=1|167848K|vm|
10|10e90438-ff79-41c6-b8be-4bc739e9a612|debug|COMPLETED|0:0|2026-11-28T14:52:18|2026-11-28T14:52:25|00:00:07|7|2|billing=2,cpu=2,mem=2000M,node=1|billing=2,cpu=2,mem=2000M,node=1||vm|rule_run_inference_wildcards_p003_astromae
10.batch|batch||COMPLETED|0:0|2026-11-28T14:52:18|2026-11-28T14:52:25|00:00:07|7|2||cpu=2,mem=2000M,node=1|180188K|vm|
10.0|python3||COMPLETED|0:0|2026-11-28T14:52:19|2026-11-28T14:52:24|00:00:05|5|2||cpu=2,mem=2000M,node=1|1.5G|vm|
14|wrap|debug|FAILED|3:0|2026-11-28T14:53:19|2026-11-28T14:53:19|00:00:00|0|1|billing=1,cpu=1,mem=1000M,node=1|billing=1,cpu=1,mem=1000M,node=1||vm|
14.batch|batch||FAILED|3:0|2026-11-28T14:53:19|2026-11-28T14:53:19|00:00:00|0|1||cpu=1,mem=1000M,node=1||vm|
15|wrap|debug|CANCELLED by 0|0:0|2026-11-28T14:53:19|2026-11-28T14:53:22|00:00:03|3|1|billing=1,cpu=1,mem=1000M,node=1|billing=1,cpu=1,mem=1000M,node=1||vm|
15.batch|batch||CANCELLED|0:15|2026-11-28T14:53:19|2026-11-28T14:53:22|00:00:03|3|1||cpu=1,mem=1000M,node=1|3160K|vm|
"""


def test_parse_sacct_rows_and_comment_with_delimiter():
    rows = sa.parse_sacct(SAMPLE + "\n")
    assert len(rows) == 10
    assert rows[0]["JobIDRaw"] == "8" and rows[0]["Comment"] == "rule_gpu"
    (row,) = sa.parse_sacct("1|n|p|RUNNING|0:0|s|e|00:00:01|1|1|||||a|b|c")
    assert row["Comment"] == "a|b|c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3304K", 3304 * 1024), ("1.5G", int(1.5 * 1024**3)), ("512", 512), ("0", 0), ("2m", 2 * 1024**2), ("", None), ("n/a", None)],
)
def test_parse_size_bytes(text, expected):
    assert sa.parse_size_bytes(text) == expected


def test_tres_and_gpus():
    tres = sa.parse_tres("billing=2,cpu=2,gres/gpu=1,mem=500M,node=1")
    assert tres["cpu"] == "2" and tres["mem"] == "500M"
    assert sa.gpus_from_tres(tres) == 1
    assert sa.gpus_from_tres(sa.parse_tres("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1")) == 3
    assert sa.gpus_from_tres(sa.parse_tres("cpu=1,mem=1G")) == 0
    assert sa.parse_tres("") == {}


def test_rule_from_comment():
    assert sa.rule_from_comment("rule_gpu") == "gpu"
    assert sa.rule_from_comment("rule_run_inference_wildcards_p003_astromae") == "run_inference"
    assert sa.rule_from_comment("") is None


def test_aggregate_jobs_folds_steps():
    jobs = sa.aggregate_jobs(sa.parse_sacct(SAMPLE))
    assert [j["job_id"] for j in jobs] == ["8", "10", "14", "15"]
    gpu, cpu, failed, cancelled = jobs
    assert gpu["alloc_gpus"] == 1 and gpu["alloc_cpus"] == 1 and gpu["elapsed_s"] == 6
    assert gpu["partition"] == "gpu" and gpu["rule"] == "gpu"
    assert gpu["max_rss_mb"] == pytest.approx(179936 / 1024)  # max over .batch and .0
    assert cpu["max_rss_mb"] == pytest.approx(1.5 * 1024)
    assert cpu["alloc_mem_mb"] == 2000 and cpu["alloc_cpus"] == 2 and cpu["alloc_gpus"] == 0
    assert failed["state"] == "FAILED" and failed["exit_code"] == "3:0" and failed["max_rss_mb"] is None
    assert cancelled["state"] == "CANCELLED"


def test_cost_from_jobs():
    jobs = sa.aggregate_jobs(sa.parse_sacct(SAMPLE))
    cost = sa.cost_from_jobs(jobs, cpu_hour_rate=0.5, gpu_hour_rate=3.0)
    by_id = {j["job_id"]: j for j in cost["jobs"]}
    assert by_id["8"]["cpu_hours"] == pytest.approx(6 / 3600)
    assert by_id["8"]["gpu_hours"] == pytest.approx(6 / 3600)
    assert by_id["8"]["cost"] == pytest.approx(6 / 3600 * 0.5 + 6 / 3600 * 3.0)
    assert by_id["10"]["cpu_hours"] == pytest.approx(14 / 3600)
    total = cost["total"]
    assert total["n_jobs"] == 4
    assert total["elapsed_s"] == 6 + 7 + 0 + 3
    assert total["cpu_hours"] == pytest.approx((6 + 14 + 0 + 3) / 3600)
    assert total["gpu_hours"] == pytest.approx(6 / 3600)
    assert total["max_rss_mb"] == pytest.approx(1.5 * 1024)
    assert total["cost"] == pytest.approx(sum(j["cost"] for j in cost["jobs"]))
    assert cost["rates"] == {"cpu_hour": 0.5, "gpu_hour": 3.0}
    assert sa.cost_from_jobs([], 1, 1)["total"]["max_rss_mb"] is None


def test_sacct_command():
    cmd = sa.sacct_command(job_ids=[1, "2"], name="uuid")
    assert cmd[:3] == ["sacct", "--parsable2", "--noheader"]
    assert "--jobs=1,2" in cmd and "--name=uuid" in cmd
    assert any(c.startswith("--starttime=") for c in cmd)
    assert f"--format={','.join(sa.SACCT_FIELDS)}" in cmd
    with pytest.raises(ValueError):
        sa.sacct_command(job_ids=[])


def test_query_jobs_with_fake_sacct(tmp_path):
    fake = tmp_path / "sacct"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\n" + SAMPLE + "EOF\n")
    fake.chmod(0o755)
    jobs = sa.query_jobs(job_ids=[8, 10, 14, 15], sacct=str(fake))
    assert [j["job_id"] for j in jobs] == ["8", "10", "14", "15"]


def _slurm_up() -> bool:
    """True when a local Slurm with accounting answers (scripts/slurm-local.sh start)."""
    if not shutil.which("sacct") or not shutil.which("sbatch"):
        return False
    try:
        return subprocess.run(["sacctmgr", "-n", "list", "cluster"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.skipif(not _slurm_up(), reason="needs a running Slurm with accounting")
def test_query_real_gpu_job(tmp_path):
    out = subprocess.run(
        ["sbatch", "--parsable", "--gres=gpu:1", "-c", "1", f"--chdir={tmp_path}", "--wrap", "sleep 2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    job_id = out.stdout.strip().split(";")[0]
    # Poll accounting (faster than sbatch --wait); steps are recorded asynchronously.
    for _ in range(300):
        jobs = sa.query_jobs([job_id])
        if jobs and jobs[0]["state"] == "COMPLETED" and jobs[0]["max_rss_mb"] is not None:
            break
        time.sleep(0.2)
    (job,) = jobs
    assert job["state"] == "COMPLETED"
    assert job["alloc_gpus"] == 1 and job["alloc_cpus"] == 1
    assert job["elapsed_s"] >= 2
    assert job["max_rss_mb"] is not None
