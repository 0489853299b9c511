"""Plots of plans as the paper draws them: wall time and cost against data size, one line per backend and
partition size (and Lambda memory when it varies); and measured against planned, per grid cell."""

from __future__ import annotations

import os
from collections import defaultdict

from cosmicai.planning.estimate import Plan


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, output: str | os.PathLike) -> None:
    from cosmicai.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)


def scaling_sizes(low: float, high: float = 2**40, n: int = 25, extra: tuple[float, ...] = ()) -> list[float]:
    """Data sizes spaced evenly on a log scale from `low` to `high` bytes, with `extra` ones."""
    import numpy as np

    return sorted(set(np.geomspace(low, high, n).tolist() + list(extra)))


def plot_sweep(plans: list[Plan], output: str | os.PathLike, title: str = "", actual: list[dict] | None = None) -> None:
    """Wall time and cost against data size, a line per (backend, partition size, Lambda memory), as a PNG.

    `actual` ([{"label", "data_bytes", "wall_s", "cost_usd"}]) marks measured runs.
    """
    plt = _pyplot()
    memories = {p.settings.memory_mb for p in plans if p.backend == "lambda"}
    curves: dict[str, list[Plan]] = defaultdict(list)
    for p in plans:
        key = f"{p.backend} {p.settings.partition_mb:g} MB"
        if p.backend == "lambda" and len(memories) > 1:
            key += f" @{p.settings.memory_mb} MB"
        if len({q.settings.precision for q in plans}) > 1:
            key += f" {p.settings.precision}"
        curves[key].append(p)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, group in curves.items():
        group.sort(key=lambda p: p.settings.data_bytes)
        gib = [p.settings.data_bytes / 2**30 for p in group]
        (line,) = ax_t.plot(gib, [p.wall_s for p in group], marker=".", label=key)
        infeasible = [(g, p.wall_s) for g, p in zip(gib, group) if not p.feasible]
        if infeasible:
            ax_t.scatter(*zip(*infeasible), marker="x", color=line.get_color(), zorder=4)
        cost = [p.cost_usd for p in group]
        if any(cost):
            ax_c.plot(gib, cost, marker=".", color=line.get_color(), label=key)
        else:
            ax_c.plot([], [], color=line.get_color(), label=f"{key} (no rates in config)")
    for run in actual or []:
        x = run["data_bytes"] / 2**30
        ax_t.scatter([x], [run["wall_s"]], marker="*", s=140, color="k", zorder=5, label=run["label"])
        if run.get("cost_usd", 0) > 0:
            ax_c.scatter([x], [run["cost_usd"]], marker="*", s=140, color="k", zorder=5, label=run["label"])
    ax_t.set(xscale="log", yscale="log", xlabel="data size (GiB)", ylabel="planned wall time (s)", title="wall time (x: cannot run)")
    ax_c.set(xscale="log", yscale="log", xlabel="data size (GiB)", ylabel="planned cost (USD)", title="cost")
    for ax in (ax_t, ax_c):
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, handles))  # one legend entry per measured-run label
        ax.legend(seen.values(), seen.keys(), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, output)


def plot_measured_vs_planned(cells: list[dict], output: str | os.PathLike) -> None:
    """Per grid cell, measured against planned wall time and cost (log-log, the diagonal is a perfect plan)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, (name, unit) in zip(axes, (("wall_s", "s"), ("cost_usd", "USD"))):
        pts = [
            (c[f"planned_{name}"], c[f"measured_{name}"], c["cell"])
            for c in cells
            if c.get(f"planned_{name}") and c.get(f"measured_{name}")
        ]
        if not pts:
            ax.text(0.5, 0.5, f"no {name} to compare (no rates in config?)", ha="center", transform=ax.transAxes)
            continue
        for x, y, label in pts:
            ax.scatter([x], [y], s=30)
            ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        lo = min(min(x, y) for x, y, _ in pts) / 1.5
        hi = max(max(x, y) for x, y, _ in pts) * 1.5
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, label="measured = planned")
        ax.plot([lo, hi], [2 * lo, 2 * hi], color="grey", lw=0.5, ls="--", label="x2")
        ax.plot([lo, hi], [lo / 2, hi / 2], color="grey", lw=0.5, ls="--")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"planned {name} ({unit})",
            ylabel=f"measured {name} ({unit})",
            title=f"{name}: measured against planned",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, output)
