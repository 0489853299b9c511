"""The Lambda dispatcher (executor plugin cosmicai-lambda) and its checks, against the real stand-ins.

rclone's S3 behind the S3 proxy (which can answer a missing key with 403, as S3 does without
s3:ListBucket), and the Lambda stand-in running the scale-mode function (the real handler without the
model compute) on threads: nothing here needs an awslambdaric process or a model.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

boto3 = pytest.importorskip("boto3")

from helpers.cli import REPO  # noqa: E402
from helpers.stands import KEY, Stands, running_stands  # noqa: E402
from helpers.workflow import BUCKET, FUNCTION, snakemake  # noqa: E402

from cosmicai.aws.dispatch import Dispatcher  # noqa: E402
from cosmicai.aws.job_spec import LambdaJobSpec  # noqa: E402
from cosmicai.aws.settings import LambdaSettings  # noqa: E402
from cosmicai.aws.storage import ensure_uploaded, stored_sha256  # noqa: E402
from cosmicai.data.partition import write_partitions  # noqa: E402
from cosmicai.errors import CosmicaiError  # noqa: E402

ROOT = "disp"  # the function's COSMICAI_S3_PREFIX


def _objects(stands: Stands) -> list[Path]:
    return [p for p in stands.s3_data.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def stands(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stands]:
    """The scale-mode function on threads (no process, no model), reserved concurrency 3, behind the S3 fault proxy."""
    function = {
        "name": FUNCTION,
        "handler": "aws_standins.scale_function.handler",
        "mode": "thread",
        "memory_mb": 2048,
        "timeout_s": 120,
        "reserved_concurrency": 3,
        "retry_after_s": 1,
        "environment": {"COSMICAI_S3_BUCKET": BUCKET, "COSMICAI_S3_PREFIX": ROOT},
    }
    with running_stands(tmp_path_factory.mktemp("aws"), [function], fault_proxy=True) as running:
        yield running


@pytest.fixture
def aws_env(stands: Stands, monkeypatch: pytest.MonkeyPatch) -> Stands:
    """This process's boto3 pointed at the stand-ins."""
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in stands.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return stands


def _config(dataset: Path, checkpoint: Path, **lam: Any) -> dict:
    checkpoint.write_bytes(b"never read: the run stops before any job")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(dataset=str(dataset), checkpoint=str(checkpoint), partition_mb=1.5)
    config["lambda"].update(
        {"bucket": BUCKET, "prefix": f"{ROOT}/run", "function_name": FUNCTION, "timeout_s": 120, "memory_mb": 2048, **lam}
    )
    return config


