"""Plots of plans as the paper draws them: wall time and cost against data size, one line per backend and
partition size (and Lambda memory when it varies); and measured against planned, per grid cell."""

from __future__ import annotations

import math
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
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # keeps a legend placed outside the axes
    _pyplot().close(fig)


def scaling_sizes(low: float, high: float = 2**40, n: int = 25, extra: tuple[float, ...] = ()) -> list[float]:
    """Data sizes spaced evenly on a log scale from `low` to `high` bytes, with `extra` ones."""
    import numpy as np

    return sorted(set(np.geomspace(low, high, n).tolist() + list(extra)))


# A colour family per backend (the swept value picks the shade) and a line style per swept value, so every
# curve differs in both colour and style and still reads as its backend's.
BACKEND_COLOURS = {"local": "Greys", "slurm": "Blues", "slurm-gpu": "Greens", "lambda": "Oranges"}
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 5)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def curve_styles(keys: list[tuple]) -> dict[tuple, dict]:
    """Matplotlib style (colour, line style, marker) for each curve key (backend first), distinct within each backend."""
    import matplotlib

    styles = {}
    for b, backend in enumerate(dict.fromkeys(k[0] for k in keys)):
        mine = [k for k in keys if k[0] == backend]
        cmap = matplotlib.colormaps[BACKEND_COLOURS.get(backend, "Purples")]
        for i, key in enumerate(mine):
            shade = 0.85 - 0.5 * i / max(1, len(mine) - 1) if len(mine) > 1 else 0.7
            j = b + i  # backends start at different styles: one curve each still differs in style, not only colour
            styles[key] = {"color": cmap(shade), "ls": LINE_STYLES[j % len(LINE_STYLES)], "marker": MARKERS[j % len(MARKERS)]}
    return styles


def _curve_key(p: Plan, memories: set, precisions: set) -> tuple:
    """(backend, partition MiB, Lambda memory, precision): numbers, so curves sort as numbers, not as text."""
    mem = p.settings.memory_mb if p.backend == "lambda" and len(memories) > 1 else 0
    return (p.backend, float(p.settings.partition_mb), mem, p.settings.precision if len(precisions) > 1 else "")


def _label(key: tuple) -> str:
    backend, mb, mem, prec = key
    return f"{backend}, {mb:g} MiB partitions" + (f", {mem:,} MB" if mem else "") + (f", {prec}" if prec else "")


def plot_sweep(plans: list[Plan], output: str | os.PathLike, title: str = "", actual: list[dict] | None = None) -> None:
    """Wall time and cost against data size, a curve per (backend, partition size, Lambda memory, precision), as a PNG.

    `actual` ([{"label", "data_bytes", "wall_s", "cost_usd"}]) marks measured runs. Unpriced curves are left out of
    the cost panel and say so in the legend (never drawn at $0)."""
    from cosmicai.planning.calibration import BACKENDS

    plt = _pyplot()
    memories = {p.settings.memory_mb for p in plans if p.backend == "lambda"}
    precisions = {p.settings.precision for p in plans}
    curves: dict[tuple, list[Plan]] = defaultdict(list)
    for p in plans:
        curves[_curve_key(p, memories, precisions)].append(p)
    order = sorted(curves, key=lambda k: (BACKENDS.index(k[0]) if k[0] in BACKENDS else 99, k[1], k[2], k[3]))
    styles = curve_styles(order)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(13, 5))
    handles = []
    for key in order:
        group = sorted(curves[key], key=lambda p: p.settings.data_bytes)
        gib = [p.settings.data_bytes / 2**30 for p in group]
        st = styles[key]
        priced = all(p.priced for p in group)
        label = _label(key) + ("" if priced else " (unpriced)")
        (line,) = ax_t.plot(gib, [p.wall_s for p in group], color=st["color"], ls=st["ls"], marker=st["marker"], ms=3, lw=1.4, label=label)
        handles.append(line)
        infeasible = [(g, p.wall_s) for g, p in zip(gib, group) if not p.feasible]
        if infeasible:
            ax_t.scatter(*zip(*infeasible), marker="x", s=40, color="red", zorder=4)
        if priced:
            ax_c.plot(gib, [p.cost_usd for p in group], color=st["color"], ls=st["ls"], marker=st["marker"], ms=3, lw=1.4)
    for run in actual or []:
        x = run["data_bytes"] / 2**30
        handles.append(ax_t.scatter([x], [run["wall_s"]], marker="*", s=160, color="k", zorder=5, label=run["label"]))
        if run.get("cost_usd", 0) > 0:
            ax_c.scatter([x], [run["cost_usd"]], marker="*", s=160, color="k", zorder=5)
    if any(not p.feasible for p in plans):
        handles.append(ax_t.scatter([], [], marker="x", color="red", label="cannot run (timeout, memory, /tmp)"))
    ax_t.set(xscale="log", yscale="log", xlabel="data size (GiB)", ylabel="planned wall time (s)", title="Wall time")
    ax_c.set(xscale="log", yscale="log", xlabel="data size (GiB)", ylabel="planned cost (USD)", title="Cost (priced plans only)")
    for ax in (ax_t, ax_c):
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, output)


