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
# Their types, in that order (z_spec only for labelled data).
COLUMN_TYPES = dict(zip(COLUMNS, (pa.int64(), pa.float32(), pa.float32(), pa.float32(), pa.bool_())))
OPTIONAL_COLUMNS = ("z_spec",)


def write_predictions(
    path: str | os.PathLike,
    object_id: np.ndarray,
    z_pred: np.ndarray,
    z_spec: np.ndarray | None,
    mag_r: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Atomically write a predictions table; z_spec is omitted for unlabelled data."""
    values = {"object_id": object_id, "z_pred": z_pred, "z_spec": z_spec, "mag_r": mag_r, "valid": valid}
    columns = {name: pa.array(values[name], t) for name, t in COLUMN_TYPES.items() if values[name] is not None}
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
