"""The experiment grid, run: every cell of a grid file as its own workflow sub-run, then one table and the plots.

A grid file (config/experiments/*.yaml) names one dataset, data sizes as row counts (each cell reads
rows [0, N) of it), partition sizes, Lambda memory sizes and repetitions. Each cell runs the whole
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

GRID_KEYS = {"name", "dataset", "checkpoint", "rows", "partition_mb", "memory_mb", "repetitions", "config"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of the grid, one repetition."""

    rows: int
    partition_mb: float
    memory_mb: int | None
    rep: int

    @property
    def name(self) -> str:
        mem = f"_m{self.memory_mb}" if self.memory_mb else ""
        return f"r{self.rows}_p{self.partition_mb:g}{mem}_rep{self.rep}"


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
        "repetitions": int(grid.get("repetitions") or 1),
        "config": grid.get("config") or {},
    }


def cells(grid: dict, backend: str) -> list[Cell]:
    """Every cell: data sizes x partition sizes x (Lambda memory sizes) x repetitions."""
    memories = grid["memory_mb"] if backend == "lambda" and grid["memory_mb"] else [None]
    return [
        Cell(r, mb, mem, rep)
        for r, mb, mem, rep in itertools.product(grid["rows"], grid["partition_mb"], memories, range(1, grid["repetitions"] + 1))
    ]


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
    config = json.loads(json.dumps(base_config))  # the invocation's whole config, then the grid's and the cell's
    for key, value in grid["config"].items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    config.update(dataset=str(data), checkpoint=grid["checkpoint"], partition_mb=cell.partition_mb, results=str(results), experiments="")
    if cell.memory_mb:
        config["lambda"] = {**config["lambda"], "memory_mb": cell.memory_mb}
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
    from cosmicai.planning.plots import plot_measured_vs_planned

    frame = pd.DataFrame(table)
    with atomic_path(outdir / "table.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_json(outdir / "table.json", table)
    ok = [r for r in table if not r["error"]]
    if ok:
        plot_measured_vs_planned(ok, outdir / "measured_vs_planned.png")
        plot_by_size(ok, outdir / "wall_cost_by_size.png")


def plot_by_size(table: list[dict], output: Path) -> None:
    """Measured (points) and planned (lines) wall time and cost against data size, per partition size."""
    from collections import defaultdict

    from cosmicai.planning.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in table:
        groups[f"{r['partition_mb']:g} MB" + (f" @{r['memory_mb']} MB" if r["memory_mb"] else "")].append(r)
    for label, rows in sorted(groups.items()):
        rows.sort(key=lambda r: r["data_bytes"])
        x = [r["data_bytes"] / 2**20 for r in rows]
        for ax, name in zip(axes, ("wall_s", "cost_usd")):
            (line,) = ax.plot(x, [r[f"planned_{name}"] or float("nan") for r in rows], ls="--", label=f"{label} planned")
            ax.scatter(x, [r[f"measured_{name}"] for r in rows], color=line.get_color(), label=f"{label} measured")
    for ax, name, unit in zip(axes, ("wall time", "cost"), ("s", "USD")):
        ax.set(xlabel="data size (MiB)", ylabel=f"{name} ({unit})", title=f"{name}: measured (points), planned (dashed)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, output)
