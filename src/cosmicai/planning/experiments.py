"""The experiment grid, run: every cell of a grid file as its own workflow sub-run, then one table and the plots.

A grid file (config/experiments/*.yaml) names one dataset, data sizes as row counts (each cell reads
rows [0, N) of it), partition sizes, Lambda memory sizes, Lambda concurrency (lambda.max_in_flight) and
repetitions; `plan_only` data sizes (1TB: larger than the dataset or than this machine can run) are
planned, once each, and never run. `cosmicai experiments GRID --dry-run` prints every cell's plan and
the total; the workflow prints the same table when it reads a grid. Each cell runs the whole
workflow (`snakemake --profile profiles/<backend>`) with its own config file and results folder,
results/experiments/<grid>/<cell>/, one cell after another (each sub-run is itself parallel). Why a
driver and nested runs rather than one DAG: every cell is then exactly a normal run (its summaries,
plan-vs-actual, calibration and report are the ones a user gets), a failed cell leaves the others
done and a rerun redoes only what is missing, and nothing depends on Snakemake's module internals.

Reuse: the row-limited dataset of a data size is written once and shared by its cells; a cell whose
data size and partition size an earlier cell already partitioned starts from that cell's partitions
(hard links), so only the first cell of each pair partitions.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from cosmicai.errors import CosmicaiError

GRID_KEYS = {"name", "dataset", "checkpoint", "rows", "partition_mb", "memory_mb", "concurrency", "plan_only", "repetitions", "config"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of the grid, one repetition."""

    rows: int
    partition_mb: float
    memory_mb: int | None
    rep: int
    concurrency: int | None = None  # Lambda: invocations in flight (lambda.max_in_flight)
    plan_only: bool = False  # planned, never run (a size beyond the dataset)

    @property
    def name(self) -> str:
        mem = f"_m{self.memory_mb}" if self.memory_mb else ""
        conc = f"_c{self.concurrency}" if self.concurrency else ""
        return f"r{self.rows}_p{self.partition_mb:g}{mem}{conc}_" + ("plan" if self.plan_only else f"rep{self.rep}")


def _list(grid: dict, key: str, path: Path, cast: type) -> list:
    value = grid.get(key)
    values = value if isinstance(value, list) else [value]
    try:
        out = [cast(v) for v in values]
    except (TypeError, ValueError):
        raise CosmicaiError(path, f"{key}: expected a list of numbers, got {value!r}") from None
    if not out or any(v <= 0 for v in out):
        raise CosmicaiError(path, f"{key}: expected numbers > 0, got {value!r}")
    return out


def _sizes(grid: dict, path: Path) -> list[int]:
    """plan_only: data sizes (12.6GB, 1TB) or row counts, as rows."""
    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.planning.units import parse_size

    value = grid.get("plan_only") or []
    out = []
    for v in value if isinstance(value, list) else [value]:
        out.append(int(v) if isinstance(v, int) and v > 0 else round(parse_size(str(v), f"{path}: plan_only") / ROW_BYTES))
    return out


def load_grid(path: str | os.PathLike) -> dict:
    """A grid file, checked: name, dataset, checkpoint, rows, partition_mb, [memory_mb], [repetitions], [config]."""
    path = Path(path)
    try:
        grid = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CosmicaiError(path, f"not a readable grid file: {exc}") from None
    if not isinstance(grid, dict):
        raise CosmicaiError(path, "not a grid file: expected a mapping")
    unknown = sorted(set(grid) - GRID_KEYS)
    if unknown:
        raise CosmicaiError(path, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(GRID_KEYS))})")
    for key in ("name", "dataset", "checkpoint"):
        if not isinstance(grid.get(key), str) or not grid[key]:
            raise CosmicaiError(path, f"{key}: required (a string)")
    return {
        "name": grid["name"],
        "dataset": grid["dataset"],
        "checkpoint": grid["checkpoint"],
        "rows": _list(grid, "rows", path, int),
        "partition_mb": _list(grid, "partition_mb", path, float),
        "memory_mb": _list(grid, "memory_mb", path, int) if grid.get("memory_mb") else [],
        "concurrency": _list(grid, "concurrency", path, int) if grid.get("concurrency") else [],
        "plan_only": _sizes(grid, path),
        "repetitions": int(grid.get("repetitions") or 1),
        "config": grid.get("config") or {},
    }


