"""Usage and cost of Slurm jobs from Slurm's own accounting (`sacct`)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cosmicai.accounting.pricing import cost_line, hour_lines
from cosmicai.errors import CosmicaiError

# Comment goes last: it is free text and may contain the '|' delimiter.
SACCT_FIELDS: tuple[str, ...] = (
    "JobIDRaw",
    "JobName",
    "Partition",
    "State",
    "ExitCode",
    "Start",
    "End",
    "Elapsed",
    "ElapsedRaw",
    "AllocCPUS",
    "ReqTRES",
    "AllocTRES",
    "MaxRSS",
    "NodeList",
    "Comment",
)

# sacct prints sizes in bytes scaled by powers of 1024 with a suffix; no suffix = bytes.
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)\s*$", re.IGNORECASE)


def sacct_command(
    job_ids: Iterable[str | int] | None = None,
    name: str | None = None,
    starttime: str = "1970-01-01",
    sacct: str = "sacct",
) -> list[str]:
    """Build the sacct command line (all steps, parsable, no header)."""
    cmd = [
        sacct,
        "--parsable2",
        "--noheader",
        f"--format={','.join(SACCT_FIELDS)}",
        # Without --starttime, sacct only shows jobs since midnight when filtering by name.
        f"--starttime={starttime}",
    ]
    if job_ids is not None:
        ids = [str(j) for j in job_ids]
        if not ids:
            raise ValueError("job_ids is empty")
        cmd.append(f"--jobs={','.join(ids)}")
    if name is not None:
        cmd.append(f"--name={name}")
    return cmd


def parse_sacct(text: str, fields: Sequence[str] = SACCT_FIELDS) -> list[dict[str, str]]:
    """Parse `sacct --parsable2 --noheader` output into one dict per line (job or step)."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(fields) - 1)
        parts += [""] * (len(fields) - len(parts))
        rows.append(dict(zip(fields, parts)))
    return rows


def parse_size_bytes(value: str) -> int | None:
    """Convert a sacct size such as '3304K' or '1.5G' to bytes; None if empty."""
    m = _SIZE_RE.match(value or "")
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_tres(value: str) -> dict[str, str]:
    """Parse a TRES string such as 'cpu=2,gres/gpu=1,mem=500M' into a dict."""
    out = {}
    for item in (value or "").split(","):
        key, sep, val = item.partition("=")
        if sep:
            out[key.strip()] = val.strip()
    return out


def gpus_from_tres(tres: Mapping[str, str]) -> int:
    """Number of GPUs in a parsed TRES dict ('gres/gpu', else the sum of typed 'gres/gpu:model')."""
    if "gres/gpu" in tres:
        return int(float(tres["gres/gpu"]))
    return sum(int(float(v)) for k, v in tres.items() if k.startswith("gres/gpu:"))


def rule_from_comment(comment: str) -> str | None:
    """Rule name from snakemake's slurm job comment ('rule_<name>[_wildcards_<...>]')."""
    if not comment.startswith("rule_"):
        return None
    return comment[len("rule_") :].split("_wildcards_", 1)[0] or None


def _to_int(value: str) -> int:
    """Integer from a sacct field, 0 when empty or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def aggregate_jobs(rows: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Fold step rows (.batch, .extern, .0, ...) into their job; MaxRSS is the max over steps."""
    jobs: dict[str, dict[str, Any]] = {}
    max_rss: dict[str, int] = {}
    order: list[str] = []
    for row in rows:
        raw_id = row.get("JobIDRaw", "")
        if not raw_id:
            continue
        job_id, _, step = raw_id.partition(".")
        rss = parse_size_bytes(row.get("MaxRSS", ""))
        if rss is not None:
            max_rss[job_id] = max(max_rss.get(job_id, 0), rss)
        if step:
            continue
        if job_id not in jobs:
            order.append(job_id)
        alloc_tres = parse_tres(row.get("AllocTRES", ""))
        mem = parse_size_bytes(alloc_tres.get("mem", ""))
        state = row.get("State", "")
        comment = row.get("Comment", "")
        jobs[job_id] = {
            "job_id": job_id,
            "name": row.get("JobName", ""),
            "rule": rule_from_comment(comment),
            "comment": comment,
            "partition": row.get("Partition", ""),
            # 'CANCELLED by 0' -> 'CANCELLED'
            "state": state.split(" ", 1)[0],
            "exit_code": row.get("ExitCode", ""),
            "start": row.get("Start", ""),
            "end": row.get("End", ""),
            "node_list": row.get("NodeList", ""),
            "elapsed_s": _to_int(row.get("ElapsedRaw", "")),
            "alloc_cpus": _to_int(row.get("AllocCPUS", "")),
            "alloc_gpus": gpus_from_tres(alloc_tres),
            "alloc_mem_mb": mem / 1024**2 if mem is not None else None,
            "alloc_tres": row.get("AllocTRES", ""),
            "req_tres": row.get("ReqTRES", ""),
        }
    for job_id, job in jobs.items():
        rss = max_rss.get(job_id)
        job["max_rss_mb"] = rss / 1024**2 if rss is not None else None
    return [jobs[j] for j in order]


