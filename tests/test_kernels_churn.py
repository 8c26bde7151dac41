"""Churn kernels against numerai-tools 0.7.2 (``numerai_tools.signals``) applied era by era, on every backend.

Cases: eras of 1, 2, 3, 40, 300 and 5000 rows, tied values, NaN rows differing between the two
submissions and between columns. Where numerai-tools asserts (a constant side, a one-row era) the
kernels give NaN; its 80 %-overlap assertion never fires on these cases (≤ 10 % of rows missing).
"""

from __future__ import annotations

import doctest
import math
import re

import numpy as np
import pandas as pd
import pytest
from numerai_tools import signals

from eraflow.engine.errors import InputError
from eraflow.kernels import churn_scores as churn_module
from eraflow.kernels.churn_scores import churn, churn_penalty, neutral_churn, turnover
from tests.test_kernels_cases import BACKENDS, assert_matches, frame, mixed_case, quiet

CASE = mixed_case(seed=7)
K = CASE.codes.shape[1]
M = CASE.predictions.shape[1]
ERAS = range(len(CASE.sizes))
REGRESSED = [era for era, size in enumerate(CASE.sizes) if size > K + 1]


def earlier_submission(case=CASE, seed: int = 1) -> np.ndarray:
    """A previous week's columns: the current ones plus noise, rounded (ties), with their own NaN rows."""
    rng = np.random.default_rng(seed)
    previous = (case.predictions + rng.normal(scale=0.7, size=case.predictions.shape)).round(1)
    big = np.repeat(np.array(case.sizes) >= 40, case.sizes)
    previous[big[:, None] & (rng.random(previous.shape) < 0.05)] = np.nan
    return previous


PREVIOUS = earlier_submission()


def present_series(values: np.ndarray, index: pd.Index) -> pd.Series:
    """A submission as numerai-tools sees it: only the ids it has, in row order."""
    keep = ~np.isnan(values)
    return pd.Series(values[keep], index=index[keep])


def or_nan(fn, *args, **kwargs) -> float:
    """numerai-tools' result, or NaN where it asserts a side is constant."""
    try:
        return float(quiet(fn, *args, **kwargs))
    except AssertionError as error:
        if "standard deviation" not in str(error):
            raise
        return math.nan


def per_era_columns(fn, eras=ERAS, columns=range(M)) -> np.ndarray:
    """``fn(rows, index, j)`` for each listed era and column, as (len(eras), len(columns))."""
    out = []
    for era in eras:
        rows = slice(int(CASE.offsets[era]), int(CASE.offsets[era + 1]))
        index = pd.Index([f"id{i:07d}" for i in range(rows.start, rows.stop)])
        out.append([fn(rows, index, j) for j in columns])
    return np.array(out, dtype=np.float64)


