"""Defined behaviour of the kernels: tiny cases computed by hand, what we return where
numerai-tools refuses input, input errors, backend choice and the docstring examples."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy.special import ndtri

from eraflow import kernels
from eraflow.engine.errors import InputError
from eraflow.kernels import correlation, neutralization, ranking, summary
from tests.test_kernels_cases import BACKENDS

EXACT = 1e-15


# --- tiny cases computed by hand ------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_by_hand(backend):
    x, offsets = np.array([3.0, 1.0, 1.0, 5.0, np.nan, 2.0]), np.array([0, 4, 6])
    np.testing.assert_allclose(kernels.rank(x, offsets, backend=backend),
                               [2.5 / 4, 1 / 4, 1 / 4, 3.5 / 4, np.nan, 0.5], rtol=EXACT,
                               err_msg="average: ties share rank 1.5; NaN ignored in the count")
    np.testing.assert_allclose(kernels.rank(x, offsets, "first", backend=backend),
                               [2.5 / 4, 0.5 / 4, 1.5 / 4, 3.5 / 4, np.nan, 0.5], rtol=EXACT,
                               err_msg="first: tied rows ranked in row order")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_orders_negative_and_positive_zero_as_ties_and_infinities_last(backend):
    x, offsets = np.array([0.0, -0.0, np.inf, -np.inf, -1e-300]), np.array([0, 5])
    np.testing.assert_allclose(kernels.rank(x, offsets, "first", backend=backend) * 5 + 0.5,
                               [3, 4, 5, 1, 2], rtol=EXACT, err_msg="first ranks with ±0 and ±inf")


@pytest.mark.parametrize("backend", BACKENDS)
def test_numerai_corr_by_hand(backend):
    pred, target = np.array([0.3, 0.1, 0.2, 0.9]), np.array([0.5, 0.0, np.nan, 1.0])
    # target centered over its 3 present values (mean 0.5); the NaN-target row is then dropped
    t = np.array([0.0, -0.5, 0.5])
    g = ndtri((np.array([2, 1, 3]) - 0.5) / 3)
    p, t = np.sign(g) * np.abs(g) ** 1.5, np.sign(t) * np.abs(t) ** 1.5
    expected = np.corrcoef(p, t)[0, 1]
    np.testing.assert_allclose(kernels.numerai_corr(pred, target, np.array([0, 4]), backend=backend), [expected],
                               rtol=1e-14, err_msg="numerai_corr of a 4-row era with one NaN target")


@pytest.mark.parametrize("backend", BACKENDS)
def test_correlation_contribution_by_hand(backend):
    pred, meta, target = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4]), np.array([0.0, 1, 0.5, 1])
    p, m = ndtri((np.array([1, 2, 3, 4]) - 0.5) / 4), ndtri((np.array([1, 3, 2, 4]) - 0.5) / 4)
    p_orth = p - m * (p @ m) / (m @ m)
    t = target * 4 - (target * 4).mean()
    np.testing.assert_allclose(kernels.correlation_contribution(pred, meta, target, np.array([0, 4]),
                                                                backend=backend),
                               [t @ p_orth / 4], rtol=1e-14, err_msg="MMC of one 4-row era")


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutralize_by_hand(backend):
    """x = [1, 2, 4, 3] on f = [0, 1, 2, 3]: slope 0.8, intercept 1.3, fitted [1.3, 2.1, 2.9, 3.7]."""
    x, f = np.array([1.0, 2.0, 4.0, 3.0]), np.array([[0], [1], [2], [3]], dtype=np.int8)
    np.testing.assert_allclose(kernels.neutralize(x, f, np.array([0, 4]), backend=backend),
                               [-0.3, -0.1, 1.1, -0.7], atol=1e-14, err_msg="neutralize proportion 1")
    np.testing.assert_allclose(kernels.neutralize(x, f, np.array([0, 4]), 0.5, backend=backend),
                               x - 0.5 * np.array([1.3, 2.1, 2.9, 3.7]), atol=1e-14, err_msg="proportion 0.5")


def test_era_summary_by_hand():
    s = kernels.era_summary(np.array([0.02, -0.01, np.nan, -0.03, 0.04]))
    scores = np.array([0.02, -0.01, -0.03, 0.04])  # NaN era left out
    assert s.n_eras == 4
    np.testing.assert_allclose([s.mean, s.std, s.sharpe, s.max_drawdown],
                               [0.005, scores.std(), 0.005 / scores.std(), 0.04], rtol=1e-12,
                               err_msg="cumsum .02 .01 -.02 .02: deepest fall .04 from the .02 peak")
    first_losing = kernels.era_summary(np.array([-0.01, -0.02, 0.05]))
    np.testing.assert_allclose(first_losing.max_drawdown, 0.02, rtol=1e-12,
                               err_msg="the start is not a peak: drawdown from the first era's score")


def test_era_summary_columns_and_degenerate_inputs():
    s = kernels.era_summary(np.array([[0.01, np.nan], [0.03, np.nan], [0.02, 0.5]]))
    np.testing.assert_array_equal(s.n_eras, [3, 1])
    np.testing.assert_allclose(s.mean, [0.02, 0.5], rtol=1e-12, err_msg="per-column means")
    assert np.isnan(s.sharpe[1]) and s.std[1] == 0, "one era: std 0, sharpe NaN"
    empty = kernels.era_summary(np.array([np.nan, np.nan]))
    assert empty.n_eras == 0 and np.isnan([empty.mean, empty.std, empty.sharpe, empty.max_drawdown]).all()


# --- where numerai-tools refuses input --------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_one_row_eras(backend):
    x, t, f = np.array([[0.7], [0.1], [0.4]]), np.array([0.5, 0.0, 1.0]), np.array([[1], [2], [3]], dtype=np.int8)
    offsets = np.array([0, 1, 3])
    assert kernels.rank(x, offsets, backend=backend)[0, 0] == 0.5
    assert kernels.gaussianize(x, offsets, backend=backend)[0, 0] == 0.0
    for name, scores in [("numerai_corr", kernels.numerai_corr(x, t, offsets, backend=backend)),
                         ("pearson", kernels.pearson(x, t, offsets, backend=backend)),
                         ("contribution", kernels.correlation_contribution(x, t, t, offsets, backend=backend)),
                         ("exposure", kernels.feature_exposure(x, f, offsets, backend=backend).max_abs)]:
        assert np.isnan(scores[0, 0]) and np.isfinite(scores[1, 0]), f"{name}: NaN for the one-row era only"
    assert np.isnan(kernels.neutralize(x, f, offsets, backend=backend)[0, 0]), "a one-row era is constant"


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_columns_and_all_nan_targets_give_nan_for_that_era_only(backend):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2))
    x[:10, 1] = 0.25  # column 1 constant in era 0
    t = rng.choice([0.0, 0.5, 1.0], 20)
    t[10:] = np.nan  # era 1 has no target
    f = rng.integers(0, 5, (20, 3)).astype(np.int8)
    offsets = np.array([0, 10, 20])
    corr = kernels.numerai_corr(x, t, offsets, backend=backend)
    assert np.isfinite(corr[0, 0]) and np.isnan(corr[0, 1]) and np.isnan(corr[1]).all()
    neutral = kernels.neutralize(x, f, offsets, backend=backend)
    assert np.isnan(neutral[:10, 1]).all() and np.isfinite(neutral[:10, 0]).all() and np.isfinite(neutral[10:]).all()
    assert np.isnan(kernels.correlation_contribution(x[:, 0], x[:, 1], t, offsets, backend=backend)[0]), \
        "a constant meta model has no direction to orthogonalize against"


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutralize_drops_rows_with_nan_and_fits_the_rest(backend):
    rng = np.random.default_rng(1)
    x, f = rng.normal(size=(30, 2)), rng.integers(0, 5, (30, 4)).astype(np.int8)
    x[[3, 17], 1] = np.nan
    out = kernels.neutralize(x, f, np.array([0, 30]), backend=backend)
    complete = np.ones(30, bool)
    complete[[3, 17]] = False
    assert np.isnan(out[~complete]).all(), "a row with any NaN comes back NaN in every column"
    np.testing.assert_allclose(out[complete], kernels.neutralize(x[complete], f[complete], np.array([0, 28]),
                                                                 backend=backend),
                               rtol=0, atol=1e-12, err_msg="the other rows are neutralized on their own")


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_codes_are_read_as_the_middle_code(backend):
    rng = np.random.default_rng(2)
    x, codes = rng.normal(size=40), rng.integers(-1, 5, (40, 3)).astype(np.int8)
    codes[20:, 2] = -1  # feature 2 missing for the whole second era: constant, so it drops out
    offsets = np.array([0, 20, 40])
    as_middle = np.where(codes < 0, 2, codes).astype(np.float64)
    np.testing.assert_allclose(kernels.neutralize(x, codes, offsets, backend=backend),
                               kernels.neutralize(x, as_middle, offsets, backend=backend), rtol=0, atol=1e-12,
                               err_msg="codes with -1 vs floats with 2")
    np.testing.assert_allclose(kernels.neutralize(x[20:], codes[20:, :2], np.array([0, 20]), backend=backend),
                               kernels.neutralize(x, codes, offsets, backend=backend)[20:], rtol=0, atol=1e-12,
                               err_msg="an all-missing feature is the same as no feature")


@pytest.mark.parametrize("backend", BACKENDS)
def test_eras_with_no_more_rows_than_features_are_fully_explained(backend):
    rng = np.random.default_rng(3)
    x, t, f = rng.normal(size=(4, 1)), np.array([0.0, 0.5, 1.0, 0.25]), rng.integers(0, 5, (4, 6)).astype(np.int8)
    while np.linalg.matrix_rank(np.hstack([f, np.ones((4, 1))])) < 4:
        f = rng.integers(0, 5, (4, 6)).astype(np.int8)
    offsets = np.array([0, 4])
    np.testing.assert_array_equal(kernels.neutralize(x, f, offsets, backend=backend), np.zeros((4, 1)),
                                  err_msg="the residual is exactly 0, not rounding noise")
    np.testing.assert_allclose(kernels.neutralize(x, f, offsets, 0.25, backend=backend), 0.75 * x, rtol=1e-14)
    assert np.isnan(kernels.feature_neutral_corr(x, f, t, offsets, backend=backend)).all()


@pytest.mark.parametrize("module", ["_xp_linalg", "_numba_linalg"])
def test_lstsq_is_only_the_fallback_for_collinear_features(monkeypatch, module):
    """Constant and all-missing features are common and must stay on the Cholesky path;
    duplicated features must leave it (and still match numerai-tools, tested elsewhere)."""
    import importlib

    target = importlib.import_module(f"eraflow.kernels.{module}")
    calls = []
    real = target.lstsq_fitted
    monkeypatch.setattr(target, "lstsq_fitted", lambda *args: calls.append(1) or real(*args))
    backend = "numpy" if module == "_xp_linalg" else "numba"
    rng = np.random.default_rng(5)
    x, codes = rng.normal(size=200), rng.integers(0, 5, (200, 6)).astype(np.int8)
    codes[:, 1], codes[:, 2] = 3, -1  # a constant feature and an all-missing one
    kernels.neutralize(x, codes, np.array([0, 100, 200]), backend=backend)
    assert calls == [], "well-conditioned eras must not fall back to lstsq"
    codes[100:, 4] = codes[100:, 5]
    kernels.neutralize(x, codes, np.array([0, 100, 200]), backend=backend)
    assert calls == [1], "only the era with a duplicated feature falls back"


@pytest.mark.parametrize("backend", BACKENDS)
def test_feature_neutral_corr_drops_rows_with_nan_predictions(backend):
    rng = np.random.default_rng(4)
    x, t, f = rng.normal(size=50), rng.choice([0.0, 0.5, 1.0], 50), rng.integers(0, 5, (50, 3)).astype(np.int8)
    x[[5, 9]] = np.nan
    t[[5, 9]] = np.nan  # else they would still count in the target's era mean, as in numerai_corr
    keep = ~np.isnan(x)
    np.testing.assert_allclose(kernels.feature_neutral_corr(x, f, t, np.array([0, 50]), backend=backend),
                               kernels.feature_neutral_corr(x[keep], f[keep], t[keep], np.array([0, 48]),
                                                            backend=backend), rtol=1e-12,
                               err_msg="NaN prediction rows are dropped before ranking")


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_eras_give_nan_scores(backend):
    x, t = np.array([0.1, 0.5, 0.3]), np.array([0.0, 1.0, 0.5])
    offsets = np.array([0, 0, 3, 3])
    corr = kernels.numerai_corr(x, t, offsets, backend=backend)
    assert corr.shape == (3,) and np.isnan(corr[[0, 2]]).all() and np.isfinite(corr[1])


# --- input errors and backend choice -----------------------------------------------------------

X, T, OFFSETS = np.arange(6.0), np.array([0.0, 0.5, 1.0, 0.0, 0.5, 1.0]), np.array([0, 3, 6])
F = np.zeros((6, 2), dtype=np.int8)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: kernels.rank(X, np.array([0, 3, 5])), "offsets must run from 0"),
    (lambda: kernels.rank(X, np.array([1, 3, 6])), "offsets must run from 0"),
    (lambda: kernels.rank(X, np.array([0, 4, 3, 6])), "non-decreasing"),
    (lambda: kernels.rank(X, np.array([0.0, 3.0, 6.0])), "integer array"),
    (lambda: kernels.rank(X, np.array([[0, 6]])), "1-D integer array"),
    (lambda: kernels.rank(X.reshape(1, 2, 3), OFFSETS), "1-D (n,) or 2-D"),
    (lambda: kernels.rank(np.array(["a"] * 6), OFFSETS), "numeric"),
    (lambda: kernels.rank(X, OFFSETS, method="dense"), "unknown rank method"),
    (lambda: kernels.rank(X, OFFSETS, backend="gpu"), "unknown backend"),
    (lambda: kernels.numerai_corr(X, T[:5], OFFSETS), "has 5 rows"),
    (lambda: kernels.numerai_corr(X, np.ones((6, 2)), OFFSETS), "one column"),
    (lambda: kernels.pearson(np.ones((6, 2)), np.ones((6, 3)), OFFSETS), "same number of columns"),
    (lambda: kernels.neutralize(X, F[:4], OFFSETS), "features has 4 rows"),
    (lambda: kernels.neutralize(X, F[:, 0], OFFSETS), "features must be 2-D"),
    (lambda: kernels.neutralize(X, np.full((6, 2), np.nan), OFFSETS), "features contain NaN"),
    (lambda: kernels.neutralize(X, F, OFFSETS, proportion=np.nan), "proportion must be a finite number"),
])
def test_bad_input_raises_one_line_input_error(call, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        call()
    assert "\n" not in str(error.value)


def test_cupy_without_a_gpu_is_an_input_error():
    if kernels.gpu_available():
        pytest.skip("a GPU answered on this machine")
    with pytest.raises(InputError, match="backend 'cupy' needs CuPy and a working NVIDIA GPU"):
        kernels.rank(X, OFFSETS, backend="cupy")
    assert kernels.resolve_backend("auto") == "numba"


@pytest.mark.parametrize("module", [ranking, correlation, neutralization, summary], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} failing examples in {module.__name__}"
