"""Cost summaries: one format for every backend, each backend filling its own usage lines."""

from __future__ import annotations

from collections.abc import Callable

from cosmicai.accounting.lambda_cost import lambda_invocations, lambda_usage, paper_reference
from cosmicai.accounting.pricing import hour_lines
from cosmicai.accounting.slurm import slurm_jobs, slurm_usage

CostFn = Callable[[list[dict], dict], list[dict]]


def local_usage(runs: list[dict], rates: dict) -> list[dict]:
    """CPU-hours (job seconds x threads) and GPU-hours (job seconds on CUDA) priced at configured rates."""
    cpu_hours = sum(r["total_s"] * r.get("threads", 1) for r in runs if not str(r["device"]).startswith("cuda")) / 3600
    gpu_hours = sum(r["total_s"] for r in runs if str(r["device"]).startswith("cuda")) / 3600
    return hour_lines(cpu_hours, gpu_hours, rates)


USAGE: dict[str, CostFn] = {"local": local_usage, "slurm": slurm_usage, "lambda": lambda_usage}
# Backends whose scheduler accounts for each job: a per-job table (usage, price, timings) in the summary.
JOBS: dict[str, CostFn] = {"slurm": slurm_jobs, "lambda": lambda_invocations}


def detect_backend(runs: list[dict]) -> str:
    """Where the jobs ran, read from their sidecars: Lambda jobs carry a `lambda` record, Slurm jobs a job id, others ran locally."""
    if runs and all("lambda" in r for r in runs):
        return "lambda"
    if runs and all(r.get("slurm_job_id") for r in runs):
        return "slurm"
    return "local"


def cost_summary(runs: list[dict], backend: str, rates: dict, summary: dict) -> dict:
    """Priced usage lines and total for a run, beside its wall time and throughput."""
    lines = USAGE[backend](runs, rates)
    jobs = {"jobs": JOBS[backend](runs, rates)} if backend in JOBS else {}
    return {
        "backend": backend,
        "currency": "USD",
        "rates": rates,
        "lines": lines,
        "total_usd": sum(line["cost_usd"] for line in lines),
        "wall_s": summary["wall_s"],
        "rows": summary["rows"],
        "usd_per_million_rows": 1e6 * sum(line["cost_usd"] for line in lines) / summary["rows"] if summary["rows"] else 0.0,
        **jobs,
        **({"paper": paper_reference(runs, sum(line["cost_usd"] for line in lines))} if backend == "lambda" else {}),
    }
