"""Signals portfolio scores (alpha, meta portfolio contribution) as array code on padded blocks.

Same layout as :mod:`._xp_scores`: blocks ``(B, L, ·)`` of B eras padded to L rows, NaN marking a
missing prediction/target or padding; neutralizers and sample weights are padded with 0. NumPy
runs it as the reference, CuPy as one batched call per block.
"""

from __future__ import annotations

from ._xp_scores import _present_mean, gaussian_block, power, present

PAYOUT_SCALE = 50.0  # numerai-tools divides the meta portfolio gradient by 50


def kept_rows(pred, target):
    """``(B, L, 1)`` mask of the rows numerai-tools keeps: every prediction column and the target present
    (its ``filter_sort_index`` of the predictions frame against the targets)."""
    return present(pred).all(axis=2, keepdims=True) & present(target)


def neutral_weights_block(ns, pred, neutralizers, sample_weights, kept):
    """numerai-tools ``generate_neutralized_weights`` per era and column over the kept rows (0 elsewhere).

    1. ``s = power(ndtri(rank_average(pred)), 1.5)`` over the kept rows, per column.
    2. ``weights = w ∘ (s − N (Nᵀ (w ∘ s)))`` with ``N (B, L, k)``, ``w (B, L, 1)`` (no centering).
    """
    xp = ns.xp
    s = xp.where(kept, power(xp, gaussian_block(ns, xp.where(kept, pred, xp.nan)), 1.5), 0.0)
    w = xp.where(kept, sample_weights, 0.0)
    loadings = xp.matmul(xp.swapaxes(neutralizers, 1, 2), w * s)  # Nᵀ (w ∘ s) ∈ (B, k, m)
    return w * (s - xp.matmul(neutralizers, loadings))


def alpha_block(ns, pred, neutralizers, sample_weights, target):
    """numerai-tools ``alpha`` per era and column of ``pred (B, L, m)``; ``target``, ``sample_weights`` ``(B, L, 1)``.

    1. Center the target over all of the era's present targets (before filtering).
    2. Keep the rows where every prediction column and the target are present.
    3. Neutralized weights W (:func:`neutral_weights_block`) over the kept rows.
    4. ``alpha = Wᵀ t_c / n_kept``; NaN below 2 kept rows (numerai-tools' ``power`` refuses one row).
    """
    xp = ns.xp
    t = target - _present_mean(xp, target)
    kept = kept_rows(pred, t)
    weights = neutral_weights_block(ns, pred, neutralizers, sample_weights, kept)
    count = kept.sum(axis=1)  # (B, 1)
    score = (weights * xp.where(kept, t, 0.0)).sum(axis=1) / xp.maximum(count, 1)
    return xp.where(count >= 2, score, xp.nan)


def mpc_block(ns, pred, neutralizers, sample_weights, target, stakes):
    """numerai-tools ``meta_portfolio_contribution`` per era; ``stakes (m,)`` already normalized.

    1. Keep the rows where every prediction column and the target are present; center the
       target over the kept rows.
    2. Neutralized weights W over the kept rows; ``W_c = W − 1 μᵀ`` (column means).
    3. ``v = W_c s``, re-centered; ``R = W_c − v (vᵀ W_c) / (vᵀ v)``.
    4. ``mpc = Rᵀ t_c / ‖v‖ / 50``; NaN below 2 kept rows or where ``‖v‖ = 0``.
    """
    xp = ns.xp
    kept = kept_rows(pred, target)
    count = kept.sum(axis=1, keepdims=True)  # (B, 1, 1)
    safe_count = xp.maximum(count, 1)
    t = xp.where(kept, target, 0.0)
    t = xp.where(kept, t - t.sum(axis=1, keepdims=True) / safe_count, 0.0)
    weights = neutral_weights_block(ns, pred, neutralizers, sample_weights, kept)
    centered = xp.where(kept, weights - weights.sum(axis=1, keepdims=True) / safe_count, 0.0)  # W_c
    v = (centered * stakes).sum(axis=2, keepdims=True)  # W_c s ∈ (B, L, 1)
    v = xp.where(kept, v - v.sum(axis=1, keepdims=True) / safe_count, 0.0)
    vv = (v * v).sum(axis=1, keepdims=True)
    residual = centered - v * (centered * v).sum(axis=1, keepdims=True) / xp.where(vv > 0, vv, 1.0)
    score = (residual * t).sum(axis=1) / xp.sqrt(xp.where(vv > 0, vv, 1.0))[:, 0] / PAYOUT_SCALE
    return xp.where((count[:, 0] >= 2) & (vv[:, 0] > 0), score, xp.nan)