def _job_args(manifest: Path, out: Path, job: str, parts: list[str], model: Path, **lam: str) -> list[str]:
    """One inference job's script arguments (LambdaJobSpec.argv()), lambda settings as the stand-in's function."""
    settings = {"bucket": BUCKET, "function_name": FUNCTION, "timeout_s": "120", "memory_mb": "2048", **lam}
    return [
        "--manifest",
        str(manifest),
        "--job",
        job,
        "--partitions",
        *parts,
        "--predictions-dir",
        str(out),
        "--record",
        str(out / "jobs" / f"{job}.json"),
        "--checkpoint",
        str(model),
        *[x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", v)],
    ]


MISMATCHES = [
    ({"memory_mb": 1024}, "lambda:cosmicai-infer: does not match the config: its memory is 2048 MB, lambda.memory_mb is 1024"),
    (
        {"prefix": "elsewhere"},
        "lambda:cosmicai-infer: does not match the config: its prefix (COSMICAI_S3_PREFIX) is 'disp', "
        "lambda.prefix 'elsewhere' is outside it",
    ),
    (
        {"architecture": "arm64"},
        "lambda:cosmicai-infer: does not match the config: its architecture is x86_64, lambda.architecture is arm64",
    ),
    ({"timeout_s": 60}, "lambda:cosmicai-infer: does not match the config: its timeout is 120 s, lambda.timeout_s is 60"),
    ({"function_name": "no-such-function"}, "lambda:no-such-function: function not found"),
]
MISMATCH_IDS = ["memory", "prefix", "architecture", "timeout", "missing"]


@pytest.mark.parametrize("change,line", MISMATCHES, ids=MISMATCH_IDS)
def test_the_invoker_checks_the_function_before_any_upload(
    tmp_path: Path, aws_env: Stands, change: dict, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cosmicai.aws.lambda_job import main

    part = tmp_path / "part_00000.h5"
    part.write_bytes(b"never read")
    lam = {"prefix": f"{ROOT}/one", "function_name": FUNCTION, "timeout_s": 120, "memory_mb": 2048, "architecture": "x86_64", **change}
    argv = _job_args(
        tmp_path / "never-read.json", tmp_path / "out", "job_00000", ["part_00000"], part, **{k: str(v) for k, v in lam.items()}
    )
    before = aws_env.stats()["invocations"]
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"lambda_invoke: error: {line}")
    assert not _objects(aws_env) and aws_env.stats()["invocations"] == before


@pytest.mark.slow
@pytest.mark.parametrize("change,line", MISMATCHES, ids=MISMATCH_IDS)
def test_a_function_that_differs_from_the_config_stops_the_run_before_any_upload(
    tmp_path: Path, stands: Stands, tiny_dataset: Path, change: dict, line: str
) -> None:
    before = stands.stats()["invocations"]
    proc = snakemake(tmp_path, "lambda", _config(tiny_dataset, tmp_path / "model.safetensors", **change), env=stands.env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [text for text in proc.stderr.splitlines() if text.startswith("lambda:")]
    assert len(errors) == 1 and errors[0].startswith(line), proc.stderr[-3000:]
    assert not _objects(stands) and stands.stats()["invocations"] == before
    assert not (tmp_path / "results").exists()  # stopped before any job, local ones included


def test_a_configfile_without_the_lambda_settings_stops_the_lambda_profile(tmp_path: Path, stands: Stands, tiny_dataset: Path) -> None:
    config = _config(tiny_dataset, tmp_path / "model.safetensors")
    (tmp_path / "test-config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "--profile",
        str(REPO / "profiles" / "lambda"),
        "--configfile",
        str(tmp_path / "test-config.yaml"),
    ]  # replaces the profile's config/lambda.yaml: backend local
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=stands.env, timeout=300)
    assert proc.returncode == 1
    assert "executor cosmicai-lambda: the config's backend is 'local', not 'lambda'" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "results").exists() and not _objects(stands)


def test_a_missing_key_answered_403_is_staged_and_a_real_denial_is_named(tmp_path: Path, aws_env: Stands) -> None:
    s3 = boto3.client("s3")
    path = tmp_path / "object.bin"
    path.write_bytes(os.urandom(1000))
    aws_env.s3_faults({"no_list_permission": True})
    try:
        assert stored_sha256(s3, BUCKET, f"{ROOT}/head403/missing") is None
        sha, uploaded = ensure_uploaded(s3, path, BUCKET, f"{ROOT}/head403/object.bin")
        assert uploaded and (aws_env.s3_data / ROOT / "head403" / "object.bin").read_bytes() == path.read_bytes()
        assert ensure_uploaded(s3, path, BUCKET, f"{ROOT}/head403/object.bin") == (sha, False)  # there now: HEAD answers 200
        assert aws_env.s3_stats()["denied_missing"] >= 2
        # Wrong credentials: HEAD says 403 (missing or denied); the listing that tells which names the refused credentials.
        wrong = boto3.client("s3", aws_access_key_id=KEY, aws_secret_access_key="not-the-secret")
        with pytest.raises(CosmicaiError) as err:
            ensure_uploaded(wrong, path, BUCKET, f"{ROOT}/head403/other.bin")
    finally:
        aws_env.s3_faults({"no_list_permission": False})
    assert str(err.value) == (
        f"s3://{BUCKET}/{ROOT}/head403/other.bin: uploading object.bin: access denied: the credentials were refused "
        "(SignatureDoesNotMatch); check boto3's credentials"
    )
    assert not (aws_env.s3_data / ROOT / "head403" / "other.bin").exists()


