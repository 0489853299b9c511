"""Split a dataset into partitions of about `partition_mb` MiB each: a manifest of row ranges.

By default no data is written: each partition is a row range [start, stop) of the source, whose
identity (`cosmicai.data.source`) the manifest records and every job checks. With `copy` each
partition is also written as its own model-ready file (cropped, float32) with its sha256, for a
source on a slow or non-shared filesystem. The manifest (version 2):
    {"version": 2, "source": {uri, size, ...identity}, "rows", "labelled", "partition_mb", "dataset_mib",
     "copy", "partitions": [{"name", "start", "stop", "rows", "bytes"[, "path", "sha256"]}]}
`bytes` is what the rows occupy in the source (a copy's file size with `copy`).

The count is ceil(size / partition size) with sizes in MiB of model-ready rows (float32 32x32
images, magnitudes, z, id); the paper's 12.6 GiB gives 517/259/173/130 partitions at 25/50/75/100.
Rows are split as evenly as possible, in order.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from cosmicai.atomic import atomic_path, write_json
from cosmicai.data.dataset import IMAGE_SIZE, ROW_BYTES, DatasetInfo, DatasetWriter, inspect, iter_batches
from cosmicai.data.source import identify, normalize
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

MIB = 1 << 20


def partitions_for_bytes(total_bytes: float, partition_mb: float) -> int:
    """Number of partitions of partition_mb MiB for total_bytes of data (at least one)."""
    if not partition_mb > 0:
        raise ValueError(f"partition_mb must be > 0, got {partition_mb}")
    return max(1, math.ceil(total_bytes / (partition_mb * MIB)))


def partition_count(n_rows: int, partition_mb: float) -> int:
    """Number of partitions for n_rows model-ready rows at partition_mb MiB each: never more than the rows, none empty.

    A partition smaller than one row is refused (ValueError): it would make partitions of no rows (and, for
    a size like 1e-9, more partitions than memory holds).
    """
    if not (math.isfinite(partition_mb) and partition_mb > 0):
        raise ValueError(f"partition_mb must be > 0 and finite, got {partition_mb}")
    if partition_mb * MIB < ROW_BYTES:
        raise ValueError(f"partition_mb {partition_mb} is smaller than one row ({ROW_BYTES / MIB:.6f} MiB, {ROW_BYTES} bytes)")
    if n_rows < 1:
        raise ValueError("the dataset has no rows")
    return min(n_rows, partitions_for_bytes(n_rows * ROW_BYTES, partition_mb))


def partition_ranges(n_rows: int, n_parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) row ranges, sizes differing by at most one."""
    bounds = [n_rows * i // n_parts for i in range(n_parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def partition_name(index: int) -> str:
    """File stem of partition `index`."""
    return f"part_{index:05d}"


MANIFEST_VERSION = 2


def write_partitions(
    dataset: str | os.PathLike, outdir: str | os.PathLike | None, partition_mb: float, manifest_path: str | os.PathLike, copy: bool = False
) -> dict:
    """Write the partition manifest (row ranges over the source); with `copy`, also one file per partition."""
    uri = normalize(dataset)
    identity = identify(uri)  # first: a missing or unreadable source is named before anything else
    info = inspect(uri, version_id=identity.get("version_id"))
    try:
        n_parts = partition_count(info.n_rows, partition_mb)
    except ValueError as exc:
        raise CosmicaiError(dataset, str(exc)) from None
    entries = []
    for index, (start, stop) in enumerate(partition_ranges(info.n_rows, n_parts)):
        entry = {
            "name": partition_name(index),
            "start": start,
            "stop": stop,
            "rows": stop - start,
            "bytes": (stop - start) * info.source_row_bytes,
        }
        if copy:
            entry.update(
                _copy_partition(uri, identity, info, Path(outdir or Path(manifest_path).parent), entry, Path(manifest_path).parent)
            )
        entries.append(entry)
    manifest = {
        "version": MANIFEST_VERSION,
        "source": identity,
        "rows": info.n_rows,
        "labelled": info.has_redshift,
        "partition_mb": partition_mb,
        "dataset_mib": info.nbytes / MIB,
        "copy": copy,
        "partitions": entries,
    }
    write_json(manifest_path, manifest)
    return manifest


def _copy_partition(uri: str, identity: dict, info: DatasetInfo, outdir: Path, entry: dict, manifest_dir: Path) -> dict:
    """Write one partition's rows to their own model-ready file; return its path (relative to the manifest) and sha256."""
    path = outdir / f"{entry['name']}.h5"
    with atomic_path(path) as tmp:
        with DatasetWriter(tmp, entry["rows"], (IMAGE_SIZE, IMAGE_SIZE), info.has_redshift) as out:
            for b in iter_batches(uri, 1024, entry["start"], entry["stop"], identity.get("version_id")):
                out.write(b.images, b.magnitudes, b.object_id, b.redshift)
    return {"bytes": path.stat().st_size, "path": os.path.relpath(path, manifest_dir), "sha256": sha256_file(path)}