# --- churn ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_churn_matches_numerai_tools(backend):
    want = per_era_columns(lambda rows, index, j: or_nan(
        signals.churn, present_series(CASE.with_nan[rows, j], index), present_series(PREVIOUS[rows, j], index)))
    assert np.isnan(want[0]).all() and np.isfinite(want[1]).all(), "one-row era refused, two-row era scored"
    got = churn(CASE.with_nan, PREVIOUS, CASE.offsets, backend=backend)
    assert_matches(got, want, f"churn on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_churn_pairs_a_1d_submission_with_every_column(backend):
    got = churn(CASE.predictions[:, 0], PREVIOUS, CASE.offsets, backend=backend)
    want = per_era_columns(lambda rows, index, j: or_nan(
        signals.churn, present_series(CASE.predictions[rows, 0], index), present_series(PREVIOUS[rows, j], index)))
    assert_matches(got, want, f"churn 1-D vs 2-D on {backend}")
    one = churn(CASE.predictions[:, 0], PREVIOUS[:, 2], CASE.offsets, backend=backend)
    assert one.shape == (len(CASE.sizes),)
    assert_matches(one, want[:, 2], f"churn 1-D on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("top_bottom", [1, 3, 50, 400])
def test_top_bottom_churn_matches_numerai_tools(backend, top_bottom):
    """Tied values at the cut: numerai-tools' stable sort puts later rows on top, earlier at the bottom."""
    want = per_era_columns(lambda rows, index, j: signals.churn(
        present_series(CASE.with_nan[rows, j], index), present_series(PREVIOUS[rows, j], index), top_bottom))
    got = churn(CASE.with_nan, PREVIOUS, CASE.offsets, top_bottom=top_bottom, backend=backend)
    assert_matches(got, want, f"churn top_bottom={top_bottom} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_bottom_ties_by_hand(backend):
    """a: all tied, so its top 2 are the last two rows and its bottom 2 the first two."""
    a, b = np.array([1.0, 1, 1, 1, 1]), np.array([5.0, 4, 3, 2, 1])
    # b's top {0, 1}, bottom {3, 4}; a's top {3, 4}, bottom {0, 1}: no overlap
    assert churn(a, b, np.array([0, 5]), top_bottom=2, backend=backend)[0] == 1.0
    assert churn(a, b[::-1].copy(), np.array([0, 5]), top_bottom=2, backend=backend)[0] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_submissions_churn_exactly_zero(backend):
    """1 − ρ may round below 0; it is clipped, so churn_penalty accepts it (numerai-tools would assert)."""
    got = churn(CASE.predictions, CASE.predictions, CASE.offsets, backend=backend)
    assert (got[1:] == 0).all()
    assert (churn_penalty(got[1:]) == 1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_churn_nan_where_undefined(backend):
    """A constant side (era 0), a side with no row (era 1), nothing shared (era 2).

    Top/bottom churn of era 1 is NaN where numerai-tools returns 1.0 (an empty top and bottom share
    nothing): the one deviation the module doc states, pinned here on both sides."""
    a = np.array([1.0, 1, 1, np.nan, np.nan, 1, 2, np.nan, np.nan])
    b = np.array([1.0, 2, 3, 1, 2, np.nan, np.nan, 1, 2])
    offsets = np.array([0, 3, 5, 9])
    assert np.isnan(churn(a, b, offsets, backend=backend)).all()
    assert np.isnan(churn(a, b, offsets, top_bottom=1, backend=backend)[1])
    index = pd.Index(["x", "y"])
    assert signals.churn(present_series(a[3:5], index), present_series(b[3:5], index), top_bottom=1) == 1.0


# --- neutral churn ----------------------------------------------------------------------------

def nt_neutral_churn(a, b, neutralizers_a, neutralizers_b) -> np.ndarray:
    return per_era_columns(lambda rows, index, j: or_nan(
        signals.neutral_churn, present_series(a[rows, j], index), present_series(b[rows, j], index),
        frame(neutralizers_a[rows], index), frame(neutralizers_b[rows], index)), REGRESSED)


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_churn_matches_numerai_tools(backend):
    """Each side neutralized on its own rows against its own neutralizers, columns each on their own
    rows — neutralizing over the rows both share, or sharing one row set across columns, would differ."""
    rng = np.random.default_rng(3)
    codes_b = np.where(rng.random(CASE.codes.shape) < 0.2, rng.integers(0, 5, CASE.codes.shape), CASE.codes)
    codes_b = codes_b.astype(np.int8)
    feature_values_b = np.where(codes_b == -1, 2, codes_b).astype(np.float64)
    got = neutral_churn(CASE.with_nan, PREVIOUS, CASE.codes, codes_b, CASE.offsets, backend=backend)
    want = nt_neutral_churn(CASE.with_nan, PREVIOUS, CASE.feature_values, feature_values_b)
    assert_matches(got[REGRESSED], want, f"neutral_churn on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_churn_float_neutralizers_with_missing_rows(backend):
    """Float neutralizers; a row with a NaN neutralizer drops out of that side only (numerai-tools' dropna)."""
    rng = np.random.default_rng(4)
    neutralizers_a = CASE.feature_values[:, :6] / 4 + 0.2 * CASE.predictions[:, :1]
    neutralizers_b = neutralizers_a + rng.normal(scale=0.1, size=neutralizers_a.shape)
    neutralizers_b[rng.random(len(neutralizers_b)) < 0.04, 2] = np.nan
    a, b = CASE.predictions[:, 1], PREVIOUS[:, 1]
    got = neutral_churn(a, b, neutralizers_a, neutralizers_b, CASE.offsets, backend=backend)
    assert got.shape == (len(CASE.sizes),)
    want = per_era_columns(lambda rows, index, j: or_nan(
        signals.neutral_churn, present_series(a[rows], index), present_series(b[rows], index),
        frame(neutralizers_a[rows], index), frame(neutralizers_b[rows], index).dropna()), REGRESSED, [0])
    assert_matches(got[REGRESSED], want[:, 0], f"neutral_churn float neutralizers on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_churn_short_eras_are_nan(backend):
    """Eras of 1–3 rows, no more than their varying neutralizers, have residuals exactly 0 (numerai-tools:
    rounding noise), hence NaN."""
    got = neutral_churn(CASE.predictions, PREVIOUS, CASE.codes, CASE.codes, CASE.offsets, backend=backend)
    short = [era for era in ERAS if era not in REGRESSED]
    assert np.isnan(got[short]).all() and np.isfinite(got[REGRESSED]).all()


# --- turnover and the penalty -----------------------------------------------------------------

def test_turnover_matches_numerai_tools():
    weights = CASE.with_nan / 100
    previous = PREVIOUS / 100
    want = per_era_columns(lambda rows, index, j: signals.turnover(
        present_series(weights[rows, j], index), present_series(previous[rows, j], index)))
    assert_matches(turnover(weights, previous, CASE.offsets), want, "turnover")


def test_turnover_of_an_era_without_shared_rows_is_nan():
    got = turnover(np.array([0.1, np.nan, 0.2, 0.3]), np.array([np.nan, 0.4, 0.2, 0.1]), np.array([0, 2, 4]))
    np.testing.assert_allclose(got, [np.nan, 0.1], rtol=1e-15)


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.35, 2.0])
@pytest.mark.parametrize("scaling_factor", [0.5, 10.0, 1e4])
def test_churn_penalty_matches_numerai_tools(threshold, scaling_factor):
    """Includes a huge scaling factor: the capped logistic must not overflow."""
    values = np.concatenate([np.linspace(0, 2, 41), [threshold, np.nextafter(threshold, 3)]])
    values = values[values <= 2]
    want = [signals.neutral_churn_penalty(v, threshold, scaling_factor) for v in values]
    assert_matches(churn_penalty(values, threshold, scaling_factor), want, "churn_penalty")


def test_churn_penalty_keeps_nan_and_shape_and_returns_a_float_for_a_scalar():
    got = churn_penalty(np.array([[0.05, np.nan], [0.2, 2.0]]))
    assert got.shape == (2, 2) and np.isnan(got[0, 1])
    assert isinstance(churn_penalty(0.2), float)
    assert churn_penalty(0.2) == signals.neutral_churn_penalty(0.2)


# --- errors and examples ----------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda: churn_penalty([0.1, 2.5]), "neutral_churn must lie in [0, 2] (or be NaN), got 2.5"),
    (lambda: churn_penalty(-0.1), "neutral_churn must lie in [0, 2]"),
    (lambda: churn_penalty(np.inf), "neutral_churn must lie in [0, 2]"),
    (lambda: churn_penalty("high"), "neutral_churn must be numbers in [0, 2]"),
    (lambda: churn_penalty(None), "neutral_churn must be numbers in [0, 2], got None"),
    (lambda: churn_penalty([0.1, None]), "neutral_churn must be numbers in [0, 2]"),
    (lambda: churn_penalty([0.1, [0.2]]), "neutral_churn must be numbers in [0, 2]"),
    (lambda: churn_penalty(0.5, threshold="x"), "threshold must be a finite number, got 'x'"),
    (lambda: churn_penalty(0.5, threshold=np.nan), "threshold must be a finite number"),
    (lambda: churn_penalty(0.5, scaling_factor=None), "scaling_factor must be a finite number, got None"),
    (lambda: churn_penalty(0.5, scaling_factor=[1.0, 2.0]), "scaling_factor must be a finite number"),
    (lambda: churn_penalty(0.5, threshold=3), "threshold must lie in [0, 2], got 3.0"),
    (lambda: churn_penalty(0.5, scaling_factor=0), "scaling_factor must be positive"),
    (lambda: churn([1.0, 2], [1.0, 2], [0, 2], top_bottom=-1), "top_bottom must be a whole number ≥ 0"),
    (lambda: churn([1.0, 2], [1.0, 2], [0, 2], top_bottom=1.5), "top_bottom must be a whole number ≥ 0"),
    (lambda: churn(np.ones((2, 2)), np.ones((2, 3)), [0, 2]), "a and b must have the same number of columns"),
    (lambda: turnover([1.0, 2], [1.0, 2, 3], [0, 2]), "b has 3 rows but the predictions have 2"),
    (lambda: churn(np.empty((2, 0)), [1.0, 2], [0, 2]), "a and b need at least one column each"),
    (lambda: turnover(np.ones((2, 2)), np.empty((2, 0)), [0, 2]), "a and b need at least one column each"),
    (lambda: neutral_churn([1.0, 2], np.empty((2, 0)), np.zeros((2, 1)), np.zeros((2, 1)), [0, 2]),
     "a and b need at least one column each"),
    (lambda: neutral_churn([1.0, 2], [1.0, 2], np.array([[np.inf], [0]]), np.zeros((2, 1)), [0, 2]),
     "neutralizers contain inf"),
])
def test_bad_input_is_a_one_line_input_error(call, message):
    with pytest.raises(InputError, match=re.escape(message)) as error:
        call()
    assert "\n" not in str(error.value)


def test_docstring_examples():
    result = doctest.testmod(churn_module, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} failing examples"
