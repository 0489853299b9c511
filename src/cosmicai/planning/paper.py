"""The paper's table reproduced: each run the paper reports for 12.6 GB, planned with its calibration, beside its figures.

The calibration file's `paper:` block (config/calibration/paper.yaml) names each reported run: its
backend, its setup in words, the reported wall time (and cost, where the paper gives one) and the plan
settings that describe it. Each run is planned with that same file's calibration; the table sets the
plan beside the paper with the ratio and the plan's largest terms, so the differences can be read off.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from cosmicai.errors import CosmicaiError
from cosmicai.planning import calibration
from cosmicai.planning.estimate import Plan, Settings, estimate
from cosmicai.planning.units import human_time, parse_size

RUN_KEYS = {"backend", "setup", "reported_wall_s", "reported_cost_usd", "settings", "why"}
SETTING_NAMES = {f.name for f in dataclasses.fields(Settings)} - {"backend", "data_bytes"}


def load_paper(path: str | Path) -> dict:
    """The `paper:` block of a calibration file, checked."""
    path = Path(path)
    try:
        block = (yaml.safe_load(path.read_text()) or {}).get("paper")
    except (OSError, yaml.YAMLError) as exc:
        raise CosmicaiError(path, f"not a readable calibration file: {exc}") from None
    if not isinstance(block, dict) or not isinstance(block.get("runs"), list) or not block["runs"]:
        raise CosmicaiError(path, "no paper: block with runs (see config/calibration/paper.yaml)")
    for i, run in enumerate(block["runs"]):
        unknown = sorted(set(run) - RUN_KEYS) + sorted(set(run.get("settings", {})) - SETTING_NAMES)
        if unknown or "backend" not in run or "reported_wall_s" not in run:
            raise CosmicaiError(path, f"paper.runs[{i}]: needs backend and reported_wall_s; unknown key(s): {', '.join(unknown) or 'none'}")
    return block


def paper_plans(path: str | Path) -> list[tuple[dict, Plan]]:
    """Each reported run with its plan (the file's calibration, the run's settings)."""
    block = load_paper(path)
    cals = calibration.load(path)
    size = parse_size(str(block.get("data_size", "12.6GB")), "paper.data_size")
    out = []
    for run in block["runs"]:
        s = Settings(run["backend"], size, **{"partition_mb": 100, **run.get("settings", {})})
        out.append((run, estimate(s, cals)))
    return out


def paper_table(path: str | Path) -> str:
    """The paper's runs beside their plans: reported and planned wall time and cost, the ratio, the largest terms."""
    block = load_paper(path)
    rows = []
    for run, plan in paper_plans(path):
        reported_cost = run.get("reported_cost_usd")
        terms = ", ".join(f"{k} {human_time(v)}" for k, v in plan.biggest_terms(4) if k != "merge")
        inference = plan.run_wall_s  # the paper reports inference time: the plan's without its merge term
        rows.append(
            [
                run["backend"],
                run.get("setup", ""),
                human_time(run["reported_wall_s"]),
                human_time(inference),
                f"{inference / run['reported_wall_s']:.2f}",
                f"${reported_cost:.2f}" if reported_cost is not None else "not reported",
                plan.cost_text(),
                terms,
            ]
        )
    cols = ["backend", "the paper's setup", "paper", "plan (no merge)", "plan/paper", "paper cost", "plan cost", "plan's largest terms"]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [block.get("reference", ""), ""]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [cols, ["-" * w for w in widths], *rows]]
    lines.append("")
    lines += [f"{run['backend']}: {run['why']}" for run in block["runs"] if run.get("why")]
    lines.append(f"calibration: {path} (its comments say which figures are the paper's and which are assumed)")
    return "\n".join(lines)
