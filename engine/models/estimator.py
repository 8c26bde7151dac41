"""``EraLGBMRegressor``: a scikit-learn estimator over LightGBM that knows about eras.

``fit`` takes an EraStore (trained in row blocks from the int8 memmap, like ``eraflow train``)
or arrays ``X, y`` with optional ``eras``; with ``valid_eras=k`` the newest k eras are held out
and training stops early on their mean per-era numerai_corr.

Import it as ``from eraflow.engine import EraLGBMRegressor`` (loaded on first use, so importing
``eraflow.engine`` alone does not import LightGBM) or ``from eraflow.engine.models.estimator import
EraLGBMRegressor``.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from ..data.store import EraStore, int8_to_float32
from ..errors import InputError
from .kind import FitData
from .lgb_errors import lightgbm_errors, lightgbm_failures, predict_params
from .lgbm import KIND as LGBM
from .lgbm import LightGBMModel, era_corr_metric
from .params import BASE, with_threads
from .predict import predict_rows


class EraLGBMRegressor(RegressorMixin, BaseEstimator):
    """LightGBM regression with era-aware early stopping. Parameters are LightGBM's."""

    def __init__(self, n_estimators: int = 2000, learning_rate: float = 0.01, max_depth: int = 5,
                 num_leaves: int = 31, colsample_bytree: float = 0.1, min_data_in_leaf: int = 20,
                 valid_eras: int = 0, early_stopping_rounds: int = 100, target: str = "target",
                 feature_set: str | None = None, device: str = "cpu", seed: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.num_leaves = num_leaves
        self.colsample_bytree = colsample_bytree
        self.min_data_in_leaf = min_data_in_leaf
        self.valid_eras = valid_eras
        self.early_stopping_rounds = early_stopping_rounds
        self.target = target
        self.feature_set = feature_set
        self.device = device
        self.seed = seed

    def _lgb_params(self) -> dict:
        return with_threads({**BASE, "learning_rate": self.learning_rate, "max_depth": self.max_depth,
                             "num_leaves": self.num_leaves, "colsample_bytree": self.colsample_bytree,
                             "min_data_in_leaf": self.min_data_in_leaf, "device_type": self.device,
                             "seed": self.seed})

    def fit(self, X, y=None, eras=None):
        """Fit on an EraStore (``y``/``eras`` come from it) or on arrays X (n × k), y (n,), eras (n,)."""
        if isinstance(X, EraStore):
            return self._fit_store(X)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (len(X),):
            raise InputError(f"y has shape {y.shape}; expected ({len(X)},)")
        train, valid = np.arange(len(X)), None
        if self.valid_eras:
            if eras is None or len(eras) != len(X):
                raise InputError("valid_eras needs eras (one label per row of X)")
            labels, codes = np.unique(np.asarray(eras), return_inverse=True)
            held = codes >= len(labels) - self.valid_eras
            order = np.flatnonzero(held)[np.argsort(codes[held], kind="stable")]
            train, valid = np.flatnonzero(~held), order
        with lightgbm_errors():
            dtrain = lgb.Dataset(X[train], y[train], params=with_threads({"verbosity": -1}))
            kwargs = {}
            if valid is not None:
                offsets = np.concatenate([[0], np.cumsum(np.bincount(codes[valid])[len(labels) - self.valid_eras:])])
                kwargs = {"valid_sets": [lgb.Dataset(X[valid], y[valid], reference=dtrain)],
                          "feval": era_corr_metric(y[valid], offsets),
                          "callbacks": [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]}
            self.booster_ = lgb.train(self._lgb_params(), dtrain, self.n_estimators, **kwargs)
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_store(self, store: EraStore):
        view = store.select(feature_set=self.feature_set)
        self.cols_ = np.arange(len(store.feature_names)) if view.cols is None else view.cols
        eras = np.arange(store.n_eras)
        train, valid = (eras[:-self.valid_eras], eras[-self.valid_eras:]) if self.valid_eras else (eras, None)
        data = FitData(store, train, self.cols_, self.target, valid, self.device, self.seed,
                       early_stopping=self.early_stopping_rounds)
        self.booster_ = LGBM.fit(data, {**self._lgb_params(), "n_estimators": self.n_estimators}, None, None).booster
        self.n_features_in_ = len(self.cols_)
        return self

    def predict(self, X):
        """Predictions for an EraStore (every row, store order) or an array (int8 codes or floats)."""
        if isinstance(X, EraStore):
            return predict_rows(LightGBMModel(self.booster_), X, np.arange(X.n_eras), self.cols_)
        X = np.asarray(X)
        with lightgbm_failures("the estimator's predictions"):
            return self.booster_.predict(int8_to_float32(X) if X.dtype == np.int8 else X, **predict_params())
