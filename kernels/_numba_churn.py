"""Numba kernel for the top/bottom overlap of two rankings (``churn(..., top_bottom=n)``).

``prange`` over eras; iteration ``e`` writes only that era's entries. Inputs are C-contiguous
float64 ``(n, m)`` columns with NaN for missing values.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_scores import _argsort, _present_rows


@njit(cache=True)
def _extremes(column, n):
    """Masks ``(top, bottom)`` over the rows of ``column``: the ``n`` largest and ``n`` smallest
    present values (stable order: among ties earlier rows are bottom, later rows top)."""
    rows = _present_rows(column, column, column)
    order = rows[_argsort(column[rows])]
    top = np.zeros(column.size, np.bool_)
    bottom = np.zeros(column.size, np.bool_)
    for position in range(order.size):
        if position < n:
            bottom[order[position]] = True
        if position >= order.size - n:
            top[order[position]] = True
    return top, bottom


@njit(parallel=True, cache=True)
def top_bottom_overlap_eras(a, b, offsets, n):
    """Per era and column ``(|top_a ∩ top_b| + |bottom_a ∩ bottom_b|) / (2n)``, each side's top and
    bottom ``n`` over its own present values; NaN where either side has none."""
    n_cols = a.shape[1]
    out = np.full((offsets.size - 1, n_cols), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        for j in range(n_cols):
            column_a = a[start:stop, j]
            column_b = b[start:stop, j]
            if not ((column_a == column_a).any() and (column_b == column_b).any()):
                continue
            top_a, bottom_a = _extremes(column_a, n)
            top_b, bottom_b = _extremes(column_b, n)
            out[era, j] = ((top_a & top_b).sum() + (bottom_a & bottom_b).sum()) / (2 * n)
    return out
