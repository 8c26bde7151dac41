"""Per-era kernels on ``(values, offsets)``: rows sorted by era, era k = rows ``offsets[k]:offsets[k+1]``.

Each operation takes ``backend="auto" | "numpy" | "numba" | "cupy"`` (see :mod:`.backend`) and
matches numerai-tools 0.7.2 applied era by era; NumPy arrays in, NumPy arrays out.
"""

from .backend import BACKENDS, gpu_available, resolve_backend
from .correlation import correlation_contribution, numerai_corr, pearson, spearman
from .neutralization import (
                             FeatureExposure,
                             NeutralScores,
                             feature_exposure,
                             feature_neutral_corr,
                             neutral_correlation,
                             neutral_scores,
                             neutralize,
)
from .ranking import gaussianize, power, rank
from .summary import EraSummary, era_summary

__all__ = [
    "BACKENDS", "EraSummary", "FeatureExposure", "NeutralScores", "correlation_contribution", "era_summary",
    "feature_exposure", "feature_neutral_corr", "gaussianize", "gpu_available", "neutral_correlation",
    "neutral_scores", "neutralize", "numerai_corr", "pearson", "power", "rank", "resolve_backend", "spearman",
]
