"""Trained models: loading a MODEL_DIR, batched predictions over a store, the target ensemble."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from eraflow.kernels import rank

from ..data.eras import eras_in_range
from ..data.store import EraStore, era_rows, era_subset_offsets, int8_to_float32, row_runs
from ..errors import InputError, first_line
from ..evaluation.scoring import check_proportion, neutralize_columns
from ..threads import configured_threads
from .model_files import check_model_meta, check_model_text, damaged_file

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
        """The targets with a booster (distinct columns of the store)."""
        return self.meta["targets"]

    @property
    def aliases(self) -> dict[str, str]:
        """Targets identical to a trained one in the store: ``{alias: trained target}``."""
        return self.meta.get("aliases") or {}


@contextmanager
def lightgbm_stderr_closed() -> Iterator[None]:
    """Close stderr to LightGBM's C++ code inside the block: it prints fatal errors before raising
    them, and the error becomes eraflow's own one-line message."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def lightgbm_failures(what: str) -> Iterator[None]:
    """LightGBM errors as one-line InputErrors about ``what``, its own stderr silenced."""
    try:
        with lightgbm_stderr_closed():
            yield
    except lgb.basic.LightGBMError as exc:
        raise InputError(f"LightGBM failed on {what}: {first_line(exc)}") from None


def predict_params() -> dict:
    """Keyword parameters of ``Booster.predict``: ``num_threads`` when ``--threads`` is set."""
    n = configured_threads()
    return {"num_threads": n} if n > 0 else {}


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / MODEL_JSON).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is not a model directory (no {MODEL_JSON}); train one with `eraflow train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path / MODEL_JSON} is damaged ({getattr(exc, 'msg', 'not UTF-8 text')})") from None
    return check_model_meta(meta, path / MODEL_JSON)


def load_booster(file: Path, features: list[str]) -> lgb.Booster:
    """The booster in ``file``, checked first (:func:`check_model_text`) so LightGBM never reads a damaged file."""
    try:
        check_model_text(file.read_bytes(), file, features)
    except FileNotFoundError:
        raise InputError(f"{file.parent} is incomplete: {file.name} is missing") from None
    try:
        with lightgbm_failures(str(file)):
            return lgb.Booster(model_file=str(file))
    except ValueError as exc:  # the Python package's own parsing of the parameters (JSON)
        raise damaged_file(file, str(exc)) from None


def load_model(path: str | Path) -> TrainedModel:
    """A model directory: model.json and one booster per target, each checked before LightGBM loads it."""
    path = Path(path)
    meta = _read_meta(path)
    boosters = {t: load_booster(path / model_file(t), meta["features"]) for t in meta["targets"]}
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
    kwargs = predict_params()
    for lo, hi in runs:
        for start in range(lo, hi, batch_rows):
            block = int8_to_float32(store.features[start:min(start + batch_rows, hi)][:, cols])
            with lightgbm_failures("the model's predictions"):
                out[done:done + len(block)] = booster.predict(block, **kwargs)
            done += len(block)
    return out


def rank_ensemble(columns: np.ndarray, offsets: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-era rank average: ``Σ_j w_j · rank(x_j) / Σ_j w_j`` over columns (n × m) → (n,)."""
    ranks = rank(columns, offsets)
    w = np.ones(columns.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    return ranks @ w / w.sum()


def with_aliases(preds: dict[str, np.ndarray], aliases: dict[str, str]) -> dict[str, np.ndarray]:
    """``preds`` with ``pred_<alias>`` (the trained target's values) after each trained target's column."""
    out = {}
    for name, values in preds.items():
        out[name] = values
        out.update({prediction_column(a): values for a, t in aliases.items() if prediction_column(t) == name})
    return out


def predict_model(model: TrainedModel, store: EraStore, era_index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``pred_<target>`` per target model (plus ``ensemble`` when several) for the given eras, in store order.

    A target identical to a trained one (``model.aliases``) gets a copy of its column and no
    weight of its own in the ensemble.
    """
    era_index = np.arange(store.n_eras) if era_index is None else np.asarray(era_index)
    cols = feature_columns(store, model.features)
    preds = {prediction_column(t): predict_rows(b, store, era_index, cols) for t, b in model.boosters.items()}
    if len(model.targets) > 1:
        stacked = np.column_stack(list(preds.values()))
        offsets = era_subset_offsets(store.offsets, era_index)
        preds[ENSEMBLE] = rank_ensemble(stacked, offsets, model.meta.get("ensemble_weights"))
    return with_aliases(preds, model.aliases)


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
    """Predict the eras in range ``eras`` (default all); optionally neutralize each column per era
    (``proportion`` in [0, 1])."""
    if proportion is not None:
        check_proportion(proportion)  # before the predictions, not after
    era_index = era_positions(store, eras)
    columns = predict_model(model, store, era_index)
    if proportion is not None:
        columns = neutralize_columns(store, columns, era_index, feature_set or model.features, proportion)
    rows = era_rows(store.offsets, era_index)
    labels = np.repeat([store.eras[k] for k in era_index], np.diff(store.offsets)[era_index])
    return PredictionTable(store.ids[rows], labels, columns)
