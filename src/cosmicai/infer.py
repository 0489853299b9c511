"""Inference over one partition (rows [start, stop) of a dataset): stream batches, predict, write predictions and a timing sidecar."""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from cosmicai.atomic import write_json
from cosmicai.data.dataset import BANDS, IMAGE_SIZE, Batch, inspect, iter_batches
from cosmicai.data.integrity import PartitionRead, verify_sha256
from cosmicai.data.predictions import write_predictions
from cosmicai.engines.base import InferenceEngine
from cosmicai.engines.loader import load_engine
from cosmicai.errors import CosmicaiError
from cosmicai.resources import peak_rss_mb

OnInvalid = Literal["fail", "flag"]
# Bits per sample as the paper counts throughput: the float32 image and magnitude tensors.
BITS_PER_SAMPLE = 32 * (len(BANDS) * IMAGE_SIZE * IMAGE_SIZE + len(BANDS))


class Prefetch:
    """Batches read in a background thread (HDF5 reads overlap compute); iterate (batch, wait_s); `close` stops and joins it.

    The reader must be joined before the process exits: a thread left inside h5py holds its global lock,
    and the interpreter's exit then waits on it forever (a failed partition's job hung after its error).
    """

    def __init__(self, batches: Iterator[Batch], depth: int = 2) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(batches,), daemon=True)
        self._thread.start()

    def _read(self, batches: Iterator[Batch]) -> None:
        try:
            for b in batches:
                if not self._put(b):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # in this thread, which iterated it: closes its HDF5 file

    def _put(self, item: object) -> bool:
        """Queue `item` unless closed meanwhile (a full queue is retried, so `close` is seen within 50 ms)."""
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[Batch, float]]:
        while True:
            t = time.perf_counter()
            item = self._q.get()
            wait = time.perf_counter() - t
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item, wait

    def close(self) -> None:
        """Stop reading and wait for the reader to leave h5py (at most the read of one batch)."""
        self._stop.set()
        self._thread.join()
        while not self._q.empty():  # batches read ahead and never used: free them now
            self._q.get_nowait()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DONE = object()


def prefetch(batches: Iterator[Batch], depth: int = 2) -> Prefetch:
    """Start reading batches in a background thread now; iterate (batch, wait_s); close (or use as a context) when done."""
    return Prefetch(batches, depth)


def infer_partition(
    partition: str | os.PathLike,
    engine: InferenceEngine,
    output: str | os.PathLike,
    sidecar: str | os.PathLike | None = None,
    batch_size: int = 512,
    on_invalid: OnInvalid = "fail",
    model_load_s: float = 0.0,
    progress: bool | None = None,
    batches: Iterator[tuple[Batch, float]] | None = None,
    rows: tuple[int, int | None] = (0, None),
    name: str | None = None,
    version_id: str | None = None,
) -> dict:
    """Predict z for rows [start, stop) of a dataset (path or s3:// URI); write Parquet predictions and return (and write) timings.

    `batches`: the partition's (batch, wait_s) stream if its reading has already started (`prefetch`).
    """
    started = time.time()
    t0, cpu0 = time.perf_counter(), time.process_time()
    info = inspect(partition, check_ids=False, version_id=version_id)  # ids: checked once, when partitioning
    start, stop = rows[0], info.n_rows if rows[1] is None else rows[1]
    name = name or Path(str(partition)).name
    if not 0 <= start <= stop:
        raise CosmicaiError(str(partition), f"rows [{start}, {stop}) are not a row range")
    if stop > info.n_rows:  # before anything is allocated for the range (iter_batches would say the same, too late)
        raise CosmicaiError(
            str(partition), f"rows [{start}, {stop}) are past the end of the dataset ({info.n_rows} rows): changed since partitioning?"
        )
    n = stop - start
    z_pred = np.empty(n, np.float32)
    ids = np.empty(n, np.int64)
    mag_r = np.empty(n, np.float32)
    z_spec = np.empty(n, np.float32) if info.has_redshift else None
    valid = np.ones(n, bool)
    read_s = compute_s = 0.0
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress_bar(n, name) if show else None
    with contextlib.ExitStack() as stack:  # a reader this call starts is joined however the loop ends
        if batches is None:
            batches = stack.enter_context(prefetch(iter_batches(partition, batch_size, start, stop, version_id)))
        for batch, wait in batches:
            read_s += wait
            rows = slice(batch.start - start, batch.start - start + len(batch))
            ok = np.isfinite(batch.images).all(axis=(1, 2, 3)) & np.isfinite(batch.magnitudes).all(axis=1)
            valid[rows] = ok
            ids[rows] = batch.object_id
            mag_r[rows] = batch.magnitudes[:, BANDS.index("r")]
            if z_spec is not None:
                z_spec[rows] = batch.redshift
            if not valid[: rows.stop].all() and on_invalid == "fail":
                continue  # keep scanning only to report the full count of bad rows
            images, mags = batch.images, batch.magnitudes
            if not ok.all():
                images, mags = np.where(ok[:, None, None, None], images, 0), np.where(ok[:, None], mags, 0)
            t = time.perf_counter()
            z_pred[rows] = engine.predict(images, mags)
            compute_s += time.perf_counter() - t
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    bad = np.flatnonzero(~valid)
    if len(bad) and on_invalid == "fail":
        raise CosmicaiError(
            partition,
            f"{len(bad)} row(s) with NaN or Inf in images or magnitudes, first at row {start + bad[0]} "
            f"(object_id {ids[bad[0]]}); set on_invalid: flag to predict the rest",
        )
    z_pred[~valid] = np.nan
    t = time.perf_counter()
    write_predictions(output, ids, z_pred, z_spec, mag_r, valid)
    write_s = time.perf_counter() - t
    timings = _timings(name, engine, n, len(bad), batch_size, started - model_load_s, model_load_s, read_s, compute_s, write_s)
    timings["total_s"] = time.perf_counter() - t0 + model_load_s
    # CPU seconds of the whole process (reading, inference, writing; every thread) over the partition: under a CPU
    # quota or a busy machine, rows / cpu_s is the rate per core that wall time hides.
    timings["cpu_s"] = time.process_time() - cpu0
    if sidecar is not None:
        write_json(sidecar, timings)
    return timings


