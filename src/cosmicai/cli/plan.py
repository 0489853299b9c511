"""Planning commands: estimate runs before they happen (one configuration, a sweep, a recommendation), record a run's speeds."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

BACKEND_CHOICES = ("local", "slurm", "slurm-gpu", "lambda")


def _print(text: str) -> None:
    """Print, and stop quietly when the reader went away (`cosmicai plan ... | head`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _backends(a: argparse.Namespace) -> tuple[str, ...]:
    from cosmicai.errors import CosmicaiError

    if a.compare:
        return BACKEND_CHOICES
    if not a.backend:
        raise CosmicaiError("plan", "give --backend (local, slurm, slurm-gpu, lambda; a list: lambda,slurm-gpu) or --compare")
    names = tuple(b.strip() for b in a.backend.split(","))
    bad = [b for b in names if b not in BACKEND_CHOICES]
    if bad:
        raise CosmicaiError("--backend", f"unknown backend(s) {', '.join(bad)} (one of {', '.join(BACKEND_CHOICES)})")
    return names


def _checked(a: argparse.Namespace) -> dict:
    """Every numeric option of `cosmicai plan`, finite and in range (a CosmicaiError, one line, otherwise)."""
    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.planning.estimate import LAMBDA_MEMORY_MB
    from cosmicai.planning.units import number, parse_values

    def each(text: str | None, what: str, **kw) -> tuple:
        return tuple(parse_values(text, what, lambda t: number(t, what, **kw))) if text else ()

    def one(value: str | None, what: str, **kw) -> float | None:
        return None if value is None else number(value, what, **kw)

    ppj = a.partitions_per_job
    return dict(
        rows=each(a.rows, "--rows", integer=True),
        partition_mb=each(a.partition_mb, "--partition-mb", low=ROW_BYTES / 2**20, open_low=False),
        memory_mb=each(a.memory_mb, "--memory-mb", low=LAMBDA_MEMORY_MB[0], high=LAMBDA_MEMORY_MB[1], integer=True, open_low=False),
        concurrency=each(a.concurrency, "--concurrency", integer=True),
        nodes=one(a.nodes, "--nodes", integer=True),
        cores_per_node=one(a.cores_per_node, "--cores-per-node", integer=True),
        gpus=one(a.gpus, "--gpus", integer=True),
        threads=one(a.threads, "--threads", integer=True),
        cores=one(a.cores, "--cores", integer=True),
        queue_wait_s=one(a.queue_wait_s, "--queue-wait-s", open_low=False),
        cpu_hour_usd=one(a.cpu_hour_usd, "--cpu-hour-usd", open_low=False),
        gpu_hour_usd=one(a.gpu_hour_usd, "--gpu-hour-usd", open_low=False),
        partitions_per_job=ppj if ppj in (None, "auto") else number(ppj, "--partitions-per-job", integer=True),
    )


def run_plan(a: argparse.Namespace) -> str:
    """`cosmicai plan` from its parsed arguments: the formatted plans (and recommendation); writes tables and the plot if asked.

    A recommendation that nothing qualifies for raises (exit 1) after the table, naming what dominates."""
    import dataclasses

    from cosmicai.config import load_config
    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.errors import CosmicaiError
    from cosmicai.planning import calibration
    from cosmicai.planning.context import backend_config, profile_config, settings_from_config
    from cosmicai.planning.formatting import format_plans
    from cosmicai.planning.recommend import format_recommendation, none_qualifies, recommend
    from cosmicai.planning.sweep import Axes, sweep, write_table
    from cosmicai.planning.units import parse_duration, parse_money, parse_size, parse_values

    if a.paper is not None:
        from cosmicai.planning.paper import paper_table

        return paper_table(a.paper or "config/calibration/paper.yaml")
    v = _checked(a)
    deadline = parse_duration(a.deadline) if a.deadline else None
    budget = parse_money(a.budget) if a.budget else None
    run = json.loads(Path(a.run_summary).read_text()) if a.run_summary else None
    if a.data_size is None and a.rows is None and run is None:
        raise CosmicaiError("plan", "give --data-size or --rows (or --run-summary: that run's rows)")
    backends = _backends(a)
    if a.data_size is not None:
        sizes = parse_values(a.data_size, "--data-size", lambda t: parse_size(t, "--data-size"))
    else:
        sizes = [float(n * ROW_BYTES) for n in (v["rows"] or (run["rows"],))]
    axes = Axes(
        backends=backends,
        data_bytes=tuple(sizes),
        partition_mb=v["partition_mb"],
        memory_mb=tuple(int(m) for m in v["memory_mb"]),
        concurrency=tuple(int(c) for c in v["concurrency"]),
        precision=tuple(p.strip() for p in a.precision.split(",")) if a.precision else (),
    )
    context = json.loads(Path(a.context).read_text()) if a.context else None
    config = context["config"] | {"backend": context["backend"]} if context else load_config(a.configfile) if a.configfile else None
    cores = v["cores"] or (context or {}).get("cores")
    # Each backend with its own profile's settings: the config given (a run's context) for its own backend, and for
    # the others that config with their profile's config file (config/slurm-gpu.yaml: batch 4096, 512 partitions per job).
    over = {k: v[k] for k in ("nodes", "cores_per_node", "gpus", "threads", "queue_wait_s", "cpu_hour_usd", "gpu_hour_usd")}
    bases = {
        b: settings_from_config(
            backend_config(config, b) if config is not None else profile_config(b),
            b,
            sizes[0],
            cores=cores,
            architecture=a.architecture,
            data_in_s3=a.data_in_s3 or None,
            partitions_per_job=v["partitions_per_job"],
            **over,
        )
        for b in backends
    }
    cals = calibration.load(a.calibration)
    plans = [p for b in backends for p in sweep(bases[b], dataclasses.replace(axes, backends=(b,)), cals)]
    for path in a.output or []:
        write_table(plans, path)
    if a.plot:
        _plot(a, bases, axes, cals, run)
    text = format_plans(plans, a.format)  # with the assumptions, also under --deadline/--budget
    if deadline or budget:
        rec = recommend(plans, deadline, budget)
        if rec.best is None:
            _print(text)
            raise CosmicaiError("plan", f"{rec.goal}: {none_qualifies(rec)}")
        text = f"{text}\n\n{format_recommendation(rec)}" if a.format == "table" else text
        if a.format != "table":
            print(format_recommendation(rec), file=sys.stderr)
    return text


def _plot(a: argparse.Namespace, bases: dict, axes, cals, run: dict | None) -> None:
    """Wall time and cost from 1 GiB (or less) to 1 TiB for the swept backends, partition sizes and memories."""
    import dataclasses

    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.planning.plots import plot_sweep, scaling_sizes
    from cosmicai.planning.sweep import sweep

    actual = None
    if run and a.cost_summary:
        cost = json.loads(Path(a.cost_summary).read_text())
        actual = [
            {
                "label": f"this run ({run['backend']})",
                "data_bytes": run["rows"] * ROW_BYTES,
                "wall_s": run["wall_s"],
                "cost_usd": cost["total_usd"],
            }
        ]
    low = min([2**30, *axes.data_bytes] + ([actual[0]["data_bytes"]] if actual else []))
    curve_axes = dataclasses.replace(axes, data_bytes=tuple(scaling_sizes(low, extra=axes.data_bytes)), concurrency=axes.concurrency[:1])
    parts = []
    if "lambda" in bases:
        s = bases["lambda"]
        parts.append(
            f"Lambda concurrency {axes.concurrency[0] if axes.concurrency else s.concurrency or 'default'}"
            + (", dataset in S3" if s.data_in_s3 else "")
        )
    if "slurm" in bases:
        s = bases["slurm"]
        parts.append(f"slurm {s.nodes} x {s.cores_per_node} cores, {s.threads} threads/job, {s.partitions_per_job} partitions/job")
    if "slurm-gpu" in bases:
        s = bases["slurm-gpu"]
        parts.append(f"slurm-gpu {s.gpus} GPU(s), batch {s.batch_size}, {s.partitions_per_job} partitions/job")
    if "local" in bases:
        parts.append(f"local {bases['local'].cores} cores, {bases['local'].threads} threads/job")
    title = "cosmicai plan: " + "; ".join(parts)
    plans = [p for b in axes.backends for p in sweep(bases[b], dataclasses.replace(curve_axes, backends=(b,)), cals)]
    plot_sweep(plans, a.plot, title, actual)


def _plan(a: argparse.Namespace) -> None:
    _print(run_plan(a))


def _calibrate(a: argparse.Namespace) -> None:
    from cosmicai.planning.calibration import calibrate_run, install, persistent_path

    if a.install and not (a.sidecars or a.run_summary or a.output):
        names = install(a.install)
        _print(f"installed {', '.join(names)} from {a.install} into {persistent_path()}")
        return
    if not (a.sidecars and a.run_summary and a.output):
        from cosmicai.errors import CosmicaiError

        raise CosmicaiError("calibrate", "give --sidecars, --run-summary and --output (or --install FILE alone)")
    name, cal = calibrate_run(a.sidecars, a.run_summary, a.output, install=a.install is not None)
    where = f" and installed into {persistent_path()}" if a.install is not None else " (plans use it when named: --calibration)"
    _print(
        f"{name}: {cal.samples_per_s:.0f} samples/s at {cal.threads:g} threads ({cal.runtime} {cal.precision}), "
        f"{cal.fixed_s:.2f} s fixed + {cal.overhead_s:.2f} s between jobs -> {a.output}{where}"
    )


def _experiments(a: argparse.Namespace) -> None:
    from cosmicai.config import load_config
    from cosmicai.planning.experiments import run_grid

    config = json.loads(a.config_json) if a.config_json else load_config(a.configfile)
    import shlex

    if a.dry_run:
        from cosmicai.planning.experiments import format_grid_plan, load_grid, plan_grid

        grid = load_grid(a.grid)
        _print(format_grid_plan(grid, *plan_grid(grid, config, a.calibration)))
        return
    if not a.outdir:
        from cosmicai.errors import CosmicaiError

        raise CosmicaiError("experiments", "give --outdir (or --dry-run: every cell's plan and the total, nothing run)")
    table = run_grid(a.grid, config, a.outdir, a.snakefile, a.profiles, shlex.split(a.snakemake_args))
    for r in (r for r in table if not r.get("plan_only")):
        _print(f"{r['cell']}: wall {r['measured_wall_s']:.1f} s measured, {r['planned_wall_s']:.1f} s planned (x{r['wall_ratio']:.2f})")
    _print(f"table: {a.outdir}/table.csv; plots: {a.outdir}/measured_vs_planned.png, {a.outdir}/wall_cost_by_size.png")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser(
        "plan",
        help="partitions, jobs, wall time and cost of runs on each backend, before running them; sweeps and a recommendation",
        description="Every sweepable option takes a value, a list (25,50,75,100) or a range start:stop:step (2048:10240:2048); "
        "one plan per combination.",
    )
    size = s.add_mutually_exclusive_group()
    size.add_argument("--data-size", help="dataset size(s) of model-ready rows, binary units: 12.6GB, 1TB, 1GB,12.6GB,1TB")
    size.add_argument("--rows", help="instead of --data-size: number(s) of galaxies")
    s.add_argument("--partition-mb", help="partition size(s) in MiB (default: the config's partition_mb)")
    s.add_argument("--backend", help="backend(s): local, slurm, slurm-gpu, lambda (a list: lambda,slurm-gpu)")
    s.add_argument("--compare", action="store_true", help="every backend side by side")
    s.add_argument("--memory-mb", help="Lambda memory size(s), 128-10240 MB (default: lambda.memory_mb)")
    s.add_argument("--concurrency", help="most jobs at once (Lambda default: lambda.max_in_flight, else profiles/lambda's 64)")
    s.add_argument("--precision", help="precision(s): fp32, bf16, tf32, fp16 (default: inference.precision); each needs a calibration")
    s.add_argument(
        "--partitions-per-job",
        help="cluster backends: partitions per job, or auto (default: inference.partitions_per_job of the config, or of each backend's profile)",
    )
    s.add_argument("--architecture", choices=("x86_64", "arm64"), help="Lambda architecture (default: lambda.architecture)")
    s.add_argument("--data-in-s3", action="store_true", help="Lambda: the dataset is already in S3 (no upload from here)")
    s.add_argument("--nodes", help="Slurm CPU nodes (default 1)")
    s.add_argument("--cores-per-node", help="Slurm cores per node (default 64)")
    s.add_argument("--gpus", help="Slurm GPUs, one job each (default 1)")
    s.add_argument("--queue-wait-s", help="Slurm queue wait before the first job (default 0)")
    s.add_argument("--threads", help="threads (cores) per job (default: inference.threads)")
    s.add_argument("--cores", help="local: cores of the machine (default: this one's)")
    s.add_argument("--cpu-hour-usd", help="price per CPU-hour (default: cost.cpu_hour_usd)")
    s.add_argument("--gpu-hour-usd", help="price per GPU-hour (default: cost.gpu_hour_usd)")
    s.add_argument("--deadline", help="recommend the cheapest configuration finishing within this: 10min, 600s, 2h")
    s.add_argument("--budget", help="recommend the fastest configuration within this: 5USD, $0.40 (with --deadline: both must hold)")
    s.add_argument(
        "--calibration", help="calibration file (default: the installed one, if any, over the shipped cosmicai/planning/calibration.yaml)"
    )
    s.add_argument("--configfile", nargs="+", help="workflow config files, merged in order (default: config/config.yaml)")
    s.add_argument("--context", help="instead of --configfile: a run's plan context (results/plan/context.json): its config and cores")
    s.add_argument(
        "--paper",
        nargs="?",
        const="",
        metavar="FILE",
        help="the paper's 12.6 GB runs (Lambda, HPC GPU, HPC CPU) planned beside its reported times and costs "
        "(default FILE: config/calibration/paper.yaml)",
    )
    s.add_argument("--format", choices=("table", "csv", "json"), default="table", help="what to print")
    s.add_argument(
        "--output", action="append", help="write the sweep, one row per combination, to FILE.csv, .json or .parquet (repeatable)"
    )
    s.add_argument("--plot", help="PNG of planned wall time and cost against data size, 1 GB to 1 TB, per backend and partition size")
    s.add_argument(
        "--run-summary",
        help="a run's run_summary.json: its rows (without --data-size/--rows); with --plot and --cost-summary, the run marked",
    )
    s.add_argument("--cost-summary", help="the run's cost summary (with --run-summary)")
    s.set_defaults(fn=_plan)
    s = sub.add_parser("experiments", help="run every cell of an experiment grid as its own workflow sub-run; one table and the plots")
    s.add_argument("grid", help="grid file (config/experiments/*.yaml)")
    s.add_argument("--outdir", help="where the cells' results folders, the table and the plots go (required unless --dry-run)")
    s.add_argument("--dry-run", action="store_true", help="print every cell's plan (plan-only cells too) and the total; run nothing")
    s.add_argument("--calibration", help="with --dry-run: the calibration to plan with (default: the config's plan_calibration)")
    cfg = s.add_mutually_exclusive_group()
    cfg.add_argument(
        "--configfile", nargs="+", help="workflow config files, merged in order (default: config/config.yaml); backend picks the profile"
    )
    cfg.add_argument("--config-json", help="instead: the whole workflow config as JSON (what the workflow's rule passes)")
    s.add_argument("--snakefile", default="workflow/Snakefile")
    s.add_argument("--profiles", default="profiles", help="folder of the profiles; each cell runs under PROFILES/<backend>")
    s.add_argument("--snakemake-args", default="", help="more arguments for every sub-run's snakemake, one string: '--cores 2'")
    s.set_defaults(fn=_experiments)
    s = sub.add_parser(
        "calibrate", help="record a run's measured speeds for `cosmicai plan` (the workflow runs this), or install a calibration"
    )
    s.add_argument("--sidecars", nargs="+", help="the run's per-partition timing .json files")
    s.add_argument("--run-summary", help="the run's run_summary.json")
    s.add_argument("--output", help="calibration .json to write (this run's backend and precision only)")
    s.add_argument(
        "--install",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="merge into the installed calibration that plans use unnamed: this run's (no FILE), or FILE's sections",
    )
    s.set_defaults(fn=_calibrate)
