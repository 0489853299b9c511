"""Where a dataset's bytes come from: a local path or an `s3://` URI, opened as an h5py.File, and its identity.

Every reader (partitioning, local and Slurm inference, the Lambda function, merge) opens the
dataset here. An S3 dataset is read in place through ranged GETs (`cosmicai.data.s3io`, imported only
then: boto3 comes with the `lambda` extra), never downloaded first.

Identity (recorded in the partition manifest, checked by every job before it reads a row):
- local file: size, mtime (ns precision as a float), `meta_sha256` and `sample_sha256`;
- S3 object: size, ETag, VersionId (versioned buckets: every read is pinned to it) and `meta_sha256`.
`meta_sha256` hashes the HDF5 layout: each dataset's name, shape, dtype, chunk shape, filters and
(for contiguous data) file offset. `sample_sha256` hashes the size plus the first and last MiB and
64 windows of 64 KiB spread evenly over the file: 6 MiB read whatever the size, so it costs the
same for 1 GB and 1 TB. It catches a rewrite, truncation or append that kept the size and mtime,
not a flipped byte between samples (for that, partition with `partition_copy: true`, which hashes
every copied partition in full). An S3 object's ETag changes with any rewrite of its content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import h5py

from cosmicai.errors import CosmicaiError

SAMPLE_WINDOWS = 64
SAMPLE_BYTES = 64 << 10
EDGE_BYTES = 1 << 20

# HDF5's chunk cache per dataset read over S3 (h5py's default, stated): what an open file may hold besides the
# S3 block cache (cosmicai.data.s3io); a chunk larger than this is read straight through.
S3_CHUNK_CACHE_BYTES = 1 << 20

_s3_client: Any = None


def is_s3(uri: str | os.PathLike) -> bool:
    """True for an s3:// URI."""
    return str(uri).startswith("s3://")


def reader_s3_client() -> Any:
    """The process's boto3 S3 client (endpoint and credentials from boto3's chain; created on first use)."""
    global _s3_client
    if _s3_client is None:
        import boto3
        from botocore.config import Config

        # A ranged GET carries no checksum of its own; "when_required" keeps botocore from checking one a
        # server returns for the whole object against the range (rclone does; S3 does not send it).
        _s3_client = boto3.client(
            "s3",
            config=Config(
                retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32, response_checksum_validation="when_required"
            ),
        )
    return _s3_client


def normalize(uri: str | os.PathLike) -> str:
    """An absolute local path, or the s3:// URI unchanged."""
    return str(uri) if is_s3(uri) else str(Path(uri).absolute())


class Opened:
    """A dataset already open, passed where a path goes: reads through it reuse the one open file.

    Over S3 every open of an HDF5 file costs metadata requests and, in h5py, CPU under its global
    lock; a reader that checks, inspects and streams one dataset opens it once. `str()` is its URI.
    """

    def __init__(self, uri: str | os.PathLike, file: h5py.File) -> None:
        self.uri, self.file = str(uri), file

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        return self.uri


class _S3H5:
    """An HDF5 file over S3 as a context manager: leaving it closes the file and its S3RangeFile (block cache, threads).

    h5py keeps a reference to a file object it reads until the garbage collector finds it: without
    this, every file opened in a warm function (or a thread-mode environment) would keep its cache.
    """

    def __init__(self, file: h5py.File, raw: Any) -> None:
        self.file, self.raw = file, raw

    def __enter__(self) -> h5py.File:
        return self.file

    def __exit__(self, *exc: object) -> None:
        try:
            self.file.close()
        finally:
            self.raw.close()


