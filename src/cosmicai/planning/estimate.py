"""The estimate: partitions, jobs, every term that bounds the wall time, usage and cost of one configuration.

A dataset of `data_bytes` (model-ready rows of ROW_BYTES) is cut into ceil(bytes / partition_mb MiB)
partitions. Cluster backends run one job per `partitions_per_job` consecutive partitions
(`auto`: as the workflow's DAG resolves it, cosmicai.job.per_job), paying the job's start-up
(fixed_s) once; Lambda invokes once per partition. Speeds come from a calibration of the same
backend and precision (cosmicai.planning.calibration).

The wall time is the critical path of these terms, each its own column:
  upload      a local dataset under Lambda goes up to S3 once, before the first invocation;
  queue wait  Slurm: before the first job starts;
  dispatch    the submitting host begins invocations at the calibration's dispatch_per_s (Lambda:
              measured by `make bench-lambda-scale`), so the last one begins invocations / rate in;
  cold starts a new Lambda environment's Init Duration and model load (billed), once per environment;
  compute     the jobs on `concurrency` slots, wave after wave (slots free as jobs end; Lambda
              environments reused warm, and available at 1,000 per 10 s);
  merge       the predictions merged into one file on the submitting host, at merge_rows_per_s.
wall = upload + queue wait + the inference stage + merge, where the stage is simulated with both the
dispatch rate and the slots (so it is at least the larger of dispatch and compute). Cost prices the
usage lines cost_summary.json reports, with cosmicai.accounting.pricing (the accounting's formulas).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
from collections.abc import Callable
from typing import Literal

from cosmicai.accounting.pricing import (
    billed_s,
    ephemeral_gb_seconds,
    gb_seconds,
    hour_lines,
    lambda_lines,
    lambda_prices,
    unpriced,
)
from cosmicai.aws.settings import FREE_EPHEMERAL_MB
from cosmicai.data.dataset import ROW_BYTES
from cosmicai.data.partition import MIB, partitions_for_bytes
from cosmicai.errors import CosmicaiError
from cosmicai.infer import BITS_PER_SAMPLE
from cosmicai.job import MAX_AUTO_JOBS, per_job
from cosmicai.planning.calibration import (
    BACKENDS,
    LAMBDA_MB_PER_VCPU,
    Backend,
    Calibration,
    pick,
)
from cosmicai.planning.units import human_size, human_time

# Lambda's documented limits (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
LAMBDA_MEMORY_MB = (128, 10240)
LAMBDA_MAX_TIMEOUT_S = 900
LAMBDA_ACCOUNT_CONCURRENCY = 1000
LAMBDA_SCALING = (1000, 10.0)  # new execution environments per function, per seconds
# Invocations in flight when neither the config (lambda.max_in_flight) nor the caller says: profiles/lambda's jobs.
LAMBDA_DEFAULT_IN_FLIGHT = 64
MODEL_MB = 64  # AstroMAE's 15.8M fp32 parameters, staged in /tmp
# Flags that make a configuration infeasible (the recommendation skips it); CONCURRENCY only needs a request to AWS.
BLOCKING = ("TIMEOUT", "MEMORY", "/TMP")
# The terms of the wall time, in the order they happen (Plan.terms, the sweep's columns).
TERMS = ("upload_s", "queue_wait_s", "dispatch_s", "cold_start_s", "compute_s", "merge_s")
EXACT_JOBS = 200_000  # above this many jobs the stage is the bound of its terms, not a job-by-job simulation


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the user decides: data, partitioning and each backend's resources and prices."""

    backend: Backend
    data_bytes: float
    partition_mb: float
    precision: str = "fp32"  # inference.precision: picks the calibration of that precision
    runtime: str = "auto"  # inference.runtime: a named runtime other than the calibration's is flagged
    partitions_per_job: int | str = "auto"  # cluster backends: partitions per job, or auto (inference.partitions_per_job)
    threads: int = 2  # per inference job (inference.threads; Slurm cpus_per_task)
    batch_size: int = 512  # rows per forward pass (inference.batch_size): a calibration measured at another is flagged
    device: str = "auto"  # inference.device
    cores: int = os.cpu_count() or 1  # local: cores of this machine
    memory_mb: int = 2048  # Lambda function memory
    concurrency: int | None = None  # most jobs at once (Lambda default: LAMBDA_DEFAULT_IN_FLIGHT; others: their slots)
    nodes: int = 1  # Slurm CPU nodes available
    cores_per_node: int = 64
    gpus: int = 1  # Slurm GPUs available (one per job)
    queue_wait_s: float = 0.0  # Slurm: wait before the first job starts
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    timeout_s: int = LAMBDA_MAX_TIMEOUT_S  # the function's configured timeout
    ephemeral_storage_mb: int = FREE_EPHEMERAL_MB
    data_in_s3: bool = False  # Lambda: the dataset is already in S3 (no upload from this host)
    cluster: str = "given"  # where the Slurm nodes, cores and GPUs come from
    cpu_hour_usd: float = 0.0
    gpu_hour_usd: float = 0.0
    lambda_prices: dict = dataclasses.field(default_factory=lambda_prices)

    @property
    def rows(self) -> int:
        """Model-ready rows in data_bytes."""
        return max(1, round(self.data_bytes / ROW_BYTES))


