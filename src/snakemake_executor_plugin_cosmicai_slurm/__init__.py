"""Snakemake executor plugin `cosmicai-slurm`: snakemake-executor-plugin-slurm's executor, with a job
cancelled in Slurm reported as failed. profiles/slurm and profiles/slurm-gpu select it.

The slurm plugin (2.8.0, the latest release, and its main branch as of 2026-11) polls
`sacct -X --parsable2 --format=JobIdRaw,State` and looks the state up in its list of failure states;
sacct reports a cancelled job as `CANCELLED by <uid>`, which is not in the list, so a job cancelled
with scancel (by the user, an administrator or a preemption policy) counts as still running and
Snakemake waits for it forever, even after Ctrl-C ("Will exit after finishing currently running jobs").
Before the slurm plugin's own poll, this plugin asks sacct for the active jobs' states and reports the
cancelled ones as failed: Snakemake's retries and --keep-going apply as to any failure, and a rerun
redoes what the job left unfinished. It asks by JobID (`<jobid>_<task>` for an array task, as
Snakemake tracks it), not JobIdRaw (an array task's own number), so cancelled array tasks are found too.
A job's error message (a refusal by sbatch carries the whole sbatch call and script) is folded to one
line. A group job sbatch refused is one line too (`Error in group g (a jobid 2, b jobid 1): SLURM sbatch
failed. ...`) instead of Snakemake's group error, which drops the reason and prints `message: None` for
each member (snakemake/snakemake#4248); a group job that ran and failed gets the line before that error,
which lists its logs (and shows them with --show-failed-logs).

The slurm plugin also waits 10 s longer after every poll that finds no job finished, up to 180 s, so a
job's end is seen up to minutes late (a 74 s inference job of the demo was seen 30 s after it ended).
`--cosmicai-slurm-status-interval-max` caps that wait (the profiles: 10 s; two sacct calls per poll for
all of the run's jobs); it is read with its default when the settings object is the slurm plugin's own
(as in that plugin's test suite). Everything else (submission, resources, the other states, the jobs' own
`slurm-jobstep` executor, the settings: `--cosmicai-slurm-<setting>` for `--slurm-<setting>`) is the
slurm plugin's.
"""

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from snakemake_executor_plugin_slurm import Executor as SlurmExecutor
from snakemake_executor_plugin_slurm import ExecutorSettings as SlurmSettings
from snakemake_executor_plugin_slurm import common_settings
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

from cosmicai.errors import fold, group_error_line

__all__ = ["Executor", "ExecutorSettings", "common_settings", "cancelled_states", "one_line"]

SACCT_TIMEOUT_S = 60  # as the slurm plugin's own status query
SLURM_PLUGIN_MAX_INTERVAL_S = 180  # the slurm plugin's own cap on the wait between polls
SBATCH_CALL_MARK = "sbatch call:"  # where the slurm plugin's refusal message goes on with the call and script


@dataclass
class ExecutorSettings(SlurmSettings):
    """The slurm plugin's settings, and the cap on its wait between status polls."""

    status_interval_max: int = field(
        default=SLURM_PLUGIN_MAX_INTERVAL_S,
        metadata={
            "help": "Longest wait in seconds between two status polls (sacct); the slurm plugin waits 10 s longer "
            f"after each poll that finds nothing finished, up to {SLURM_PLUGIN_MAX_INTERVAL_S} s",
        },
    )


def cancelled_states(sacct_output: str) -> dict[str, str]:
    """Job id -> state of the cancelled jobs in `sacct --parsable2 --noheader --format=JobID,State` output.

    An array task's id is `<jobid>_<task>`; a range of tasks sacct has not split yet (pending when
    cancelled) is `<jobid>_[1-3,5%2]` and is expanded, so every task in it is found by its own id.
    """
    found = {}
    for line in sacct_output.splitlines():
        job_id, _, state = line.partition("|")
        if state.split(" ")[0] != "CANCELLED":  # "CANCELLED", "CANCELLED by 1000"
            continue
        for one in _expand_array_range(job_id.strip()):
            found[one] = state.strip()
    return found


