"""Merge per-partition predictions into one table, checking every input row is accounted for exactly once."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosmicai.atomic import atomic_path
from cosmicai.data.dataset import read_ids
from cosmicai.data.integrity import load_manifest, partition_read
from cosmicai.data.predictions import read_predictions
from cosmicai.data.source import open_h5
from cosmicai.errors import CosmicaiError


def merge_predictions(manifest: str | os.PathLike, predictions_dir: str | os.PathLike, output: str | os.PathLike) -> int:
    """Concatenate part_*.parquet in manifest order; fail naming the partition whose rows or ids differ from its input's."""
    plan = load_manifest(manifest)
    ranges = [(e["start"], e["stop"]) for e in plan["partitions"]]
    if ranges and (ranges[0][0] != 0 or ranges[-1][1] != plan["rows"] or any(a[1] != b[0] for a, b in zip(ranges, ranges[1:]))):
        raise CosmicaiError(manifest, "partition row ranges do not cover the dataset's rows exactly once")
    tables = []
    with contextlib.ExitStack() as stack:
        source = None if plan.get("copy") else stack.enter_context(open_h5(plan["source"]["uri"], plan["source"].get("version_id")))
        for entry in plan["partitions"]:
            pred_path = Path(predictions_dir) / f"{entry['name']}.parquet"
            table = read_predictions(pred_path)
            if table.num_rows != entry["rows"]:
                raise CosmicaiError(pred_path, f"partition {entry['name']} has {table.num_rows} predictions, expected {entry['rows']} rows")
            if source is None:  # a copied partition: its own file
                read = partition_read(manifest, entry["name"], plan)
                expected_ids = read_ids(read.uri, read.start, read.stop)
            else:  # one open source for all ranges (over S3, every open costs metadata reads)
                expected_ids = source["object_id"][entry["start"] : entry["stop"]]
            if not np.array_equal(table.column("object_id").to_numpy(), expected_ids):
                raise CosmicaiError(pred_path, f"partition {entry['name']}: object_ids differ from the input partition's")
            tables.append(table)
    merged = pa.concat_tables(tables) if tables else pa.table({})
    if merged.num_rows != plan["rows"]:
        raise CosmicaiError(output, f"merged {merged.num_rows} rows but the dataset has {plan['rows']}")
    with atomic_path(output) as tmp:
        pq.write_table(merged, tmp)
    return merged.num_rows
