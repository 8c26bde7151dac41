"""Numerai Signals portfolio scores per era: ``alpha`` and ``meta_portfolio_contribution`` (MPC).

Both turn each prediction column into neutralized portfolio weights
``W = w ∘ (s − N (Nᵀ (w ∘ s)))``, with ``s = power(gaussian(rank_average(pred)), 1.5)``, ``N``
the neutralizers and ``w`` the sample weights, and score them against the target — numerai-tools
0.7.2 ``alpha`` and ``meta_portfolio_contribution`` applied to each era.

Rows
    A row takes part when every prediction column and the target are present (numerai-tools'
    ``filter_sort_index`` drops a frame row with any NaN). Neutralizers and sample weights must
    be finite on every row (numerai-tools asserts no NaN). Its 80 %-overlap assertion is not
    applied (as in :mod:`.correlation`): eras with many missing targets are scored on what remains.

Undefined eras
    NaN where fewer than 2 rows are kept (numerai-tools' ``power`` refuses a one-row era, and
    an empty era has nothing to score), and for MPC where the stake-weighted portfolio ``v`` is
    zero (numerai-tools divides by ``‖v‖``).
"""

from __future__ import annotations

import numpy as np

from eraflow.engine.errors import InputError

from ._checks import columns, era_offsets, finite_matrix, one_column, shaped
from ._eras import map_eras
from ._xp_portfolio import alpha_block, mpc_block
from .backend import array_namespace, resolve_backend


def alpha(predictions, neutralizers, sample_weights, targets, offsets, *, backend: str = "auto") -> np.ndarray:
    """Numerai Signals alpha per era: numerai-tools ``alpha`` applied to each era.

    1. Center the target over the era's present targets (before any filtering).
    2. Keep the rows where every prediction column and the target are present.
    3. ``s = power(gaussian(rank_average(pred)), 1.5)`` per column over the kept rows.
    4. ``W = w ∘ (s − N (Nᵀ (w ∘ s)))`` (no centering: N is meant to be orthonormal under w).
    5. ``alpha = Wᵀ t_c / n_kept``.

    Parameters
    ----------
    predictions : array (n,) or (n, m), float; NaN marks a missing prediction
    neutralizers : array (n, k), finite floats
    sample_weights : array (n,), finite floats
    targets : array (n,), float; NaN marks rows without a target
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) for 1-D predictions, else (n_eras, m); NaN for eras with fewer than 2 kept rows.

    Examples
    --------
    >>> alpha(np.array([0.1, 0.4, 0.3, 0.9]), np.full((4, 1), 0.5), np.ones(4), np.array([0.0, 0.5, 0.25, 1.0]),
    ...       np.array([0, 4]), backend="numpy").round(6)
    array([0.319692])
    """
    x, one_d = columns(predictions, "predictions")
    n_matrix, w, t = _portfolio_inputs(x, neutralizers, sample_weights, targets)
    offsets = era_offsets(offsets, len(x))
    backend = resolve_backend(backend)
    if backend == "numba":
        from . import _numba_portfolio

        out = _numba_portfolio.alpha_eras(x, n_matrix, w[:, 0], t[:, 0], offsets)
    else:
        ns = array_namespace(backend)
        out = map_eras(ns, lambda p, nn, ww, tt: alpha_block(ns, p, nn, ww, tt), [x, n_matrix, w, t], offsets,
                       [np.nan, 0.0, 0.0, np.nan], x.shape[1] + n_matrix.shape[1] + 2, x.shape[1])
    return shaped(out, one_d)