def test_a_throttling_storm_with_retry_after_loses_nothing(tmp_path: Path, aws_env: Stands, tiny_dataset: Path) -> None:
    manifest = write_partitions(tiny_dataset, tmp_path / "parts", 0.5, tmp_path / "parts" / "manifest.json")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the scale-mode function never reads it")
    settings = LambdaSettings(bucket=BUCKET, function_name=FUNCTION, prefix=f"{ROOT}/storm", timeout_s=120, memory_mb=2048)
    before = aws_env.stats()
    aws_env.patch({"faults": {"throttle": 1.0, "throttle_for_s": 3}})  # every call throttled for 3 s from the first 429
    try:
        dispatcher = Dispatcher(settings)
        assert dispatcher.info.in_flight == 3 and dispatcher.info.limit_source == "reserved"
        names = [e["name"] for e in manifest["partitions"]]
        jobs = {f"job_{i:05d}": names[i * 2 : i * 2 + 2] for i in range(-(-len(names) // 2))}  # K = 2
        futures = {
            job: dispatcher.submit(
                LambdaJobSpec.from_argv(
                    _job_args(tmp_path / "parts" / "manifest.json", tmp_path / "out", job, parts, model, prefix=settings.prefix)
                ),
                tmp_path / "logs" / f"{job}.log",
            )
            for job, parts in jobs.items()
        }
        results = {stem: t for f in futures.values() for t in f.result(timeout=120) for stem in [t["partition"]]}
        dispatcher.shutdown()
    finally:
        aws_env.patch({"faults": {"throttle": 0.0, "throttle_for_s": 0}})
    after = aws_env.stats()
    throttles = after["throttles"] - before["throttles"]
    assert throttles >= 3 and sum(r["lambda"]["throttles"] for r in results.values()) == throttles
    assert dispatcher.peak_in_flight <= 3
    assert sorted(results) == names
    rows = sum(pq.read_metadata(tmp_path / "out" / f"{stem}.parquet").num_rows for stem in names)
    assert rows == sum(e["rows"] for e in manifest["partitions"]) == 300
    # Every wait after a 429 honoured its Retry-After (1 s), where plain backoff could have waited 0.5 s.
    waits = [
        float(text.split("retrying in ")[1].split(" s")[0])
        for log in (tmp_path / "logs").glob("*.log")
        for text in log.read_text().splitlines()
        if "throttled" in text and "retrying in" in text
    ]
    assert waits and min(waits) >= 1.0


def _manifest(tmp_path: Path, dataset: Path, copy: bool = False) -> tuple[Path, list[str]]:
    """Four partitions of the tiny dataset (300 rows), row ranges or (copy) their own files."""
    path = tmp_path / "parts" / "manifest.json"
    manifest = write_partitions(dataset, tmp_path / "parts", 1.5, path, copy=copy)
    return path, [e["name"] for e in manifest["partitions"]]


def test_a_job_writes_its_record_and_a_rerun_invokes_only_what_is_not_done(tmp_path: Path, aws_env: Stands, tiny_dataset: Path) -> None:
    from cosmicai.job import load_sidecars

    manifest, names = _manifest(tmp_path, tiny_dataset)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the scale-mode function never reads it")
    out, logs = tmp_path / "out", tmp_path / "logs"
    settings = LambdaSettings(bucket=BUCKET, function_name=FUNCTION, prefix=f"{ROOT}/reuse", timeout_s=120, memory_mb=2048)
    dispatcher = Dispatcher(settings)

    def run(*extra: str) -> tuple[list[dict], int]:
        before = aws_env.stats()["invocations"]
        argv = _job_args(manifest, out, "job_00000", names, model, prefix=settings.prefix) + list(extra)
        timings = dispatcher.submit(LambdaJobSpec.from_argv(argv), logs / "job_00000.log").result(timeout=120)
        return timings, aws_env.stats()["invocations"] - before

    try:
        first, invoked = run()
        assert invoked == len(names) == 4 and [t["partition"] for t in first] == names
        record = out / "jobs" / "job_00000.json"
        assert load_sidecars([record]) == first and all(t["key"] for t in first)
        log = (logs / "job_00000.log").read_text().splitlines()
        assert log[0] == "job_00000: 4 partition(s), 0 reused, 4 to invoke"
        assert sorted(line.split(":")[0] for line in log if " rows in " in line) == names  # one log, every partition's line

        again, invoked = run()
        assert invoked == 0 and again == first
        assert (logs / "job_00000.log").read_text().splitlines() == ["job_00000: 4 partition(s), 4 reused, 0 to invoke"]

        (out / f"{names[2]}.json").unlink()  # as a kill before the sidecar (the commit) leaves it
        third, invoked = run()
        assert invoked == 1 and [t["key"] for t in third] == [t["key"] for t in first] and third[:2] == first[:2]
        assert json.loads(record.read_text())["reused"] == [names[0], names[1], names[3]]

        changed, invoked = run("--batch-size", "64")  # another engine setting: another key, nothing reused
        assert invoked == 4 and not {t["key"] for t in changed} & {t["key"] for t in first}
    finally:
        dispatcher.shutdown()
    rows = sum(pq.read_metadata(out / f"{n}.parquet").num_rows for n in names)
    assert rows == 300 and dispatcher.peak_in_flight <= 3


def test_a_failed_partition_fails_its_job_naming_it_and_the_others_stay_done(
    tmp_path: Path, aws_env: Stands, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cosmicai.aws.lambda_job import main

    manifest, names = _manifest(tmp_path, tiny_dataset, copy=True)
    broken = tmp_path / "parts" / f"{names[1]}.h5"
    broken.write_bytes(broken.read_bytes()[:-10] + b"0123456789")  # not what the manifest's sha256 vouches for
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the scale-mode function never reads it")
    out = tmp_path / "out"
    argv = _job_args(manifest, out, "job_00000", names, model, prefix=f"{ROOT}/fail")
    before = aws_env.stats()["invocations"]
    assert main(argv) == 1  # the script: one job, a small pool
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"lambda_invoke: error: {names[1]}: {broken}: sha256 mismatch")
    assert aws_env.stats()["invocations"] - before == 3
    assert sorted(p.stem for p in out.glob("*.parquet")) == sorted(n for n in names if n != names[1])
    assert not (out / "jobs").exists()

    # The dispatcher: the same job reuses the three, fails on the broken one alone, its log ending with the cause.
    dispatcher = Dispatcher(LambdaSettings(bucket=BUCKET, function_name=FUNCTION, prefix=f"{ROOT}/fail", timeout_s=120, memory_mb=2048))
    try:
        future = dispatcher.submit(LambdaJobSpec.from_argv(argv), tmp_path / "logs" / "job_00000.log")
        with pytest.raises(CosmicaiError, match=f"^{names[1]}: {broken}: sha256 mismatch"):
            future.result(timeout=120)
    finally:
        dispatcher.shutdown()
    log = (tmp_path / "logs" / "job_00000.log").read_text().splitlines()
    assert log[0] == "job_00000: 4 partition(s), 3 reused, 1 to invoke"
    assert log[-1].startswith(f"lambda_invoke: error: {names[1]}: {broken}: sha256 mismatch")
    assert aws_env.stats()["invocations"] - before == 3 and not (out / "jobs").exists()


GROUPED = """
rule all:
    input: "b.txt"
rule a:
    output: "a.txt"
    group: "g"
    shell: "touch {output}"
rule b:
    input: "a.txt"
    output: "b.txt"
    group: "g"
    shell: "touch {output}"
"""


def test_a_group_job_is_refused_on_one_line(tmp_path: Path, stands: Stands, tiny_dataset: Path) -> None:
    """cosmicai-lambda runs no group job: one line with the group, its jobs and why, not Snakemake's `message: None`."""
    (tmp_path / "Snakefile").write_text(GROUPED)
    config = _config(tiny_dataset, tmp_path / "model.safetensors")
    config["backend"] = "lambda"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = ["snakemake", "--executor", "cosmicai-lambda", "--jobs", "2", "--configfile", "config.yaml"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=stands.env, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    lines = [line for line in out.splitlines() if "group g" in line]
    assert lines == [
        "Error in group g (a jobid 2, b jobid 1): the cosmicai-lambda executor runs only the Lambda inference job, "
        "not group jobs (drop the rules' group: and --groups)"
    ], out[-3000:]
    assert "message: None" not in out and not (tmp_path / "a.txt").exists()


def test_predictions_come_back_in_the_response_and_larger_ones_through_s3(tmp_path: Path, aws_env: Stands, tiny_dataset: Path) -> None:
    manifest, names = _manifest(tmp_path, tiny_dataset)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the scale-mode function never reads it")
    for prefix, limit, inline in ((f"{ROOT}/inline", "4194304", True), (f"{ROOT}/via-s3", "100", False)):
        out = tmp_path / prefix.rsplit("/", 1)[1]
        argv = _job_args(manifest, out, "job_00000", names, model, prefix=prefix, inline_max_bytes=limit)
        dispatcher = Dispatcher(LambdaSettings(bucket=BUCKET, function_name=FUNCTION, prefix=prefix, timeout_s=120, memory_mb=2048))
        try:
            timings = dispatcher.submit(LambdaJobSpec.from_argv(argv), tmp_path / "logs" / f"{limit}.log").result(timeout=120)
        finally:
            dispatcher.shutdown()
        assert [t["lambda"]["predictions_inline"] for t in timings] == [inline] * 4
        # 4 x 75 rows of a ~3 KB Parquet file: over 100 bytes, each one is PUT by the function and fetched with one GET
        stored = sorted(p.stem for p in (aws_env.s3_data / prefix / "predictions").glob("*.parquet"))
        assert stored == ([] if inline else names)
        assert [pq.read_metadata(out / f"{n}.parquet").num_rows for n in names] == [75] * 4