def open_h5(uri: str | os.PathLike | Opened, version_id: str | None = None, s3: Any = None) -> Any:
    """Open a dataset read-only (a context manager yielding the h5py.File); raise CosmicaiError naming it when it
    is missing or not HDF5. An `Opened` dataset is yielded as it is, and left open."""
    if isinstance(uri, Opened):
        return contextlib.nullcontext(uri.file)
    if is_s3(uri):
        from cosmicai.data.s3io import S3RangeFile, parse_s3_uri  # botocore: the lambda extra, only for S3

        bucket, key = parse_s3_uri(str(uri))
        raw = S3RangeFile(s3 or reader_s3_client(), bucket, key, version_id)
        try:
            return _S3H5(h5py.File(raw, "r", rdcc_nbytes=S3_CHUNK_CACHE_BYTES), raw)
        except OSError as exc:
            raw.close()
            raise CosmicaiError(uri, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None
    if not Path(uri).exists():
        raise CosmicaiError(uri, "no such file")
    try:
        return h5py.File(uri, "r")
    except OSError as exc:
        raise CosmicaiError(uri, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None


def meta_sha256(f: h5py.File) -> str:
    """sha256 of the HDF5 layout: names, shapes, dtypes, chunking, filters and contiguous offsets of every dataset."""
    layout = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            layout.append(
                [name, list(obj.shape), obj.dtype.str, list(obj.chunks or []), obj.compression, bool(obj.fletcher32), obj.id.get_offset()]
            )

    f.visititems(visit)
    return hashlib.sha256(json.dumps(sorted(layout, key=lambda e: e[0])).encode()).hexdigest()


def sample_sha256(path: str | os.PathLike, size: int) -> str:
    """sha256 of the size, the first and last MiB and SAMPLE_WINDOWS evenly spread windows of the file."""
    h = hashlib.sha256(str(size).encode())
    step = max(1, size // SAMPLE_WINDOWS)
    spans = [(0, EDGE_BYTES), *((i * step, SAMPLE_BYTES) for i in range(SAMPLE_WINDOWS)), (max(0, size - EDGE_BYTES), EDGE_BYTES)]
    with open(path, "rb") as f:
        for offset, n in spans:
            f.seek(offset)
            h.update(f.read(n))
    return h.hexdigest()


def identify(uri: str | os.PathLike, s3: Any = None) -> dict:
    """The identity of a dataset as the manifest records it (see the module docstring)."""
    uri = normalize(uri)
    if is_s3(uri):
        from cosmicai.data.s3io import head, parse_s3_uri

        bucket, key = parse_s3_uri(uri)
        meta = head(s3 or reader_s3_client(), bucket, key)
        with open_h5(uri, meta["version_id"], s3) as f:
            return {"uri": uri, **meta, "meta_sha256": meta_sha256(f)}
    with open_h5(uri) as f:
        meta = meta_sha256(f)
    st = os.stat(uri)
    return {"uri": uri, "size": st.st_size, "mtime": st.st_mtime, "meta_sha256": meta, "sample_sha256": sample_sha256(uri, st.st_size)}


def _refuse_changed(uri: str, recorded: dict, now: dict, checks: list[tuple[str, str]]) -> None:
    for field, label in checks:
        if recorded.get(field) is not None and now[field] != recorded[field]:
            raise CosmicaiError(
                uri, f"changed since partitioning: {label} {recorded[field]} -> {now[field]}; re-partition (cosmicai partition)"
            )


def verify_s3_head(recorded: dict, s3: Any = None) -> None:
    """Refuse an S3 source whose size or ETag differs from the recorded ones (one HEAD request, no data read)."""
    from cosmicai.data.s3io import head, parse_s3_uri

    bucket, key = parse_s3_uri(recorded["uri"])
    # A pinned source is checked at its version: a newer version is no change, a deleted one says so.
    now = head(s3 or reader_s3_client(), bucket, key, recorded.get("version_id"))
    _refuse_changed(recorded["uri"], recorded, now, [("size", "size"), ("etag", "ETag")])


def verify(recorded: dict, s3: Any = None, keep: contextlib.ExitStack | None = None) -> Opened | None:
    """Refuse (one line naming the file and what changed) a source that differs from its recorded identity.

    With `keep`, the file opened to check its layout stays open in that stack and is returned (`Opened`),
    for the caller's reads of it; otherwise it is closed (and None returned).
    """
    uri = recorded["uri"]
    if is_s3(uri):
        verify_s3_head(recorded, s3)
    else:
        if not Path(uri).is_file():
            raise CosmicaiError(uri, "no such file (the partition manifest names it as the source)")
        st = os.stat(uri)
        _refuse_changed(uri, recorded, {"size": st.st_size, "mtime": st.st_mtime}, [("size", "size"), ("mtime", "mtime")])
    if not recorded.get("meta_sha256"):
        return None  # a copied partition staged for Lambda: its sha256 was checked before upload, its ETag here
    local = contextlib.ExitStack()
    f = (keep or local).enter_context(open_h5(uri, recorded.get("version_id"), s3))
    with local:
        if meta_sha256(f) != recorded["meta_sha256"]:
            raise CosmicaiError(uri, "changed since partitioning: HDF5 layout (dataset shapes, types or offsets) differs; re-partition")
    if not is_s3(uri) and sample_sha256(uri, recorded["size"]) != recorded["sample_sha256"]:
        raise CosmicaiError(uri, "changed since partitioning: sampled content hash differs (same size and mtime); re-partition")
    return Opened(uri, f) if keep is not None else None
