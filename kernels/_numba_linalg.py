"""Numba backend of neutralization and feature exposure.

Neutralization runs one era per worker thread (as many as numba threads), with BLAS limited
to one thread meanwhile, around three pieces per era:

1. :func:`design_from_codes` / :func:`design_from_floats` (numba): the kept rows as a dense
   float matrix W (and, for store codes, their bit planes), column means, which columns
   vary — one pass over the era's features;
2. the Gram ``WᵀW``, the only O(n·k²) step: for store codes 0..4 exact integer sums from the
   bit planes (:mod:`._numba_codegram`, 2.7× faster than a float32 GEMM), for float features
   a GEMM through NumPy's BLAS; then :func:`~eraflow.kernels._xp_linalg.solve_centered_gram`
   on the k × k system;
3. :func:`cross` and :func:`residual` (numba): the O(n·k·m) products in float64.

Eras are spread over threads rather than numba's ``prange`` so that the float GEMM runs in
single-threaded BLAS per era (on 2 cores, 5000 × 500 float32, one era at a time with 2 BLAS
threads took 9.5 ms per era, two eras at a time with 1 BLAS thread each 7.1 ms). The numba
pieces release the GIL.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange
from threadpoolctl import threadpool_limits

from ._checks import MISSING_CODE
from ._numba_codegram import WORD_ROWS, add_code_bits, code_gram, plane_words, store_word
from ._numba_scores import power_of_two_scale
from ._xp_linalg import MIDDLE_CODE, TOP_CODE, lstsq_fitted, solve_centered_gram
from .backend import NUMPY

FASTMATH = {"reassoc", "contract"}  # lets dot products vectorize; no NaN/inf assumptions


@njit(cache=True, nogil=True)
def design_from_codes(codes, rows, w, planes, words):
    """Fill ``w (len(rows), k)`` with ``codes[rows]`` (missing → MIDDLE_CODE) and the first ``words``
    words of their bit ``planes (k, 3, ·)`` (see :mod:`._numba_codegram`); return the column means
    (float64), which columns take more than one value, and whether every code is within 0..4
    (else the planes are meaningless)."""
    k = codes.shape[1]
    total = np.zeros(k, np.int64)
    low = np.full(k, 127, np.int64)
    high = np.full(k, -128, np.int64)
    word_bits = np.zeros((3, k), np.uint64)
    for r in range(rows.size):
        source = codes[rows[r]]
        for i in range(k):
            code = np.int64(source[i])
            if code == MISSING_CODE:
                code = MIDDLE_CODE
            w[r, i] = code
            total[i] += code
            low[i] = min(low[i], code)
            high[i] = max(high[i], code)
            add_code_bits(word_bits, i, code, r)
        if r % WORD_ROWS == WORD_ROWS - 1 or r == rows.size - 1:
            store_word(word_bits, planes, r // WORD_ROWS)
    planes[:, :, -(-rows.size // WORD_ROWS):words] = 0
    return total / rows.size, high > low, low.min() >= 0 and high.max() <= TOP_CODE


@njit(cache=True, nogil=True)
def design_from_floats(features, rows, w):
    """Fill ``w`` with ``features[rows]`` centered per column; return the means of w (zero up to
    rounding, float64) and which columns take more than one value."""
    k = features.shape[1]
    mean = np.zeros(k)
    low = np.full(k, np.inf)
    high = np.full(k, -np.inf)
    for r in range(rows.size):
        for i in range(k):
            v = features[rows[r], i]
            mean[i] += v
            low[i] = min(low[i], v)
            high[i] = max(high[i], v)
    mean /= rows.size
    for r in range(rows.size):
        for i in range(k):
            w[r, i] = features[rows[r], i] - mean[i]
    return w.sum(axis=0) / rows.size, high > low


@njit(cache=True, nogil=True)
def cross(w, x):
    """``wᵀ x`` as float64 ``(k, m)`` for ``w (n, k)``, ``x (n, m)``."""
    k, m = w.shape[1], x.shape[1]
    out = np.zeros((m, k))
    for r in range(w.shape[0]):
        for j in range(m):
            xr = x[r, j]
            for i in range(k):
                out[j, i] += w[r, i] * xr
    return out.T


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def residual(x, w, mean, beta, x_mean, proportion):
    """``x − proportion · (x̄ + (w − μ) β)`` for ``x (n, m)``, ``w (n, k)``, ``beta (k, m)``."""
    n, k = w.shape
    m = x.shape[1]
    beta_t = np.ascontiguousarray(beta.T)
    shift = np.zeros(m)
    for j in range(m):
        for i in range(k):
            shift[j] += mean[i] * beta_t[j, i]
    out = np.empty((n, m))
    for r in range(n):
        for j in range(m):
            fit = 0.0
            for i in range(k):
                fit += w[r, i] * beta_t[j, i]
            out[r, j] = x[r, j] - proportion * (x_mean[j] + fit - shift[j])
    return out


def neutralize_eras(x, features, offsets, kept, proportion):
    """Per-era neutralization of ``x (n, m)`` float64 by ``features (n, k)`` (int8 codes or float64)
    over the ``kept (n,)`` rows; NaN elsewhere and in columns constant in the era."""
    out = np.full(x.shape, np.nan)
    largest = int(np.diff(offsets).max(initial=0))
    k = features.shape[1]
    codes = features.dtype == np.int8
    local = threading.local()  # each worker reuses its design buffers for all its eras

    def neutralize_one(era):  # writes only this era's rows
        start, stop = offsets[era], offsets[era + 1]
        rows = np.flatnonzero(kept[start:stop])
        if rows.size == 0:
            return
        if not hasattr(local, "w"):
            local.w = np.empty(largest * k, np.float32 if codes else np.float64)
            local.planes = np.empty((k, 3, plane_words(largest) if codes else 0), np.uint64)
        w = local.w[:rows.size * k].reshape(rows.size, k)
        out[start + rows] = _neutralize_era(x[start:stop][rows], features[start:stop], rows, w, local.planes,
                                            proportion)

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(numba.get_num_threads()) as pool:
        list(pool.map(neutralize_one, range(len(offsets) - 1)))
    return out


def float64_gram(w):
    """``WᵀW`` in float64."""
    w64 = w.astype(np.float64)
    return w64.T @ w64


def _neutralize_era(x, features, rows, w, planes, proportion):
    """Neutralize one era's kept rows ``x (n, m)``; ``w (n, k)`` and ``planes`` are scratch for the
    design matrix and, for codes, its bit planes."""
    if features.dtype == np.int8:
        words = plane_words(rows.size)
        mean, varying, small_codes = design_from_codes(features, rows, w, planes, words)
        # int8 values beyond the store's 0..4 take a float64 GEMM, exact for their products ≤ 2¹⁴
        gram = code_gram(planes, words) if small_codes else float64_gram(w)
    else:
        mean, varying = design_from_floats(features, rows, w)
        gram = w.T @ w
    x_mean = x.mean(axis=0)
    beta, ok = solve_centered_gram(NUMPY, gram[None], mean[None], np.array([[rows.size]]),
                                   cross(w, x - x_mean)[None], varying[None])
    if ok[0]:
        out = residual(x, w, mean, beta[0], x_mean, proportion)
    else:
        values = features[rows] if features.dtype != np.int8 else np.where(
            features[rows] == MISSING_CODE, MIDDLE_CODE, features[rows])
        out = x - proportion * lstsq_fitted(np, values, x)
    out[:, x.max(axis=0) == x.min(axis=0)] = np.nan
    return out


@njit(cache=True)
def _feature_row(features, row, codes, scale, out):
    """``out[:] = features[row]`` as float64: int8 codes with missing → MIDDLE_CODE when ``codes``,
    else float features times ``scale``."""
    source = features[row]
    if codes:
        for i in range(out.size):
            out[i] = MIDDLE_CODE if source[i] == MISSING_CODE else source[i]
    else:
        for i in range(out.size):
            out[i] = source[i] * scale[i]


@njit(cache=True)
def _feature_scales(features, rows, codes):
    """Per feature, :func:`power_of_two_scale` of its largest |value| on ``rows`` (1 for store codes)."""
    scale = np.ones(features.shape[1])
    if codes:
        return scale
    largest = np.zeros(features.shape[1])
    for r in rows:
        for i in range(features.shape[1]):
            largest[i] = max(largest[i], abs(features[r, i]))
    for i in range(scale.size):
        scale[i] = power_of_two_scale(largest[i])
    return scale


@njit(cache=True)
def _scaled_centered(x):
    """Columns of ``x (n, m)`` scaled by the power of two that brings their largest |value| into
    [0.5, 1), then centered (as ``_xp_linalg.scaled_centered``)."""
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        column = x[:, j] * power_of_two_scale(np.abs(x[:, j]).max())
        out[:, j] = column - column.sum() / column.size
    return out


@njit(parallel=True, cache=True)
def exposure_eras(x, features, offsets, kept, codes):
    """Per era and column of ``x (n, m)``: ``[max_i |corr(x, F_i)|, sqrt(mean_i corr²)]`` over the
    features that vary in the era, as ``(n_eras, 2m)`` (NaN where x is constant or none varies).
    ``codes``: features are int8 store codes (missing → MIDDLE_CODE).

    Two passes over the era's feature rows: means and ranges, then centered sums of squares and
    cross products with the centered x. x and float features are first scaled by powers of two
    (exact) so that any finite magnitude gives |corr| ≤ 1.
    """
    m, k = x.shape[1], features.shape[1]
    out = np.full((offsets.size - 1, 2 * m), np.nan)
    for era in prange(offsets.size - 1):
        start = offsets[era]
        rows = start + np.flatnonzero(kept[start:offsets[era + 1]])
        n = rows.size
        if n < 2:
            continue
        value = np.empty(k)
        f_scale = _feature_scales(features, rows, codes)
        f_mean = np.zeros(k)
        f_low = np.full(k, np.inf)
        f_high = np.full(k, -np.inf)
        for r in rows:
            _feature_row(features, r, codes, f_scale, value)
            for i in range(k):
                f_mean[i] += value[i]
                f_low[i] = min(f_low[i], value[i])
                f_high[i] = max(f_high[i], value[i])
        f_mean /= n
        x_kept = x[rows]
        x_centered = _scaled_centered(x_kept)
        f_ss = np.zeros(k)
        cov = np.zeros((m, k))
        for r in range(n):
            _feature_row(features, rows[r], codes, f_scale, value)
            for i in range(k):
                value[i] -= f_mean[i]
                f_ss[i] += value[i] * value[i]
            for j in range(m):
                x_rj = x_centered[r, j]
                for i in range(k):
                    cov[j, i] += value[i] * x_rj
        varying = f_high > f_low
        for j in range(m):
            if x_kept[:, j].min() == x_kept[:, j].max() or not varying.any():
                continue
            corr = np.minimum(np.maximum(cov[j][varying] / np.sqrt(f_ss[varying] * (x_centered[:, j] ** 2).sum()),
                                         -1.0), 1.0)  # rounding may pass ±1
            out[era, j] = np.abs(corr).max()
            out[era, m + j] = math.sqrt((corr * corr).mean())
    return out