def query_jobs(
    job_ids: Iterable[str | int] | None = None,
    name: str | None = None,
    starttime: str = "1970-01-01",
    sacct: str = "sacct",
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """Run sacct for the given job ids and/or job name and return one aggregated dict per job."""
    cmd = sacct_command(job_ids=job_ids, name=name, starttime=starttime, sacct=sacct)
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
    return aggregate_jobs(parse_sacct(proc.stdout))


def cost_from_jobs(jobs: Iterable[Mapping[str, Any]], cpu_hour_rate: float, gpu_hour_rate: float) -> dict[str, Any]:
    """Per-job and total CPU-hours, GPU-hours, max RSS, elapsed and cost (cpu_h*cpu_rate + gpu_h*gpu_rate)."""
    per_job = []
    for job in jobs:
        elapsed = int(job.get("elapsed_s") or 0)
        cpu_h = elapsed * int(job.get("alloc_cpus") or 0) / 3600
        gpu_h = elapsed * int(job.get("alloc_gpus") or 0) / 3600
        per_job.append(
            {
                "job_id": job.get("job_id"),
                "rule": job.get("rule"),
                "state": job.get("state"),
                "elapsed_s": elapsed,
                "alloc_cpus": job.get("alloc_cpus"),
                "alloc_gpus": job.get("alloc_gpus"),
                "cpu_hours": cpu_h,
                "gpu_hours": gpu_h,
                "max_rss_mb": job.get("max_rss_mb"),
                "cost": cpu_h * cpu_hour_rate + gpu_h * gpu_hour_rate,
            }
        )
    rss = [j["max_rss_mb"] for j in per_job if j["max_rss_mb"] is not None]
    total = {
        "n_jobs": len(per_job),
        "elapsed_s": sum(j["elapsed_s"] for j in per_job),
        "cpu_hours": sum(j["cpu_hours"] for j in per_job),
        "gpu_hours": sum(j["gpu_hours"] for j in per_job),
        "max_rss_mb": max(rss) if rss else None,
        "cost": sum(j["cost"] for j in per_job),
    }
    return {
        "rates": {"cpu_hour": cpu_hour_rate, "gpu_hour": gpu_hour_rate},
        "jobs": per_job,
        "total": total,
    }


# sacct's records of job ids (query_jobs; tests pass a fake).
Query = Callable[[Sequence[str]], list[dict[str, Any]]]

# States after which sacct's record of a job no longer changes (sacct's State column, first word).
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)


def _settled(job: Mapping[str, Any]) -> bool:
    """A job whose record is complete: final state, and for a finished job its steps' MaxRSS."""
    return job["state"] in FINAL_STATES and (job["state"] != "COMPLETED" or job["max_rss_mb"] is not None)


def accounted_jobs(job_ids: Sequence[str], query: Query | None = None, waits: int = 10, delay_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """sacct's record of each job id, waiting a bounded time for slurmdbd to settle them (steps arrive late)."""
    query = query or query_jobs
    for attempt in range(waits + 1):
        try:
            jobs = {j["job_id"]: j for j in query(job_ids)}
        except FileNotFoundError:
            raise CosmicaiError("sacct", "not found: Slurm jobs are priced from Slurm's accounting") from None
        except subprocess.CalledProcessError as exc:
            raise CosmicaiError("sacct", f"exit status {exc.returncode}: {(exc.stderr or '').strip()}") from None
        if all(j in jobs and _settled(jobs[j]) for j in job_ids) or attempt == waits:
            break
        time.sleep(delay_s)
    missing = [j for j in job_ids if j not in jobs]
    if missing:
        raise CosmicaiError("sacct", f"no accounting record for job(s) {', '.join(missing)}")
    return jobs


def slurm_jobs(runs: list[dict], rates: dict, query: Query | None = None) -> list[dict[str, Any]]:
    """One row per Slurm job that produced a partition: sacct's usage, priced, beside the sidecar's timings."""
    by_job: dict[str, list[dict]] = {}
    for run in runs:
        by_job.setdefault(str(run["slurm_job_id"]), []).append(run)
    accounted = accounted_jobs(list(by_job), query)
    priced = cost_from_jobs([accounted[j] for j in by_job], float(rates.get("cpu_hour_usd", 0.0)), float(rates.get("gpu_hour_usd", 0.0)))[
        "jobs"
    ]
    rows = []
    for usage, (job_id, job_runs) in zip(priced, by_job.items()):
        job = accounted[job_id]
        rows.append(
            {
                "job_id": job_id,
                "partitions": [r["partition"] for r in job_runs],
                "rows": sum(r["rows"] for r in job_runs),
                "total_s": sum(r["total_s"] for r in job_runs),
                "compute_s": sum(r["compute_s"] for r in job_runs),
                "device": job_runs[0]["device"],
                "state": job["state"],
                "slurm_partition": job["partition"],
                "node": job["node_list"],
                "elapsed_s": usage["elapsed_s"],
                "alloc_cpus": usage["alloc_cpus"],
                "alloc_gpus": usage["alloc_gpus"],
                "alloc_mem_mb": job["alloc_mem_mb"],
                "max_rss_mb": usage["max_rss_mb"],
                "cpu_hours": usage["cpu_hours"],
                "gpu_hours": usage["gpu_hours"],
                "cost_usd": usage["cost"],
            }
        )
    return rows


def slurm_usage(runs: list[dict], rates: dict, query: Query | None = None) -> list[dict]:
    """CPU-hours (elapsed x AllocCPUS) and GPU-hours (elapsed x gres/gpu) from sacct, priced at the config rates.

    With `su_per_cpu_hour` / `su_per_gpu_hour` set, a service-unit line follows (unpriced: SUs are
    the allocation's currency, USD comes from the hour rates).
    """
    jobs = slurm_jobs(runs, rates, query)
    cpu_hours = sum(j["cpu_hours"] for j in jobs)
    gpu_hours = sum(j["gpu_hours"] for j in jobs)
    lines = hour_lines(cpu_hours, gpu_hours, rates)
    su_cpu, su_gpu = float(rates.get("su_per_cpu_hour", 0.0)), float(rates.get("su_per_gpu_hour", 0.0))
    if su_cpu or su_gpu:
        lines.append(cost_line("service_units", cpu_hours * su_cpu + gpu_hours * su_gpu, "SU", 0.0))
    return lines
