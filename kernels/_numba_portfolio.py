"""Numba kernels for the Signals portfolio scores: ``alpha`` and ``meta_portfolio_contribution``.

``prange`` over eras; iteration ``e`` reads rows ``offsets[e]:offsets[e+1]`` and writes only row
``e`` of the result. Inputs are C-contiguous float64: predictions ``(n, m)`` (NaN = missing),
neutralizers ``(n, k)`` and sample weights ``(n,)`` finite, target ``(n,)``. The steps are those of
:mod:`._xp_portfolio`; here each era's kept rows are gathered first.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba_linalg import FASTMATH
from ._numba_scores import _gaussian_ranks, _power_1_5, _quantile_memo
from ._xp_portfolio import PAYOUT_SCALE


@njit(cache=True)
def _kept_rows(pred, target):
    """Indices (within the era) of the rows whose prediction columns and target are all present."""
    rows = np.empty(target.size, np.int64)
    count = 0
    for i in range(target.size):
        keep = target[i] == target[i]
        for j in range(pred.shape[1]):
            keep = keep and pred[i, j] == pred[i, j]
        if keep:
            rows[count] = i
            count += 1
    return rows[:count]


@njit(cache=True, fastmath=FASTMATH)
def _neutral_weights(pred, neutralizers, sample_weights, rows):
    """``w ∘ (s − N (Nᵀ (w ∘ s)))`` per column over the kept ``rows``, with
    ``s = power(ndtri(rank(pred)), 1.5)``; float64 ``(len(rows), m)``."""
    n, m, k = rows.size, pred.shape[1], neutralizers.shape[1]
    out = np.empty((n, m))
    memo = _quantile_memo(np.empty(0), n)
    for j in range(m):
        s = _gaussian_ranks(pred[rows, j], memo)
        loadings = np.zeros(k)  # Nᵀ (w ∘ s)
        for r in range(n):
            s[r] = _power_1_5(s[r])
            ws = sample_weights[rows[r]] * s[r]
            for i in range(k):
                loadings[i] += neutralizers[rows[r], i] * ws
        for r in range(n):
            fitted = 0.0
            for i in range(k):
                fitted += neutralizers[rows[r], i] * loadings[i]
            out[r, j] = sample_weights[rows[r]] * (s[r] - fitted)
    return out


@njit(parallel=True, cache=True)
def alpha_eras(pred, neutralizers, sample_weights, target, offsets):
    """numerai-tools ``alpha`` per era and column (see ``_xp_portfolio.alpha_block``)."""
    out = np.full((offsets.size - 1, pred.shape[1]), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        t = target[start:stop]
        total, present = 0.0, 0
        for v in t:
            if v == v:
                total += v
                present += 1
        rows = _kept_rows(pred[start:stop], t)
        if rows.size < 2:
            continue
        weights = _neutral_weights(pred[start:stop], neutralizers[start:stop], sample_weights[start:stop], rows)
        mean = total / present
        for j in range(pred.shape[1]):
            score = 0.0
            for r in range(rows.size):
                score += weights[r, j] * (t[rows[r]] - mean)
            out[era, j] = score / rows.size
    return out


@njit(parallel=True, cache=True)
def mpc_eras(pred, neutralizers, sample_weights, target, stakes, offsets):
    """numerai-tools ``meta_portfolio_contribution`` per era (see ``_xp_portfolio.mpc_block``);
    ``stakes (m,)`` already normalized."""
    m = pred.shape[1]
    out = np.full((offsets.size - 1, m), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        rows = _kept_rows(pred[start:stop], target[start:stop])
        n = rows.size
        if n < 2:
            continue
        t = target[start:stop][rows]
        t = t - t.sum() / n
        centered = _neutral_weights(pred[start:stop], neutralizers[start:stop], sample_weights[start:stop], rows)
        for j in range(m):
            centered[:, j] -= centered[:, j].sum() / n  # W_c
        v = np.zeros(n)  # W_c s, re-centered
        for r in range(n):
            for j in range(m):
                v[r] += centered[r, j] * stakes[j]
        v -= v.sum() / n
        vv = (v * v).sum()
        if vv == 0:
            continue
        norm = math.sqrt(vv)
        for j in range(m):
            column = centered[:, j]
            coefficient = (column * v).sum() / vv
            out[era, j] = ((column - v * coefficient) * t).sum() / norm / PAYOUT_SCALE
    return out