def _cell_groups(cells: list[dict]) -> tuple[list[tuple], dict[tuple, list[dict]], dict[tuple, dict]]:
    """Grid cells grouped by (backend, partition MiB, Lambda memory), sorted as numbers, with a style per group."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c.get("backend") or "local", float(c["partition_mb"]), int(c.get("memory_mb") or 0), "")].append(c)
    order = sorted(groups, key=lambda k: (k[0], k[1], k[2]))
    return order, groups, curve_styles(order)


def plot_measured_vs_planned(cells: list[dict], output: str | os.PathLike) -> None:
    """Per grid cell, measured against planned wall time and cost (log-log; the diagonal is a perfect plan, the band +-30%)."""
    plt = _pyplot()
    order, groups, styles = _cell_groups(cells)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    handles = {}
    for ax, (name, what, unit) in zip(axes, (("wall_s", "wall time", "s"), ("cost_usd", "cost", "USD"))):
        pts = [(c[f"planned_{name}"], c[f"measured_{name}"]) for c in cells if c.get(f"planned_{name}") and c.get(f"measured_{name}")]
        if not pts:
            ax.text(0.5, 0.5, f"no {what} to compare (unpriced: no rates in config)", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for key in order:
            mine = [
                (c[f"planned_{name}"], c[f"measured_{name}"]) for c in groups[key] if c.get(f"planned_{name}") and c.get(f"measured_{name}")
            ]
            if mine:
                st = styles[key]
                handles[_label(key)] = ax.scatter(*zip(*mine), s=36, color=st["color"], marker=st["marker"], edgecolor="k", lw=0.4)
        lo = min(min(x, y) for x, y in pts) / 1.5
        hi = max(max(x, y) for x, y in pts) * 1.5
        handles["measured = planned"] = ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)[0]
        handles["+-30%"] = ax.plot([lo, hi], [1.3 * lo, 1.3 * hi], color="grey", lw=0.6, ls="--")[0]
        ax.plot([lo, hi], [lo / 1.3, hi / 1.3], color="grey", lw=0.6, ls="--")
        ax.set(xscale="log", yscale="log", xlabel=f"planned {what} ({unit})", ylabel=f"measured {what} ({unit})", title=what.capitalize())
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    _save(fig, output)


def plot_cells_by_size(cells: list[dict], output: str | os.PathLike) -> None:
    """Measured (markers) and planned (lines) wall time and cost against data size, per partition size and memory."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plt = _pyplot()
    order, groups, styles = _cell_groups(cells)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    handles = {}
    unit, scale = ("GiB", 2**30) if max(c["data_bytes"] for c in cells) >= 2**30 else ("MiB", 2**20)
    span = max(c["data_bytes"] for c in cells) / min(c["data_bytes"] for c in cells)
    for key in order:
        rows = sorted(groups[key], key=lambda r: r["data_bytes"])
        x = [r["data_bytes"] / scale for r in rows]
        st = styles[key]
        for ax, name in zip(axes, ("wall_s", "cost_usd")):
            planned = [r.get(f"planned_{name}") or float("nan") for r in rows]  # 0 or None: unpriced, not drawn at $0
            if all(math.isnan(v) for v in planned) and not any(r.get(f"measured_{name}") for r in rows):
                continue
            handles[f"{_label(key)}: planned"] = ax.plot(x, planned, color=st["color"], ls=st["ls"], lw=1.3)[0]
            measured = [(xi, r[f"measured_{name}"]) for xi, r in zip(x, rows) if r.get(f"measured_{name}")]
            if measured:
                handles[f"{_label(key)}: measured"] = ax.scatter(
                    *zip(*measured), color=st["color"], marker=st["marker"], s=30, edgecolor="k", lw=0.4
                )
    for ax, name, y_unit in zip(axes, ("wall time", "cost"), ("s", "USD")):
        if not ax.has_data():  # nothing priced: a log axis of nothing cannot be drawn
            ax.text(0.5, 0.5, f"no {name} to draw (unpriced: no rates in config)", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"data size ({unit})",
            ylabel=f"{name} ({y_unit})",
            title=f"{name.capitalize()}: planned (lines), measured (markers)",
        )
        # Plain numbers; minor labels only when the sizes span less than a decade (else they collide).
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}") if span < 10 else NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    _save(fig, output)
