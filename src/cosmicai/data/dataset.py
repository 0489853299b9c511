"""The HDF5 galaxy dataset: validation, streaming reads in batches, and writing.

Layout (at the file's root): `images` (N, 5, H, W) bands u,g,r,i,z; `magnitudes` (N, 5);
`object_id` int64 (N,), unique; `redshift` (N,) spectroscopic z, optional.
Images larger than 32x32 are centre-cropped, as AstroMAE reads the central 32x32 of SDSS cutouts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import numpy as np

from cosmicai.data.source import open_h5
from cosmicai.errors import CosmicaiError

BANDS = ("u", "g", "r", "i", "z")
IMAGE_SIZE = 32
# Bytes one sample occupies as the model reads it (float32 images + magnitudes + z + id):
# 659,178 SDSS samples of this size are the paper's 12.6 GiB.
ROW_BYTES = 4 * (len(BANDS) * IMAGE_SIZE * IMAGE_SIZE + len(BANDS) + 1) + 8


@dataclass(frozen=True)
class DatasetInfo:
    """Shape facts read from an HDF5 file's metadata, without reading its data."""

    path: str
    n_rows: int
    height: int
    width: int
    has_redshift: bool
    source_row_bytes: int = ROW_BYTES  # bytes one row occupies in the file (images as stored, before cropping)

    @property
    def nbytes(self) -> int:
        """Size of the dataset as the model reads it (after cropping), in bytes."""
        return self.n_rows * ROW_BYTES


@dataclass
class Batch:
    """A slice of rows, ready for the model."""

    start: int
    images: np.ndarray  # float32 (B, 5, 32, 32), C-contiguous
    magnitudes: np.ndarray  # float32 (B, 5)
    object_id: np.ndarray  # int64 (B,)
    redshift: np.ndarray | None  # float32 (B,)

    def __len__(self) -> int:
        return len(self.object_id)


def _open(path: str | os.PathLike, version_id: str | None = None) -> h5py.File:
    return open_h5(path, version_id)


