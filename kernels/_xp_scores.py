"""Ranks and per-era scores as array code on padded blocks — the NumPy reference and the CuPy path.

Every function takes an :class:`~eraflow.kernels.backend.ArrayNamespace` ``ns`` and blocks
``(B, L, m)`` from :mod:`eraflow.kernels._eras` (B eras, L rows, m columns) in which NaN marks
a missing value or padding, and reduces over axis 1 (the rows of one era). Nothing here
loops over eras, so NumPy runs it as the readable reference and CuPy as one batched call.
"""

from __future__ import annotations


def present(x):
    """Mask of the values that take part: not NaN (padding is NaN too)."""
    return ~(x != x)


def rank_block(ns, x, first: bool):
    """Per-era, per-column ``(rank - 0.5) / count`` of a block ``(B, L, m)``; NaN stay NaN.

    1. Stable-sort each era's column by a key in which missing values are +inf.
    2. ``first``: the rank of a value is the number of valid values up to it in that order
       (ties keep row order). ``average``: valid values before its tie group plus the
       middle of the group, ``before + (n_valid_tied + 1) / 2``. Counting only valid values
       keeps missing ones (sorted among any real +inf) from shifting a rank.
    3. Scale by the count of valid values and scatter back to row order.
    """
    xp = ns.xp
    n_eras, n_rows, n_cols = x.shape
    valid = present(x)
    key = xp.where(valid, x, xp.inf)
    order = xp.argsort(key, axis=1, kind="stable")
    key_sorted = xp.take_along_axis(key, order, axis=1)
    valid_sorted = xp.take_along_axis(valid, order, axis=1).astype(xp.float64)
    upto = xp.cumsum(valid_sorted, axis=1)  # valid values up to and including this one
    if first:
        rank_sorted = upto
    else:
        rank_sorted = _tie_average(xp, key_sorted, valid_sorted, upto)
    count = xp.maximum(valid.sum(axis=1, keepdims=True), 1)
    out = xp.empty_like(rank_sorted)
    era_index = xp.arange(n_eras).reshape(-1, 1, 1)
    col_index = xp.arange(n_cols).reshape(1, 1, -1)
    out[era_index, order, col_index] = (rank_sorted - 0.5) / count
    return xp.where(valid, out, xp.nan)


def _tie_average(xp, key_sorted, valid_sorted, upto):
    """Average rank of each sorted value's tie group: valid values before the group + (n_valid_in_group + 1) / 2."""
    n_eras, n_rows, n_cols = key_sorted.shape
    starts = xp.ones(key_sorted.shape, dtype=bool)
    starts[:, 1:] = key_sorted[:, 1:] != key_sorted[:, :-1]
    # one id per (era, column, tie group), for bincount
    group = xp.cumsum(starts, axis=1) - 1
    lane = (xp.arange(n_eras).reshape(-1, 1, 1) * n_cols + xp.arange(n_cols).reshape(1, 1, -1)) * n_rows
    ids = (group + lane).ravel()
    size = n_eras * n_rows * n_cols
    n_valid = xp.bincount(ids, weights=valid_sorted.ravel(), minlength=size)
    before = xp.bincount(ids, weights=xp.where(starts, upto - valid_sorted, 0).ravel(), minlength=size)
    return (before + (n_valid + 1) / 2)[ids].reshape(key_sorted.shape)


def gaussian_block(ns, x):
    """``ndtri(rank_average)`` of a block; NaN stay NaN."""
    return ns.ndtri(rank_block(ns, x, first=False))


def power(xp, x, p: float):
    """``sign(x) · |x|^p`` elementwise."""
    return xp.sign(x) * xp.abs(x) ** p


def scaled_to_unit(xp, x):
    """``x (B, L, m)`` (no NaN) times the power of two per era and column that brings its largest
    |value| into [0.5, 1): exact, and it keeps sums of squares finite and clear of subnormals."""
    return xp.ldexp(x, -xp.frexp(xp.abs(x).max(axis=1, keepdims=True))[1])


def pearson_block(ns, a, b):
    """Per-era, per-column Pearson correlation of ``a (B, L, m)`` and ``b (B, L, m or 1)`` on rows
    where both are present; NaN with fewer than 2 such rows or when either side is constant.
    Each side is first scaled by a power of two (:func:`scaled_to_unit`), so any finite magnitude works."""
    xp = ns.xp
    both = present(a) & present(b)
    a = scaled_to_unit(xp, xp.where(both, a, 0.0))
    b = scaled_to_unit(xp, xp.where(both, b, 0.0))
    count = both.sum(axis=1)
    safe_count = xp.maximum(count, 1)
    a_centered = xp.where(both, a - a.sum(axis=1, keepdims=True) / safe_count[:, None], 0.0)
    b_centered = xp.where(both, b - b.sum(axis=1, keepdims=True) / safe_count[:, None], 0.0)
    cov = (a_centered * b_centered).sum(axis=1)
    scale = xp.sqrt((a_centered**2).sum(axis=1) * (b_centered**2).sum(axis=1))
    defined = (count >= 2) & varies(xp, a, both) & varies(xp, b, both)
    return xp.where(defined, cov / xp.where(defined, scale, 1.0), xp.nan)


