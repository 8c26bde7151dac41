"""Per-era regression on features: ``neutralize``, ``feature_exposure``, ``feature_neutral_corr``,
``neutral_correlation``, ``neutral_contribution``.

Features
    Either the EraStore's int8 codes (0..4, ``-1`` = missing) or finite floats. A missing
    code is read as 2, the middle bucket. That is Numerai's own convention (in v5 data a
    feature missing for an era is stored as all 2s), so a store ingested from older data with
    NaNs neutralizes like v5 data; it keeps the codes integers, so the Gram matrix is exact
    in float32; and a feature missing for a whole era becomes constant and drops out. (The
    era mean would also be a neutral fill, but it is not an integer and it hides nothing the
    middle code does not, since a constant or mostly constant column explains little.)

Rows
    Neutralization is shared by every column of ``values``, so a row takes part only when all
    its columns are present; rows with any NaN come back NaN (numerai-tools refuses NaN).

Solver
    One Cholesky factor per era of the features' correlation matrix, shared by all columns,
    with a fall-back to ``lstsq`` (numerai-tools' own call) for near-collinear features or
    eras with no more rows than features; see :mod:`eraflow.kernels._xp_linalg` for why.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from eraflow.engine.errors import InputError

from ._checks import columns, era_offsets, feature_matrix, finite_number, one_column, row_dtype, same_rows, shaped
from ._eras import map_eras, map_rows
from ._xp_linalg import exposure_block, neutralize_block
from ._xp_scores import orthogonal_contribution_block
from .backend import array_namespace, resolve_backend
from .correlation import correlation_columns, numerai_corr_columns
from .ranking import ranks


class NeutralScores(NamedTuple):
    """Per-era feature-neutral scores; each field (n_eras,) or (n_eras, m)."""

    fnc: np.ndarray  # feature_neutral_corr
    neutral_corr: np.ndarray  # neutral_correlation


class FeatureExposure(NamedTuple):
    """Per-era exposure of predictions to features; each field (n_eras,) or (n_eras, m)."""

    max_abs: np.ndarray  # max over features of |Pearson(pred, feature)|
    rms: np.ndarray  # root mean square over features of Pearson(pred, feature)


def neutralize(values, features, offsets, proportion: float = 1.0, *, backend: str = "auto") -> np.ndarray:
    """Remove from each column, era by era, the part explained linearly by the features.

    Per era: ``F1 = [F, 1]``, ``β = lstsq(F1, x)``, result ``x − proportion · F1 β`` (no
    rescaling) — numerai-tools ``neutralize`` applied to each era. Columns that are constant
    in an era (including every column of a one-row era) come back NaN for that era.

    Parameters
    ----------
    values : array (n,) or (n, m), float
    features : array (n, k), int8 store codes (-1 = missing, read as 2) or finite floats
    offsets : array (n_eras + 1,), int
    proportion : float
        1 removes the whole linear exposure, 0 returns the values unchanged.
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    array of the shape of ``values``; float32 for float32 input, else float64.

    Examples
    --------
    >>> x = np.array([1.0, 2.0, 4.0, 3.0])
    >>> f = np.array([[0], [1], [2], [3]], dtype=np.int8)
    >>> neutralize(x, f, np.array([0, 4]), backend="numpy").round(6)
    array([-0.3, -0.1,  1.1, -0.7])
    """
    x, one_d = columns(values, "values")
    offsets = era_offsets(offsets, len(x))
    feats = feature_matrix(features, len(x))
    proportion = finite_number(proportion, "proportion")
    kept = ~np.isnan(x).any(axis=1)
    out = neutralized(x, feats, offsets, kept, proportion, resolve_backend(backend))
    return shaped(out, one_d, row_dtype(values))


def feature_exposure(predictions, features, offsets, *, backend: str = "auto") -> FeatureExposure:
    """Per era, the largest and the root-mean-square Pearson correlation of each prediction
    column with the features (numerai-tools ``max_feature_correlation`` gives the first).

    Features constant in the era are left out; rows with a NaN prediction are skipped.

    Parameters
    ----------
    predictions : array (n,) or (n, m), float
    features : array (n, k), int8 store codes (-1 = missing, read as 2) or finite floats
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    FeatureExposure(max_abs, rms), float64 arrays (n_eras,) or (n_eras, m).

    Examples
    --------
    >>> f = np.array([[0, 1], [1, 1], [2, 0], [3, 4]], dtype=np.int8)
    >>> feature_exposure(np.array([1.0, 2, 3, 5]), f, np.array([0, 4]), backend="numpy").max_abs.round(6)
    array([0.982708])
    """
    x, one_d = columns(predictions, "predictions")
    offsets = era_offsets(offsets, len(x))
    feats = feature_matrix(features, len(x))
    kept = ~np.isnan(x).any(axis=1)
    backend = resolve_backend(backend)
    m = x.shape[1]
    if backend == "numba":
        from . import _numba_linalg

        both = _numba_linalg.exposure_eras(x, feats, offsets, kept, feats.dtype == np.int8)
    else:
        ns = array_namespace(backend)
        both = map_eras(ns, lambda p, f, k: exposure_block(ns, p, f, k), [x, feats, kept[:, None]], offsets,
                        [np.nan, 0, False], feats.shape[1] + m + 1, 2 * m)
    return FeatureExposure(shaped(both[:, :m], one_d), shaped(both[:, m:], one_d))


def feature_neutral_corr(predictions, features, target, offsets, *, backend: str = "auto") -> np.ndarray:
    """Feature-neutral correlation per era (numerai-tools ``feature_neutral_corr`` applied to each era).

    1. ``g = gaussianize(rank_average(pred))`` over the era's rows.
    2. ``r = neutralize(g, F)`` (proportion 1).
    3. ``numerai_corr(r, target)``.

    numerai-tools divides r by its standard deviation before step 3; ranks ignore that
    scaling, so it is skipped. Rows with a NaN prediction are dropped before step 1
    (numerai-tools refuses them).

    Parameters
    ----------
    predictions : array (n,) or (n, m), float
    features : array (n, k), int8 store codes or finite floats
    target : array (n,), float
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    float64 array (n_eras,) for 1-D predictions, else (n_eras, m).

    Examples
    --------
    >>> f = np.array([[0], [1], [2], [3], [4]], dtype=np.int8)
    >>> feature_neutral_corr(np.array([0.1, 0.5, 0.2, 0.9, 0.6]), f, np.array([0, 1, 0.25, 0.5, 0.5]),
    ...                      np.array([0, 5]), backend="numpy").round(6)
    array([0.271469])
    """
    x, one_d, offsets, feats, t = _neutral_inputs(predictions, features, target, offsets)
    backend = resolve_backend(backend)
    residual = _gauss_residual(x, feats, offsets, ~np.isnan(x).any(axis=1), backend)
    return shaped(numerai_corr_columns(residual, t, offsets, backend), one_d)


def neutral_correlation(predictions, features, target, offsets, *, backend: str = "auto") -> np.ndarray:
    """Correlation of feature-neutralized predictions with the target per era (numerai-tools
    ``neutral_correlation`` applied to each era).

    1. Keep the rows where the target and every prediction column are present.
    2. ``g = gaussianize(rank_average(pred))`` over the kept rows; ``r = neutralize(g, F)``.
    3. Pearson(r, target). (numerai-tools centers the target first; Pearson ignores that.)

    Unlike :func:`feature_neutral_corr`, no 1.5 power and no re-ranking after neutralizing.

    Parameters and result as :func:`feature_neutral_corr`.

    Examples
    --------
    >>> f = np.array([[0], [1], [2], [3], [4]], dtype=np.int8)
    >>> neutral_correlation(np.array([0.1, 0.5, 0.2, 0.9, 0.6]), f, np.array([0, 1, 0.25, 0.5, 0.5]),
    ...                     np.array([0, 5]), backend="numpy").round(6)
    array([0.59237])
    """
    x, one_d, offsets, feats, t = _neutral_inputs(predictions, features, target, offsets)
    backend = resolve_backend(backend)
    residual = _gauss_residual(x, feats, offsets, ~np.isnan(x).any(axis=1) & ~np.isnan(t[:, 0]), backend)
    return shaped(correlation_columns(residual, t, offsets, False, backend), one_d)


def neutral_scores(predictions, features, target, offsets, *, backend: str = "auto") -> NeutralScores:
    """:func:`feature_neutral_corr` and :func:`neutral_correlation` together, from one neutralization.

    Both neutralize ``gaussianize(rank(pred))`` against the features, FNC over the rows with a
    prediction and neutral correlation over those that also have a target; in eras where those
    rows are the same (every era whose targets are all present) one neutralization serves both,
    and only the other eras are neutralized a second time.

    Parameters and shapes as :func:`feature_neutral_corr`; returns ``NeutralScores(fnc, neutral_corr)``.
    """
    x, one_d, offsets, feats, t = _neutral_inputs(predictions, features, target, offsets)
    backend = resolve_backend(backend)
    kept = ~np.isnan(x).any(axis=1)
    both = kept & ~np.isnan(t[:, 0])
    residual = _gauss_residual(x, feats, offsets, kept, backend)
    fnc = numerai_corr_columns(residual, t, offsets, backend)
    neutral = correlation_columns(residual, t, offsets, False, backend)
    lacking = np.concatenate([[0], np.cumsum(kept & ~both)])
    redo = lacking[offsets[1:]] > lacking[offsets[:-1]]  # eras where some predicted row lacks a target
    if redo.any():
        rows = np.repeat(redo, np.diff(offsets))
        sub = np.concatenate([[0], np.cumsum(np.diff(offsets)[redo])])
        again = _gauss_residual(x[rows], feats[rows], sub, both[rows], backend)
        neutral[redo] = correlation_columns(again, t[rows], sub, False, backend)
    return NeutralScores(shaped(fnc, one_d), shaped(neutral, one_d))


def neutral_contribution(predictions, meta_model, neutralizers, targets, offsets, *,
                         backend: str = "auto") -> np.ndarray:
    """Neutral MMC per era: numerai-tools ``neutral_contribution`` applied to each era.

    1. Keep the rows where every prediction column, the meta model, the target and every
       neutralizer are present (numerai-tools' ``filter_sort_index_many``).
    2. ``p = neutralize(gaussianize(rank(pred)), N)``, ``m = neutralize(gaussianize(rank(meta)), N)``
       over the kept rows (``N`` with an intercept; a column constant in the era gives NaN).
    3. ``p⊥ = p − m (pᵀm) / (mᵀm)``.
    4. If every kept target lies in [0, 1], scale it ×4; center it over the kept rows.
    5. ``score = tᵀ p⊥ / n_kept`` (no 1.5 power, no variance normalization).

    Steps 3–5 are ``_xp_scores.orthogonal_contribution_block``, shared with :func:`.correlation_contribution`.
    numerai-tools' 80 %-overlap assertion is not applied. Where ``m`` is exactly zero the score is
    NaN: a constant meta model, or an era whose kept rows are no more than its varying neutralizers
    (which then fit them exactly: residuals exactly 0 here, rounding noise in numerai-tools). An
    era of k_varying + 1 kept rows (the intercept counting) is fit exactly too, but its residuals
    are rounding noise here as in numerai-tools, so its score is noise, not NaN: treat eras of at
    most k + 1 kept rows as unscored.

    Parameters
    ----------
    predictions : array (n,) or (n, m), float
    meta_model : array (n,), float
    neutralizers : array (n, k), int8 store codes (-1 = missing, read as 2) or floats; a row
        with a NaN float neutralizer is left out, as numerai-tools drops it
    targets : array (n,), float
    offsets : array (n_eras + 1,), int
    backend : "auto", "numpy", "numba" or "cupy" (every step runs there)

    Returns
    -------
    float64 array (n_eras,) for 1-D predictions, else (n_eras, m); NaN for eras without kept rows.

    Examples
    --------
    >>> n = np.array([[0], [1], [2], [3], [4], [0]], dtype=np.int8)
    >>> neutral_contribution(np.array([0.1, 0.5, 0.2, 0.9, 0.6, 0.3]), np.array([1.0, 2, 3, 4, 5, 1]), n,
    ...                      np.array([0, 1, 0.25, 0.5, 0.75, 1]), np.array([0, 6]), backend="numpy").round(6)
    array([0.662592])
    """
    x, one_d = columns(predictions, "predictions")
    meta = one_column(meta_model, "meta_model", len(x))
    t = one_column(targets, "targets", len(x))
    offsets = era_offsets(offsets, len(x))
    feats, usable = neutralizer_matrix(neutralizers, len(x))
    kept = ~np.isnan(x).any(axis=1) & ~np.isnan(meta[:, 0]) & ~np.isnan(t[:, 0]) & usable
    backend = resolve_backend(backend)
    residual = _gauss_residual(np.hstack([x, meta]), feats, offsets, kept, backend)
    return shaped(_orthogonal_contribution(residual, t, kept, offsets, backend), one_d)


def neutralizer_matrix(neutralizers, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Neutralizers ``(n, k)`` and the rows where they are all present.

    int8 store codes are kept as they are (every row usable: -1 is read as 2). Float
    neutralizers with a NaN leave that row out, as numerai-tools' index filtering does (its
    rows are then filled with 0, never read); ±inf is refused.
    """
    array = np.asarray(neutralizers)
    if array.ndim != 2 or array.dtype.kind != "f":
        return feature_matrix(array, n_rows, "neutralizers"), np.ones(n_rows, bool)
    same_rows(array, n_rows, "neutralizers")
    if np.isinf(array).any():
        msg = "neutralizers contain inf; pass finite values (NaN marks a row without neutralizers)"
        raise InputError(msg)
    usable = ~np.isnan(array).any(axis=1)
    return feature_matrix(np.where(usable[:, None], array, 0.0), n_rows, "neutralizers"), usable


def _orthogonal_contribution(residual: np.ndarray, t: np.ndarray, kept: np.ndarray, offsets: np.ndarray,
                             backend: str) -> np.ndarray:
    """Per era ``(n_eras, m)`` steps 3–5 of :func:`neutral_contribution` on a resolved backend:
    ``residual (n, m + 1)`` holds the neutralized columns p and, last, the neutralized meta model."""
    p, m = residual[:, :-1], residual[:, -1:]
    if backend == "numba":
        from . import _numba_scores

        return _numba_scores.orthogonal_contribution_eras(p, m, t, kept, offsets)
    ns = array_namespace(backend)
    return map_eras(ns, lambda pp, mm, tt, kk: orthogonal_contribution_block(ns, pp, mm, tt, kk),
                    [p, m, t, kept[:, None]], offsets, [np.nan, np.nan, np.nan, False], p.shape[1] + 3, p.shape[1])


def _neutral_inputs(predictions, features, target, offsets) -> tuple:
    """Validated ``(x (n, m), one_d, offsets, features, t (n, 1))`` of the feature-neutral scores."""
    x, one_d = columns(predictions, "predictions")
    return (x, one_d, era_offsets(offsets, len(x)), feature_matrix(features, len(x)),
            one_column(target, "target", len(x)))


def _gauss_residual(x: np.ndarray, features: np.ndarray, offsets: np.ndarray, kept: np.ndarray,
                    backend: str) -> np.ndarray:
    """``neutralize(gaussianize(rank(x)), F)`` per era over the ``kept`` rows (proportion 1)."""
    gauss = ranks(np.where(kept[:, None], x, np.nan), offsets, False, True, backend)
    return neutralized(gauss, features, offsets, kept, 1.0, backend)


def neutralized(x: np.ndarray, features: np.ndarray, offsets: np.ndarray, kept: np.ndarray,
                proportion: float, backend: str) -> np.ndarray:
    """Neutralization of validated float64 ``x (n, m)`` over the ``kept (n,)`` rows on a resolved
    backend; float64 ``(n, m)``, NaN outside kept rows."""
    if backend == "numba":
        from . import _numba_linalg

        return _numba_linalg.neutralize_eras(x, features, offsets, kept, proportion)
    ns = array_namespace(backend)
    return map_rows(ns, lambda v, f, k: neutralize_block(ns, v, f, k, proportion), [x, features, kept[:, None]],
                    offsets, [np.nan, 0, False], features.shape[1] + x.shape[1] + 1, x.shape[1])
