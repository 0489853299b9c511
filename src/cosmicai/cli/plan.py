"""Planning commands: estimate a run before it happens, record a run's speeds."""

from __future__ import annotations

import argparse


def _plan(a: argparse.Namespace) -> None:
    from cosmicai.planning.plan import run_plan

    print(run_plan(a))


def _calibrate(a: argparse.Namespace) -> None:
    from cosmicai.planning.calibration import calibrate_run, persistent_path

    name, cal = calibrate_run(a.sidecars, a.run_summary, a.output, persist=not a.no_persist)
    where = f" and {persistent_path()}" if not a.no_persist else ""
    print(f"{name}: {cal.samples_per_s:.0f} samples/s at {cal.threads:g} threads, {cal.fixed_s:.2f} s fixed + {cal.overhead_s:.2f} s between jobs -> {a.output}{where}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands."""
    s = sub.add_parser("plan", help="partitions, jobs, wall time and cost of a run on each backend, before running it")
    size = s.add_mutually_exclusive_group()
    size.add_argument("--data-size", help="dataset size of model-ready rows, binary units: 12.6GB, 1TB, 500MB")
    size.add_argument("--rows", type=int, help="instead of --data-size: number of galaxies")
    s.add_argument("--partition-mb", type=float, help="partition size in MiB (default: the config's partition_mb)")
    s.add_argument("--backend", choices=("local", "slurm", "slurm-gpu", "lambda"))
    s.add_argument("--compare", action="store_true", help="every backend side by side")
    s.add_argument("--memory-mb", type=int, help="Lambda memory, 128-10240 MB (default: lambda.memory_mb)")
    s.add_argument("--concurrency", type=int, help="most jobs at once (Lambda default: the account's 1,000)")
    s.add_argument("--architecture", choices=("x86_64", "arm64"), help="Lambda architecture (default: lambda.architecture)")
    s.add_argument("--data-in-s3", action="store_true", help="Lambda: the partitions are already in S3 (no upload from here)")
    s.add_argument("--nodes", type=int, help="Slurm CPU nodes (default 1)")
    s.add_argument("--cores-per-node", type=int, help="Slurm cores per node (default 64)")
    s.add_argument("--gpus", type=int, help="Slurm GPUs, one job each (default 1)")
    s.add_argument("--queue-wait-s", type=float, help="Slurm queue wait before the first job (default 0)")
    s.add_argument("--threads", type=int, help="threads (cores) per job (default: inference.threads)")
    s.add_argument("--cores", type=int, help="local: cores of the machine (default: this one's)")
    s.add_argument("--cpu-hour-usd", type=float, help="price per CPU-hour (default: cost.cpu_hour_usd)")
    s.add_argument("--gpu-hour-usd", type=float, help="price per GPU-hour (default: cost.gpu_hour_usd)")
    s.add_argument("--calibration", help="calibration file (default: the persistent one the workflow updates, over the shipped cosmicai/planning/calibration.yaml)")
    s.add_argument("--configfile", nargs="+", help="workflow config files, merged in order (default: config/config.yaml)")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--plot", help="PNG of estimated wall time and cost against data size, 1 GB to 1 TB")
    s.add_argument("--run-summary", help="a run's run_summary.json: its rows (without --data-size/--rows); with --plot and --cost-summary, the run marked")
    s.add_argument("--cost-summary", help="the run's cost summary (with --run-summary)")
    s.set_defaults(fn=_plan)
    s = sub.add_parser("calibrate", help="record a run's measured speeds for `cosmicai plan` (the workflow runs this)")
    s.add_argument("--sidecars", nargs="+", required=True, help="the run's per-partition timing .json files")
    s.add_argument("--run-summary", required=True, help="the run's run_summary.json")
    s.add_argument("--output", required=True, help="calibration .json to write (this run's backend only)")
    s.add_argument("--no-persist", action="store_true", help="do not merge it into the persistent calibration")
    s.set_defaults(fn=_calibrate)
