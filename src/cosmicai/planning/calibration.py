"""Calibration for `cosmicai plan`: measured speeds per backend, with when and where they were measured.

A calibration file (YAML or JSON) holds one section per plan backend (local, slurm, slurm-gpu,
lambda) and precision: a section named `slurm-gpu` holds that backend at the precision it names,
`slurm-gpu:bf16` another precision. Every section names its runtime and precision, and a plan at a
precision no section measured is refused (not silently planned at another's speed).

The shipped default is `cosmicai/planning/calibration.yaml` (package data). Every workflow run writes
its own measurement beside its results (`results/calibration.json`); a plan uses it only when named
(`--calibration FILE`), or after `cosmicai calibrate --install`, which merges it into the installed
calibration ($XDG_CACHE_HOME or ~/.cache, cosmicai/calibration.json). `cosmicai bench --calibration
FILE` writes one from a benchmark.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.resources
import os
from pathlib import Path
from typing import Any, Literal

import yaml

from cosmicai.atomic import write_json
from cosmicai.data.dataset import ROW_BYTES
from cosmicai.errors import CosmicaiError
from cosmicai.resources import LAMBDA_MB_PER_VCPU

Backend = Literal["local", "slurm", "slurm-gpu", "lambda"]
BACKENDS: tuple[Backend, ...] = ("local", "slurm", "slurm-gpu", "lambda")
# A run this small measures start-up, not throughput (one batch, warm-up included): its rate is not kept.
MIN_ROWS_FOR_RATE = 5000
MIN_MB_FOR_BANDWIDTH = 8  # partitions smaller than this (MiB) measure S3's latency, not its bandwidth
# The shipped default, package data beside this module (a real file in every setuptools install).
DEFAULT_FILE = Path(str(importlib.resources.files("cosmicai.planning") / "calibration.yaml"))


def persistent_path() -> Path:
    """The installed calibration (`cosmicai calibrate --install`): $XDG_CONFIG_HOME/cosmicai/calibration.json (~/.config)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "cosmicai" / "calibration.json"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Speeds of one backend's inference jobs, and where they come from."""

    samples_per_s: float  # one job's inference rate with `threads` threads (Lambda: vCPUs); scales linearly with them...
    threads: float
    runtime: str  # the engine measured (onnxruntime, openvino, torch)
    precision: str  # fp32, bf16, tf32, fp16: a plan uses only a section of its own precision
    fixed_s: float  # per job, billed, outside inference: model load, reads, writes (Lambda: per warm invocation)
    measured_at: str
    source: str
    measured: bool  # False: assumed or taken from elsewhere, not measured on this project's machines
    max_threads: float = 0.0  # ...up to this many threads (vCPUs), flat beyond; 0: no limit measured
    overhead_s: float = 0.0  # per job, not billed: process start and scheduling (Lambda: the invoker's round trip)
    cold_s: float = 0.0  # Lambda: Init Duration plus model download and load in a new environment
    transfer_mb_per_s: float = 0.0  # Lambda: S3 to the function (partition download)
    staging_mb_per_s: float = 0.0  # Lambda: this host to S3, shared by concurrent jobs (partition upload)
    max_memory_mb: float = 0.0  # Lambda: largest Max Memory Used seen (the run's; the plan uses the model below)
    memory_base_mb: float = 0.0  # peak memory of one job: base + per partition MB x partition size (0: not modelled)
    memory_mb_per_partition_mb: float = 0.0
    memory_source: str = ""  # where the memory model comes from
    dispatch_per_s: float = 0.0  # jobs (Lambda: invocations) the submitting host begins per second; 0: not limited
    merge_rows_per_s: float = 0.0  # the submitting host merging predictions (read from the local section); 0: not modelled
    merge_fixed_s: float = 0.0  # ... and the merge job's start (process, imports), once per run
    batch_size: int = 0  # rows per forward pass the rate was measured at (0: not recorded); a plan at another is flagged
    rows: int = 0  # what the measurement covered
    jobs: int = 0
    file: str = ""  # the file it was read from

    def per_thread(self) -> float:
        """Inference samples/s per thread (per vCPU on Lambda)."""
        return self.samples_per_s / self.threads

    def rate(self, threads: float) -> float:
        """Samples/s of one job with `threads` threads: linear in them up to max_threads."""
        return self.per_thread() * (min(threads, self.max_threads) if self.max_threads else threads)

    def peak_memory_mb(self, partition_mb: float) -> float:
        """Peak memory of one job on partitions of `partition_mb` MiB (0: no memory model)."""
        if not (self.memory_base_mb or self.memory_mb_per_partition_mb):
            return 0.0
        return self.memory_base_mb + self.memory_mb_per_partition_mb * partition_mb

    def label(self) -> str:
        """One line: measured or not, when, from what."""
        kind = "measured" if self.measured else "NOT measured here"
        try:
            where = Path(self.file).resolve().relative_to(Path.cwd())
        except ValueError:
            where = Path(self.file)
        return f"{kind} {self.measured_at} ({self.runtime} {self.precision}): {self.source} [{where}]"


