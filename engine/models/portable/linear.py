"""Linear models on feature codes as plain coefficients (NumPy only)."""

from __future__ import annotations

import numpy as np

MISSING_CODE_VALUE = 2.0  # a missing code (NaN) counts as the middle bucket, as in training


class LinearCodes:
    """``x · coef + intercept`` with NaN codes read as 2 (kind ``linear``)."""

    def __init__(self, coef: np.ndarray, intercept: float):
        self.coef = np.asarray(coef, np.float64)
        self.intercept = float(intercept)

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        codes = np.where(np.isnan(x), MISSING_CODE_VALUE, np.asarray(x, np.float64))
        return codes @ self.coef + self.intercept


class LogisticCodes(LinearCodes):
    """The probability ``σ(x · coef + intercept)`` (NaN codes read as 2; kind ``logistic``)."""

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        return sigmoid(super().predict(x, eras))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^−z)`` without overflow: ``(1 + tanh(z/2)) / 2``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))
