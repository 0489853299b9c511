"""The experiment grid: grid files, cells, row-limited datasets, and a small grid run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.workflow import snakemake

from cosmicai.data.dataset import inspect, iter_batches
from cosmicai.errors import CosmicaiError
from cosmicai.planning.experiments import cells, load_grid, subset


def grid_file(tmp_path: Path, **over: object) -> Path:
    grid = {
        "name": "t",
        "dataset": "d.h5",
        "checkpoint": "m.safetensors",
        "rows": [100, 200],
        "partition_mb": [1, 2],
        "memory_mb": [2048, 4096],
        "repetitions": 2,
        **over,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_cells(tmp_path: Path) -> None:
    grid = load_grid(grid_file(tmp_path))
    assert len(cells(grid, "lambda")) == 2 * 2 * 2 * 2 and len(cells(grid, "local")) == 2 * 2 * 2  # memory: Lambda only
    assert cells(grid, "lambda")[0].name == "r100_p1_m2048_rep1" and cells(grid, "local")[0].name == "r100_p1_rep1"
    for bad, why in (
        ({"rows": [0]}, "rows"),
        ({"colour": 1}, "unknown key"),
        ({"dataset": ""}, "dataset: required"),
        ({"partition_mb": "x"}, "partition_mb"),
    ):
        with pytest.raises(CosmicaiError, match=why):
            load_grid(grid_file(tmp_path, **bad))


def test_paper_grid_plans_every_cell_and_the_total() -> None:
    from helpers.cli import REPO, run_cli

    from cosmicai.config import load_config
    from cosmicai.planning.experiments import format_grid_plan, plan_grid

    grid = load_grid(REPO / "config" / "experiments" / "paper.yaml")
    todo = cells(grid, "lambda", plan_only=True)
    assert len(cells(grid, "lambda")) == 4 * 4 * 3 and len(todo) == 48 + 4  # the 1 TB run: once per partition size
    assert todo[-1].plan_only and todo[-1].name == "r53603336_p100_m10240_c500_plan" and todo[0].concurrency == 500
    assert len(cells(grid, "local", plan_only=True)) == 4 * 4 * 3 + 4  # memory and concurrency: Lambda only
    config = load_config([REPO / "config" / "config.yaml", REPO / "config" / "lambda.yaml"])
    planned, plans = plan_grid(grid, config, str(REPO / "config" / "calibration" / "paper.yaml"))
    assert [p.settings.concurrency for p in plans] == [500] * 52 and plans[-1].partitions == 10_486
    text = format_grid_plan(grid, planned, plans)
    assert text.count("  plan only") == 4 and text.splitlines()[-1].startswith("total: 52 cells (48 to run, 4 plan only)")
    out = run_cli(
        "experiments",
        REPO / "config/experiments/paper.yaml",
        "--dry-run",
        "--configfile",
        REPO / "config/config.yaml",
        REPO / "config/lambda.yaml",
        check=True,
        cwd=REPO,
    ).stdout
    assert out.count("\nr") == 52 and "total: 52 cells" in out


def test_workflow_dry_run_of_a_grid_prints_every_cell(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    from helpers.cli import REPO
    from helpers.workflow import tiny_config

    config = tiny_config(tiny_dataset, random_checkpoint, experiments=str(REPO / "config" / "experiments" / "paper.yaml"))
    config["lambda"]["bucket"] = ""
    proc = snakemake(tmp_path, "lambda", config, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "experiment grid paper (lambda" in proc.stdout and "total: 52 cells (48 to run, 4 plan only)" in proc.stdout
    assert "cosmicai plan for this run" not in proc.stdout  # the grid's cells, not the demo dataset's plan


def test_subset_is_the_first_rows(tmp_path: Path, tiny_dataset: Path) -> None:
    out = subset(str(tiny_dataset), 120, tmp_path / "rows_120.h5")
    assert inspect(out).n_rows == 120
    first = next(iter_batches(out, 120))
    assert (first.object_id == next(iter_batches(tiny_dataset, 120, 0, 120)).object_id).all()
    with pytest.raises(CosmicaiError, match="has 300 rows"):
        subset(str(tiny_dataset), 301, tmp_path / "rows_301.h5")


@pytest.mark.slow
def test_small_grid_runs_end_to_end(tmp_path: Path, tiny_dataset: Path, random_checkpoint: Path) -> None:
    grid = grid_file(
        tmp_path,
        dataset=str(tiny_dataset),
        checkpoint=str(random_checkpoint),
        rows=[150, 300],
        partition_mb=[1.5],
        memory_mb=None,
        repetitions=2,
    )
    proc = snakemake(tmp_path, "local", None, "--config", f"experiments={grid}")
    assert proc.returncode == 0, proc.stderr[-3000:] + (tmp_path / "logs" / "run_experiments.log").read_text()[-3000:]
    out = tmp_path / "results" / "experiments" / "t"
    table = pd.read_csv(out / "table.csv")
    assert list(table.cell) == ["r150_p1.5_rep1", "r150_p1.5_rep2", "r300_p1.5_rep1", "r300_p1.5_rep2"]
    assert list(table.partitions) == [2, 2, 4, 4] and (table.error.isna()).all()
    assert (table.measured_wall_s > 0).all() and (table.planned_wall_s > 0).all() and (table.wall_ratio > 0).all()
    for cell in table.cell:  # each cell its own run, with its own plan-vs-actual
        cost = json.loads((out / cell / "summary" / "cost_summary.json").read_text())
        assert cost["plan_vs_actual"]["rows"][0]["quantity"] == "wall_s"
    # the second repetition started from the first one's partitioning (the manifest of row ranges; with
    # partition_copy its files are hard links), not a new one
    rep1, rep2 = (out / cell / "partitions" for cell in ("r150_p1.5_rep1", "r150_p1.5_rep2"))
    assert (rep2 / "manifest.json").read_text() == (rep1 / "manifest.json").read_text()
    assert all((rep2 / f.name).stat().st_ino == f.stat().st_ino for f in rep1.glob("*.h5"))
    for png in ("measured_vs_planned.png", "wall_cost_by_size.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
