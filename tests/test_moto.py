"""Against moto in server mode (tests/helpers/moto.py), an AWS implementation not written here: versioned
reads, deploy-lambda and the preflight on its Lambda control plane, and, with its IAM enforcement on S3, the
two rendered policies on users of their own: every step of a run allowed, and each action removed giving the
one line that names it. What moto cannot do (invoke the function, awslambdaric, limits, scale) stays with the
stand-ins (tests/helpers/stands.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("boto3")
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from helpers.cli import REPO  # noqa: E402
from helpers.moto import ACCOUNT, REGION, Moto, running_moto  # noqa: E402
from helpers.workflow import snakemake, tiny_config  # noqa: E402

from aws_standins.scale_function import NullEngine  # noqa: E402
from cosmicai.aws import storage  # noqa: E402
from cosmicai.aws.deploy import deploy_function, policy_template, render_policy  # noqa: E402
from cosmicai.aws.preflight import check_function  # noqa: E402
from cosmicai.aws.response import check_summary, write_predictions  # noqa: E402
from cosmicai.aws.settings import LambdaSettings  # noqa: E402
from cosmicai.data import source as data_source  # noqa: E402
from cosmicai.data.dataset import read_ids  # noqa: E402
from cosmicai.data.integrity import PartitionRead  # noqa: E402
from cosmicai.data.s3io import BLOCK_BYTES  # noqa: E402
from cosmicai.data.source import identify, verify  # noqa: E402
from cosmicai.data.synth import synthesize  # noqa: E402
from cosmicai.errors import CosmicaiError  # noqa: E402
from cosmicai.function import handler as function_handler  # noqa: E402
from cosmicai.function import objects as function_objects  # noqa: E402

STAGE, SURVEY, PREFIX, FUNCTION = "cosmicai-stage", "cosmicai-survey", "run", "cosmicai-infer"
IN_PLACE = f"s3://{SURVEY}/tiny.h5"  # a dataset read where it is (a deploy-time location of the function)
SETTINGS = LambdaSettings(bucket=STAGE, function_name=FUNCTION, prefix=PREFIX, timeout_s=120, memory_mb=2048)
PART_BYTES = 5 << 20  # S3's (and moto's) smallest multipart part: the tiny dataset goes up in several
MIB = 1 << 20


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """moto without IAM enforcement: the Lambda control plane, versioned S3, the workflow's s3:// dataset."""
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


# --- versioned reads -------------------------------------------------------------------------------------


