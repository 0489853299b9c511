"""The AWS Lambda function: infer one partition, rows [start, stop) of a dataset in S3, with the local path's engine.

Event (JSON object):
    source      {"uri": "s3://BUCKET/KEY", "size", "etag", "version_id", "meta_sha256"}: the dataset as
                partitioned; refused (one line) if its size, ETag or HDF5 layout changed; a versioned
                object is read at the recorded version
    start, stop rows of the partition (ints, start <= stop)
    partition   its name (part_00007), for messages and timings
    model       {"bucket", "key", "sha256"}: the model (verified after download)
    output      {"bucket", "key"}: where the predictions parquet goes when it is not returned inline
    inline_max_bytes (int, default 0): predictions Parquet up to this size (and INLINE_LIMIT) come back in
                the response, base64, and no S3 object is written; larger ones go to `output`
    batch_size (int, default 512), precision ("fp32" | "bf16"), on_invalid ("fail" | "flag"),
    runtime ("auto" | "torch" | "onnxruntime" | "openvino")
The function stays in the scope its environment sets (cosmicai.function.scope): the model and output
in its bucket, under its prefix, in the `models/` and `predictions/` folders; the source staged under
`datasets/` (or `partitions/`) or at a dataset location given at deploy time; and rows [start, stop)
inside the source, checked before anything is allocated. Every refusal is one line naming the field.
Returns a short JSON summary: rows, timings (model load, read, compute, upload), bytes and requests
read from S3, peak RSS, the whole timings record, and the predictions: their sha256 and size, and
either the Parquet bytes (`predictions_inline`, base64) or the key they were written to
(`predictions_key`), never both.

The engine is the local CPU path's (`cosmicai.engines.base.load_engine` on device cpu), with one thread per vCPU
the function's memory buys (Lambda shows more CPUs than its quota pays for): an ONNX graph
(model key ending .onnx) runs in ONNX Runtime (fp32) or OpenVINO (bf16) without importing torch; a
checkpoint runs in PyTorch. The model is downloaded and loaded once per warm execution environment
(cached under /tmp, keyed by its key, ETag, precision and runtime); the predictions live under /tmp
only during the call.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cosmicai.data.s3io import S3RangeFile, parse_s3_uri
from cosmicai.data.source import is_s3, verify
from cosmicai.engines.base import RUNTIMES, InferenceEngine
from cosmicai.engines.loader import load_engine
from cosmicai.errors import CosmicaiError
from cosmicai.function.objects import download_model, function_s3_client, model_etag, put_predictions
from cosmicai.function.scope import Scope
from cosmicai.infer import infer_partition
from cosmicai.resources import lambda_threads, peak_rss_mb

# The most predictions bytes a response carries inline: base64 makes 4/3 of it (5.3 MiB), leaving the summary
# and timings room under Lambda's 6 MB synchronous response limit, whatever the event asks for.
INLINE_LIMIT = 4 * 2**20
_engine: tuple[str, InferenceEngine] | None = None  # (cache id, engine) of the model loaded in this environment
_calls = 0


@dataclasses.dataclass(frozen=True)
class Event:
    """A validated invocation event."""

    source: dict
    start: int
    stop: int
    partition: str
    model: dict
    output: dict
    batch_size: int = 512
    precision: str = "fp32"
    on_invalid: str = "fail"
    runtime: str = "auto"
    inline_max_bytes: int = 0

    @classmethod
    def parse(cls, event: Any, scope: Scope | None = None) -> Event:
        """Check types, required fields and (given `scope`) where it reads and writes; a bad event raises CosmicaiError naming the field."""
        if not isinstance(event, dict):
            raise CosmicaiError("event", f"expected a JSON object, got {type(event).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(event) - set(fields))
        if unknown:
            raise CosmicaiError("event", f"unknown field(s) {', '.join(unknown)}")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if event.get(n) in (None, "", {})]
        if missing:
            raise CosmicaiError("event", f"missing field(s) {', '.join(missing)} (required: {', '.join(required)})")
        for name, value in event.items():
            want = {
                "batch_size": int,
                "inline_max_bytes": int,
                "start": int,
                "stop": int,
                "source": dict,
                "model": dict,
                "output": dict,
            }.get(name, str)
            if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise CosmicaiError("event", f"'{name}' must be {want.__name__}, got {value!r}")
        parsed = cls(**event)
        parsed._check_values()
        if scope is not None:
            scope.check_key("model", parsed.model["bucket"], parsed.model["key"], "models")
            scope.check_key("output", parsed.output["bucket"], parsed.output["key"], "predictions")
            scope.check_source(parsed.source["uri"])
        return parsed

    def _check_values(self) -> None:
        if self.batch_size < 1:
            raise CosmicaiError("event", f"'batch_size' must be >= 1, got {self.batch_size}")
        if not 0 <= self.start <= self.stop:
            raise CosmicaiError("event", f"'start'/'stop' must satisfy 0 <= start <= stop, got {self.start}, {self.stop}")
        if self.inline_max_bytes < 0:
            raise CosmicaiError("event", f"'inline_max_bytes' must be >= 0, got {self.inline_max_bytes}")
        if self.on_invalid not in ("fail", "flag"):
            raise CosmicaiError("event", f"'on_invalid' must be fail or flag, got {self.on_invalid!r}")
        if self.runtime not in RUNTIMES:
            raise CosmicaiError("event", f"'runtime' must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not is_s3(self.source.get("uri", "")):
            raise CosmicaiError("event", f"'source.uri' must be an s3:// URI, got {self.source.get('uri')!r}")
        parse_s3_uri(self.source["uri"])
        for name, obj in (("model", self.model), ("output", self.output)):
            if not isinstance(obj.get("bucket"), str) or not isinstance(obj.get("key"), str) or not obj["bucket"]:
                raise CosmicaiError("event", f"'{name}' must have string 'bucket' and 'key'")


def check_rows(ev: Event, n_rows: int) -> None:
    """Refuse a row range beyond the source (before anything is allocated for it)."""
    if ev.stop > n_rows:
        raise CosmicaiError("event", f"'stop' is {ev.stop}, beyond the source's {n_rows} rows ({ev.source['uri']}): refused")


def engine_threads(context: Any) -> int | None:
    """The engine's threads: the vCPUs this function's memory buys (Lambda's context says it); None: the CPUs it sees."""
    try:
        return lambda_threads(int(context.memory_limit_in_mb))
    except (AttributeError, TypeError, ValueError):
        return None


def _load_engine(ev: Event, root: Path, threads: int | None = None) -> tuple[InferenceEngine, float]:
    """The engine for the event's model and precision: this environment's, or downloaded and loaded now."""
    global _engine
    bucket, key = ev.model["bucket"], ev.model["key"]
    etag = model_etag(function_s3_client(), bucket, key)
    cache_id = hashlib.sha256(f"{key}\0{etag}\0{ev.precision}\0{ev.runtime}".encode()).hexdigest()[:16]
    if _engine is not None and _engine[0] == cache_id:
        return _engine[1], 0.0
    t = time.perf_counter()
    models = root / "models"
    shutil.rmtree(models, ignore_errors=True)  # one model at a time: /tmp is small
    path = models / cache_id / Path(key).name
    download_model(function_s3_client(), bucket, key, path, ev.model.get("sha256"))
    _engine = None  # free the previous model before loading the next
    # A checkpoint under runtime auto runs in PyTorch: exporting a graph here would cost every cold start.
    runtime = "torch" if ev.runtime == "auto" and path.suffix != ".onnx" else ev.runtime
    try:
        engine = load_engine(path, device="cpu", precision=ev.precision, runtime=runtime, threads=threads)
    except (CosmicaiError, ValueError) as exc:
        raise CosmicaiError(f"s3://{bucket}/{key}", getattr(exc, "problem", str(exc))) from None
    _engine = (cache_id, engine)
    return engine, time.perf_counter() - t


def handler(event: Any, context: Any, load_engine: Any = None) -> dict:
    """Lambda entry point: read one partition's rows from S3, infer, upload the predictions; return a short summary.

    `load_engine(event, root)` -> (engine, load seconds) replaces the model's download and load (the
    stand-ins' scale mode passes one that computes nothing); Lambda itself calls handler(event, context).
    """
    global _calls
    _calls += 1
    started = time.perf_counter()
    ev = Event.parse(event, Scope.from_env())
    request_id = getattr(context, "aws_request_id", "local")
    root = Path(tempfile.gettempdir()) / "cosmicai"
    work = root / "work" / request_id
    uri, version_id = ev.source["uri"], ev.source.get("version_id")
    reads_before = dict(S3RangeFile.totals)
    stack = contextlib.ExitStack()
    try:
        t = time.perf_counter()
        # Refuse a source that changed since partitioning; the file opened for its layout stays open for the
        # rows (each open of an S3 dataset costs requests, and CPU under h5py's lock).
        opened = verify(ev.source, keep=stack)
        if opened is not None:  # a copied partition has no layout record: its rows are checked when read
            check_rows(ev, len(opened.file["images"]))
        verify_s = time.perf_counter() - t
        engine, model_load_s = load_engine(ev, root) if load_engine else _load_engine(ev, root, engine_threads(context))
        predictions = work / "predictions.parquet"
        timings = infer_partition(
            opened or uri,
            engine,
            predictions,
            None,
            ev.batch_size,
            ev.on_invalid,
            model_load_s,  # type: ignore[arg-type]
            progress=False,
            rows=(ev.start, ev.stop),
            name=ev.partition,
            version_id=version_id,
        )
        t = time.perf_counter()
        body = predictions.read_bytes()
        if len(body) <= min(ev.inline_max_bytes, INLINE_LIMIT):  # back in the response: no PUT here, no GET there
            inline, predictions_key = base64.b64encode(body).decode("ascii"), None
            predictions_sha256 = hashlib.sha256(body).hexdigest()
        else:
            inline, predictions_key = None, ev.output["key"]
            predictions_sha256 = put_predictions(function_s3_client(), ev.output["bucket"], ev.output["key"], body)
        upload_s = time.perf_counter() - t
        timings.update(
            request_id=request_id,
            cold_start=_calls == 1,
            source=uri,
            start=ev.start,
            stop=ev.stop,
            verify_s=verify_s,
            s3_bytes_read=S3RangeFile.totals["bytes"] - reads_before["bytes"],
            s3_requests=S3RangeFile.totals["requests"] - reads_before["requests"],
            upload_s=upload_s,
            function_s=time.perf_counter() - started,
            peak_rss_mb=peak_rss_mb(),
        )
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "request_id": request_id,
        "partition": ev.partition,
        "rows": timings["rows"],
        "cold_start": timings["cold_start"],
        "timings": {k: round(timings[k], 4) for k in ("verify_s", "model_load_s", "read_s", "compute_s", "upload_s", "function_s")},
        "s3_bytes_read": timings["s3_bytes_read"],
        "peak_rss_mb": round(timings["peak_rss_mb"], 1),
        "predictions_key": predictions_key,
        "predictions_sha256": predictions_sha256,
        "predictions_bytes": len(body),
        "predictions_inline": inline,
        "timings_record": timings,  # what the invoker keeps: a late write by an earlier, abandoned call cannot swap it
    }
    print(
        f"cosmicai: {ev.partition}: {summary['rows']} rows, {json.dumps(summary['timings'])}, "
        f"read {summary['s3_bytes_read'] / 2**20:.1f} MiB from S3, peak RSS {summary['peak_rss_mb']} MB"
    )
    return summary
