"""`cosmicai plan`: the arithmetic, the calibration, the dry-run block, plan-vs-actual and the HTML report."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
from pathlib import Path

import pytest
from helpers import workflow
from helpers.cli import env_with_venv, run_cli
from helpers.stands import Stands

from cosmicai.data.dataset import ROW_BYTES
from cosmicai.errors import CosmicaiError
from cosmicai.planning import calibration
from cosmicai.planning.calibration import Calibration
from cosmicai.planning.estimate import (
    LAMBDA_ACCOUNT_CONCURRENCY,
    Settings,
    estimate,
    makespan,
)
from cosmicai.planning.units import parse_size

PLOTS = ("z_pred_vs_z_spec", "delta_vs_z_spec", "partition_timings", "plan_scaling")
BLOCK = "cosmicai plan for this run"


def simple_calibrations(**lam: float) -> dict[str, Calibration]:
    """Round numbers, so the expected figures can be worked out by hand."""
    base = dict(measured_at="2026-01-01", source="test", measured=False, runtime="test", precision="fp32")
    return {
        "local": Calibration(samples_per_s=200, threads=2, fixed_s=1.0, overhead_s=0.5, **base),
        "slurm": Calibration(samples_per_s=200, threads=2, fixed_s=1.0, overhead_s=2.0, **base),
        "slurm-gpu": Calibration(samples_per_s=10_000, threads=1, fixed_s=4.0, overhead_s=2.0, **base),
        "lambda": Calibration(
            **{
                "samples_per_s": 100,
                "threads": 1,
                "fixed_s": 0.5,
                "overhead_s": 0.25,
                "cold_s": 2.0,
                "transfer_mb_per_s": 50,
                "staging_mb_per_s": 0,
                **lam,
            },
            **base,
        ),
    }


@pytest.mark.parametrize("mb,requests", [(25, 517), (50, 259), (75, 173), (100, 130)])
def test_paper_partitions_and_requests(mb: int, requests: int) -> None:
    plan = estimate(Settings("lambda", parse_size("12.6GB"), mb), calibration.load(calibration.DEFAULT_FILE))
    assert plan.partitions == requests
    assert {line["resource"]: line["quantity"] for line in plan.lines}["lambda_requests"] == requests


def test_parse_size() -> None:
    assert parse_size("12.6GB") == 12.6 * 2**30
    assert parse_size("1TB") == parse_size("1 TiB") == 2**40
    assert parse_size("500mb") == 500 * 2**20
    assert parse_size("2048") == 2048
    with pytest.raises(CosmicaiError, match="not a size"):
        parse_size("12 parsecs")


def test_lambda_cost_by_hand() -> None:
    # 100 partitions of 20 MiB, 1,769 MB = exactly 1 vCPU = 100 samples/s, all concurrent and cold.
    cals = simple_calibrations()
    s = Settings("lambda", 100 * 20 * 2**20, 20, memory_mb=1769, concurrency=1000)
    plan = estimate(s, cals)
    rows = math.ceil(round(100 * 20 * 2**20 / ROW_BYTES) / 100)
    assert (plan.partitions, plan.rows_per_partition, plan.concurrency, plan.waves, plan.cold_jobs) == (100, rows, 100, 1, 100)
    # fixed + the first forward pass's rows from S3 (the rest is read during inference) + inference + cold start (Init is billed)
    billed = 0.5 + 512 * ROW_BYTES / 2**20 / 50 + rows / 100 + 2.0
    gb_s = 100 * math.ceil(billed * 1000) / 1000 * 1769 / 1024
    lines = {line["resource"]: line for line in plan.lines}
    assert lines["lambda_x86_64_gb_s"]["quantity"] == pytest.approx(gb_s)
    assert plan.cost_usd == pytest.approx(gb_s * 0.0000166667 + 100 * 0.20 / 1e6)
    assert plan.wall_s == pytest.approx(0.25 + billed)  # one wave: invoker round trip + one cold invocation
    arm = estimate(dataclasses.replace(s, architecture="arm64"), cals)
    assert {line["resource"]: line for line in arm.lines}["lambda_arm64_gb_s"]["cost_usd"] == pytest.approx(gb_s * 0.0000133334)


def test_lambda_reading_overlaps_inference() -> None:
    # The partition is read ahead of the engine: only the first forward pass's rows wait on S3 while inference is the
    # slower; on a slow network the invocation waits for the rest of the transfer beyond inference.
    s = Settings("lambda", 100 * 20 * 2**20, 20, memory_mb=1769, concurrency=1000)
    rows = math.ceil(round(100 * 20 * 2**20 / ROW_BYTES) / 100)
    fast, slow = estimate(s, simple_calibrations()), estimate(s, simple_calibrations(transfer_mb_per_s=1))
    assert fast.warm_job_s == pytest.approx(0.25 + 0.5 + 512 * ROW_BYTES / 2**20 / 50 + rows / 100)
    # two forward passes: read the first, read the second while inferring the first, infer the second
    assert slow.warm_job_s == pytest.approx(0.25 + 0.5 + 2 * 512 * ROW_BYTES / 2**20 + (rows - 512) / 100)


def test_lambda_concurrency_waves_and_scaling() -> None:
    cals = simple_calibrations()
    s = Settings("lambda", 2500 * 2**20, 1, memory_mb=1769, concurrency=LAMBDA_ACCOUNT_CONCURRENCY)  # 2,500 partitions of 1 MiB
    plan = estimate(s, cals)
    assert plan.partitions == 2500 and plan.concurrency == LAMBDA_ACCOUNT_CONCURRENCY and plan.waves == 3
    assert plan.cold_jobs == 1000  # environments are reused: the later waves are warm
    assert plan.wall_s == pytest.approx(plan.job_s + 2 * plan.warm_job_s)
    # Above 1,000, environments come 1,000 per 10 s: with jobs longer than 20 s, the third thousand starts 20 s in.
    raised = estimate(dataclasses.replace(s, data_bytes=3000 * 64 * 2**20, partition_mb=64, concurrency=3000), cals)
    assert raised.job_s > 20 and raised.waves == 1 and raised.cold_jobs == 3000
    assert raised.wall_s == pytest.approx(20 + raised.job_s)
    assert any(f.startswith("CONCURRENCY") for f in raised.flags)
    # With short jobs, environments that are already warm take the later partitions instead.
    quick = estimate(dataclasses.replace(s, data_bytes=3000 * 2**20, concurrency=3000), cals)
    assert quick.cold_jobs == 1000 and quick.wall_s < 20


def test_makespan_reuses_slots() -> None:
    assert makespan(5, 2, lambda k: 0.0, 3.0, 1.0) == (3.0 + 2 * 1.0, 2)
    # slot k is ready at 10k s: the second job waits for slot 1, the third reuses slot 0 (free at 15 s, before slot 2)
    assert makespan(3, 3, lambda k: 10.0 * k, 15.0, 15.0) == (30.0, 2)


def test_timeout_flags() -> None:
    cals = simple_calibrations()
    big = estimate(Settings("lambda", 2**30, 1024, memory_mb=1769), cals)  # ~52K rows at 100/s: about 9 minutes
    assert not [f for f in big.flags if f.startswith("TIMEOUT")]
    huge = estimate(Settings("lambda", 4 * 2**30, 4096, memory_mb=1769), cals)  # about 35 minutes
    timeout = [f for f in huge.flags if f.startswith("TIMEOUT")]
    assert timeout and "15-minute" in timeout[0]
    fit = float(re.search(r"at most (\d+) MB", timeout[0])[1])
    assert not [f for f in estimate(Settings("lambda", 4 * 2**30, fit, memory_mb=1769), cals).flags if f.startswith("TIMEOUT")]
    short = estimate(Settings("lambda", 2**30, 1024, memory_mb=1769, timeout_s=300), cals)
    assert any("function timeout (300 s)" in f for f in short.flags)
    with pytest.raises(CosmicaiError, match="128-10240"):
        estimate(Settings("lambda", 2**30, 100, memory_mb=64), cals)


def test_cluster_backends_by_hand() -> None:
    cals = simple_calibrations()
    s = Settings(
        "slurm",
        64 * 1000 * ROW_BYTES,
        1000 * ROW_BYTES / 2**20,
        threads=2,
        nodes=2,
        cores_per_node=16,
        queue_wait_s=30,
        cpu_hour_usd=0.05,
        gpus=4,
        gpu_hour_usd=2.0,
    )
    slurm = estimate(s, cals)  # 64 jobs of 1,000 rows on 2 x 8 slots: 4 waves of 1 + 2 + 1000/200 s
    assert (slurm.partitions, slurm.concurrency, slurm.waves) == (64, 16, 4)
    assert slurm.wall_s == pytest.approx(30 + 4 * (2.0 + 1.0 + 5.0))
    assert slurm.cost_usd == pytest.approx(64 * 8.0 * 2 / 3600 * 0.05)  # sacct's elapsed: the whole slot
    gpu = estimate(dataclasses.replace(s, backend="slurm-gpu"), cals)  # 4 GPUs: 16 waves of 2 + 4 + 0.1 s
    assert (gpu.concurrency, gpu.waves) == (4, 16) and gpu.wall_s == pytest.approx(30 + 16 * 6.1)
    assert gpu.cost_usd == pytest.approx(64 * 6.1 / 3600 * (2.0 + 2 * 0.05))
    local = estimate(dataclasses.replace(s, backend="local", cores=4), cals)
    assert local.concurrency == 2 and local.wall_s == pytest.approx(32 * 6.5)  # no queue wait locally
    assert local.cost_usd == pytest.approx(64 * 6.0 * 2 / 3600 * 0.05)  # the sidecars' time, as the local summary counts


def test_compare_prints_every_backend() -> None:
    proc = run_cli("plan", "--compare", "--data-size", "12.6GB", "--partition-mb", "100", check=True)
    table = proc.stdout.splitlines()
    assert table[0].startswith("12.6 GiB") and "130 partitions" in table[0]
    # each backend with its profile's partitions_per_job: auto (1 per job for 130), config/slurm.yaml 16, slurm-gpu 512;
    # Lambda counts invocations, one per partition
    for backend, jobs in (("local", 130), ("slurm", 9), ("slurm-gpu", 1), ("lambda", 130)):
        assert any(re.match(rf"{backend}\s+12.6 GiB\s+100\s+-?\d*\s+fp32\s+{jobs}\s", line) for line in table), backend
        assert f"\n{backend}:\n" in proc.stdout  # its assumptions
    assert "calibration (slurm-gpu, fp32): NOT measured here" in proc.stdout and "H200" in proc.stdout
    rows = run_cli("plan", "--compare", "--data-size", "12.6GB", "--partition-mb", "25", "--format", "csv", check=True).stdout.splitlines()
    assert len(rows) == 5 and rows[0].startswith("backend,") and all(",517," in r for r in rows[1:])
    plans = json.loads(run_cli("plan", "--backend", "lambda", "--data-size", "1TB", "--format", "json", check=True).stdout)
    assert plans[0]["partitions"] == math.ceil(2**40 / (25 * 2**20)) and plans[0]["assumptions"]


def test_plan_plot_and_errors(tmp_path: Path) -> None:
    run_cli("plan", "--compare", "--data-size", "10GB", "--partition-mb", "100", "--plot", tmp_path / "p.png", check=True)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_cli("plan", "--backend", "lambda", "--data-size", "1TB", "--memory-mb", "20000")
    assert bad.returncode == 1 and "--memory-mb: must be >= 128 and <= 10240" in bad.stderr
    assert "give --backend" in run_cli("plan", "--data-size", "1TB").stderr


BAD_PLAN_INPUT = [
    ("--data-size", "nan"),
    ("--data-size", "inf"),
    ("--data-size", "1e400"),
    ("--data-size", "-5"),
    ("--data-size", "0"),
    ("--rows", "abc"),
    ("--rows", "-3"),
    ("--partition-mb", "0"),
    ("--partition-mb", "-25"),
    ("--partition-mb", "1e-9"),
    ("--concurrency", "-5"),
    ("--concurrency", "0"),
    ("--concurrency", "nan"),
    ("--gpus", "0"),
    ("--threads", "0"),
    ("--nodes", "-1"),
    ("--cores", "abc"),
    ("--cores-per-node", "1.5"),
    ("--queue-wait-s", "-1"),
    ("--cpu-hour-usd", "inf"),
    ("--gpu-hour-usd", "-2"),
    ("--memory-mb", "64"),
    ("--partitions-per-job", "0"),
    ("--deadline", "0s"),
    ("--budget", "nan"),
]


@pytest.mark.parametrize("option,value", BAD_PLAN_INPUT)
def test_plan_bad_numbers_are_one_line(option: str, value: str) -> None:
    import contextlib
    import io

    from cosmicai.cli import main

    argv = ["plan", "--compare", "--data-size", "1GB", option, value]
    if option in ("--data-size", "--rows"):
        argv = ["plan", "--compare", option, value]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 1 and out.getvalue() == ""
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in lines[0], lines


def test_impossible_goal_exits_non_zero_naming_what_dominates() -> None:
    deadline = run_cli("plan", "--backend", "lambda", "--data-size", "1TB", "--deadline", "1s")
    assert deadline.returncode == 1 and "none of 1 configurations qualifies" in deadline.stderr
    assert "dominated by upload" in deadline.stderr and deadline.stdout  # the table, then one line naming the upload
    budget = run_cli("plan", "--compare", "--data-size", "1TB", "--budget", "0.001")
    assert budget.returncode == 1 and "the cheapest: lambda" in budget.stderr
    # Unpriced cluster plans are never the answer to a budget, and never shown as $0.
    rows = [line for line in budget.stdout.splitlines() if line.startswith(("local ", "slurm ", "slurm-gpu "))]
    assert len(rows) == 3 and all(" unpriced " in line and "0.0000" not in line for line in rows)
    assert "recommendation" not in budget.stdout  # nothing picked: the reason is the one stderr line


def test_calibration_from_runs_and_persistence(tmp_path: Path) -> None:
    # Two sequential local jobs of 6,000 rows: 10 s inference, 1 s else each, 0.5 s between them.
    runs = [
        {
            "rows": 6000,
            "compute_s": 10.0,
            "total_s": 11.0,
            "threads": 2,
            "device": "cpu",
            "runtime": "onnxruntime",
            "precision": "fp32",
            "started_at": t,
            "ended_at": t + 11.0,
        }
        for t in (0.0, 11.5)
    ]
    prior = calibration.load(calibration.DEFAULT_FILE)
    name, cal = calibration.from_runs(runs, "local", 22.5, prior, "test run")
    assert name == "local" and cal.measured and cal.samples_per_s == pytest.approx(600) and cal.threads == 2
    assert cal.fixed_s == pytest.approx(1.0) and cal.overhead_s == pytest.approx(0.25)
    # Too few rows to measure the rate: it is kept, the fixed costs are the run's.
    small = [{**r, "rows": 50} for r in runs]
    _, kept = calibration.from_runs(small, "local", 22.5, prior, "tiny run")
    assert kept.samples_per_s == prior["local"].samples_per_s and "too few" in kept.source
    path = tmp_path / "cal.json"
    calibration.merge_into(path, {"local": cal})
    calibration.merge_into(path, {"slurm": dataclasses.replace(cal, overhead_s=9.0)})
    loaded = calibration.load(path)
    assert loaded["local"].fixed_s == pytest.approx(1.0) and loaded["slurm"].overhead_s == 9.0
    assert not loaded["lambda"].measured and loaded["lambda"].file == str(calibration.DEFAULT_FILE)


# The workflow: the dry-run block under every profile, then a local run, its plan-vs-actual and the report.


def snakemake(workdir: Path, profile: str, config: dict, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The workflow in `workdir` with a profile (and the config file it names) and its own (empty) installed calibration."""
    env = {**(env or env_with_venv()), "XDG_CACHE_HOME": str(workdir / "cache"), "XDG_CONFIG_HOME": str(workdir / "config-home")}
    return workflow.snakemake(workdir, profile, config, *args, env=env)


