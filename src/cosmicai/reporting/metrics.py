"""Photometric-redshift metrics, with Delta = (z_pred - z_spec) / (1 + z_spec).

mae, mse, rmse and r2 are on z itself; bias, bias_median, sigma_nmad, sigma_iqr and the outlier
fractions are on Delta. catastrophic_frac follows LSST DESC RAIL: |Delta| > max(0.06, 3 sigma_iqr).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cosmicai.atomic import atomic_path, write_json
from cosmicai.data.predictions import read_predictions

OUTLIER_THRESHOLD = 0.15
Z_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 3.0)
RMAG_BINS = (10.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 30.0)


def point_metrics(z_pred: np.ndarray, z_spec: np.ndarray) -> dict[str, float]:
    """The metric set for paired predictions and spectroscopic redshifts."""
    z_pred = np.asarray(z_pred, np.float64)
    z_spec = np.asarray(z_spec, np.float64)
    n = len(z_spec)
    if n == 0:
        return {"n": 0}
    resid = z_pred - z_spec
    delta = resid / (1 + z_spec)
    med = np.median(delta)
    p25, p75 = np.percentile(delta, [25, 75])
    sigma_iqr = (p75 - p25) / 1.349
    ss_tot = np.sum((z_spec - z_spec.mean()) ** 2)
    return {
        "n": int(n),
        "mae": float(np.mean(np.abs(resid))),
        "mse": float(np.mean(resid**2)),
        "rmse": float(np.sqrt(np.mean(resid**2))),
        "bias": float(np.mean(delta)),
        "bias_median": float(med),
        "sigma_nmad": float(1.4826 * np.median(np.abs(delta - med))),
        "sigma_iqr": float(sigma_iqr),
        "outlier_frac": float(np.mean(np.abs(delta) > OUTLIER_THRESHOLD)),
        "catastrophic_frac": float(np.mean(np.abs(delta) > max(0.06, 3 * sigma_iqr))),
        "r2": float(1 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else float("nan"),
    }


def binned_metrics(z_pred: np.ndarray, z_spec: np.ndarray, by: np.ndarray, edges: tuple[float, ...]) -> pd.DataFrame:
    """point_metrics within each [lo, hi) bin of `by`; empty bins are listed with n = 0."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (by >= lo) & (by < hi)
        rows.append({"bin_lo": lo, "bin_hi": hi, **point_metrics(z_pred[sel], z_spec[sel])})
    return pd.DataFrame(rows)


def compute_metrics(
    predictions: str | os.PathLike,
    output: str | os.PathLike,
    by_zspec: str | os.PathLike | None = None,
    by_rmag: str | os.PathLike | None = None,
) -> dict:
    """Metrics of a predictions table (rows flagged invalid excluded); unlabelled data says why none."""
    table = read_predictions(predictions)
    valid = table.column("valid").to_numpy(zero_copy_only=False)
    result: dict = {"predictions": str(predictions), "rows": table.num_rows, "rows_excluded_invalid": int((~valid).sum())}
    binned = {}
    if "z_spec" not in table.column_names:
        result["metrics"] = None
        result["reason"] = "no spectroscopic redshifts in the input (unlabelled data): predictions only"
    else:
        z_pred = table.column("z_pred").to_numpy()[valid]
        z_spec = table.column("z_spec").to_numpy()[valid]
        result["metrics"] = point_metrics(z_pred, z_spec)
        binned = {
            by_zspec: binned_metrics(z_pred, z_spec, z_spec, Z_BINS),
            by_rmag: binned_metrics(z_pred, z_spec, table.column("mag_r").to_numpy()[valid], RMAG_BINS),
        }
    for path, frame in binned.items():
        if path is not None:
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False, float_format="%.6g")
    for path, key in ((by_zspec, "z_spec"), (by_rmag, "mag_r")):
        if path is not None and not binned:
            with atomic_path(path) as tmp:
                tmp.write_text(f"# no metrics binned by {key}: {result['reason']}\n")
    write_json(output, result)
    return result
