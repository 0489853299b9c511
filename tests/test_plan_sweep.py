"""`cosmicai plan` sweeps and recommendations, and the model's fixes (upload once, saturation, memory, precision, grouping)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers.cli import REPO, env_with_venv, run_cli

from cosmicai.errors import CosmicaiError
from cosmicai.planning import calibration
from cosmicai.planning.calibration import Calibration
from cosmicai.planning.estimate import Settings, estimate, local_runtime
from cosmicai.planning.recommend import recommend
from cosmicai.planning.sweep import Axes, read_table, sweep
from cosmicai.planning.units import parse_duration, parse_money, parse_values

BASE = dict(measured_at="2026-01-01", source="test", measured=False, runtime="test", precision="fp32")


def cals(**lam: float) -> dict[str, Calibration]:
    """Round numbers; the lambda section takes overrides."""
    return {
        "local": Calibration(samples_per_s=200, threads=2, fixed_s=1.0, overhead_s=0.5, **BASE),
        "slurm": Calibration(samples_per_s=200, threads=2, fixed_s=10.0, overhead_s=2.0, **BASE),
        "slurm-gpu": Calibration(samples_per_s=10_000, threads=1, fixed_s=4.0, overhead_s=2.0, **BASE),
        "lambda": Calibration(
            **{
                "samples_per_s": 100,
                "threads": 1,
                "fixed_s": 0.5,
                "overhead_s": 0.25,
                "cold_s": 2.0,
                "transfer_mb_per_s": 50,
                "staging_mb_per_s": 100,
                **lam,
            },
            **BASE,
        ),
    }


def test_values_durations_money() -> None:
    assert parse_values("25,50,75,100", "x") == [25, 50, 75, 100]
    assert parse_values("2048:10240:2048", "x") == [2048, 4096, 6144, 8192, 10240]
    assert parse_values("1,2:4:1,4", "x") == [1, 2, 3, 4]
    assert parse_duration("10min") == 600 and parse_duration("90s") == 90 and parse_duration("2h") == 7200
    assert parse_money("5USD") == 5 and parse_money("$0.38") == 0.38
    for bad in ("1:2", "5:1:1", "1,,2"):
        with pytest.raises(CosmicaiError):
            parse_values(bad, "x")


def test_upload_has_no_step_at_a_wave_boundary() -> None:
    # 100 MiB partitions, 1,000 at once: 999 partitions fit one wave, 1,001 need a second. The dataset goes up
    # once (~1,000 s at 100 MB/s): the second wave adds one warm invocation, not another upload.
    c = cals()
    s = Settings("lambda", 999 * 100 * 2**20, 100, memory_mb=1769, concurrency=1000)
    one, two = estimate(s, c), estimate(dataclasses.replace(s, data_bytes=1001 * 100 * 2**20), c)
    assert (one.waves, two.waves) == (1, 2)
    assert one.upload_s == pytest.approx(999 * 100 / 100) and two.upload_s == pytest.approx(1001 * 100 / 100)
    assert two.wall_s - one.wall_s == pytest.approx(two.upload_s - one.upload_s + two.warm_job_s)
    assert two.wall_s < 1.2 * one.wall_s
    in_s3 = estimate(dataclasses.replace(s, data_in_s3=True), c)
    assert in_s3.upload_s == 0 and in_s3.wall_s == pytest.approx(one.wall_s - one.upload_s)


def test_lambda_speed_saturates_so_memory_changes_cost() -> None:
    linear = sweep(Settings("lambda", 2**30, 50, concurrency=1000), Axes(memory_mb=(1769, 3538, 7076)), cals())
    assert linear[0].job_s > linear[1].job_s > linear[2].job_s
    saturating = sweep(Settings("lambda", 2**30, 50, concurrency=1000), Axes(memory_mb=(1769, 3538, 7076)), cals(max_threads=2))
    assert saturating[1].warm_job_s == pytest.approx(saturating[2].warm_job_s)  # no faster beyond 2 vCPUs...
    assert saturating[2].cost_usd > 1.9 * saturating[1].cost_usd  # ...but twice the GB-s


def test_memory_need_grows_with_partition_size() -> None:
    c = cals(memory_base_mb=500, memory_mb_per_partition_mb=20)
    small, big = (estimate(Settings("lambda", 1000 * 2**20, mb, memory_mb=2048), c) for mb in (25, 100))
    assert small.peak_memory_mb == pytest.approx(500 + 20 * 25, rel=0.01) and big.peak_memory_mb == pytest.approx(500 + 20 * 100, rel=0.01)
    assert small.feasible and not big.feasible and any(f.startswith("MEMORY") for f in big.flags)


def test_precision_needs_its_own_calibration() -> None:
    c = cals()
    with pytest.raises(CosmicaiError, match="no slurm-gpu calibration at bf16"):
        estimate(Settings("slurm-gpu", 2**30, 100, precision="bf16"), c)
    c["slurm-gpu:bf16"] = dataclasses.replace(c["slurm-gpu"], samples_per_s=20_000, precision="bf16")
    fp32, bf16 = (estimate(Settings("slurm-gpu", 2**30, 100, precision=p), c) for p in ("fp32", "bf16"))
    assert bf16.job_s < fp32.job_s and bf16.calibration["precision"] == "bf16"
    shipped = calibration.load(calibration.DEFAULT_FILE)
    assert {calibration.pick(shipped, "slurm-gpu", p).precision for p in ("fp32", "bf16", "tf32")} == {"fp32", "bf16", "tf32"}


def test_runtime_named_and_calibration_installed_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = cals()
    flags = estimate(Settings("local", 2**30, 100, runtime="openvino"), c).flags
    assert any(f.startswith("RUNTIME: planned at test's speed") for f in flags)
    # auto: the runtime this machine's engines would pick (OpenVINO or ONNX Runtime here), not the calibration's "test"
    auto = estimate(Settings("local", 2**30, 100, runtime="auto"), c).flags
    assert [f.split(":")[0] for f in auto] == ["RUNTIME", "UNPRICED"] and "(auto, on this machine)" in auto[0]
    same = dataclasses.replace(c["local"], runtime=local_runtime(Settings("local", 1, 1)))
    assert [f.split(":")[0] for f in estimate(Settings("local", 2**30, 100), {**c, "local": same}).flags] == ["UNPRICED"]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_file = tmp_path / "calibration.json"  # as a run writes it beside its results
    calibration.write(run_file, {"local": dataclasses.replace(c["local"], samples_per_s=123.0)})
    assert calibration.load()["local"].samples_per_s != 123.0  # written, not used
    assert calibration.load(run_file)["local"].samples_per_s == 123.0  # used when named
    assert calibration.install(run_file) == ["local"]
    assert calibration.load()["local"].samples_per_s == 123.0  # and after an explicit install
    assert calibration.persistent_path() == tmp_path / "config" / "cosmicai" / "calibration.json"


def test_partitions_per_job_pay_start_up_once() -> None:
    s = Settings("slurm", 64 * 1000 * 20_500, 1000 * 20_500 / 2**20, threads=2, nodes=1, cores_per_node=16)
    one = estimate(s, cals())
    four = estimate(dataclasses.replace(s, partitions_per_job=4), cals())
    assert (one.jobs, four.jobs, four.partitions) == (64, 16, 64)
    assert one.quantity("cpu_hours") - four.quantity("cpu_hours") == pytest.approx(48 * (10.0 + 2.0) * 2 / 3600, rel=1e-3)


def test_partitions_per_job_auto_keeps_500_jobs_at_most_as_the_workflow() -> None:
    s = Settings("slurm-gpu", 2**40, 100, gpus=1)  # 10,486 partitions
    auto = estimate(s, cals())
    assert (auto.partitions, auto.partitions_per_job, auto.jobs) == (10_486, 21, 500)
    assert auto.row()["partitions_per_job"] == 21 and "21 partition(s) per job (auto: at most 500 jobs)" in auto.assumptions[1]
    small = estimate(dataclasses.replace(s, data_bytes=2**30), cals())  # auto is resolved per plan, not once per config
    assert (small.partitions, small.partitions_per_job, small.jobs) == (11, 1, 11)
    k512 = estimate(dataclasses.replace(s, partitions_per_job=512), cals())
    assert k512.jobs == 21 and k512.wall_s < auto.wall_s  # start-up paid 21 times, not 500
    with pytest.raises(CosmicaiError, match="partitions_per_job"):
        estimate(dataclasses.replace(s, partitions_per_job=0), cals())


def test_sweep_rows_and_columns(tmp_path: Path) -> None:
    axes = Axes(backends=("lambda", "slurm"), data_bytes=(2**30, 4 * 2**30), partition_mb=(25, 100), memory_mb=(2048, 4096))
    plans = sweep(Settings("lambda", 2**30, 25), axes, cals())
    assert len(plans) == 2 * 2 * 2 + 2 * 2  # memory varies Lambda only
    out = tmp_path / "sweep"
    proc = run_cli(
        "plan",
        "--backend",
        "lambda,slurm",
        "--data-size",
        "1GB,4GB",
        "--partition-mb",
        "25,100",
        "--memory-mb",
        "2048:4096:2048",
        "--output",
        f"{out}.csv",
        "--output",
        f"{out}.parquet",
        "--output",
        f"{out}.json",
        "--plot",
        f"{out}.png",
        check=True,
    )
    assert "lambda" in proc.stdout
    frame = read_table(f"{out}.parquet")
    csv = read_table(f"{out}.csv")
    js = read_table(f"{out}.json")
    assert len(frame) == 12 and list(csv.columns) == list(frame.columns) == list(js.columns)
    # Typed the same in every format (an empty flags column once read as float from CSV and text from JSON).
    assert dict(csv.dtypes) == dict(frame.dtypes) == dict(js.dtypes)
    assert "calibration" not in frame.columns and csv["flags"].map(type).eq(str).all()
    assert Path(f"{out}.csv").read_text().startswith("# calibration: ")
    assert json.loads(Path(f"{out}.json").read_text())["calibrations"]
    assert b"cosmicai.calibrations" in pq.read_schema(f"{out}.parquet").metadata
    for col in ("concurrency_requested", "concurrency", "throughput_gbit_s", "samples_per_s", "dispatch_s", "upload_s", "merge_s"):
        assert col in frame.columns, col
    assert (csv.partitions == frame.partitions).all() and csv.cost_usd.to_numpy() == pytest.approx(frame.cost_usd.to_numpy())
    for col in ("partitions", "jobs", "wall_s", "cost_usd", "gb_s", "requests", "cpu_h", "gpu_h", "peak_memory_mb"):
        assert pd.api.types.is_numeric_dtype(frame[col]), col
    lam = frame[frame.backend == "lambda"]
    assert sorted(set(lam.memory_mb)) == [2048, 4096] and frame[frame.backend == "slurm"].memory_mb.isna().all()
    assert (lam.requests == lam.partitions).all() and (frame[frame.backend == "slurm"].cpu_h > 0).all()
    assert len(json.loads(Path(f"{out}.json").read_text())["rows"]) == 12
    assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"


def test_recommendation_picks_the_known_best() -> None:
    # At 1,769 MB (1 vCPU) and 100 samples/s, 1 GiB (52,429 rows) takes 524 s of compute; partitions change only
    # the fixed costs: fewer, bigger partitions are cheaper, smaller ones (more at once) are faster.
    c = cals(staging_mb_per_s=0)
    plans = sweep(Settings("lambda", 2**30, 25, memory_mb=1769, concurrency=1000), Axes(partition_mb=(5, 25, 100, 1000)), c)
    by_mb = {p.settings.partition_mb: p for p in plans}
    assert not by_mb[1000].feasible  # a partition larger than /tmp
    assert by_mb[100].cost_usd < by_mb[25].cost_usd < by_mb[5].cost_usd and by_mb[5].wall_s < by_mb[25].wall_s < by_mb[100].wall_s
    rec = recommend(plans, deadline_s=by_mb[25].wall_s + 1)
    assert rec.best is by_mb[25]
    why = {p.settings.partition_mb: w for p, w in rec.reasons}
    assert why[100].startswith("misses the deadline") and why[5].startswith("costs") and why[1000].startswith("cannot run: /TMP")
    assert recommend(plans, budget_usd=by_mb[25].cost_usd + 1e-9).best is by_mb[25]
    assert recommend(plans, deadline_s=1.0).best is None


def test_cli_recommendation_and_broken_pipe() -> None:
    proc = run_cli(
        "plan",
        "--backend",
        "lambda",
        "--data-size",
        "1TB",
        "--partition-mb",
        "25,50,75,100",
        "--memory-mb",
        "2048:10240:2048",
        "--concurrency",
        "1000",
        "--data-in-s3",
        "--deadline",
        "10min",
        check=True,
    )
    assert "recommendation (the cheapest within 10 min 00 s)" in proc.stdout and "misses the deadline" in proc.stdout
    cmd = "cosmicai plan --compare --data-size 1GB,2GB,4GB --partition-mb 1:100:1 --format csv | head -1"
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], check=False, capture_output=True, text=True, env=env_with_venv(), cwd=REPO
    )
    assert piped.stdout.startswith("backend,") and "Broken pipe" not in piped.stderr and "Traceback" not in piped.stderr


def test_plan_block_handles_a_tebibyte_quickly() -> None:
    import time

    shipped = calibration.load(calibration.DEFAULT_FILE)
    start = time.perf_counter()
    plan = estimate(Settings("lambda", 2**40, 100, concurrency=1000), shipped)
    assert plan.partitions == 10_486 and time.perf_counter() - start < 1.0
    assert math.isfinite(plan.wall_s)


def test_sweep_types_alike_with_only_cluster_plans(tmp_path: Path) -> None:
    from cosmicai.planning.sweep import write_table

    plans = sweep(Settings("slurm", 2**30, 100), Axes(data_bytes=(2**30, 2**31)), cals())
    frames = []
    for kind in ("csv", "json", "parquet"):
        write_table(plans, tmp_path / f"s.{kind}")
        frames.append(read_table(tmp_path / f"s.{kind}"))
    assert dict(frames[0].dtypes) == dict(frames[1].dtypes) == dict(frames[2].dtypes)
    assert frames[1]["memory_mb"].isna().all() and frames[1]["memory_mb"].dtype == float  # null in JSON, never 0 MB
    assert "NaN" not in (tmp_path / "s.json").read_text()  # valid JSON
