"""The AWS Lambda function: infer one partition stored in S3 with the same engine as the local path.

Event (JSON object):
    bucket, partition_key, model_key, predictions_key, timings_key   required strings
    batch_size (int, default 512), precision ("fp32" | "bf16"), on_invalid ("fail" | "flag"),
    runtime ("auto" | "torch" | "onnxruntime" | "openvino")
    partition_sha256, model_sha256                                     optional; verified after download
Every key must lie under the function's prefix (environment COSMICAI_S3_PREFIX, set by deploy-lambda
as the IAM policy is) and have no empty, '.' or '..' segment; an event naming any other key is refused.
Returns a short JSON summary: rows, timings (download, model load, compute, upload), peak RSS, and the
timings record also uploaded next to the predictions.

The engine is the local CPU path's (`cosmicai.engines.base.load_engine` on device cpu): an ONNX graph
(model_key ending .onnx) runs in ONNX Runtime (fp32) or OpenVINO (bf16) without importing torch; a
checkpoint runs in PyTorch. The model is downloaded and loaded once per warm execution environment
(cached under /tmp, keyed by its key, ETag, precision and runtime); the partition and its
predictions live under /tmp only during the call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cosmicai.aws.settings import PREFIX_ENV, key_problem
from cosmicai.aws.storage import download, s3_error, upload_bytes
from cosmicai.engines.base import RUNTIMES, InferenceEngine
from cosmicai.engines.loader import load_engine
from cosmicai.errors import CosmicaiError
from cosmicai.infer import infer_partition
from cosmicai.resources import peak_rss_mb

_s3: Any = None  # created on first use, then reused by warm calls
_engine: tuple[str, InferenceEngine] | None = None  # (cache id, engine) of the model loaded in this environment
_calls = 0


@dataclasses.dataclass(frozen=True)
class Event:
    """A validated invocation event."""

    bucket: str
    partition_key: str
    model_key: str
    predictions_key: str
    timings_key: str
    batch_size: int = 512
    precision: str = "fp32"
    on_invalid: str = "fail"
    runtime: str = "auto"
    partition_sha256: str | None = None
    model_sha256: str | None = None

    @classmethod
    def parse(cls, event: Any) -> "Event":
        """Check types and required fields; a bad event raises CosmicaiError naming the field."""
        if not isinstance(event, dict):
            raise CosmicaiError("event", f"expected a JSON object, got {type(event).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(event) - set(fields))
        if unknown:
            raise CosmicaiError("event", f"unknown field(s) {', '.join(unknown)}")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if not event.get(n)]
        if missing:
            raise CosmicaiError("event", f"missing field(s) {', '.join(missing)} (required: {', '.join(required)})")
        for name, value in event.items():
            want = int if name == "batch_size" else str
            if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise CosmicaiError("event", f"'{name}' must be {want.__name__}, got {value!r}")
        parsed = cls(**event)
        if parsed.batch_size < 1:
            raise CosmicaiError("event", f"'batch_size' must be >= 1, got {parsed.batch_size}")
        if parsed.on_invalid not in ("fail", "flag"):
            raise CosmicaiError("event", f"'on_invalid' must be fail or flag, got {parsed.on_invalid!r}")
        if parsed.runtime not in RUNTIMES:
            raise CosmicaiError("event", f"'runtime' must be one of {', '.join(RUNTIMES)}, got {parsed.runtime!r}")
        prefix = os.environ.get(PREFIX_ENV, "")
        for name in ("partition_key", "model_key", "predictions_key", "timings_key"):
            if problem := key_problem(getattr(parsed, name), prefix):
                raise CosmicaiError("event", f"'{name}': {problem}: refused ({PREFIX_ENV}={prefix!r})")
        return parsed


def _client() -> Any:
    global _s3
    if _s3 is None:
        import boto3  # the region and endpoint come from the environment Lambda provides

        _s3 = boto3.client("s3")
    return _s3


def _load_engine(ev: Event, root: Path) -> tuple[InferenceEngine, float]:
    """The engine for the event's model and precision: this environment's, or downloaded and loaded now."""
    global _engine
    try:
        etag = _client().head_object(Bucket=ev.bucket, Key=ev.model_key)["ETag"].strip('"')
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, ev.bucket, ev.model_key, "model") from None
    cache_id = hashlib.sha256(f"{ev.model_key}\0{etag}\0{ev.precision}\0{ev.runtime}".encode()).hexdigest()[:16]
    if _engine is not None and _engine[0] == cache_id:
        return _engine[1], 0.0
    t = time.perf_counter()
    models = root / "models"
    shutil.rmtree(models, ignore_errors=True)  # one model at a time: /tmp is small
    path = models / cache_id / Path(ev.model_key).name
    download(_client(), ev.bucket, ev.model_key, path, ev.model_sha256)
    _engine = None  # free the previous model before loading the next
    # A checkpoint under runtime auto runs in PyTorch: exporting a graph here would cost every cold start.
    runtime = "torch" if ev.runtime == "auto" and path.suffix != ".onnx" else ev.runtime
    try:
        engine = load_engine(path, device="cpu", precision=ev.precision, runtime=runtime)
    except (CosmicaiError, ValueError) as exc:
        raise CosmicaiError(f"s3://{ev.bucket}/{ev.model_key}", getattr(exc, "problem", str(exc))) from None
    _engine = (cache_id, engine)
    return engine, time.perf_counter() - t


def handler(event: Any, context: Any, load_engine: Any = None) -> dict:
    """Lambda entry point: download, infer and upload one partition; return a short summary.

    `load_engine(event, root)` -> (engine, load seconds) replaces the model's download and load (the
    stand-ins' scale mode passes one that computes nothing); Lambda itself calls handler(event, context).
    """
    global _calls
    _calls += 1
    started = time.perf_counter()
    ev = Event.parse(event)
    request_id = getattr(context, "aws_request_id", "local")
    root = Path(tempfile.gettempdir()) / "cosmicai"
    work = root / "work" / request_id
    name = Path(ev.partition_key).name
    part_uri = f"s3://{ev.bucket}/{ev.partition_key}"
    try:
        t = time.perf_counter()
        download(_client(), ev.bucket, ev.partition_key, work / name, ev.partition_sha256)
        download_s = time.perf_counter() - t
        engine, model_load_s = (load_engine or _load_engine)(ev, root)
        predictions = work / "predictions.parquet"
        try:
            timings = infer_partition(work / name, engine, predictions, None, ev.batch_size, ev.on_invalid, model_load_s, progress=False)  # type: ignore[arg-type]
        except CosmicaiError as exc:
            # Name the object the caller knows, not this environment's /tmp copy; keep the original frames.
            renamed = CosmicaiError(part_uri if exc.path == str(work / name) else exc.path, exc.problem)
            raise renamed.with_traceback(exc.__traceback__) from None
        t = time.perf_counter()
        body = predictions.read_bytes()
        upload_bytes(_client(), ev.bucket, ev.predictions_key, body, "application/vnd.apache.parquet")
        upload_s = time.perf_counter() - t
        timings.update(
            partition=name,
            request_id=request_id,
            cold_start=_calls == 1,
            download_s=download_s,
            upload_s=upload_s,
            function_s=time.perf_counter() - started,
            peak_rss_mb=peak_rss_mb(),
        )
        upload_bytes(_client(), ev.bucket, ev.timings_key, json.dumps(timings, indent=2).encode(), "application/json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "request_id": request_id,
        "partition": name,
        "rows": timings["rows"],
        "cold_start": timings["cold_start"],
        "timings": {k: round(timings[k], 4) for k in ("download_s", "model_load_s", "compute_s", "upload_s", "function_s")},
        "peak_rss_mb": round(timings["peak_rss_mb"], 1),
        "predictions_key": ev.predictions_key,
        "predictions_sha256": hashlib.sha256(body).hexdigest(),
        "timings_key": ev.timings_key,
        "timings_record": timings,  # what the invoker keeps: a late write by an earlier, abandoned call cannot swap it
    }
    print(f"cosmicai: {name}: {summary['rows']} rows, {json.dumps(summary['timings'])}, peak RSS {summary['peak_rss_mb']} MB")
    return summary