@dataclasses.dataclass
class Plan:
    """The estimate for one configuration, its terms, and everything it assumed."""

    settings: Settings
    partitions: int
    rows_per_partition: int
    jobs: int
    concurrency: int  # effective: the most jobs that run at once (requested: settings.concurrency)
    waves: int
    cold_jobs: int
    job_s: float  # one job's slot time, first (cold) job
    warm_job_s: float  # later jobs on a reused Lambda environment (= job_s elsewhere)
    terms: dict[str, float]  # TERMS: each in seconds
    stage_s: float  # the inference stage: dispatch and compute together, cold starts included
    wall_s: float  # the critical path: upload + queue wait + stage + merge
    peak_memory_mb: float  # one job's peak memory (0: the calibration has no memory model)
    lines: list[dict]  # usage priced, as in cost_summary.json
    cost_usd: float
    flags: list[str]
    assumptions: list[str]
    calibration: dict
    partitions_per_job: int = 1  # per inference job, `auto` resolved (Lambda: 1, an invocation per partition)

    @property
    def backend(self) -> str:
        return self.settings.backend

    @property
    def upload_s(self) -> float:
        return self.terms["upload_s"]

    @property
    def run_wall_s(self) -> float:
        """What run_summary.json's wall_s measures: the upload and the inference stage (first job start to last job end)."""
        return self.terms["upload_s"] + self.stage_s

    @property
    def feasible(self) -> bool:
        """No flag that stops the run (timeout, memory, /tmp)."""
        return not any(f.startswith(BLOCKING) for f in self.flags)

    @property
    def priced(self) -> bool:
        """Every resource used has a price (else the cost is a lower bound, not a free run)."""
        return not unpriced(self.lines)

    @property
    def bound_by(self) -> str:
        """The term that dominates the wall time."""
        return max(TERMS, key=lambda t: self.terms[t]).removesuffix("_s")

    def biggest_terms(self, n: int = 3) -> list[tuple[str, float]]:
        """The `n` largest terms (name without _s, seconds), largest first, zeros left out."""
        ranked = sorted(((t.removesuffix("_s"), self.terms[t]) for t in TERMS), key=lambda kv: -kv[1])
        return [(k, v) for k, v in ranked[:n] if v > 0]

    def quantity(self, resource: str) -> float:
        """A usage line's quantity (0 when the plan has none)."""
        return sum(line["quantity"] for line in self.lines if line["resource"] == resource)

    def gb_s(self) -> float:
        """Lambda compute GB-seconds (either architecture)."""
        return sum(line["quantity"] for line in self.lines if line["resource"] in ("lambda_x86_64_gb_s", "lambda_arm64_gb_s"))

    def usage(self) -> str:
        """The main usage figure in words."""
        if self.backend == "lambda":
            return f"{self.gb_s():,.0f} GB-s, {self.partitions:,} requests"
        gpu = f"{self.quantity('gpu_hours'):.3g} GPU-h + " if self.quantity("gpu_hours") else ""
        return f"{gpu}{self.quantity('cpu_hours'):.3g} CPU-h"

    def cost_text(self) -> str:
        """The cost, or 'unpriced' with what has no rate (never $0 for a run that is not free)."""
        if self.priced:
            return f"${self.cost_usd:.4f}"
        return f"unpriced ({', '.join(unpriced(self.lines))})"

    def row(self) -> dict:
        """One flat record of typed values (a sweep's row; the same columns and types in CSV, JSON and Parquet)."""
        s = self.settings
        lam = self.backend == "lambda"
        return {
            "backend": self.backend,
            "data_bytes": float(s.data_bytes),
            "data_gib": s.data_bytes / 2**30,
            "rows": int(s.rows),
            "partition_mb": float(s.partition_mb),
            "precision": s.precision,
            "batch_size": int(s.batch_size),
            "threads": int(1 if lam else s.threads),
            "memory_mb": float(s.memory_mb) if lam else math.nan,  # NaN: not a Lambda plan (never 0 MB)
            "partitions_per_job": int(self.partitions_per_job),
            "partitions": int(self.partitions),
            "jobs": int(self.jobs),
            "rows_per_partition": int(self.rows_per_partition),
            "concurrency_requested": float(s.concurrency) if s.concurrency else math.nan,  # NaN: the backend's default
            "concurrency": int(self.concurrency),
            "waves": int(self.waves),
            "cold_jobs": int(self.cold_jobs),
            "job_s": float(self.job_s),
            "warm_job_s": float(self.warm_job_s),
            **{t: float(self.terms[t]) for t in TERMS},
            "stage_s": float(self.stage_s),
            "wall_s": float(self.wall_s),
            "bound_by": self.bound_by,
            "samples_per_s": s.rows / self.wall_s if self.wall_s else 0.0,
            "throughput_gbit_s": s.rows * BITS_PER_SAMPLE / self.wall_s / 1e9 if self.wall_s else 0.0,
            "cost_usd": float(self.cost_usd),
            "priced": bool(self.priced),
            "gb_s": float(self.gb_s()),
            "requests": float(self.quantity("lambda_requests")),
            "cpu_h": float(self.quantity("cpu_hours")),
            "gpu_h": float(self.quantity("gpu_hours")),
            "peak_memory_mb": float(self.peak_memory_mb),
            "feasible": bool(self.feasible),
            "flags": ";".join(f.split(":")[0] for f in self.flags) or "none",
        }


