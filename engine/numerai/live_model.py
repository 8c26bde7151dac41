"""The model Numerai runs for you: ``predict(live_features, live_benchmark_models) -> DataFrame``.

Numerai's model upload calls a cloudpickled function in an environment with numpy, pandas and
the model libraries but not eraflow, so this module imports nothing else and is pickled by value
(:func:`eraflow.engine.numerai.export.export_model`), with the model's portable predictors
(:mod:`eraflow.engine.models.portable`). It repeats what ``eraflow live`` does, in pandas/NumPy
per era:

0. feature values as codes 0..4, as ``eraflow ingest`` reads them: float columns whose values are
   all ≤ 1 are quarters (0, .25, … 1, older Numerai files) and are scaled ×4; NaN is missing; any
   other value is a ValueError naming the column;
1. each target's portable predictor on the features (codes, missing values NaN);
2. with several targets, the rank average ``Σ_j w_j · rank(x_j) / Σ_j w_j``;
3. optionally ``x − proportion · F1 β``, ``β = lstsq([F, 1], x, rcond=1e-6)`` with missing
   feature values read as 2 (numerai-tools' neutralize, eraflow's convention for missing codes);
4. ``(rank − 0.5) / n`` in (0, 1), ties averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIDDLE_CODE = 2.0
MAX_CODE = 4.0
QUARTER_SCALE = 4.0  # quarters 0, .25, … 1 × 4 = codes 0..4
LSTSQ_RCOND = 1e-6


def feature_codes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``frame[columns]`` as float64 codes 0..4 with NaN for missing (rows × columns).

    Float columns are quarters when every value in them is ≤ 1 (ingest's rule) and are scaled ×4.
    A value that is not a code (after scaling) or NaN raises ValueError naming the column.
    """
    values = frame[columns]
    codes = values.to_numpy(np.float64, na_value=np.nan)
    floats = np.array([pd.api.types.is_float_dtype(t) for t in values.dtypes], dtype=bool)
    quarters = codes[:, floats]
    top = np.fmax.reduce(quarters, axis=None) if quarters.size else np.nan  # NaN ignored, no warning
    scale = QUARTER_SCALE if top <= 1 else 1.0
    if scale != 1.0:
        codes[:, floats] *= scale
    present = ~np.isnan(codes)
    bad = present & ((codes < 0) | (codes > MAX_CODE) | (codes != np.floor(np.where(present, codes, 0))))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = float(codes[row, col] / (scale if floats[col] else 1.0))
        raise ValueError(f"feature {columns[col]} has value {value:g} (row {row}); features must be integers "
                         "0..4, float quarters 0, 0.25, …, 1, or missing")
    return codes


def era_ranks(values: pd.Series, eras: pd.Series) -> pd.Series:
    """``(rank − 0.5) / n`` within each era, ties averaged."""
    grouped = values.groupby(eras.to_numpy())
    return (grouped.rank(method="average") - 0.5) / grouped.transform("count")


def neutralized(x: np.ndarray, features: np.ndarray, proportion: float) -> np.ndarray:
    """``x − proportion · F1 lstsq(F1, x)`` for one era, ``F1 = [F, 1]``."""
    f1 = np.column_stack([np.where(np.isnan(features), MIDDLE_CODE, features), np.ones(len(x))])
    beta = np.linalg.lstsq(f1, x, rcond=LSTSQ_RCOND)[0]
    return x - proportion * (f1 @ beta)


class LivePredictor:
    """A trained eraflow model with its post-processing, callable as Numerai's ``predict``."""

    def __init__(self, models: dict, features: list[str], weights: list[float] | None, column: str,
                 proportion: float | None, neutral_features: list[str]):
        self.models = models  # target → portable predictor: predict(codes, era codes) → values
        self.features = features
        self.weights = weights
        self.column = column
        self.proportion = proportion
        self.neutral_features = neutral_features

    def __call__(self, live_features: pd.DataFrame, live_benchmark_models: pd.DataFrame | None = None) -> pd.DataFrame:
        frame = live_features.set_index("id") if "id" in live_features.columns else live_features
        eras = frame["era"] if "era" in frame.columns else pd.Series("live", index=frame.index)
        columns = list(dict.fromkeys(self.features + (self.neutral_features if self.proportion is not None else [])))
        codes = feature_codes(frame, columns)
        position = {c: i for i, c in enumerate(columns)}
        x = codes[:, [position[c] for c in self.features]]
        era_codes = pd.factorize(eras.to_numpy())[0]
        outputs = {f"pred_{t}": pd.Series(model.predict(x, era_codes), index=frame.index)
                   for t, model in self.models.items()}
        if len(outputs) > 1:
            weights = np.ones(len(outputs)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
            ranked = np.column_stack([era_ranks(s, eras) for s in outputs.values()])
            outputs["ensemble"] = pd.Series(ranked @ weights / weights.sum(), index=frame.index)
        chosen = outputs[self.column]
        if self.proportion is not None:
            f = codes[:, [position[c] for c in self.neutral_features]]
            values = chosen.to_numpy(np.float64).copy()
            for era in pd.unique(eras):
                rows = (eras == era).to_numpy()
                values[rows] = neutralized(values[rows], f[rows], self.proportion)
            chosen = pd.Series(values, index=frame.index)
        return era_ranks(chosen, eras).rename("prediction").to_frame()
