"""Plan against actual: after one run, the plan of a second run of another size, calibrated on the first, is
compared with what the second run measures (local profile and the Lambda stand-ins).

The tests assert the report (the ratio is there, the calibration named is the first run's, the runtime that ran
is the one calibrated), never a timing: the ratio depends on this shared machine's load. Each prints its ratio
and the load average for the record (docs/incoming/planner.md keeps the figures).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.stands import Stands
from helpers.workflow import snakemake, tiny_config

from cosmicai.data.synth import synthesize


def _two_runs(tmp_path: Path, profile: str, checkpoint: Path, sizes: tuple[int, int], env: dict | None, *args: str) -> dict:
    """Run `sizes[0]` rows, take its calibration, plan and run `sizes[1]` rows with it; the second run's plan-vs-actual."""
    first, second = tmp_path / "first", tmp_path / "second"
    for workdir, rows in ((first, sizes[0]), (second, sizes[1])):
        workdir.mkdir()
        synthesize(workdir / "data.h5", rows, seed=rows, size=64)
    config = tiny_config(first / "data.h5", checkpoint, f"pva-{profile}-1", partition_mb=25)
    proc = snakemake(first, profile, config, *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    named = first / "results" / "calibration.json"
    config = tiny_config(second / "data.h5", checkpoint, f"pva-{profile}-2", partition_mb=25, plan_calibration=str(named))
    proc = snakemake(second, profile, config, *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pva = json.loads((second / "results" / "summary" / "cost_summary.json").read_text())["plan_vs_actual"]
    assert pva["calibration"]["file"] == str(named)  # planned on the first run's measurement
    assert pva["runtime_ran"] == pva["runtime_planned"] and "RUNTIME" not in pva["flags"]
    assert isinstance(pva["time_within_30_percent"], bool) and pva["time_ratio"] > 0
    rows = {r["quantity"]: r for r in pva["rows"]}
    load = os.getloadavg()
    print(
        f"\n{profile} plan vs actual ({sizes[0]:,} rows calibrate, {sizes[1]:,} rows run): wall {rows['wall_s']['estimate']:.1f} s "
        f"planned, {rows['wall_s']['actual']:.1f} s measured, ratio {pva['time_ratio']:.2f} "
        f"(within 30%: {pva['time_within_30_percent']}); load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    return pva


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_local_plan_of_another_size_against_actual(tmp_path: Path, random_checkpoint: Path) -> None:
    pva = _two_runs(tmp_path, "local", random_checkpoint, (5000, 7500), None, "--cores", "2")
    assert pva["backend"] == "local"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_lambda_plan_of_another_size_against_actual(tmp_path: Path, random_checkpoint: Path, stand: Stands) -> None:
    pva = _two_runs(tmp_path, "lambda", random_checkpoint, (5000, 7500), stand.env, "--jobs", "4")
    assert pva["backend"] == "lambda"
