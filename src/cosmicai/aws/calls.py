"""One synchronous Lambda invocation and its retries: the lean Invoke client (cosmicai.aws.invoke_client, one may
serve many threads, each invocation's HTTP attempts counted for it), the throttle gate a 429's Retry-After holds,
bounded backoff. The boto3 client (`lambda_client`) serves the other Lambda calls (the preflight, deploy-lambda).

The per-partition logic above it is cosmicai.aws.invoker.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from cosmicai.aws.invoke_client import InvokeClient, lean_client
from cosmicai.aws.settings import LambdaSettings
from cosmicai.data.s3io import client_error_code
from cosmicai.errors import CosmicaiError, remote_message

log = logging.getLogger("cosmicai.lambda")

BOTOCORE_ATTEMPTS = 3  # calls per invocation attempt inside the Invoke client (botocore's standard mode); ours come on top
READ_TIMEOUT_MARGIN_S = 60  # wait this much longer than the function's timeout before giving up on a response


@dataclasses.dataclass
class Response:
    """What one invocation returned."""

    payload: bytes
    function_error: str | None
    log_tail: str


class Backend(Protocol):
    """Sends one synchronous invocation; counts HTTP attempts and throttles (429) cumulatively."""

    http_attempts: int
    throttles: int

    def invoke(self, payload: bytes) -> Response:
        """Invoke once (the client may retry inside); raise on API errors."""
        ...


def lambda_client(region: str = "", read_timeout_s: float = 960.0, max_pool_connections: int = 10, session: Any = None) -> Any:
    """A boto3 Lambda client (endpoint from AWS_ENDPOINT_URL_LAMBDA when set), of `session` or a new botocore session."""
    import botocore.session
    from botocore.config import Config

    config = Config(
        read_timeout=read_timeout_s,
        connect_timeout=10,
        retries={"mode": "standard", "total_max_attempts": BOTOCORE_ATTEMPTS},
        tcp_keepalive=True,
        max_pool_connections=max_pool_connections,
        parameter_validation=False,  # our own calls only: no user parameters to check, CPU saved per invocation
    )
    session = session or botocore.session.get_session()
    return session.create_client("lambda", region_name=region or None, config=config)


def invoke_client(region: str = "", read_timeout_s: float = 960.0, max_pool_connections: int = 10) -> InvokeClient:
    """The lean Invoke client on what a boto3 Lambda client resolves (endpoint, region, credentials), `max_pool_connections` kept open."""
    import botocore.session

    session = botocore.session.get_session()
    client = lambda_client(region, read_timeout_s, max_pool_connections, session)
    return lean_client(session, client, read_timeout_s, max_pool_connections, BOTOCORE_ATTEMPTS)


def retry_after_s(exc: BaseException) -> float:
    """Seconds a 429 asked the caller to wait (its Retry-After header), 0 when none."""
    if not isinstance(exc, ClientError):
        return 0.0
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        return max(0.0, float(headers.get("retry-after", 0)))
    except ValueError:
        return 0.0


class ThrottleGate:
    """Shared by all invocations of one dispatcher: after a 429 with Retry-After, no new attempt starts before it ends."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        """Let no attempt start for `seconds` from now (the longest hold wins)."""
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Block until the hold, if any, is over."""
        while (left := self._until - time.monotonic()) > 0:
            sleep(left)


class LambdaBackend:
    """AWS Lambda through the lean Invoke client: its own (created on first use), or a shared one given as `client`."""

    def __init__(
        self,
        function_name: str,
        region: str = "",
        read_timeout_s: float = 960.0,
        client: InvokeClient | None = None,
        gate: ThrottleGate | None = None,
    ) -> None:
        self.function_name = function_name
        self.region = region
        self.read_timeout_s = read_timeout_s
        self.http_attempts = 0
        self.throttles = 0
        self.gate = gate
        self._client = client

    @property
    def client(self) -> InvokeClient:
        """The Invoke client."""
        if self._client is None:
            self._client = invoke_client(self.region, self.read_timeout_s)
        return self._client

    @property
    def region_name(self) -> str:
        """The region the client resolved (the configured one, or boto3's default)."""
        return self.client.region

    def invoke(self, payload: bytes) -> Response:
        """One RequestResponse invocation with the log tail; a 429's Retry-After holds the shared gate."""
        if self.gate is not None:
            self.gate.wait()
        try:
            r = self.client.invoke(self.function_name, payload, log_tail=True, tally=self)
        except ClientError as exc:
            if self.gate is not None and (wait := retry_after_s(exc)):
                self.gate.hold(wait)
            raise
        return Response(r.payload, r.function_error, base64.b64decode(r.log_result).decode("utf-8", "replace"))


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for throttling, 5xx and lost responses."""

    max_attempts: int = 8
    base_s: float = 1.0
    cap_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): uniform in [d/2, d], d = min(cap, base * 2^(attempt-1))."""
        d = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return rng.uniform(d / 2, d)


