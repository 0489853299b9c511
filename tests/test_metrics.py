"""Photo-z metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmicai.reporting.metrics import binned_metrics, point_metrics


def test_metrics_hand_computed() -> None:
    z_spec = np.array([0.0, 1.0, 0.5, 0.25, 1.0])
    z_pred = np.array([0.1, 1.2, 0.5, 0.0, 0.0])
    # delta = (z_pred - z_spec)/(1 + z_spec) = [0.1, 0.1, 0.0, -0.2, -0.5]
    m = point_metrics(z_pred, z_spec)
    assert m["n"] == 5
    assert m["mae"] == pytest.approx((0.1 + 0.2 + 0 + 0.25 + 1.0) / 5)
    assert m["mse"] == pytest.approx((0.01 + 0.04 + 0 + 0.0625 + 1.0) / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 0.04 + 0 + 0.0625 + 1.0) / 5))
    assert m["bias"] == pytest.approx(-0.1)
    assert m["bias_median"] == pytest.approx(0.0)
    # |delta - 0| = [0.1, 0.1, 0, 0.2, 0.5] -> median 0.1
    assert m["sigma_nmad"] == pytest.approx(0.14826)
    # percentiles of delta (linear): P25 = -0.2, P75 = 0.1
    assert m["sigma_iqr"] == pytest.approx(0.3 / 1.349)
    assert m["outlier_frac"] == pytest.approx(2 / 5)  # |delta| > 0.15: -0.2, -0.5
    # threshold max(0.06, 3 * 0.2224) = 0.667: none
    assert m["catastrophic_frac"] == pytest.approx(0.0)
    ss_tot = np.sum((z_spec - z_spec.mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - 1.1125 / ss_tot)


def test_perfect_predictions() -> None:
    z = np.linspace(0.01, 1.0, 50)
    m = point_metrics(z, z)
    assert m["sigma_nmad"] == 0 and m["outlier_frac"] == 0 and m["bias"] == 0 and m["r2"] == 1


def test_catastrophic_uses_floor_of_006() -> None:
    z_spec = np.zeros(10)
    z_pred = np.array([0.0] * 8 + [0.07, 0.05])
    m = point_metrics(z_pred, z_spec)
    assert m["sigma_iqr"] == pytest.approx(0.0)
    assert m["catastrophic_frac"] == pytest.approx(0.1)  # only 0.07 > 0.06


def test_binned_metrics_counts_every_row_once() -> None:
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 1, 1000)
    table = binned_metrics(z + 0.01, z, z, (0.0, 0.5, 1.0))
    assert list(table["n"]) == [int((z < 0.5).sum()), int((z >= 0.5).sum())]