def cells(grid: dict, backend: str, plan_only: bool = False) -> list[Cell]:
    """Every cell to run: data sizes x partition sizes x (Lambda memory sizes x concurrency) x repetitions; with
    `plan_only`, also the plan-only sizes' cells (one each, no repetitions)."""
    lam = backend == "lambda"
    memories = grid["memory_mb"] if lam and grid["memory_mb"] else [None]
    concs = grid["concurrency"] if lam and grid.get("concurrency") else [None]
    run = [
        Cell(r, mb, mem, rep, conc)
        for r, mb, mem, conc, rep in itertools.product(
            grid["rows"], grid["partition_mb"], memories, concs, range(1, grid["repetitions"] + 1)
        )
    ]
    if not plan_only:
        return run
    planned = [
        Cell(r, mb, mem, 1, conc, plan_only=True)
        for r, mb, mem, conc in itertools.product(grid.get("plan_only", []), grid["partition_mb"], memories, concs)
    ]
    return run + planned


def cell_config(cell: Cell, base_config: dict, grid: dict) -> dict:
    """The workflow config of one cell: the invocation's, then the grid's `config:`, then the cell's own values."""
    config = json.loads(json.dumps(base_config))
    for key, value in grid["config"].items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    config.update(partition_mb=cell.partition_mb, experiments="")
    if cell.memory_mb:
        config["lambda"] = {**config.get("lambda", {}), "memory_mb": cell.memory_mb}
    if cell.concurrency:
        config["lambda"] = {**config.get("lambda", {}), "max_in_flight": cell.concurrency}
    return config


def plan_grid(grid: dict, base_config: dict, calibration_file: str | None = None) -> tuple[list[Cell], list]:
    """Every cell's plan (plan-only cells included), under the invocation's backend, with the named calibration."""
    from cosmicai.data.dataset import ROW_BYTES
    from cosmicai.planning import calibration
    from cosmicai.planning.context import workflow_settings
    from cosmicai.planning.estimate import estimate

    backend = base_config.get("backend", "local")
    cals = calibration.load(calibration_file or base_config.get("plan_calibration") or None)
    todo = cells(grid, backend, plan_only=True)
    plans = []
    for cell in todo:
        config = cell_config(cell, base_config, grid)
        # A cell that runs reads a local row subset (uploaded under Lambda); a plan-only cell the grid's dataset itself
        # (an s3:// dataset: nothing to upload, as the paper's 1 TB run).
        config["dataset"] = grid["dataset"] if cell.plan_only else "subset.h5"
        context = {"backend": backend, "config": config, "cores": None}
        plans.append(estimate(workflow_settings(context, cell.rows * ROW_BYTES), cals))
    return todo, plans


