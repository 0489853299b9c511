"""A lean client for Lambda's Invoke API: what boto3's `invoke` does for one synchronous call, at a fraction of its CPU.

boto3 spends about 1.5-2 ms of CPU per Invoke call on its generic machinery (event hooks, the service
model's serializer and parser, request objects built twice); at 100 invocations per second that is a
sixth of a core. This client keeps what matters and takes it from botocore itself:

- the endpoint and region the boto3 client resolved (AWS_ENDPOINT_URL_LAMBDA, endpoint_url, the
  region chain), and that client's HTTP session: its connection pool (sized for the in-flight count),
  TLS verification, proxies, timeouts and botocore's exceptions for connection failures;
- SigV4 signing with botocore's signer and the session's credentials (refreshed as botocore refreshes them);
- the response as boto3 gives it (payload, X-Amz-Function-Error, X-Amz-Log-Result) and API errors as
  botocore's `ClientError` (code from x-amzn-ErrorType, message, status, headers such as Retry-After);
- botocore's standard retry mode: throttles (429 and the throttling codes), 500/502/503/504, the transient
  codes, connection errors and read timeouts, with its backoff, x-amz-retry-after and its shared retry quota.

Each HTTP attempt is counted (and each 429) on the `tally` the caller passes.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, NoCredentialsError
from botocore.httpsession import get_cert_path
from botocore.retries.quota import RetryQuota
from botocore.utils import get_environ_proxies

from cosmicai.aws.connections import ConnectionPool, SessionTransport, Transport, host_header

SIGNING_NAME = "lambda"  # SigV4's service name for Lambda
USER_AGENT = f"cosmicai-invoke botocore/{botocore.__version__}"
CONNECT_TIMEOUT_S = 10  # as the boto3 client's Config

# botocore.retries.standard's lists (botocore 1.44), the standard mode this client reproduces.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
MAX_BACKOFF_S = 20.0
THROTTLING_BASE_S, OTHER_BASE_S = 1.0, 0.05  # backoff scale: throttles, everything else
RETRY_AFTER_MAX_EXTRA_S = 5.0  # x-amz-retry-after may lengthen a backoff by at most this much
RETRY_COST, THROTTLING_RETRY_COST, NO_RETRY_INCREMENT = 14, 5, 1  # the retry quota's token costs


class Tally(Protocol):
    """Where the HTTP attempts of invocations are counted."""

    http_attempts: int
    throttles: int


@dataclasses.dataclass
class InvokeResult:
    """What one Invoke call answered (boto3's Payload, FunctionError, LogResult, StatusCode, ExecutedVersion)."""

    status: int
    payload: bytes
    function_error: str | None
    log_result: str  # base64, as the API sends it ('' without LogType Tail)
    executed_version: str | None
    attempts: int


class InvokeClient:
    """Invoke calls signed with botocore's SigV4 signer on a transport (cosmicai.aws.connections), with standard-mode retries."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        transport: Transport,
        credentials: Any,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.transport = transport
        self.credentials = credentials
        self.max_attempts = max_attempts
        self.quota = RetryQuota()
        self._host = host_header(endpoint_url)
        self._sleep, self._random = sleep, rng

    def invoke(self, function_name: str, payload: bytes, log_tail: bool = True, tally: Tally | None = None) -> InvokeResult:
        """One RequestResponse invocation with botocore's standard retries; a final API error raises ClientError."""
        path = f"/2015-03-31/functions/{quote(function_name, safe='')}/invocations"
        headers = {"X-Amz-Invocation-Type": "RequestResponse", "User-Agent": USER_AGENT, "amz-sdk-invocation-id": str(uuid.uuid4())}
        if log_tail:
            headers["X-Amz-Log-Type"] = "Tail"
        attempt = acquired = 0  # acquired: quota taken by the last retry, given back on success
        while True:
            attempt += 1
            status, answer, error = 0, None, None
            try:
                status, answer, body = self.transport.request("POST", path, self._signed(path, headers, payload, attempt), payload)
            except (ConnectionError, HTTPClientError) as exc:  # botocore's: refused, reset, timed out
                error = exc
            if tally is not None:
                tally.http_attempts += 1
                tally.throttles += status == 429
            if error is None and status < 300:
                self.quota.release(acquired or NO_RETRY_INCREMENT)
                get = answer.get
                return InvokeResult(
                    status, body, get("x-amz-function-error"), get("x-amz-log-result", ""), get("x-amz-executed-version"), attempt
                )
            if error is None:
                error = client_error(status, answer, body, attempt - 1)
            throttled, retryable = _classify(error)
            cost = THROTTLING_RETRY_COST if throttled else RETRY_COST
            if not retryable or attempt >= self.max_attempts or not self.quota.acquire(cost):
                raise error
            acquired = cost
            self._sleep(self._delay(attempt, throttled, answer))

    def _signed(self, path: str, headers: dict[str, str], payload: bytes, attempt: int) -> dict[str, str]:
        """The attempt's headers with SigV4's (fresh credentials each time: botocore refreshes expiring ones)."""
        credentials = self.credentials.get_frozen_credentials() if self.credentials is not None else None
        if credentials is None:
            raise NoCredentialsError()
        request = AWSRequest("POST", self.endpoint_url + path, data=payload, headers=headers)
        request.headers["host"] = self._host  # signed, and sent as it is (the transport adds no other)
        request.headers["amz-sdk-request"] = f"attempt={attempt}; max={self.max_attempts}"
        SigV4Auth(credentials, SIGNING_NAME, self.region).add_auth(request)
        return dict(request.headers.items())

    def _delay(self, attempt: int, throttled: bool, headers: Any) -> float:
        """botocore's ExponentialBackoff: rand * min(scale * 2^(attempt-1), 20 s), raised to x-amz-retry-after (ms, at most +5 s)."""
        t = self._random() * min((THROTTLING_BASE_S if throttled else OTHER_BASE_S) * 2 ** (attempt - 1), MAX_BACKOFF_S)
        try:
            after = int(headers.get("x-amz-retry-after")) / 1000.0
        except (AttributeError, TypeError, ValueError, OverflowError):
            return t
        return max(t, min(after, t + RETRY_AFTER_MAX_EXTRA_S)) if after >= 0 else t

    def close(self) -> None:
        """Close the transport's idle connections."""
        self.transport.close()


def lean_client(session: Any, client: Any, read_timeout_s: float, max_idle: int, max_attempts: int = 3) -> InvokeClient:
    """The lean client on a botocore client's endpoint and region, with its session's credentials and CA bundle.

    The endpoint is what the client resolved (endpoint_url, AWS_ENDPOINT_URL_LAMBDA, the region's); behind a proxy
    (HTTPS_PROXY and the like, unless NO_PROXY excludes the endpoint) requests go through the client's own HTTP session.
    """
    endpoint = client.meta.endpoint_url
    if get_environ_proxies(endpoint).get(urlsplit(endpoint).scheme):
        # botocore's session of this client: its proxies, TLS and timeouts (no public accessor exists).
        transport: Transport = SessionTransport(endpoint, client._endpoint.http_session)
    else:
        ca_bundle = session.get_config_variable("ca_bundle") or get_cert_path(True)
        transport = ConnectionPool(endpoint, CONNECT_TIMEOUT_S, read_timeout_s, max_idle, ca_bundle)
    return InvokeClient(endpoint, client.meta.region_name, transport, session.get_credentials(), max_attempts)


def _classify(error: BaseException) -> tuple[bool, bool]:
    """(throttled, retryable) as botocore's standard mode decides them."""
    if isinstance(error, ClientError):
        code = error.response["Error"]["Code"]
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        throttled = code in THROTTLING_CODES or status == 429
        return throttled, throttled or code in TRANSIENT_CODES or status in TRANSIENT_STATUS
    return False, isinstance(error, (ConnectionError, HTTPClientError))


def client_error(status: int, headers: Any, body: bytes, retries: int) -> ClientError:
    """An error response as botocore's rest-json parser makes it (code from x-amzn-ErrorType, the body's code or
    __type, else the status; a non-JSON body is the message; an empty or HTML 5xx is botocore's generic error)."""
    stripped = body.strip()
    parsed: dict[str, Any] = {}
    if status >= 500 and (not stripped or stripped.startswith(b"<html>")):
        code, message = str(status), http.client.responses.get(status, "")
    else:
        text = body.decode("utf-8", "replace")
        try:
            loaded = json.loads(text) if body else {}
        except ValueError:
            loaded = None
        parsed = loaded if isinstance(loaded, dict) else {"message": text}
        message = str(parsed.get("message", parsed.get("Message", "")))
        code = str(parsed.get("__type", str(status)))
        if "x-amzn-errortype" in headers:
            code = headers["x-amzn-errortype"]
        elif "code" in parsed or "Code" in parsed:
            code = str(parsed.get("code", parsed.get("Code", "")))
        code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "RequestId": headers.get("x-amzn-requestid", ""),
            "HTTPStatusCode": status,
            "HTTPHeaders": {k.lower(): v for k, v in headers.items()},
            "RetryAttempts": retries,
        },
    }
    for name in ("Type", "Reason"):  # members of Lambda's modeled errors (TooManyRequestsException's Reason)
        if name in parsed:
            response[name] = parsed[name]
    return ClientError(response, "Invoke")
