"""Split a dataset into partitions of about `partition_mb` MiB each, with a manifest.

The count is ceil(size / partition size) with sizes in MiB of model-ready rows (float32 32x32
images, magnitudes, z, id); the paper's 12.6 GiB gives 517/259/173/130 partitions at 25/50/75/100.
Rows are split as evenly as possible, in order.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from cosmicai.atomic import atomic_path, write_json
from cosmicai.data.dataset import IMAGE_SIZE, ROW_BYTES, DatasetWriter, inspect, iter_batches
from cosmicai.errors import CosmicaiError
from cosmicai.resources import sha256_file

MIB = 1 << 20


def partitions_for_bytes(total_bytes: float, partition_mb: float) -> int:
    """Number of partitions of partition_mb MiB for total_bytes of data (at least one)."""
    if not partition_mb > 0:
        raise ValueError(f"partition_mb must be > 0, got {partition_mb}")
    return max(1, math.ceil(total_bytes / (partition_mb * MIB)))


def partition_count(n_rows: int, partition_mb: float) -> int:
    """Number of partitions for n_rows model-ready rows at partition_mb MiB each."""
    return partitions_for_bytes(n_rows * ROW_BYTES, partition_mb)


def partition_ranges(n_rows: int, n_parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) row ranges, sizes differing by at most one."""
    bounds = [n_rows * i // n_parts for i in range(n_parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def partition_name(index: int) -> str:
    """File stem of partition `index`."""
    return f"part_{index:05d}"


def write_partitions(
    dataset: str | os.PathLike, outdir: str | os.PathLike, partition_mb: float, manifest: str | os.PathLike
) -> dict:
    """Write model-ready partition files (cropped to 32x32, float32) and a manifest with row ranges and sha256."""
    info = inspect(dataset)
    try:
        n_parts = partition_count(info.n_rows, partition_mb)
    except ValueError as exc:
        raise CosmicaiError(dataset, str(exc)) from None
    outdir = Path(outdir)
    entries = []
    for index, (start, stop) in enumerate(partition_ranges(info.n_rows, n_parts)):
        path = outdir / f"{partition_name(index)}.h5"
        with atomic_path(path) as tmp:
            with DatasetWriter(tmp, stop - start, (IMAGE_SIZE, IMAGE_SIZE), info.has_redshift) as out:
                for b in iter_batches(dataset, 1024, start, stop):
                    out.write(b.images, b.magnitudes, b.object_id, b.redshift)
        entries.append(
            {
                "name": partition_name(index),
                "file": path.name,
                "row_start": start,
                "row_stop": stop,
                "rows": stop - start,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    plan = {
        "dataset": str(dataset),
        "rows": info.n_rows,
        "labelled": info.has_redshift,
        "partition_mb": partition_mb,
        "dataset_mib": info.nbytes / MIB,
        "partitions": entries,
    }
    write_json(manifest, plan)
    return plan
