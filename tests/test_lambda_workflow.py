"""The workflow through `--profile profiles/lambda` against the real local stand-ins (rclone S3 + Lambda).

The servers (the `stand` fixture, tests/conftest.py) start on free ports; the function is cosmicai.function.handler.handler
run by awslambdaric.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.cli import REPO
from helpers.stands import KEY, SECRET, Stands
from helpers.workflow import BUCKET, FUNCTION, sidecars, snakemake, tiny_config

from cosmicai.resources import sha256_file

CONCURRENCY = 4  # the `stand` fixture's function (tests/conftest.py)


@pytest.mark.timeout(600)
def test_lambda_profile_matches_local_and_costs_match_reports(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands
) -> None:
    local_dir, lambda_dir = tmp_path / "local", tmp_path / "lambda"
    local_dir.mkdir()
    lambda_dir.mkdir()
    before = stand.stats()
    lam = snakemake(lambda_dir, "lambda", tiny_config(tiny_dataset, random_checkpoint, "match"), "--jobs", str(CONCURRENCY), env=stand.env)
    assert lam.returncode == 0, lam.stderr[-4000:]
    local = snakemake(local_dir, "local", tiny_config(tiny_dataset, random_checkpoint, "match"))
    assert local.returncode == 0, local.stderr[-4000:]

    a = pq.read_table(local_dir / "results" / "predictions.parquet")
    b = pq.read_table(lambda_dir / "results" / "predictions.parquet")
    np.testing.assert_array_equal(a.column("object_id").to_numpy(), b.column("object_id").to_numpy())
    with h5py.File(tiny_dataset) as f:
        np.testing.assert_array_equal(b.column("object_id").to_numpy(), f["object_id"][:])
    dz = np.abs(a.column("z_pred").to_numpy() - b.column("z_pred").to_numpy())
    assert dz.max() == 0  # the same engine on the same rows in the same batches

    after = stand.stats()
    assert after["invocations"] - before["invocations"] == 4 and after["errors"] == before["errors"]
    assert after["peak_concurrency"] >= 2  # the profile's jobs invoke concurrently

    runs = sidecars(lambda_dir)
    assert {r["runtime"] for r in runs} == {r["runtime"] for r in sidecars(local_dir)}  # the same engine as locally
    # The local dataset was staged once, as one object, for all four partitions; each function read its rows of it.
    assert sum(r["lambda"]["source_uploaded"] for r in runs) == 1 and len({r["source"] for r in runs}) == 1
    staged = stand.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="match/datasets/")["Contents"]
    assert [o["Size"] for o in staged] == [tiny_dataset.stat().st_size]
    reports = stand.reports()
    expected_gb_s = 0.0
    for run in runs:
        record = run["lambda"]
        report = reports[record["request_id"]]  # every sidecar names an invocation the stand-in really ran
        assert (record["duration_ms"], record["billed_ms"], record["memory_mb"], record["max_memory_mb"]) == (
            float(report[2]),
            float(report[3]),
            float(report[4]),
            float(report[5]),
        )
        assert record["init_ms"] == float(report[6] or 0) and record["cold_start"] == (report[6] is not None)
        assert record["memory_mb"] == 2048 and 0 < record["max_memory_mb"] < 2048
        assert run["threads"] == 2  # the vCPUs 2,048 MB buys (1.16), rounded up: from Lambda's context in the function
        expected_gb_s += int(report[3]) / 1000 * int(report[4]) / 1024
    cost = json.loads((lambda_dir / "results" / "summary" / "cost_summary.json").read_text())
    assert cost["backend"] == "lambda"
    lines = {line["resource"]: line for line in cost["lines"]}
    assert lines["lambda_x86_64_gb_s"]["quantity"] == pytest.approx(expected_gb_s)
    assert lines["lambda_requests"]["quantity"] == 4
    assert cost["total_usd"] == pytest.approx(expected_gb_s * 0.0000166667 + 4 * 0.2e-6)
    assert len(cost["jobs"]) == 4 and cost["paper"]["paper_total_usd_range"] == [0.16, 0.38]
    run_summary = json.loads((lambda_dir / "results" / "summary" / "run_summary.json").read_text())
    assert run_summary["backend"] == "lambda" and run_summary["rows"] == 300

    # Measurements for the record (pytest -s shows them).
    cold = [r["lambda"] for r in runs if r["lambda"]["cold_start"]]
    warm = [r["lambda"] for r in runs if not r["lambda"]["cold_start"]]
    print(f"\nwall: lambda profile {lam.wall_s:.1f} s, local profile {local.wall_s:.1f} s")
    for r in runs:
        lr = r["lambda"]
        print(
            f"  {r['partition']}: {'cold' if lr['cold_start'] else 'warm'} duration {lr['duration_ms']:.0f} ms, "
            f"init {lr['init_ms']:.0f} ms, billed {lr['billed_ms']:.0f} ms, max memory {lr['max_memory_mb']:.0f} MB, "
            f"invoke round trip {lr['invoke_s']:.2f} s"
        )
    print(
        f"  {len(cold)} cold, {len(warm)} warm; cost ${cost['total_usd']:.8f} ({expected_gb_s:.2f} GB-s, 4 requests); "
        f"scaled to the paper's 659,178 rows ${cost['paper']['scaled_to_paper_rows_usd']:.4f}"
    )

    again = snakemake(lambda_dir, "lambda", tiny_config(tiny_dataset, random_checkpoint, "match"), "-n", env=stand.env)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_bad_partition_fails_alone_then_rerun_invokes_only_it(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands
) -> None:
    # partition_copy: one partition's own file can be broken alone (a row-range partition's source is shared).
    config = tiny_config(tiny_dataset, random_checkpoint, "bad", partition_copy=True)
    proc = snakemake(tmp_path, "lambda", config, "--until", "partition_dataset", env=stand.env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    parts = tmp_path / "results" / "partitions"
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in ("part_00001.h5", "manifest.json"):
        shutil.copy2(parts / name, backup / name)
    # Bad data the manifest vouches for (NaN images): only the function, reading it, finds the problem.
    with h5py.File(parts / "part_00001.h5", "r+") as f:
        f["images"][2] = np.nan
    manifest = json.loads((parts / "manifest.json").read_text())
    manifest["partitions"][1]["sha256"] = sha256_file(parts / "part_00001.h5")
    (parts / "manifest.json").write_text(json.dumps(manifest))
    for name in ("part_00001.h5", "manifest.json"):
        st = (backup / name).stat()
        os.utime(parts / name, ns=(st.st_atime_ns, st.st_mtime_ns))

    before = stand.stats()
    proc = snakemake(tmp_path, "lambda", config, "--jobs", "4", env=stand.env)
    middle = stand.stats()
    assert proc.returncode != 0
    log = (tmp_path / "logs" / "infer_job" / "job_00000.log").read_text()  # one job: the 4 partitions
    first = next(line for line in log.splitlines() if line.startswith("lambda_invoke: error:"))
    assert first.startswith("lambda_invoke: error: part_00001: ")  # the job's failed partition, named
    assert f"s3://{BUCKET}/bad/partitions/part_00001.h5: 1 row(s) with NaN or Inf" in first
    assert "Lambda function cosmicai-infer failed: CosmicaiError" in first
    assert "remote stack trace" in log and "infer.py" in log
    assert "NaN or Inf" in proc.stdout + proc.stderr  # show-failed-logs puts the cause in front of the user
    predictions = tmp_path / "results" / "predictions"
    assert sorted(p.name for p in predictions.glob("*.parquet")) == ["part_00000.parquet", "part_00002.parquet", "part_00003.parquet"]
    assert middle["invocations"] - before["invocations"] == 4 and middle["errors"] - before["errors"] == 1

    for name in ("part_00001.h5", "manifest.json"):
        shutil.copy2(backup / name, parts / name)  # the fix, with the original times
    proc = snakemake(tmp_path, "lambda", config, "--jobs", "4", env=stand.env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert stand.stats()["invocations"] - middle["invocations"] == 1
    assert pq.read_table(tmp_path / "results" / "predictions.parquet").num_rows == 300


def _invoke(tmp_path: Path, env: dict[str, str], dataset: Path, checkpoint: Path, *args: str) -> subprocess.CompletedProcess:
    from cosmicai.data.partition import write_partitions

    write_partitions(dataset, None, 1.5, tmp_path / "manifest.json")
    cmd = [
        sys.executable,
        str(REPO / "workflow" / "scripts" / "lambda_invoke.py"),
        "--manifest",
        str(tmp_path / "manifest.json"),
        "--job",
        "job_00000",
        "--partitions",
        "part_00000",
        "--predictions-dir",
        str(tmp_path / "out"),
        "--record",
        str(tmp_path / "out" / "jobs" / "job_00000.json"),
        "--checkpoint",
        str(checkpoint),
        "--prefix",
        "errors",
        "--timeout-s",
        "120",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_wrong_bucket_or_missing_function_is_a_clear_error(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands
) -> None:
    proc = _invoke(tmp_path, stand.env, tiny_dataset, random_checkpoint, "--bucket", "no-such-bucket", "--function-name", FUNCTION)
    assert proc.returncode == 1
    # The function was deployed for another bucket (its COSMICAI_S3_BUCKET): stopped before any upload.
    assert "its bucket (COSMICAI_S3_BUCKET) is 'cosmicai-test', lambda.bucket is 'no-such-bucket'" in proc.stderr.splitlines()[-1]
    proc = _invoke(tmp_path, stand.env, tiny_dataset, random_checkpoint, "--bucket", BUCKET, "--function-name", "no-such-function")
    assert proc.returncode == 1
    assert "lambda:no-such-function: function not found in region us-east-1" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()
    assert KEY not in proc.stderr and SECRET not in proc.stderr  # credentials never reach logs

    config = tiny_config(tiny_dataset, random_checkpoint, "x")
    config["lambda"]["bucket"] = ""
    proc = snakemake(tmp_path, "lambda", config, "-n", env=stand.env)
    assert proc.returncode == 0  # a dry-run plans, and needs no bucket
    proc = snakemake(tmp_path, "lambda", config, env=stand.env)
    assert proc.returncode != 0 and "lambda.bucket" in proc.stderr and not (tmp_path / "results" / "predictions").exists()


@pytest.mark.slow
def test_the_dispatcher_keeps_to_the_functions_concurrency(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands
) -> None:
    # Last in this module: changing the function's settings retires its warm environments.
    # The executor reads the reserved concurrency at start and keeps that many in flight: no 429 at all
    # (throttling storms and their Retry-After: tests/test_lambda_dispatch.py).
    stand.patch({"reserved_concurrency": 1})
    try:
        before = stand.stats()
        proc = snakemake(tmp_path, "lambda", tiny_config(tiny_dataset, random_checkpoint, "throttle"), "--jobs", "4", env=stand.env)
        after = stand.stats()
    finally:
        stand.patch({"reserved_concurrency": CONCURRENCY})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "up to 1 invocations in flight (reserved concurrency" in proc.stderr
    runs = sidecars(tmp_path)
    assert len(runs) == 4 and after["invocations"] - before["invocations"] == 4
    assert after["throttles"] == before["throttles"] and sum(r["lambda"]["throttles"] for r in runs) == 0
    assert sum(r["lambda"]["attempts"] for r in runs) == 4
    print(f"\nconcurrency 1, 4 jobs: one at a time, no 429, all 4 succeeded in {proc.wall_s:.1f} s")


@pytest.mark.slow  # ~90 s; the local profile's s3:// read is also checked against moto (tests/test_moto.py, slow)
@pytest.mark.timeout(600)
def test_s3_dataset_is_read_in_place_on_lambda_and_local_profiles(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands
) -> None:
    uri = f"s3://{BUCKET}/inputs/tiny.h5"
    stand.client("s3").upload_file(str(tiny_dataset), BUCKET, "inputs/tiny.h5")
    runs = {}
    for profile, extra in (("lambda", ("--jobs", str(CONCURRENCY))), ("local", ())):
        workdir = tmp_path / profile
        workdir.mkdir()
        proc = snakemake(workdir, profile, tiny_config(uri, random_checkpoint, "in-s3"), *extra, env=stand.env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert sorted(p.name for p in (workdir / "results" / "partitions").iterdir()) == ["manifest.json"]  # no data copied
        runs[profile] = pq.read_table(workdir / "results" / "predictions.parquet")
    a, b = runs["local"], runs["lambda"]
    with h5py.File(tiny_dataset) as f:
        np.testing.assert_array_equal(a.column("object_id").to_numpy(), f["object_id"][:])
    np.testing.assert_array_equal(a.column("object_id").to_numpy(), b.column("object_id").to_numpy())
    assert np.abs(a.column("z_pred").to_numpy() - b.column("z_pred").to_numpy()).max() == 0
    runs_ = sidecars(tmp_path / "lambda")
    assert all(r["lambda"]["source_uploaded"] is False and r["source"] == uri for r in runs_)  # nothing staged: read in place
    assert all(0 < r["s3_bytes_read"] and r["s3_requests"] > 0 for r in runs_)  # each function read its rows itself
    listed = stand.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="in-s3/")["Contents"]
    assert not [o["Key"] for o in listed if "/datasets/" in o["Key"] or "/partitions/" in o["Key"]]
    sent = sum(r["lambda"]["event_bytes"] for r in runs_)
    print(
        f"\nS3 dataset, lambda profile: {sent} bytes of events sent for {tiny_dataset.stat().st_size} bytes of data; "
        f"functions read {sum(r['s3_bytes_read'] for r in runs_)} bytes in {sum(r['s3_requests'] for r in runs_)} ranged GETs"
    )


def _one_line(proc: subprocess.CompletedProcess, uri: str, message: str, outdir: Path) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert uri in lines[0] and message in lines[0], lines[0]
    assert not [p for p in outdir.rglob("*") if p.is_file()], list(outdir.rglob("*"))


def _cli(env: dict[str, str], *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "cosmicai"), *map(str, args)], capture_output=True, text=True, env=env)


def test_s3_bad_inputs_give_one_line_and_no_output(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stands) -> None:
    from cosmicai.data.synth import synthesize

    s3 = stand.client("s3")
    out = tmp_path / "out"
    out.mkdir()
    partition = ("partition", "--partition-mb", "1.5", "--manifest", out / "manifest.json")
    missing = f"s3://{BUCKET}/inputs/missing.h5"
    _one_line(_cli(stand.env, partition[0], missing, *partition[1:]), missing, "no such object", out)
    denied = f"s3://{BUCKET}/inputs/tiny.h5"
    s3.upload_file(str(tiny_dataset), BUCKET, "inputs/tiny.h5")
    _one_line(_cli({**stand.env, "AWS_SECRET_ACCESS_KEY": "wrong"}, partition[0], denied, *partition[1:]), denied, "access denied", out)
    truncated = f"s3://{BUCKET}/inputs/truncated.h5"
    s3.put_object(Bucket=BUCKET, Key="inputs/truncated.h5", Body=tiny_dataset.read_bytes()[: tiny_dataset.stat().st_size // 2])
    _one_line(_cli(stand.env, partition[0], truncated, *partition[1:]), truncated, "not a readable HDF5 file (truncated or corrupt?)", out)

    # Partitioned, then changed: a job refuses it before reading a row.
    uri = f"s3://{BUCKET}/inputs/changing.h5"
    s3.upload_file(str(tiny_dataset), BUCKET, "inputs/changing.h5")
    manifests = tmp_path / "manifests"
    assert _cli(stand.env, partition[0], uri, "--partition-mb", "1.5", "--manifest", manifests / "manifest.json").returncode == 0
    infer = (
        "infer",
        "--manifest",
        manifests / "manifest.json",
        "--job",
        "job_00000",
        "--partitions",
        "part_00001",
        "--predictions-dir",
        out,
        "--record",
        out / "jobs" / "job_00000.json",
        "--checkpoint",
        random_checkpoint,
    )
    edited = json.loads((manifests / "manifest.json").read_text())
    edited["partitions"][1]["stop"] = 400  # a row range past the end
    (manifests / "bad-range.json").write_text(json.dumps(edited))
    bad_range = [a if a != manifests / "manifest.json" else manifests / "bad-range.json" for a in infer]
    _one_line(_cli(stand.env, *bad_range), uri, "rows [75, 400) are past the end of the dataset (300 rows)", out)
    synthesize(tmp_path / "smaller.h5", 250, seed=3, size=64)  # the shape changed after partitioning
    s3.upload_file(str(tmp_path / "smaller.h5"), BUCKET, "inputs/changing.h5")
    _one_line(_cli(stand.env, *infer), uri, "changed since partitioning: size", out)
