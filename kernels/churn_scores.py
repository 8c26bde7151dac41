"""How much a submission changed against an earlier one, per era: ``churn``, ``neutral_churn``,
``turnover``, and the payout kept under a neutral-churn penalty, ``churn_penalty``.

Each matches numerai-tools 0.7.2 (``numerai_tools.signals``) applied era by era. ``a`` and ``b``
hold the same rows (one id per row, sorted by era), NaN where a submission lacks the id; a 2-D
side gives one result column per column, paired with the same column of the other side (a 1-D
side is paired with every column). numerai-tools' check that at least 80 % of the ids overlap is
not applied: eras are scored on the rows both sides have, and callers decide what overlap is
enough. Where numerai-tools asserts (a constant side, nothing in common) the result is NaN.

One deviation: ``churn(..., top_bottom=n)`` of an era where a side has no present row is NaN,
where numerai-tools returns 1.0 (no overlap with an empty top and bottom): a side without the era
has no ranking to compare, and 1.0 would read as a complete change of picks.
"""

from __future__ import annotations

import numpy as np

from eraflow.engine.errors import InputError

from ._checks import columns, era_offsets, finite_number, same_rows, shaped, shown
from ._eras import map_eras
from ._xp_churn import top_bottom_overlap_block
from .backend import array_namespace, resolve_backend
from .correlation import correlation_columns
from .neutralization import _gauss_residual, neutralizer_matrix

CHURN_RANGE = (0.0, 2.0)  # 1 − Spearman; rounding may carry it an ulp outside, which is clipped


def churn(a, b, offsets, *, top_bottom: int | None = None, backend: str = "auto") -> np.ndarray:
    """Churn per era: ``1 − Spearman(a, b)`` over the rows where both are present (numerai-tools ``churn``).

    With ``top_bottom=n`` (n ≥ 1) it is instead one minus the mean share of the top n and of the
    bottom n ids that both sides have in common, each side's top and bottom taken over its own
    present rows (a stable sort: among tied values earlier rows count as bottom, later as top).
    numerai-tools sorts a NaN above every value there; here a NaN row is an id the side lacks.

    Parameters
    ----------
    a, b : array (n,) or (n, m), float
        Same rows, sorted by era.
    offsets : array (n_eras + 1,), int
    top_bottom : int ≥ 0 or None
        None or 0: Spearman churn.
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) when both are 1-D, else (n_eras, m), within [0, 2] (top/bottom: [0, 1]);
    NaN where fewer than 2 rows are shared or a side is constant (Spearman), or a side has no
    present row (top/bottom).

    Examples
    --------
    >>> a = np.array([0.1, 0.2, 0.3, 0.4])
    >>> churn(a, np.array([0.1, 0.3, 0.2, 0.4]), np.array([0, 4]), backend="numpy")
    array([0.2])
    >>> churn(a, np.array([0.4, 0.2, 0.3, 0.1]), np.array([0, 4]), top_bottom=1, backend="numpy")
    array([1.])
    """
    x, y, one_d = _paired(a, b)
    offsets = era_offsets(offsets, len(x))
    backend = resolve_backend(backend)
    n = _top_bottom(top_bottom)
    if n:
        return shaped(1 - _top_bottom_overlap(x, y, offsets, n, backend), one_d)
    return shaped(_one_minus(correlation_columns(x, y, offsets, True, backend)), one_d)


