"""The numba backend's Gram of store codes from bit planes, against exact integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from eraflow import kernels
from eraflow.kernels._numba_codegram import code_gram, plane_words
from eraflow.kernels._numba_linalg import design_from_codes


def gram_from_planes(codes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, bool]:
    """``FᵀF`` of ``codes[rows]`` through the bit planes, and whether all codes were within 0..4."""
    words = plane_words(rows.size)
    planes = np.full((codes.shape[1], 3, words + 8), 0xFFFF, np.uint64)  # stale bits must not leak in
    w = np.empty((rows.size, codes.shape[1]), np.float32)
    _, _, small_codes = design_from_codes(codes, rows, w, planes, words)
    return code_gram(planes, words), small_codes


@pytest.mark.parametrize("row", [0, 37, 63, 64, 100])
def test_every_product_of_two_codes_at_any_bit_position(row):
    for a in range(5):
        for b in range(5):
            codes = np.zeros((101, 2), np.int8)
            codes[row] = a, b
            gram, small_codes = gram_from_planes(codes, np.arange(101))
            assert small_codes
            np.testing.assert_array_equal(gram, [[a * a, a * b], [a * b, b * b]], err_msg=f"codes {a}, {b}")


@pytest.mark.parametrize("n", [1, 63, 64, 65, 513, 3000])
def test_equals_the_integer_gram_of_kept_rows_with_missing_codes(n):
    rng = np.random.default_rng(n)
    codes = rng.integers(-1, 5, (n, 37)).astype(np.int8)
    codes[:, 3] = 4  # the largest products
    rows = np.flatnonzero(rng.random(n) < 0.8) if n > 1 else np.arange(1)
    gram, small_codes = gram_from_planes(codes, rows)
    values = np.where(codes[rows] == -1, 2, codes[rows]).astype(np.int64)
    assert small_codes
    np.testing.assert_array_equal(gram, values.T @ values)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_int8_values_beyond_store_codes_neutralize_exactly(backend):
    """Products of such values reach 2¹⁴, so float32 sums would round in eras of a few thousand rows."""
    rng = np.random.default_rng(5)
    codes = rng.integers(-128, 128, (23_000, 40)).astype(np.int8)
    assert not gram_from_planes(codes, np.arange(3000))[1]
    x = rng.normal(size=(23_000, 2))
    offsets = np.array([0, 3000, 23_000])
    values = np.where(codes == -1, 2, codes).astype(np.float64)
    np.testing.assert_allclose(kernels.neutralize(x, codes, offsets, backend=backend),
                               kernels.neutralize(x, values, offsets, backend="numpy"), atol=1e-11)
