"""`cosmicai plan`: partitions, jobs, wall time and cost of an experiment on each backend, before running it.

The model: a dataset of `data_bytes` (model-ready rows of ROW_BYTES) is cut into
ceil(bytes / partition_mb MiB) partitions, one inference job each. A job takes
fixed_s + rows / samples_per_s (+ overhead_s unbilled between jobs), with the speeds from a
calibration (cosmicai.planning.calibration). Jobs run `concurrency` at a time on slots that become free as
jobs end; Lambda environments are reused (warm) after their first, cold, invocation and become
available at 1,000 per 10 s. Wall time is the inference stage, first job start to last job end, as
in run_summary.json; cost prices the usage lines cost_summary.json reports, at the config's rates.
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Literal

from cosmicai.accounting.lambda_cost import DEFAULT_PRICES
from cosmicai.aws.settings import FREE_EPHEMERAL_MB
from cosmicai.planning.calibration import BACKENDS, LAMBDA_MB_PER_VCPU, Backend, Calibration
from cosmicai.data.dataset import ROW_BYTES
from cosmicai.errors import CosmicaiError
from cosmicai.data.partition import MIB, partitions_for_bytes

Format = Literal["table", "csv", "json"]
# Lambda's documented limits (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
LAMBDA_MEMORY_MB = (128, 10240)
LAMBDA_MAX_TIMEOUT_S = 900
LAMBDA_ACCOUNT_CONCURRENCY = 1000
LAMBDA_SCALING = (1000, 10.0)  # new execution environments per function, per seconds
MODEL_MB = 64  # AstroMAE's 15.8M fp32 parameters, staged in /tmp beside the partition
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> float:
    """Bytes in '12.6GB', '1TB', '500MiB', '1e9' (binary units, as the paper and partition_mb count: 1 GB = 2**30 B)."""
    m = _SIZE.match(text)
    if not m:
        try:
            return float(text)
        except ValueError:
            raise CosmicaiError("--data-size", f"not a size: {text!r} (examples: 12.6GB, 1TB, 500MB)") from None
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def human_size(nbytes: float) -> str:
    """'12.6 GiB' style."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def human_time(seconds: float) -> str:
    """'28 s', '3 min 12 s', '2 h 05 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the user decides: data, partitioning and each backend's resources and prices."""

    backend: Backend
    data_bytes: float
    partition_mb: float
    threads: int = 2  # per inference job (inference.threads; Slurm cpus_per_task)
    cores: int = os.cpu_count() or 1  # local: cores of this machine
    memory_mb: int = 2048  # Lambda function memory
    concurrency: int | None = None  # most jobs at once (Lambda: default the account's 1,000; others: their slots)
    nodes: int = 1  # Slurm CPU nodes available
    cores_per_node: int = 64
    gpus: int = 1  # Slurm GPUs available (one per job)
    queue_wait_s: float = 0.0  # Slurm: wait before the first job starts
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    timeout_s: int = LAMBDA_MAX_TIMEOUT_S  # the function's configured timeout
    ephemeral_storage_mb: int = FREE_EPHEMERAL_MB
    data_in_s3: bool = False  # Lambda: partitions already staged (the invoker skips the upload)
    cluster: str = "given"  # where the Slurm nodes, cores and GPUs come from
    cpu_hour_usd: float = 0.0
    gpu_hour_usd: float = 0.0
    lambda_prices: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_PRICES))

    @property
    def rows(self) -> int:
        """Model-ready rows in data_bytes."""
        return max(1, round(self.data_bytes / ROW_BYTES))


def settings_from_config(config: dict, backend: Backend, data_bytes: float, **override: Any) -> Settings:
    """Settings with the workflow config's partition size, threads, Lambda block and prices; `override` wins."""
    lam = config.get("lambda", {})
    cost = config.get("cost", {})
    base: dict[str, Any] = dict(
        backend=backend, data_bytes=data_bytes, partition_mb=config.get("partition_mb", 100),
        threads=config.get("inference", {}).get("threads", 2),
        memory_mb=lam.get("memory_mb", 2048), architecture=lam.get("architecture", "x86_64"),
        timeout_s=lam.get("timeout_s", LAMBDA_MAX_TIMEOUT_S), ephemeral_storage_mb=lam.get("ephemeral_storage_mb", FREE_EPHEMERAL_MB),
        cpu_hour_usd=cost.get("cpu_hour_usd", 0.0), gpu_hour_usd=cost.get("gpu_hour_usd", 0.0),
        lambda_prices={**DEFAULT_PRICES, **lam.get("prices", {})},
    )
    base.update({k: v for k, v in override.items() if v is not None})
    return Settings(**base)


