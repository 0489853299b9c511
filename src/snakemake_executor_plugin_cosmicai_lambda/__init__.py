"""Snakemake executor plugin `cosmicai-lambda`: every non-local job (infer_job, a group of partitions)
is one AWS Lambda invocation per partition, on one shared pool in this process (`cosmicai.aws.dispatch`),
while every other rule runs locally (localrules). profiles/lambda selects it with `executor: cosmicai-lambda`.

A job's work is the Lambda job's (`cosmicai.aws.lambda_job`): the rule gives it as `params.lambda_job`, a
`LambdaJobSpec` (the same job `workflow/scripts/lambda_invoke.py` runs under another executor), and the plugin
runs it on its pool instead of a Python process per job: the job's partitions not yet done are invoked, and the job
succeeds when all are done and its record is written, or fails with the first cause and its log.
Snakemake's retries, --keep-going, --rerun-incomplete and logs work as with any executor; a dry-run
never reaches the plugin (nothing is checked or sent). A group job is refused on one line (Snakemake's
group error would drop the reason); a job's message is one line.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncGenerator

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings

from cosmicai.aws.settings import LambdaSettings
from cosmicai.errors import CosmicaiError, fold, group_error_line

# Jobs run in this process on threads: nothing is spawned, nothing to pass on to a job's command line.
common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=False,
    pass_default_resources_args=False,
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)
# How often finished jobs are handed back to Snakemake (a look at every active job's future, no request): each look
# costs ~1.4 us per job, 0.34 ms a round at 250 jobs; a job's end reported up to 0.5 s late delays nothing but its successors.
STATUS_INTERVAL_S = 0.5


class Executor(RemoteExecutor):
    """Submits each job's invocations to the shared dispatcher and reports the finished jobs."""

    def __post_init__(self) -> None:
        config = getattr(self.workflow, "config", {}) or {}
        if config.get("backend") != "lambda" or "lambda" not in config:
            raise WorkflowError(
                f"executor cosmicai-lambda: the config's backend is {config.get('backend')!r}, not 'lambda' (a command-line "
                "--configfile replaces the profile's: name config/lambda.yaml too, last: --configfile my.yaml config/lambda.yaml)"
            )
        try:
            # Imported here: Snakemake imports every installed executor plugin when it starts, and boto3/botocore
            # come with the lambda extra only (a `cosmicai[workflow]` install must still run snakemake).
            from cosmicai.aws.dispatch import Dispatcher
        except ImportError as exc:
            raise WorkflowError(
                f"executor cosmicai-lambda: {exc.name or exc} is not installed; it comes with the lambda extra: pip install 'cosmicai[lambda]'"
            ) from None
        try:
            settings = LambdaSettings.from_config(config["lambda"])
            if not settings.bucket:  # the same line as the workflow's onstart check (which runs after executor start-up)
                raise WorkflowError(
                    "config: lambda.bucket is required to run on Lambda (a dry-run needs none): --config 'lambda={bucket: my-bucket}'"
                )
            self.dispatcher = Dispatcher(settings)
        except CosmicaiError as exc:
            raise WorkflowError(str(exc)) from None
        # Snakemake's DAG, jobs and modules are built by now and live to the end: out of the cyclic collector's reach,
        # its full collections (a run of thousands of invocations makes many) no longer walk them again and again.
        gc.freeze()
        self._gc = GcClock()
        info = self.dispatcher.info
        self.logger.info(
            f"cosmicai-lambda: {info.arn}: up to {info.in_flight} invocations in flight ({info.limit_source} concurrency, "
            f"lambda.max_in_flight {settings.max_in_flight})"
        )

    def run_job(self, job: JobExecutorInterface) -> None:
        """Queue the job's invocations; it counts as submitted at once (the pool bounds what is in flight)."""
        info = SubmittedJobInfo(job, external_jobid=job.format_wildcards("{wildcards}") or job.name)
        spec = getattr(job.params, "lambda_job", None) if hasattr(job, "params") else None
        if job.is_group():
            self.report_job_error(
                info,
                msg="the cosmicai-lambda executor runs only the Lambda inference job, not group jobs (drop the rules' group: and --groups)",
            )
            return
        if type(spec).__name__ != "LambdaJobSpec":  # by name: the Lambda job's module is imported with the dispatcher
            self.report_job_error(
                info,
                msg=f"rule {job.name} has no params.lambda_job (a cosmicai.aws.lambda_job.LambdaJobSpec): the cosmicai-lambda "
                "executor runs only the Lambda inference job (make other rules localrules)",
            )
            return
        info.aux = {"future": self.dispatcher.submit(spec, job.log[0]), "log": job.log[0]}
        self.report_job_submission(info)

    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Report finished jobs (success, or the one-line cause with the job's log); yield the others."""
        for info in active_jobs:
            future = info.aux["future"]
            if not future.done():
                yield info
                continue
            exc = future.exception() if not future.cancelled() else CosmicaiError(info.external_jobid, "cancelled")
            if exc is None:
                self.report_job_success(info)
            else:
                self.report_job_error(info, msg=str(exc), aux_logs=[info.aux["log"]])

    def report_job_error(self, job_info: SubmittedJobInfo, msg: str | None = None, **kwargs: object) -> None:
        """Report a failed or refused job with a one-line message."""
        msg = fold(msg) if msg else msg
        # Snakemake appends its own sentence ('For further error details ...') right after the message
        super().report_job_error(job_info, msg=f"{msg} " if msg else msg, **kwargs)

    def print_job_error(self, job_info: SubmittedJobInfo, msg: str | None = None, **kwargs: object) -> None:
        """A group job's refusal as one line; any other job's error as Snakemake prints it."""
        if job_info.job.is_group():
            self.logger.error(group_error_line(job_info.job, msg))
            return
        super().print_job_error(job_info, msg=msg, **kwargs)

    async def sleep(self) -> None:
        await asyncio.sleep(STATUS_INTERVAL_S)

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Drop queued invocations; ones already sent run to their end on Lambda (their partitions, kept, are reused by a rerun)."""
        for info in active_jobs:
            if info.aux:
                info.aux["future"].cancel()
        self.dispatcher.shutdown(cancel=True)

    def shutdown(self) -> None:
        super().shutdown()
        self.dispatcher.shutdown()
        self._gc.stop()
        self.logger.info(f"cosmicai-lambda: cyclic GC: {self._gc.collections} collections, {self._gc.seconds:.2f} s while jobs ran")


class GcClock:
    """Collections and seconds the cyclic garbage collector takes (in any thread of this process) until stopped."""

    def __init__(self) -> None:
        self.collections, self.seconds, self._t = 0, 0.0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.collections += 1
            self.seconds += time.perf_counter() - self._t

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
