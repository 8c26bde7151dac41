"""Live predictions: a model's post-processing, and the submission file for Numerai's live era.

A model directory's ``model.json`` may hold ``"postprocess"``: which output is submitted
(``ensemble`` or ``pred_<target>``), and an optional per-era neutralization (proportion and the
features). It is kept apart from the boosters, so changing it never means retraining. When the
neutralization features include derived columns (``eraflow features --add``) the post-processing
keeps their recipe (from the model's store), so ``live`` and exports compute them like the model's own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from eraflow.kernels import rank

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from ..data.derived import GROUP_STATS, add_recipe_to, derived_recipe, merged_recipe
from ..data.ingest import IngestOptions, ingest_files, read_features_json
from ..data.store import EraStore, compose_feature_sets, open_store
from ..errors import EraflowError, InputError
from ..evaluation.scoring import check_proportion, neutralize_columns
from ..models.predict import (
    ENSEMBLE,
    MODEL_JSON,
    PredictionTable,
    TrainedModel,
    era_positions,
    load_model,
    predict_table,
    prediction_column,
    with_aliases,
)
from ..outputs import check_output_file
from .submission import validate_submission

SUBMITTED = "prediction"  # the post-processed column; Numerai's submission column name


@dataclass(frozen=True)
class Postprocess:
    """How raw model outputs become the submitted column."""

    column: str  # "ensemble" or "pred_<target>"
    proportion: float | None = None  # per-era neutralization; None: none
    features: tuple[str, ...] | None = None  # neutralize against these [default: the model's features]
    derived: dict | None = None  # recipe of the derived columns among ``features`` (derived_recipe's form)


def model_outputs(model: TrainedModel) -> list[str]:
    """The columns a model predicts: ``pred_<target>`` per target (aliases of a trained target
    included), plus ``ensemble`` when several targets were trained."""
    columns = with_aliases(dict.fromkeys(prediction_column(t) for t in model.targets), model.aliases)
    return list(columns) + ([ENSEMBLE] if len(model.targets) > 1 else [])


def default_column(model: TrainedModel) -> str:
    """The column submitted unless post-processing says otherwise: the ensemble, or the only trained target."""
    return ENSEMBLE if len(model.targets) > 1 else prediction_column(model.targets[0])


def model_postprocess(model: TrainedModel) -> Postprocess:
    """The model's post-processing; by default the ensemble (or the only target), not neutralized."""
    saved = model.meta.get("postprocess")
    if not saved:
        return Postprocess(default_column(model))
    features = saved.get("features")
    return Postprocess(saved["column"], saved.get("proportion"), tuple(features) if features else None,
                       saved.get("derived"))


def check_postprocess(model: TrainedModel, post: Postprocess) -> Postprocess:
    """``post`` when it fits the model: one of its outputs, a proportion in [0, 1]; else InputError."""
    if post.column not in model_outputs(model):
        raise InputError(f"the model has no output {post.column!r}; it has {', '.join(model_outputs(model))}")
    if post.proportion is not None:
        check_proportion(post.proportion)
    if post.features is not None and not post.features:
        raise InputError("the neutralization feature list is empty; give at least one feature")
    return with_post_recipe(model, post)


def with_post_recipe(model: TrainedModel, post: Postprocess) -> Postprocess:
    """``post`` with the recipe of the derived columns among its features, read from the model's store
    when ``post`` has none yet (unchanged when the store is gone: its features are then taken as raw)."""
    if not post.features or post.derived is not None:
        return post
    store = model_store(model)
    return post if store is None else replace(post, derived=derived_recipe(store, post.features))


def live_recipe(model: TrainedModel, post: Postprocess) -> dict | None:
    """The group-statistics recipe live data needs: the model's (model.json ``derived``) and the
    post-processing's derived columns together (None when neither has any)."""
    recipe = merged_recipe(model.meta.get("derived"), post.derived)
    return None if recipe is None else recipe[GROUP_STATS]


def set_postprocess(model_dir: str | Path, post: Postprocess) -> Postprocess:
    """Check ``post`` against the model and record it in model.json (atomically), with the recipe of its
    derived features (:func:`with_post_recipe`)."""
    model = load_model(model_dir)
    post = check_postprocess(model, post)
    meta = dict(model.meta, postprocess=asdict(post))
    atomic_write_json(Path(model_dir) / MODEL_JSON, meta)
    return post


