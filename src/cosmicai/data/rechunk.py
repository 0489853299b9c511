"""Rewrite a dataset in the layout that reads fastest by row range (`cosmicai rechunk`).

A job reads its rows [start, stop) of every dataset in the file. Over S3 each HDF5 read is one or
more ranged GETs, so what matters is how many bytes one read covers:
- contiguous: rows [start, stop) are one byte range per dataset (fewest requests; no filters possible);
- chunked by rows, chunk ~ 1/16 of a partition (1-16 MiB): each chunk is one read, split into
  concurrent GETs; a partition over-reads at most its two edge chunks (~1/8 of a partition).
Small chunks (h5py's automatic ones are often tens of KiB, and chunks across bands or pixels) cost
one request each and read slowly over S3: rewrite such a file once before running from S3.
Data, dtypes and attributes are kept; only the layout changes (no compression: it would defeat
ranged reads of contiguous data and costs CPU in every function).
"""

from __future__ import annotations

import math
import os
from typing import Literal

import h5py
import numpy as np

from cosmicai.atomic import atomic_path
from cosmicai.data.dataset import inspect
from cosmicai.data.source import open_h5

MIB = 1 << 20
COPY_ROWS_BYTES = 256 * MIB  # rows copied per step


def chunk_rows_for(partition_mb: float, row_bytes: int, n_rows: int) -> int:
    """Rows per chunk: about 1/16 of a partition, between 1 and 16 MiB of the largest dataset's rows."""
    target = min(16 * MIB, max(1 * MIB, partition_mb * MIB / 16))
    return max(1, min(n_rows, math.ceil(target / row_bytes)))


def rechunk(
    source: str | os.PathLike,
    output: str | os.PathLike,
    partition_mb: float = 25,
    layout: Literal["chunked", "contiguous"] = "chunked",
    chunk_rows: int | None = None,
) -> int | None:
    """Copy `source` (path or s3:// URI) to `output` in `layout`; return the chunk rows (None when contiguous).

    `chunk_rows` sets the rows per chunk of the chunked layout instead of `chunk_rows_for` (benchmarks of small chunks).
    """
    info = inspect(source, check_ids=False)
    with open_h5(source) as src, atomic_path(output) as tmp, h5py.File(tmp, "w", libver="latest") as out:
        names = [k for k in src if isinstance(src[k], h5py.Dataset)]
        image_row_bytes = src["images"].dtype.itemsize * int(np.prod(src["images"].shape[1:]))
        if layout != "chunked":
            chunk_rows = None
        elif chunk_rows is None:
            chunk_rows = chunk_rows_for(partition_mb, image_row_bytes, info.n_rows)
        for k in names:
            d = src[k]
            chunks = (chunk_rows, *d.shape[1:]) if chunk_rows and d.ndim and d.shape[0] else None
            out.create_dataset(k, d.shape, d.dtype, chunks=chunks)
            out[k].attrs.update(dict(d.attrs))
        out.attrs.update(dict(src.attrs))
        step = max(1, COPY_ROWS_BYTES // max(1, info.source_row_bytes))
        if chunk_rows:
            step = max(chunk_rows, step // chunk_rows * chunk_rows)  # whole chunks per write
        for a in range(0, info.n_rows, step):
            rows = slice(a, min(a + step, info.n_rows))
            for k in names:
                if src[k].ndim and src[k].shape[0] == info.n_rows:
                    out[k][rows] = src[k][rows]
        for k in names:  # datasets not indexed by row (none in the format today) are copied whole
            if not (src[k].ndim and src[k].shape[0] == info.n_rows):
                out[k][...] = src[k][...]
    return chunk_rows