@dataclasses.dataclass
class Plan:
    """The estimate for one backend, and everything it assumed."""

    backend: str
    rows: int
    data_bytes: float
    partition_mb: float
    partitions: int
    rows_per_partition: int
    concurrency: int
    waves: int
    cold_jobs: int
    job_s: float  # one job's slot time, first (cold) job
    warm_job_s: float  # later jobs on a reused Lambda environment (= job_s elsewhere)
    wall_s: float
    lines: list[dict]  # usage priced, as in cost_summary.json
    cost_usd: float
    flags: list[str]
    assumptions: list[str]
    calibration: dict

    def usage(self) -> str:
        """The main usage figure in words."""
        q = {line["resource"]: line["quantity"] for line in self.lines}
        if self.backend == "lambda":
            gb_s = sum(v for k, v in q.items() if k.startswith("lambda_") and k.endswith("_gb_s") and "ephemeral" not in k)
            return f"{gb_s:,.0f} GB-s, {self.partitions:,} requests"
        gpu = f"{q['gpu_hours']:.3g} GPU-h + " if q.get("gpu_hours") else ""
        return f"{gpu}{q.get('cpu_hours', 0.0):.3g} CPU-h"

    def row(self) -> dict:
        """One flat record (for CSV/JSON and the comparison table)."""
        return {
            "backend": self.backend, "data_bytes": self.data_bytes, "rows": self.rows, "partition_mb": self.partition_mb,
            "partitions": self.partitions, "jobs": self.partitions, "rows_per_partition": self.rows_per_partition,
            "concurrency": self.concurrency, "waves": self.waves, "cold_jobs": self.cold_jobs, "job_s": self.job_s,
            "warm_job_s": self.warm_job_s, "wall_s": self.wall_s, "usage": self.usage(), "cost_usd": self.cost_usd,
            "flags": "; ".join(self.flags), "calibration": self.calibration["label"],
        }


def _line(resource: str, quantity: float, unit: str, rate: float) -> dict:
    return {"resource": resource, "quantity": quantity, "unit": unit, "rate_usd": rate, "cost_usd": quantity * rate}


def makespan(n_jobs: int, slots: int, ready_at: Callable[[int], float], cold_s: float, warm_s: float) -> tuple[float, int]:
    """Wall time of n_jobs on `slots` slots (slot k free from ready_at(k)), each job on the earliest free slot:
    a slot's first job takes cold_s, later ones warm_s. Returns (wall time, cold jobs)."""
    used = min(slots, n_jobs)
    if warm_s <= cold_s and ready_at(0) == ready_at(used - 1):  # slots all ready at once: jobs go round-robin
        return ready_at(0) + cold_s + (math.ceil(n_jobs / used) - 1) * warm_s, used
    heap = [(ready_at(k), True) for k in range(used)]
    heapq.heapify(heap)
    end, cold = 0.0, 0
    for _ in range(n_jobs):
        t, fresh = heapq.heappop(heap)
        t += cold_s if fresh else warm_s
        cold += fresh
        end = max(end, t)
        heapq.heappush(heap, (t, False))
    return end, cold


