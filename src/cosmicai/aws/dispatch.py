"""Many jobs' invocations in flight from one process: the dispatcher behind profiles/lambda's executor.

One Invoke client (cosmicai.aws.invoke_client) and one S3 client, each with a connection pool as large as the in-flight limit,
one bounded thread pool, the model hashed and staged once, and one throttle gate: a 429's Retry-After
holds back every new attempt, not only the throttled one. Each Snakemake job is a group of partitions
(cosmicai.aws.lambda_job, what `workflow/scripts/lambda_invoke.py` runs for one job): its partitions
not yet done are queued on the shared pool, one invocation each, their log lines routed to the job's
one log, and the job's future ends when all of them have (with its record written, or the first cause).

Before the first job the function is checked (`cosmicai.aws.preflight`): it must exist and match the
config, and its reserved concurrency (else the account's unreserved concurrency), capped by
`lambda.max_in_flight`, sets how many invocations are in flight at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import resource
import threading
from pathlib import Path
from typing import Any

from cosmicai.aws.calls import READ_TIMEOUT_MARGIN_S, LambdaBackend, ThrottleGate, invoke_client, lambda_client
from cosmicai.aws.invoke_client import InvokeClient
from cosmicai.aws.job_spec import LambdaJobSpec
from cosmicai.aws.lambda_job import DataStage, LambdaJob, ModelStage, job_line, pooled_s3_client, report_error, start_job
from cosmicai.aws.preflight import FunctionInfo, check_function
from cosmicai.aws.settings import LambdaSettings
from cosmicai.aws.storage import check_bucket
from cosmicai.data.integrity import PartitionRead, load_manifest
from cosmicai.errors import CosmicaiError

log = logging.getLogger("cosmicai.lambda")
# Sockets per invocation in flight (Lambda, S3) plus log files, with room for Snakemake's own.
FDS_PER_INVOCATION = 4


class JobLog:
    """A job's log file, shared by its partitions' threads: truncated once, each write whole and flushed."""

    def __init__(self, path: str | os.PathLike) -> None:
        if not Path(path).parent.is_dir():  # mkdir of an existing directory takes its parent's lock (contended)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w")  # noqa: SIM115 - closed when the job ends
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(text)
                self._file.flush()

    def flush(self) -> None:
        """Every write is flushed already."""

    def close(self) -> None:
        with self._lock:
            self._file.close()


class _JobLogs(logging.Handler):
    """Sends each record to the log of the job whose partition runs on the record's thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.local = threading.local()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        stream = getattr(self.local, "stream", None)
        if stream is not None:
            stream.write(self.format(record) + "\n")


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit towards `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Dispatcher:
    """Runs jobs' invocations on a shared pool; `submit` returns a future per job (Snakemake job)."""

    def __init__(self, settings: LambdaSettings, client: InvokeClient | None = None, s3: Any = None) -> None:
        self.settings = settings
        read_timeout = settings.timeout_s + READ_TIMEOUT_MARGIN_S
        probe = lambda_client(settings.region, read_timeout)  # the preflight's calls (boto3)
        self.info: FunctionInfo = check_function(settings, probe, cap=settings.max_in_flight)
        limit = self.info.in_flight
        raise_fd_limit(FDS_PER_INVOCATION * limit + 1024)
        self.client = client or invoke_client(settings.region, read_timeout, max_pool_connections=limit)
        self.s3 = s3 or pooled_s3_client(settings.region, limit)
        check_bucket(self.s3, settings.bucket, settings.prefix)  # before any upload: a denied listing is named here
        self.gate = ThrottleGate()
        # Threads start as work arrives; each waits on one socket at a time (its stack is reserved, not resident).
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="lambda")
        self.stage_model = ModelStage(settings)
        self.stage_data = DataStage()  # a source is checked and staged once per run, not per job
        self._manifests: dict[str, tuple[tuple[int, int], dict]] = {}
        self._lock = threading.Lock()
        self.in_flight = self.peak_in_flight = 0
        self._closed = False
        self._logs = _JobLogs()
        logger = logging.getLogger("cosmicai")
        logger.setLevel(logging.INFO)
        logger.addHandler(self._logs)
        logger.propagate = False  # job logs go to their files, not to Snakemake's console

    def submit(self, spec: LambdaJobSpec, log_path: str | os.PathLike) -> concurrent.futures.Future:
        """Queue one job; the future holds its record's sidecars or its first failure.

        The job's log is truncated when it starts; its partitions' lines follow, then its outcome.
        """
        result: concurrent.futures.Future = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
        try:
            started = self.pool.submit(self._start, spec, log_path, result)
        except RuntimeError as exc:  # shut down
            result.set_exception(CosmicaiError(spec.job, f"not started ({exc})"))
            return result
        started.add_done_callback(lambda f: f.cancelled() and result.set_exception(CosmicaiError(spec.job, "cancelled")))
        return result

    def _start(self, spec: LambdaJobSpec, log_path: str | os.PathLike, result: concurrent.futures.Future) -> None:
        """On the pool: read the job (what is reused), then queue its partitions."""
        try:
            out = JobLog(log_path)
        except OSError as exc:
            result.set_exception(CosmicaiError(log_path, f"cannot write the job's log ({exc.strerror})"))
            return
        result.add_done_callback(lambda f: _close(out, f))
        try:
            job = LambdaJob(spec, self._manifest(spec.manifest), self.stage_data)
        except CosmicaiError as exc:
            result.set_exception(exc)
            return
        except Exception as exc:  # an unforeseen failure fails only this job
            result.set_exception(CosmicaiError(spec.job, f"{type(exc).__name__}: {exc}"))
            return
        out.write(job_line(job) + "\n")
        start_job(job, lambda read: self.pool.submit(self._run, job, read, out), result)

    def _manifest(self, path: str) -> dict:
        """The manifest, parsed once while it is unchanged (every job of a run names the same one)."""
        try:
            st = os.stat(path)
        except OSError:
            return load_manifest(path)  # its one line
        key, sig = os.path.abspath(path), (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._manifests.get(key)
        if cached is not None and cached[0] == sig:
            return cached[1]
        manifest = load_manifest(path)
        with self._lock:
            self._manifests[key] = (sig, manifest)
        return manifest

    def _run(self, job: LambdaJob, read: PartitionRead, out: JobLog) -> dict:
        """One partition's invocation (on a pool thread), counted in flight, logged to its job's log."""
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._logs.local.stream = out
        try:
            backend = LambdaBackend(job.settings.function_name, job.settings.region, client=self.client, gate=self.gate)
            return job.run_logged(read, out, backend, self.s3, self.stage_model)
        finally:
            self._logs.local.stream = None
            with self._lock:
                self.in_flight -= 1

    def shutdown(self, cancel: bool = False) -> None:
        """Stop: wait for invocations in flight, or (cancel) drop the queued ones without waiting (once either way).

        An invocation already sent cannot be recalled: it runs to its end on Lambda, and the interpreter
        waits for its thread before exiting; Snakemake has marked its outputs incomplete by then.
        """
        if self._closed:
            return
        self._closed = True
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
        if not cancel:
            self.client.close()
        logging.getLogger("cosmicai").removeHandler(self._logs)


def _close(out: JobLog, job: concurrent.futures.Future) -> None:
    """The job's outcome as its log's last line (a failure's one-line cause), then close the log."""
    exc = job.exception() if not job.cancelled() else CosmicaiError("job", "cancelled")
    if isinstance(exc, CosmicaiError):
        report_error(exc, out)
    elif exc is not None:
        out.write(f"lambda_invoke: error: {type(exc).__name__}: {exc}\n")
    out.close()
