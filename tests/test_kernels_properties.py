"""Hypothesis properties of the kernels, on random era layouts (including empty and one-row
eras), ties and NaN, for the NumPy reference and numba."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eraflow import kernels

BACKENDS = ["numpy", "numba"]
SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def era_data(draw, max_eras: int = 6, max_rows: int = 14, integers: bool = False):
    """(offsets, values (n, m) with NaN and ties, target (n,), codes (n, k) int8 with -1)."""
    sizes = draw(st.lists(st.integers(0, max_rows), min_size=1, max_size=max_eras))
    n, m, k = sum(sizes), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    number = st.integers(-20, 20).map(float) if integers else st.floats(-100, 100, width=32)
    values = draw(arrays(np.float64, (n, m), elements=st.one_of(number, st.just(np.nan))
                         if draw(st.booleans()) else number))
    target = draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, np.nan])))
    codes = draw(arrays(np.int8, (n, k), elements=st.integers(-1, 4)))
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), values, target, codes


def eras(offsets):
    return [slice(offsets[e], offsets[e + 1]) for e in range(len(offsets) - 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["average", "first"])
@SETTINGS
@given(data=era_data(integers=True))
def test_rank_is_invariant_to_increasing_transforms(backend, method, data):
    offsets, x, _, _ = data
    transformed = x**3 + 5 * x - 7  # strictly increasing, exact on small integers
    np.testing.assert_array_equal(kernels.rank(transformed, offsets, method, backend=backend),
                                  kernels.rank(x, offsets, method, backend=backend),
                                  err_msg=f"rank {method} changed under x³ + 5x − 7 on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=era_data())
def test_neutralized_values_are_orthogonal_to_features_and_constant(backend, data):
    offsets, x, _, codes = data
    out = kernels.neutralize(x, codes, offsets, backend=backend)
    unchanged = kernels.neutralize(x, codes, offsets, proportion=0.0, backend=backend)
    features = np.where(codes < 0, 2, codes).astype(np.float64)
    for rows in eras(offsets):
        r, f = out[rows], features[rows]
        kept = ~np.isnan(x[rows]).any(axis=1)
        defined = ~np.isnan(r[kept]).any(axis=0) & kept.any()  # columns with a residual in this era
        for j in np.flatnonzero(defined):
            scale = max(1.0, np.abs(x[rows][kept, j]).max()) * kept.sum() * 4
            np.testing.assert_allclose(r[kept, j].sum(), 0, atol=1e-9 * scale,
                                       err_msg=f"residual not orthogonal to the constant on {backend}")
            np.testing.assert_allclose(f[kept].T @ r[kept, j], 0, atol=1e-8 * scale,
                                       err_msg=f"residual not orthogonal to the features on {backend}")
            np.testing.assert_allclose(unchanged[rows][kept, j], x[rows][kept, j], rtol=1e-12,
                                       err_msg=f"proportion 0 changed the values on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=era_data())
def test_a_column_correlates_perfectly_with_itself(backend, data):
    offsets, x, _, _ = data
    for name, correlate in [("pearson", kernels.pearson), ("spearman", kernels.spearman)]:
        got = correlate(x, x, offsets, backend=backend)
        for era, rows in enumerate(eras(offsets)):
            for j in range(x.shape[1]):
                present = x[rows, j][~np.isnan(x[rows, j])]
                if present.size >= 2 and present.min() < present.max():
                    np.testing.assert_allclose(got[era, j], 1.0, rtol=1e-12, err_msg=f"{name} of a column with itself")
                else:
                    assert np.isnan(got[era, j]), f"{name} of a constant or too short column is NaN"


def scores_and_rows(offsets, x, target, codes, backend):
    return {
        "numerai_corr": kernels.numerai_corr(x, target, offsets, backend=backend),
        "correlation_contribution": kernels.correlation_contribution(x, x[:, 0], target, offsets, backend=backend),
        "feature_exposure": kernels.feature_exposure(x, codes, offsets, backend=backend).rms,
    }, {
        "rank first": kernels.rank(x, offsets, "first", backend=backend),
        "neutralize": kernels.neutralize(x, codes, offsets, 0.8, backend=backend),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=era_data(), seed=st.integers(0, 2**32 - 1))
def test_permuting_whole_eras_permutes_the_results(backend, data, seed):
    offsets, x, target, codes = data
    order = np.random.default_rng(seed).permutation(len(offsets) - 1)
    slices = eras(offsets)
    row_order = np.concatenate([np.arange(slices[e].start, slices[e].stop) for e in order]).astype(np.int64)
    sizes = np.diff(offsets)[order]
    moved = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    scores, rows = scores_and_rows(offsets, x, target, codes, backend)
    moved_scores, moved_rows = scores_and_rows(moved, x[row_order], target[row_order], codes[row_order], backend)
    for name in scores:
        np.testing.assert_allclose(moved_scores[name], scores[name][order], rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name} after permuting eras on {backend}")
    for name in rows:
        np.testing.assert_allclose(moved_rows[name], rows[name][row_order], rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name} after permuting eras on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=era_data(), cut=st.integers(0, 6))
def test_results_do_not_depend_on_how_eras_are_split_between_calls(backend, data, cut):
    offsets, x, target, codes = data
    cut = min(cut, len(offsets) - 1)
    split = offsets[cut]
    first = scores_and_rows(offsets[:cut + 1], x[:split], target[:split], codes[:split], backend)
    second = scores_and_rows(offsets[cut:] - split, x[split:], target[split:], codes[split:], backend)
    whole = scores_and_rows(offsets, x, target, codes, backend)
    for part in (0, 1):
        for name in whole[part]:
            joined = np.concatenate([first[part][name], second[part][name]])
            np.testing.assert_allclose(joined, whole[part][name], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name} split at era {cut} on {backend}")
