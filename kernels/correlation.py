"""Per-era correlation scores: ``pearson``, ``spearman``, ``numerai_corr``, ``correlation_contribution``.

Every score is computed per era and per prediction column, on the rows of that column where
its inputs are present (not NaN) — as numerai-tools does when given that one column. Where
numerai-tools would refuse an era (fewer than 2 usable rows, a constant column, an all-NaN
target) the score is NaN. numerai-tools' ``max_filtered_index_ratio`` check (at most 20 % of
rows dropped) is not applied: eras with many missing targets are scored on what remains.
"""

from __future__ import annotations

import numpy as np

from eraflow.engine.errors import InputError

from ._checks import columns, era_offsets, one_column, same_rows, shaped
from ._eras import map_eras
from ._xp_scores import contribution_block, numerai_corr_block, pearson_block, spearman_block
from .backend import array_namespace, resolve_backend


def pearson(a, b, offsets, *, backend: str = "auto") -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` within each era, per column.

    Rows where either side is NaN are skipped (pairwise, like ``pandas.Series.corr``).

    Parameters
    ----------
    a, b : array (n,) or (n, m), float
        Same rows, sorted by era; a 1-D side is paired with every column of the other.
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) when both are 1-D, else (n_eras, m); NaN for eras with fewer
    than 2 usable rows or a constant side.

    Examples
    --------
    >>> pearson(np.array([1.0, 2, 3, 1, 2, 3]), np.array([2.0, 4, 6, 3, 2, 1]), np.array([0, 3, 6]),
    ...         backend="numpy")
    array([ 1., -1.])
    """
    return _correlation(a, b, offsets, spearman=False, backend=backend)


def spearman(a, b, offsets, *, backend: str = "auto") -> np.ndarray:
    """Spearman correlation within each era: Pearson of average ranks, ranked over the rows
    where both sides are present (like ``pandas.Series.corr(method="spearman")``).

    Same arguments and result as :func:`pearson`.

    Examples
    --------
    >>> spearman(np.array([1.0, 2, 30]), np.array([1.0, 5, 6]), np.array([0, 3]), backend="numpy")
    array([1.])
    """
    return _correlation(a, b, offsets, spearman=True, backend=backend)


def numerai_corr(predictions, target, offsets, *, backend: str = "auto") -> np.ndarray:
    """Numerai's correlation score per era (numerai-tools ``numerai_corr`` applied to each era).

    1. Center the target over the era's present targets (before any filtering).
    2. Per prediction column, keep the rows where it and the target are present.
    3. ``p = power(gaussianize(rank_average(pred)), 1.5)`` and ``t = power(t_centered, 1.5)``.
    4. Pearson(p, t).

    Parameters
    ----------
    predictions : array (n,) or (n, m), float
    target : array (n,), float; NaN marks rows without a target
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) for 1-D predictions, else (n_eras, m).

    Examples
    --------
    >>> numerai_corr(np.array([0.1, 0.4, 0.3, 0.9]), np.array([0.0, 0.5, 0.5, 1.0]), np.array([0, 4]),
    ...              backend="numpy").round(6)
    array([0.98954])
    """
    x, one_d = columns(predictions, "predictions")
    t = one_column(target, "target", len(x))
    offsets = era_offsets(offsets, len(x))
    return shaped(numerai_corr_columns(x, t, offsets, resolve_backend(backend)), one_d)


def correlation_contribution(predictions, meta_model, target, offsets, *, backend: str = "auto") -> np.ndarray:
    """MMC / BMC per era: numerai-tools ``correlation_contribution`` applied to each era.

    1. Per prediction column, keep the rows where it, the meta model and the target are present.
    2. ``p = gaussianize(rank(pred))``, ``m = gaussianize(rank(meta))`` over those rows.
    3. ``p⊥ = p − m (pᵀm) / (mᵀm)``.
    4. If every kept target lies in [0, 1], scale it ×4; center it over the kept rows.
    5. ``score = tᵀ p⊥ / n_kept``.

    Parameters
    ----------
    predictions : array (n,) or (n, m), float
    meta_model : array (n,), float (the meta model, or a benchmark for BMC)
    target : array (n,), float
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) for 1-D predictions, else (n_eras, m); NaN where no row is kept or
    the meta model is constant in the era.

    Examples
    --------
    >>> correlation_contribution(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4]),
    ...                          np.array([0.0, 1, 0.5, 1]), np.array([0, 4]), backend="numpy").round(6)
    array([-0.13199])
    """
    x, one_d = columns(predictions, "predictions")
    meta = one_column(meta_model, "meta_model", len(x))
    t = one_column(target, "target", len(x))
    offsets = era_offsets(offsets, len(x))
    backend = resolve_backend(backend)
    if backend == "numba":
        from . import _numba_scores

        out = _numba_scores.contribution_eras(x, meta, t, offsets)
    else:
        ns = array_namespace(backend)
        out = map_eras(ns, lambda p, m, tt: contribution_block(ns, p, m, tt), [x, meta, t], offsets,
                       [np.nan] * 3, x.shape[1] + 2, x.shape[1])
    return shaped(out, one_d)


def numerai_corr_columns(x: np.ndarray, t: np.ndarray, offsets: np.ndarray, backend: str) -> np.ndarray:
    """:func:`numerai_corr` of validated float64 ``x (n, m)`` and ``t (n, 1)`` on a resolved backend."""
    if backend == "numba":
        from . import _numba_scores

        return _numba_scores.numerai_corr_eras(x, t, offsets)
    ns = array_namespace(backend)
    return map_eras(ns, lambda p, tt: numerai_corr_block(ns, p, tt), [x, t], offsets,
                    [np.nan, np.nan], x.shape[1] + 1, x.shape[1])


def correlation_columns(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, spearman: bool,
                        backend: str) -> np.ndarray:
    """Per-era Pearson/Spearman of validated ``x (n, m)`` with ``y (n, m or 1)`` on a resolved backend."""
    if backend == "numba":
        from . import _numba_scores

        return _numba_scores.correlation_eras(x, y, offsets, spearman)
    ns = array_namespace(backend)
    block = spearman_block if spearman else pearson_block
    return map_eras(ns, lambda u, v: block(ns, u, v), [x, y], offsets, [np.nan, np.nan],
                    x.shape[1] + y.shape[1], x.shape[1])


def _correlation(a, b, offsets, spearman: bool, backend: str) -> np.ndarray:
    x, a_one_d = columns(a, "a")
    y, b_one_d = columns(b, "b")
    same_rows(y, len(x), "b")
    if x.shape[1] == 1 and y.shape[1] > 1:  # correlation is symmetric: let b be the shared column
        x, y = y, x
    if y.shape[1] not in (1, x.shape[1]):
        msg = f"a and b must have the same number of columns or one must be 1-D, got {np.shape(a)} and {np.shape(b)}"
        raise InputError(msg)
    offsets = era_offsets(offsets, len(x))
    return shaped(correlation_columns(x, y, offsets, spearman, resolve_backend(backend)), a_one_d and b_one_d)