def inspect(path: str | os.PathLike, check_ids: bool = True, version_id: str | None = None) -> DatasetInfo:
    """Validate the layout of an HDF5 dataset (local path or s3:// URI) and return its shape; raise CosmicaiError naming the problem."""
    with _open(path, version_id) as f:
        for name in ("images", "magnitudes", "object_id"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise CosmicaiError(path, f"missing dataset '{name}'")
        images, mags, ids = f["images"], f["magnitudes"], f["object_id"]
        if images.ndim != 4:
            raise CosmicaiError(path, f"'images' must have 4 dimensions (N, 5, H, W), found shape {images.shape}")
        n, bands, height, width = images.shape
        if bands != len(BANDS):
            raise CosmicaiError(path, f"'images' must have {len(BANDS)} bands (u,g,r,i,z) on axis 1, found {bands}")
        if height < IMAGE_SIZE or width < IMAGE_SIZE:
            raise CosmicaiError(path, f"images are {height}x{width}, smaller than the model's {IMAGE_SIZE}x{IMAGE_SIZE}")
        if mags.shape != (n, len(BANDS)):
            raise CosmicaiError(path, f"'magnitudes' has shape {mags.shape}, expected ({n}, {len(BANDS)}) to match 'images'")
        if ids.shape != (n,):
            raise CosmicaiError(path, f"'object_id' has shape {ids.shape}, expected ({n},) to match 'images'")
        has_z = "redshift" in f
        if has_z and f["redshift"].shape != (n,):
            raise CosmicaiError(path, f"'redshift' has shape {f['redshift'].shape}, expected ({n},) to match 'images'")
        for name in ("images", "magnitudes") + (("redshift",) if has_z else ()):
            if f[name].dtype.kind != "f":
                raise CosmicaiError(path, f"'{name}' must be floating point, found {f[name].dtype}")
        if ids.dtype.kind not in "iu":
            raise CosmicaiError(path, f"'object_id' must be integer, found {ids.dtype}")
        if check_ids and n:
            all_ids = _read(path, ids, slice(0, n))
            uniq, counts = np.unique(all_ids, return_counts=True)
            dup = uniq[counts > 1]
            if len(dup):
                raise CosmicaiError(path, f"{len(dup)} duplicate object_id value(s), first {int(dup[0])}")
        row_bytes = sum(
            f[k].dtype.itemsize * int(np.prod(f[k].shape[1:])) for k in ("images", "magnitudes", "object_id", "redshift") if k in f
        )
        return DatasetInfo(str(path), int(n), int(height), int(width), has_z, row_bytes)


def _read(path: str | os.PathLike, dset: h5py.Dataset, sel: slice | tuple) -> np.ndarray:
    try:
        return dset[sel]
    except (OSError, ValueError) as exc:
        raise CosmicaiError(path, f"cannot read '{dset.name.lstrip('/')}' (corrupt or truncated data): {exc}") from None


def iter_batches(
    path: str | os.PathLike, batch_size: int, start: int = 0, stop: int | None = None, version_id: str | None = None
) -> Iterator[Batch]:
    """Stream rows [start, stop) in batches, centre-cropping images and converting to float32.

    Whole rows are read and cropped in memory: one contiguous read per batch (or per chunk), where
    a cropped selection would make HDF5 read every image row separately (ruinous over S3).
    """
    with _open(path, version_id) as f:
        n = f["images"].shape[0]
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise CosmicaiError(path, f"rows [{start}, {stop}) are past the end of the dataset ({n} rows): changed since partitioning?")
        for a in range(start, stop, batch_size):
            yield _batch(path, f, slice(a, min(a + batch_size, stop)))


def _batch(path: str | os.PathLike, f: h5py.File, rows: slice) -> Batch:
    """Rows of an open dataset, images centre-cropped, as float32."""
    images = f["images"]
    height, width = images.shape[2:]
    y0, x0 = (height - IMAGE_SIZE) // 2, (width - IMAGE_SIZE) // 2
    full = _read(path, images, rows)
    return Batch(
        start=rows.start,
        images=np.ascontiguousarray(full[:, :, y0 : y0 + IMAGE_SIZE, x0 : x0 + IMAGE_SIZE], dtype=np.float32),
        magnitudes=np.ascontiguousarray(_read(path, f["magnitudes"], rows), dtype=np.float32),
        object_id=_read(path, f["object_id"], rows).astype(np.int64, copy=False),
        redshift=_read(path, f["redshift"], rows).astype(np.float32, copy=False) if "redshift" in f else None,
    )


def read_blocks(path: str | os.PathLike, blocks: list[slice], version_id: str | None = None) -> list[Batch]:
    """Several row ranges of a dataset, read with the file opened once (a sample spread over a dataset)."""
    with _open(path, version_id) as f:
        return [_batch(path, f, rows) for rows in blocks]


def read_ids(path: str | os.PathLike, start: int, stop: int, version_id: str | None = None) -> np.ndarray:
    """object_id of rows [start, stop) (what merge checks the predictions against)."""
    with _open(path, version_id) as f:
        return _read(path, f["object_id"], slice(start, stop)).astype(np.int64, copy=False)


class DatasetWriter:
    """Write a dataset file of known size batch by batch (chunked by rows, so later reads stream)."""

    def __init__(self, path: str | os.PathLike, n_rows: int, image_hw: tuple[int, int], has_redshift: bool) -> None:
        self.file = h5py.File(path, "w")
        chunk = max(1, min(n_rows, 256))
        h, w = image_hw
        self.file.create_dataset("images", (n_rows, len(BANDS), h, w), np.float32, chunks=(chunk, len(BANDS), h, w))
        self.file.create_dataset("magnitudes", (n_rows, len(BANDS)), np.float32, chunks=(chunk, len(BANDS)) if n_rows else None)
        self.file.create_dataset("object_id", (n_rows,), np.int64)
        if has_redshift:
            self.file.create_dataset("redshift", (n_rows,), np.float32)
        self.file.attrs["bands"] = ",".join(BANDS)
        self.pos = 0

    def write(self, images: np.ndarray, magnitudes: np.ndarray, object_id: np.ndarray, redshift: np.ndarray | None) -> None:
        """Append rows."""
        rows = slice(self.pos, self.pos + len(object_id))
        self.file["images"][rows] = images
        self.file["magnitudes"][rows] = magnitudes
        self.file["object_id"][rows] = object_id
        if redshift is not None and "redshift" in self.file:
            self.file["redshift"][rows] = redshift
        self.pos = rows.stop

    def close(self) -> None:
        """Flush and close the file."""
        self.file.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