def meta_portfolio_contribution(predictions, stakes, neutralizers, sample_weights, targets, offsets, *,
                                backend: str = "auto") -> np.ndarray:
    """Meta portfolio contribution (MPC) per era: numerai-tools ``meta_portfolio_contribution`` applied to each era.

    The gradient of the stake-weighted portfolio's alpha with respect to each column's stake.

    1. Keep the rows where every prediction column and the target are present; center the target
       over the kept rows.
    2. Stakes: NaN → 0, divided by ``Σ|stake|``.
    3. Neutralized weights W per column as in :func:`alpha`; ``W_c = W − 1 μᵀ`` (column means).
    4. ``v = W_c s``, re-centered; ``R = W_c − v (vᵀ W_c) / ‖v‖²``.
    5. ``mpc = Rᵀ t_c / ‖v‖ / 50``.

    Parameters
    ----------
    predictions : array (n,) or (n, m), float; NaN marks a missing prediction
    stakes : array (m,), float ≥ 0 (NaN counts as 0), not all zero
    neutralizers : array (n, k), finite floats
    sample_weights : array (n,), finite floats
    targets : array (n,), float; NaN marks rows without a target
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) for 1-D predictions, else (n_eras, m); NaN for eras with fewer than 2
    kept rows or a zero portfolio ``v``.

    Examples
    --------
    >>> p = np.array([[0.1, 0.2], [0.4, 0.1], [0.3, 0.3], [0.9, 0.4]])
    >>> meta_portfolio_contribution(p, np.array([1.0, 1.0]), np.full((4, 1), 0.5), np.ones(4),
    ...                             np.array([0.0, 0.5, 0.25, 1.0]), np.array([0, 4]), backend="numpy").round(6)
    array([[ 0.004068, -0.004068]])
    """
    x, one_d = columns(predictions, "predictions")
    s = stake_weights(stakes, x.shape[1])
    n_matrix, w, t = _portfolio_inputs(x, neutralizers, sample_weights, targets)
    offsets = era_offsets(offsets, len(x))
    backend = resolve_backend(backend)
    if backend == "numba":
        from . import _numba_portfolio

        out = _numba_portfolio.mpc_eras(x, n_matrix, w[:, 0], t[:, 0], s, offsets)
    else:
        ns = array_namespace(backend)
        s_device = ns.to_device(s)
        out = map_eras(ns, lambda p, nn, ww, tt: mpc_block(ns, p, nn, ww, tt, s_device), [x, n_matrix, w, t],
                       offsets, [np.nan, 0.0, 0.0, np.nan], x.shape[1] + n_matrix.shape[1] + 2, x.shape[1])
    return shaped(out, one_d)


def stake_weights(stakes, n_columns: int) -> np.ndarray:
    """numerai-tools' stake normalization: NaN → 0, then ``s / Σ|s|``, which must sum to 1 (no negative stakes)."""
    s, _ = columns(np.reshape(stakes, -1) if np.ndim(stakes) == 0 else stakes, "stakes")
    if s.shape != (n_columns, 1):
        msg = f"stakes must be one number per prediction column ({n_columns}), got shape {np.shape(stakes)}"
        raise InputError(msg)
    s = np.where(np.isnan(s[:, 0]), 0.0, s[:, 0])
    if not np.isfinite(s).all():
        msg = "stakes contain inf; pass finite stakes (NaN counts as 0)"
        raise InputError(msg)
    total = np.abs(s).sum()
    if total == 0:
        msg = "stakes are all zero (or NaN); give at least one prediction column a positive stake"
        raise InputError(msg)
    s = s / total
    if not np.isclose(s.sum(), 1):
        msg = f"stakes must not be negative, got {s[s < 0].size} negative; pass stakes ≥ 0"
        raise InputError(msg)
    return s


def _portfolio_inputs(x: np.ndarray, neutralizers, sample_weights, targets):
    """Validated ``neutralizers (n, k)``, ``sample_weights (n, 1)``, ``targets (n, 1)`` as float64."""
    n_matrix = finite_matrix(neutralizers, "neutralizers", len(x))
    w = one_column(sample_weights, "sample_weights", len(x))
    if not np.isfinite(w).all():
        msg = "sample_weights contain NaN or inf; every row needs a finite weight"
        raise InputError(msg)
    return n_matrix, w, one_column(targets, "targets", len(x))