def format_grid_plan(grid: dict, todo: list[Cell], plans: list) -> str:
    """One line per cell (its plan) and the total: cells run one after another, so wall times add up."""
    from cosmicai.planning.units import human_size, human_time

    cols = ["cell", "data", "MiB/part", "memory", "at once", "jobs", "wall time", "bound by", "cost (USD)", "run"]
    rows = []
    for cell, p in zip(todo, plans):
        rows.append(
            [
                cell.name,
                human_size(p.settings.data_bytes),
                f"{p.settings.partition_mb:g}",
                f"{p.settings.memory_mb}" if p.backend == "lambda" else "-",
                f"{p.concurrency:,}",
                f"{p.jobs:,}",
                human_time(p.wall_s),
                p.bound_by,
                f"{p.cost_usd:.4f}" if p.priced else "unpriced",
                "plan only" if cell.plan_only else "run",
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    right = {1, 2, 3, 4, 5, 6, 8}

    def fmt(r: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    ran = [p for c, p in zip(todo, plans) if not c.plan_only]
    unpriced = sum(not p.priced for p in plans)
    total = (
        f"total: {len(todo)} cells ({len(ran)} to run, {len(todo) - len(ran)} plan only); the runs one after another "
        f"{human_time(sum(p.wall_s for p in ran))}, ${sum(p.cost_usd for p in ran if p.priced):.2f}; with the plan-only cells "
        f"{human_time(sum(p.wall_s for p in plans))}, ${sum(p.cost_usd for p in plans if p.priced):.2f}"
        + (f" ({unpriced} cells unpriced, not counted)" if unpriced else "")
    )
    head = f"experiment grid {grid['name']} ({plans[0].backend}; calibration: {plans[0].calibration['label']})"
    return "\n".join([head, fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, rows), total])


def subset(dataset: str, rows: int, output: Path) -> Path:
    """Rows [0, rows) of `dataset` as their own file (written once, reused by every cell of that size)."""
    from cosmicai.atomic import atomic_path
    from cosmicai.data.dataset import DatasetWriter, inspect, iter_batches

    if output.exists():
        return output
    info = inspect(dataset, check_ids=False)
    if rows > info.n_rows:
        raise CosmicaiError(dataset, f"has {info.n_rows:,} rows; the grid asks for {rows:,}")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        first = next(iter_batches(dataset, 1, 0, 1))
        with DatasetWriter(tmp, rows, first.images.shape[-2:], info.has_redshift) as out:
            for b in iter_batches(dataset, 1024, 0, rows):
                out.write(b.images, b.magnitudes, b.object_id, b.redshift)
    return output


def _reuse_partitions(source: Path, target: Path) -> bool:
    """Reuse an earlier cell's partitioning (same data, same partition size): its manifest, and hard links to any partition files."""
    if not (source / "manifest.json").exists() or (target / "manifest.json").exists():
        return False
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        if f.name == "manifest.json":
            continue
        try:
            os.link(f, target / f.name)
        except OSError:
            shutil.copy2(f, target / f.name)
    shutil.copyfile(source / "manifest.json", target / "manifest.json")  # a copy, not a link: touching it must not touch the source's
    return True


def run_cell(cell: Cell, base_config: dict, grid: dict, data: Path, outdir: Path, snakefile: str, profile: str, extra: list[str]) -> dict:
    """Run one cell's workflow; its table row from its summaries (with an error instead when it failed)."""
    results = outdir / cell.name
    config = cell_config(cell, base_config, grid)
    config.update(dataset=str(data), checkpoint=grid["checkpoint"], results=str(results))
    results.mkdir(parents=True, exist_ok=True)
    cfg = results / "cell_config.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = ["snakemake", "-s", snakefile, "--profile", profile, "--configfile", str(cfg), "--nolock", *extra]
    with open(results / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    return cell_row(
        cell, results, None if proc.returncode == 0 else f"sub-run failed (exit {proc.returncode}): {results / 'snakemake.log'}"
    )


def cell_row(cell: Cell, results: Path, error: str | None) -> dict:
    """A cell's measured and planned figures (from its run and cost summaries) and their ratios."""
    row: dict[str, Any] = {
        "cell": cell.name,
        "rows": cell.rows,
        "partition_mb": cell.partition_mb,
        "memory_mb": cell.memory_mb or 0,
        "concurrency": cell.concurrency or 0,
        "rep": cell.rep,
        "results": str(results),
        "error": error or "",
    }
    try:
        run = json.loads((results / "summary" / "run_summary.json").read_text())
        cost = json.loads((results / "summary" / "cost_summary.json").read_text())
    except OSError:
        return {**row, "error": error or "no summaries"}
    pva = cost.get("plan_vs_actual", {})
    est = {r["quantity"]: r for r in pva.get("rows", [])}
    row.update(
        backend=run["backend"],
        data_bytes=run["rows"] * _row_bytes(),
        partitions=run["partitions"],
        measured_wall_s=run["wall_s"],
        planned_wall_s=est.get("wall_s", {}).get("estimate"),
        wall_ratio=pva.get("time_ratio"),
        measured_cost_usd=cost["total_usd"],
        planned_cost_usd=est.get("cost_usd", {}).get("estimate"),
        cost_ratio=pva.get("cost_ratio"),
        samples_per_s=run.get("samples_per_s"),
    )
    return row


def _row_bytes() -> int:
    from cosmicai.data.dataset import ROW_BYTES

    return ROW_BYTES


def run_grid(
    grid_path: str | os.PathLike,
    base_config: dict,
    outdir: str | os.PathLike,
    snakefile: str,
    profiles: str,
    extra: list[str] | None = None,
) -> list[dict]:
    """Run every cell of the grid under `profiles`/<backend> (one after another); write table.csv/.json and the plots."""
    from cosmicai.atomic import write_json

    grid = load_grid(grid_path)
    backend = base_config["backend"]
    profile = str(Path(profiles) / backend)
    outdir = Path(outdir)
    table = []
    partitioned: dict[tuple[int, float], Path] = {}
    for cell in cells(grid, backend):
        data = subset(grid["dataset"], cell.rows, outdir / "data" / f"rows_{cell.rows}.h5")
        key = (cell.rows, cell.partition_mb)
        if key in partitioned:
            _reuse_partitions(partitioned[key], outdir / cell.name / "partitions")
        print(f"cell {cell.name}: running ({backend})", file=sys.stderr, flush=True)
        row = run_cell(cell, base_config, grid, data, outdir, snakefile, profile, extra or [])
        print(f"cell {cell.name}: {row['error'] or 'done'}", file=sys.stderr, flush=True)
        if not row["error"]:
            partitioned.setdefault(key, outdir / cell.name / "partitions")
        table.append(row)
    planned_cells, plans = plan_grid(grid, base_config)
    for cell, plan in zip(planned_cells, plans):
        if cell.plan_only:  # planned, never run: the table's planned columns only
            table.append(
                {
                    "cell": cell.name,
                    "rows": cell.rows,
                    "partition_mb": cell.partition_mb,
                    "memory_mb": cell.memory_mb or 0,
                    "concurrency": cell.concurrency or 0,
                    "rep": 0,
                    "results": "",
                    "error": "",
                    "plan_only": True,
                    "backend": backend,
                    "data_bytes": plan.settings.data_bytes,
                    "partitions": plan.partitions,
                    "planned_wall_s": plan.wall_s,
                    "planned_cost_usd": plan.cost_usd if plan.priced else None,
                }
            )
    write_table(table, outdir)
    failed = [r["cell"] for r in table if r["error"]]
    write_json(outdir / "grid.json", {"grid": str(grid_path), "backend": backend, "cells": len(table), "failed": failed})
    if failed:
        raise CosmicaiError(grid_path, f"{len(failed)} of {len(table)} cells failed: {', '.join(failed)} (their snakemake.log says why)")
    return table


def write_table(table: list[dict], outdir: Path) -> None:
    """table.csv, table.json and the plots (measured against planned; wall time and cost against data size)."""
    import pandas as pd

    from cosmicai.atomic import atomic_path, write_json
    from cosmicai.planning.plots import plot_cells_by_size, plot_measured_vs_planned

    frame = pd.DataFrame(table)
    with atomic_path(outdir / "table.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_json(outdir / "table.json", table)
    ok = [r for r in table if not r["error"]]
    if ok:
        plot_measured_vs_planned(ok, outdir / "measured_vs_planned.png")
        plot_cells_by_size(ok, outdir / "wall_cost_by_size.png")
