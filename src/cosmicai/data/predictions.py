"""The predictions table (Parquet): one row per input row."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosmicai.atomic import atomic_path
from cosmicai.errors import CosmicaiError

# valid=False marks rows whose inputs were NaN/Inf under on_invalid: flag; metrics exclude them.
COLUMNS = ("object_id", "z_pred", "z_spec", "mag_r", "valid")


def write_predictions(
    path: str | os.PathLike,
    object_id: np.ndarray,
    z_pred: np.ndarray,
    z_spec: np.ndarray | None,
    mag_r: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Atomically write a predictions table; z_spec is omitted for unlabelled data."""
    columns = {"object_id": pa.array(object_id, pa.int64()), "z_pred": pa.array(z_pred, pa.float32())}
    if z_spec is not None:
        columns["z_spec"] = pa.array(z_spec, pa.float32())
    columns["mag_r"] = pa.array(mag_r, pa.float32())
    columns["valid"] = pa.array(valid, pa.bool_())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def read_predictions(path: str | os.PathLike) -> pa.Table:
    """Read a predictions table, checking it has the required columns."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CosmicaiError(path, f"not a readable predictions Parquet file: {exc}") from None
    missing = [c for c in ("object_id", "z_pred", "valid") if c not in table.column_names]
    if missing:
        raise CosmicaiError(path, f"predictions table lacks column(s) {', '.join(missing)}")
    return table
