"""The plan's model: partitions, jobs, wall time, usage and cost of one configuration on one backend.

A dataset of `data_bytes` (model-ready rows of ROW_BYTES) is cut into ceil(bytes / partition_mb MiB)
partitions. Cluster backends run one job per batch of `partitions_per_job` consecutive partitions
(`auto`: as many as keep the workflow at cosmicai.batch.MAX_AUTO_JOBS inference jobs at most, as the
workflow's DAG does), paying the job's start-up (fixed_s) once; Lambda invokes once per partition. A job takes fixed_s + rows / samples_per_s
(+ overhead_s unbilled between jobs), with the speeds from a calibration of the same backend and
precision (cosmicai.planning.calibration). Jobs run `concurrency` at a time on slots that become free
as jobs end; Lambda environments are reused (warm) after their first, cold, invocation and become
available at 1,000 per 10 s. A local dataset under Lambda is uploaded once, as one object, before the
first invocation. Wall time is that upload plus the inference stage, as in run_summary.json; cost
prices the usage lines cost_summary.json reports, at the config's rates.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
from collections.abc import Callable
from typing import Literal

from cosmicai.accounting.lambda_cost import DEFAULT_PRICES
from cosmicai.aws.settings import FREE_EPHEMERAL_MB
from cosmicai.batch import MAX_AUTO_JOBS, per_job
from cosmicai.data.dataset import ROW_BYTES
from cosmicai.data.partition import MIB, partitions_for_bytes
from cosmicai.errors import CosmicaiError
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
    lambda_prices: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_PRICES))

    @property
    def rows(self) -> int:
        """Model-ready rows in data_bytes."""
        return max(1, round(self.data_bytes / ROW_BYTES))


@dataclasses.dataclass
class Plan:
    """The estimate for one configuration, and everything it assumed."""

    settings: Settings
    partitions: int
    rows_per_partition: int
    jobs: int
    concurrency: int
    waves: int
    cold_jobs: int
    job_s: float  # one job's slot time, first (cold) job
    warm_job_s: float  # later jobs on a reused Lambda environment (= job_s elsewhere)
    upload_s: float  # Lambda: the dataset's one upload to S3 before the first invocation
    wall_s: float
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
    def feasible(self) -> bool:
        """No flag that stops the run (timeout, memory, /tmp)."""
        return not any(f.startswith(BLOCKING) for f in self.flags)

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

    def row(self) -> dict:
        """One flat record of numbers (a sweep's row; CSV, JSON and Parquet)."""
        s = self.settings
        lam = self.backend == "lambda"
        return {
            "backend": self.backend,
            "data_bytes": s.data_bytes,
            "data_gib": s.data_bytes / 2**30,
            "rows": s.rows,
            "partition_mb": s.partition_mb,
            "precision": s.precision,
            "memory_mb": s.memory_mb if lam else 0,
            "partitions_per_job": self.partitions_per_job,
            "partitions": self.partitions,
            "jobs": self.jobs,
            "rows_per_partition": self.rows_per_partition,
            "concurrency": self.concurrency,
            "waves": self.waves,
            "cold_jobs": self.cold_jobs,
            "job_s": self.job_s,
            "warm_job_s": self.warm_job_s,
            "upload_s": self.upload_s,
            "wall_s": self.wall_s,
            "cost_usd": self.cost_usd,
            "gb_s": self.gb_s(),
            "requests": self.quantity("lambda_requests"),
            "cpu_h": self.quantity("cpu_hours"),
            "gpu_h": self.quantity("gpu_hours"),
            "peak_memory_mb": self.peak_memory_mb,
            "feasible": self.feasible,
            "flags": ";".join(f.split(":")[0] for f in self.flags),
            "calibration": self.calibration["label"],
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


def lambda_rate(cal: Calibration, memory_mb: float) -> tuple[float, float]:
    """(vCPUs, samples/s) of one invocation: vCPUs in proportion to memory, the speed saturating at cal.max_threads."""
    vcpus = memory_mb / LAMBDA_MB_PER_VCPU
    used = min(vcpus, cal.max_threads) if cal.max_threads else vcpus
    return vcpus, cal.per_thread() * used


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


def _lambda_plan(s: Settings, cal: Calibration, p: int, rows_pp: int, part_mb: float, label: dict) -> Plan:
    lo, hi = LAMBDA_MEMORY_MB
    if not lo <= s.memory_mb <= hi:
        raise CosmicaiError("--memory-mb", f"Lambda memory must be {lo}-{hi} MB, got {s.memory_mb}")
    conc = s.concurrency or LAMBDA_DEFAULT_IN_FLIGHT
    vcpus, rate = lambda_rate(cal, s.memory_mb)
    transfer = part_mb / cal.transfer_mb_per_s if cal.transfer_mb_per_s else 0.0
    warm_run = cal.fixed_s + transfer + rows_pp / rate  # billed, in the function
    cold_run = warm_run + cal.cold_s  # Init Duration is billed too (AWS, since August 2025)
    # The dataset goes up once, as one object, before the first invocation: no share of it repeats per wave.
    upload = 0.0 if s.data_in_s3 or not cal.staging_mb_per_s else s.data_bytes / MIB / cal.staging_mb_per_s
    per, every = LAMBDA_SCALING
    stage_s, cold = makespan(p, conc, lambda k: every * (k // per), cal.overhead_s + cold_run, cal.overhead_s + warm_run)
    billed_s = cold * math.ceil(cold_run * 1000) / 1000 + (p - cold) * math.ceil(warm_run * 1000) / 1000
    gb = s.memory_mb / 1024
    prices = s.lambda_prices
    lines = [
        _line(f"lambda_{s.architecture}_gb_s", billed_s * gb, "GB-s", float(prices[f"{s.architecture}_gb_s"])),
        _line("lambda_requests", p, "requests", float(prices["requests_per_million"]) / 1e6),
        _line(
            "lambda_ephemeral_gb_s",
            billed_s * max(0, s.ephemeral_storage_mb - FREE_EPHEMERAL_MB) / 1024,
            "GB-s",
            float(prices["ephemeral_gb_s"]),
        ),
    ]
    peak = cal.peak_memory_mb(part_mb)
    sat = f", saturating at {cal.max_threads:g} vCPU" if cal.max_threads else ""
    assumptions = [
        f"Lambda {s.memory_mb} MB {s.architecture}: {vcpus:.2f} vCPU (1 per {LAMBDA_MB_PER_VCPU} MB), "
        f"{rate:,.0f} samples/s per invocation ({cal.per_thread():,.0f} per vCPU{sat}; {cal.runtime} {cal.precision})",
        f"concurrency {conc:,}; new environments {per:,} per {every:.0f} s; cold start {cal.cold_s:.1f} s "
        f"(Init Duration + model load, billed), then warm; {cal.fixed_s:.2f} s per invocation besides inference and transfer",
        f"S3 to function {cal.transfer_mb_per_s:,.0f} MB/s ({transfer:.1f} s per partition); "
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
    return Plan(
        s,
        p,
        rows_pp,
        p,
        min(conc, p),
        math.ceil(p / conc),
        cold,
        cal.overhead_s + cold_run,
        cal.overhead_s + warm_run,
        upload,
        upload + stage_s,
        peak,
        lines,
        sum(line["cost_usd"] for line in lines),
        _lambda_flags(s, cal, cold_run, rate, part_mb, peak, conc),
        assumptions,
        label,
    )


def _per_job(setting: int | str, partitions: int) -> int:
    """Partitions per inference job, `auto` resolved as the workflow does (cosmicai.batch.per_job)."""
    try:
        k = per_job(setting, partitions)
    except (TypeError, ValueError):
        k = 0
    if k < 1:
        raise CosmicaiError("partitions_per_job", f"must be a positive number of partitions or auto, got {setting!r}")
    return k


def _cluster_plan(s: Settings, cal: Calibration, p: int, rows_pp: int, part_mb: float, label: dict) -> Plan:
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
    ppj = _per_job(s.partitions_per_job, p)
    jobs = math.ceil(p / ppj)
    conc = min(slots, s.concurrency) if s.concurrency else slots
    billed = cal.fixed_s + s.rows / jobs / rate  # start-up once per job, then its partitions one after another
    slot_s = cal.overhead_s + billed
    wait = s.queue_wait_s if s.backend != "local" else 0.0
    wall, _ = makespan(jobs, conc, lambda k: wait, slot_s, slot_s)
    # Slurm accounts a job's whole elapsed time (start on the node, imports, ...); the local summary its sidecars'.
    job_s = billed if s.backend == "local" else slot_s
    lines = [_line("cpu_hours", jobs * job_s * s.threads / 3600, "CPU-h", s.cpu_hour_usd)]
    if gpu:
        lines.append(_line("gpu_hours", jobs * job_s / 3600, "GPU-h", s.gpu_hour_usd))
    assumptions = [
        f"{where}; {rate:,.0f} samples/s per job ({cal.runtime} {cal.precision}); {ppj} partition(s) per job"
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
        0.0,
        wall,
        cal.peak_memory_mb(part_mb),
        lines,
        sum(line["cost_usd"] for line in lines),
        [],
        assumptions,
        label,
        ppj,
    )


def estimate(s: Settings, calibrations: dict[str, Calibration]) -> Plan:
    """Partitions, jobs, wall time and cost of running `s` on its backend."""
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
    plan = _lambda_plan(s, cal, p, rows_pp, part_mb, label) if s.backend == "lambda" else _cluster_plan(s, cal, p, rows_pp, part_mb, label)
    if s.runtime not in ("auto", cal.runtime):
        plan.flags.append(f"RUNTIME: planned at {cal.runtime}'s speed ({cal.file}); the run uses {s.runtime}: calibrate it")
    plan.assumptions = [
        f"{human_size(s.data_bytes)} = {s.rows:,} rows of {ROW_BYTES:,} B (binary units: 1 GB = 2^30 B); "
        f"{p:,} partitions of {part_mb:.1f} MiB ({rows_pp:,} rows)",
        *plan.assumptions,
        "wall time: the Lambda upload (if any) and the inference stage, first job start to last job end (run_summary.json's wall_s)",
        f"calibration ({s.backend}, {s.precision}): {cal.label()}",
    ]
    return plan


def compare(s: Settings, calibrations: dict[str, Calibration]) -> list[Plan]:
    """The same data and partitioning on every backend."""
    return [estimate(dataclasses.replace(s, backend=b), calibrations) for b in BACKENDS]
