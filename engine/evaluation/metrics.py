"""Summary metrics of per-era scores, named as numerblox names them.

Conventions (per-era scores ``c_e`` in era order; NaN eras are left out):
- ``apy``: per-era corr compounded over 52 weekly eras, ``(Π_e (1 + c_e))^(52 / n) − 1``;
- ``max_drawdown``: max over eras of ``cummax(cumsum c) − cumsum c`` (as ``era_summary``);
- ``calmar_ratio``: ``apy / max_drawdown`` (NaN without a drawdown);
- ``autocorrelation``: lag-1 Pearson correlation of the series with itself;
- ``smart_sharpe``: ``mean / (std · p)``, ``p = √(1 + 2 Σ_{i=1}^{n−1} (n − i)/n · ρ^i)`` with ρ the
  lag-1 autocorrelation (sharpe penalised for serial correlation);
- ``hit_rate``: share of eras with a positive score.
"""

from __future__ import annotations

import numpy as np

from eraflow.kernels import era_summary, gaussianize, power

WEEKS_PER_YEAR = 52
TOP_BOTTOM = 200  # rows kept at each end of the ranking for TB200


def _present(per_era: np.ndarray) -> np.ndarray:
    values = np.asarray(per_era, dtype=np.float64)
    return values[~np.isnan(values)]


def apy(per_era: np.ndarray) -> float:
    """``(Π (1 + c_e))^(52 / n) − 1``."""
    c = _present(per_era)
    return float(np.prod(1 + c) ** (WEEKS_PER_YEAR / c.size) - 1) if c.size else np.nan


def autocorrelation(per_era: np.ndarray) -> float:
    """Lag-1 Pearson autocorrelation; NaN below 3 eras or for a constant series."""
    c = _present(per_era)
    if c.size < 3 or c[1:].std() == 0 or c[:-1].std() == 0:
        return np.nan
    return float(np.corrcoef(c[:-1], c[1:])[0, 1])


def smart_sharpe(per_era: np.ndarray) -> float:
    """``mean / (std · √(1 + 2 Σ_{i=1}^{n−1} (n − i)/n · ρ^i))``."""
    c = _present(per_era)
    rho = autocorrelation(c)
    if np.isnan(rho) or c.std() == 0:
        return np.nan
    n = c.size
    i = np.arange(1, n)
    penalty = np.sqrt(1 + 2 * np.sum((n - i) / n * rho ** i))
    return float(c.mean() / (c.std() * penalty))


def hit_rate(per_era: np.ndarray) -> float:
    c = _present(per_era)
    return float((c > 0).mean()) if c.size else np.nan


def score_summary(per_era: np.ndarray, prefix: str = "") -> dict:
    """mean, std, sharpe, max_drawdown, apy, calmar_ratio, autocorrelation, smart_sharpe, hit_rate, eras."""
    s = era_summary(np.asarray(per_era, dtype=np.float64))
    a = apy(per_era)
    out = {"mean": s.mean, "std": s.std, "sharpe": s.sharpe, "max_drawdown": s.max_drawdown, "apy": a,
           "calmar_ratio": a / s.max_drawdown if s.max_drawdown > 0 else np.nan,
           "autocorrelation": autocorrelation(per_era), "smart_sharpe": smart_sharpe(per_era),
           "hit_rate": hit_rate(per_era), "eras": s.n_eras}
    return {f"{prefix}{k}": v for k, v in out.items()}


def top_bottom_corr(pred: np.ndarray, target: np.ndarray, offsets: np.ndarray, top_bottom: int = TOP_BOTTOM) -> np.ndarray:
    """numerai-tools ``numerai_corr(..., top_bottom=N)`` per era: the transformed predictions
    ``power(gauss(rank(pred)), 1.5)`` and target ``power(t − mean t, 1.5)`` over the rows with
    both present, then Pearson on the N highest and N lowest predictions. Eras with at most 2N
    such rows use every row once. ``pred`` (n,) or (n, m); returns (n_eras,) or (n_eras, m).
    """
    pred = np.asarray(pred, dtype=np.float64)
    x = pred[:, None] if pred.ndim == 1 else pred
    target = np.asarray(target, dtype=np.float64)
    out = np.full((len(offsets) - 1, x.shape[1]), np.nan)
    p = power(gaussianize(np.where(np.isnan(target)[:, None], np.nan, x), offsets), 1.5)
    for k in range(len(offsets) - 1):
        lo, hi = offsets[k], offsets[k + 1]
        t = target[lo:hi]
        if not np.isfinite(t).any():
            continue
        t = power(t - np.nanmean(t), 1.5)
        block = p[lo:hi][np.isfinite(t)]
        if np.isfinite(block).all():  # the same rows for every column: all columns at once
            out[k] = _tail_corr(block, t[np.isfinite(t)], top_bottom)
            continue
        for j in range(x.shape[1]):
            rows = np.isfinite(p[lo:hi, j]) & np.isfinite(t)
            out[k, j] = _tail_corr(p[lo:hi, j][rows, None], t[rows], top_bottom)[0]
    return out[:, 0] if pred.ndim == 1 else out


def _tail_corr(p: np.ndarray, t: np.ndarray, top_bottom: int) -> np.ndarray:
    """Per column of ``p (n, m)``: Pearson with ``t (n,)`` over the rows of its ``top_bottom``
    lowest and highest values (every row when n ≤ 2·top_bottom); NaN below 2 rows or when constant."""
    if len(p) < 2:
        return np.full(p.shape[1], np.nan)
    if len(p) > 2 * top_bottom:
        order = np.argsort(p, axis=0, kind="stable")
        chosen = np.concatenate([order[:top_bottom], order[-top_bottom:]])
        p, t = np.take_along_axis(p, chosen, axis=0), t[chosen]
    else:
        t = np.broadcast_to(t[:, None], p.shape)
    pc, tc = p - p.mean(axis=0), t - t.mean(axis=0)
    p_ss, t_ss = (pc * pc).sum(axis=0), (tc * tc).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((p_ss > 0) & (t_ss > 0), (pc * tc).sum(axis=0) / np.sqrt(p_ss * t_ss), np.nan)
