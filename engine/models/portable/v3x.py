"""The V3X era-block ensemble as a plain predictor: sub-model predictors, PCA matrices, meta weights."""

from __future__ import annotations

import numpy as np

MIDDLE_CODE = 2.0  # a missing feature code is read as the middle bucket before projecting (as the kernels do)


def project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Principal-component scores ``(x − μ)·V`` of feature codes ``x`` (NaN or −1 missing → the middle code 2)."""
    codes = np.asarray(x, dtype=np.float64)
    codes = np.where(np.isnan(codes) | (codes < 0), MIDDLE_CODE, codes)
    return (codes - mean) @ components


class V3X:
    """``intercept + Σ_j w_j · sub_j(x_j)``, ``x_j`` the features or, for a block with PCA, their scores.

    ``subs``: a predictor per block (``predict(x, eras)``, e.g. :class:`~.boosters.LightGBMText`);
    ``projections``: ``(mean, components)`` per block, or None for a block without PCA.
    """

    def __init__(self, subs: list, projections: list, weights: np.ndarray, intercept: float):
        self.subs, self.projections = subs, projections
        self.weights, self.intercept = np.asarray(weights, dtype=np.float64), float(intercept)

    def sub_predictions(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        """Each sub-model's predictions (rows × blocks)."""
        return np.column_stack([sub.predict(x if proj is None else project(x, *proj), eras)
                                for sub, proj in zip(self.subs, self.projections)])

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        return self.intercept + self.sub_predictions(x, eras) @ self.weights
