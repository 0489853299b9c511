"""Lambda faults injected through the local stand-ins, a switch per fault, and resume on the lambda profile.

The servers start here: rclone serve s3, the S3 fault proxy in front of it (aws_standins.s3_faults;
every S3 client, the invoker's and the function's, goes through it), and the Lambda stand-in. Each
fault is shown twice: once switched on for a bounded number of hits during a workflow run, which
completes with the same bytes as a clean run; once left on, so the invoker's bounded retries run out
and the job fails naming the cause.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers.cli import REPO
from helpers.processes import done_partitions, group_gone, incomplete_outputs
from helpers.stands import Stands, cosmicai_function, running_stands
from helpers.workflow import BUCKET, FUNCTION, sidecars, snakemake, snakemake_cmd, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # long fault runs; the first test also makes the reference run
FAULTY = "cosmicai-faulty"
ROOT = "faults"  # the functions' COSMICAI_S3_PREFIX: every run's lambda.prefix lies under it
N_PARTS = 12  # 300 rows at partition_mb 0.5
NO_FAULTS = {
    "throttle": 0,
    "throttle_for_s": 0,
    "crash": 0,
    "timeout": 0,
    "oom": 0,
    "lost_response": 0,
    "max_hits": None,
    "once_per_event": False,
}
NO_S3_FAULTS = {"slow_down": 0, "unavailable": 0, "methods": None, "match": "", "max_hits": None}


def _test_function(name: str, handler: str) -> dict[str, Any]:
    """A function running one of tests/lambda_handlers.py's handlers."""
    return {"name": name, "handler": f"lambda_handlers.{handler}", "code_dirs": [str(REPO / "tests")], "memory_mb": 128, "timeout_s": 10}


@pytest.fixture(scope="module")
def stands(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stands]:
    prefix_env = {"environment": {"COSMICAI_S3_PREFIX": ROOT}}
    functions = [
        cosmicai_function(FUNCTION, concurrency=4, **prefix_env),
        cosmicai_function(FAULTY, concurrency=2, **prefix_env),
        _test_function("forker", "fork_copies"),
        _test_function("childhog", "child_hog"),
    ]
    with running_stands(tmp_path_factory.mktemp("aws"), functions, fault_proxy=True) as running:
        yield running


