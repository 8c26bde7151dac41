"""Per-era kernels on ``(values, offsets)``: rows sorted by era, era k = rows ``offsets[k]:offsets[k+1]``.

Each operation takes ``backend="auto" | "numpy" | "numba" | "cupy"`` (see :mod:`.backend`) and
matches numerai-tools 0.7.2 applied era by era; NumPy arrays in, NumPy arrays out. The compiled kernels
(``_numba_*``, so numba) and SciPy load on a kernel's first call: importing this package costs neither
(0.5 s and ~70 MiB of every process otherwise, e.g. `eraflow predict`, which calls none).
"""

from .backend import BACKENDS, gpu_available, resolve_backend
from .churn_scores import churn, churn_penalty, neutral_churn, turnover
from .correlation import correlation_contribution, numerai_corr, pearson, spearman
from .neutralization import (
                             FeatureExposure,
                             NeutralScores,
                             feature_exposure,
                             feature_neutral_corr,
                             neutral_contribution,
                             neutral_correlation,
                             neutral_scores,
                             neutralize,
)
from .portfolio import alpha, meta_portfolio_contribution
from .ranking import gaussianize, power, rank
from .summary import EraSummary, era_summary

__all__ = [
    "BACKENDS", "EraSummary", "FeatureExposure", "NeutralScores", "alpha", "churn", "churn_penalty",
    "correlation_contribution", "era_summary", "feature_exposure", "feature_neutral_corr", "gaussianize",
    "gpu_available", "meta_portfolio_contribution", "neutral_churn", "neutral_contribution", "neutral_correlation",
    "neutral_scores", "neutralize", "numerai_corr", "pearson", "power", "rank", "resolve_backend", "spearman",
    "turnover",
]
