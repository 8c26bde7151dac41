"""Summary metrics: hand computations and numerai-tools."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring as nt

from eraflow.engine.evaluation.metrics import (
    apy,
    autocorrelation,
    hit_rate,
    score_summary,
    smart_sharpe,
    top_bottom_corr,
)

SERIES = np.array([0.02, -0.01, np.nan, 0.03, 0.01, -0.02])


def test_apy_compounds_weekly_eras_over_a_year():
    c = SERIES[~np.isnan(SERIES)]
    assert apy(SERIES) == pytest.approx(np.prod(1 + c) ** (52 / 5) - 1, rel=1e-12)
    assert apy(np.full(52, 0.01)) == pytest.approx(1.01 ** 52 - 1)


def test_autocorrelation_smart_sharpe_and_hit_rate_by_hand():
    c = np.array([0.02, -0.01, 0.03, 0.01, -0.02])
    rho = np.corrcoef(c[:-1], c[1:])[0, 1]
    assert autocorrelation(SERIES) == pytest.approx(rho)
    penalty = np.sqrt(1 + 2 * sum((5 - i) / 5 * rho ** i for i in range(1, 5)))
    assert smart_sharpe(SERIES) == pytest.approx(c.mean() / (c.std() * penalty))
    assert hit_rate(SERIES) == pytest.approx(3 / 5)
    assert np.isnan(autocorrelation(np.array([0.1, 0.2])))


def test_score_summary_collects_everything():
    s = score_summary(SERIES, "corr_")
    c = SERIES[~np.isnan(SERIES)]
    assert s["corr_mean"] == pytest.approx(c.mean()) and s["corr_eras"] == 5
    assert s["corr_max_drawdown"] == pytest.approx(0.02)  # peak 0.05 after era 4, then 0.03
    assert s["corr_calmar_ratio"] == pytest.approx(s["corr_apy"] / 0.02)


def test_top_bottom_corr_equals_numerai_tools():
    rng = np.random.default_rng(5)
    sizes = [1000, 450, 401, 900]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    pred = np.round(rng.normal(size=offsets[-1]), 2)  # ties
    target = rng.choice([0, .25, .5, .75, 1.0], offsets[-1])
    got = top_bottom_corr(pred, target, offsets)
    for k in range(len(sizes)):
        rows = slice(offsets[k], offsets[k + 1])
        index = pd.Index([f"id{i:05d}" for i in range(sizes[k])])
        p = pd.DataFrame({"p": pred[rows]}, index=index)
        t = pd.Series(target[rows], index=index, name="target")
        want = nt.numerai_corr(p, t, top_bottom=200)["p"]
        assert got[k] == pytest.approx(want, abs=1e-9), f"era {k}"


def test_top_bottom_corr_drops_rows_without_target():
    rng = np.random.default_rng(6)
    pred, target = rng.normal(size=900), rng.choice([0, .25, .5, .75, 1.0], 900)
    missing = rng.random(900) < 0.1
    with_nan = np.where(missing, np.nan, target)
    got = top_bottom_corr(pred, with_nan, np.array([0, 900]))
    want = top_bottom_corr(pred[~missing], target[~missing], np.array([0, (~missing).sum()]))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_top_bottom_corr_of_columns_equals_one_column_at_a_time():
    rng = np.random.default_rng(7)
    offsets = np.array([0, 700, 1000, 1001])
    pred = np.round(rng.normal(size=(1001, 3)), 1)
    pred[rng.random(1001) < 0.05, 1] = np.nan  # column 1 misses rows the others have
    target = np.where(rng.random(1001) < 0.1, np.nan, rng.choice([0, .25, .5, .75, 1.0], 1001))
    got = top_bottom_corr(pred, target, offsets)
    assert got.shape == (3, 3)
    for j in range(3):
        np.testing.assert_allclose(got[:, j], top_bottom_corr(pred[:, j], target, offsets), rtol=1e-12, equal_nan=True)
