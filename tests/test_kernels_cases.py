"""Shared inputs and references for the kernel tests: era-sorted random cases, numerai-tools
applied era by era, and one comparison helper. (A test module so that it may live in tests/;
the other test_kernels_* modules import from it.)"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring

from eraflow.kernels import gpu_available
from eraflow.kernels._checks import MISSING_CODE

TOL = 1e-6  # agreement with numerai-tools required by the design
TARGETS = np.array([0, 0.25, 0.5, 0.75, 1.0])

BACKENDS = ["numpy", "numba",
            pytest.param("cupy", marks=pytest.mark.skipif(not gpu_available(),
                                                          reason="no GPU answered (CuPy missing or no driver)"))]
FAST_BACKENDS = BACKENDS[1:]  # compared against the numpy reference


@dataclass
class Case:
    """Era-sorted inputs: predictions (n, m) without NaN, target (n,) with NaN, meta (n,),
    codes (n, k) int8 with -1 = missing; ``nan_rows`` (n, m) marks predictions to blank out."""

    name: str
    sizes: list[int]
    predictions: np.ndarray
    target: np.ndarray
    meta: np.ndarray
    codes: np.ndarray
    nan_rows: np.ndarray
    offsets: np.ndarray = field(init=False)

    def __post_init__(self):
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def eras(self):
        """(era, row slice, sorted string index) for each era."""
        for era in range(len(self.sizes)):
            rows = slice(int(self.offsets[era]), int(self.offsets[era + 1]))
            yield era, rows, pd.Index([f"id{i:07d}" for i in range(rows.start, rows.stop)])

    @property
    def with_nan(self) -> np.ndarray:
        return np.where(self.nan_rows, np.nan, self.predictions)

    @property
    def feature_values(self) -> np.ndarray:
        """Codes as floats with missing read as the middle code 2, as the kernels do."""
        return np.where(self.codes == MISSING_CODE, 2, self.codes).astype(np.float64)


def mixed_case(seed: int = 0, sizes=(1, 2, 5000, 40, 3, 300), m: int = 3, k: int = 12) -> Case:
    """Eras of 1, 2, 3, 40, 300 and 5000 rows; tied predictions; NaN targets (≤ 10 % of the eras
    of 40+ rows); NaN predictions (≤ 5 %, differing by column); missing codes; a feature constant
    within the 5000-row era; a duplicated feature in the 300-row era (collinear: lstsq path)."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    predictions = rng.normal(size=(n, m)).round(1)  # ties
    target = rng.choice(TARGETS, n)
    meta = rng.normal(size=n).round(2)
    codes = rng.integers(0, 5, (n, k)).astype(np.int8)
    codes[rng.random((n, k)) < 0.03] = MISSING_CODE
    nan_rows = np.zeros((n, m), bool)
    for era, size in enumerate(sizes):
        rows = slice(offsets[era], offsets[era + 1])
        if size >= 40:
            target[rows][rng.random(size) < 0.1] = np.nan
            nan_rows[rows] = rng.random((size, m)) < 0.05
        else:  # tiny eras: distinct values, so numerai-tools never meets a constant column
            target[rows] = TARGETS[rng.permutation(5)[:size]] if size <= 5 else target[rows]
            predictions[rows] = rng.permutation(size)[:, None] + np.arange(m)
            meta[rows] = rng.permutation(size)
        if size == 5000:
            codes[rows, 3] = 2
        if size == 300:
            codes[rows, 5] = codes[rows, 4]
    return Case("mixed", list(sizes), predictions, target, meta, codes, nan_rows)


def assert_matches(actual, expected, what: str, atol: float = TOL) -> None:
    """assert_allclose with NaN in the same places, shapes equal and something finite compared."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(expected).any(), f"{what}: nothing finite to compare"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=what)


# --- numerai-tools applied era by era -------------------------------------------------------

def frame(values: np.ndarray, index: pd.Index) -> pd.DataFrame:
    values = values.reshape(len(index), -1)
    return pd.DataFrame(values, index=index, columns=[f"c{j}" for j in range(values.shape[1])])


def series(values: np.ndarray, index: pd.Index, name: str) -> pd.Series:
    return pd.Series(values, index=index, name=name)


def quiet(fn, *args, **kwargs):
    """Call numerai-tools where it meets a constant column: NumPy warns inside it, then gives NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def per_era_rows(case: Case, fn) -> np.ndarray:
    """Concatenate ``fn(rows, index) -> (size, m)`` over eras."""
    return np.concatenate([np.asarray(fn(rows, index), dtype=np.float64).reshape(rows.stop - rows.start, -1)
                           for _, rows, index in case.eras()])


def per_era_scores(case: Case, fn, eras) -> np.ndarray:
    """``fn(rows, index) -> (m,)`` for the listed eras, stacked to (len(eras), m)."""
    chosen = {era: (rows, index) for era, rows, index in case.eras()}
    return np.array([np.asarray(fn(*chosen[era]), dtype=np.float64) for era in eras])


def nt_numerai_corr_column(pred: np.ndarray, target: np.ndarray, index: pd.Index) -> float:
    return float(scoring.numerai_corr(frame(pred, index), series(target, index, "target")).iloc[0])


def nt_contribution_column(pred, meta, target, index) -> float:
    return float(scoring.correlation_contribution(frame(pred, index), series(meta, index, "meta"),
                                                  series(target, index, "target")).iloc[0])


def test_missing_code_matches_the_store_format():
    from eraflow.engine.data.store import MISSING

    assert MISSING_CODE == MISSING
