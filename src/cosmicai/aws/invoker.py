"""The Lambda invoker: one partition's inference as one synchronous AWS Lambda invocation.

Per partition: check the source against the manifest; stage it unless it is there (an S3 dataset is
read in place; a local dataset is uploaded once, as one object, for all partitions; a copied
partition as its own object) and the model once per machine; the event names the source object
and the partition's row range, and the function reads only those rows, with ranged GETs. Then: invoke
the function (RequestResponse, LogType=Tail); retry throttling,
5xx and lost responses with bounded exponential backoff and jitter, and the function's own
transient failures (crash, timeout, out of memory, S3 unavailable) up to FUNCTION_ERROR_ATTEMPTS
times; turn any other FunctionError into a failure carrying the remote message and stack; write
the predictions to the path the local backend writes, from the response itself when they fit in it
(cosmicai.aws.response: no S3 object, no GET) or else from the S3 object the function wrote, and write
the timings the function returned, gaining a `lambda` record (REPORT line, attempts, throttles) for costing.

A retry never duplicates rows: the answering attempt's predictions (inline, or its one object per
partition, overwritten by every attempt) are checked against the sha256 it computed and against the
partition's rows before they land locally.

The invocation itself, its retries and the throttle gate are cosmicai.aws.calls; this module is the
per-partition unit of a job (cosmicai.aws.lambda_job), which `workflow/scripts/lambda_invoke.py` runs
for one inference job and the executor plugin's dispatcher (cosmicai.aws.dispatch) for many at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from cosmicai.atomic import write_json
from cosmicai.aws.calls import (  # noqa: F401  (re-exported: the invoker's interface)
    BOTOCORE_ATTEMPTS,
    READ_TIMEOUT_MARGIN_S,
    Backend,
    LambdaBackend,
    Response,
    RetryPolicy,
    ThrottleGate,
    TransientFunctionError,
    call_with_retries,
    function_error_type,
    lambda_client,
    lambda_error,
    retry_after_s,
    retry_reason,
)
from cosmicai.aws.response import check_summary, write_predictions
from cosmicai.aws.settings import LambdaSettings
from cosmicai.aws.storage import ensure_dataset, ensure_model, ensure_uploaded
from cosmicai.data.integrity import PartitionRead, check
from cosmicai.data.s3io import head
from cosmicai.data.source import is_s3, verify_s3_head
from cosmicai.errors import CosmicaiError, first_line

log = logging.getLogger("cosmicai.lambda")

# REPORT line field -> record key (all numbers; Init Duration only on cold starts).
REPORT_FIELDS = {
    "Duration": "duration_ms",
    "Billed Duration": "billed_ms",
    "Memory Size": "memory_mb",
    "Max Memory Used": "max_memory_mb",
    "Init Duration": "init_ms",
}
# Function errors that a new execution environment may not repeat, and how many attempts they get
# (as Lambda gives asynchronous invocations). A timeout or out-of-memory that is no accident costs
# this many full attempts before the job fails, so the bound stays small; other errors (bad data,
# bad event) are final at once.
TRANSIENT_FUNCTION_ERRORS = {"Sandbox.Timedout", "Runtime.ExitError", "Runtime.OutOfMemory", "S3Unavailable"}
FUNCTION_ERROR_ATTEMPTS = 3


class RemoteError(CosmicaiError):
    """The function raised: its error type and message first, the remote stack trace kept apart."""

    def __init__(self, partition: str | os.PathLike, settings: LambdaSettings, payload: bytes, attempts: int = 1) -> None:
        try:
            body = json.loads(payload)
        except ValueError:  # not the runtime's JSON (a proxy's HTML page, say): its first meaningful line
            body = {"errorMessage": first_line(payload.decode("utf-8", "replace"))}
        self.error_type = body.get("errorType", "Unhandled")
        self.stack = [str(line).rstrip() for line in body.get("stackTrace") or []]
        message = str(body.get("errorMessage", "")).strip()
        hint = {
            "Runtime.OutOfMemory": " (raise lambda.memory_mb)",
            "Sandbox.Timedout": " (raise lambda.timeout_s)",
            "S3Unavailable": " (S3 is shedding load: rerun later, or lower the profile's jobs)",
        }.get(self.error_type, "")
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        super().__init__(partition, f"Lambda function {settings.function_name} failed: {self.error_type}: {message}{hint}{tries}")


def log_function_tail(response: Response) -> None:
    """Put the function's log tail (START ... REPORT) in the job's log."""
    log.info("function log tail:\n%s", "\n".join(f"  | {line}" for line in response.log_tail.rstrip("\n").splitlines()))


def parse_report(log_tail: str) -> dict[str, Any]:
    """The last REPORT line of a log tail: request id and durations/memory as numbers (init_ms 0 when warm)."""
    lines = [line for line in log_tail.splitlines() if line.startswith("REPORT RequestId:")]
    if not lines:
        raise ValueError("no REPORT line in the function's log tail (is its log format Text?)")
    fields = {}
    for part in lines[-1].split("\t"):
        name, sep, value = part.partition(": ")
        if sep:
            fields[name.strip()] = value.strip()
    record: dict[str, Any] = {"request_id": fields.get("REPORT RequestId", "")}
    for name, key in REPORT_FIELDS.items():
        record[key] = float(fields[name].split()[0]) if name in fields else 0.0
    record["cold_start"] = "Init Duration" in fields
    return record


def _s3_client(region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", region_name=region or None, config=Config(retries={"mode": "standard", "max_attempts": 5}))


def stage_source(read: PartitionRead, settings: LambdaSettings, s3: Any) -> tuple[dict, bool]:
    """The S3 identity the function reads rows of, staging local data first; return (source, uploaded).

    An S3 dataset is used in place (only HEAD from here: its bytes never pass through this host); a
    local dataset is uploaded once as one object; a copied partition (partition_copy) as its own object.
    """
    if is_s3(read.uri):
        return read.source or {"uri": read.uri}, False
    if read.sha256:  # partition_copy: the partition's own file, content-addressed by its sha256
        key = settings.partition_object_key(Path(read.uri).name)
        _, uploaded = ensure_uploaded(s3, read.uri, settings.bucket, key, read.sha256)
        return {**head(s3, settings.bucket, key), "uri": settings.uri(key)}, uploaded
    assert read.source is not None
    key = settings.dataset_key(Path(read.uri).name, read.source["sample_sha256"])
    staged, uploaded = ensure_dataset(s3, read.source, settings.bucket, key)
    return {**staged, "meta_sha256": read.source["meta_sha256"]}, uploaded


def checked_source(read: PartitionRead, settings: LambdaSettings, s3: Any) -> tuple[dict, bool]:
    """`stage_source` after refusing a source that changed since partitioning (a local one by its
    identity, an S3 one by its size and ETag; the function checks the S3 object's layout again)."""
    if read.sha256 or not is_s3(read.uri):
        check(read)
    else:
        verify_s3_head(read.source or {"uri": read.uri}, s3)
    return stage_source(read, settings, s3)


def _invoke(
    backend: Backend, payload: bytes, policy: RetryPolicy, settings: LambdaSettings, source_uri: str
) -> tuple[dict, dict, int, float]:
    """Invoke the function with retries (throttles, transient function errors); its result, REPORT line, calls made and seconds."""
    t = time.perf_counter()
    attempts = function_errors = 0

    def send() -> Response:
        nonlocal attempts, function_errors
        attempts += 1
        response = backend.invoke(payload)
        if response.function_error:
            log_function_tail(response)
            error_type = function_error_type(response)
            if error_type in TRANSIENT_FUNCTION_ERRORS and function_errors + 1 < FUNCTION_ERROR_ATTEMPTS:
                function_errors += 1
                raise TransientFunctionError(response, error_type)
        return response

    try:
        response, _ = call_with_retries(send, policy)
    except TransientFunctionError as exc:  # attempts ran out while the function kept failing
        raise RemoteError(source_uri, settings, exc.response.payload, attempts) from None
    except (ClientError, BotoCoreError) as exc:
        raise lambda_error(exc, settings, getattr(backend, "region_name", settings.region), attempts) from None
    invoke_s = time.perf_counter() - t
    if response.function_error:
        raise RemoteError(source_uri, settings, response.payload, attempts)
    log_function_tail(response)
    try:
        report = parse_report(response.log_tail)
    except ValueError as exc:
        raise CosmicaiError(f"lambda:{settings.function_name}", str(exc)) from None
    return json.loads(response.payload), report, attempts, invoke_s


def invoke_partition(
    read: PartitionRead,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    sidecar: str | os.PathLike,
    settings: LambdaSettings,
    batch_size: int = 512,
    precision: str = "fp32",
    on_invalid: str = "fail",
    backend: Backend | None = None,
    s3: Any = None,
    policy: RetryPolicy | None = None,
    runtime: str = "auto",
    onnx: str | os.PathLike | None = None,
    stage_model: Callable[[Any, str | os.PathLike], tuple[str, str, bool]] | None = None,
    stage_data: Callable[[PartitionRead, Any], tuple[dict, bool]] | None = None,
    key: str | None = None,
) -> dict:
    """Infer one partition on Lambda; write predictions, then timings (with a `lambda` record and `key`) locally.

    A source that changed since partitioning is refused before anything is sent (`checked_source`).
    The function gets the ONNX graph when there is one (the CPU runtimes, as locally), else the checkpoint.
    `stage_model(s3, path)` and `stage_data(read, s3)` stage the model and the data (a job passes
    ones that check and upload once for all its partitions). `key` (cosmicai.job.reuse_key) goes into
    the sidecar, which is written last: its presence commits the partition.
    """
    started, t0, cpu0 = time.time(), time.perf_counter(), time.thread_time()
    s3 = s3 or _s3_client(settings.region)
    source, source_uploaded = (stage_data or (lambda r, client: checked_source(r, settings, client)))(read, s3)
    stage_model = stage_model or (lambda client, path: ensure_model(client, path, settings.bucket, settings.model_key))
    model_key, model_sha, model_uploaded = stage_model(s3, onnx or checkpoint)
    staging_s = time.perf_counter() - t0
    predictions_key = settings.output_key(read.name)
    event = {
        "source": source,
        "start": read.start,
        "stop": read.stop,
        "partition": read.name,
        "model": {"bucket": settings.bucket, "key": model_key, "sha256": model_sha},
        "output": {"bucket": settings.bucket, "key": predictions_key},
        "batch_size": batch_size,
        "precision": precision,
        "on_invalid": on_invalid,
        "runtime": runtime,
    }
    if settings.inline_max_bytes:  # only then: a function deployed before the field existed still serves lambda.inline_max_bytes 0
        event["inline_max_bytes"] = settings.inline_max_bytes
    payload = json.dumps(event).encode()
    if backend is None:
        backend = LambdaBackend(settings.function_name, settings.region, settings.timeout_s + READ_TIMEOUT_MARGIN_S)
    policy = policy or RetryPolicy(max_attempts=settings.max_attempts)
    result, report, attempts, invoke_s = _invoke(backend, payload, policy, settings, source["uri"])
    t = time.perf_counter()
    timings = check_summary(result, read)
    if timings.get("request_id") != report["request_id"]:
        raise CosmicaiError(
            settings.uri(predictions_key),
            f"timings from request {timings.get('request_id')}, not {report['request_id']}: does another run share lambda.prefix?",
        )
    # What lands at `output` is exactly what this invocation computed (its sha256), and the partition's rows.
    inline = write_predictions(result, read, output, s3, settings)
    fetch_s = time.perf_counter() - t
    timings.update(
        started_at=started,  # this job's own span, so the run summary's wall time includes staging and invoking
        ended_at=time.time(),
        total_s=time.perf_counter() - t0,
        remote_started_at=timings.get("started_at"),
        remote_ended_at=timings.get("ended_at"),
    )
    timings["lambda"] = {
        **report,
        "function_name": settings.function_name,
        "architecture": settings.architecture,
        "ephemeral_storage_mb": settings.ephemeral_storage_mb,
        "attempts": backend.http_attempts,  # HTTP requests to Invoke, botocore's retries included
        "invocations": attempts,  # calls made by this invoker's retry loop
        "throttles": backend.throttles,
        "staging_s": staging_s,
        "invoke_s": invoke_s,
        "fetch_s": fetch_s,
        "predictions_inline": inline,  # True: in the response (no S3 PUT or GET); False: one PUT and one GET
        "source_uploaded": source_uploaded,
        "event_bytes": len(payload),  # what this host sent per invocation (the data stays in S3)
        "model_uploaded": model_uploaded,
    }
    if key is not None:
        timings["key"] = key
    # This host's CPU for the invocation on its thread (staging, the Invoke call and its retries, the checks), the
    # sidecar's write excepted: what one more invocation costs the submitting side beyond Snakemake's per-job work.
    timings["lambda"]["host_cpu_s"] = time.thread_time() - cpu0
    write_json(sidecar, timings, indent=None)  # compact: one per invocation on the submitting host
    return timings