def _expand_array_range(job_id: str) -> list[str]:
    """`123_[1-3,5%2]` -> 123_1, 123_2, 123_3, 123_5; any other id as it is."""
    parent, sep, tasks = job_id.partition("_[")
    if not sep or not tasks.endswith("]"):
        return [job_id]
    ids = []
    for part in tasks[:-1].split("%")[0].split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return [job_id]
        ids += [f"{parent}_{i}" for i in range(int(first), int(last or first) + 1)]
    return ids


def one_line(msg: str | None) -> str | None:
    """A job error message as one line: the part before the sbatch call the slurm plugin appends, whitespace folded."""
    if msg is None:
        return None
    return fold(msg.split(SBATCH_CALL_MARK)[0])


class Executor(SlurmExecutor):
    """The slurm plugin's executor; check_active_jobs first fails the jobs Slurm has cancelled."""

    def setting(self, name: str, default: object) -> object:
        """An optional setting of this plugin, `default` when the settings object lacks it (the slurm plugin's own)."""
        value = getattr(self.workflow.executor_settings, name, None)
        return default if value is None else value

    def report_job_error(self, job_info: SubmittedJobInfo, msg: str | None = None, **kwargs: object) -> None:
        """Report a failed or refused job with a one-line message."""
        if msg and SBATCH_CALL_MARK in msg:
            self.logger.debug(msg)  # the sbatch call and script, for --verbose
        msg = one_line(msg)
        # Snakemake appends its own sentence ('For further error details ...') right after the message
        super().report_job_error(job_info, msg=f"{msg} " if msg else msg, **kwargs)

    def print_job_error(self, job_info: SubmittedJobInfo, msg: str | None = None, **kwargs: object) -> None:
        """A group job's error as one line (a refused one: only that line; nothing ran, there is no log to show)."""
        job = job_info.job
        if not job.is_group():
            super().print_job_error(job_info, msg=msg, **kwargs)
            return
        self.logger.error(group_error_line(job, msg))
        if job_info.external_jobid is not None:  # it ran: Snakemake's group error lists (and shows) its logs
            super().print_job_error(job_info, msg=msg, **kwargs)

    async def _sacct_cancelled(self, job_ids: list[str]) -> dict[str, str]:
        """The cancelled jobs among `job_ids` (none when sacct cannot answer: the slurm plugin's poll follows)."""
        parents = sorted({job_id.split("_")[0] for job_id in job_ids})  # an array's tasks are listed under its id
        cmd = ["sacct", "-X", "--parsable2", "--noheader", "--clusters", "all", "--format=JobID,State", "--jobs", ",".join(parents)]
        # Only this run's jobs (each is named after the run, as the slurm plugin's own poll asks): a job id
        # may be reused across clusters or a reset accounting database, and must not fail a job of this run.
        cmd += ["--name", self.run_uuid] if getattr(self, "run_uuid", None) else []
        try:
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), timeout=SACCT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            self.logger.debug(f"cosmicai-slurm: sacct for cancelled jobs failed: {exc}")
            return {}
        if proc.returncode != 0:
            self.logger.debug(f"cosmicai-slurm: sacct for cancelled jobs failed: {err.decode(errors='replace').strip()}")
            return {}
        return cancelled_states(out.decode(errors="replace"))

    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        ids = [j.external_jobid for j in active_jobs if j.external_jobid]
        cancelled = {}
        if ids:
            async with self.status_rate_limiter:
                cancelled = await self._sacct_cancelled(ids)
        running = []
        for j in active_jobs:
            state = cancelled.get(j.external_jobid)
            if state is None:
                running.append(j)
                continue
            log = j.aux.get("slurm_logfile")
            self.report_job_error(
                j,
                msg=f"SLURM job '{j.external_jobid}' was cancelled, SLURM status is: '{state}'.",
                aux_logs=[str(log)] if log is not None else [],
            )
        async for j in super().check_active_jobs(running):
            yield j
        cap = max(1, int(self.setting("status_interval_max", SLURM_PLUGIN_MAX_INTERVAL_S)))
        self.next_seconds_between_status_checks = min(self.next_seconds_between_status_checks, cap)
