"""Merge per-partition predictions into one table, checking every row of the source is accounted for exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosmicai.atomic import atomic_path
from cosmicai.data.integrity import load_manifest
from cosmicai.data.partition import partition_name
from cosmicai.data.predictions import read_predictions
from cosmicai.data.source import open_h5, verify
from cosmicai.errors import CosmicaiError


def source_rows(manifest: dict) -> int:
    """The row count of the manifest's source, read from the source itself (HDF5 metadata), not from the manifest."""
    source = manifest["source"]
    with open_h5(source["uri"], source.get("version_id")) as f:
        if "object_id" not in f:
            raise CosmicaiError(source["uri"], "missing dataset 'object_id' (the partition manifest names it as the source)")
        return int(f["object_id"].shape[0])


def check_coverage(manifest_path: str | os.PathLike, manifest: dict, n_source: int) -> None:
    """Refuse a manifest whose row ranges, in order, are not [0, n) of the source exactly once (cut short, extended, reordered)."""
    ranges = [(e["start"], e["stop"]) for e in manifest["partitions"]]
    covered = sum(stop - start for start, stop in ranges)
    contiguous = bool(ranges) and ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    if not contiguous or ranges[-1][1] != n_source or manifest["rows"] != n_source:
        span = f"{ranges[0][0]}-{ranges[-1][1]}" if ranges else "none"
        raise CosmicaiError(
            manifest_path,
            f"partition row ranges do not cover the source's rows exactly once: {covered} rows ({span}"
            f"{'' if contiguous else ', with gaps, overlaps or out of order'}; the manifest says {manifest['rows']}) "
            f"but the source {manifest['source']['uri']} has {n_source}; re-partition",
        )
    for i, e in enumerate(manifest["partitions"]):
        if e["name"] != partition_name(i) or e["rows"] != e["stop"] - e["start"] or e["rows"] < 1:
            raise CosmicaiError(
                manifest_path, f"partition #{i} ({e['name']}): not {partition_name(i)} with rows = stop - start > 0; re-partition"
            )


def merge_predictions(manifest_path: str | os.PathLike, predictions_dir: str | os.PathLike, output: str | os.PathLike) -> int:
    """Concatenate part_*.parquet in manifest order, checking the manifest against the source's own rows and ids;
    fail naming the partition whose rows or ids differ from the source's."""
    manifest = load_manifest(manifest_path)
    verify(manifest["source"])  # the source partitioned is the one read now
    tables = []
    with open_h5(manifest["source"]["uri"], manifest["source"].get("version_id")) as source:
        check_coverage(manifest_path, manifest, int(source["object_id"].shape[0]))
        for entry in manifest["partitions"]:
            pred_path = Path(predictions_dir) / f"{entry['name']}.parquet"
            table = read_predictions(pred_path)
            if table.num_rows != entry["rows"]:
                raise CosmicaiError(pred_path, f"partition {entry['name']} has {table.num_rows} predictions, expected {entry['rows']} rows")
            # one open source for all ranges (over S3, every open costs metadata reads); a copied partition came from it too
            expected_ids = source["object_id"][entry["start"] : entry["stop"]]
            if not np.array_equal(table.column("object_id").to_numpy(), expected_ids):
                raise CosmicaiError(
                    pred_path, f"partition {entry['name']}: object_ids differ from the source's rows {entry['start']}-{entry['stop']}"
                )
            tables.append(table)
    merged = pa.concat_tables(tables)
    with atomic_path(output) as tmp:
        pq.write_table(merged, tmp)
    return merged.num_rows