def varies(xp, x, mask):
    """Per-era, per-column: do the masked values of ``x (B, L, m)`` take more than one value?"""
    high = xp.where(mask, x, -xp.inf).max(axis=1)
    low = xp.where(mask, x, xp.inf).min(axis=1)
    return high > low


def spearman_block(ns, a, b):
    """Pearson correlation of average ranks, ranked over the rows where both are present."""
    xp = ns.xp
    both = present(a) & present(b)
    return pearson_block(ns, rank_block(ns, xp.where(both, a, xp.nan), first=False),
                         rank_block(ns, xp.where(both, b, xp.nan), first=False))


def numerai_corr_block(ns, pred, target):
    """numerai-tools ``numerai_corr`` per era and column of ``pred (B, L, m)``, ``target (B, L, 1)``.

    1. Center the target over all of the era's present targets (before filtering).
    2. Keep the rows where both the target and this prediction column are present.
    3. ``p = power(ndtri(rank_average(pred)), 1.5)`` over the kept rows; ``t = power(t_c, 1.5)``.
    4. Pearson(p, t).
    """
    xp = ns.xp
    target = target - _present_mean(xp, target)
    kept = present(pred) & present(target)
    p = power(xp, gaussian_block(ns, xp.where(kept, pred, xp.nan)), 1.5)
    t = xp.where(kept, power(xp, target, 1.5), xp.nan)
    return pearson_block(ns, p, t)


def _present_mean(xp, x):
    """Mean over axis 1 of the present values, keeping dims (NaN when there are none)."""
    valid = present(x)
    count = valid.sum(axis=1, keepdims=True)
    total = xp.where(valid, x, 0.0).sum(axis=1, keepdims=True)
    return xp.where(count > 0, total / xp.maximum(count, 1), xp.nan)


def contribution_block(ns, pred, meta, target):
    """numerai-tools ``correlation_contribution`` per era and column (no top/bottom selection).

    1. Keep the rows where the prediction column, the meta model and the target are present.
    2. ``p = ndtri(rank(pred))``, ``m = ndtri(rank(meta))`` over the kept rows.
    3. :func:`orthogonal_contribution_block` of p and m against the target (its steps 3–5).
    """
    xp = ns.xp
    kept = present(pred) & present(meta) & present(target)
    p = gaussian_block(ns, xp.where(kept, pred, xp.nan))
    m = gaussian_block(ns, xp.where(kept, meta, xp.nan))
    return orthogonal_contribution_block(ns, p, m, target, kept)


def orthogonal_contribution_block(ns, p, m, target, kept):
    """Per era and column, the target's covariance with the part of ``p`` orthogonal to ``m``.

    ``p (B, L, m)``, ``m`` and ``target (B, L, 1)`` are read on the rows where ``kept`` (``(B, L, m)``
    or ``(B, L, 1)``) holds; a NaN there (a column constant in the era, once neutralized) gives NaN.

    3. ``p⊥ = p − m (pᵀm) / (mᵀm)`` (NaN when m is all zero: a constant meta model).
    4. Targets, if all kept ones lie in [0, 1], are scaled ×4; then centered over the kept rows.
    5. ``t_cᵀ p⊥ / n_kept``; NaN for an era without kept rows.
    """
    xp = ns.xp
    p = xp.where(kept, p, 0.0)
    m = xp.where(kept, m, 0.0)
    mm = (m * m).sum(axis=1, keepdims=True)
    p_orth = p - m * (p * m).sum(axis=1, keepdims=True) / xp.where(mm > 0, mm, 1.0)
    t = xp.where(kept, target, xp.nan)
    in_unit = xp.where(kept, (t >= 0) & (t <= 1), True).all(axis=1, keepdims=True)
    t = xp.where(in_unit, t * 4, t)
    t = xp.where(kept, t - _present_mean(xp, t), 0.0)
    count = kept.sum(axis=1)
    defined = (count > 0) & (mm[:, 0] > 0)
    return xp.where(defined, (t * p_orth).sum(axis=1) / xp.maximum(count, 1), xp.nan)
