"""Snakemake executor plugin `cosmicai-slurm`: snakemake-executor-plugin-slurm's executor, with a job
cancelled in Slurm reported as failed. profiles/slurm and profiles/slurm-gpu select it.

The slurm plugin (2.8.0, the latest release, and its main branch as of 2026-11) polls
`sacct -X --parsable2 --format=JobIdRaw,State` and looks the state up in its list of failure states;
sacct reports a cancelled job as `CANCELLED by <uid>`, which is not in the list, so a job cancelled
with scancel (by the user, an administrator or a preemption policy) counts as still running and
Snakemake waits for it forever, even after Ctrl-C ("Will exit after finishing currently running jobs").
Before the slurm plugin's own poll, this plugin asks sacct for the active jobs' states and reports the
cancelled ones as failed: Snakemake's retries and --keep-going apply as to any failure, and a rerun
redoes what the job left unfinished.

The slurm plugin also waits 10 s longer after every poll that finds no job finished, up to 180 s, so a
job's end is seen up to minutes late (a 74 s inference job of the demo was seen 30 s after it ended).
`--cosmicai-slurm-status-interval-max` caps that wait (the profiles: 10 s; two sacct calls per poll for
all of the run's jobs). Everything else (submission, resources, the other states, the jobs' own
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

__all__ = ["Executor", "ExecutorSettings", "common_settings", "cancelled_states"]

SACCT_TIMEOUT_S = 60  # as the slurm plugin's own status query
SLURM_PLUGIN_MAX_INTERVAL_S = 180  # the slurm plugin's own cap on the wait between polls


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
    """Job id -> state of the cancelled jobs in `sacct --parsable2 --noheader --format=JobIdRaw,State` output."""
    found = {}
    for line in sacct_output.splitlines():
        job_id, _, state = line.partition("|")
        if state.split(" ")[0] == "CANCELLED":  # "CANCELLED", "CANCELLED by 1000"
            found[job_id.strip()] = state.strip()
    return found


class Executor(SlurmExecutor):
    """The slurm plugin's executor; check_active_jobs first fails the jobs Slurm has cancelled."""

    async def _sacct_cancelled(self, job_ids: list[str]) -> dict[str, str]:
        """The cancelled jobs among `job_ids` (none when sacct cannot answer: the slurm plugin's poll follows)."""
        cmd = ["sacct", "-X", "--parsable2", "--noheader", "--clusters", "all", "--format=JobIdRaw,State", "--jobs", ",".join(job_ids)]
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
                msg=f"SLURM job '{j.external_jobid}' was cancelled, SLURM status is: '{state}'. ",
                aux_logs=[str(log)] if log is not None else [],
            )
        async for j in super().check_active_jobs(running):
            yield j
        cap = max(1, self.workflow.executor_settings.status_interval_max)
        self.next_seconds_between_status_checks = min(self.next_seconds_between_status_checks, cap)
