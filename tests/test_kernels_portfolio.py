"""alpha and meta_portfolio_contribution against numerai-tools 0.7.2 applied era by era, on every backend.

The case has eras of 1, 2, 3, 40, 300 and 5000 rows (the mixed case of tests/test_kernels_cases.py:
ties, NaN targets, NaN predictions differing by column), plus empty eras, an all-NaN-target era and
a constant prediction column; neutralizers are random floats and sample weights positive. numerai-tools
asserts that at most 20 % of rows are dropped; the oracle lifts that check (as the kernels do not apply
it) and is otherwise the library as published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import importlib.util
import json
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring

from eraflow.engine.errors import InputError
from eraflow.kernels import backend as backend_module
from eraflow.kernels import portfolio
from eraflow.kernels.portfolio import alpha, meta_portfolio_contribution
from tests.test_kernels_cases import BACKENDS, FAST_BACKENDS, assert_matches, frame, mixed_case, quiet, series

AGREE = 1e-9  # backends compute the same float64 math in a different order


@dataclasses.dataclass
class PortfolioCase:
    sizes: list[int]
    predictions: np.ndarray  # (n, m) with NaN
    neutralizers: np.ndarray  # (n, k)
    sample_weights: np.ndarray  # (n,)
    target: np.ndarray  # (n,) with NaN
    offsets: np.ndarray

    def eras(self):
        for era, size in enumerate(self.sizes):
            rows = slice(int(self.offsets[era]), int(self.offsets[era + 1]))
            yield era, rows, pd.Index([f"id{i:07d}" for i in range(rows.start, rows.stop)])


def portfolio_case(seed: int = 0, k: int = 6) -> PortfolioCase:
    """The mixed case (eras 1, 2, 5000, 40, 3, 300) followed by eras of 0, 7 (all targets NaN), 0 and 30 rows
    (column 1 constant: all ties), with float neutralizers and positive sample weights."""
    base = mixed_case(seed=seed)
    rng = np.random.default_rng(seed + 100)
    extra = [0, 7, 0, 30]
    n_extra = sum(extra)
    m = base.predictions.shape[1]
    predictions = np.concatenate([base.with_nan, rng.normal(size=(n_extra, m)).round(1)])
    target = np.concatenate([base.target, rng.choice([0, 0.25, 0.5, 0.75, 1.0], n_extra)])
    n_base = len(base.target)
    target[n_base:n_base + 7] = np.nan
    predictions[n_base + 7:, 1] = 0.3
    n = len(target)
    sizes = [*base.sizes, *extra]
    return PortfolioCase(sizes, predictions, rng.normal(size=(n, k)) / 30, rng.uniform(0.2, 2.0, n), target,
                         np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


CASE = portfolio_case()
M = CASE.predictions.shape[1]


@contextlib.contextmanager
def overlap_check_lifted():
    """numerai-tools with its 80 %-overlap assertion off (``max_filtered_ratio`` = 1)."""
    saved = scoring.filter_sort_index.__defaults__, scoring.filter_sort_index_many.__defaults__
    scoring.filter_sort_index.__defaults__ = (1.0,)
    scoring.filter_sort_index_many.__defaults__ = (1.0,)
    try:
        yield
    finally:
        scoring.filter_sort_index.__defaults__, scoring.filter_sort_index_many.__defaults__ = saved


def kept_sizes(case: PortfolioCase, predictions: np.ndarray) -> list[int]:
    """Rows numerai-tools keeps per era: every prediction column and the target present."""
    kept = ~np.isnan(predictions).any(axis=1) & ~np.isnan(case.target)
    return [int(kept[rows].sum()) for _, rows, _ in case.eras()]


def nt_per_era(case: PortfolioCase, predictions: np.ndarray, score) -> np.ndarray:
    """numerai-tools ``score(preds, neutralizers, weights, targets, index)`` per era; NaN where it refuses
    (fewer than 2 kept rows: its ``power`` asserts on one row, nothing to score on none)."""
    out = np.full((len(case.sizes), predictions.shape[1]), np.nan)
    with overlap_check_lifted():
        for (era, rows, index), kept in zip(case.eras(), kept_sizes(case, predictions)):
            if kept >= 2:
                out[era] = np.asarray(quiet(score, frame(predictions[rows], index),
                                            frame(case.neutralizers[rows], index),
                                            series(case.sample_weights[rows], index, "w"),
                                            series(case.target[rows], index, "target")), dtype=np.float64)
    return out


def nt_alpha(case: PortfolioCase, predictions: np.ndarray) -> np.ndarray:
    return nt_per_era(case, predictions, scoring.alpha)


def nt_mpc(case: PortfolioCase, predictions: np.ndarray, stakes: np.ndarray) -> np.ndarray:
    names = pd.Index([f"c{j}" for j in range(predictions.shape[1])])
    return nt_per_era(case, predictions, lambda p, n, w, t: scoring.meta_portfolio_contribution(
        p, pd.Series(stakes, index=names), n, w, t))


# --- numerai-tools era by era ----------------------------------------------------------------

def test_case_exercises_defined_and_undefined_eras():
    """Guards against a vacuous comparison: some eras scored, some refused (1 row, 0 rows, all-NaN target)."""
    sizes = kept_sizes(CASE, CASE.predictions)
    assert sum(s >= 2 for s in sizes) >= 6 and sum(s < 2 for s in sizes) >= 4, sizes


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_matches_numerai_tools_on_all_columns(backend):
    """Rows kept where every column is present (numerai-tools filters the frame), target centered before."""
    got = alpha(CASE.predictions, CASE.neutralizers, CASE.sample_weights, CASE.target, CASE.offsets,
                backend=backend)
    assert got.shape == (len(CASE.sizes), M)
    assert_matches(got, nt_alpha(CASE, CASE.predictions), f"alpha on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_of_one_column_matches_numerai_tools(backend):
    """1-D predictions: kept rows are that column's, so they differ from the 2-D call's."""
    for j in range(M):
        got = alpha(CASE.predictions[:, j], CASE.neutralizers, CASE.sample_weights, CASE.target, CASE.offsets,
                    backend=backend)
        assert got.shape == (len(CASE.sizes),)
        assert_matches(got, nt_alpha(CASE, CASE.predictions[:, [j]])[:, 0], f"alpha column {j} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_with_targets_outside_unit_interval(backend):
    """Returns-like targets: centering, not a [0, 1] rescale, is what alpha applies."""
    case = dataclasses.replace(CASE, target=CASE.target * 3 - 1)
    got = alpha(case.predictions, case.neutralizers, case.sample_weights, case.target, case.offsets,
                backend=backend)
    assert_matches(got, nt_alpha(case, case.predictions), f"alpha, targets in [-1, 2], on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stakes", [[1.0, 2.0, 0.5], [0.0, 0.0, 1.0], [np.nan, 3.0, 1.0]],
                         ids=["mixed", "meta only", "nan stake"])
def test_mpc_matches_numerai_tools(backend, stakes):
    stakes = np.array(stakes)
    got = meta_portfolio_contribution(CASE.predictions, stakes, CASE.neutralizers, CASE.sample_weights,
                                      CASE.target, CASE.offsets, backend=backend)
    assert got.shape == (len(CASE.sizes), M)
    assert_matches(got, nt_mpc(CASE, CASE.predictions, stakes), f"mpc stakes {stakes} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_mpc_is_nan_where_the_staked_portfolio_is_zero(backend):
    """Only column 1 staked, and it is constant in the last era: v = 0, numerai-tools divides 0 by 0."""
    stakes = np.array([0.0, 1.0, 0.0])
    got = meta_portfolio_contribution(CASE.predictions, stakes, CASE.neutralizers, CASE.sample_weights,
                                      CASE.target, CASE.offsets, backend=backend)
    expected = nt_mpc(CASE, CASE.predictions, stakes)
    assert np.isnan(expected[-1]).all() and np.isnan(got[-1]).all()
    assert_matches(got, expected, f"mpc with a zero portfolio on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_mpc_of_one_column_is_zero(backend):
    """With one column the portfolio is that column: its residual, hence its gradient, vanishes."""
    got = meta_portfolio_contribution(CASE.predictions[:, 0], [2.0], CASE.neutralizers, CASE.sample_weights,
                                      CASE.target, CASE.offsets, backend=backend)
    assert got.shape == (len(CASE.sizes),)
    assert_matches(got, nt_mpc(CASE, CASE.predictions[:, [0]], np.array([2.0]))[:, 0], f"mpc 1-D on {backend}")
    assert np.nanmax(np.abs(got)) < 1e-12


# --- tiny cases by hand ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_two_rows_by_hand(backend):
    """Ranks 1/4, 3/4 → ±ndtri(3/4)^1.5; targets centered to ∓1/2; N ⟂ nothing (zero column): alpha = q/2."""
    q = NormalDist().inv_cdf(0.75) ** 1.5
    got = alpha(np.array([1.0, 2.0]), np.zeros((2, 1)), np.ones(2), np.array([0.0, 1.0]), np.array([0, 2]),
                backend=backend)
    np.testing.assert_allclose(got, [q / 2], rtol=1e-14, err_msg="alpha of a 2-row era")


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_is_zero_when_the_neutralizer_spans_the_signal(backend):
    """N = s / √(sᵀ W s) makes w ∘ (s − N Nᵀ(w ∘ s)) = 0: guards against dropping w from the projection."""
    rng = np.random.default_rng(5)
    pred, w, t = rng.normal(size=50), rng.uniform(0.5, 2, 50), rng.normal(size=50)
    s = np.array([NormalDist().inv_cdf((r - 0.5) / 50) for r in pd.Series(pred).rank()])
    s = np.sign(s) * np.abs(s) ** 1.5
    n = (s / np.sqrt(s @ (w * s)))[:, None]
    got = alpha(pred, n, w, t, np.array([0, 50]), backend=backend)
    assert abs(got[0]) < 1e-12
    assert abs(alpha(pred, np.zeros((50, 1)), w, t, np.array([0, 50]), backend=backend)[0]) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_tied_column_scores_zero_and_short_eras_nan(backend):
    """All-tied predictions have s = 0 (alpha 0, as numerai-tools); eras of 0 or 1 kept rows are NaN."""
    pred = np.array([0.5, 0.5, 0.5, 1.0, 2.0, np.nan, 3.0])
    t = np.array([0.0, 1.0, 0.5, 1.0, 0.0, 1.0, np.nan])
    got = alpha(pred, np.ones((7, 1)), np.ones(7), t, np.array([0, 3, 3, 4, 7]), backend=backend)
    np.testing.assert_array_equal(np.isnan(got), [False, True, True, True])
    assert got[0] == 0


# --- backends --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backends_agree_with_numpy_reference(backend):
    args = (CASE.neutralizers, CASE.sample_weights, CASE.target, CASE.offsets)
    for name, fn in [("alpha", lambda b: alpha(CASE.predictions, *args, backend=b)),
                     ("mpc", lambda b: meta_portfolio_contribution(CASE.predictions, [1, 2, 3], *args, backend=b))]:
        np.testing.assert_allclose(fn(backend), fn("numpy"), rtol=0, atol=AGREE, err_msg=f"{name} on {backend}")


def test_numpy_results_do_not_depend_on_how_eras_are_batched(monkeypatch):
    args = (CASE.neutralizers, CASE.sample_weights, CASE.target, CASE.offsets)
    results = []
    for budget in (1, 2**40):
        monkeypatch.setattr(backend_module, "NUMPY", dataclasses.replace(backend_module.NUMPY, block_cells=budget))
        results.append((alpha(CASE.predictions, *args, backend="numpy"),
                        meta_portfolio_contribution(CASE.predictions, [1, 0, 2], *args, backend="numpy")))
    for one, other in zip(*results):
        np.testing.assert_allclose(one, other, rtol=0, atol=AGREE, err_msg="one era per block vs one block")


# --- input errors ----------------------------------------------------------------------------

def call_alpha(**changes):
    args = dict(predictions=CASE.predictions, neutralizers=CASE.neutralizers, sample_weights=CASE.sample_weights,
                targets=CASE.target, offsets=CASE.offsets)
    return alpha(**{**args, **changes}, backend="numpy")


def call_mpc(stakes, **changes):
    args = dict(predictions=CASE.predictions, neutralizers=CASE.neutralizers, sample_weights=CASE.sample_weights,
                targets=CASE.target, offsets=CASE.offsets)
    return meta_portfolio_contribution(stakes=stakes, **{**args, **changes}, backend="numpy")


def with_value(array: np.ndarray, value: float) -> np.ndarray:
    changed = array.copy()
    changed.flat[3] = value
    return changed


@pytest.mark.parametrize(("changes", "message"), [
    ({"neutralizers": with_value(CASE.neutralizers, np.nan)}, "neutralizers contain NaN or inf"),
    ({"neutralizers": with_value(CASE.neutralizers, np.inf)}, "neutralizers contain NaN or inf"),
    ({"neutralizers": CASE.neutralizers[:, 0]}, "neutralizers must be 2-D"),
    ({"neutralizers": CASE.neutralizers[:-1]}, "neutralizers has"),
    ({"sample_weights": with_value(CASE.sample_weights, np.nan)}, "sample_weights contain NaN or inf"),
    ({"sample_weights": with_value(CASE.sample_weights, -np.inf)}, "sample_weights contain NaN or inf"),
    ({"targets": np.stack([CASE.target] * 2, axis=1)}, "targets must be one column"),
])
def test_alpha_input_errors(changes, message):
    with pytest.raises(InputError, match=message) as error:
        call_alpha(**changes)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("stakes", "message", "numerai_tools_asserts"), [
    ([0.0, 0.0, 0.0], "stakes are all zero", True),
    ([np.nan, 0.0, np.nan], "stakes are all zero", True),
    ([1.0, -1.0, 1.0], "stakes must not be negative", True),
    ([1.0, np.inf, 1.0], "stakes contain inf", True),
    ([1.0, 2.0], "one number per prediction column", False),
])
def test_mpc_stake_errors(stakes, message, numerai_tools_asserts):
    """An InputError wherever numerai-tools asserts that s / Σ|s| sums to 1 (all zero, negative, inf).
    Fewer stakes than columns: numerai-tools scores only the staked columns; we refuse the mismatch."""
    with pytest.raises(InputError, match=message) as error:
        call_mpc(stakes)
    assert "\n" not in str(error.value)
    index = pd.Index(["a", "b", "c", "d"])
    oracle = (frame(np.arange(12.0), index), pd.Series(stakes, index=[f"c{j}" for j in range(len(stakes))]),
              frame(np.ones(4), index), series(np.ones(4), index, "w"), series(np.arange(4.0), index, "t"))
    refused = pytest.raises(AssertionError, match="Stakes must sum to 1")
    with refused if numerai_tools_asserts else contextlib.nullcontext():
        quiet(scoring.meta_portfolio_contribution, *oracle)


def test_docstring_examples():
    result = doctest.testmod(portfolio, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2 and result.failed == 0


def test_bench_writes_checked_results_on_tiny_sizes(tmp_path):
    """benches/bench_signals.py end to end on tiny sizes: checks against numerai-tools, writes both files."""
    path = Path(__file__).parents[1] / "benches" / "bench_signals.py"
    spec = importlib.util.spec_from_file_location("bench_signals", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--eras", "3", "--rows", "80", "--neutralizers", "4", "--repeats", "1", "--mpc-eras", "2",
                "--mpc-columns", "3", "--out", str(tmp_path / "signals")])
    results = json.loads((tmp_path / "signals.json").read_text())
    assert [k["kernel"] for k in results["kernels"]] == ["alpha", "mpc"]
    for k in results["kernels"]:
        assert k["max_abs_difference"] <= 1e-6 and k["ratio_numba"] > 0
    assert "| alpha | 3 eras × 80 rows × 4 neutralizers, 1 column |" in (tmp_path / "signals.md").read_text()