def _lambda_plan(s: Settings, cal: Calibration, p: int, rows_pp: int, part_mb: float, label: dict) -> Plan:
    lo, hi = LAMBDA_MEMORY_MB
    if not lo <= s.memory_mb <= hi:
        raise CosmicaiError("--memory-mb", f"Lambda memory must be {lo}-{hi} MB, got {s.memory_mb}")
    conc = s.concurrency or LAMBDA_ACCOUNT_CONCURRENCY
    vcpus = s.memory_mb / LAMBDA_MB_PER_VCPU
    rate = cal.per_thread() * vcpus
    transfer = part_mb / cal.transfer_mb_per_s if cal.transfer_mb_per_s else 0.0
    warm_run = cal.fixed_s + transfer + rows_pp / rate  # billed, in the function
    cold_run = warm_run + cal.cold_s  # Init Duration is billed too (AWS, since August 2025)
    at_once = min(conc, p)
    staging = 0.0 if s.data_in_s3 or not cal.staging_mb_per_s else part_mb / (cal.staging_mb_per_s / at_once)
    per, every = LAMBDA_SCALING
    wall, cold = makespan(p, conc, lambda k: every * (k // per), staging + cal.overhead_s + cold_run, staging + cal.overhead_s + warm_run)
    billed_s = cold * math.ceil(cold_run * 1000) / 1000 + (p - cold) * math.ceil(warm_run * 1000) / 1000
    gb = s.memory_mb / 1024
    prices = s.lambda_prices
    lines = [
        _line(f"lambda_{s.architecture}_gb_s", billed_s * gb, "GB-s", float(prices[f"{s.architecture}_gb_s"])),
        _line("lambda_requests", p, "requests", float(prices["requests_per_million"]) / 1e6),
        _line("lambda_ephemeral_gb_s", billed_s * max(0, s.ephemeral_storage_mb - FREE_EPHEMERAL_MB) / 1024, "GB-s", float(prices["ephemeral_gb_s"])),
    ]
    flags = []
    limit = min(s.timeout_s, LAMBDA_MAX_TIMEOUT_S)
    if cold_run > limit:
        fit = (limit - cal.fixed_s - cal.cold_s) / ((1 / cal.transfer_mb_per_s if cal.transfer_mb_per_s else 0) + MIB / (ROW_BYTES * rate))
        which = "Lambda's 15-minute limit" if limit == LAMBDA_MAX_TIMEOUT_S else f"the function timeout ({s.timeout_s} s)"
        flags.append(f"TIMEOUT: an invocation takes ~{human_time(cold_run)}, over {which}; "
                     + (f"use partitions of at most {fit:.0f} MB or more memory" if fit > 0 else "more memory"))
    if cal.max_memory_mb and s.memory_mb < 1.1 * cal.max_memory_mb:
        flags.append(f"MEMORY: {s.memory_mb} MB is under 1.1 x the {cal.max_memory_mb:.0f} MB used when calibrated")
    if part_mb + MODEL_MB > s.ephemeral_storage_mb:
        flags.append(f"/TMP: a {part_mb:.0f} MB partition and the {MODEL_MB} MB model exceed {s.ephemeral_storage_mb} MB of /tmp")
    if conc > LAMBDA_ACCOUNT_CONCURRENCY:
        flags.append(f"CONCURRENCY: {conc:,} needs a raised account limit (default {LAMBDA_ACCOUNT_CONCURRENCY:,} per region)")
    assumptions = [
        f"Lambda {s.memory_mb} MB {s.architecture}: {vcpus:.2f} vCPU (1 per {LAMBDA_MB_PER_VCPU} MB), "
        f"{rate:,.0f} samples/s per invocation ({cal.per_thread():,.0f} per vCPU, {cal.runtime or 'default runtime'})",
        f"concurrency {conc:,}; new environments {per:,} per {every:.0f} s; cold start {cal.cold_s:.1f} s "
        f"(Init Duration + model load, billed), then warm; {cal.fixed_s:.2f} s per invocation besides inference and transfer",
        f"S3 to function {cal.transfer_mb_per_s:,.0f} MB/s ({transfer:.1f} s per partition); "
        + ("partitions already in S3" if s.data_in_s3 else f"upload from this host {cal.staging_mb_per_s:,.0f} MB/s shared by the jobs at once"),
        f"invoker round trip {cal.overhead_s:.2f} s per partition (unbilled); prices of {prices.get('date', '?')}: "
        f"${float(prices[f'{s.architecture}_gb_s']):.10f}/GB-s, ${float(prices['requests_per_million']):.2f}/M requests",
    ]
    return Plan("lambda", s.rows, s.data_bytes, s.partition_mb, p, rows_pp, min(conc, p), math.ceil(p / conc), cold,
                staging + cal.overhead_s + cold_run, staging + cal.overhead_s + warm_run, wall, lines,
                sum(line["cost_usd"] for line in lines), flags, assumptions, label)


def _cluster_plan(s: Settings, cal: Calibration, p: int, rows_pp: int, label: dict) -> Plan:
    gpu = s.backend == "slurm-gpu"
    if gpu:
        slots, rate = s.gpus, cal.samples_per_s
        where = f"{s.gpus} GPU(s) ({s.cluster}), one per job"
    elif s.backend == "slurm":
        slots, rate = s.nodes * max(1, s.cores_per_node // s.threads), cal.per_thread() * s.threads
        where = f"{s.nodes} node(s) x {s.cores_per_node} cores ({s.cluster}), {s.threads} cores per job: {slots} jobs at once"
    else:
        slots, rate = max(1, s.cores // s.threads), cal.per_thread() * s.threads
        where = f"this machine's {s.cores} cores, {s.threads} threads per job: {slots} job(s) at once"
    conc = min(slots, s.concurrency) if s.concurrency else slots
    billed = cal.fixed_s + rows_pp / rate
    slot_s = cal.overhead_s + billed
    wait = s.queue_wait_s if s.backend != "local" else 0.0
    wall, _ = makespan(p, conc, lambda k: wait, slot_s, slot_s)
    # Slurm accounts a job's whole elapsed time (start on the node, imports, ...); the local summary its sidecar's.
    job_s = billed if s.backend == "local" else slot_s
    lines = [_line("cpu_hours", p * job_s * s.threads / 3600, "CPU-h", s.cpu_hour_usd)]
    if gpu:
        lines.append(_line("gpu_hours", p * job_s / 3600, "GPU-h", s.gpu_hour_usd))
    assumptions = [
        f"{where}; {rate:,.0f} samples/s per job ({cal.runtime or 'default runtime'})",
        f"per job {cal.fixed_s:.1f} s besides inference (model load, I/O) and {cal.overhead_s:.1f} s between jobs "
        f"(process start{', submission, status polling' if s.backend != 'local' else ''})",
        f"rates: ${s.cpu_hour_usd}/CPU-h" + (f", ${s.gpu_hour_usd}/GPU-h" if gpu else "")
        + (" (config cost.*: set them to price the run)" if not (s.cpu_hour_usd or (gpu and s.gpu_hour_usd)) else ""),
    ]
    if s.backend != "local":
        assumptions.append(f"queue wait {human_time(s.queue_wait_s)} before the first job")
    return Plan(s.backend, s.rows, s.data_bytes, s.partition_mb, p, rows_pp, min(conc, p), math.ceil(p / conc), p,
                slot_s, slot_s, wall, lines, sum(line["cost_usd"] for line in lines), [], assumptions, label)


def estimate(s: Settings, calibrations: dict[str, Calibration]) -> Plan:
    """Partitions, jobs, wall time and cost of running `s` on its backend."""
    if s.backend not in BACKENDS:
        raise CosmicaiError("--backend", f"unknown backend {s.backend!r} (one of {', '.join(BACKENDS)})")
    cal = calibrations[s.backend]
    p = partitions_for_bytes(s.data_bytes, s.partition_mb)
    rows_pp = -(-s.rows // p)
    part_mb = rows_pp * ROW_BYTES / MIB
    label = {"label": cal.label(), "measured": cal.measured, "measured_at": cal.measured_at, "source": cal.source, "file": cal.file}
    plan = _lambda_plan(s, cal, p, rows_pp, part_mb, label) if s.backend == "lambda" else _cluster_plan(s, cal, p, rows_pp, label)
    plan.assumptions = [
        f"{human_size(s.data_bytes)} = {s.rows:,} rows of {ROW_BYTES:,} B (binary units: 1 GB = 2^30 B); "
        f"{p:,} partitions of {part_mb:.1f} MiB ({rows_pp:,} rows)",
        *plan.assumptions,
        "wall time: the inference stage, first job start to last job end (run_summary.json's wall_s)",
        f"calibration ({s.backend}): {cal.label()}",
    ]
    return plan


def compare(s: Settings, calibrations: dict[str, Calibration]) -> list[Plan]:
    """The same data and partitioning on every backend."""
    return [estimate(dataclasses.replace(s, backend=b), calibrations) for b in BACKENDS]


def format_plans(plans: list[Plan], fmt: Format = "table") -> str:
    """The plans as an aligned table with assumptions, CSV, or JSON."""
    if fmt == "json":
        return json.dumps([{**p.row(), "lines": p.lines, "assumptions": p.assumptions, "calibration": p.calibration} for p in plans], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(plans[0].row()))
        writer.writeheader()
        writer.writerows(p.row() for p in plans)
        return out.getvalue().rstrip("\n")
    first = plans[0]
    header = (f"{human_size(first.data_bytes)} ({first.rows:,} rows) in partitions of {first.partition_mb:g} MiB: "
              f"{first.partitions:,} partitions of {first.rows_per_partition:,} rows")
    cols = ["backend", "jobs", "at once", "waves", "job time", "wall time", "usage", "cost (USD)", "calibration", "flags"]
    table = [[p.backend, f"{p.partitions:,}", f"{p.concurrency:,}", f"{p.waves:,}", human_time(p.job_s), human_time(p.wall_s),
              p.usage(), f"{p.cost_usd:.4f}", "measured " + p.calibration["measured_at"] if p.calibration["measured"] else "NOT measured",
              ",".join(f.split(":")[0] for f in p.flags) or "-"]
             for p in plans]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(cols)]
    right = {1, 2, 3, 4, 5, 7}
    fmt_row = lambda r: "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()  # noqa: E731
    lines = [header, fmt_row(cols), fmt_row(["-" * w for w in widths]), *map(fmt_row, table)]
    for p in plans:
        lines.append(f"\n{p.backend}:")
        lines += [f"  ! {f}" for f in p.flags]
        lines += [f"  - {a}" for a in p.assumptions[1:]]
    return "\n".join(lines)


def scaling(s: Settings, calibrations: dict[str, Calibration], backends: list[str], sizes: list[float]) -> dict[str, list[Plan]]:
    """Plans for each backend at each data size (bytes)."""
    return {b: [estimate(dataclasses.replace(s, backend=b, data_bytes=n), calibrations) for n in sizes] for b in backends}


def plot_scaling(s: Settings, calibrations: dict[str, Calibration], backends: list[str], output: str | os.PathLike,
                 actual: dict | None = None) -> None:
    """Estimated wall time and cost against data size (1 GB to 1 TB, and the planned size) per backend, as a PNG.

    `actual` ({"backend", "data_bytes", "wall_s", "cost_usd"}) marks a measured run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cosmicai.atomic import atomic_path

    low = min(2**30, s.data_bytes, actual["data_bytes"] if actual else 2**30)
    sizes = sorted(set(np.geomspace(low, 2**40, 25).tolist() + [s.data_bytes]))
    curves = scaling(s, calibrations, backends, sizes)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4.5))
    gib = np.array(sizes) / 2**30
    for b, plans in curves.items():
        (line,) = ax_t.plot(gib, [p.wall_s for p in plans], marker=".", label=b)
        cost = [p.cost_usd for p in plans]
        if any(cost):
            ax_c.plot(gib, cost, marker=".", color=line.get_color(), label=b)
        else:
            ax_c.plot([], [], color=line.get_color(), label=f"{b} (no rates in config)")
    if actual:
        x = actual["data_bytes"] / 2**30
        ax_t.scatter([x], [actual["wall_s"]], marker="*", s=160, color="k", zorder=5, label=f"this run ({actual['backend']})")
        if actual["cost_usd"] > 0:
            ax_c.scatter([x], [actual["cost_usd"]], marker="*", s=160, color="k", zorder=5, label=f"this run ({actual['backend']})")
    ax_t.set(xscale="log", yscale="log", xlabel="data size (GiB)", ylabel="estimated wall time (s)",
             title=f"wall time, {s.partition_mb:g} MiB partitions")
    ax_c.set(xscale="log", yscale="log", xlabel="data size (GiB)", ylabel="estimated cost (USD)", title="cost")
    for ax in (ax_t, ax_c):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"cosmicai plan: Lambda {s.memory_mb} MB, concurrency {s.concurrency or LAMBDA_ACCOUNT_CONCURRENCY}; "
                 f"Slurm {s.nodes}x{s.cores_per_node} cores, {s.gpus} GPU(s)", fontsize=9)
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plan_vs_actual(plan: Plan, summary: dict, cost: dict) -> dict:
    """The estimate beside the run's measured wall time, usage and cost, with actual / estimate ratios."""
    est = {line["resource"]: line["quantity"] for line in plan.lines}
    act = {line["resource"]: line["quantity"] for line in cost["lines"]}

    def row(name: str, unit: str, e: float, a: float) -> dict:
        return {"quantity": name, "unit": unit, "estimate": e, "actual": a, "ratio": a / e if e else None}

    rows = [row("wall_s", "s", plan.wall_s, summary["wall_s"]), row("partitions", "jobs", plan.partitions, summary["partitions"])]
    rows += [row(k, line["unit"], est[k], act[k]) for k in est for line in plan.lines if line["resource"] == k and k in act and (est[k] or act[k])]
    rows.append(row("cost_usd", "USD", plan.cost_usd, cost["total_usd"]))
    ratio = rows[0]["ratio"]
    return {
        "backend": plan.backend,
        "rows": rows,
        "time_ratio": ratio,
        "time_within_factor_2": ratio is not None and 0.5 <= ratio <= 2.0,
        "calibration": plan.calibration,
        "estimate": {**plan.row(), "lines": plan.lines, "assumptions": plan.assumptions},
        "note": "estimate made with the calibration as it was before this run; ratio = actual / estimate",
    }


def format_dry_run(plan: Plan, stats: dict[str, int], profile_backend: str) -> str:
    """The one block a dry-run prints: partitions, jobs per rule, the estimate and its calibration."""
    jobs = ", ".join(f"{rule} {n}" for rule, n in stats.items() if rule != "total")
    flags = "; ".join(plan.flags) or "none"
    return "\n".join([
        f"cosmicai plan for this run ({profile_backend}) " + "-" * 40,
        f"  data         {plan.rows:,} rows, {human_size(plan.data_bytes)}: {plan.partitions:,} partitions of "
        f"{plan.partition_mb:g} MiB ({plan.rows_per_partition:,} rows each)",
        f"  jobs to run  {jobs} (total {stats.get('total', 0)})",
        f"  estimate     inference wall time {human_time(plan.wall_s)} ({plan.partitions:,} jobs, {plan.concurrency:,} at once, "
        f"{plan.waves:,} wave(s)); cost ${plan.cost_usd:.4f} ({plan.usage()})",
        f"  flags        {flags}",
        f"  calibration  {plan.calibration['label']}",
        "  (cosmicai plan --compare ... for the other backends)",
    ])


def load_config(paths: list[str | os.PathLike] | None = None) -> dict:
    """The workflow config (later files override earlier ones key by key); default: ./config/config.yaml."""
    import yaml

    paths = paths or [Path("config", "config.yaml")]
    config: dict = {}
    for path in paths:
        try:
            new = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CosmicaiError(path, f"not a readable config file: {exc}") from None
        for key, value in new.items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def run_plan(a: Any) -> str:
    """`cosmicai plan` from its parsed arguments: the formatted plan(s); writes the plot if asked."""
    from cosmicai.planning import calibration

    run = json.loads(Path(a.run_summary).read_text()) if a.run_summary else None
    if a.data_size is None and a.rows is None and run is None:
        raise CosmicaiError("plan", "give --data-size or --rows (or --run-summary: that run's rows)")
    if not a.compare and not a.backend:
        raise CosmicaiError("plan", "give --backend (local, slurm, slurm-gpu, lambda) or --compare")
    rows = a.rows if a.rows is not None else (run["rows"] if run and a.data_size is None else None)
    data_bytes = parse_size(a.data_size) if a.data_size is not None else rows * ROW_BYTES
    config = load_config(a.configfile)
    s = settings_from_config(
        config, a.backend or "lambda", data_bytes, partition_mb=a.partition_mb, memory_mb=a.memory_mb, concurrency=a.concurrency,
        nodes=a.nodes, cores_per_node=a.cores_per_node, gpus=a.gpus, threads=a.threads, cores=a.cores, queue_wait_s=a.queue_wait_s,
        architecture=a.architecture, data_in_s3=a.data_in_s3 or None, cpu_hour_usd=a.cpu_hour_usd, gpu_hour_usd=a.gpu_hour_usd,
    )
    cals = calibration.load(a.calibration)
    plans = compare(s, cals) if a.compare else [estimate(s, cals)]
    if a.plot:
        actual = None
        if run and a.cost_summary:
            cost = json.loads(Path(a.cost_summary).read_text())
            actual = {"backend": run["backend"], "data_bytes": run["rows"] * ROW_BYTES, "wall_s": run["wall_s"], "cost_usd": cost["total_usd"]}
        plot_scaling(s, cals, list(BACKENDS) if a.compare else [s.backend], a.plot, actual)
    return format_plans(plans, a.format)


def sinfo_cluster(gpu: bool) -> tuple[int, int, int] | None:
    """(nodes, cores per node, GPUs) of the default Slurm partition, or of the first with GPUs; None without sinfo."""
    import subprocess

    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%D|%c|%G"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = []
    for line in out.splitlines():
        name, nodes, cpus, gres = (line.split("|") + ["", "", ""])[:4]
        per_node = sum(int(n) for n in re.findall(r"gpu(?::[\w.-]+)?:(\d+)", gres))
        if nodes.isdigit() and cpus.rstrip("+").isdigit():
            rows.append((name.endswith("*"), int(nodes), int(cpus.rstrip("+")), per_node * int(nodes)))
    pick = [r for r in rows if r[3]] if gpu else [r for r in rows if r[0]] or rows
    return (pick[0][1], pick[0][2], pick[0][3]) if pick else None


def workflow_settings(config: dict, backend: Backend, data_bytes: float, jobs: int | None, cores: int | None) -> Settings:
    """The plan settings of a workflow invocation: its config, and its profile's jobs and cores.

    Lambda runs min(account concurrency, jobs) at once; a local run fits cores // threads jobs at
    once; a cluster's nodes, cores and GPUs come from sinfo (without it: slots for the profile's
    jobs), with no queue wait.
    """
    cores = cores or os.cpu_count() or 1
    over: dict[str, Any] = {"cores": cores}
    if backend == "lambda":
        over["concurrency"] = min(LAMBDA_ACCOUNT_CONCURRENCY, jobs or cores)
    elif backend != "local":
        found = sinfo_cluster(backend == "slurm-gpu")
        if found:
            over.update(nodes=found[0], cores_per_node=found[1], gpus=found[2] or 1, concurrency=jobs, cluster="sinfo")
        else:
            over.update(nodes=jobs or 1, cores_per_node=config["inference"]["threads"], gpus=jobs or 1, cluster="the profile's jobs")
    return settings_from_config(config, backend, data_bytes, **over)


def run_estimate(context: dict, runs: list[dict], cost_backend: str, summary: dict, cost: dict) -> dict:
    """Plan-vs-actual for a finished run: the estimate for its rows and settings (`context`: the config's
    partition_mb, inference, lambda and cost blocks, and the profile's jobs and cores) beside the actuals."""
    from cosmicai.planning import calibration

    backend = calibration.plan_backend(runs, cost_backend)
    if backend == "local-gpu":  # planned as one GPU job slot at a time: slurm-gpu's model with one GPU
        s = workflow_settings(context["config"], "slurm-gpu", summary["rows"] * ROW_BYTES, 1, context.get("cores"))
    else:
        s = workflow_settings(context["config"], backend, summary["rows"] * ROW_BYTES, context.get("jobs"), context.get("cores"))
    return plan_vs_actual(estimate(s, calibration.load(context.get("calibration"))), summary, cost)
