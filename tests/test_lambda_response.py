"""The function's response read as hostile (cosmicai.aws.response): predictions inline or in S3, checked before they land."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosmicai.aws.response import check_summary, write_predictions
from cosmicai.aws.settings import LambdaSettings
from cosmicai.data.integrity import PartitionRead
from cosmicai.data.predictions import write_predictions as write_table
from cosmicai.errors import CosmicaiError

READ = PartitionRead(name="part_00003", uri="s3://b/data.h5", start=30, stop=40)
SETTINGS = LambdaSettings(bucket="b", function_name="f", prefix="p", inline_max_bytes=4096)


def _parquet(tmp_path: Path, n: int = 10, ids: np.ndarray | None = None, labelled: bool = True) -> bytes:
    path = tmp_path / "p.parquet"
    ids = np.arange(100, 100 + n) if ids is None else ids
    z = np.linspace(0, 1, n, dtype=np.float32)
    write_table(path, ids, z, z if labelled else None, z, np.ones(n, bool))
    return path.read_bytes()


def _response(body: bytes, **change: Any) -> dict:
    result = {
        "timings_record": {"request_id": "r"},
        "predictions_sha256": hashlib.sha256(body).hexdigest(),
        "predictions_inline": base64.b64encode(body).decode(),
        "predictions_key": None,
    }
    return {**result, **change}


class NoS3:
    def get_object(self, **kwargs: Any) -> None:
        raise AssertionError("inline predictions need no GET")


@pytest.mark.parametrize("labelled", [True, False], ids=["labelled", "unlabelled"])
def test_inline_predictions_are_written_as_sent(tmp_path: Path, labelled: bool) -> None:
    body = _parquet(tmp_path, labelled=labelled)
    out = tmp_path / "out" / "part_00003.parquet"
    assert write_predictions(_response(body), READ, out, NoS3(), SETTINGS) is True
    assert out.read_bytes() == body


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _bad_cases(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    good = _parquet(tmp_path)
    table = pq.read_table(pa.BufferReader(good))
    wide = table.set_column(1, "z_pred", table.column("z_pred").cast(pa.float64()))
    extra = table.append_column("secret", pa.array(range(10)))
    nulls = table.set_column(0, "object_id", pa.array([None, *range(9)], pa.int64()))
    return {
        "not base64": (_response(good, predictions_inline="@@@@"), "'predictions_inline' is not base64"),
        "sha256": (_response(good, predictions_sha256="0" * 64), "does not match 'predictions_sha256'"),
        "too large": (_response(b"x" * 5000), "'predictions_inline' is 6,668 characters, over the 4,096 bytes asked for"),
        "not parquet": (_response(b"PAR1 not really"), "the predictions are not readable Parquet"),
        "rows": (_response(_parquet(tmp_path, n=9)), "9 predictions for rows [30, 40), expected 10"),
        "dtype": (_response(_table_bytes(wide)), "z_pred: double"),
        "extra column": (_response(_table_bytes(extra)), "secret: int64"),
        "null ids": (_response(_table_bytes(nulls)), "1 null value(s) in 'object_id'"),
        "duplicate ids": (_response(_parquet(tmp_path, ids=np.array([7] * 10))), "duplicate object_id values"),
        "both": (_response(good, predictions_key="p/predictions/part_00003.parquet"), "exactly one of"),
        "neither": (_response(good, predictions_inline=None), "exactly one of"),
        "not a string": (_response(good, predictions_inline=[1, 2]), "must be a base64 string, got list"),
        "no sha256": (_response(good, predictions_sha256=None), "'predictions_sha256' is not a sha256 hex digest"),
        "no timings": (_response(good, timings_record="x"), "no 'timings_record' object"),
        "another key": (
            _response(good, predictions_inline=None, predictions_key="p/predictions/part_00009.parquet"),
            "not this partition's",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["not base64", "sha256", "too large", "not parquet", "rows", "dtype", "extra column", "null ids", "duplicate ids"]
    + ["both", "neither", "not a string", "no sha256", "no timings", "another key"],
)
def test_a_bad_response_is_one_line_naming_the_partition_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    result, problem = _bad_cases(tmp_path)[case]
    out = tmp_path / "out" / "part_00003.parquet"
    with pytest.raises(CosmicaiError) as err:
        check_summary(result, READ)
        write_predictions(result, READ, out, NoS3(), SETTINGS)
    line = str(err.value)
    assert line.startswith("part_00003: the function's response: ") and problem in line and "\n" not in line
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))  # no temporary left either


def test_a_response_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CosmicaiError, match="^part_00003: the function's response: expected a JSON object, got list$"):
        check_summary([], READ)
