"""Unit tests of the Lambda backend's pieces: REPORT parsing, retries, pricing, the event, deployment."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("boto3")
from botocore.exceptions import ClientError, ReadTimeoutError  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from cosmicai.accounting.cost import cost_summary, detect_backend  # noqa: E402
from cosmicai.accounting.lambda_cost import PAPER, lambda_invocations, lambda_usage, paper_reference  # noqa: E402
from cosmicai.aws.deploy import DESCRIPTION, deploy_function  # noqa: E402
from cosmicai.aws.invoker import RemoteError, Response, RetryPolicy, call_with_retries, parse_report  # noqa: E402
from cosmicai.aws.settings import LambdaSettings  # noqa: E402
from cosmicai.data.dataset import ROW_BYTES  # noqa: E402
from cosmicai.errors import CosmicaiError  # noqa: E402

COLD = (
    "START RequestId: r1 Version: $LATEST\nhello\nEND RequestId: r1\n"
    "REPORT RequestId: r1\tDuration: 1234.56 ms\tBilled Duration: 5679 ms\tMemory Size: 2048 MB\t"
    "Max Memory Used: 930 MB\tInit Duration: 4443.21 ms\t\n"
)
WARM = "REPORT RequestId: r2\tDuration: 500.10 ms\tBilled Duration: 501 ms\tMemory Size: 1024 MB\tMax Memory Used: 700 MB\t\n"
SETTINGS = LambdaSettings(
    bucket="b", function_name="cosmicai-infer", prefix="runs/a", image_uri="123.dkr.ecr.us-east-1.amazonaws.com/c@sha256:ab"
)


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Invoke")


def test_parse_report_cold_and_warm() -> None:
    cold = parse_report(COLD)
    assert cold == {
        "request_id": "r1",
        "duration_ms": 1234.56,
        "billed_ms": 5679.0,
        "memory_mb": 2048.0,
        "max_memory_mb": 930.0,
        "init_ms": 4443.21,
        "cold_start": True,
    }
    warm = parse_report(WARM)
    assert warm["init_ms"] == 0.0 and not warm["cold_start"] and warm["billed_ms"] == 501.0
    with pytest.raises(ValueError, match="no REPORT line"):
        parse_report("START RequestId: x\n")


def test_retries_are_bounded_with_growing_jittered_backoff() -> None:
    waits: list[float] = []
    calls = iter(
        [
            _client_error(429, "TooManyRequestsException"),
            _client_error(503, "ServiceException"),
            ReadTimeoutError(endpoint_url="http://x"),
            Response(b"{}", None, WARM),
        ]
    )

    def send() -> Response:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    response, attempts = call_with_retries(send, RetryPolicy(max_attempts=5, base_s=1, cap_s=3), waits.append, random.Random(0))
    assert attempts == 4 and response.log_tail == WARM
    assert [1 / 2 <= waits[0] <= 1, 1 <= waits[1] <= 2, 1.5 <= waits[2] <= 3] == [True] * 3  # capped at 3 s

    waits.clear()
    with pytest.raises(ClientError, match="TooManyRequests"):
        call_with_retries(
            lambda: (_ for _ in ()).throw(_client_error(429, "TooManyRequestsException")),
            RetryPolicy(max_attempts=3, base_s=0.1),
            waits.append,
        )
    assert len(waits) == 2  # three attempts, two waits, then the error surfaces

    for status, code in ((404, "ResourceNotFoundException"), (403, "AccessDeniedException"), (400, "InvalidRequestContentException")):
        waits.clear()
        with pytest.raises(ClientError, match=code):
            call_with_retries(lambda: (_ for _ in ()).throw(_client_error(status, code)), RetryPolicy(), waits.append)  # noqa: B023 (called in this iteration)
        assert waits == []  # not retried


def test_remote_error_keeps_message_first_and_stack_apart() -> None:
    payload = json.dumps(
        {
            "errorMessage": "s3://b/k.h5: 3 row(s) with NaN",
            "errorType": "CosmicaiError",
            "stackTrace": ['  File "/x/handler.py", line 1, in handler\n    raise X\n'],
        }
    ).encode()
    err = RemoteError("results/partitions/part_00001.h5", SETTINGS, payload)
    assert str(err) == (
        "results/partitions/part_00001.h5: Lambda function cosmicai-infer failed: CosmicaiError: s3://b/k.h5: 3 row(s) with NaN"
    )
    assert err.stack and "handler.py" in err.stack[0]
    oom = RemoteError("p.h5", SETTINGS, json.dumps({"errorType": "Runtime.OutOfMemory", "errorMessage": "killed"}).encode())
    assert str(oom).endswith("killed (raise lambda.memory_mb)")


def _run(billed_ms: float, memory_mb: int, arch: str = "x86_64", ephemeral: int = 512, rows: int = 100) -> dict:
    return {
        "partition": "p.h5",
        "rows": rows,
        "lambda": {
            "request_id": "r",
            "cold_start": False,
            "duration_ms": billed_ms,
            "billed_ms": billed_ms,
            "init_ms": 0.0,
            "memory_mb": memory_mb,
            "max_memory_mb": 1,
            "attempts": 1,
            "throttles": 0,
            "architecture": arch,
            "ephemeral_storage_mb": ephemeral,
        },
    }


def test_lambda_usage_prices_gb_seconds_requests_and_ephemeral_storage() -> None:
    runs = [_run(2000, 2048), _run(1000, 1024, "arm64", ephemeral=1536)]
    rates = {
        "lambda": {
            "date": "2026-11-28",
            "x86_64_gb_s": 0.0000166667,
            "arm64_gb_s": 0.0000133334,
            "requests_per_million": 0.20,
            "ephemeral_gb_s": 0.0000000309,
        }
    }
    lines = {line["resource"]: line for line in lambda_usage(runs, rates)}
    assert lines["lambda_x86_64_gb_s"]["quantity"] == pytest.approx(4.0)  # 2 s x 2 GB
    assert lines["lambda_arm64_gb_s"]["quantity"] == pytest.approx(1.0)
    assert lines["lambda_requests"]["quantity"] == 2
    assert lines["lambda_ephemeral_gb_s"]["quantity"] == pytest.approx(1.0)  # 1 s x (1536 - 512) MB
    total = sum(line["cost_usd"] for line in lines.values())
    assert total == pytest.approx(4 * 0.0000166667 + 0.0000133334 + 2 * 0.2e-6 + 0.0000000309)
    assert detect_backend(runs) == "lambda"
    summary = cost_summary(runs, "lambda", rates, {"wall_s": 3.0, "rows": 200})
    assert summary["total_usd"] == pytest.approx(total)
    assert [j["cost_usd"] for j in summary["jobs"]] == pytest.approx(
        [c["cost_usd"] for c in ({"cost_usd": 4 * 0.0000166667 + 0.2e-6}, {"cost_usd": 0.0000133334 + 0.2e-6 + 0.0000000309})]
    )
    assert len(lambda_invocations(runs, rates)) == 2


def test_paper_reference_matches_partitioning() -> None:
    rows_25mb = 25 * 2**20 // ROW_BYTES  # rows of one 25 MiB partition
    ref = paper_reference([_run(1000, 2048, rows=rows_25mb)] * 4, 0.001)
    assert ref["paper_partition_mb"] == 25 and ref["paper_requests"] == PAPER["requests"][25] == 517
    assert ref["scaled_to_paper_rows_usd"] == pytest.approx(0.001 * 659_178 / (4 * rows_25mb))
    assert paper_reference([_run(1000, 2048, rows=75)], 0.001)["paper_requests"] is None


def test_settings_keys() -> None:
    assert SETTINGS.partition_object_key("part_00001.h5") == "runs/a/partitions/part_00001.h5"
    assert SETTINGS.model_key("m.safetensors", "0123456789abcdef" * 4) == "runs/a/models/0123456789abcdef/m.safetensors"
    assert SETTINGS.dataset_key("data.h5", "fedcba9876543210" * 4) == "runs/a/datasets/fedcba9876543210/data.h5"
    assert LambdaSettings(bucket="b", function_name="f", prefix="").output_key("p") == "predictions/p.parquet"


def _lambda_client() -> object:
    import boto3

    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")


def test_deploy_creates_then_is_idempotent_then_updates() -> None:
    client = _lambda_client()
    config = {
        "FunctionName": "cosmicai-infer",
        "FunctionArn": "arn:aws:lambda:us-east-1:1:function:cosmicai-infer",
        "MemorySize": 2048,
        "Timeout": 300,
        "EphemeralStorage": {"Size": 512},
        "Architectures": ["x86_64"],
        "Environment": {"Variables": {"COSMICAI_S3_BUCKET": "b", "COSMICAI_S3_PREFIX": "runs/a"}},
        "Role": "arn:aws:iam::1:role/r",
        "State": "Active",
        "LastUpdateStatus": "Successful",
    }
    with Stubber(client) as stub:
        stub.add_client_error("get_function", "ResourceNotFoundException", http_status_code=404)
        with pytest.raises(CosmicaiError, match="creating it needs --role-arn"):
            deploy_function(SETTINGS, None, client)

        stub.add_client_error("get_function", "ResourceNotFoundException", http_status_code=404)
        stub.add_response(
            "create_function",
            config,
            {
                "FunctionName": "cosmicai-infer",
                "Role": "arn:aws:iam::1:role/r",
                "PackageType": "Image",
                "Code": {"ImageUri": SETTINGS.image_uri},
                "Architectures": ["x86_64"],
                "Description": DESCRIPTION,
                "MemorySize": 2048,
                "Timeout": 300,
                "EphemeralStorage": {"Size": 512},
                "Environment": {"Variables": {"COSMICAI_S3_BUCKET": "b", "COSMICAI_S3_PREFIX": "runs/a"}},
            },
        )
        stub.add_response("get_function", {"Configuration": config})  # the function_active_v2 waiter
        assert deploy_function(SETTINGS, "arn:aws:iam::1:role/r", client) == (config["FunctionArn"], ["created"])

        current = {"Configuration": config, "Code": {"ImageUri": SETTINGS.image_uri}}
        stub.add_response("get_function", current)
        assert deploy_function(SETTINGS, None, client)[1] == ["unchanged"]

        bigger = LambdaSettings(**{**SETTINGS.__dict__, "memory_mb": 4096})
        stub.add_response("get_function", current)
        stub.add_response("update_function_configuration", config, {"FunctionName": "cosmicai-infer", "MemorySize": 4096})
        stub.add_response("get_function", {"Configuration": config})  # the function_updated_v2 waiter
        assert deploy_function(bigger, None, client)[1] == ["configuration updated: MemorySize"]
        stub.assert_no_pending_responses()

    with pytest.raises(CosmicaiError, match="image_uri"):
        deploy_function(LambdaSettings(bucket="b", function_name="f"), None, client)
