"""Plan-vs-actual of a lambda-profile run against the local stand-ins (S3 and Lambda), and its HTML report."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("awslambdaric")
pytest.importorskip("boto3")

from test_lambda_workflow import BUCKET, CONCURRENCY, FUNCTION, Stand, stand  # noqa: E402,F401 (stand: this module's own stand-ins)
from test_plan import check_report, snakemake, tiny_config  # noqa: E402


def test_lambda_run_time_estimate_within_factor_2(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stand) -> None:  # noqa: F811
    config = tiny_config(tiny_dataset, random_checkpoint)
    config["lambda"].update(bucket=BUCKET, function_name=FUNCTION, prefix="plan-vs-actual")
    proc = snakemake(tmp_path, "lambda", config, "--jobs", str(CONCURRENCY), env=stand.env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pva = check_report(tmp_path, "lambda", config, env=stand.env)
    rows = {r["quantity"]: r for r in pva["rows"]}
    assert pva["backend"] == "lambda" and rows["lambda_requests"]["estimate"] == rows["lambda_requests"]["actual"] == 4
    assert rows["lambda_x86_64_gb_s"]["actual"] > 0 and rows["cost_usd"]["actual"] > 0
    print(f"\nlambda plan vs actual: wall {rows['wall_s']['estimate']:.2f} s estimated, {rows['wall_s']['actual']:.2f} s actual; "
          f"GB-s {rows['lambda_x86_64_gb_s']['estimate']:.2f} vs {rows['lambda_x86_64_gb_s']['actual']:.2f}; "
          f"cost ${rows['cost_usd']['estimate']:.6f} vs ${rows['cost_usd']['actual']:.6f}")
    assert pva["time_within_factor_2"], pva["rows"]
