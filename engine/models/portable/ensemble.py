"""Model directories of any kinds combined per era: the portable form of kind ``ensemble``."""

from __future__ import annotations

import numpy as np


def era_ranks(values: np.ndarray, eras: np.ndarray) -> np.ndarray:
    """``(rank − 0.5) / n`` within each era (ties averaged, NaN kept, ``n`` the present values)."""
    import pandas as pd

    grouped = pd.Series(values).groupby(eras)
    return ((grouped.rank(method="average") - 0.5) / grouped.transform("count")).to_numpy(np.float64)


def rank_mean(columns: list[np.ndarray], eras: np.ndarray, weights: list[float] | None) -> np.ndarray:
    """``Σ_j w_j · rank_j / Σ_j w_j``, ``rank_j`` the per-era rank of column j (equal weights when None)."""
    w = np.ones(len(columns)) if weights is None else np.asarray(weights, dtype=np.float64)
    return np.column_stack([era_ranks(c, eras) for c in columns]) @ w / w.sum()


class RankEnsemble:
    """Members' submitted columns, ranked per era and averaged with ``weights``.

    ``members[j]``: member j's portable predictor per target; ``target_weights[j]``: its own rank
    ensemble weights over those targets (None: equal), used when it has several targets.
    """

    def __init__(self, members: list[list[object]], target_weights: list[list[float] | None], weights: list[float]):
        self.members = members
        self.target_weights = target_weights
        self.weights = weights

    def member_column(self, j: int, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        """Member j's submitted column: its only target's predictions, or its per-era rank ensemble."""
        preds = [model.predict(x, eras) for model in self.members[j]]
        return preds[0] if len(preds) == 1 else rank_mean(preds, eras, self.target_weights[j])

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        columns = [self.member_column(j, x, eras) for j in range(len(self.members))]
        return rank_mean(columns, eras, self.weights)
