"""Summaries of per-era scores: mean, std, sharpe, max drawdown."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import columns


@dataclass(frozen=True)
class EraSummary:
    """Summary of per-era scores; each field is a float (1-D input) or an array (m,) per column."""

    mean: float | np.ndarray
    std: float | np.ndarray  # ddof = 0, as numerai-tools' sharpe_ratio
    sharpe: float | np.ndarray  # mean / std; NaN when std is 0
    max_drawdown: float | np.ndarray  # max over eras of cummax(cumsum) − cumsum
    n_eras: int | np.ndarray  # eras with a score (NaN eras are left out)


def era_summary(per_era) -> EraSummary:
    """Summarize per-era scores, in era order, ignoring eras whose score is NaN.

    ``sharpe = mean / std`` (numerai-tools ``sharpe_ratio``, population std). The drawdown
    is measured on the cumulative sum of the scores from its running peak; the start (0)
    does not count as a peak, so a run of losing first eras is a drawdown only from the
    first era's score. NaN eras are dropped, not counted as 0. With no scored era every
    statistic is NaN; with one, std is 0 and sharpe NaN.

    This is plain NumPy on a few hundred numbers, so it takes no ``backend``.

    Parameters
    ----------
    per_era : array (n_eras,) or (n_eras, m), float

    Returns
    -------
    EraSummary

    Examples
    --------
    >>> s = era_summary(np.array([0.02, -0.01, np.nan, -0.03, 0.04]))
    >>> round(s.max_drawdown, 6), s.n_eras
    (0.04, 4)
    """
    scores, one_d = columns(per_era, "per_era")
    table = np.array([_summary(scores[:, j]) for j in range(scores.shape[1])], dtype=np.float64).reshape(-1, 5)
    mean, std, sharpe, drawdown = table[:, :4].T
    n_eras = table[:, 4].astype(np.int64)
    if one_d:
        return EraSummary(float(mean[0]), float(std[0]), float(sharpe[0]), float(drawdown[0]), int(n_eras[0]))
    return EraSummary(mean, std, sharpe, drawdown, n_eras)


def _summary(scores: np.ndarray) -> tuple[float, float, float, float, int]:
    """(mean, std, sharpe, max_drawdown, n) of one column of per-era scores."""
    scores = scores[~np.isnan(scores)]
    if scores.size == 0:
        return np.nan, np.nan, np.nan, np.nan, 0
    mean, std = scores.mean(), scores.std()
    cumulative = np.cumsum(scores)
    drawdown = (np.maximum.accumulate(cumulative) - cumulative).max()
    return mean, std, mean / std if std > 0 else np.nan, drawdown, scores.size