def neutral_churn(a, b, neutralizers_a, neutralizers_b, offsets, *, backend: str = "auto") -> np.ndarray:
    """Churn after neutralizing each side against its own neutralizers (numerai-tools ``neutral_churn``).

    1. Per side, over its rows with a value and every neutralizer present:
       ``r = neutralize(gaussianize(rank(x)), N)`` (with an intercept; each column on its own rows).
    2. ``1 − Spearman(r_a, r_b)`` over the rows where both residuals are present.

    A side whose rows in an era are no more than its varying neutralizers has residuals exactly 0
    here (rounding noise in numerai-tools), hence NaN, as for a constant side. With one row more
    (k_varying + 1, the intercept counting) the fit is exact too but the residuals are rounding
    noise here as in numerai-tools, so the churn is noise: treat eras of at most k + 1 rows as unscored.

    Parameters
    ----------
    a, b : array (n,) or (n, m), float
        Same rows, sorted by era (e.g. this week's and an earlier submission, aligned by ticker).
    neutralizers_a, neutralizers_b : array (n, k), int8 store codes (-1 read as 2) or floats
        Each side's neutralizers for the same rows (a row with a NaN float is left out of that side).
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) when both are 1-D, else (n_eras, m), within [0, 2].

    Examples
    --------
    >>> n = np.array([[0], [1], [2], [3], [0], [4]], dtype=np.int8)
    >>> a = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    >>> neutral_churn(a, np.array([0.3, 0.1, 0.2, 0.6, 0.4, 0.5]), n, n, np.array([0, 6]), backend="numpy").round(6)
    array([0.571429])
    """
    x, y, one_d = _paired(a, b)
    offsets = era_offsets(offsets, len(x))
    backend = resolve_backend(backend)
    residuals = [_gauss_residual_per_column(side, *neutralizer_matrix(neutralizers, len(x)), offsets, backend)
                 for side, neutralizers in ((x, neutralizers_a), (y, neutralizers_b))]
    return shaped(_one_minus(correlation_columns(*residuals, offsets, True, backend)), one_d)


def turnover(a, b, offsets) -> np.ndarray:
    """Turnover per era: ``Σ |a − b| / 2`` over the rows where both are present (numerai-tools ``turnover``).

    Meant for portfolio weights (e.g. neutralized, centered and normalized submissions).

    Parameters
    ----------
    a, b : array (n,) or (n, m), float
    offsets : array (n_eras + 1,), int

    Returns
    -------
    float64 array (n_eras,) when both are 1-D, else (n_eras, m); NaN for eras with no shared row.

    Examples
    --------
    >>> turnover(np.array([0.5, -0.5, 0.2, -0.2]), np.array([0.5, -0.5, -0.2, 0.2]), np.array([0, 2, 4]))
    array([0. , 0.4])
    """
    x, y, one_d = _paired(a, b)
    offsets = era_offsets(offsets, len(x))
    both = ~np.isnan(x) & ~np.isnan(y)
    shared = _era_sums(both, offsets)
    total = _era_sums(np.where(both, np.abs(x - y), 0.0), offsets) / 2
    return shaped(np.where(shared > 0, total, np.nan), one_d)


def churn_penalty(neutral_churn, threshold: float = 0.1, scaling_factor: float = 10.0):
    """Share of a positive payout kept under the neutral-churn penalty (numerai-tools ``neutral_churn_penalty``).

    ``1`` while ``c ≤ threshold``, else ``2 d / (1 + d)`` with ``d = exp(−scaling_factor · (c − threshold))``
    (= ``min(1, 2 / (1 + exp(scaling_factor · (c − threshold))))`` without overflow).

    Parameters
    ----------
    neutral_churn : float or array of floats in [0, 2]; NaN stays NaN
    threshold : float in [0, 2]
    scaling_factor : float > 0

    Returns
    -------
    float for a scalar, else a float64 array of the same shape.

    Examples
    --------
    >>> churn_penalty(np.array([0.05, 0.1, 0.2, np.nan])).round(6)
    array([1.      , 1.      , 0.537883,      nan])
    """
    try:
        values = np.asarray(neutral_churn)
    except (TypeError, ValueError):  # e.g. a ragged list
        values = None
    if values is None or values.dtype.kind not in "iufb":  # None, strings, objects: NaN or a failed cast
        msg = f"neutral_churn must be numbers in [0, 2], got {shown(neutral_churn)}"
        raise InputError(msg)
    values = values.astype(np.float64)
    outside = ~np.isnan(values) & ~((values >= CHURN_RANGE[0]) & (values <= CHURN_RANGE[1]))
    if outside.any():
        msg = f"neutral_churn must lie in [0, 2] (or be NaN), got {float(values[outside].flat[0])!r}"
        raise InputError(msg)
    threshold = finite_number(threshold, "threshold")
    if not CHURN_RANGE[0] <= threshold <= CHURN_RANGE[1]:
        msg = f"threshold must lie in [0, 2], got {threshold!r}"
        raise InputError(msg)
    scaling_factor = finite_number(scaling_factor, "scaling_factor")
    if scaling_factor <= 0:
        msg = f"scaling_factor must be positive, got {scaling_factor!r}"
        raise InputError(msg)
    decay = np.exp(-scaling_factor * (np.maximum(values, threshold) - threshold))  # exponent ≤ 0: no overflow
    kept = np.where(values <= threshold, 1.0, 2 * decay / (1 + decay))
    return float(kept) if kept.ndim == 0 else kept