def lambda_config(dataset: Path, checkpoint: Path, prefix: str) -> dict:
    """The default config on the tiny dataset in 12 partitions of 25 rows, staged under faults/PREFIX."""
    return tiny_config(dataset, checkpoint, f"{ROOT}/{prefix}", partition_mb=0.5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, random_checkpoint: Path, stands: Stands) -> Path:
    """An uninterrupted, fault-free lambda-profile run: the bytes every other run must reproduce."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = snakemake(workdir, "lambda", lambda_config(tiny_dataset, random_checkpoint, "reference"), "--jobs", "4", env=stands.env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def _check_rows(workdir: Path, reference: Path) -> None:
    """Merged predictions byte-identical to the reference; rows in = rows out for every partition; no id twice."""
    merged = workdir / "results" / "predictions.parquet"
    assert merged.read_bytes() == (reference / "results" / "predictions.parquet").read_bytes()
    ids = pq.read_table(merged).column("object_id").to_numpy()
    assert len(ids) == len(set(ids.tolist())) == 300
    accounting = json.loads((workdir / "results" / "summary" / "run_summary.json").read_text())["row_accounting"]
    assert accounting["rows_in"] == accounting["rows_out"] == 300 and accounting["rows_lost"] == 0
    assert len(accounting["per_partition"]) == N_PARTS and all(p["rows_in"] == p["rows_out"] for p in accounting["per_partition"])


def test_every_fault_once_is_survived_without_duplicate_rows(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stands: Stands, reference: Path
) -> None:
    # One of each Lambda fault, each on a different event (a retry of a faulted event is spared), a
    # throttling storm, and S3 503s for the invoker's and the function's requests alike.
    faults = {
        "crash": 1,
        "timeout": 1,
        "oom": 1,
        "lost_response": 1,
        "max_hits": 1,
        "once_per_event": True,
        "throttle": 0.9,
        "throttle_for_s": 6,
        "seed": 7,
    }
    stands.patch({"faults": faults, "timeout_s": 15})  # a frozen environment times out after 15 s
    stands.s3_faults({"slow_down": 0.08, "unavailable": 0.04, "seed": 3})
    before, s3_before = stands.stats(), stands.s3_stats()
    try:
        config = lambda_config(tiny_dataset, random_checkpoint, "chaos")
        config["lambda"]["timeout_s"] = 15  # as the function now has it (the executor checks before it starts)
        proc = snakemake(tmp_path, "lambda", config, "--jobs", "4", env=stands.env)
        after, s3_after = stands.stats(), stands.s3_stats()
    finally:
        stands.patch({"faults": NO_FAULTS, "timeout_s": 120})
        stands.s3_faults(NO_S3_FAULTS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_rows(tmp_path, reference)

    injected = {name: after["faults"][name] - before["faults"][name] for name in after["faults"]}
    assert {k: injected[k] for k in ("crash", "timeout", "oom", "lost_response")} == {
        "crash": 1,
        "timeout": 1,
        "oom": 1,
        "lost_response": 1,
    }
    assert injected["throttle"] >= 1
    s3_injected = sum(s3_after["injected"].values()) - sum(s3_before["injected"].values())
    assert s3_injected >= 1
    runs = sidecars(tmp_path)
    invocations = after["invocations"] - before["invocations"]
    log = "".join(p.read_text() for p in (tmp_path / "logs" / "infer_job").glob("*.log"))
    for reason in ("function error Runtime.ExitError", "function error Sandbox.Timedout", "function error Runtime.OutOfMemory"):
        assert log.count(reason) == 1
    # The function's S3 client tries 3 times (botocore's default); a request that got 503 every time is rare,
    # and the invoker retries the invocation.
    s3_unavailable = log.count("function error S3Unavailable")
    # Every invocation beyond one per partition was a retry of a faulted one: crash, timeout, oom (and
    # S3 unavailable) by the invoker, the lost response by botocore inside one invoker attempt.
    assert invocations == N_PARTS + 4 + s3_unavailable
    assert sum(r["lambda"]["throttles"] for r in runs) == after["throttles"] - before["throttles"]
    print(
        f"\nfaults survived in {proc.wall_s:.0f} s: {injected} plus {s3_injected} S3 503s; {invocations} invocations for {N_PARTS} partitions"
    )


def _invoke(stands: Stands, workdir: Path, reference: Path, prefix: str, *args: str) -> subprocess.CompletedProcess:
    """The inference job's command (workflow/scripts/lambda_invoke.py) on reference partition 0 against the faulty function."""
    res = reference / "results"
    cmd = [
        sys.executable,
        str(REPO / "workflow" / "scripts" / "lambda_invoke.py"),
        "--manifest",
        str(res / "partitions" / "manifest.json"),
        "--job",
        "job_00000",
        "--partitions",
        "part_00000",
        "--predictions-dir",
        str(workdir),
        "--record",
        str(workdir / "jobs" / "job_00000.json"),
        "--checkpoint",
        str(res / "model" / "astromae.onnx"),
        "--onnx",
        str(res / "model" / "astromae.onnx"),
        "--bucket",
        BUCKET,
        "--prefix",
        f"{ROOT}/{prefix}",
        "--function-name",
        FAULTY,
        "--timeout-s",
        "120",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=stands.env)


def _dataset_key(reference: Path, prefix: str) -> str:
    """Where the invoker stages the reference run's (local) dataset under a prefix."""
    source = json.loads((reference / "results" / "partitions" / "manifest.json").read_text())["source"]
    return f"{ROOT}/{prefix}/datasets/{source['sample_sha256'][:16]}/{Path(source['uri']).name}"


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    return next(line for line in proc.stderr.splitlines() if line.startswith("lambda_invoke: error:"))