def tiny_config(dataset: Path, checkpoint: Path) -> dict:
    return workflow.tiny_config(dataset, checkpoint, "plan")


@pytest.mark.parametrize("profile", ["local", "slurm", "slurm-gpu", "lambda"])
def test_dry_run_prints_one_plan_block(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, profile: str) -> None:
    proc = snakemake(
        tmp_path, profile, tiny_config(tiny_dataset, random_checkpoint), "-n", *(["--cores", "2"] if profile == "local" else [])
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(BLOCK) == 1
    block = proc.stdout[proc.stdout.index(BLOCK) :].split("\n  (cosmicai plan")[0]
    assert f"{BLOCK} ({profile})" in block
    # the Slurm profiles group partitions (config/slurm*.yaml: 16 and 512 per job): one job for these 4
    jobs = {"slurm": "1 inference jobs", "slurm-gpu": "1 inference jobs", "local": "4 inference jobs", "lambda": "4 invocations"}[profile]
    assert "4 partitions of 1.5 MiB (75 rows each)" in block and jobs in block
    assert re.search(r"wall time +[\d.]+ s, bound by \w+: .*\(\d+ wave", block) and re.search(r"cost +(\$|unpriced)", block)
    assert "calibration  " in block
    ran = re.search(r"infer_job\s+(\d+)\n", proc.stdout)  # Snakemake's own job list is still there
    assert ran, proc.stdout[-2000:]
    if profile != "lambda":  # the plan's inference jobs are the DAG's (Lambda's plan counts invocations)
        assert f"{ran.group(1)} inference jobs" in block
    assert not (tmp_path / "results").exists()


def test_lambda_dry_run_without_bucket_plans_and_recommends(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint)
    config["lambda"]["bucket"] = ""  # a dry-run needs none
    config.update(plan_recommend=True, plan_deadline="10min")
    proc = snakemake(tmp_path, "lambda", config, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = proc.stdout[proc.stdout.index(BLOCK) :]
    assert f"{BLOCK} (lambda)" in block
    assert "64 at once" in block or "4 at once" in block  # profiles/lambda's in-flight default, not the account's 1,000
    assert "recommendation (the cheapest within 10 min 00 s): lambda " in block
    # A real run without a bucket stops before any job, with the one-line reason.
    run = snakemake(tmp_path, "lambda", config)
    assert run.returncode != 0 and "lambda.bucket is required" in run.stderr + run.stdout
    assert not (tmp_path / "results" / "predictions").exists()


def check_report(workdir: Path, profile: str, config: dict, env: dict[str, str] | None = None) -> dict:
    """Build the HTML report of a finished run; check every plot and table is in it; return plan-vs-actual."""
    proc = snakemake(workdir, profile, config, "--report", "report.html", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    for name in (*PLOTS, "metrics.html", "run_summary.html", "cost_summary.html", "plan_vs_actual.html", "by_zspec.csv"):
        assert f"{name}" in html, name
    res = workdir / "results"
    pva = json.loads((res / "summary" / "cost_summary.json").read_text())["plan_vs_actual"]
    assert "ratio = actual / estimate" in (res / "report" / "plan_vs_actual.html").read_text()
    cal = json.loads((res / "calibration.json").read_text())["backends"]
    assert cal[pva["backend"]]["measured"] and cal[pva["backend"]]["precision"] == "fp32"
    # The run's calibration stays with its results: nothing installed, nothing in the cache for later plans.
    assert not (workdir / "config-home" / "cosmicai").exists() and not (workdir / "cache" / "cosmicai" / "calibration.json").exists()
    assert json.loads((res / "plan" / "context.json").read_text())["backend"] == pva["backend"]
    return pva


@pytest.mark.timeout(600)
def test_local_run_plan_vs_actual_and_report(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint)
    proc = snakemake(tmp_path, "local", config, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pva = check_report(tmp_path, "local", config)
    rows = {r["quantity"]: r for r in pva["rows"]}
    run = json.loads((tmp_path / "results" / "summary" / "run_summary.json").read_text())
    assert pva["backend"] == "local" and rows["wall_s"]["actual"] == run["wall_s"] and rows["partitions"]["estimate"] == 4
    assert rows["cpu_hours"]["estimate"] > 0 and rows["cpu_hours"]["actual"] > 0
    assert pva["calibration"]["file"] == str(calibration.DEFAULT_FILE)  # the calibration the run named (none: the shipped one)
    print(f"\nlocal plan vs actual: estimate {rows['wall_s']['estimate']:.1f} s, actual {rows['wall_s']['actual']:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lambda_run_reports_plan_against_actual(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands) -> None:
    config = workflow.tiny_config(tiny_dataset, random_checkpoint, "plan-vs-actual")
    proc = snakemake(tmp_path, "lambda", config, "--jobs", "4", env=stand.env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pva = check_report(tmp_path, "lambda", config, env=stand.env)
    rows = {r["quantity"]: r for r in pva["rows"]}
    assert pva["backend"] == "lambda" and rows["lambda_requests"]["estimate"] == rows["lambda_requests"]["actual"] == 4
    assert rows["lambda_x86_64_gb_s"]["actual"] > 0 and rows["cost_usd"]["actual"] > 0
    print(
        f"\nlambda plan vs actual: wall {rows['wall_s']['estimate']:.2f} s estimated, {rows['wall_s']['actual']:.2f} s actual; "
        f"GB-s {rows['lambda_x86_64_gb_s']['estimate']:.2f} vs {rows['lambda_x86_64_gb_s']['actual']:.2f}; "
        f"cost ${rows['cost_usd']['estimate']:.6f} vs ${rows['cost_usd']['actual']:.6f}"
    )
    # The ratio itself is a measurement (it depends on the machine's load), reported by the run, not asserted.
    assert isinstance(pva["time_within_factor_2"], bool) and rows["wall_s"]["estimate"] > 0 and rows["wall_s"]["actual"] > 0


def test_every_term_of_the_wall_time_and_the_dispatch_bound() -> None:
    shipped = calibration.load(calibration.DEFAULT_FILE)
    assert shipped["lambda"].dispatch_per_s == pytest.approx(27.2)  # `make bench-lambda-scale`, kept once in the calibration
    in_s3 = estimate(Settings("lambda", 2**40, 100, concurrency=1000, data_in_s3=True, memory_mb=10240), shipped)
    assert in_s3.terms["dispatch_s"] == pytest.approx(10_486 / 27.2) and in_s3.terms["upload_s"] == 0
    assert in_s3.bound_by == "dispatch" and in_s3.stage_s == pytest.approx(10_485 / 27.2 + in_s3.warm_job_s)  # the last begun, then run
    assert in_s3.terms["merge_s"] == pytest.approx(1.0 + in_s3.settings.rows / 500_000)  # the local section: the host
    assert in_s3.wall_s == pytest.approx(in_s3.stage_s + in_s3.terms["merge_s"])
    # With the dataset on this host, its one upload comes first and dominates.
    local = estimate(dataclasses.replace(in_s3.settings, data_in_s3=False), shipped)
    assert local.terms["upload_s"] == pytest.approx(2**40 / 2**20 / 100) and local.bound_by == "upload"
    assert local.wall_s == pytest.approx(local.terms["upload_s"] + in_s3.stage_s + local.terms["merge_s"])
    row = local.row()
    assert {"upload_s", "queue_wait_s", "dispatch_s", "cold_start_s", "compute_s", "merge_s", "bound_by"} <= set(row)
    # Slurm: the queue wait is its own term, before the stage.
    slurm = estimate(Settings("slurm", 2**30, 100, queue_wait_s=120), shipped)
    assert slurm.terms["queue_wait_s"] == 120 and slurm.wall_s == pytest.approx(120 + slurm.terms["compute_s"] + slurm.terms["merge_s"])


def test_makespan_dispatch_limits_starts() -> None:
    # 10 jobs of 1 s on 100 slots, begun 2 per second: the last begins at 4.5 s, one slot is reused by then.
    end, cold = makespan(10, 100, lambda k: 0.0, 1.0, 1.0, dispatch_per_s=2.0)
    assert end == pytest.approx(4.5 + 1.0) and cold == 2


def test_estimate_and_accounting_price_alike() -> None:
    from cosmicai.accounting import lambda_cost, pricing
    from cosmicai.planning import estimate as estimate_module

    assert lambda_cost.lambda_lines is pricing.lambda_lines is estimate_module.lambda_lines  # one home for the formula
    cals = simple_calibrations()
    plan = estimate(Settings("lambda", 10 * 20 * 2**20, 20, memory_mb=3008, concurrency=1000, ephemeral_storage_mb=1024), cals)
    billed_ms = (plan.job_s - cals["lambda"].overhead_s) * 1000  # every invocation cold (one wave)
    runs = [
        {"lambda": {"billed_ms": math.ceil(billed_ms), "memory_mb": 3008, "architecture": "x86_64", "ephemeral_storage_mb": 1024}}
    ] * plan.partitions
    actual = lambda_cost.lambda_usage(runs, {"lambda": {}})
    assert [(line["resource"], line["rate_usd"]) for line in actual] == [(line["resource"], line["rate_usd"]) for line in plan.lines]
    assert [line["cost_usd"] for line in actual] == pytest.approx([line["cost_usd"] for line in plan.lines], rel=1e-6)


def test_each_backend_is_planned_with_its_profile(tmp_path: Path) -> None:
    from cosmicai.config import load_config
    from cosmicai.planning.context import backend_config

    base = load_config()  # config/config.yaml: the local profile's
    gpu = backend_config(base, "slurm-gpu")["inference"]
    assert gpu["batch_size"] == 4096 and gpu["partitions_per_job"] == 512  # config/slurm-gpu.yaml's, not the local run's
    assert backend_config(base, "slurm")["inference"]["partitions_per_job"] == 16
    assert backend_config(backend_config(base, "slurm-gpu"), "local")["inference"]["batch_size"] == 512
    ctx = tmp_path / "context.json"
    ctx.write_text(json.dumps({"backend": "local", "config": {k: base[k] for k in ("partition_mb", "inference", "lambda", "cost")}}))
    plans = json.loads(run_cli("plan", "--compare", "--data-size", "10GB", "--context", ctx, "--format", "json", check=True).stdout)
    by = {p["backend"]: p for p in plans}
    assert by["slurm-gpu"]["batch_size"] == 4096 and by["slurm-gpu"]["partitions_per_job"] == 410  # all 410 partitions: one job
    assert "BATCH" not in by["slurm-gpu"]["flags"] and by["slurm"]["partitions_per_job"] == 16 and by["local"]["batch_size"] == 512


def test_the_papers_table() -> None:
    out = run_cli("plan", "--paper", check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ("lambda", "slurm-gpu", "slurm")}
    assert "28 s" in lines["lambda"] and "$0.38" in lines["lambda"] and "dispatch" in lines["lambda"]
    assert (
        re.search(r"2 min 20 s +2 min 20 s +1.00", lines["slurm-gpu"]) and "29 min 53 s" in lines["slurm"] and "unpriced" in lines["slurm"]
    )
    assert "lambda: the plan adds this project's terms" in out
