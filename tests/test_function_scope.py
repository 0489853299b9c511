"""The in-image function's scope (bucket, prefix, folders, dataset locations from its environment), the two
IAM policies as rendered, and remote error bodies trimmed to one line. Against S3 itself: tests/test_moto.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402
from helpers.cli import REPO  # noqa: E402

from cosmicai.aws.deploy import policy_template, render_policy  # noqa: E402
from cosmicai.aws.settings import LambdaSettings  # noqa: E402
from cosmicai.data.s3io import s3_error  # noqa: E402
from cosmicai.errors import CosmicaiError, first_line, remote_message  # noqa: E402
from cosmicai.function.handler import Event, handler  # noqa: E402
from cosmicai.function.scope import Scope  # noqa: E402

SCOPE_ENV = {"COSMICAI_S3_BUCKET": "b", "COSMICAI_S3_PREFIX": "runs", "COSMICAI_DATASETS": "s3://survey/sdss.h5 s3://survey/dr19/"}
GOOD = {
    "source": {"uri": "s3://b/runs/a/datasets/0123/data.h5", "etag": "e"},
    "start": 0,
    "stop": 10,
    "partition": "part_00000",
    "model": {"bucket": "b", "key": "runs/a/models/0123/m.onnx"},
    "output": {"bucket": "b", "key": "runs/a/predictions/part_00000.parquet"},
}
# Each refused event and the one line it gives (the handler raises CosmicaiError: Lambda reports its message).
REFUSED = [
    (
        {**GOOD, "output": {"bucket": "other", "key": GOOD["output"]["key"]}},
        "event: 'output.bucket' is 'other', not the function's bucket 'b' (COSMICAI_S3_BUCKET): refused",
    ),
    (
        {**GOOD, "model": {"bucket": "other", "key": GOOD["model"]["key"]}},
        "event: 'model.bucket' is 'other', not the function's bucket 'b' (COSMICAI_S3_BUCKET): refused",
    ),
    (
        {**GOOD, "output": GOOD["model"]},
        "event: 'output.key': key 'runs/a/models/0123/m.onnx' is under a 'models/' folder; output must lie under 'predictions/': refused",
    ),
    (
        {**GOOD, "model": {"bucket": "b", "key": "runs/a/datasets/0123/data.h5"}},
        "event: 'model.key': key 'runs/a/datasets/0123/data.h5' is under a 'datasets/' folder; model must lie under 'models/': refused",
    ),
    (
        {**GOOD, "output": {"bucket": "b", "key": "elsewhere/predictions/p.parquet"}},
        "event: 'output.key': key 'elsewhere/predictions/p.parquet' is outside the prefix 'runs/': refused (COSMICAI_S3_PREFIX='runs')",
    ),
    (
        {**GOOD, "output": {"bucket": "b", "key": "runs/a/../models/x/predictions/p.parquet"}},
        "event: 'output.key': key 'runs/a/../models/x/predictions/p.parquet' has an empty, '.' or '..' segment: refused (COSMICAI_S3_PREFIX='runs')",
    ),
    (
        {**GOOD, "source": {"uri": "s3://other/data.h5"}},
        "event: 'source.uri' 's3://other/data.h5' is outside the function's data locations "
        "(s3://b/runs/[…/]datasets/ s3://survey/sdss.h5 s3://survey/dr19/; COSMICAI_DATASETS at deploy): refused",
    ),
    (
        {**GOOD, "source": {"uri": "s3://b/runs/a/predictions/x.h5"}},
        "event: 'source.uri' 's3://b/runs/a/predictions/x.h5' is outside the function's data locations "
        "(s3://b/runs/[…/]datasets/ s3://survey/sdss.h5 s3://survey/dr19/; COSMICAI_DATASETS at deploy): refused",
    ),
    ({**GOOD, "start": 20}, "event: 'start'/'stop' must satisfy 0 <= start <= stop, got 20, 10"),
    ({**GOOD, "stop": "10"}, "event: 'stop' must be int, got '10'"),
    ({**GOOD, "surprise": 1}, "event: unknown field(s) surprise"),
    ({**GOOD, "inline_max_bytes": -1}, "event: 'inline_max_bytes' must be >= 0, got -1"),
    ({**GOOD, "inline_max_bytes": True}, "event: 'inline_max_bytes' must be int, got True"),
]


def test_events_inside_the_scope_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    scope = Scope.from_env(SCOPE_ENV)
    assert Event.parse(GOOD, scope).batch_size == 512
    for uri in ("s3://survey/sdss.h5", "s3://survey/dr19/north.h5", "s3://b/runs/datasets/d/x.h5", "s3://b/runs/r/partitions/p.h5"):
        assert Event.parse({**GOOD, "source": {"uri": uri}}, scope).source["uri"] == uri


@pytest.mark.parametrize(("event", "line"), REFUSED, ids=[line.split(":")[1].strip()[:40] for _, line in REFUSED])
def test_events_outside_the_scope_are_refused_with_one_line(monkeypatch: pytest.MonkeyPatch, event: dict, line: str) -> None:
    for name, value in SCOPE_ENV.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CosmicaiError) as info:
        handler(event, None)
    assert str(info.value) == line


@pytest.mark.parametrize("unset", ["COSMICAI_S3_BUCKET", "COSMICAI_S3_PREFIX"])
def test_the_function_refuses_to_run_without_its_scope(monkeypatch: pytest.MonkeyPatch, unset: str) -> None:
    for name, value in SCOPE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(unset)
    with pytest.raises(CosmicaiError) as info:
        handler(GOOD, None)
    assert str(info.value) == (
        f"environment {unset}: not set: the function refuses to run without its scope (deploy it with cosmicai deploy-lambda)"
    )


def _actions(policy: dict) -> list[str]:
    return sorted(a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))


def _resources(policy: dict) -> list[str]:
    return [r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]


SETTINGS = LambdaSettings(bucket="b", function_name="cosmicai-infer", prefix="runs/a")


def test_function_policy_is_least_privilege_with_logs_on_the_group_arn() -> None:
    policy = render_policy(policy_template("function", REPO / "deploy" / "lambda"), SETTINGS, "123456789012", "us-east-1")
    assert _actions(policy) == [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
        "s3:PutObject",
    ]
    logs = next(s for s in policy["Statement"] if s["Sid"] == "WriteLogs")
    # IAM matches log actions against the group's ARN with its ':*' suffix: a bare group ARN grants nothing.
    assert logs["Resource"] == "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/cosmicai-infer:*"
    writes = next(s for s in policy["Statement"] if s["Sid"] == "WritePredictions")["Resource"]
    assert writes == ["arn:aws:s3:::b/runs/a/predictions/*", "arn:aws:s3:::b/runs/a/*/predictions/*"]
    assert all(r.startswith(("arn:aws:s3:::b/runs/a/", "arn:aws:logs:")) or r == "arn:aws:s3:::b" for r in _resources(policy))
    assert "<" not in json.dumps(policy)
    with_data = render_policy(policy_template("function", REPO / "deploy" / "lambda"), SETTINGS, "1", "r", ("s3://survey/dr19/",))
    assert [s["Resource"] for s in with_data["Statement"][-2:]] == [["arn:aws:s3:::survey/dr19/*"], "arn:aws:s3:::survey"]


def test_submitter_policy_covers_the_workflow_and_names_no_wildcard_action() -> None:
    policy = render_policy(
        policy_template("submitter", REPO / "deploy" / "lambda"),
        SETTINGS,
        "123456789012",
        "us-east-1",
        ("s3://survey/sdss.h5",),
    )
    assert sorted(set(_actions(policy))) == [
        "lambda:GetAccountSettings",
        "lambda:GetFunction",
        "lambda:GetFunctionConcurrency",
        "lambda:InvokeFunction",
        "s3:AbortMultipartUpload",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
        "s3:PutObject",
    ]
    assert not any("*" in a for a in _actions(policy))
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["ListThePrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["runs/a/*"]}}
    assert by_sid["ReadDatasetsInPlace"]["Resource"] == ["arn:aws:s3:::survey/sdss.h5"]
    assert by_sid["CheckAndInvokeTheFunction"]["Resource"] == "arn:aws:lambda:us-east-1:123456789012:function:cosmicai-infer"
    # Only GetAccountSettings, which has no resource of its own, is granted on '*'.
    assert [s["Sid"] for s in policy["Statement"] if s["Resource"] == "*"] == ["ReadAccountConcurrency"]


def _denied(status: int, code: str, op: str = "HeadObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class _Lister:
    """A client whose listing answers as given (what s3_error asks after a HEAD's bare 403)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def list_objects_v2(self, **_: Any) -> dict:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_403_on_head_names_the_missing_permission() -> None:
    head_403 = _denied(403, "403")
    listed = _Lister({"Contents": [{"Key": "p/models/m.onnx"}]})
    assert str(s3_error(head_403, "b", "p/models/m.onnx", "reading the model", "s3:GetObject", listed)) == (
        "s3://b/p/models/m.onnx: reading the model: access denied (403): the credentials need s3:GetObject on arn:aws:s3:::b/p/models/m.onnx"
    )
    not_listable = _Lister(_denied(403, "AccessDenied", "ListObjectsV2"))
    assert str(s3_error(head_403, "b", "p/models/m.onnx", "reading the model", "s3:GetObject", not_listable)) == (
        "s3://b/p/models/m.onnx: reading the model: access denied (403): the credentials need "
        "s3:ListBucket (prefix p/models/m.onnx) on arn:aws:s3:::b/p/models/m.onnx"
    )
    assert str(s3_error(head_403, "b", "k", "reading", "s3:GetObject", _Lister({}))) == (
        "s3://b/k: reading: no such object (S3 answered 403: if it should be there, the credentials need s3:GetObject on arn:aws:s3:::b/k)"
    )


def test_remote_error_bodies_are_trimmed_to_their_first_meaningful_line() -> None:
    page = (
        "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title><style>body{x}</style></head>\n"
        "<body>\n\n<h1>Bad Gateway</h1>\n<p>The upstream server sent an invalid response.</p>\n" + "<p>x</p>\n" * 500 + "</body></html>"
    )
    assert remote_message("", 502, page) == "502: Bad Gateway (HTTP 502)"
    assert remote_message("ServiceException", 500, "  \n Internal failure \n trace...") == "ServiceException: Internal failure (HTTP 500)"
    assert first_line("x" * 500).endswith("…") and len(first_line("x" * 500)) == 200
    error = ClientError({"Error": {"Code": "502", "Message": page}, "ResponseMetadata": {"HTTPStatusCode": 502}}, "GetObject")
    assert str(s3_error(error, "b", "k", "reading")) == "s3://b/k: reading: 502: Bad Gateway (HTTP 502, still after botocore's retries)"


def test_the_function_imports_nothing_from_the_submitting_side() -> None:
    import subprocess
    import sys

    probe = "import sys, cosmicai.function.handler; print(sorted(m for m in sys.modules if m.startswith('cosmicai.')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "cosmicai.function.handler" in loaded and "cosmicai.aws" not in loaded and "cosmicai.cli" not in loaded


def test_inference_refuses_rows_beyond_the_dataset_before_allocating(tiny_dataset: Any, tmp_path: Any) -> None:
    from cosmicai.infer import infer_partition

    with pytest.raises(CosmicaiError) as info:
        infer_partition(tiny_dataset, None, tmp_path / "out.parquet", rows=(0, 10**12))  # type: ignore[arg-type]
    assert (
        str(info.value)
        == f"{tiny_dataset}: rows [0, 1000000000000) are past the end of the dataset (300 rows): changed since partitioning?"
    )
    assert not (tmp_path / "out.parquet").exists()


def test_an_html_error_page_from_lambda_is_one_line() -> None:
    from cosmicai.aws.calls import lambda_error
    from cosmicai.aws.invoker import RemoteError

    page = "<html><head><title>x</title></head><body><h1>504 Gateway Time-out</h1>\n<p>nginx</p></body></html>"
    error = ClientError({"Error": {"Code": "", "Message": page}, "ResponseMetadata": {"HTTPStatusCode": 504}}, "Invoke")
    assert str(lambda_error(error, SETTINGS, "us-east-1", 1)) == "lambda:cosmicai-infer: 504: 504 Gateway Time-out (HTTP 504)"
    remote = RemoteError("part_00000", SETTINGS, page.encode())
    assert str(remote) == "part_00000: Lambda function cosmicai-infer failed: Unhandled: 504 Gateway Time-out"


def test_engine_threads_are_the_vcpus_the_memory_buys() -> None:
    # Lambda gives a CPU quota in proportion to memory (1 vCPU per 1,769 MB) whatever CPUs the function sees.
    from types import SimpleNamespace

    from cosmicai.function.handler import engine_threads

    assert [engine_threads(SimpleNamespace(memory_limit_in_mb=mb)) for mb in ("128", "768", "1769", "1770", "2048", "10240")] == [
        1,
        1,
        1,
        2,
        2,
        6,
    ]
    assert engine_threads(None) is None and engine_threads(SimpleNamespace(memory_limit_in_mb="lots")) is None
