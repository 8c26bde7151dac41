"""Numba kernels for ranks and per-era scores.

Each kernel runs ``prange`` over eras; iteration ``e`` reads rows ``offsets[e]:offsets[e+1]``
and writes only that era's rows (row-shaped results) or that era's entry (scores). Inputs are
C-contiguous float64 ``(n, m)`` columns with NaN for missing values; all sums are float64.
Per era and column, the rows that take part are gathered first, so sorting and sums only
ever see present values.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba_special import ndtri


@njit(cache=True)
def _present_rows(a, b, c):
    """Indices i (within the era) where a[i], b[i] and c[i] are all present (not NaN)."""
    rows = np.empty(a.size, np.int64)
    count = 0
    for i in range(a.size):
        if a[i] == a[i] and b[i] == b[i] and c[i] == c[i]:
            rows[count] = i
            count += 1
    return rows[:count]


SIGN_BIT = np.uint64(1) << np.uint64(63)


@njit(cache=True)
def _argsort(values):
    """Stable argsort of float64 ``values`` (no NaN): LSD radix sort on the 8 bytes of an
    order-preserving integer image of each value, skipping bytes that all values share.

    About 4× faster than numba's ``np.argsort`` on 5000 values (90 µs vs 360 µs), and stable,
    so ties keep row order as ``method="first"`` needs.
    """
    n = values.size
    keys = (values + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0: equal values, equal keys
    keys = np.where(keys & SIGN_BIT, ~keys, keys | SIGN_BIT)  # negative: flip all bits; else set sign
    counts = np.zeros((8, 257), np.int64)  # counts[d, b + 1] = keys whose byte d is b
    for i in range(n):
        for d in range(8):
            counts[d, ((keys[i] >> np.uint64(8 * d)) & np.uint64(255)) + 1] += 1
    order = np.arange(n)
    spare = np.empty(n, np.int64)
    for d in range(8):
        start = counts[d]
        if start.max() == n:
            continue
        for b in range(256):
            start[b + 1] += start[b]
        for i in range(n):
            byte = (keys[order[i]] >> np.uint64(8 * d)) & np.uint64(255)
            spare[start[byte]] = order[i]
            start[byte] += 1
        order, spare = spare, order
    return order


@njit(cache=True)
def _ranks(values, first):
    """1-based ranks of ``values`` (no NaN): tied values share the average of their positions,
    or, when ``first``, take increasing ranks in row order (the sort is stable)."""
    n = values.size
    order = _argsort(values)
    ranks = np.empty(n)
    start = 0
    while start < n:
        end = start + 1
        while end < n and values[order[end]] == values[order[start]]:
            end += 1
        for position in range(start, end):
            ranks[order[position]] = position + 1.0 if first else 0.5 * (start + 1 + end)
        start = end
    return ranks


@njit(cache=True)
def _quantile_memo(memo, n):
    """A memo of ``ndtri`` per half-rank for columns of ``n`` present values (index ``2·rank``,
    NaN = not computed yet): ``memo`` itself when it was made for ``n``, else a fresh one."""
    if memo.size != 2 * n + 1:
        memo = np.full(2 * n + 1, np.nan)
    return memo


@njit(cache=True)
def _gaussian_ranks(values, memo):
    """``ndtri((rank_average - 0.5) / n)`` of ``values`` (no NaN). ``memo`` (from ``_quantile_memo``)
    keeps each half-rank's quantile, so the columns of one era share their ``ndtri`` calls."""
    ranks = _ranks(values, False)
    n = ranks.size
    for i in range(n):
        slot = int(2 * ranks[i])
        q = memo[slot]
        if q != q:
            q = ndtri((ranks[i] - 0.5) / n)
            memo[slot] = q
        ranks[i] = q
    return ranks


@njit(cache=True)
def _power_1_5(x):
    """``sign(x)·|x|^1.5`` as ``x·√|x|`` (within an ulp of the pow form; NaN stays NaN)."""
    return x * math.sqrt(abs(x))


@njit(cache=True)
def power_of_two_scale(largest):
    """The power of two that brings ``largest`` (> 0) into [0.5, 1); 1 for 0. Scaling by it is exact."""
    return math.ldexp(1.0, -math.frexp(largest)[1]) if largest > 0 else 1.0


@njit(cache=True)
def _pearson(a, b):
    """Pearson correlation of two equal-length vectors; NaN below 2 values or if either is constant.
    Each side is scaled by :func:`power_of_two_scale` of its largest |value| first (any finite magnitude)."""
    n = a.size
    if n < 2 or a.min() == a.max() or b.min() == b.max():
        return np.nan
    a = a * power_of_two_scale(np.abs(a).max())
    b = b * power_of_two_scale(np.abs(b).max())
    mean_a = a.sum() / n
    mean_b = b.sum() / n
    cov = var_a = var_b = 0.0
    for i in range(n):
        da = a[i] - mean_a
        db = b[i] - mean_b
        cov += da * db
        var_a += da * da
        var_b += db * db
    return cov / math.sqrt(var_a * var_b)


