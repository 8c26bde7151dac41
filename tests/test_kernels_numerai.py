"""Every kernel against numerai-tools 0.7.2 applied era by era, on every backend, to ≤ 1e-6.

The case (tests/test_kernels_cases.py) has eras of 1, 2, 3, 40, 300 and 5000 rows, ties, NaN
targets and predictions, missing feature codes, a constant and a duplicated feature. Where
numerai-tools refuses an era (a one-row era for correlations, NaN predictions where it asserts)
the comparison leaves it out; tests/test_kernels_behaviour.py pins what we return there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring

from eraflow import kernels
from tests.test_kernels_cases import (
    BACKENDS,
    assert_matches,
    frame,
    mixed_case,
    nt_contribution_column,
    nt_numerai_corr_column,
    per_era_rows,
    per_era_scores,
    quiet,
    series,
)

CASE = mixed_case()
SCORED = [era for era, size in enumerate(CASE.sizes) if size >= 2]  # numerai-tools needs 2 rows to correlate
REGRESSED = [era for era, size in enumerate(CASE.sizes) if size > CASE.codes.shape[1] + 1]  # rows left after
M = CASE.predictions.shape[1]


def scored(per_era: np.ndarray, eras=SCORED) -> np.ndarray:
    return per_era[eras]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["average", "first"])
def test_rank(backend, method):
    expected = per_era_rows(CASE, lambda rows, index: scoring.rank(frame(CASE.with_nan[rows], index), method))
    assert_matches(kernels.rank(CASE.with_nan, CASE.offsets, method, backend=backend), expected,
                   f"rank {method} on {backend}, eras {CASE.sizes}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussianize(backend):
    expected = per_era_rows(CASE, lambda rows, index: scoring.gaussian(scoring.tie_kept_rank(
        frame(CASE.with_nan[rows], index))))
    assert_matches(kernels.gaussianize(CASE.with_nan, CASE.offsets, backend=backend), expected,
                   f"gaussianize on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.5, 1.5, 2.0])
def test_power(backend, p):
    index = pd.Index([f"id{i:07d}" for i in range(len(CASE.predictions))])
    expected = scoring.power(frame(CASE.predictions, index), p).to_numpy()
    assert_matches(kernels.power(CASE.predictions, p, backend=backend), expected, f"power {p} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_pearson_and_spearman(backend):
    for name, ours, theirs in [("pearson", kernels.pearson, scoring.pearson_correlation),
                               ("spearman", kernels.spearman, scoring.spearman_correlation)]:
        expected = per_era_scores(CASE, lambda rows, index: [
            theirs(series(CASE.meta[rows], index, "meta"), series(CASE.predictions[rows, j], index, "p"))
            for j in range(M)], SCORED)
        got = ours(CASE.predictions, CASE.meta, CASE.offsets, backend=backend)
        assert_matches(scored(got), expected, f"{name} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_numerai_corr_with_nan_targets_and_predictions(backend):
    expected = per_era_scores(CASE, lambda rows, index: [
        nt_numerai_corr_column(CASE.with_nan[rows, j], CASE.target[rows], index) for j in range(M)], SCORED)
    got = kernels.numerai_corr(CASE.with_nan, CASE.target, CASE.offsets, backend=backend)
    assert got.shape == (len(CASE.sizes), M)
    assert_matches(scored(got), expected, f"numerai_corr on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_numerai_corr_matches_a_dataframe_of_columns(backend):
    """Without NaN predictions the 2-D result is numerai-tools on the whole DataFrame."""
    expected = per_era_scores(CASE, lambda rows, index: scoring.numerai_corr(
        frame(CASE.predictions[rows], index), series(CASE.target[rows], index, "target")), SCORED)
    got = kernels.numerai_corr(CASE.predictions, CASE.target, CASE.offsets, backend=backend)
    assert_matches(scored(got), expected, f"numerai_corr 2-D on {backend}")
    one = kernels.numerai_corr(CASE.predictions[:, 1], CASE.target, CASE.offsets, backend=backend)
    assert one.shape == (len(CASE.sizes),)
    assert_matches(scored(one), expected[:, 1], f"numerai_corr 1-D on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_correlation_contribution(backend):
    expected = per_era_scores(CASE, lambda rows, index: [
        nt_contribution_column(CASE.with_nan[rows, j], CASE.meta[rows], CASE.target[rows], index)
        for j in range(M)], SCORED)
    got = kernels.correlation_contribution(CASE.with_nan, CASE.meta, CASE.target, CASE.offsets, backend=backend)
    assert_matches(scored(got), expected, f"correlation_contribution on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_correlation_contribution_with_targets_outside_unit_interval(backend):
    """numerai-tools scales targets ×4 only when they all lie in [0, 1]; returns-like targets are not."""
    target = CASE.target * 3 - 1
    expected = per_era_scores(CASE, lambda rows, index: [
        nt_contribution_column(CASE.predictions[rows, j], CASE.meta[rows], target[rows], index)
        for j in range(M)], SCORED)
    got = kernels.correlation_contribution(CASE.predictions, CASE.meta, target, CASE.offsets, backend=backend)
    assert_matches(scored(got), expected, f"correlation_contribution, targets in [-1, 2], on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("proportion", [1.0, 0.5])
def test_neutralize(backend, proportion):
    expected = per_era_rows(CASE, lambda rows, index: scoring.neutralize(
        frame(CASE.predictions[rows], index), frame(CASE.feature_values[rows], index), proportion))
    got = kernels.neutralize(CASE.predictions, CASE.codes, CASE.offsets, proportion, backend=backend)
    one_row = slice(0, 1)  # a one-row era is constant: NaN here, rounding noise in numerai-tools
    assert np.isnan(got[one_row]).all()
    assert_matches(got[1:], expected[1:], f"neutralize proportion {proportion} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutralize_short_era_with_repeated_feature_rows(backend):
    """Fewer rows than features, but two rows alike: the features do not span the rows, so the
    shortcut for short eras (residual exactly 0) must not apply and lstsq decides."""
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 5, (5, 8)).astype(np.int8)
    codes[1] = codes[0]
    x = rng.normal(size=(5, 1))
    index = pd.RangeIndex(5)
    expected = scoring.neutralize(frame(x, index), frame(codes.astype(np.float64), index)).to_numpy()
    got = kernels.neutralize(x, codes, np.array([0, 5]), backend=backend)
    assert abs(got[0, 0]) > 0.01, "rows 0 and 1 keep ±(x0 − x1)/2"
    assert_matches(got, expected, f"short era with repeated rows on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutralize_float_features(backend):
    features = CASE.feature_values / 4 + 0.1 * CASE.predictions[:, :1]
    expected = per_era_rows(CASE, lambda rows, index: scoring.neutralize(
        frame(CASE.predictions[rows, 0], index), frame(features[rows], index)))
    got = kernels.neutralize(CASE.predictions[:, 0], features, CASE.offsets, backend=backend)
    assert got.shape == (len(CASE.predictions),)
    assert_matches(got[1:], expected[1:, 0], f"neutralize 1-D with float features on {backend}")


def nt_feature_neutral(score):
    """numerai-tools ``score(predictions, features, target)`` per regressed era of the case."""
    return per_era_scores(CASE, lambda rows, index: score(
        frame(CASE.predictions[rows], index), frame(CASE.feature_values[rows], index),
        series(CASE.target[rows], index, "target")), REGRESSED)


@pytest.mark.parametrize("backend", BACKENDS)
def test_feature_neutral_corr(backend):
    got = kernels.feature_neutral_corr(CASE.predictions, CASE.codes, CASE.target, CASE.offsets, backend=backend)
    assert_matches(got[REGRESSED], nt_feature_neutral(scoring.feature_neutral_corr),
                   f"feature_neutral_corr on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_correlation(backend):
    got = kernels.neutral_correlation(CASE.predictions, CASE.codes, CASE.target, CASE.offsets, backend=backend)
    assert_matches(got[REGRESSED], nt_feature_neutral(scoring.neutral_correlation), f"neutral_correlation on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_scores_give_both_from_one_call(backend):
    assert np.isnan(CASE.target).any()  # some eras need the second neutralization
    got = kernels.neutral_scores(CASE.predictions, CASE.codes, CASE.target, CASE.offsets, backend=backend)
    assert_matches(got.fnc[REGRESSED], nt_feature_neutral(scoring.feature_neutral_corr), f"fnc on {backend}")
    assert_matches(got.neutral_corr[REGRESSED], nt_feature_neutral(scoring.neutral_correlation),
                   f"neutral_corr on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_feature_exposure(backend):
    def correlations(rows, index, j):
        return quiet(frame(CASE.feature_values[rows], index).corrwith, series(CASE.predictions[rows, j], index, "p"))

    max_abs = per_era_scores(CASE, lambda rows, index: [quiet(scoring.max_feature_correlation, series(
        CASE.predictions[rows, j], index, "p"), frame(CASE.feature_values[rows], index))[1] for j in range(M)], SCORED)
    rms = per_era_scores(CASE, lambda rows, index: [
        np.sqrt(np.nanmean(correlations(rows, index, j).to_numpy() ** 2)) for j in range(M)], SCORED)
    got = kernels.feature_exposure(CASE.predictions, CASE.codes, CASE.offsets, backend=backend)
    assert_matches(scored(got.max_abs), max_abs, f"feature_exposure max_abs on {backend}")
    assert_matches(scored(got.rms), rms, f"feature_exposure rms on {backend}")


def test_era_summary_sharpe_matches_numerai_tools():
    per_era = kernels.numerai_corr(CASE.predictions, CASE.target, CASE.offsets, backend="numpy")[SCORED]
    summary = kernels.era_summary(per_era)
    assert_matches(summary.sharpe, [scoring.sharpe_ratio(per_era[:, j]) for j in range(M)], "sharpe")
    assert_matches(summary.std, per_era.std(axis=0), "std ddof=0")