def json_row(plan: Plan) -> dict:
    """plan.row() for JSON: NaN (not a Lambda plan, the default concurrency) as null, which JSON has and NaN is not."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in plan.row().items()}


def makespan(
    n_jobs: int,
    slots: int,
    ready_at: Callable[[int], float],
    cold_s: float,
    warm_s: float,
    dispatch_per_s: float = 0.0,
) -> tuple[float, int]:
    """Wall time of n_jobs on at most `slots` slots (slot k usable from ready_at(k)), job i begun no earlier than
    i / dispatch_per_s (0: no limit). A job takes a free warm slot when one is free by then (warm_s), else a new
    slot (cold_s). Returns (wall time, cold jobs = slots used)."""
    used = min(slots, n_jobs)
    if not dispatch_per_s and warm_s <= cold_s and ready_at(0) == ready_at(used - 1):  # all at once: round-robin
        return ready_at(0) + cold_s + (math.ceil(n_jobs / used) - 1) * warm_s, used
    if n_jobs > EXACT_JOBS:  # the bound of the terms: slot-bound waves or the last job begun, whichever is later
        slot_bound = ready_at(used - 1) + cold_s + (math.ceil(n_jobs / used) - 1) * warm_s
        begun = (n_jobs - 1) / dispatch_per_s + warm_s if dispatch_per_s else 0.0
        return max(slot_bound, begun), used
    warm: list[float] = []  # free times of slots that have run a job
    fresh = cold = 0
    end = 0.0
    for i in range(n_jobs):
        begin = i / dispatch_per_s if dispatch_per_s else 0.0
        new_at = max(begin, ready_at(fresh)) if fresh < used else math.inf
        warm_at = max(begin, warm[0]) if warm else math.inf
        if warm_at <= new_at:
            heapq.heappop(warm)
            t = warm_at + warm_s
        else:
            fresh += 1
            cold += 1
            t = new_at + cold_s
        heapq.heappush(warm, t)
        end = max(end, t)
    return end, cold


def lambda_rate(cal: Calibration, memory_mb: float) -> tuple[float, float]:
    """(vCPUs, samples/s) of one invocation: vCPUs in proportion to memory, the speed saturating at cal.max_threads."""
    vcpus = memory_mb / LAMBDA_MB_PER_VCPU
    used = min(vcpus, cal.max_threads) if cal.max_threads else vcpus
    return vcpus, cal.per_thread() * used


def read_wait_s(cal: Calibration, rows: int, batch_size: int, rate: float) -> float:
    """Seconds an invocation waits on S3 beyond inference: its first forward pass's rows, then each later pass's
    reading beyond the previous pass's inference.

    The function reads the partition ahead of the engine (cosmicai.infer.Prefetch), so when inference is the slower
    only the first batch waits; stand-in runs at 768 MB waited 0.04-0.21 s for 4,000-row partitions.
    """
    if not cal.transfer_mb_per_s or not rows:
        return 0.0
    batch = min(rows, batch_size)
    read, infer = batch * ROW_BYTES / MIB / cal.transfer_mb_per_s, batch / rate
    return read + (math.ceil(rows / batch) - 1) * max(0.0, read - infer)


def merge_s(host: Calibration | None, rows: int) -> float:
    """Merging the predictions on the submitting host, from its (the local section's) figures; 0 when it has none."""
    if host is None or not host.merge_rows_per_s:
        return 0.0
    return host.merge_fixed_s + rows / host.merge_rows_per_s


def _lambda_flags(s: Settings, cal: Calibration, cold_run: float, rate: float, part_mb: float, peak_mb: float, conc: int) -> list[str]:
    flags = []
    limit = min(s.timeout_s, LAMBDA_MAX_TIMEOUT_S)
    if cold_run > limit:
        per_mb = (1 / cal.transfer_mb_per_s if cal.transfer_mb_per_s else 0) + MIB / (ROW_BYTES * rate)
        fit = min((limit - cal.fixed_s - cal.cold_s) / per_mb, s.ephemeral_storage_mb - MODEL_MB)  # and it must fit in /tmp
        which = "Lambda's 15-minute limit" if limit == LAMBDA_MAX_TIMEOUT_S else f"the function timeout ({s.timeout_s} s)"
        flags.append(
            f"TIMEOUT: an invocation takes ~{human_time(cold_run)}, over {which}; "
            + (f"use partitions of at most {fit:.0f} MB or more memory" if fit > 0 else "more memory")
        )
    if peak_mb and s.memory_mb < 1.1 * peak_mb:
        flags.append(
            f"MEMORY: {s.memory_mb} MB is under 1.1 x the ~{peak_mb:.0f} MB a {part_mb:.0f} MB partition needs at "
            f"{cal.precision} ({cal.memory_source or 'calibration'})"
        )
    if part_mb + MODEL_MB > s.ephemeral_storage_mb:
        flags.append(f"/TMP: a {part_mb:.0f} MB partition and the {MODEL_MB} MB model exceed {s.ephemeral_storage_mb} MB of /tmp")
    if conc > LAMBDA_ACCOUNT_CONCURRENCY:
        flags.append(f"CONCURRENCY: {conc:,} needs a raised account limit (default {LAMBDA_ACCOUNT_CONCURRENCY:,} per region)")
    return flags


def _lambda_plan(s: Settings, cal: Calibration, p: int, rows_pp: int, part_mb: float, label: dict, host: Calibration | None) -> Plan:
    lo, hi = LAMBDA_MEMORY_MB
    if not lo <= s.memory_mb <= hi:
        raise CosmicaiError("--memory-mb", f"Lambda memory must be {lo}-{hi} MB, got {s.memory_mb}")
    conc = s.concurrency or LAMBDA_DEFAULT_IN_FLIGHT
    vcpus, rate = lambda_rate(cal, s.memory_mb)
    transfer = part_mb / cal.transfer_mb_per_s if cal.transfer_mb_per_s else 0.0
    inference = rows_pp / rate
    warm_run = cal.fixed_s + inference + read_wait_s(cal, rows_pp, s.batch_size, rate)  # billed, in the function
    cold_run = warm_run + cal.cold_s  # Init Duration is billed too (AWS, since August 2025)
    # The dataset goes up once, as one object, before the first invocation: no share of it repeats per wave.
    upload = 0.0 if s.data_in_s3 or not cal.staging_mb_per_s else s.data_bytes / MIB / cal.staging_mb_per_s
    per, every = LAMBDA_SCALING

    def ready(k: int) -> float:
        return every * (k // per)

    slot_cold, slot_warm = cal.overhead_s + cold_run, cal.overhead_s + warm_run
    stage, cold = makespan(p, conc, ready, slot_cold, slot_warm, cal.dispatch_per_s)
    compute, _ = makespan(p, conc, ready, slot_cold, slot_warm)  # without the dispatch limit: the slots' waves alone
    dispatch = p / cal.dispatch_per_s if cal.dispatch_per_s else 0.0
    billed = cold * billed_s(cold_run) + (p - cold) * billed_s(warm_run)
    gb_s = {s.architecture: gb_seconds(billed, s.memory_mb)}
    lines = lambda_lines(gb_s, p, ephemeral_gb_seconds(billed, s.ephemeral_storage_mb), s.lambda_prices)
    peak = cal.peak_memory_mb(part_mb)
    sat = f", saturating at {cal.max_threads:g} vCPU" if cal.max_threads else ""
    prices = lambda_prices(s.lambda_prices)
    assumptions = [
        f"Lambda {s.memory_mb} MB {s.architecture}: {vcpus:.2f} vCPU (1 per {LAMBDA_MB_PER_VCPU} MB), "
        f"{rate:,.0f} samples/s per invocation ({cal.per_thread():,.0f} per vCPU{sat}; {cal.runtime} {cal.precision})",
        f"concurrency {conc:,} requested, {cold:,} environments used; new environments {per:,} per {every:.0f} s; "
        f"cold start {cal.cold_s:.1f} s (Init Duration + model load, billed), then warm; {cal.fixed_s:.2f} s per "
        "invocation besides inference and waiting on S3",
        (
            f"dispatch: this host begins {cal.dispatch_per_s:g} invocations/s ({p:,} in {human_time(dispatch)})"
            if cal.dispatch_per_s
            else "dispatch: no rate in the calibration (dispatch_per_s), taken as unlimited"
        ),
        f"S3 to function {cal.transfer_mb_per_s:,.0f} MB/s ({transfer:.1f} s per partition, read ahead of inference: "
        f"{read_wait_s(cal, rows_pp, s.batch_size, rate):.2f} s of it billed); "
        + (
            "dataset already in S3"
            if s.data_in_s3 or not cal.staging_mb_per_s
            else f"dataset uploaded once from this host at {cal.staging_mb_per_s:,.0f} MB/s ({human_time(upload)})"
        ),
        f"invoker round trip {cal.overhead_s:.2f} s per partition (unbilled); prices of {prices.get('date', '?')}: "
        f"${float(prices[f'{s.architecture}_gb_s']):.10f}/GB-s, ${float(prices['requests_per_million']):.2f}/M requests",
    ]
    if peak:
        assumptions.append(f"peak memory per invocation ~{peak:,.0f} MB for {part_mb:.0f} MB partitions ({cal.memory_source})")
    terms = {
        "upload_s": upload,
        "queue_wait_s": 0.0,
        "dispatch_s": dispatch,
        "cold_start_s": cal.cold_s if cold else 0.0,
        "compute_s": max(0.0, compute - (cal.cold_s if cold else 0.0)),
        "merge_s": merge_s(host, s.rows),
    }
    return Plan(
        s,
        p,
        rows_pp,
        p,
        cold,
        math.ceil(p / max(1, cold)),  # waves on the environments used (fewer than requested when dispatch limits them)
        cold,
        slot_cold,
        slot_warm,
        terms,
        stage,
        upload + stage + terms["merge_s"],
        peak,
        lines,
        sum(line["cost_usd"] for line in lines),
        _lambda_flags(s, cal, cold_run, rate, part_mb, peak, conc),
        assumptions,
        label,
    )


def _per_job(setting: int | str, partitions: int) -> int:
    """Partitions per inference job, `auto` resolved as the workflow does (cosmicai.job.per_job)."""
    try:
        k = per_job(setting, partitions)
    except (TypeError, ValueError):
        k = 0
    if k < 1:
        raise CosmicaiError("partitions_per_job", f"must be a positive number of partitions or auto, got {setting!r}")
    return k


def _cluster_plan(s: Settings, cal: Calibration, p: int, rows_pp: int, part_mb: float, label: dict, host: Calibration | None) -> Plan:
    gpu = s.backend == "slurm-gpu"
    if gpu:
        slots, rate = s.gpus, cal.samples_per_s
        where = f"{s.gpus} GPU(s) ({s.cluster}), one per job"
    elif s.backend == "slurm":
        slots, rate = s.nodes * max(1, s.cores_per_node // s.threads), cal.rate(s.threads)
        where = f"{s.nodes} node(s) x {s.cores_per_node} cores ({s.cluster}), {s.threads} cores per job: {slots} jobs at once"
    else:
        slots, rate = max(1, s.cores // s.threads), cal.rate(s.threads)
        where = f"this machine's {s.cores} cores, {s.threads} threads per job: {slots} job(s) at once"
    ppj = min(_per_job(s.partitions_per_job, p), p)
    jobs = math.ceil(p / ppj)
    conc = min(slots, s.concurrency) if s.concurrency else slots
    billed = cal.fixed_s + s.rows / jobs / rate  # start-up once per job, then its partitions one after another
    slot_s = cal.overhead_s + billed
    wait = s.queue_wait_s if s.backend != "local" else 0.0
    stage, _ = makespan(jobs, conc, lambda k: wait, slot_s, slot_s, cal.dispatch_per_s)
    # Slurm accounts a job's whole elapsed time (start on the node, imports, ...); the local summary its sidecars'.
    job_s = billed if s.backend == "local" else slot_s
    rates = {"cpu_hour_usd": s.cpu_hour_usd, "gpu_hour_usd": s.gpu_hour_usd}
    lines = hour_lines(jobs * job_s * s.threads / 3600, jobs * job_s / 3600 if gpu else 0.0, rates)
    assumptions = [
        f"{where}; {rate:,.0f} samples/s per job ({cal.runtime} {cal.precision}"
        + (f", batch {cal.batch_size}" if cal.batch_size else "")
        + f"); {ppj} partition(s) per job"
        + (f" (auto: at most {MAX_AUTO_JOBS} jobs)" if s.partitions_per_job == "auto" else "")
        + f": {jobs:,} jobs",
        f"per job {cal.fixed_s:.1f} s besides inference (start-up, model load, I/O; paid once per job) and {cal.overhead_s:.1f} s "
        f"between jobs (process start{', submission, status polling' if s.backend != 'local' else ''})",
        f"rates: ${s.cpu_hour_usd}/CPU-h"
        + (f", ${s.gpu_hour_usd}/GPU-h" if gpu else "")
        + (" (config cost.*: set them to price the run)" if not (s.cpu_hour_usd or (gpu and s.gpu_hour_usd)) else ""),
    ]
    if s.backend != "local":
        assumptions.append(f"queue wait {human_time(s.queue_wait_s)} before the first job")
    terms = {
        "upload_s": 0.0,
        "queue_wait_s": wait,
        "dispatch_s": jobs / cal.dispatch_per_s if cal.dispatch_per_s else 0.0,
        "cold_start_s": 0.0,  # a job's start-up is inside its fixed_s, paid by every job
        "compute_s": max(0.0, stage - wait),
        "merge_s": merge_s(host, s.rows),
    }
    return Plan(
        s,
        p,
        rows_pp,
        jobs,
        min(conc, jobs),
        math.ceil(jobs / conc),
        jobs,
        slot_s,
        slot_s,
        terms,
        stage,
        stage + terms["merge_s"],
        cal.peak_memory_mb(part_mb),
        lines,
        sum(line["cost_usd"] for line in lines),
        [],
        assumptions,
        label,
        ppj,
    )


def local_runtime(s: Settings) -> str:
    """The runtime a local run uses: `auto` resolved on this machine's CPU as the engines resolve it (a GPU's torch
    is not looked for: that needs torch imported), so a plan calibrated on another runtime is flagged."""
    from cosmicai.engines.base import choose_runtime

    if s.runtime != "auto" or s.device not in ("auto", "cpu"):
        return s.runtime
    try:
        return choose_runtime("cpu", s.precision, "auto")[1]
    except ValueError:
        return s.runtime


def estimate(s: Settings, calibrations: dict[str, Calibration]) -> Plan:
    """Partitions, jobs, the wall time's terms and cost of running `s` on its backend."""
    if s.backend not in BACKENDS:
        raise CosmicaiError("--backend", f"unknown backend {s.backend!r} (one of {', '.join(BACKENDS)})")
    cal = pick(calibrations, s.backend, s.precision)
    p = partitions_for_bytes(s.data_bytes, s.partition_mb)
    rows_pp = -(-s.rows // p)
    part_mb = rows_pp * ROW_BYTES / MIB
    label = {
        "label": cal.label(),
        "measured": cal.measured,
        "measured_at": cal.measured_at,
        "source": cal.source,
        "file": cal.file,
        "runtime": cal.runtime,
        "precision": cal.precision,
    }
    host = calibrations.get("local")  # the submitting host, where merge runs whatever the backend
    build = _lambda_plan if s.backend == "lambda" else _cluster_plan
    plan = build(s, cal, p, rows_pp, part_mb, label, host)
    runtime = local_runtime(s) if s.backend == "local" else s.runtime
    if runtime not in ("auto", cal.runtime):
        how = "" if runtime == s.runtime else " (auto, on this machine)"
        plan.flags.append(f"RUNTIME: planned at {cal.runtime}'s speed ({cal.file}); the run uses {runtime}{how}: calibrate it")
    if cal.batch_size and s.batch_size != cal.batch_size:
        plan.flags.append(f"BATCH: planned at batch {cal.batch_size}'s speed; the run uses batch {s.batch_size}: calibrate it")
    missing = unpriced(plan.lines)
    if missing:
        plan.flags.append(f"UNPRICED: no rate for {', '.join(missing)} (config cost.*): the cost is unknown, not zero")
    plan.assumptions = [
        f"{human_size(s.data_bytes)} = {s.rows:,} rows of {ROW_BYTES:,} B (binary units: 1 GB = 2^30 B); "
        f"{p:,} partitions of {part_mb:.1f} MiB ({rows_pp:,} rows)",
        *plan.assumptions,
        (
            f"merge on the submitting host: {host.merge_fixed_s:.1f} s + {host.merge_rows_per_s:,.0f} rows/s (the local section)"
            if host is not None and host.merge_rows_per_s
            else "merge: no rate in the calibration's local section"
        ),
        "wall time: the critical path of upload, queue wait, the inference stage (dispatch and compute waves, cold starts) "
        "and merge; run_summary.json's wall_s covers the upload and the stage",
        f"calibration ({s.backend}, {s.precision}): {cal.label()}",
    ]
    return plan


def compare(s: Settings, calibrations: dict[str, Calibration]) -> list[Plan]:
    """The same data and partitioning on every backend."""
    return [estimate(dataclasses.replace(s, backend=b), calibrations) for b in BACKENDS]
