"""The lean Invoke client (cosmicai.aws.invoke_client) against real servers: the Lambda stand-in (its Invoke API,
429s with Retry-After, 500s, dropped connections, slow functions) and moto with IAM enforced (a SigV4
implementation not written here, which refuses a bad signature). Each retry path is counted on the server side
too, so a client that stopped retrying, or retried what it must not, fails here."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("awslambdaric")
boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError  # noqa: E402
from helpers.moto import REGION, running_moto  # noqa: E402
from helpers.stands import KEY, SECRET, free_port, start_lambda, stop, wait_http  # noqa: E402

from cosmicai.aws.calls import invoke_client  # noqa: E402
from cosmicai.aws.invoke_client import InvokeClient  # noqa: E402

TESTS = Path(__file__).resolve().parent
FUNCTIONS = [
    {"name": name, "handler": f"lambda_handlers.{handler}", "code_dirs": [str(TESTS)], "timeout_s": 30, **extra}
    for name, handler, extra in [
        ("echo", "echo", {}),
        ("fail", "fail", {}),
        ("slow", "sleep", {}),
        ("faulty", "echo", {"retry_after_s": 2}),
    ]
]


class Tally:
    """Counts what the client reports per invocation."""

    def __init__(self) -> None:
        self.http_attempts = 0
        self.throttles = 0


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("lambda")
    port = free_port()
    proc = start_lambda(FUNCTIONS, port, tmp, dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_standin/health", proc, tmp / "lambda.log")
    yield url
    stop(proc)


@pytest.fixture
def aws_env(standin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3's environment pointing at the stand-in (the endpoint is resolved as the workflow resolves it)."""
    for name, value in {
        "AWS_ENDPOINT_URL_LAMBDA": standin,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return standin


def _stats(url: str, name: str) -> dict[str, Any]:
    import urllib.request

    return json.loads(urllib.request.urlopen(f"{url}/_standin/stats").read())["functions"][name]


def _patch(url: str, name: str, change: dict[str, Any]) -> None:
    import urllib.request

    urllib.request.urlopen(
        urllib.request.Request(f"{url}/_standin/functions/{name}", data=json.dumps(change).encode(), method="POST")
    ).read()


@contextlib.contextmanager
def _faults(url: str, name: str, **rates: float | int | None) -> Iterator[None]:
    """The function's faults set for the block (`max_hits` too, if given), then every one of them off again."""
    _patch(url, name, {"faults": rates})
    try:
        yield
    finally:
        _patch(url, name, {"faults": {**{fault: 0.0 for fault in rates if fault != "max_hits"}, "max_hits": None}})


def _client(read_timeout_s: float = 60) -> tuple[InvokeClient, list[float]]:
    """A client on the environment's endpoint whose backoff sleeps are recorded, not slept."""
    client = invoke_client("", read_timeout_s, max_pool_connections=4)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    return client, sleeps


def test_an_invocation_returns_what_boto3_returns_with_one_attempt_counted(aws_env: str) -> None:
    client, _ = _client()
    tally = Tally()
    event = {"partition": "part_00001", "start": 0}
    r = client.invoke("echo", json.dumps(event).encode(), tally=tally)
    boto = boto3.client("lambda", config=Config(retries={"total_max_attempts": 1})).invoke(
        FunctionName="echo", Payload=json.dumps(event).encode(), LogType="Tail"
    )
    assert (r.status, r.function_error, r.executed_version) == (boto["StatusCode"], boto.get("FunctionError"), boto.get("ExecutedVersion"))
    assert json.loads(r.payload)["event"] == json.loads(boto["Payload"].read())["event"] == event
    assert base64.b64decode(r.log_result).decode().splitlines()[-1].startswith("REPORT RequestId: ")
    assert (tally.http_attempts, tally.throttles, r.attempts) == (1, 0, 1)
    # The connection is kept: the next call reuses it (one idle connection, not two).
    client.invoke("echo", b"{}")
    assert len(client.transport._idle) == 1


def test_a_function_error_is_a_response_not_an_exception(aws_env: str) -> None:
    client, sleeps = _client()
    r = client.invoke("fail", json.dumps({"partition": "p7"}).encode())
    assert r.function_error == "Unhandled" and "bad partition: p7" in json.loads(r.payload)["errorMessage"]
    assert r.attempts == 1 and not sleeps


def test_a_missing_function_is_not_retried(aws_env: str) -> None:
    client, sleeps = _client()
    tally = Tally()
    with pytest.raises(ClientError) as caught:
        client.invoke("nope", b"{}", tally=tally)
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == ("ResourceNotFoundException", 404)
    assert "function:nope" in error["Error"]["Message"]
    assert tally.http_attempts == 1 and not sleeps


def test_throttles_are_retried_three_times_with_growing_backoff_and_carry_retry_after(aws_env: str) -> None:
    client, sleeps = _client()
    tally = Tally()
    before = _stats(aws_env, "faulty")
    with _faults(aws_env, "faulty", throttle=1.0), pytest.raises(ClientError) as caught:
        client.invoke("faulty", b"{}", tally=tally)
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == ("TooManyRequestsException", 429)
    assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2" and error["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert (tally.http_attempts, tally.throttles) == (3, 3)
    assert _stats(aws_env, "faulty")["throttles"] - before["throttles"] == 3
    # botocore's standard mode for throttles: rand * min(1 s * 2^(n-1), 20 s) after attempt n
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1 and 0 <= sleeps[1] <= 2


def test_server_errors_are_retried_until_one_answers(aws_env: str) -> None:
    client, sleeps = _client()
    tally = Tally()
    before = _stats(aws_env, "faulty")
    with _faults(aws_env, "faulty", service_error=1.0, max_hits=2):
        r = client.invoke("faulty", b'{"a": 1}', tally=tally)
    assert json.loads(r.payload)["event"] == {"a": 1} and r.attempts == 3
    assert (tally.http_attempts, tally.throttles) == (3, 0)
    assert _stats(aws_env, "faulty")["faults"]["service_error"] - before["faults"]["service_error"] == 2
    assert len(sleeps) == 2 and all(0 <= s <= 0.05 * 2**i for i, s in enumerate(sleeps))  # non-throttling scale: 50 ms

    with _faults(aws_env, "faulty", service_error=1.0), pytest.raises(ClientError) as caught:
        client.invoke("faulty", b"{}")
    assert caught.value.response["Error"]["Code"] == "ServiceException" and caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2


def test_a_dropped_connection_is_retried_and_a_lasting_one_raises_connection_closed(aws_env: str) -> None:
    client, _ = _client()
    tally = Tally()
    before = _stats(aws_env, "faulty")
    with _faults(aws_env, "faulty", lost_response=1.0, max_hits=1):
        r = client.invoke("faulty", b'{"b": 2}', tally=tally)
    assert json.loads(r.payload)["event"] == {"b": 2} and tally.http_attempts == 2
    with _faults(aws_env, "faulty", lost_response=1.0), pytest.raises(ConnectionClosedError):
        client.invoke("faulty", b"{}")
    assert _stats(aws_env, "faulty")["faults"]["lost_response"] - before["faults"]["lost_response"] == 1 + 3


def test_no_answer_within_the_read_timeout_raises_read_timeout_after_three_tries(aws_env: str) -> None:
    client, _ = _client(read_timeout_s=0.5)
    tally = Tally()
    before = _stats(aws_env, "slow")
    with pytest.raises(ReadTimeoutError):
        client.invoke("slow", json.dumps({"seconds": 1.5}).encode(), tally=tally)
    assert tally.http_attempts == 3 and _stats(aws_env, "slow")["invocations"] - before["invocations"] == 3


def test_an_endpoint_nobody_listens_on_raises_endpoint_connection_error(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{free_port()}")
    client, sleeps = _client()
    tally = Tally()
    with pytest.raises(EndpointConnectionError):
        client.invoke("echo", b"{}", tally=tally)
    assert tally.http_attempts == 3 and len(sleeps) == 2


# --- signing, against moto's SigV4 check and IAM policies -------------------------------------------------


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def moto_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moto with IAM enforced, a function, a user allowed to invoke, and one who may only read its configuration."""
    with running_moto(tmp_path_factory.mktemp("moto"), enforce_iam=True) as moto:
        role = moto.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        moto.client("lambda").create_function(
            FunctionName="signed", Runtime="python3.11", Role=role, Handler="handler.handler", Code={"ZipFile": _zip()}
        )
        # moto checks Invoke as `lambda:Invoke` on `*` (AWS: lambda:InvokeFunction on the function's ARN)
        allow = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["lambda:InvokeFunction", "lambda:Invoke"], "Resource": "*"}],
        }
        read_only = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": "*"}]}
        yield moto, moto.user("invoker", allow), moto.user("reader", read_only)


def _moto_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, key: str, secret: str) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL_LAMBDA": url,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def _codes(function: str) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(code, status) of the lean client's and of boto3's answer to the same call (None: it succeeded)."""
    outcomes: list[tuple[str, int] | None] = []
    for call in (
        lambda: invoke_client("", 30).invoke(function, b'{"x": 1}'),
        lambda: boto3.client("lambda", config=Config(retries={"total_max_attempts": 1})).invoke(FunctionName=function, Payload=b'{"x": 1}'),
    ):
        try:
            call()
            outcomes.append(None)
        except ClientError as exc:
            outcomes.append((exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]))
    return outcomes[0], outcomes[1]


def test_moto_accepts_the_signature_and_refuses_a_wrong_secret_or_a_missing_permission(
    moto_iam: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto, (key, secret), (reader, reader_secret) = moto_iam
    _moto_env(monkeypatch, tmp_path, moto.url, key, secret)
    r = invoke_client("", 30).invoke("signed", b'{"x": 1}')
    # Signature and permission accepted: 200 (moto, without Docker to run the code, answers a 'Handled' function error).
    assert r.status == 200 and r.attempts == 1

    _moto_env(monkeypatch, tmp_path, moto.url, key, secret + "x")  # the same key id, a wrong secret: the signature differs
    lean, boto = _codes("signed")
    assert lean == boto and lean is not None and lean[1] == 403, (lean, boto)

    _moto_env(monkeypatch, tmp_path, moto.url, reader, reader_secret)  # signed right, but not allowed to invoke
    lean, boto = _codes("signed")
    assert lean == boto and lean is not None and lean[1] == 403, (lean, boto)
