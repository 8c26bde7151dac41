"""``neutral_contribution`` (neutral MMC) against numerai-tools 0.7.2 applied era by era, on every backend.

numerai-tools keeps the rows where every input is present (``filter_sort_index_many``) and asserts
that this keeps 80 % of each input; the kernel does not assert. Where the case drops more than that
the oracle is given the kept rows only (the same filtering, minus the assertion); one test lets
numerai-tools filter by itself. Eras of at most k + 1 rows (k neutralizers plus the intercept fit them
exactly) are left out of the comparison (numerai-tools' residuals there are rounding noise); a test pins
the NaN we return where the rows are no more than the varying neutralizers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring
from scipy.special import ndtri

from eraflow.engine.errors import InputError
from eraflow.kernels.correlation import correlation_contribution
from eraflow.kernels.neutralization import neutral_contribution
from tests.test_kernels_cases import BACKENDS, assert_matches, frame, mixed_case, per_era_scores, quiet, series

CASE = mixed_case(seed=3)
K = CASE.codes.shape[1]
REGRESSED = [era for era, size in enumerate(CASE.sizes) if size > K + 1]
# 3 % of targets missing: numerai-tools then filters within its own 80 % rule
FEW_NAN_TARGET = np.where(np.random.default_rng(4).random(len(CASE.target)) < 0.03, np.nan,
                          np.nan_to_num(CASE.target, nan=0.5))


def nt_neutral_contribution(pred, meta, neutralizers, target, index, prefilter=True) -> np.ndarray:
    """numerai-tools ``neutral_contribution`` of one era; ``prefilter`` drops the rows it would drop."""
    pred, neutralizers = pred.reshape(len(index), -1), neutralizers.reshape(len(index), -1)
    if prefilter:
        keep = ~np.isnan(pred).any(axis=1) & ~np.isnan(meta) & ~np.isnan(target) & ~np.isnan(neutralizers).any(axis=1)
        pred, meta, neutralizers, target, index = pred[keep], meta[keep], neutralizers[keep], target[keep], index[keep]
    return quiet(scoring.neutral_contribution, frame(pred, index), series(meta, index, "meta"),
                 frame(neutralizers, index), series(target, index, "target")).to_numpy()


def expected(pred, meta, neutralizers, target, prefilter=True) -> np.ndarray:
    return per_era_scores(CASE, lambda rows, index: nt_neutral_contribution(
        pred[rows], meta[rows], neutralizers[rows], target[rows], index, prefilter), REGRESSED)


def with_nan_meta() -> np.ndarray:
    meta = CASE.meta.copy()
    meta[np.random.default_rng(1).random(len(meta)) < 0.03] = np.nan
    return meta


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_contribution_with_nan_predictions_meta_and_targets(backend):
    """Rows lacking any prediction column, the meta model or the target are dropped for every column
    (numerai-tools filters the whole frame), not column by column as correlation_contribution does."""
    meta = with_nan_meta()
    got = neutral_contribution(CASE.with_nan, meta, CASE.codes, CASE.target, CASE.offsets, backend=backend)
    assert got.shape == (len(CASE.sizes), CASE.predictions.shape[1])
    assert_matches(got[REGRESSED], expected(CASE.with_nan, meta, CASE.feature_values, CASE.target),
                   f"neutral_contribution with NaN rows on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_contribution_when_numerai_tools_filters_by_itself(backend):
    """Only a few targets missing: numerai-tools filters by itself and must agree."""
    got = neutral_contribution(CASE.predictions, CASE.meta, CASE.codes, FEW_NAN_TARGET, CASE.offsets,
                               backend=backend)
    assert_matches(got[REGRESSED], expected(CASE.predictions, CASE.meta, CASE.feature_values, FEW_NAN_TARGET,
                                            prefilter=False), f"neutral_contribution, unfiltered oracle, {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_contribution_float_neutralizers_returns_like_targets_and_1d(backend):
    """Float neutralizers (correlated with the predictions), targets outside [0, 1] (no ×4), 1-D input."""
    neutralizers = CASE.feature_values[:, :5] / 4 + 0.3 * CASE.predictions[:, :1]
    target = CASE.target * 3 - 1
    got = neutral_contribution(CASE.predictions[:, 1], CASE.meta, neutralizers, target, CASE.offsets,
                               backend=backend)
    assert got.shape == (len(CASE.sizes),)
    regressed = [era for era, size in enumerate(CASE.sizes) if size > 6]
    want = per_era_scores(CASE, lambda rows, index: nt_neutral_contribution(
        CASE.predictions[rows, 1], CASE.meta[rows], neutralizers[rows], target[rows], index), regressed)
    assert_matches(got[regressed], want[:, 0], f"neutral_contribution float neutralizers on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_with_nan_float_neutralizers_are_dropped_as_numerai_tools_does(backend):
    neutralizers = CASE.feature_values / 4
    rng = np.random.default_rng(2)
    neutralizers[rng.random(len(neutralizers)) < 0.04, rng.integers(0, K)] = np.nan
    got = neutral_contribution(CASE.predictions, CASE.meta, neutralizers, FEW_NAN_TARGET, CASE.offsets,
                               backend=backend)
    assert_matches(got[REGRESSED], expected(CASE.predictions, CASE.meta, neutralizers, FEW_NAN_TARGET, prefilter=False),
                   f"neutral_contribution with NaN neutralizer rows on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_contribution_by_hand(backend):
    """One 5-row era, one neutralizer: ranks, ndtri, residuals on [N, 1], p⊥, tᵀp⊥/n written out."""
    pred, meta = np.array([0.3, 0.1, 0.2, 0.9, 0.5]), np.array([1.0, 3, 2, 5, 4])
    neutralizer, target = np.array([[0.0], [1], [0], [2], [1]]), np.array([0.0, 0.25, 0.5, 1, 0.75])
    f1 = np.hstack([neutralizer, np.ones((5, 1))])
    hat = f1 @ np.linalg.pinv(f1)
    p = ndtri((np.array([3, 1, 2, 5, 4]) - 0.5) / 5)
    m = ndtri((np.array([1, 3, 2, 5, 4]) - 0.5) / 5)
    p, m = p - hat @ p, m - hat @ m
    t = target * 4 - (target * 4).mean()
    want = t @ (p - m * (p @ m) / (m @ m)) / 5
    got = neutral_contribution(pred, meta, neutralizer, target, np.array([0, 5]), backend=backend)
    np.testing.assert_allclose(got, [want], rtol=1e-12, err_msg="neutral MMC of one 5-row era")


@pytest.mark.parametrize("backend", BACKENDS)
def test_predictions_equal_to_the_meta_model_contribute_nothing(backend):
    got = neutral_contribution(CASE.predictions[:, 0], CASE.predictions[:, 0], CASE.codes, CASE.target,
                               CASE.offsets, backend=backend)
    np.testing.assert_allclose(got[REGRESSED], 0, atol=1e-12, err_msg="p = m gives p⊥ = 0")


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_neutralizers_give_correlation_contribution(backend):
    """A neutralizer constant in every era leaves only the intercept, and gaussian ranks are already
    centered (up to ~1e-9 from ties, whose average ranks make them a hair asymmetric): the score is
    correlation_contribution's (MMC) of the same rows. Guards the shared steps 3–5 (×4 rule, centering
    over kept rows, p⊥) against drifting apart between the two kernels."""
    pred, meta, target = CASE.predictions, CASE.meta, np.nan_to_num(CASE.target, nan=0.5)
    constant = np.full((len(meta), 1), 2, np.int8)
    got = neutral_contribution(pred, meta, constant, target, CASE.offsets, backend=backend)
    want = correlation_contribution(pred, meta, target, CASE.offsets, backend=backend)
    scored = [era for era, size in enumerate(CASE.sizes) if size > 2]
    np.testing.assert_allclose(got[scored], want[scored], rtol=1e-7, atol=1e-12, err_msg="constant neutralizer")


@pytest.mark.parametrize("backend", BACKENDS)
def test_undefined_eras_are_nan(backend):
    """Constant meta model (era 0), a constant prediction column (era 1, column 1 only), no kept row
    (era 2), 3 rows and 4 neutralizers that all vary there (era 3: residuals exactly 0, not rounding noise)."""
    rng = np.random.default_rng(5)
    sizes = [30, 30, 20, 3]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    pred, meta, target = rng.normal(size=(83, 2)), rng.normal(size=83), rng.choice([0, 0.5, 1.0], 83)
    neutralizers = rng.integers(0, 5, (83, 4)).astype(np.int8)
    neutralizers[80:] = [[0, 1, 2, 3], [1, 2, 3, 4], [2, 0, 4, 1]]
    meta[:30] = 1.0
    pred[30:60, 1] = 0.2
    target[60:80] = np.nan
    got = neutral_contribution(pred, meta, neutralizers, target, offsets, backend=backend)
    assert np.isnan(got[[0, 2, 3]]).all() and np.isnan(got[1, 1])
    assert np.isfinite(got[1, 0]), "a constant column makes only that column NaN"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_era_is_scored_on_its_own_rows_only(backend):
    """Changing every other era leaves an era's score unchanged (guards against rows leaking across eras)."""
    before = neutral_contribution(CASE.predictions, CASE.meta, CASE.codes, CASE.target, CASE.offsets, backend=backend)
    era = CASE.sizes.index(300)
    rows = np.zeros(len(CASE.meta), bool)
    rows[CASE.offsets[era]:CASE.offsets[era + 1]] = True
    rng = np.random.default_rng(9)
    pred = np.where(rows[:, None], CASE.predictions, rng.normal(size=CASE.predictions.shape))
    meta = np.where(rows, CASE.meta, rng.normal(size=len(rows)))
    codes = np.where(rows[:, None], CASE.codes, rng.integers(0, 5, CASE.codes.shape)).astype(np.int8)
    after = neutral_contribution(pred, meta, codes, CASE.target, CASE.offsets, backend=backend)
    np.testing.assert_allclose(after[era], before[era], rtol=1e-12, err_msg="era of 300 rows")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: neutral_contribution([1.0, 2], [1.0, 2], np.array([[np.inf], [0]]), [0.0, 1], [0, 2]),
     "neutralizers contain inf"),
    (lambda: neutral_contribution([1.0, 2], [1.0, 2], np.zeros((3, 1)), [0.0, 1], [0, 2]),
     "neutralizers has 3 rows but the predictions have 2"),
    (lambda: neutral_contribution([1.0, 2], np.ones((2, 2)), np.zeros((2, 1)), [0.0, 1], [0, 2]),
     "meta_model must be one column"),
    (lambda: neutral_contribution([1.0, 2], [1.0, 2], np.zeros((3, 1), np.int8), [0.0, 1], [0, 2]),
     "neutralizers has 3 rows but the predictions have 2"),
    (lambda: neutral_contribution([1.0, 2], [1.0, 2], np.zeros(2), [0.0, 1], [0, 2]),
     "neutralizers must be 2-D (n, k)"),
    (lambda: neutral_contribution([1.0, 2], [1.0, 2], np.array([["a"], ["b"]]), [0.0, 1], [0, 2]),
     "neutralizers must be numeric"),
])
def test_bad_input_is_a_one_line_input_error(call, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        call()
    assert "\n" not in str(error.value)


def test_dataframe_index_order_does_not_matter_to_the_oracle():
    """The oracle sorts by id; the kernel works in row order. Shuffled ids give the same score."""
    era = CASE.sizes.index(300)
    rows = slice(CASE.offsets[era], CASE.offsets[era + 1])
    index = pd.Index([f"id{i:07d}" for i in np.random.default_rng(0).permutation(300)])
    shuffled = nt_neutral_contribution(CASE.predictions[rows], CASE.meta[rows], CASE.feature_values[rows],
                                       CASE.target[rows], index, prefilter=True)
    got = neutral_contribution(CASE.predictions[rows], CASE.meta[rows], CASE.codes[rows], CASE.target[rows],
                               np.array([0, 300]), backend="numpy")
    assert_matches(got[0], shuffled, "neutral MMC, shuffled ids")