@njit(parallel=True, cache=True)
def rank_eras(x, offsets, first, gaussian):
    """Per era and column ``(rank - 0.5) / count`` (``ndtri`` of it when ``gaussian``); NaN stay NaN."""
    out = np.full(x.shape, np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        for j in range(x.shape[1]):
            column = x[start:stop, j]
            rows = _present_rows(column, column, column)
            ranks = _ranks(column[rows], first)
            for i in range(rows.size):
                q = (ranks[i] - 0.5) / rows.size
                out[start + rows[i], j] = ndtri(q) if gaussian else q
    return out


@njit(parallel=True, cache=True)
def correlation_eras(a, b, offsets, spearman):
    """Per era Pearson (or Spearman: Pearson of average ranks) of each column of ``a (n, m)`` with
    the matching column of ``b`` (``(n, 1)`` is used for every column), on rows where both are present."""
    n_cols = a.shape[1]
    out = np.full((offsets.size - 1, n_cols), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        for j in range(n_cols):
            column_a = a[start:stop, j]
            column_b = b[start:stop, 0 if b.shape[1] == 1 else j]
            rows = _present_rows(column_a, column_b, column_b)
            if spearman:
                out[era, j] = _pearson(_ranks(column_a[rows], False), _ranks(column_b[rows], False))
            else:
                out[era, j] = _pearson(column_a[rows], column_b[rows])
    return out


@njit(cache=True)
def _centered_over_present(values):
    """``values`` minus the mean of its present entries (NaN stay NaN)."""
    total = 0.0
    count = 0
    for v in values:
        if v == v:
            total += v
            count += 1
    return values - (total / count if count else np.nan)


@njit(parallel=True, cache=True)
def numerai_corr_eras(pred, target, offsets):
    """numerai-tools ``numerai_corr`` per era and prediction column; ``target`` is ``(n, 1)``.

    Target centered over all present targets of the era, then per column: rows where target and
    prediction are present, ``p = power(ndtri(rank_average(pred)), 1.5)``, ``t = power(t_c, 1.5)``,
    Pearson(p, t).
    """
    n_cols = pred.shape[1]
    out = np.full((offsets.size - 1, n_cols), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        t = _centered_over_present(target[start:stop, 0])
        for i in range(t.size):
            t[i] = _power_1_5(t[i])
        memo = np.empty(0)
        for j in range(n_cols):
            column = pred[start:stop, j]
            rows = _present_rows(column, t, t)
            memo = _quantile_memo(memo, rows.size)
            p = _gaussian_ranks(column[rows], memo)
            for i in range(p.size):
                p[i] = _power_1_5(p[i])
            out[era, j] = _pearson(p, t[rows])
    return out


@njit(parallel=True, cache=True)
def contribution_eras(pred, meta, target, offsets):
    """numerai-tools ``correlation_contribution`` per era and prediction column (see
    ``_xp_scores.contribution_block`` for the steps); ``meta`` and ``target`` are ``(n, 1)``."""
    n_cols = pred.shape[1]
    out = np.full((offsets.size - 1, n_cols), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        meta_era = meta[start:stop, 0]
        target_era = target[start:stop, 0]
        memo = np.empty(0)
        for j in range(n_cols):
            column = pred[start:stop, j]
            rows = _present_rows(column, meta_era, target_era)
            if rows.size == 0:
                continue
            memo = _quantile_memo(memo, rows.size)
            out[era, j] = _orthogonal_contribution(_gaussian_ranks(column[rows], memo),
                                                   _gaussian_ranks(meta_era[rows], memo), target_era[rows])
    return out


@njit(parallel=True, cache=True)
def orthogonal_contribution_eras(p, m, target, kept, offsets):
    """Per era and column of ``p (n, m)`` :func:`_orthogonal_contribution` over the ``kept (n,)`` rows;
    ``m`` and ``target`` are ``(n, 1)`` (see ``_xp_scores.orthogonal_contribution_block``)."""
    n_cols = p.shape[1]
    out = np.full((offsets.size - 1, n_cols), np.nan)
    for era in prange(offsets.size - 1):
        start, stop = offsets[era], offsets[era + 1]
        rows = np.flatnonzero(kept[start:stop])
        m_era = m[start:stop, 0][rows]
        target_era = target[start:stop, 0][rows]
        for j in range(n_cols):
            out[era, j] = _orthogonal_contribution(p[start:stop, j][rows], m_era, target_era)
    return out


@njit(cache=True)
def _orthogonal_contribution(p, m, t):
    """``t_cᵀ p⊥ / n`` of one era's kept rows: ``p⊥ = p − m (pᵀm)/(mᵀm)``, t scaled ×4 when it lies in
    [0, 1], then centered. NaN without rows, when ``mᵀm`` is 0 or NaN, or when p holds a NaN."""
    mm = (m * m).sum()
    if t.size == 0 or not mm > 0:
        return np.nan
    p_orth = p - m * ((p * m).sum() / mm)
    if t.min() >= 0 and t.max() <= 1:
        t = t * 4
    t = t - t.sum() / t.size
    return (t * p_orth).sum() / t.size
