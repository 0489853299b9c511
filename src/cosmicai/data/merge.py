"""Merge per-partition predictions into one table, checking every input row is accounted for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosmicai.atomic import atomic_path
from cosmicai.errors import CosmicaiError
from cosmicai.data.predictions import read_predictions


def merge_predictions(manifest: str | os.PathLike, predictions_dir: str | os.PathLike, output: str | os.PathLike) -> int:
    """Concatenate part_*.parquet in manifest order; fail naming the partition whose rows or ids differ."""
    plan = json.loads(Path(manifest).read_text())
    partitions_dir = Path(manifest).parent
    tables = []
    for entry in plan["partitions"]:
        pred_path = Path(predictions_dir) / f"{entry['name']}.parquet"
        table = read_predictions(pred_path)
        if table.num_rows != entry["rows"]:
            raise CosmicaiError(pred_path, f"partition {entry['name']} has {table.num_rows} predictions, expected {entry['rows']} rows")
        with h5py.File(partitions_dir / entry["file"], "r") as f:
            expected_ids = f["object_id"][:]
        if not np.array_equal(table.column("object_id").to_numpy(), expected_ids):
            raise CosmicaiError(pred_path, f"partition {entry['name']}: object_ids differ from the input partition's")
        tables.append(table)
    merged = pa.concat_tables(tables) if tables else pa.table({})
    if merged.num_rows != plan["rows"]:
        raise CosmicaiError(output, f"merged {merged.num_rows} rows but the dataset has {plan['rows']}")
    with atomic_path(output) as tmp:
        pq.write_table(merged, tmp)
    return merged.num_rows
