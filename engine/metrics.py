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
    such rows use every row once. Returns (n_eras,).
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    out = np.full(len(offsets) - 1, np.nan)
    kept = np.where(np.isnan(target), np.nan, pred)
    p = power(gaussianize(kept, offsets), 1.5)
    for k in range(len(offsets) - 1):
        lo, hi = offsets[k], offsets[k + 1]
        t = target[lo:hi]
        t = power(t - np.nanmean(t), 1.5) if np.isfinite(t).any() else t
        rows = np.flatnonzero(np.isfinite(p[lo:hi]) & np.isfinite(t))
        if rows.size < 2:
            continue
        order = rows[np.argsort(p[lo:hi][rows], kind="stable")]
        chosen = order if rows.size <= 2 * top_bottom else np.concatenate([order[:top_bottom], order[-top_bottom:]])
        a, b = p[lo:hi][chosen], t[chosen]
        if a.std() > 0 and b.std() > 0:
            out[k] = np.corrcoef(a, b)[0, 1]
    return out