@pytest.mark.parametrize(
    "fault,patch,args,cause,invocations",
    [
        (
            "crash",
            {"faults": {"crash": 1.0}},
            (),
            "Runtime.ExitError: RequestId: {rid} Error: Runtime exited with error: signal: killed (3 attempts)",
            3,
        ),
        (
            "timeout",
            {"faults": {"timeout": 1.0}, "timeout_s": 2},
            ("--timeout-s", "2"),
            "Sandbox.Timedout: RequestId: {rid} Error: Task timed out after 2.00 seconds (raise lambda.timeout_s) (3 attempts)",
            3,
        ),
        # No switch: the function really needs more than 128 MB, and the stand-in's limit kills it.
        (
            "oom",
            {"memory_mb": 128},
            ("--memory-mb", "128"),
            "Runtime.OutOfMemory: RequestId: {rid} Error: Runtime exited with error: signal: killed (raise lambda.memory_mb) (3 attempts)",
            3,
        ),
        (
            "throttle",
            {"faults": {"throttle": 1.0}},
            ("--max-attempts", "2"),
            "lambda:cosmicai-faulty: still throttled after 2 attempt(s) "
            "(TooManyRequestsException: Rate Exceeded.); lower the profile's jobs or raise the function's concurrency",
            0,
        ),
        (
            "lost_response",
            {"faults": {"lost_response": 1.0}},
            ("--max-attempts", "2", "--inline-max-bytes", "0"),  # through S3: the object outlives the lost answer
            "lambda:cosmicai-faulty: the connection closed without "
            "a response, 2 attempt(s) (each with 3 tries of the Invoke client); the function may have run: a rerun overwrites its output",
            6,
        ),
    ],
    ids=["crash", "timeout", "oom", "throttle", "lost_response"],
)
def test_fault_that_persists_fails_the_job_with_its_cause(
    tmp_path: Path, stands: Stands, reference: Path, fault: str, patch: dict, args: tuple[str, ...], cause: str, invocations: int
) -> None:
    stands.patch(patch, FAULTY)
    before = stands.stats(FAULTY)
    try:
        proc = _invoke(stands, tmp_path, reference, f"fail-{fault}", *args)
        after = stands.stats(FAULTY)
    finally:
        stands.patch({"faults": NO_FAULTS, "timeout_s": 120, "memory_mb": 2048}, FAULTY)
    line = _error_line(proc)
    rid = re.search(r"RequestId: (\S+) Error", line)
    assert line.endswith(cause.format(rid=rid[1] if rid else "")), line
    assert after["invocations"] - before["invocations"] == invocations
    if fault == "throttle":
        assert after["throttles"] - before["throttles"] == 6  # 2 invoker attempts x 3 botocore tries
    elif fault != "oom":
        assert after["faults"][fault] - before["faults"][fault] == invocations
    assert not (tmp_path / "part_00000.parquet").exists() and not (tmp_path / "part_00000.json").exists()
    assert not (tmp_path / "jobs").exists()
    if fault == "lost_response":  # the function did write its output; only its answer was lost
        stands.client("s3").head_object(Bucket=BUCKET, Key=f"{ROOT}/fail-lost_response/predictions/part_00000.parquet")