class TransientFunctionError(Exception):
    """The function failed in a way another attempt may not (crash, timeout, out of memory, S3 unavailable)."""

    def __init__(self, response: Response, error_type: str) -> None:
        super().__init__(error_type)
        self.response = response
        self.error_type = error_type


def function_error_type(response: Response) -> str:
    """The errorType of a FunctionError payload ('' when unreadable)."""
    try:
        body = json.loads(response.payload)
    except ValueError:
        return ""
    return str(body.get("errorType", "")) if isinstance(body, dict) else ""


def retry_reason(exc: BaseException) -> str | None:
    """Why an invocation error is worth retrying (throttled, 5xx, no response, transient function error), or None."""
    if isinstance(exc, TransientFunctionError):
        return f"function error {exc.error_type}"
    if isinstance(exc, ClientError):
        code, status = client_error_code(exc)
        if status == 429 or code in ("TooManyRequestsException", "ThrottlingException"):
            return f"throttled ({code or status})"
        if status >= 500:
            return f"server error {status} ({code})"
        return None
    if isinstance(exc, (ReadTimeoutError, ConnectionClosedError)):
        return f"no response ({type(exc).__name__})"
    return None


def call_with_retries(
    send: Callable[[], Response],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> tuple[Response, int]:
    """Call `send` until it answers or the error is not retryable or attempts run out; return (response, attempts)."""
    rng = rng or random.Random()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return send(), attempt
        except (ClientError, BotoCoreError, TransientFunctionError) as exc:
            reason = retry_reason(exc)
            if reason is None or attempt == policy.max_attempts:
                raise
            wait = max(policy.delay(attempt, rng), retry_after_s(exc))  # a 429's Retry-After is honoured
            log.warning("attempt %d of %d: %s; retrying in %.1f s", attempt, policy.max_attempts, reason, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def lambda_error(exc: Exception, settings: LambdaSettings, region: str, attempts: int | None = None) -> CosmicaiError:
    """One clear line for a failed Invoke call, naming the function and the likely fix."""
    where = f"lambda:{settings.function_name}"
    if isinstance(exc, NoCredentialsError):
        return CosmicaiError(where, "no AWS credentials found (boto3's chain: environment, ~/.aws, instance role)")
    if isinstance(exc, EndpointConnectionError):
        return CosmicaiError(where, f"cannot reach the Lambda endpoint ({exc}); is AWS_ENDPOINT_URL_LAMBDA or the region right?")
    if isinstance(exc, ReadTimeoutError):
        return CosmicaiError(
            where,
            f"no response within {settings.timeout_s + READ_TIMEOUT_MARGIN_S} s (lambda.timeout_s + {READ_TIMEOUT_MARGIN_S}), {attempts} attempt(s)",
        )
    if isinstance(exc, ConnectionClosedError):
        return CosmicaiError(
            where,
            f"the connection closed without a response, {attempts} attempt(s) (each with {BOTOCORE_ATTEMPTS} "
            "tries of the Invoke client); the function may have run: a rerun overwrites its output",
        )
    if isinstance(exc, ClientError):
        code, status = client_error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            return CosmicaiError(
                where,
                f"function not found in region {region} ({message}); deploy it (cosmicai deploy-lambda) or set lambda.function_name/region",
            )
        if status == 429:
            return CosmicaiError(
                where,
                f"still throttled after {attempts} attempt(s) ({code}: {message}); lower the profile's jobs or raise the function's concurrency",
            )
        if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
            return CosmicaiError(where, f"invoking: access denied ({code}): the credentials need lambda:InvokeFunction on this function")
        return CosmicaiError(where, remote_message(code, status, message))
    return CosmicaiError(where, str(exc))
