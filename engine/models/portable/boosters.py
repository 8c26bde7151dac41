"""Gradient-boosted trees kept as their libraries' own model text."""

from __future__ import annotations

import numpy as np


class LightGBMText:
    """A LightGBM booster kept as its model text (missing values NaN, as in training)."""

    def __init__(self, text: str):
        self.text = text

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        import lightgbm as lgb

        return lgb.Booster(model_str=self.text).predict(x.astype(np.float32))


class XGBoostJSON:
    """An XGBoost booster kept as its JSON model (bytes, in the form XGBoost 3.0 reads; missing
    values NaN, as in training)."""

    def __init__(self, model: bytes):
        self.model = bytes(model)

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(self.model))
        return booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float32)).astype(np.float64)
