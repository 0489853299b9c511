"""One inference job on Lambda: a group of consecutive partitions (cosmicai.job), each one invocation.

The job is a `LambdaJobSpec`: the rule's `params.lambda_job` (workflow/rules/common.smk builds it), which the
cosmicai-lambda executor runs on its shared pool as it is, and which another executor runs as
`workflow/scripts/lambda_invoke.py` with `LambdaJobSpec.argv()`. It names the manifest, the job and its
partitions, the predictions directory and the job's record, the engine options and the Lambda settings. The manifest is read once; each partition's reuse key
(cosmicai.job.reuse_key: the source's identity and row range, the model file, the engine and function
settings) is computed, and a partition whose sidecar carries that key is reused. The others are
invoked (cosmicai.aws.invoker.invoke_partition) concurrently; the data is checked and staged once
per job, the model once per process. When every partition has ended the job writes its record,
or fails with the first failed partition's cause (the others keep their outputs for the rerun).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from cosmicai.aws.calls import READ_TIMEOUT_MARGIN_S, Backend, LambdaBackend, ThrottleGate, invoke_client, lambda_client
from cosmicai.aws.invoker import RemoteError, checked_source, invoke_partition
from cosmicai.aws.job_spec import LambdaJobSpec
from cosmicai.aws.settings import LambdaSettings
from cosmicai.aws.storage import check_bucket, ensure_model
from cosmicai.data.integrity import PartitionRead, load_manifest, partition_reads
from cosmicai.data.source import is_s3
from cosmicai.errors import CosmicaiError
from cosmicai.job import JobLedger, file_identity, reuse_key

log = logging.getLogger("cosmicai.lambda")
SCRIPT_THREADS = 16  # invocations in flight for one job run as a script (the dispatcher shares one larger pool)

Submit = Callable[[PartitionRead], concurrent.futures.Future]


class ModelStage:
    """Hashes and stages each model file once for every partition that uses it (later ones see uploaded=False)."""

    def __init__(self, settings: LambdaSettings) -> None:
        self.settings = settings
        self._staged: dict[str, tuple[str, str, bool]] = {}
        self._lock = threading.Lock()

    def __call__(self, s3: Any, path: str | os.PathLike) -> tuple[str, str, bool]:
        key = os.path.abspath(path)
        with self._lock:
            if key not in self._staged:
                self._staged[key] = ensure_model(s3, path, self.settings.bucket, self.settings.model_key)
                return self._staged[key]
            model_key, sha, _ = self._staged[key]
            return model_key, sha, False


class DataStage:
    """Checks and stages each source once for every job that reads it (a dispatcher's jobs share one).

    A local source is checked again when its size, mtime or inode changed since (one stat per job): the
    identity check's 6 MiB sample hash and the HEAD of the staged object are paid once per run, not per job.
    """

    def __init__(self) -> None:
        self._staged: dict[tuple, tuple[dict, bool]] = {}
        self._lock = threading.Lock()

    def __call__(self, read: PartitionRead, s3: Any, settings: LambdaSettings) -> tuple[dict, bool]:
        """(source, uploaded) as checked_source gives them, uploaded True only the first time."""
        source = read.uri if read.sha256 else repr(sorted((read.source or {"uri": read.uri}).items()))
        ident: tuple = (source, settings.bucket, settings.prefix)
        if not is_s3(read.uri):
            try:
                st = os.stat(read.uri)
                ident += (st.st_size, st.st_mtime_ns, st.st_ino)
            except OSError:
                ident += (None,)  # checked_source names the problem
        with self._lock:
            if ident not in self._staged:
                self._staged[ident] = checked_source(read, settings, s3)
                return self._staged[ident]
            return self._staged[ident][0], False


class LambdaJob:
    """One job's partitions on Lambda: its ledger (cosmicai.job.JobLedger: reuse keys, reused, to do, the record), each invoked."""

    def __init__(self, spec: LambdaJobSpec, manifest: dict | None = None, stage_data: DataStage | None = None) -> None:
        self.spec = spec
        self.settings = spec.settings
        manifest = manifest or load_manifest(spec.manifest)
        reads = partition_reads(spec.manifest, list(spec.partitions), manifest)
        model = file_identity(spec.onnx or spec.checkpoint)
        keys = {r.name: self._key(r, model) for r in reads}
        self.ledger = JobLedger(spec.job, reads, keys, spec.predictions_dir, spec.record)
        self._data_stage = stage_data or DataStage()

    def _key(self, read: PartitionRead, model: dict | None) -> str:
        a = self.spec
        return reuse_key(
            "lambda",
            read,
            model,
            runtime=a.runtime,
            precision=a.precision,
            on_invalid=a.on_invalid,
            batch_size=a.batch_size,
            function_name=a.settings.function_name,
            memory_mb=a.settings.memory_mb,
        )

    def stage_data(self, read: PartitionRead, s3: Any) -> tuple[dict, bool]:
        """Check and stage a partition's data once (per job, or per dispatcher when it passes its DataStage)."""
        return self._data_stage(read, s3, self.settings)

    def invoke(self, read: PartitionRead, backend: Backend, s3: Any, stage_model: ModelStage) -> dict:
        """Infer one partition of the job (its predictions and sidecar written, with its key)."""
        a = self.spec
        output, sidecar = self.ledger.outputs(read.name)
        timings = invoke_partition(
            read,
            a.checkpoint,
            output,
            sidecar,
            self.settings,
            a.batch_size,
            a.precision,
            a.on_invalid,
            backend=backend,
            s3=s3,
            runtime=a.runtime,
            onnx=a.onnx,
            stage_model=stage_model,
            stage_data=self.stage_data,
            key=self.ledger.keys[read.name],
        )
        self.ledger.done(read.name, timings)  # its sidecar written by invoke_partition, with the key
        return timings

    def run_logged(self, read: PartitionRead, out: TextIO, backend: Backend, s3: Any, stage_model: ModelStage) -> dict:
        """`invoke`, with the outcome in the job's log: a summary line, or the cause (naming the partition) and any remote stack."""
        try:
            timings = self.invoke(read, backend, s3, stage_model)
        except CosmicaiError as exc:
            report_error(exc, out, read.name)
            raise CosmicaiError(read.name, str(exc)) from exc
        except Exception as exc:  # an unforeseen failure still fails only its partition, named in the log
            log.exception("%s: unexpected error", read.name)
            raise CosmicaiError(read.name, f"{type(exc).__name__}: {exc}") from exc
        out.write(summary_line(timings) + "\n")
        return timings


def start_job(job: LambdaJob, submit: Submit, result: concurrent.futures.Future | None = None) -> concurrent.futures.Future:
    """Submit the job's partitions still to do; the future ends when all of them have ended.

    Its result is the record's list of sidecars (the record written); its exception, the first failed
    partition's cause in partition order (every partition ends first, so a rerun finds no invocation
    of the job still in flight and the finished ones on disk). `result`: a running future to complete
    instead of a new one.
    """
    if result is None:
        result = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
    todo = job.ledger.todo
    failures: dict[str, BaseException] = {}
    remaining = len(todo)
    lock = threading.Lock()

    def finish() -> None:
        if failures:
            first = next(r.name for r in job.ledger.reads if r.name in failures)
            exc = failures[first]
            if len(failures) > 1:
                more = f" (and {len(failures) - 1} more of the job's partitions failed: see the job's log)"
                exc = CosmicaiError(first, f"{_problem(exc)}{more}")
            result.set_exception(exc)
            return
        try:
            result.set_result(job.ledger.write_record())
        except (CosmicaiError, OSError) as exc:
            result.set_exception(exc)

    def ended(name: str, future: concurrent.futures.Future) -> None:
        nonlocal remaining
        with lock:
            if future.cancelled():
                failures[name] = CosmicaiError(name, "cancelled")
            elif future.exception() is not None:
                failures[name] = future.exception()  # type: ignore[assignment]
            remaining -= 1
            last = remaining == 0
        if last:
            finish()

    if not todo:
        finish()
    for read in todo:
        try:
            future = submit(read)
        except RuntimeError as exc:  # the pool is shutting down
            future = concurrent.futures.Future()
            future.set_exception(CosmicaiError(read.name, f"not invoked ({exc})"))
        future.add_done_callback(lambda f, name=read.name: ended(name, f))
    return result


def _problem(exc: BaseException) -> str:
    """A failed partition's cause without its name (run_logged's errors name the partition)."""
    return exc.problem if isinstance(exc, CosmicaiError) else f"{type(exc).__name__}: {exc}"


def report_error(exc: CosmicaiError, out: Any = None, partition: str | None = None) -> None:
    """The cause on one line (naming the partition, when there is one), then any remote stack trace (one write)."""
    out = out or sys.stderr
    lines = [f"lambda_invoke: error: {partition + ': ' if partition else ''}{exc}"]
    if isinstance(exc, RemoteError) and exc.stack:
        lines.append("remote stack trace (most recent call last):")
        lines += [f"  {line.rstrip()}" for line in "\n".join(exc.stack).splitlines()]
    out.write("\n".join(lines) + "\n")
    out.flush()


def summary_line(t: dict) -> str:
    """One line for a partition done."""
    lam = t["lambda"]
    return (
        f"{t['partition']}: {t['rows']} rows in {t['total_s']:.2f} s; request {lam['request_id']}: "
        f"duration {lam['duration_ms']:.0f} ms, billed {lam['billed_ms']:.0f} ms, init {lam['init_ms']:.0f} ms, "
        f"memory {lam['max_memory_mb']:.0f}/{lam['memory_mb']:.0f} MB, attempts {lam['attempts']}, throttles {lam['throttles']}"
    )


def job_line(job: LambdaJob) -> str:
    """What the job starts with: its partitions, how many are reused."""
    n, reused = len(job.ledger.reads), len(job.ledger.reused)
    return f"{job.spec.job}: {n} partition(s), {reused} reused, {n - reused} to invoke"


def pooled_s3_client(region: str, pool: int = 10) -> Any:
    """A boto3 S3 client with `pool` connections (one per invocation in flight)."""
    import boto3
    from botocore.config import Config

    # Our own calls only (no user parameters to validate); the predictions' sha256 is checked after download.
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=pool,
        parameter_validation=False,
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", region_name=region or None, config=config)


def main(argv: list[str] | None = None) -> int:
    """Entry point: check the function, then infer the job's partitions with a small thread pool.

    One line per partition done; for a failed one its cause and any remote stack; last, on failure,
    the first failed partition's cause.
    """
    from cosmicai.aws.preflight import check_function

    spec = LambdaJobSpec.from_argv(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    settings = spec.settings
    threads = min(len(spec.partitions), SCRIPT_THREADS)
    try:
        read_timeout = settings.timeout_s + READ_TIMEOUT_MARGIN_S
        info = check_function(settings, lambda_client(settings.region, read_timeout), cap=threads)  # before any upload or invocation
        client = invoke_client(settings.region, read_timeout, max_pool_connections=info.in_flight)
        job = LambdaJob(spec)
        print(job_line(job), file=sys.stderr, flush=True)
        s3, stage_model, gate = pooled_s3_client(settings.region, info.in_flight), ModelStage(settings), ThrottleGate()
        check_bucket(s3, settings.bucket, settings.prefix)  # before any upload: a denied listing is named here
        with concurrent.futures.ThreadPoolExecutor(max_workers=info.in_flight, thread_name_prefix="lambda") as pool:

            def submit(read: PartitionRead) -> concurrent.futures.Future:
                backend = LambdaBackend(settings.function_name, settings.region, client=client, gate=gate)
                return pool.submit(job.run_logged, read, sys.stderr, backend, s3, stage_model)

            job_done = start_job(job, submit)
            exc = job_done.exception()
        if exc is not None:
            raise exc
    except CosmicaiError as exc:
        report_error(exc)
        return 1
    return 0
