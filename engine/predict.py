"""Trained models: loading a MODEL_DIR, batched predictions over a store, the target ensemble."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
from eraflow.kernels import rank

from .eras import eras_in_range
from .errors import InputError
from .scoring import neutralize_columns
from .store import EraStore, era_rows, era_subset_offsets, int8_to_float32, row_runs

MODEL_JSON = "model.json"
ENSEMBLE = "ensemble"
PREDICT_BATCH_ROWS = 50_000


def model_file(target: str) -> str:
    return f"model_{target}.txt"


def prediction_column(target: str) -> str:
    """Name of a target model's prediction column (``pred_target``)."""
    return f"pred_{target}"


@dataclass(frozen=True)
class TrainedModel:
    """One booster per target plus model.json (features, targets, params, CV scores…)."""

    path: Path
    meta: dict
    boosters: dict[str, lgb.Booster]

    @property
    def features(self) -> list[str]:
        return self.meta["features"]

    @property
    def targets(self) -> list[str]:
        return self.meta["targets"]


def load_model(path: str | Path) -> TrainedModel:
    path = Path(path)
    try:
        meta = json.loads((path / MODEL_JSON).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is not a model directory (no {MODEL_JSON}); train one with `eraflow train`") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path / MODEL_JSON} is damaged ({exc.msg})") from None
    boosters = {}
    for target in meta["targets"]:
        file = path / model_file(target)
        if not file.exists():
            raise InputError(f"{path} is incomplete: {file.name} is missing")
        boosters[target] = lgb.Booster(model_file=str(file))
    return TrainedModel(path, meta, boosters)


def feature_columns(store: EraStore, features: list[str]) -> np.ndarray:
    """Store column of each model feature; InputError naming the ones the store lacks."""
    index = {f: i for i, f in enumerate(store.feature_names)}
    missing = [f for f in features if f not in index]
    if missing:
        raise InputError(f"the store lacks {len(missing)} of the model's features (e.g. {missing[:3]}); "
                         "ingest with the feature set the model was trained on")
    return np.array([index[f] for f in features], dtype=np.int64)


def predict_rows(booster: lgb.Booster, store: EraStore, era_index: np.ndarray, cols: np.ndarray,
                 batch_rows: int = PREDICT_BATCH_ROWS) -> np.ndarray:
    """Predictions for the rows of the given eras, in store order; one float32 block at a time."""
    runs = row_runs(store.offsets, era_index)
    out = np.empty(sum(hi - lo for lo, hi in runs), dtype=np.float64)
    done = 0
    for lo, hi in runs:
        for start in range(lo, hi, batch_rows):
            block = int8_to_float32(store.features[start:min(start + batch_rows, hi)][:, cols])
            out[done:done + len(block)] = booster.predict(block)
            done += len(block)
    return out


def rank_ensemble(columns: np.ndarray, offsets: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-era rank average: ``Σ_j w_j · rank(x_j) / Σ_j w_j`` over columns (n × m) → (n,)."""
    ranks = rank(columns, offsets)
    w = np.ones(columns.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    return ranks @ w / w.sum()


def predict_model(model: TrainedModel, store: EraStore, era_index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``pred_<target>`` per target model (plus ``ensemble`` when several) for the given eras, in store order."""
    era_index = np.arange(store.n_eras) if era_index is None else np.asarray(era_index)
    cols = feature_columns(store, model.features)
    preds = {prediction_column(t): predict_rows(b, store, era_index, cols) for t, b in model.boosters.items()}
    if len(model.targets) > 1:
        stacked = np.column_stack(list(preds.values()))
        offsets = era_subset_offsets(store.offsets, era_index)
        preds[ENSEMBLE] = rank_ensemble(stacked, offsets, model.meta.get("ensemble_weights"))
    return preds


def era_positions(store: EraStore, eras: str | None) -> np.ndarray:
    """Indices of the store eras in range ``eras`` (all when None)."""
    if eras is None:
        return np.arange(store.n_eras)
    return np.array([store.eras.index(e) for e in eras_in_range(store.eras, eras)], dtype=np.int64)


@dataclass(frozen=True)
class PredictionTable:
    """Predictions of some eras in store order: ``ids``, ``eras`` (per row) and named columns."""

    ids: np.ndarray
    eras: np.ndarray
    columns: dict[str, np.ndarray]


def predict_table(model: TrainedModel, store: EraStore, eras: str | None = None, proportion: float | None = None,
                  feature_set: str | None = None) -> PredictionTable:
    """Predict the eras in range ``eras`` (default all); optionally neutralize each column per era."""
    era_index = era_positions(store, eras)
    columns = predict_model(model, store, era_index)
    if proportion is not None:
        columns = neutralize_columns(store, columns, era_index, feature_set or model.features, proportion)
    rows = era_rows(store.offsets, era_index)
    labels = np.repeat([store.eras[k] for k in era_index], np.diff(store.offsets)[era_index])
    return PredictionTable(store.ids[rows], labels, columns)
