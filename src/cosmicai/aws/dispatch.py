"""Many partitions' invocations in flight from one process: the dispatcher behind profiles/lambda's executor.

One Lambda client and one S3 client (each with a connection pool as large as the in-flight limit),
one bounded thread pool, the model hashed and staged once, and one throttle gate: a 429's Retry-After
holds back every new attempt, not only the throttled one. Each partition runs the invoker's own
per-partition function (`cosmicai.aws.invoker.run_args`, the unit `workflow/scripts/lambda_invoke.py`
runs for one partition) with its log routed to that partition's log file.

Before the first job the function is checked (`cosmicai.aws.preflight`): it must exist and match the
config, and its reserved concurrency (else the account's unreserved concurrency), capped by
`lambda.max_in_flight`, sets how many invocations are in flight at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cosmicai.aws.invoker import (
    READ_TIMEOUT_MARGIN_S,
    LambdaBackend,
    ThrottleGate,
    build_parser,
    lambda_client,
    report_error,
    run_args,
    summary_line,
)
from cosmicai.aws.preflight import FunctionInfo, check_function
from cosmicai.aws.settings import LambdaSettings
from cosmicai.aws.storage import ensure_model
from cosmicai.errors import CosmicaiError

log = logging.getLogger("cosmicai.lambda")
# Sockets per invocation in flight (Lambda, S3) plus log files, with room for Snakemake's own.
FDS_PER_INVOCATION = 4


class _JobLogs(logging.Handler):
    """Sends each record to the log file of the job running on the record's thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.local = threading.local()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        stream = getattr(self.local, "stream", None)
        if stream is not None:
            stream.write(self.format(record) + "\n")
            stream.flush()

    @contextlib.contextmanager
    def to(self, path: str | os.PathLike) -> Iterator[Any]:
        """Route this thread's records to `path` (truncated: one attempt per log, as the shell's `> log`)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as stream:
            self.local.stream = stream
            try:
                yield stream
            finally:
                self.local.stream = None


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit towards `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Dispatcher:
    """Runs partitions' invocations on a shared pool; `submit` returns a future per partition."""

    def __init__(self, settings: LambdaSettings, client: Any = None, s3: Any = None) -> None:
        self.settings = settings
        read_timeout = settings.timeout_s + READ_TIMEOUT_MARGIN_S
        probe = client or lambda_client(settings.region, read_timeout)
        self.info: FunctionInfo = check_function(settings, probe, cap=settings.max_in_flight)
        limit = self.info.in_flight
        raise_fd_limit(FDS_PER_INVOCATION * limit + 1024)
        self.client = client or lambda_client(settings.region, read_timeout, max_pool_connections=limit)
        self.s3 = s3 or _s3_client(settings.region, limit)
        self.gate = ThrottleGate()
        # Threads start as work arrives; each waits on one socket at a time (its stack is reserved, not resident).
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="lambda")
        self._models: dict[str, tuple[str, str, bool]] = {}
        self._model_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.in_flight = self.peak_in_flight = 0
        self._closed = False
        self._logs = _JobLogs()
        logger = logging.getLogger("cosmicai")
        logger.setLevel(logging.INFO)
        logger.addHandler(self._logs)
        logger.propagate = False  # job logs go to their files, not to Snakemake's console

    def stage_model(self, s3: Any, path: str | os.PathLike) -> tuple[str, str, bool]:
        """Hash and stage the model once for all partitions (later partitions see uploaded=False)."""
        key = os.path.abspath(path)
        with self._model_lock:
            if key not in self._models:
                staged = ensure_model(s3, path, self.settings.bucket, self.settings.model_key)
                self._models[key] = staged
                return staged
            model_key, sha, _ = self._models[key]
            return model_key, sha, False

    def submit(self, argv: list[str], log_path: str | os.PathLike) -> concurrent.futures.Future:
        """Queue one partition (the invoker's arguments); the future holds its timings or its CosmicaiError."""
        args = build_parser().parse_args(argv)  # a bad argument list fails here, in the caller
        return self.pool.submit(self._run, args, log_path)

    def _run(self, args: Any, log_path: str | os.PathLike) -> dict:
        with self._count_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            with self._logs.to(log_path) as stream:
                backend = LambdaBackend(self.settings.function_name, self.settings.region, client=self.client, gate=self.gate)
                try:
                    timings = run_args(args, backend=backend, s3=self.s3, stage_model=self.stage_model)
                except CosmicaiError as exc:
                    report_error(exc, stream)
                    raise
                except Exception as exc:  # an unforeseen failure still fails only its partition, named in its log
                    log.exception("unexpected error")
                    raise CosmicaiError(args.partition, f"{type(exc).__name__}: {exc}") from exc
                print(summary_line(timings), file=stream)
                return timings
        finally:
            with self._count_lock:
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
        logging.getLogger("cosmicai").removeHandler(self._logs)


def _s3_client(region: str, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=pool)
    return boto3.client("s3", region_name=region or None, config=config)
