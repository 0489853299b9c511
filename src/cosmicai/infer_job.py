"""One inference job over a group of consecutive partitions (`cosmicai.job`): the engine loaded once, each partition's outputs its own.

The partitions are inferred in order; the next one's reading starts when the current one's compute
does (its first batches are read ahead while the current partition is being computed). Partitions
finished by an earlier attempt with the same key are reused, so a rerun after a kill or a failure
infers only what is missing.
"""

from __future__ import annotations

import contextlib
import os
import time

from cosmicai.data.dataset import inspect, iter_batches
from cosmicai.data.integrity import PartitionRead, check, partition_reads
from cosmicai.engines.base import InferenceEngine
from cosmicai.engines.loader import load_engine
from cosmicai.errors import CosmicaiError
from cosmicai.infer import Prefetch, infer_partition, prefetch
from cosmicai.job import JobLedger, file_identity, reuse_key


def _stream(read: PartitionRead, batch_size: int) -> Prefetch:
    return prefetch(iter_batches(read.uri, batch_size, read.start, read.stop, read.version_id))


def _infer_todo(ledger: JobLedger, engine: InferenceEngine, load_s: float, batch_size: int, on_invalid: str) -> None:
    """Infer the ledger's partitions still to do, in order, each committed as it ends; the next one's rows are read meanwhile."""
    todo = ledger.todo
    upcoming = None
    with contextlib.ExitStack() as readers:  # every reader started is stopped and joined, however the job ends
        for i, read in enumerate(todo):
            if read.sha256:
                check(read)  # a copied partition: its own file's sha256, read just before it is used
            stream = upcoming or readers.enter_context(_stream(read, batch_size))
            upcoming = None
            if i + 1 < len(todo) and not todo[i + 1].sha256:
                upcoming = readers.enter_context(_stream(todo[i + 1], batch_size))
            predictions, _ = ledger.outputs(read.name)
            try:
                timings = infer_partition(
                    read.uri,
                    engine,
                    predictions,
                    None,
                    batch_size,
                    on_invalid,  # type: ignore[arg-type]
                    model_load_s=load_s if i == 0 else 0.0,  # the job's start-up, counted once
                    batches=stream,
                    rows=(read.start, read.stop),
                    name=read.name,
                    version_id=read.version_id,
                )
            except CosmicaiError as exc:  # which partition of the job, besides the file and the row
                raise CosmicaiError(exc.path, f"partition {read.name} (rows {read.start}-{read.stop}): {exc.problem}") from None
            finally:
                stream.close()  # done with: its reader stops now, not at the end of the job
            ledger.commit(read.name, timings)


def run_job(
    manifest: str | os.PathLike,
    job: str,
    names: list[str],
    predictions_dir: str | os.PathLike,
    record: str | os.PathLike,
    checkpoint: str | os.PathLike,
    batch_size: int = 512,
    device: str = "auto",
    precision: str = "fp32",
    on_invalid: str = "fail",
    compile: bool = False,
    threads: int | None = None,
    runtime: str = "auto",
    onnx: str | os.PathLike | None = None,
) -> tuple[list[dict], list[str]]:
    """Infer the job's partitions not yet done with one engine; write each one's outputs, then the job's record.

    Returns every partition's timings and the names of those reused from an earlier attempt.
    """
    reads = partition_reads(manifest, names)
    model = file_identity(onnx or checkpoint)
    settings = {"device": device, "precision": precision, "runtime": runtime, "on_invalid": on_invalid, "compile": compile}
    ledger = JobLedger(job, reads, {r.name: reuse_key("local", r, model, **settings) for r in reads}, predictions_dir, record)
    todo = ledger.todo
    for source in {id(r.source): r.source for r in todo if r.source}.values():
        check(PartitionRead("", source["uri"], 0, 0, source=source))  # a changed source is refused before the model loads
    if todo:
        inspect(todo[0].uri, check_ids=False, version_id=todo[0].version_id)
        if precision == "int8":  # one graph for the run: calibrated on the whole manifest's rows, cached, gated
            from cosmicai.int8_gate import int8_graph_for_run, run_reads

            onnx = int8_graph_for_run(checkpoint, onnx, run_reads(manifest, None), runtime, threads)
        t = time.perf_counter()
        engine = load_engine(checkpoint, device, precision, runtime, compile=compile, threads=threads, onnx=onnx)
        load_s = time.perf_counter() - t
        _infer_todo(ledger, engine, load_s, batch_size, on_invalid)
    return ledger.write_record(), ledger.reused
