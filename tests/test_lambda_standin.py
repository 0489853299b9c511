"""The local Lambda and S3 stand-ins, driven by unmodified boto3 against real server subprocesses."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("awslambdaric")
boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from helpers.stands import KEY, SECRET, free_port, start_lambda, start_s3, stop, wait_http  # noqa: E402

TESTS = Path(__file__).resolve().parent
REPORT = re.compile(
    r"REPORT RequestId: (?P<rid>\S+)\tDuration: (?P<duration>[\d.]+) ms\tBilled Duration: (?P<billed>\d+) ms\t"
    r"Memory Size: (?P<memory>\d+) MB\tMax Memory Used: (?P<used>\d+) MB\t(?:Init Duration: (?P<init>[\d.]+) ms\t)?"
)


def _fn(name: str, handler: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "handler": f"lambda_handlers.{handler}", "code_dirs": [str(TESTS)], **extra}


FUNCTIONS = [
    _fn("echo", "echo", environment={"STANDIN_TEST_VAR": "from-config"}),
    _fn("coldwarm", "echo"),
    _fn("fail", "fail"),
    _fn("single", "sleep", reserved_concurrency=1, timeout_s=10),
    _fn("slow", "sleep", timeout_s=1),
    _fn("hog", "hog", memory_mb=128),
    _fn("badimport", "handler_that_does_not_exist"),
    _fn("chaos", "echo"),
]


def _start_lambda(tmp: Path, functions: list[dict[str, Any]]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    proc = start_lambda(functions, port, tmp, dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_standin/health", proc, tmp / "lambda.log")
    return proc, url, tmp / "lambda.log"


@pytest.fixture(scope="module")
def lambda_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url, _ = _start_lambda(tmp_path_factory.mktemp("lambda"), FUNCTIONS)
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def lam(lambda_url: str) -> Any:
    # No botocore retries: the tests must see each 429 and error as the server sent it.
    config = Config(retries={"total_max_attempts": 1}, read_timeout=30, connect_timeout=5)
    return boto3.client(
        "lambda", endpoint_url=lambda_url, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET, config=config
    )


def invoke(lam: Any, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any, re.Match[str], str]:
    """Invoke with LogType=Tail; return (response, decoded payload, REPORT match, log text)."""
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    payload = json.loads(response["Payload"].read())
    log = base64.b64decode(response["LogResult"]).decode()
    assert log.endswith("\n") and log.splitlines()[-1].startswith("REPORT "), log
    report = REPORT.search(log.splitlines()[-1])
    assert report, log
    return response, payload, report, log


def patch_function(url: str, name: str, patch: dict[str, Any]) -> None:
    """Change a function's settings through the stand-in's admin endpoint."""
    request = urllib.request.Request(f"{url}/_standin/functions/{name}", data=json.dumps(patch).encode(), method="POST")
    urllib.request.urlopen(request).read()


def test_invoke_returns_payload_and_report(lam: Any) -> None:
    response, payload, report, log = invoke(lam, "echo", {"partition": 7})
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload["event"] == {"partition": 7}
    assert payload["function_name"] == "echo" and payload["memory_limit_in_mb"] == "128"
    assert payload["request_id"] == report["rid"]
    assert 0 < payload["remaining_ms"] <= 3000
    assert payload["env"]["STANDIN_TEST_VAR"] == "from-config"
    assert f"START RequestId: {report['rid']} Version: $LATEST" in log and f"END RequestId: {report['rid']}" in log
    assert "echo got ['partition']" in log
    assert int(report["memory"]) == 128 and 5 < int(report["used"]) < 128
    init = float(report["init"] or 0)
    assert int(report["billed"]) == math.ceil(float(report["duration"]) + init)


def test_cold_then_warm(lam: Any) -> None:
    timings = []
    reports = []
    payloads = []
    for _ in range(6):
        start = time.perf_counter()
        _, payload, report, _ = invoke(lam, "coldwarm", {})
        timings.append(time.perf_counter() - start)
        reports.append(report)
        payloads.append(payload)
    assert reports[0]["init"] is not None and float(reports[0]["init"]) > 0
    assert all(r["init"] is None for r in reports[1:])
    assert len({p["pid"] for p in payloads}) == 1 and len({p["loaded_at"] for p in payloads}) == 1
    warm = sorted(timings[1:])[len(timings[1:]) // 2]
    print(f"\nstand-in latency: cold {timings[0] * 1000:.0f} ms (Init Duration {reports[0]['init']} ms), warm median {warm * 1000:.1f} ms")
    assert warm < timings[0]


def test_handler_exception_is_function_error(lam: Any) -> None:
    response, payload, report, log = invoke(lam, "fail", {"partition": 3})
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ValueError" and payload["errorMessage"] == "bad partition: 3"
    assert payload["requestId"] == report["rid"]
    assert any("lambda_handlers.py" in frame and "in fail" in frame for frame in payload["stackTrace"])
    assert "[ERROR] ValueError: bad partition: 3" in log
    _, _, again, _ = invoke(lam, "fail", {})
    assert again["init"] is None  # a handler exception leaves the environment warm, as on AWS


def test_unknown_function_is_resource_not_found(lam: Any) -> None:
    with pytest.raises(ClientError) as err:
        lam.invoke(FunctionName="no-such-function", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "function:no-such-function" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        lam.invoke(FunctionName="echo", Qualifier="7", Payload=b"{}")


def test_qualified_names_and_arns_resolve(lam: Any) -> None:
    for name in ("echo:$LATEST", "arn:aws:lambda:us-east-1:123456789012:function:echo"):
        assert lam.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200
    assert lam.get_function(FunctionName="echo")["Configuration"]["MemorySize"] == 128


def test_concurrency_limit_throttles(lam: Any) -> None:
    outcomes: list[Any] = []

    def call() -> None:
        try:
            outcomes.append(lam.invoke(FunctionName="single", Payload=b'{"seconds": 1.0}')["StatusCode"])
        except ClientError as exc:
            outcomes.append(exc.response)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 200 in outcomes
    throttled = [o for o in outcomes if isinstance(o, dict)]
    assert len(throttled) == 1
    assert throttled[0]["Error"]["Code"] == "TooManyRequestsException"
    assert throttled[0]["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled[0]["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_timeout_kills_the_worker(lam: Any) -> None:
    start = time.perf_counter()
    response, payload, report, log = invoke(lam, "slow", {"seconds": 30})
    assert time.perf_counter() - start < 5
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert "Status: timeout" in log.splitlines()[-1] and float(report["duration"]) == 1000.0
    _, ok, after, _ = invoke(lam, "slow", {"seconds": 0})
    assert ok == {"slept": 0.0} and after["init"] is not None  # the environment was reset


def test_memory_limit_exceeded(lam: Any) -> None:
    response, payload, report, log = invoke(lam, "hog", {"mb": 400, "hold_s": 2})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.OutOfMemory"
    assert "Runtime exited with error: signal: killed" in payload["errorMessage"]
    assert int(report["used"]) >= 128 and "Error Type: Runtime.OutOfMemory" in log
    _, fits, _, _ = invoke(lam, "hog", {"mb": 20, "hold_s": 0})
    assert fits == {"mb": 20}


def test_init_error(lam: Any) -> None:
    response, payload, report, log = invoke(lam, "badimport", {})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.HandlerNotFound"
    assert report["init"] is not None and "Status: error" in log


def test_fault_injection(lam: Any, lambda_url: str) -> None:
    patch_function(lambda_url, "chaos", {"faults": {"crash": 1.0}})
    response, payload, _, _ = invoke(lam, "chaos", {})
    assert response["FunctionError"] == "Unhandled" and payload["errorType"] == "Runtime.ExitError"
    patch_function(lambda_url, "chaos", {"faults": {"crash": 0, "throttle": 1.0}})
    with pytest.raises(ClientError, match="TooManyRequestsException"):
        lam.invoke(FunctionName="chaos", Payload=b"{}")
    patch_function(lambda_url, "chaos", {"faults": {"throttle": 0}})
    assert lam.invoke(FunctionName="chaos", Payload=b"{}")["StatusCode"] == 200


def test_sigterm_kills_workers(tmp_path: Path) -> None:
    proc, url, _ = _start_lambda(tmp_path, [_fn("echo", "echo")])
    client = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    pid = json.loads(client.invoke(FunctionName="echo", Payload=b"{}")["Payload"].read())["pid"]
    assert Path(f"/proc/{pid}").exists()
    stop(proc)
    assert proc.returncode == 0
    assert not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("s3")
    (data / "bucket").mkdir()
    port = free_port()
    log = data.parent / "rclone.log"
    proc = start_s3(data, port, log)
    wait_http(f"http://127.0.0.1:{port}/", proc, log)
    yield boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    stop(proc)


def test_s3_put_get_head(s3: Any) -> None:
    s3.put_object(Bucket="bucket", Key="parts/p0.h5", Body=b"x" * 1000)
    assert s3.get_object(Bucket="bucket", Key="parts/p0.h5")["Body"].read() == b"x" * 1000
    assert s3.head_object(Bucket="bucket", Key="parts/p0.h5")["ContentLength"] == 1000
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="bucket", Prefix="parts/")["Contents"]] == ["parts/p0.h5"]
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket="bucket", Key="missing")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    bad = boto3.client(
        "s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key="wrong"
    )
    with pytest.raises(ClientError):
        bad.get_object(Bucket="bucket", Key="parts/p0.h5")


def test_scale_mode_bounds_the_environments_working_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_standins import scale_function

    monkeypatch.setenv(scale_function.SLOTS_ENV, "2")
    monkeypatch.setenv(scale_function.HOLD_ENV, "0.1")
    monkeypatch.setattr(scale_function, "_slots", None)
    working, most = [0], [0]
    lock = threading.Lock()

    def fake_handler(event: Any, context: Any, load_engine: Any) -> dict:
        with lock:
            working[0] += 1
            most[0] = max(most[0], working[0])
        time.sleep(0.05)
        with lock:
            working[0] -= 1
        return {"ok": event}

    monkeypatch.setattr(scale_function.real, "handler", fake_handler)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: results.append(scale_function.handler(i, None))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 2  # 8 environments, 2 slots: never more than 2 at work
    assert sorted(r["ok"] for r in results) == list(range(8))
