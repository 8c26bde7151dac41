"""pytest-benchmark: the main kernels on the NumPy reference and numba, on modest synthetic eras.

Run: pytest benches/bench_kernels.py   (ratios against numerai-tools/pandas: `eraflow bench kernels`)
"""

from __future__ import annotations

import numpy as np
import pytest

from eraflow import kernels

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
