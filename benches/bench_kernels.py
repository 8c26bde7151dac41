"""pytest-benchmark: the main kernels on the NumPy reference and numba, on modest synthetic eras.

Run: pytest benches/bench_kernels.py   (ratios against numerai-tools/pandas: `eraflow bench kernels`)
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from eraflow import kernels
from eraflow.kernels._numba_codegram import code_gram, plane_words
from eraflow.kernels._numba_linalg import design_from_codes

ERAS, ROWS, FEATURES, COLUMNS = 100, 2000, 100, 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = ERAS * ROWS
    offsets = np.arange(ERAS + 1, dtype=np.int64) * ROWS
    codes = rng.integers(0, 5, (n, FEATURES), dtype=np.int8)
    predictions = rng.normal(size=(n, COLUMNS)).astype(np.float32)
    target = rng.choice(np.array([0, 0.25, 0.5, 0.75, 1.0]), n)
    return offsets, codes, predictions, target


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_numerai_corr(benchmark, data, backend):
    offsets, _, predictions, target = data
    result = benchmark(kernels.numerai_corr, predictions, target, offsets, backend=backend)
    assert result.shape == (ERAS, COLUMNS) and np.isfinite(result).all()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_neutralize(benchmark, data, backend):
    offsets, codes, predictions, _ = data
    result = benchmark(kernels.neutralize, predictions, codes, offsets, backend=backend)
    assert result.shape == predictions.shape and np.isfinite(result).all()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_rank(benchmark, data, backend):
    offsets, _, predictions, _ = data
    result = benchmark(kernels.rank, predictions, offsets, backend=backend)
    assert result.shape == predictions.shape and ((result > 0) & (result < 1)).all()


@pytest.fixture(scope="module")
def era_codes():
    return np.random.default_rng(1).integers(0, 5, (5000, 500), dtype=np.int8)


def bit_plane_gram(codes):
    """The numba backend's Gram of one era: design pass (dense W and bit planes), then popcounts."""
    words = plane_words(len(codes))
    planes = np.empty((codes.shape[1], 3, words), np.uint64)
    design_from_codes(codes, np.arange(len(codes)), np.empty(codes.shape, np.float32), planes, words)
    return code_gram(planes, words)


def float32_gemm_gram(codes):
    w = codes.astype(np.float32)
    return (w.T @ w).astype(np.float64)


@pytest.mark.parametrize("gram", [bit_plane_gram, float32_gemm_gram], ids=["bit planes", "float32 GEMM"])
def test_era_gram_one_core(benchmark, era_codes, gram):
    """One 5000 × 500 era on one core (BLAS limited to one thread, as neutralize runs it)."""
    with threadpool_limits(1, user_api="blas"):
        result = benchmark(gram, era_codes)
    wide = era_codes.astype(np.int64)
    np.testing.assert_array_equal(result, wide.T @ wide)
