"""Diagnostic plots (PNG): z_pred vs z_spec density, Delta vs z_spec, per-partition timings."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cosmicai.atomic import atomic_path  # noqa: E402
from cosmicai.data.predictions import read_predictions  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def _labelled(predictions: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    table = read_predictions(predictions)
    if "z_spec" not in table.column_names:
        return None
    valid = table.column("valid").to_numpy(zero_copy_only=False)
    return table.column("z_pred").to_numpy()[valid], table.column("z_spec").to_numpy()[valid]


def plot_z_pred_vs_spec(predictions: str | os.PathLike, output: str | os.PathLike) -> None:
    """2-D density of predicted vs spectroscopic redshift with the y = x line."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    data = _labelled(predictions)
    if data is None:
        ax.text(0.5, 0.5, "unlabelled data: no z_spec", ha="center", va="center", transform=ax.transAxes)
    else:
        z_pred, z_spec = data
        both = np.concatenate([z_spec, z_pred])
        lo = min(0.0, float(np.percentile(both, 0.5)))
        hi = max(float(np.percentile(both, 99.5)), lo + 0.1) * 1.05
        h = ax.hexbin(z_spec, z_pred, gridsize=60, extent=(lo, hi, lo, hi), bins="log", mincnt=1, cmap="viridis")
        if len(h.get_array()):
            fig.colorbar(h, ax=ax, label="galaxies")
        ax.plot([lo, hi], [lo, hi], "r-", lw=1, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.legend(loc="upper left")
    ax.set_xlabel("spectroscopic z")
    ax.set_ylabel("predicted z")
    ax.set_title("AstroMAE photo-z")
    _save(fig, output)


def plot_delta_vs_z(predictions: str | os.PathLike, output: str | os.PathLike) -> None:
    """Delta = (z_pred - z_spec)/(1 + z_spec) against z_spec, with running median and 16-84% scatter."""
    fig, ax = plt.subplots(figsize=(7, 4))
    data = _labelled(predictions)
    if data is None:
        ax.text(0.5, 0.5, "unlabelled data: no z_spec", ha="center", va="center", transform=ax.transAxes)
    else:
        z_pred, z_spec = data
        delta = (z_pred - z_spec) / (1 + z_spec)
        ax.scatter(z_spec, delta, s=2, alpha=0.25, color="grey", rasterized=True)
        edges = np.quantile(z_spec, np.linspace(0, 1, 21))
        centres, med, lo, hi = [], [], [], []
        for a, b in zip(edges[:-1], edges[1:]):
            sel = (z_spec >= a) & (z_spec <= b)
            if sel.sum() >= 5:
                centres.append(np.median(z_spec[sel]))
                p16, p50, p84 = np.percentile(delta[sel], [16, 50, 84])
                med.append(p50), lo.append(p16), hi.append(p84)
        ax.plot(centres, med, "b-", lw=2, label="running median")
        ax.fill_between(centres, lo, hi, color="b", alpha=0.2, label="16-84%")
        for y in (-0.15, 0.15):
            ax.axhline(y, color="r", ls="--", lw=0.8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylim(-0.5, 0.5)
        ax.legend(loc="upper right")
    ax.set_xlabel("spectroscopic z")
    ax.set_ylabel(r"$\Delta = (z_{pred}-z_{spec})/(1+z_{spec})$")
    _save(fig, output)


def plot_partition_timings(sidecars: list[str | os.PathLike], output: str | os.PathLike) -> None:
    """Per-partition inference time (stacked: model load, read, compute, write) and throughput."""
    from cosmicai.job import load_sidecars

    runs = load_sidecars(sidecars)
    names = [r["partition"].removesuffix(".h5") for r in runs]
    x = np.arange(len(runs))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(min(24, max(6, 0.3 * len(runs) + 3)), 6), sharex=True)
    bottom = np.zeros(len(runs))
    for key in ("model_load_s", "read_s", "compute_s", "write_s"):
        vals = np.array([r.get(key, 0.0) for r in runs])
        ax1.bar(x, vals, bottom=bottom, label=key.removesuffix("_s").replace("_", " "))
        bottom += vals
    ax1.set_ylabel("seconds")
    ax1.legend(fontsize=8)
    ax1.set_title("per-partition inference")
    ax2.bar(x, [r["samples_per_s"] for r in runs], color="tab:green")
    ax2.set_ylabel("samples/s (compute)")
    step = max(1, len(runs) // 60)  # at most ~60 labels, however many partitions
    ax2.set_xticks(x[::step], names[::step], rotation=90, fontsize=7)
    _save(fig, output)
