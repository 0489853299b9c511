"""The function's response, read as hostile: its predictions checked before they are written locally.

A partition's predictions come back in the response (base64 Parquet, `predictions_inline`) when they are
at most `lambda.inline_max_bytes` (cosmicai.aws.settings.INLINE_MAX_BYTES by default), and the function writes no S3 object for them; larger ones are in S3 under
the key the response names, and are fetched with one GET. Either way the bytes must match the sha256
the response states, and the table must be what the partition's rows give: exactly the predictions
columns and types, one row per row of [start, stop), object ids present and distinct, `valid` present.
Anything else is one line naming the partition and the problem; nothing is written for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosmicai.atomic import atomic_path, write_bytes
from cosmicai.aws.settings import INLINE_MAX_BYTES, LambdaSettings
from cosmicai.aws.storage import download
from cosmicai.data.integrity import PartitionRead
from cosmicai.data.predictions import COLUMN_TYPES, OPTIONAL_COLUMNS
from cosmicai.errors import CosmicaiError, first_line

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BadResponse(CosmicaiError):
    """The function's response is not what the partition's invocation must answer."""

    def __init__(self, read: PartitionRead, problem: str) -> None:
        super().__init__(read.name, f"the function's response: {problem}")


def check_summary(result: Any, read: PartitionRead) -> dict:
    """The response's fields this host relies on, their types checked; return the timings record."""
    if not isinstance(result, dict):
        raise BadResponse(read, f"expected a JSON object, got {type(result).__name__}")
    timings = result.get("timings_record")
    if not isinstance(timings, dict):
        raise BadResponse(read, "no 'timings_record' object")
    sha = result.get("predictions_sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise BadResponse(read, f"'predictions_sha256' is not a sha256 hex digest: {str(sha)[:80]!r}")
    inline, key = result.get("predictions_inline"), result.get("predictions_key")
    if (inline is None) == (key is None):
        raise BadResponse(read, "exactly one of 'predictions_inline' and 'predictions_key' must be given")
    return timings


def inline_bytes(result: dict, read: PartitionRead, limit: int = INLINE_MAX_BYTES) -> bytes:
    """The Parquet bytes the response carries, decoded strictly, within `limit` bytes, matching its sha256."""
    text = result["predictions_inline"]
    if not isinstance(text, str):
        raise BadResponse(read, f"'predictions_inline' must be a base64 string, got {type(text).__name__}")
    if len(text) > 4 * -(-limit // 3):
        raise BadResponse(read, f"'predictions_inline' is {len(text):,} characters, over the {limit:,} bytes asked for")
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadResponse(read, f"'predictions_inline' is not base64 ({exc})") from None
    if hashlib.sha256(body).hexdigest() != result["predictions_sha256"]:
        raise BadResponse(read, "'predictions_inline' does not match 'predictions_sha256' (corrupted in transit?)")
    return body


def check_table(body: bytes | Path, read: PartitionRead) -> None:
    """The predictions are the partition's: the columns and types write_predictions gives, its row count, distinct ids."""
    try:
        # ParquetFile, not read_table: no dataset discovery (a third of the CPU here); the schema from the footer,
        # and only the two columns checked row by row are decoded.
        parquet = pq.ParquetFile(pa.BufferReader(body) if isinstance(body, bytes) else body)
        got = {f.name: f.type for f in parquet.schema_arrow}
        want = {name: t for name, t in COLUMN_TYPES.items() if name in got or name not in OPTIONAL_COLUMNS}
        if got != want:
            shown = ", ".join(f"{n}: {t}" for n, t in got.items())
            expected = ", ".join(f"{n}: {t}" for n, t in want.items())
            raise BadResponse(read, f"the predictions' columns are {{{shown[:300]}}}, expected {expected}")
        table = parquet.read(columns=["object_id", "valid"], use_threads=False)  # a few rows: Arrow's thread pool only adds hand-offs
    except (OSError, pa.ArrowException) as exc:
        raise BadResponse(read, f"the predictions are not readable Parquet ({first_line(str(exc))})") from None
    if table.num_rows != read.rows:
        raise BadResponse(read, f"{table.num_rows} predictions for rows [{read.start}, {read.stop}), expected {read.rows}")
    for name in ("object_id", "valid"):
        if table.column(name).null_count:
            raise BadResponse(read, f"{table.column(name).null_count} null value(s) in '{name}'")
    if read.rows and len(np.unique(table.column("object_id").to_numpy())) != read.rows:
        raise BadResponse(read, "duplicate object_id values in the predictions")


def write_predictions(result: dict, read: PartitionRead, output: str | os.PathLike, s3: Any, settings: LambdaSettings) -> bool:
    """The response's predictions at `output` (only once checked); return whether they came inline (else one S3 GET)."""
    if result.get("predictions_inline") is not None:
        body = inline_bytes(result, read, settings.inline_max_bytes)
        check_table(body, read)
        write_bytes(output, body)
        return True
    key = result["predictions_key"]
    expected = settings.output_key(read.name)
    if key != expected:
        raise BadResponse(read, f"'predictions_key' is {str(key)[:200]!r}, not this partition's {expected!r}")
    with atomic_path(output) as tmp:
        download(s3, settings.bucket, key, tmp, result["predictions_sha256"], small=True)
        check_table(Path(tmp), read)
    return False
