"""Checks before any upload or invocation: the function exists and is the one the config describes,
and how many invocations it can take at once.

The function's bucket and prefix (its COSMICAI_S3_BUCKET and COSMICAI_S3_PREFIX environment, which its
IAM policy matches) must be lambda.bucket and hold lambda.prefix (be it, or a parent of it), and its memory, architecture and timeout must equal the
config's, or the run stops with one line naming the mismatch: a function deployed for another prefix would refuse every event, one with less memory or
a shorter timeout would fail partitions that fit the plan, another architecture would be priced wrong.

The in-flight limit is the function's reserved concurrency (GetFunctionConcurrency) when it has one,
else the account's unreserved concurrency (GetAccountSettings), capped by `lambda.max_in_flight`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cosmicai.aws.calls import lambda_error
from cosmicai.aws.settings import LambdaSettings
from cosmicai.data.s3io import client_error_code
from cosmicai.errors import CosmicaiError
from cosmicai.function.scope import BUCKET_ENV, PREFIX_ENV

# Lambda's default regional concurrency, when the account settings cannot be read.
DEFAULT_ACCOUNT_CONCURRENCY = 1000


@dataclasses.dataclass(frozen=True)
class FunctionInfo:
    """What the checks found: the function's ARN and how many invocations may be in flight."""

    arn: str
    in_flight: int
    limit_source: str  # "reserved", "account" or "default", for the log line


def _api_error(exc: Exception, settings: LambdaSettings, region: str) -> CosmicaiError:
    """The invoker's line for a failed Lambda API call, with the permissions these reads need."""
    if isinstance(exc, ClientError) and client_error_code(exc)[0] == "AccessDeniedException":
        return CosmicaiError(
            f"lambda:{settings.function_name}",
            "reading its configuration: access denied (AccessDeniedException): the credentials need lambda:GetFunction on it "
            "(cosmicai deploy-lambda --print-policy submitter lists every permission a run uses)",
        )
    return lambda_error(exc, settings, region)


def mismatches(config: dict, settings: LambdaSettings) -> list[str]:
    """How a GetFunction configuration differs from the settings (empty when it matches)."""
    env = (config.get("Environment") or {}).get("Variables") or {}
    found = []
    prefix, allowed = settings.prefix.strip("/"), str(env.get(PREFIX_ENV, "")).strip("/")
    missing = [name for name in (BUCKET_ENV, PREFIX_ENV) if name not in env]
    if missing:  # it would refuse every event
        found.append(f"its environment has no {' or '.join(missing)} (deployed by an older cosmicai?)")
    elif env[BUCKET_ENV] != settings.bucket:
        found.append(f"its bucket ({BUCKET_ENV}) is {env[BUCKET_ENV]!r}, lambda.bucket is {settings.bucket!r}")
    # The function refuses any key outside its prefix: lambda.prefix must be it or lie under it.
    if allowed and prefix != allowed and not prefix.startswith(allowed + "/"):
        found.append(f"its prefix ({PREFIX_ENV}) is {allowed!r}, lambda.prefix {prefix!r} is outside it")
    if config.get("MemorySize") != settings.memory_mb:
        found.append(f"its memory is {config.get('MemorySize')} MB, lambda.memory_mb is {settings.memory_mb}")
    arch = (config.get("Architectures") or ["x86_64"])[0]
    if arch != settings.architecture:
        found.append(f"its architecture is {arch}, lambda.architecture is {settings.architecture}")
    if config.get("Timeout") != settings.timeout_s:
        found.append(f"its timeout is {config.get('Timeout')} s, lambda.timeout_s is {settings.timeout_s}")
    return found


def in_flight_limit(client: Any, settings: LambdaSettings, reserved: int | None, cap: int) -> tuple[int, str]:
    """Invocations that may be in flight: reserved concurrency, else the account's unreserved, capped by `cap`."""
    if reserved is None:
        try:
            reserved = client.get_function_concurrency(FunctionName=settings.function_name).get("ReservedConcurrentExecutions")
        except (ClientError, BotoCoreError):
            reserved = None  # not allowed to read it: GetFunction's answer (none) stands
    if reserved is not None:
        limit, source = int(reserved), "reserved"
    else:
        try:
            limit = int(client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"])
            source = "account"
        except (ClientError, BotoCoreError, KeyError):
            limit, source = DEFAULT_ACCOUNT_CONCURRENCY, "default"
    if limit < 1:
        raise CosmicaiError(f"lambda:{settings.function_name}", f"its {source} concurrency is {limit}: it cannot be invoked (raise it)")
    return min(limit, cap), source


def check_function(settings: LambdaSettings, client: Any, cap: int = DEFAULT_ACCOUNT_CONCURRENCY) -> FunctionInfo:
    """Stop (CosmicaiError, one line) unless the function exists and matches the settings; return its in-flight limit."""
    try:
        answer = client.get_function(FunctionName=settings.function_name)
    except (ClientError, BotoCoreError) as exc:
        raise _api_error(exc, settings, client.meta.region_name) from None
    config = answer.get("Configuration", {})
    if found := mismatches(config, settings):
        raise CosmicaiError(
            f"lambda:{settings.function_name}",
            "does not match the config: " + "; ".join(found) + " (redeploy with cosmicai deploy-lambda, or fix config/lambda.yaml)",
        )
    reserved = (answer.get("Concurrency") or {}).get("ReservedConcurrentExecutions")
    limit, source = in_flight_limit(client, settings, reserved, cap)
    return FunctionInfo(config.get("FunctionArn", settings.function_name), limit, source)
