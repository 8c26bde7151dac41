"""Top/bottom overlap of two rankings as array code on padded blocks (NumPy reference, CuPy path).

Blocks ``(B, L, m)`` come from :mod:`eraflow.kernels._eras`; NaN marks a missing value or padding.
"""

from __future__ import annotations

from ._xp_scores import present


def extremes_block(ns, x, n: int):
    """Masks ``(top, bottom)`` of a block ``(B, L, m)``: per era and column, the ``n`` largest and the
    ``n`` smallest present values (all of them when fewer are present).

    As numerai-tools' ``filter_sort_top_bottom``: a stable ascending sort, so among tied values the
    earlier rows are the bottom ones and the later rows the top ones. Missing values sort last and
    are never chosen.
    """
    xp = ns.xp
    n_eras, n_rows, n_cols = x.shape
    valid = present(x)
    order = xp.argsort(xp.where(valid, x, xp.inf), axis=1, kind="stable")
    valid_sorted = xp.take_along_axis(valid, order, axis=1)
    position = xp.cumsum(valid_sorted, axis=1)  # 1-based position among the present values
    count = valid.sum(axis=1, keepdims=True)
    era_index = xp.arange(n_eras).reshape(-1, 1, 1)
    col_index = xp.arange(n_cols).reshape(1, 1, -1)
    top = xp.zeros(x.shape, dtype=bool)
    bottom = xp.zeros(x.shape, dtype=bool)
    top[era_index, order, col_index] = valid_sorted & (position > count - n)
    bottom[era_index, order, col_index] = valid_sorted & (position <= n)
    return top, bottom


def top_bottom_overlap_block(ns, a, b, n: int):
    """Per era and column ``(|top_a ∩ top_b| / n + |bottom_a ∩ bottom_b| / n) / 2`` of blocks
    ``a``, ``b (B, L, m)``, each side's extremes taken over its own present values
    (:func:`extremes_block`); NaN where either side has no present value."""
    xp = ns.xp
    top_a, bottom_a = extremes_block(ns, a, n)
    top_b, bottom_b = extremes_block(ns, b, n)
    overlap = ((top_a & top_b).sum(axis=1) + (bottom_a & bottom_b).sum(axis=1)) / (2 * n)
    defined = present(a).any(axis=1) & present(b).any(axis=1)
    return xp.where(defined, overlap, xp.nan)