def _timings(
    name: str,
    engine: InferenceEngine,
    n: int,
    invalid: int,
    batch_size: int,
    started_at: float,
    model_load_s: float,
    read_s: float,
    compute_s: float,
    write_s: float,
) -> dict:
    """A partition's timing record (the sidecar): where and how it ran, and where its time went."""
    return {
        "partition": name,
        "rows": n,
        "invalid_rows": invalid,
        "device": str(engine.device),
        "precision": engine.precision,
        "runtime": engine.runtime,
        "batch_size": batch_size,
        "threads": engine.threads,
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # for pricing from Slurm's accounting
        "started_at": started_at,
        "ended_at": time.time(),
        "model_load_s": model_load_s,
        "read_s": read_s,
        "compute_s": compute_s,
        "write_s": write_s,
        "total_s": 0.0,
        "samples_per_s": n / compute_s if compute_s else 0.0,
        "bits_per_s": n * BITS_PER_SAMPLE / compute_s if compute_s else 0.0,
        "peak_rss_mb": peak_rss_mb(),
    }


def _progress_bar(total: int, name: str):  # noqa: ANN202 - tqdm is imported only when shown
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="gal", file=sys.stderr)


def check_partition(partition: str | os.PathLike, sha256: str | None = None) -> None:
    """Refuse a partition that differs from the one the manifest recorded, or is not a valid dataset."""
    if sha256:
        from cosmicai.data.integrity import verify_sha256

        verify_sha256(partition, sha256)
    inspect(partition)


def run_infer(
    dataset: str | os.PathLike,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    sidecar: str | os.PathLike | None = None,
    batch_size: int = 512,
    device: str = "auto",
    precision: str = "fp32",
    on_invalid: OnInvalid = "fail",
    compile: bool = False,
    threads: int | None = None,
    sha256: str | None = None,
    runtime: str = "auto",
    onnx: str | os.PathLike | None = None,
) -> dict:
    """Load the checkpoint, build the engine and infer a whole dataset file (`cosmicai infer DATA --output ...`,
    `cosmicai bench`), checked against `sha256` when given, its ids for duplicates. A manifest's partitions
    are inferred as a job (cosmicai.infer_job.run_job).
    """
    if sha256:
        verify_sha256(dataset, sha256)
    info = inspect(dataset)  # fail on a bad dataset before paying for the model load
    read = PartitionRead(Path(dataset).name, str(dataset), 0, info.n_rows)
    if precision == "int8":  # quantized for this data (cached) and gated before the whole partition is inferred
        from cosmicai.int8_gate import int8_graph_for_run

        onnx = int8_graph_for_run(checkpoint, onnx, [read], runtime, threads)
    t = time.perf_counter()
    engine = load_engine(checkpoint, device, precision, runtime, compile=compile, threads=threads, onnx=onnx)
    load_s = time.perf_counter() - t
    return infer_partition(
        read.uri,
        engine,
        output,
        sidecar,
        batch_size,
        on_invalid,
        model_load_s=load_s,
        rows=(read.start, read.stop),
        name=read.name,
        version_id=read.version_id,
    )