def test_s3_unavailable_in_the_function_fails_the_job_with_its_cause(tmp_path: Path, stands: Stands, reference: Path) -> None:
    # The function's uploads of predictions always get 503 SlowDown; the invoker's own requests pass.
    stands.s3_faults({"slow_down": 1.0, "methods": ["PUT"], "match": f"/{ROOT}/fail-s3/predictions/"})
    # Two botocore tries per S3 call in the function (AWS_MAX_ATTEMPTS), to keep the test short.
    scope = {"COSMICAI_S3_BUCKET": BUCKET, "COSMICAI_S3_PREFIX": ROOT}
    stands.patch({"environment": {**scope, "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}}, FAULTY)
    before, s3_before = stands.stats(FAULTY), stands.s3_stats()
    try:
        proc = _invoke(stands, tmp_path, reference, "fail-s3", "--inline-max-bytes", "0")  # the function PUTs its predictions
        after, s3_after = stands.stats(FAULTY), stands.s3_stats()
    finally:
        stands.s3_faults(NO_S3_FAULTS)
        stands.patch({"environment": scope}, FAULTY)
    line = _error_line(proc)
    assert line.endswith(
        f"Lambda function {FAULTY} failed: S3Unavailable: s3://{BUCKET}/{ROOT}/fail-s3/predictions/part_00000.parquet: "
        "writing the predictions: SlowDown: Please reduce your request rate. (HTTP 503, still after botocore's retries) "
        "(S3 is shedding load: rerun later, or lower the profile's jobs) (3 attempts)"
    ), line
    assert after["invocations"] - before["invocations"] == 3
    assert s3_after["injected"]["slow_down"] - s3_before["injected"]["slow_down"] == 3 * 2
    assert not (tmp_path / "part_00000.parquet").exists()


def test_s3_unavailable_for_the_invoker_fails_the_job_with_its_cause(tmp_path: Path, stands: Stands, reference: Path) -> None:
    stands.s3_faults({"unavailable": 1.0, "match": f"/{ROOT}/fail-s3-invoker/"})
    before, s3_before = stands.stats(FAULTY), stands.s3_stats()
    try:
        proc = _invoke(stands, tmp_path, reference, "fail-s3-invoker")
        after, s3_after = stands.stats(FAULTY), stands.s3_stats()
    finally:
        stands.s3_faults(NO_S3_FAULTS)
    line = _error_line(proc)
    key = _dataset_key(reference, "fail-s3-invoker")
    assert f"s3://{BUCKET}/{key}: uploading {Path(key).name}: 503" in line, line
    assert "(HTTP 503, still after botocore's retries)" in line
    assert s3_after["injected"]["unavailable"] - s3_before["injected"]["unavailable"] == 6  # the invoker's S3 client: 1 try + 5 retries
    assert after["invocations"] == before["invocations"]  # nothing invoked without its data in place


def test_dataset_replaced_in_s3_is_caught_by_the_function(tmp_path: Path, stands: Stands, reference: Path, tiny_dataset: Path) -> None:
    # Another dataset at the staged dataset's key, carrying the right identity in its metadata: the invoker
    # trusts the metadata and skips the upload; the function checks the HDF5 layout it opens and refuses it.
    from cosmicai.aws.storage import IDENTITY_META
    from cosmicai.data.synth import synthesize

    source = json.loads((reference / "results" / "partitions" / "manifest.json").read_text())["source"]
    other = tmp_path / "other.h5"
    synthesize(other, 250, seed=5, size=64)
    key = _dataset_key(reference, "fail-replaced")
    stands.client("s3").put_object(
        Bucket=BUCKET, Key=key, Body=other.read_bytes(), Metadata={k.replace("_", "-"): str(source[k]) for k in IDENTITY_META}
    )
    before = stands.stats(FAULTY)
    proc = _invoke(stands, tmp_path, reference, "fail-replaced")
    line = _error_line(proc)
    assert f"CosmicaiError: s3://{BUCKET}/{key}: changed since partitioning: HDF5 layout" in line, line
    assert stands.stats(FAULTY)["invocations"] - before["invocations"] == 1  # bad data is final: not retried
    assert not (tmp_path / "part_00000.parquet").exists()


def test_key_outside_the_prefix_is_refused(tmp_path: Path, stands: Stands, reference: Path) -> None:
    before = stands.stats(FAULTY)
    proc = _invoke(stands, tmp_path, reference, "../escape")
    assert _error_line(proc).endswith(
        f"lambda.prefix: key '{_dataset_key(reference, '../escape')}' has an empty, '.' or '..' "
        "segment: refused (the function may only read and write under the configured prefix)"
    )
    assert not (stands.s3_data.parent / "escape").exists() and not (stands.s3_data / "escape").exists()

    # The function refuses, by its own configuration, any key an event names outside its prefix.
    event = {
        "source": {"uri": f"s3://{BUCKET}/{ROOT}/p/datasets/d.h5"},
        "start": 0,
        "stop": 1,
        "partition": "part_00000",
        "model": {"bucket": BUCKET, "key": f"{ROOT}/models/m.onnx"},
        "output": {"bucket": BUCKET, "key": f"{ROOT}/p/predictions/x.parquet"},
    }
    lam = stands.client("lambda")
    for field, key, problem in [
        ("model", "elsewhere/models/m.onnx", "is outside the prefix 'faults/'"),
        ("output", f"{ROOT}/../x.parquet", "has an empty, '.' or '..' segment"),
    ]:
        response = lam.invoke(FunctionName=FAULTY, Payload=json.dumps({**event, field: {"bucket": BUCKET, "key": key}}).encode())
        body = json.loads(response["Payload"].read())
        assert response["FunctionError"] == "Unhandled" and body["errorType"] == "CosmicaiError"
        assert body["errorMessage"] == f"event: '{field}.key': key '{key}' {problem}: refused (COSMICAI_S3_PREFIX='{ROOT}')"
    assert stands.stats(FAULTY)["invocations"] - before["invocations"] == 2
    assert not (tmp_path / "part_00000.parquet").exists()


def _report(response: dict[str, Any]) -> dict[str, str]:
    last = base64.b64decode(response["LogResult"]).decode().splitlines()[-1]
    return dict(part.split(": ", 1) for part in last.split("\t") if ": " in part)


def test_memory_counts_forked_copies_once(stands: Stands) -> None:
    # 50 MiB held, then two forks that share it and sleep 1.5 s: summing RSS over the tree counted
    # ~3 x 66 MB and killed this 128 MB function; the worker's RSS plus the copies' own pages fit.
    lam = stands.client("lambda")
    response = lam.invoke(FunctionName="forker", Payload=json.dumps({"mb": 50, "forks": 2, "hold_s": 1.5}).encode(), LogType="Tail")
    assert "FunctionError" not in response, response["Payload"].read()
    used = int(_report(response)["Max Memory Used"].split()[0])
    assert 50 < used < 100

    # A child with memory of its own is counted, and the limit applies to the sum.
    fits = lam.invoke(FunctionName="childhog", Payload=json.dumps({"mb": 30, "hold_s": 1}).encode(), LogType="Tail")
    assert "FunctionError" not in fits and int(_report(fits)["Max Memory Used"].split()[0]) >= 30 + 10
    over = lam.invoke(FunctionName="childhog", Payload=json.dumps({"mb": 150, "hold_s": 2}).encode(), LogType="Tail")
    assert over["FunctionError"] == "Unhandled" and json.loads(over["Payload"].read())["errorType"] == "Runtime.OutOfMemory"
    assert int(_report(over)["Max Memory Used"].split()[0]) >= 128


def test_sigkill_mid_run_then_resume_on_lambda(
    tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path, stands: Stands, reference: Path
) -> None:
    config = lambda_config(tiny_dataset, random_checkpoint, "resume")
    cmd = snakemake_cmd(tmp_path, "lambda", config, "--jobs", "2")
    with open(tmp_path / "killed-run.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=stands.env, start_new_session=True)
    pred_dir = tmp_path / "results" / "predictions"
    deadline = time.time() + 300
    while len(done_partitions(pred_dir)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its invokers; invocations already sent run on in the stand-in
    proc.wait()
    assert group_gone(proc.pid), "jobs of the killed run are still running"

    # Partitions commit one by one (their sidecar last), whatever became of their job: all are kept.
    done, incomplete = done_partitions(pred_dir), incomplete_outputs(tmp_path)
    assert 1 <= len(done) < N_PARTS, done
    assert not (tmp_path / "results" / "predictions.parquet").exists()
    jobs = {"job_00000", "job_00001"}  # 12 partitions, 8 per job (config/lambda.yaml)
    rerun = {b for b in jobs if b in incomplete or not (pred_dir / "jobs" / f"{b}.json").exists()}

    assert snakemake(tmp_path, "lambda", config, "--unlock", env=stands.env).returncode == 0
    before = stands.stats()
    resumed = snakemake(tmp_path, "lambda", config, "--jobs", "4", env=stands.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ran = re.search(r"^infer_job\s+(\d+)$", resumed.stdout + resumed.stderr, re.M)
    assert ran and int(ran.group(1)) == len(rerun) >= 1
    assert stands.stats()["invocations"] - before["invocations"] == N_PARTS - len(done)  # only the missing ones were invoked
    after = done_partitions(pred_dir)
    assert all(after[name] == st for name, st in done.items()), "a finished partition ran again"
    _check_rows(tmp_path, reference)
