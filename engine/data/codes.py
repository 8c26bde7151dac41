"""Feature values → int8 codes 0..4 (missing → -1), with validation.

Accepted inputs: integers 0..4 (any width) or floats 0..4 with NaN (float quarters
0, .25, .5, .75, 1 are scaled ×4 by the caller). Anything else is an error naming the first bad cell.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .store import MISSING

MAX_CODE = 4


@nb.njit(nogil=True, cache=True)
def _codes_from_numbers(src, out):
    """out[i, j] = src[i, j] as int8 (NaN → -1); returns the flat index of the first bad cell or -1."""
    n, m = src.shape
    for i in range(n):
        for j in range(m):
            v = src[i, j]
            if v != v:
                out[i, j] = MISSING
            elif 0 <= v <= MAX_CODE and v == np.floor(v):
                out[i, j] = np.int8(v)
            else:
                return i * m + j
    return -1


def to_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Convert a C-order (rows × features) block; returns (int8 codes, flat index of first bad cell or -1).

    int8 blocks without nulls are checked in one vectorised pass and returned without a copy.
    """
    if values.dtype == np.int8:
        as_unsigned = values.view(np.uint8)  # negative int8 become ≥ 128
        if as_unsigned.size == 0 or as_unsigned.max() <= MAX_CODE:
            return values, -1
        return values, int(np.flatnonzero(as_unsigned.ravel() > MAX_CODE)[0])
    out = np.empty(values.shape, dtype=np.int8)
    bad = _codes_from_numbers(np.ascontiguousarray(values), out)
    return out, int(bad)
