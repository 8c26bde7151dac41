"""Live predictions: a model's post-processing, and the submission file for Numerai's live era.

A model directory's ``model.json`` may hold ``"postprocess"``: which output is submitted
(``ensemble`` or ``pred_<target>``), and an optional per-era neutralization (proportion and the
features). It is kept apart from the boosters, so changing it never means retraining.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from eraflow.kernels import rank

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from .errors import InputError
from .ingest import IngestOptions, ingest_files
from .predict import (ENSEMBLE, MODEL_JSON, PredictionTable, TrainedModel, era_positions, load_model, predict_table,
                      prediction_column)
from .scoring import neutralize_columns
from .store import EraStore, open_store
from .submission import validate_submission

SUBMITTED = "prediction"  # the post-processed column; Numerai's submission column name


@dataclass(frozen=True)
class Postprocess:
    """How raw model outputs become the submitted column."""

    column: str  # "ensemble" or "pred_<target>"
    proportion: float | None = None  # per-era neutralization; None: none
    features: tuple[str, ...] | None = None  # neutralize against these [default: the model's features]


def model_outputs(model: TrainedModel) -> list[str]:
    """The columns a model predicts: ``pred_<target>`` per target, plus ``ensemble`` when several."""
    return [prediction_column(t) for t in model.targets] + ([ENSEMBLE] if len(model.targets) > 1 else [])


def model_postprocess(model: TrainedModel) -> Postprocess:
    """The model's post-processing; by default the ensemble (or the only target), not neutralized."""
    saved = model.meta.get("postprocess")
    if not saved:
        return Postprocess(model_outputs(model)[-1])
    features = saved.get("features")
    return Postprocess(saved["column"], saved.get("proportion"), tuple(features) if features else None)


def set_postprocess(model_dir: str | Path, post: Postprocess) -> Postprocess:
    """Check ``post`` against the model and record it in model.json (atomically)."""
    model = load_model(model_dir)
    if post.column not in model_outputs(model):
        raise InputError(f"the model has no output {post.column!r}; it has {', '.join(model_outputs(model))}")
    if post.proportion is not None and not 0 <= post.proportion <= 1:
        raise InputError(f"neutralization proportion must lie in [0, 1], got {post.proportion}")
    meta = dict(model.meta, postprocess=asdict(post))
    atomic_write_json(Path(model_dir) / MODEL_JSON, meta)
    return post


def predict_submitted(model: TrainedModel, store: EraStore, eras: str | None = None) -> PredictionTable:
    """The model's outputs for the eras plus ``prediction``: the post-processed column, not yet ranked."""
    post = model_postprocess(model)
    table = predict_table(model, store, eras)
    value = table.columns[post.column]
    if post.proportion is not None:
        value = neutralize_columns(store, {SUBMITTED: value}, era_positions(store, eras),
                                   list(post.features or model.features), post.proportion)[SUBMITTED]
    return PredictionTable(table.ids, table.eras, {**table.columns, SUBMITTED: value})


def live_predictions(model: TrainedModel, live_path: str | Path) -> pd.DataFrame:
    """``id`` and ``prediction`` for every row of a live parquet file, ready to submit.

    live.parquet is ingested into a temporary store (only the features needed), the model
    predicts, its post-processing applies (neutralization per era), and the submitted column
    is ranked per era to ``(rank − 0.5) / n`` in (0, 1); the result passes Numerai's checks.
    """
    post = model_postprocess(model)
    features = list(dict.fromkeys(model.features + list(post.features or ())))
    with tempfile.TemporaryDirectory(prefix="eraflow-live-") as tmp:
        store_dir = Path(tmp) / "live"
        ingest_files([live_path], store_dir, IngestOptions(features=features, targets=()))
        store = open_store(store_dir)
        table = predict_submitted(model, store)
        offsets = store.offsets.astype(np.int64)
    frame = pd.DataFrame({"id": table.ids, "prediction": rank(table.columns[SUBMITTED], offsets)})
    validate_submission(frame, table.ids)
    return frame


def write_submission(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``id, prediction`` atomically: CSV for a ``.csv`` path, else parquet."""
    path = Path(path)
    if path.suffix == ".csv":
        atomic_write_bytes(path, frame.to_csv(index=False).encode())
    else:
        atomic_write_parquet(path, pa.Table.from_pandas(frame, preserve_index=False))


def postprocess_summary(post: Postprocess) -> str:
    """One line describing the post-processing."""
    neutral = "" if post.proportion is None else f", neutralized {post.proportion:g} per era"
    return f"{post.column}{neutral}, ranked to (0, 1)"