def override_postprocess(model: TrainedModel, column: str | None = None, proportion: float | None = None,
                         features: Sequence[str] | None = None) -> Postprocess:
    """The model's post-processing with the given parts replaced, for one run (model.json is not changed).

    ``features`` (neutralize against these) needs a proportion, given here or in model.json.
    """
    saved = model_postprocess(model)
    proportion = saved.proportion if proportion is None else proportion
    if features is not None and proportion is None:
        raise InputError("neutralization features were given but no proportion, and the model neutralizes "
                         "nothing; give a proportion (--neutralize P)")
    kept = features is None  # the saved features keep their saved recipe; new ones get theirs in check_postprocess
    post = Postprocess(column or saved.column, proportion, saved.features if kept else tuple(features),
                       saved.derived if kept else None)
    return check_postprocess(model, post)


def model_store(model: TrainedModel) -> EraStore | None:
    """The store the model was trained on, when it is still there unchanged (same fingerprint, or the same data
    with group statistics added since: its ``base_fingerprint``)."""
    try:
        store = open_store(model.meta["store"])
    except (EraflowError, OSError, KeyError, TypeError):
        return None
    same = model.meta.get("store_fingerprint") in (store.fingerprint, store.meta.get("base_fingerprint"))
    return store if same else None


def feature_set_names(model: TrainedModel, name: str, features_json: Path | None) -> tuple[str, ...]:
    """The features of set ``name``: from ``features_json`` when it exists, else from the model's store."""
    if features_json is not None and Path(features_json).is_file():
        sets, where = read_features_json(Path(features_json))["feature_sets"], str(features_json)
    else:
        store = model_store(model)
        if store is None:
            raise InputError(f"cannot look up feature set {name!r}: no features.json "
                             f"{'at ' + str(features_json) if features_json else 'given'} and the model's store "
                             "is gone or was rebuilt; give Numerai's features.json")
        sets, where = store.feature_sets, "the model's store"
    return tuple(compose_feature_sets(sets, name, where))


def predict_submitted(model: TrainedModel, store: EraStore, eras: str | None = None,
                      post: Postprocess | None = None) -> PredictionTable:
    """The model's outputs for the eras plus ``prediction``: the post-processed column, not yet ranked.

    ``post`` replaces the model's own post-processing (see :func:`override_postprocess`).
    """
    post = post or model_postprocess(model)
    table = predict_table(model, store, eras)
    value = table.columns[post.column]
    if post.proportion is not None:
        value = neutralize_columns(store, {SUBMITTED: value}, era_positions(store, eras),
                                   list(post.features or model.features), post.proportion)[SUBMITTED]
    return PredictionTable(table.ids, table.eras, {**table.columns, SUBMITTED: value})


def live_raw_features(model: TrainedModel, post: Postprocess) -> list[str]:
    """The columns read from live.parquet: the model's and the post-processing's features, with each derived
    feature (:func:`live_recipe`) replaced by the raw features it is computed from."""
    recipe = live_recipe(model, post) or {"features": [], "groups": {}}
    made = set(recipe["features"])
    features = [f for f in model.features + list(post.features or ()) if f not in made]
    return list(dict.fromkeys(features + [f for members in recipe["groups"].values() for f in members]))


def live_predictions(model: TrainedModel, live_path: str | Path, post: Postprocess | None = None) -> pd.DataFrame:
    """``id`` and ``prediction`` for every row of a live parquet file, ready to submit.

    live.parquet is ingested into a temporary store (only the features needed), the derived
    features the model and its post-processing use are added to it (:func:`live_recipe`), the model
    predicts, its post-processing (or ``post``) applies (neutralization per era), and the
    submitted column is ranked per era to ``(rank − 0.5) / n`` in (0, 1); the result passes
    Numerai's checks.
    """
    post = with_post_recipe(model, post or model_postprocess(model))
    recipe = live_recipe(model, post)
    with tempfile.TemporaryDirectory(prefix="eraflow-live-") as tmp:
        store_dir = Path(tmp) / "live"
        ingest_files([live_path], store_dir, IngestOptions(features=live_raw_features(model, post), targets=()))
        if recipe:
            add_recipe_to(store_dir, recipe)
        store = open_store(store_dir)
        table = predict_submitted(model, store, post=post)
        offsets = store.offsets.astype(np.int64)
    frame = pd.DataFrame({"id": table.ids, "prediction": rank(table.columns[SUBMITTED], offsets)})
    validate_submission(frame, table.ids)
    return frame


def write_submission(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``id, prediction`` atomically: CSV for a ``.csv`` path, else parquet."""
    path = check_output_file(path, "submission")
    if path.suffix == ".csv":
        atomic_write_bytes(path, frame.to_csv(index=False).encode(), "submission")
    else:
        atomic_write_parquet(path, pa.Table.from_pandas(frame, preserve_index=False), "submission")


def postprocess_summary(post: Postprocess) -> str:
    """One line describing the post-processing."""
    against = f" against {len(post.features)} features" if post.features else ""
    neutral = "" if post.proportion is None else f", neutralized {post.proportion:g} per era{against}"
    return f"{post.column}{neutral}, ranked to (0, 1)"

