"""Trained models: loading a MODEL_DIR of any kind, batched predictions over a store, the target ensemble."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eraflow.kernels import rank

from ..data.derived import check_store_has_derived
from ..data.eras import eras_in_range
from ..data.store import EraStore, era_blocks, era_rows, era_subset_offsets, read_codes, row_runs
from ..errors import InputError
from .kind import DEFAULT_KIND, Fitted, meta_kind
from .model_files import check_model_meta

MODEL_JSON = "model.json"
ENSEMBLE = "ensemble"
PREDICT_BATCH_ROWS = 50_000


def prediction_column(target: str) -> str:
    """Name of a target model's prediction column (``pred_target``)."""
    return f"pred_{target}"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model per target plus model.json (kind, features, targets, settings, CV scores…)."""

    path: Path
    meta: dict
    fitted: dict[str, Fitted]

    @property
    def kind(self) -> str:
        return self.meta.get("kind", DEFAULT_KIND)

    @property
    def features(self) -> list[str]:
        return self.meta["features"]

    @property
    def targets(self) -> list[str]:
        """The targets with a fitted model (distinct columns of the store)."""
        return self.meta["targets"]

    @property
    def aliases(self) -> dict[str, str]:
        """Targets identical to a trained one in the store: ``{alias: trained target}``."""
        return self.meta.get("aliases") or {}


def read_meta(path: Path) -> dict:
    """model.json of the model directory ``path``, checked; InputError when it is missing or malformed."""
    try:
        meta = json.loads((path / MODEL_JSON).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is not a model directory (no {MODEL_JSON}); train one with `eraflow train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path / MODEL_JSON} is damaged ({getattr(exc, 'msg', 'not UTF-8 text')})") from None
    return check_model_meta(meta, path / MODEL_JSON)


def load_model(path: str | Path) -> TrainedModel:
    """A model directory: model.json and one fitted model per target, loaded by the kind it names."""
    path = Path(path)
    meta = read_meta(path)
    kind = meta_kind(meta, path / MODEL_JSON)
    return TrainedModel(path, meta, {t: kind.load(path, t, meta) for t in meta["targets"]})


def feature_columns(store: EraStore, features: list[str]) -> np.ndarray:
    """Store column of each model feature; InputError naming the ones the store lacks."""
    index = {f: i for i, f in enumerate(store.feature_names)}
    missing = [f for f in features if f not in index]
    if missing:
        raise InputError(f"the store lacks {len(missing)} of the model's features (e.g. {missing[:3]}); "
                         "ingest with the feature set the model was trained on")
    return np.array([index[f] for f in features], dtype=np.int64)


def predict_rows(fitted: Fitted, store: EraStore, era_index: np.ndarray, cols: np.ndarray,
                 batch_rows: int = PREDICT_BATCH_ROWS) -> np.ndarray:
    """Predictions of one fitted model for the rows of the given eras, in store order, a block of
    whole eras (int8) at a time."""
    era_index = np.asarray(era_index, dtype=np.int64)
    out = np.empty(int(np.diff(store.offsets)[era_index].sum()), dtype=np.float64)
    done = 0
    for group in era_blocks(store.offsets, era_index, batch_rows):
        block = codes_of_runs(store, row_runs(store.offsets, group), cols)
        out[done:done + len(block)] = fitted.predict(block, era_subset_offsets(store.offsets, group))
        done += len(block)
    return out


def codes_of_runs(store: EraStore, runs: list[tuple[int, int]], cols: np.ndarray) -> np.ndarray:
    """The int8 codes of the row runs ``runs``, columns ``cols``: one copy (no concatenation of a single run)."""
    blocks = [read_codes(store, lo, hi, cols) for lo, hi in runs]
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


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
    check_store_has_derived(model.meta.get("derived"), store)
    cols = feature_columns(store, model.features)
    preds = {prediction_column(t): predict_rows(f, store, era_index, cols) for t, f in model.fitted.items()}
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
        from ..evaluation.scoring import check_proportion, neutralize_columns  # polars: only to neutralize

        check_proportion(proportion)  # before the predictions, not after
    era_index = era_positions(store, eras)
    columns = predict_model(model, store, era_index)
    if proportion is not None:
        columns = neutralize_columns(store, columns, era_index, feature_set or model.features, proportion)
    rows = era_rows(store.offsets, era_index)
    labels = np.repeat([store.eras[k] for k in era_index], np.diff(store.offsets)[era_index])
    return PredictionTable(store.ids[rows], labels, columns)