def test_versioned_source_is_read_at_its_pinned_version_and_a_deleted_version_has_its_own_line(
    moto: Moto, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = moto.client("s3", max_pool_connections=16)
    monkeypatch.setattr(data_source, "_s3_client", s3)  # the dataset reader's client
    s3.create_bucket(Bucket="pinned")
    s3.put_bucket_versioning(Bucket="pinned", VersioningConfiguration={"Status": "Enabled"})
    s3.upload_file(str(tiny_dataset), "pinned", "tiny.h5")
    recorded = identify("s3://pinned/tiny.h5", s3)
    assert recorded["version_id"]
    first_ids = read_ids("s3://pinned/tiny.h5", 0, 10, recorded["version_id"])

    other = tmp_path / "other.h5"
    synthesize(other, 300, seed=11, size=64)
    s3.upload_file(str(other), "pinned", "tiny.h5")  # a new latest version, other rows
    verify(recorded, s3)  # the pin holds: the recorded version is unchanged
    assert np.array_equal(read_ids("s3://pinned/tiny.h5", 0, 10, recorded["version_id"]), first_ids)
    assert not np.array_equal(read_ids("s3://pinned/tiny.h5", 0, 10), first_ids)

    s3.delete_object(Bucket="pinned", Key="tiny.h5", VersionId=recorded["version_id"])
    with pytest.raises(CosmicaiError) as info:
        verify(recorded, s3)
    assert str(info.value) == (
        f"s3://pinned/tiny.h5: reading the dataset: version {recorded['version_id']}, recorded at partitioning, "
        "is gone (deleted); re-partition"
    )


def test_a_row_range_beyond_the_source_is_refused_before_any_allocation(
    moto: Moto, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="ranges")
    s3.upload_file(str(tiny_dataset), "ranges", "p/datasets/d/tiny.h5")
    monkeypatch.setattr(data_source, "_s3_client", s3)
    for name, value in {"COSMICAI_S3_BUCKET": "ranges", "COSMICAI_S3_PREFIX": "p"}.items():
        monkeypatch.setenv(name, value)
    event = {
        "source": identify("s3://ranges/p/datasets/d/tiny.h5", s3),
        "start": 0,
        "stop": 10**12,  # 3.64 TiB of images, had it been allocated
        "partition": "part_00000",
        "model": {"bucket": "ranges", "key": "p/models/m/m.onnx"},
        "output": {"bucket": "ranges", "key": "p/predictions/part_00000.parquet"},
    }
    with pytest.raises(CosmicaiError) as info:
        function_handler.handler(event, None, load_engine=lambda *_: pytest.fail("the model is not loaded"))
    assert str(info.value) == "event: 'stop' is 1000000000000, beyond the source's 300 rows (s3://ranges/p/datasets/d/tiny.h5): refused"


# --- deploy-lambda and the preflight on moto's Lambda ----------------------------------------------------


def test_deploy_lambda_creates_then_updates_and_the_preflight_checks_what_it_set(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    role = moto.client("iam").create_role(RoleName="cosmicai-fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    moto.client("s3").create_bucket(Bucket="deploy-stage")
    settings = dataclasses.replace(SETTINGS, bucket="deploy-stage", image_uri="123.dkr.ecr.us-east-1.amazonaws.com/c@sha256:ab")
    lam = moto.client("lambda")

    with pytest.raises(CosmicaiError, match="does not exist yet; creating it needs --role-arn"):
        deploy_function(settings, None, lam)
    arn, actions = deploy_function(settings, role, lam, (IN_PLACE,))
    assert actions == ["created"] and arn.endswith(f":function:{FUNCTION}")
    env = lam.get_function(FunctionName=FUNCTION)["Configuration"]["Environment"]["Variables"]
    assert env == {"COSMICAI_S3_BUCKET": "deploy-stage", "COSMICAI_S3_PREFIX": PREFIX, "COSMICAI_DATASETS": IN_PLACE}
    assert deploy_function(settings, None, lam, (IN_PLACE,))[1] == ["unchanged"]
    info = check_function(settings, lam)
    assert info.arn == arn and info.limit_source == "default"  # moto has no GetAccountSettings (it answers 404, an HTML page)

    bigger = dataclasses.replace(settings, memory_mb=4096, image_uri="123.dkr.ecr.us-east-1.amazonaws.com/c@sha256:cd")
    with pytest.raises(CosmicaiError) as mismatch:
        check_function(bigger, lam)
    assert str(mismatch.value) == (
        f"lambda:{FUNCTION}: does not match the config: its memory is 2048 MB, lambda.memory_mb is 4096 "
        "(redeploy with cosmicai deploy-lambda, or fix config/lambda.yaml)"
    )
    assert deploy_function(bigger, None, lam, (IN_PLACE,))[1] == ["code updated", "configuration updated: MemorySize"]
    assert lam.get_function(FunctionName=FUNCTION)["Code"]["ImageUri"].endswith("@sha256:cd")
    check_function(bigger, lam)
    with pytest.raises(CosmicaiError, match="its bucket \\(COSMICAI_S3_BUCKET\\) is 'deploy-stage', lambda.bucket is 'elsewhere'"):
        check_function(dataclasses.replace(bigger, bucket="elsewhere"), lam)

    with pytest.raises(CosmicaiError) as no_bucket:
        storage.check_bucket(moto.client("s3"), "no-such-bucket", PREFIX)
    assert str(no_bucket.value) == (
        "s3://no-such-bucket/run: listing the prefix: bucket 'no-such-bucket' does not exist (set lambda.bucket to an existing bucket)"
    )

    # A function deployed without its scope would refuse every event: stopped before anything is sent.
    lam.create_function(
        FunctionName="bare", Role=role, PackageType="Image", Code={"ImageUri": settings.image_uri}, MemorySize=2048, Timeout=120
    )
    with pytest.raises(CosmicaiError) as bare:
        check_function(dataclasses.replace(bigger, function_name="bare", memory_mb=2048), lam)
    assert "its environment has no COSMICAI_S3_BUCKET or COSMICAI_S3_PREFIX" in str(bare.value)


def test_deploy_lambda_command_stages_the_model_once_and_prints_policies(moto: Moto, tmp_path: Path) -> None:
    import subprocess

    moto.client("s3").create_bucket(Bucket="cli-stage")
    role = moto.client("iam").create_role(RoleName="cosmicai-cli", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph" * 1000)
    (tmp_path / "c.yaml").write_text(
        json.dumps({"lambda": {"bucket": "cli-stage", "function_name": "cli-fn", "region": REGION, "prefix": "p"}})
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [
            str(Path(__import__("sys").executable).parent / "cosmicai"),
            "deploy-lambda",
            "--configfile",
            "config/config.yaml",  # validated merged, as Snakemake merges a profile's config over config/config.yaml
            str(tmp_path / "c.yaml"),
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, env=moto.env(), cwd=REPO)

    first = cli("--image-uri", "123.dkr.ecr.us-east-1.amazonaws.com/c@sha256:ab", "--role-arn", role, "--checkpoint", str(model))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("model: s3://cli-stage/p/models/") and lines[0].endswith("/m.onnx (uploaded)")
    assert lines[1].startswith(f"function: arn:aws:lambda:{REGION}:{ACCOUNT}:function:cli-fn (created; 2048 MB, 300 s")
    again = cli("--image-uri", "123.dkr.ecr.us-east-1.amazonaws.com/c@sha256:ab", "--checkpoint", str(model))
    assert again.stdout.splitlines()[0].endswith("(already there)") and "(unchanged;" in again.stdout
    policy = cli("--print-policy", "submitter", "--dataset", IN_PLACE)  # the account id asked of STS
    assert policy.returncode == 0, policy.stderr
    assert f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:cli-fn" in policy.stdout and f"arn:aws:s3:::{SURVEY}/tiny.h5" in policy.stdout


# --- the s3:// dataset on the local profile -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_dataset_on_the_local_profile_gives_the_local_files_predictions(
    moto: Moto, tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path
) -> None:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="workflow-data")
    s3.put_bucket_versioning(Bucket="workflow-data", VersioningConfiguration={"Status": "Enabled"})
    s3.upload_file(str(tiny_dataset), "workflow-data", "tiny.h5")
    tables = {}
    for name, dataset in (("local", str(tiny_dataset)), ("s3", "s3://workflow-data/tiny.h5")):
        work = tmp_path / name
        work.mkdir()
        config = tiny_config(tiny_dataset, random_checkpoint)
        config["dataset"] = dataset
        proc = snakemake(work, "local", config, env=moto.env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables[name] = pq.read_table(work / "results" / "predictions.parquet").to_pandas()
    local, remote = tables["local"], tables["s3"]
    assert len(local) == 300 and list(local["object_id"]) == list(remote["object_id"])
    assert np.array_equal(local["z_pred"].to_numpy(), remote["z_pred"].to_numpy())  # identical, not close


# --- the rendered policies under moto's IAM enforcement -------------------------------------------------


class FailingPart:
    """The submitter's client, except that part 2 of a multipart upload fails (as a dropped connection would)."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)

    def upload_part(self, **kwargs: Any) -> dict:
        if kwargs["PartNumber"] == 2:
            raise ClientError(
                {"Error": {"Code": "RequestTimeout", "Message": "part 2 lost"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "UploadPart"
            )
        return self.s3.upload_part(**kwargs)


@dataclasses.dataclass
class Run:
    """The users, the clients and what each step left for the next."""

    moto: Moto
    submitter: Any
    function: Any
    tmp: Path
    dataset: Path
    model: Path
    done: dict = dataclasses.field(default_factory=dict)


def _policy(name: str) -> dict:
    template = policy_template(name, REPO / "deploy" / "lambda")  # type: ignore[arg-type]
    return render_policy(template, SETTINGS, ACCOUNT, REGION, (IN_PLACE,))


def _without(policy: dict, action: str) -> dict:
    """The policy with one action taken out of every statement (a statement left with none dropped)."""
    statements = []
    for s in policy["Statement"]:
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        kept = [a for a in actions if a != action]
        if kept:
            statements.append({**s, "Action": kept})
    return {**policy, "Statement": statements}


@pytest.fixture(scope="module")
def iam_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Iterator[Run]:
    """moto with IAM enforced on S3: a staging bucket, a versioned dataset bucket, and two users carrying the rendered policies."""
    tmp = tmp_path_factory.mktemp("moto-iam")
    with running_moto(tmp, enforce_iam=True) as server:
        admin = server.client("s3")
        admin.create_bucket(Bucket=STAGE)
        admin.create_bucket(Bucket=SURVEY)
        admin.put_bucket_versioning(Bucket=SURVEY, VersioningConfiguration={"Status": "Enabled"})
        admin.upload_file(str(tiny_dataset), SURVEY, "tiny.h5")
        sub_key = server.user("submitter", _policy("submitter"))
        fn_key = server.user("function", _policy("function"))
        model = tmp / "model.onnx"
        model.write_bytes(np.random.default_rng(0).bytes(200_000))
        yield Run(
            server,
            server.client("s3", *sub_key, max_pool_connections=16),
            server.client("s3", *fn_key, max_pool_connections=16),
            tmp,
            tiny_dataset,
            model,
        )


def _fetch_model_then_null(event: Any, root: Path) -> tuple[NullEngine, float]:
    """The function's own model reads (HEAD for the cache id, the verified download), then no compute."""
    s3 = function_objects.function_s3_client()
    function_objects.model_etag(s3, event.model["bucket"], event.model["key"])
    function_objects.download_model(s3, event.model["bucket"], event.model["key"], root / "m" / "model.onnx", event.model["sha256"])
    return NullEngine(), 0.0


def _invoke(run: Run, name: str, source: dict, **extra: Any) -> dict:
    """What the Lambda function does for one partition (rows 0-32), in this process, as the function's user."""
    event = {
        **extra,
        "source": source,
        "start": 0,
        "stop": 32,
        "partition": name,
        "model": {"bucket": STAGE, "key": run.done["model_key"], "sha256": run.done["model_sha"]},
        "output": {"bucket": STAGE, "key": SETTINGS.output_key(name)},
    }
    return function_handler.handler(event, None, load_engine=_fetch_model_then_null)


def step_list_prefix(run: Run) -> None:
    storage.check_bucket(run.submitter, STAGE, PREFIX)


def step_stage_model(run: Run) -> None:
    key, sha, uploaded = storage.ensure_model(run.submitter, run.model, STAGE, SETTINGS.model_key)
    assert uploaded and not storage.ensure_model(run.submitter, run.model, STAGE, SETTINGS.model_key)[2]  # never twice
    run.done.update(model_key=key, model_sha=sha)


def step_stage_dataset(run: Run) -> None:
    local = identify(run.dataset)
    key = SETTINGS.dataset_key(run.dataset.name, local["sample_sha256"])
    staged, uploaded = storage.ensure_dataset(run.submitter, local, STAGE, key, part_bytes=PART_BYTES)
    parts = -(-run.dataset.stat().st_size // PART_BYTES)
    assert uploaded and staged["etag"].endswith(f"-{parts}")  # a multipart upload, its ETag checked after it landed
    assert not storage.ensure_dataset(run.submitter, local, STAGE, key, part_bytes=PART_BYTES)[1]
    run.done["staged"] = {**staged, "meta_sha256": local["meta_sha256"]}


def step_partition_dataset_in_place(run: Run) -> None:
    recorded = identify(IN_PLACE, run.submitter)  # what partitioning records: size, ETag, VersionId, layout
    verify(recorded, run.submitter)
    run.done["in_place"] = recorded


def step_function_reads_staged_data(run: Run) -> None:
    run.done["staged_summary"] = _invoke(run, "part_00000", run.done["staged"])


def step_function_reads_data_in_place(run: Run) -> None:
    run.done["in_place_summary"] = _invoke(run, "part_00001", run.done["in_place"])


def step_fetch_predictions(run: Run) -> None:
    for name in ("part_00000", "part_00001"):
        summary = run.done["staged_summary" if name == "part_00000" else "in_place_summary"]
        out = run.tmp / f"{name}.parquet"
        storage.download(run.submitter, STAGE, SETTINGS.output_key(name), out, summary["predictions_sha256"], small=True)
        assert pq.read_table(out).num_rows == 32


def step_predictions_returned_inline(run: Run) -> None:
    """Predictions asked for in the response: no PUT by the function, no GET by the submitter (none allowed here)."""
    name = "part_00002"
    summary = _invoke(run, name, run.done["in_place"], inline_max_bytes=SETTINGS.inline_max_bytes)
    assert summary["predictions_key"] is None and summary["predictions_inline"]
    with pytest.raises(ClientError):  # the function wrote no object for it
        run.submitter.head_object(Bucket=STAGE, Key=SETTINGS.output_key(name))
    read = PartitionRead(name=name, uri=IN_PLACE, start=0, stop=32)
    check_summary(summary, read)
    assert write_predictions(summary, read, run.tmp / f"{name}.parquet", None, SETTINGS)  # True: inline (s3=None: no call made)
    assert pq.read_table(run.tmp / f"{name}.parquet").num_rows == 32


def step_failed_upload_is_aborted(run: Run) -> None:
    key = SETTINGS.dataset_key("failing.h5", "f" * 64)
    try:
        storage.ensure_dataset(FailingPart(run.submitter), identify(run.dataset), STAGE, key, part_bytes=PART_BYTES)
    finally:
        uploads = run.moto.client("s3").list_multipart_uploads(Bucket=STAGE, Prefix=key).get("Uploads", [])
        for u in uploads:  # leave the bucket clean for the next case
            run.moto.client("s3").abort_multipart_upload(Bucket=STAGE, Key=key, UploadId=u["UploadId"])
        run.done["parts_left"] = len(uploads)


STEPS: list[Callable[[Run], None]] = [
    step_list_prefix,
    step_stage_model,
    step_stage_dataset,
    step_partition_dataset_in_place,
    step_function_reads_staged_data,
    step_function_reads_data_in_place,
    step_fetch_predictions,
    step_predictions_returned_inline,
    step_failed_upload_is_aborted,
]
MODEL_KEY = "run/models/{sha16}/model.onnx"
DATA_KEY = "run/datasets/{sample16}/tiny.h5"
FAILED_PART = (
    f"s3://{STAGE}/run/datasets/ffffffffffffffff/failing.h5: uploading tiny.h5: RequestTimeout: part 2 lost "
    "(HTTP 400, still after botocore's retries)"
)
# (user, action removed) -> the one line the run stops with. None: the run passes (see the comment).
MATRIX: dict[tuple[str, str | None], str | None] = {
    ("submitter", None): FAILED_PART,  # every step allowed; the failing part's upload is aborted (no parts left)
    ("submitter", "s3:ListBucket"): (
        f"s3://{STAGE}/run: listing the prefix: access denied: the credentials need s3:ListBucket on arn:aws:s3:::{STAGE} "
        "(prefix run/*; without it S3 answers 403 for every missing key)"
    ),
    ("submitter", "s3:PutObject"): (
        f"s3://{STAGE}/{MODEL_KEY}: uploading model.onnx: access denied (AccessDenied): the credentials need s3:PutObject "
        f"on arn:aws:s3:::{STAGE}/{MODEL_KEY}"
    ),
    ("submitter", "s3:GetObject"): (
        f"s3://{STAGE}/{MODEL_KEY}: checking the upload of model.onnx: access denied (403): the credentials need s3:GetObject "
        f"on arn:aws:s3:::{STAGE}/{MODEL_KEY}"
    ),
    ("submitter", "s3:GetObjectVersion"): (
        f"{IN_PLACE}: reading bytes 0-{BLOCK_BYTES - 1}: access denied (AccessDenied): the credentials need s3:GetObjectVersion "
        f"on arn:aws:s3:::{SURVEY}/tiny.h5"
    ),
    ("submitter", "s3:AbortMultipartUpload"): (
        f"{FAILED_PART}; aborting the upload was denied too: the credentials need s3:AbortMultipartUpload on "
        f"arn:aws:s3:::{STAGE}/run/datasets/ffffffffffffffff/failing.h5 (its parts stay, and are billed, until aborted or a "
        "lifecycle rule ends them)"
    ),
    ("function", "s3:GetObject"): (
        f"s3://{STAGE}/{DATA_KEY}: reading the dataset: access denied (403): the credentials need s3:GetObject "
        f"on arn:aws:s3:::{STAGE}/{DATA_KEY}"
    ),
    ("function", "s3:GetObjectVersion"): (
        f"{IN_PLACE}: reading bytes 0-{BLOCK_BYTES - 1}: access denied (AccessDenied): the credentials need s3:GetObjectVersion "
        f"on arn:aws:s3:::{SURVEY}/tiny.h5"
    ),
    ("function", "s3:PutObject"): (
        f"s3://{STAGE}/run/predictions/part_00000.parquet: writing the predictions: access denied (AccessDenied): the "
        f"credentials need s3:PutObject on arn:aws:s3:::{STAGE}/run/predictions/part_00000.parquet"
    ),
    # On AWS the function's listing only turns a missing key's 403 into 404; moto answers 404 regardless.
    ("function", "s3:ListBucket"): FAILED_PART,
}


def _expected(line: str, run: Run) -> str:
    local = identify(run.dataset)
    sha = storage.sha256_file(run.model)
    return line.replace("{sha16}", sha[:16]).replace("{sample16}", local["sample_sha256"][:16])


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("user", "removed"), list(MATRIX), ids=[f"{u}-{a or 'all-allowed'}" for u, a in MATRIX])
def test_rendered_policies_allow_every_step_and_each_missing_action_is_named(
    iam_run: Run, monkeypatch: pytest.MonkeyPatch, user: str, removed: str | None
) -> None:
    run = dataclasses.replace(iam_run, done={})
    for name, policy in (("submitter", _policy("submitter")), ("function", _policy("function"))):
        run.moto.set_policy(name, _without(policy, removed) if name == user and removed else policy)
    admin = run.moto.client("s3")
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=STAGE):
        for obj in page.get("Contents", []):  # every case starts from an empty staging prefix
            admin.delete_object(Bucket=STAGE, Key=obj["Key"])
    # The function's clients (its module's and the dataset reader's) are the function user's.
    monkeypatch.setattr(function_objects, "_s3", run.function)
    monkeypatch.setattr(data_source, "_s3_client", run.function)
    monkeypatch.setattr(function_handler, "_engine", None)
    for name, value in {"COSMICAI_S3_BUCKET": STAGE, "COSMICAI_S3_PREFIX": PREFIX, "COSMICAI_DATASETS": IN_PLACE}.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(CosmicaiError) as stopped:
        for step in STEPS:
            step(run)
    assert str(stopped.value) == _expected(MATRIX[(user, removed)], run)  # type: ignore[arg-type]
    if str(stopped.value) == FAILED_PART:  # the run got as far as the failing upload: its parts were aborted
        assert run.done["parts_left"] == 0
        assert len(run.done["staged_summary"]["predictions_key"]) and run.done["in_place_summary"]["rows"] == 32