_FIELDS = {f.name for f in dataclasses.fields(Calibration)}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except (OSError, yaml.YAMLError) as exc:
        raise CosmicaiError(path, f"not a readable calibration file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
        raise CosmicaiError(path, "not a calibration file: no 'backends' mapping")
    return data


def _section(path: Path, name: str, raw: Any) -> Calibration:
    if not isinstance(raw, dict):
        raise CosmicaiError(path, f"backends.{name}: expected a mapping")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise CosmicaiError(path, f"backends.{name}: unknown key(s) {', '.join(unknown)}")
    try:
        cal = Calibration(**{**raw, "file": str(path)})
    except TypeError as exc:
        raise CosmicaiError(path, f"backends.{name}: {exc}") from None
    if not (cal.samples_per_s > 0 and cal.threads > 0):
        raise CosmicaiError(path, f"backends.{name}: samples_per_s and threads must be > 0")
    return cal


def load(path: str | os.PathLike | None = None) -> dict[str, Calibration]:
    """The calibration per section: the shipped default, overlaid section by section with `path`
    (default: the installed calibration, when `cosmicai calibrate --install` has written one)."""
    sections = {name: _section(DEFAULT_FILE, name, raw) for name, raw in _read(DEFAULT_FILE)["backends"].items()}
    overlay = Path(path) if path is not None else persistent_path()
    if path is not None or overlay.exists():
        sections.update({name: _section(overlay, name, raw) for name, raw in _read(overlay)["backends"].items()})
    missing = [b for b in BACKENDS if b not in sections]
    if missing:
        raise CosmicaiError(DEFAULT_FILE, f"no calibration for {', '.join(missing)}")
    return sections


def section_name(backend: str, precision: str) -> str:
    """The section a measurement of `backend` at `precision` is stored under (fp32: the backend's own name)."""
    return backend if precision == "fp32" else f"{backend}:{precision}"


def pick(sections: dict[str, Calibration], backend: str, precision: str) -> Calibration:
    """The section of `backend` measured at `precision`; an error naming what there is, never another precision's speed."""
    for key in (f"{backend}:{precision}", backend):
        cal = sections.get(key)
        if cal is not None and cal.precision == precision:
            return cal
    have = sorted({f"{c.precision} ({c.runtime})" for k, c in sections.items() if k.split(":")[0] == backend})
    where = sections[backend].file if backend in sections else "calibration"
    raise CosmicaiError(
        where,
        f"no {backend} calibration at {precision} (it has {', '.join(have) or 'none'}): plan at one of "
        f"those, or measure {precision} (a run at that precision writes results/calibration.json)",
    )


def plan_backend(runs: list[dict], backend: str) -> str:
    """The calibration section a run measures: its backend, slurm-gpu for Slurm jobs on GPUs, local-gpu for local ones."""
    if backend == "slurm" and any(str(r.get("device", "")).startswith("cuda") for r in runs):
        return "slurm-gpu"
    if backend == "local" and any(str(r.get("device", "")).startswith("cuda") for r in runs):
        return "local-gpu"  # recorded, but no plan backend models a local GPU
    return backend


def concurrency(runs: list[dict]) -> int:
    """Most jobs that ran at once (from the jobs' start and end times)."""
    events = sorted([(r["started_at"], 1) for r in runs] + [(r["ended_at"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return max(1, peak)


def from_runs(runs: list[dict], backend: str, wall_s: float, prior: dict[str, Calibration], source: str) -> tuple[str, Calibration]:
    """This run's measurement, as (plan backend, calibration), from its sidecars and wall time.

    A run under MIN_ROWS_FOR_RATE rows keeps the prior rate (its own is warm-up); its fixed costs are new.
    """
    backend_name = plan_backend(runs, backend)
    precision = str(runs[0].get("precision") or "fp32")
    name = section_name(backend_name, precision)
    base = prior.get(name) or prior.get(backend_name) or prior["local"]
    rows = sum(r["rows"] for r in runs)
    compute = sum(r["compute_s"] for r in runs)
    n = len(runs)
    runtime = str(runs[0].get("runtime") or base.runtime)
    batch_size = int(runs[0].get("batch_size") or base.batch_size)
    if backend_name == "lambda":
        vcpus = runs[0]["lambda"]["memory_mb"] / LAMBDA_MB_PER_VCPU
        rate, threads = (rows / compute, vcpus) if rows >= MIN_ROWS_FOR_RATE and compute > 0 else (base.samples_per_s, base.threads)
        lam = [r["lambda"] for r in runs]
        cold = [(r, lam_r) for r, lam_r in zip(runs, lam) if lam_r["cold_start"]]
        mb = [r["rows"] * ROW_BYTES / 2**20 for r in runs]
        # Small partitions time S3's latency, not its bandwidth: then the prior bandwidths stay and the
        # measured transfer times count as fixed per-job costs.
        big = sum(mb) / n >= MIN_MB_FOR_BANDWIDTH
        download = sum(r.get("download_s", 0.0) for r in runs)
        transfer = sum(mb) / download if big and download > 0 else base.transfer_mb_per_s
        staged = [(m, lam_r["staging_s"]) for m, lam_r in zip(mb, lam) if lam_r.get("partition_uploaded")]
        staged_s = sum(t for _, t in staged)
        # per job under this run's concurrency, times that concurrency: the host's aggregate upload rate
        staging = sum(m for m, _ in staged) / staged_s * concurrency(runs) if big and staged and staged_s > 0 else base.staging_mb_per_s
        modeled_staging = [m / (staging / concurrency(runs)) if staging and l_.get("partition_uploaded") else 0.0 for m, l_ in zip(mb, lam)]
        # Besides inference and waiting on S3 (the function's read_s: reading runs ahead of the engine, so most of it
        # overlaps inference; sidecars without it count the whole transfer).
        inside = [
            l_["duration_ms"] / 1000 - r.get("model_load_s", 0.0) - r["compute_s"] - r.get("read_s", m / transfer if transfer else 0.0)
            for r, l_, m in zip(runs, lam, mb)
        ]
        outside = [r["total_s"] - (l_["duration_ms"] + l_["init_ms"]) / 1000 - st for r, l_, st in zip(runs, lam, modeled_staging)]
        cal = dataclasses.replace(
            base,
            samples_per_s=rate,
            threads=threads,
            runtime=runtime,
            precision=precision,
            fixed_s=max(0.0, sum(inside) / n),
            overhead_s=max(0.0, sum(outside) / n),
            cold_s=(sum(l_["init_ms"] / 1000 + r.get("model_load_s", 0.0) for r, l_ in cold) / len(cold)) if cold else base.cold_s,
            transfer_mb_per_s=transfer,
            staging_mb_per_s=staging,
            max_memory_mb=max(l_["max_memory_mb"] for l_ in lam),
        )
    else:
        gpu = backend_name in ("slurm-gpu", "local-gpu")  # a GPU's rate does not scale with the job's CPU threads
        threads = 1 if gpu else max(1, sorted(r.get("threads") or 1 for r in runs)[n // 2])
        if rows >= MIN_ROWS_FOR_RATE and compute > 0:
            rate = rows / compute
        else:
            rate = base.samples_per_s if gpu else base.per_thread() * threads
        in_job = sum(r["total_s"] - r["compute_s"] for r in runs) / n
        # Slot time the sidecars do not cover (process start, imports, scheduling) from the wall time.
        between = max(0.0, (wall_s * concurrency(runs) - sum(r["total_s"] for r in runs)) / n)
        cal = dataclasses.replace(
            base, samples_per_s=rate, threads=threads, fixed_s=max(0.0, in_job), overhead_s=between, runtime=runtime, precision=precision
        )
    kept = "" if rows >= MIN_ROWS_FOR_RATE else f"; rate kept from {base.measured_at} ({rows:,} rows are too few to measure it)"
    return name, dataclasses.replace(
        cal,
        batch_size=batch_size,
        measured=True,
        measured_at=datetime.date.today().isoformat(),
        source=f"{source}{kept}",
        rows=rows,
        jobs=n,
        file="",
    )


def to_dict(cal: Calibration) -> dict[str, Any]:
    """A section as written to a calibration file (without the file it was read from)."""
    return {k: v for k, v in dataclasses.asdict(cal).items() if k != "file"}


def write(path: str | os.PathLike, sections: dict[str, Calibration]) -> None:
    """Write a calibration file holding these sections."""
    write_json(path, {"backends": {name: to_dict(cal) for name, cal in sections.items()}})


def merge_into(path: str | os.PathLike, sections: dict[str, Calibration]) -> None:
    """Replace these backends' sections in the calibration file at `path` (created if absent), keeping the others."""
    path = Path(path)
    data = _read(path) if path.exists() else {"backends": {}}
    data["backends"].update({name: to_dict(cal) for name, cal in sections.items()})
    write_json(path, data)


def from_bench(result: dict, source: str) -> dict[str, Calibration]:
    """Sections from a `cosmicai bench` result: the default CPU engine's rate and the fixed cost of one job process."""
    prior = load(DEFAULT_FILE)
    rates = {r["variant"]: r for r in result["table"] if "error" not in r}
    today = datetime.date.today().isoformat()
    device = result["device"]
    if device == "cuda":
        best = rates.get("torch-fp32")
        if best is None:
            raise CosmicaiError("bench", "no torch-fp32 result to calibrate from")
        gpu = dataclasses.replace(
            prior["slurm-gpu"],
            samples_per_s=best["samples_per_s"],
            threads=1,
            measured=True,
            measured_at=today,
            source=source,
            runtime="torch",
            precision="fp32",
            fixed_s=result["fixed_cost_s"].get("torch", prior["slurm-gpu"].fixed_s),
            rows=result["rows"],
            file="",
        )
        return {"slurm-gpu": gpu}
    out = {}
    threads = result["threads"]
    onnx = rates.get("onnxruntime-fp32")
    if onnx:  # the jobs' default CPU engine
        fixed = result["fixed_cost_s"].get("onnxruntime", prior["local"].fixed_s + prior["local"].overhead_s)
        for name in ("local", "slurm"):
            out[name] = dataclasses.replace(
                prior[name],
                samples_per_s=onnx["samples_per_s"],
                threads=threads,
                measured=True,
                measured_at=today,
                source=source,
                runtime="onnxruntime",
                precision="fp32",
                rows=result["rows"],
                fixed_s=fixed,
                overhead_s=prior[name].overhead_s if name == "slurm" else 0.0,
                file="",
            )
        # The function runs the same ONNX graph; one core here stands for one vCPU there.
        out["lambda"] = dataclasses.replace(
            prior["lambda"],
            samples_per_s=onnx["samples_per_s"] / threads,
            threads=1.0,
            measured=True,
            measured_at=today,
            rows=result["rows"],
            runtime="onnxruntime",
            precision="fp32",
            file="",
            source=f"{source} (per core here, taken as per vCPU; Lambda start-up and S3 from the default)",
        )
    return out


def calibrate_run(
    sidecars: list[str | os.PathLike], run_summary: str | os.PathLike, output: str | os.PathLike, install: bool = False
) -> tuple[str, Calibration]:
    """Write a run's calibration (its backend's section) to `output` (beside the run's results) and, with
    `install`, merge it into the installed calibration that later plans use without naming it.

    The run's own plan-vs-actual was estimated before this, with the calibration it named.
    """
    import json

    from cosmicai.job import load_sidecars

    runs = load_sidecars(sidecars)
    summary = json.loads(Path(run_summary).read_text())
    source = (
        f"workflow run ({summary['backend']}) of {summary['rows']:,} rows in {len(runs)} jobs, {Path(run_summary).resolve().parent.parent}"
    )
    endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA") if summary["backend"] == "lambda" else None
    if endpoint:  # the invoker reached this endpoint instead of AWS (e.g. the local stand-in)
        source += f", Lambda at {endpoint}, not AWS"
    name, cal = from_runs(runs, summary["backend"], summary["wall_s"], load(DEFAULT_FILE), source)
    write(output, {name: cal})
    if install:
        merge_into(persistent_path(), {name: cal})
    return name, cal


def install(path: str | os.PathLike) -> list[str]:
    """Merge a calibration file's sections into the installed calibration; the section names."""
    sections = {name: _section(Path(path), name, raw) for name, raw in _read(Path(path))["backends"].items()}
    merge_into(persistent_path(), sections)
    return list(sections)