def _paired(a, b) -> tuple[np.ndarray, np.ndarray, bool]:
    """``a`` and ``b`` as float64 ``(n, m)`` columns of the same shape (a single column repeated to
    pair with every column of the other side), and whether both were 1-D."""
    x, a_one_d = columns(a, "a")
    y, b_one_d = columns(b, "b")
    same_rows(y, len(x), "b")
    if 0 in (x.shape[1], y.shape[1]):
        msg = f"a and b need at least one column each, got shapes {np.shape(a)} and {np.shape(b)}"
        raise InputError(msg)
    if x.shape[1] != y.shape[1]:
        if 1 not in (x.shape[1], y.shape[1]):
            msg = (f"a and b must have the same number of columns or one must be 1-D, "
                   f"got {np.shape(a)} and {np.shape(b)}")
            raise InputError(msg)
        width = max(x.shape[1], y.shape[1])
        x, y = np.repeat(x, width // x.shape[1], axis=1), np.repeat(y, width // y.shape[1], axis=1)
    return x, y, a_one_d and b_one_d


def _era_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-era column sums ``(n_eras, m)`` of ``values (n, m)`` (NaN propagates; empty eras sum to 0)."""
    era = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.stack([np.bincount(era, weights=values[:, j], minlength=len(offsets) - 1)
                     for j in range(values.shape[1])], axis=1)


def _top_bottom(top_bottom) -> int:
    """The validated ``top_bottom`` count; 0 for None (Spearman churn)."""
    if top_bottom is None:
        return 0
    if isinstance(top_bottom, bool) or not isinstance(top_bottom, (int, np.integer)) or top_bottom < 0:
        msg = f"top_bottom must be a whole number ≥ 0 (or None), got {top_bottom!r}"
        raise InputError(msg)
    return int(top_bottom)


def _one_minus(correlation: np.ndarray) -> np.ndarray:
    """``1 − ρ`` clipped to [0, 2] (a correlation may round an ulp past ±1); NaN stays NaN."""
    return np.clip(1 - correlation, *CHURN_RANGE)


def _top_bottom_overlap(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, n: int, backend: str) -> np.ndarray:
    """Per era and column the mean top/bottom overlap share of validated ``x``, ``y (n_rows, m)``."""
    if backend == "numba":
        from ._numba_churn import top_bottom_overlap_eras

        return top_bottom_overlap_eras(x, y, offsets, n)
    ns = array_namespace(backend)
    return map_eras(ns, lambda u, v: top_bottom_overlap_block(ns, u, v, n), [x, y], offsets, [np.nan, np.nan],
                    2 * x.shape[1], x.shape[1])


def _gauss_residual_per_column(x: np.ndarray, features: np.ndarray, usable: np.ndarray, offsets: np.ndarray,
                               backend: str) -> np.ndarray:
    """``neutralize(gaussianize(rank(x_j)), F)`` per era, each column over its own rows (present and
    ``usable``); columns with the same rows share one call."""
    rows = ~np.isnan(x) & usable[:, None]
    out = np.full(x.shape, np.nan)
    done = np.zeros(x.shape[1], bool)
    for j in range(x.shape[1]):
        if not done[j]:
            same = ~done & (rows == rows[:, j:j + 1]).all(axis=0)
            out[:, same] = _gauss_residual(x[:, same], features, offsets, rows[:, j], backend)
            done |= same
    return out
