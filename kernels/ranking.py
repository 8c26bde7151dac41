"""Per-era ranks and the transforms built on them: ``rank``, ``gaussianize``, ``power``."""

from __future__ import annotations

import numpy as np

from ._checks import columns, era_offsets, rank_method, row_dtype, shaped
from ._eras import map_rows
from ._xp_scores import gaussian_block, rank_block
from ._xp_scores import power as _power
from .backend import array_namespace, resolve_backend


def rank(values, offsets, method: str = "average", *, backend: str = "auto") -> np.ndarray:
    """Percentile rank of each column within each era: ``(rank - 0.5) / count``.

    Matches numerai-tools ``rank`` applied to each era: ``count`` is the number of present
    (non-NaN) values of the column in the era, NaN stay NaN, and values lie in (0, 1).

    Parameters
    ----------
    values : array (n,) or (n, m), float
        Rows sorted by era.
    offsets : array (n_eras + 1,), int
        Era k is rows ``offsets[k]:offsets[k+1]``.
    method : "average" or "first"
        ``average`` gives tied values their mean rank; ``first`` ranks ties in row order.
    backend : "auto", "numpy", "numba" or "cupy"

    Returns
    -------
    array of the shape of ``values``; float32 for float32 input, else float64.

    Examples
    --------
    >>> rank(np.array([3.0, 1.0, 1.0, 5.0, np.nan]), np.array([0, 3, 5]), backend="numpy")
    array([0.83333333, 0.33333333, 0.33333333, 0.5       ,        nan])
    """
    x, one_d = columns(values, "values")
    offsets = era_offsets(offsets, len(x))
    first = rank_method(method)
    return shaped(ranks(x, offsets, first, False, resolve_backend(backend)), one_d, row_dtype(values))


def gaussianize(values, offsets, *, backend: str = "auto") -> np.ndarray:
    """``norm.ppf(rank_average)`` of each column within each era (numerai-tools ``gaussian(tie_kept_rank(·))``).

    Same arguments and result shape/dtype as :func:`rank`; NaN stay NaN, a one-row era gives 0.

    Examples
    --------
    >>> gaussianize(np.array([1.0, 2.0, 7.0]), np.array([0, 3]), backend="numpy").round(4)
    array([-0.9674,  0.    ,  0.9674])
    """
    x, one_d = columns(values, "values")
    offsets = era_offsets(offsets, len(x))
    return shaped(ranks(x, offsets, False, True, resolve_backend(backend)), one_d, row_dtype(values))


def power(values, p: float, *, backend: str = "auto") -> np.ndarray:
    """``sign(x) · |x|^p`` elementwise (numerai-tools ``power``); NaN stay NaN.

    Elementwise, so eras do not matter; ``backend="cupy"`` computes on the GPU, every other
    backend with NumPy.

    Examples
    --------
    >>> power(np.array([-4.0, 0.0, 4.0]), 1.5)
    array([-8.,  0.,  8.])
    """
    x, one_d = columns(values, "values")
    ns = array_namespace(resolve_backend(backend))
    return shaped(ns.to_host(_power(ns.xp, ns.to_device(x), p)), one_d, row_dtype(values))


def ranks(x: np.ndarray, offsets: np.ndarray, first: bool, gaussian: bool, backend: str) -> np.ndarray:
    """Per-era ranks of validated float64 columns ``x (n, m)``, or ``ndtri`` of average ranks
    when ``gaussian``, on a resolved backend; float64 ``(n, m)``."""
    if backend == "numba":
        from . import _numba_scores

        return _numba_scores.rank_eras(x, offsets, first, gaussian)
    ns = array_namespace(backend)
    if gaussian:
        def block(b):
            return gaussian_block(ns, b)
    else:
        def block(b):
            return rank_block(ns, b, first)
    return map_rows(ns, block, [x], offsets, [np.nan], x.shape[1], x.shape[1])
