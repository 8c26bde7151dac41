"""``eraflow export``: a trained model as the cloudpickled ``predict`` function Numerai's model upload runs.

Before anything is written the model is checked as Numerai would run it (``load_model`` has
already checked that each booster reads exactly model.json's features): the post-processing
names one of the model's outputs and features its store has, and the pickled function, loaded
back, predicts a small synthetic frame of the model's features (random codes 0..4) with one
value in (0, 1) per row.
"""

from __future__ import annotations

from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd

from ..atomic import atomic_write_bytes
from ..errors import InputError
from ..models.predict import TrainedModel, prediction_column
from ..outputs import EXPORT_MARK, check_output_file
from . import live_model
from .live import Postprocess, check_postprocess, model_postprocess, model_store
from .live_model import LivePredictor

SMOKE_ROWS = 32  # rows of the synthetic frame the exported predictor must predict before it is written


def known_features(model: TrainedModel) -> set[str] | None:
    """The features the model's data had: its own plus its store's; None when the store is gone or rebuilt."""
    store = model_store(model)
    return None if store is None else set(model.features) | set(store.feature_names)


def check_postprocess_features(model: TrainedModel, post: Postprocess) -> None:
    """InputError when the neutralization features include names the model's data never had.

    Unchecked when the model's store is gone (then only Numerai's live data can tell).
    """
    if post.proportion is None or not post.features:
        return
    known = known_features(model)
    unknown = [] if known is None else [f for f in post.features if f not in known]
    if unknown:
        raise InputError(f"the post-processing neutralizes against {len(unknown)} feature(s) the model's store "
                         f"lacks (e.g. {unknown[:3]}); set it again with features of the store")


def smoke_frame(features: list[str], rows: int = SMOKE_ROWS, seed: int = 0) -> pd.DataFrame:
    """A live-shaped frame: index ``id``, ``era`` "X" and each feature a random code 0..4 (int8)."""
    rng = np.random.default_rng(seed)
    columns = {"era": ["X"] * rows, **{f: rng.integers(0, 5, rows).astype(np.int8) for f in features}}
    return pd.DataFrame(columns, index=pd.Index([f"smoke{i:03d}" for i in range(rows)], name="id"))


def output_problem(out, frame: pd.DataFrame) -> str | None:
    """What is wrong with ``predict``'s answer for ``frame``: not one ``prediction`` per row in (0, 1)."""
    if not isinstance(out, pd.DataFrame):
        return f"it returned a {type(out).__name__}, not a DataFrame"
    if list(out.columns) != ["prediction"]:
        return f"it returned columns {list(out.columns)}, not ['prediction']"
    if not out.index.equals(frame.index):
        return f"it returned {len(out)} rows indexed otherwise than the {len(frame)} rows given"
    if not np.all((out["prediction"] > 0) & (out["prediction"] < 1)):
        return "its predictions are not all in (0, 1)"
    return None


def smoke_test(data: bytes, features: list[str]) -> None:
    """Load the pickled ``predict`` back and run it on :func:`smoke_frame`; InputError when it fails."""
    frame = smoke_frame(features)
    try:
        problem = output_problem(cloudpickle.loads(data)(frame, None), frame)
    except Exception as exc:  # whatever Numerai's runtime would hit
        problem = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
    if problem:
        raise InputError(f"the exported predictor fails on a synthetic frame of the model's features ({problem}); "
                         "nothing was written")


def live_predictor(model: TrainedModel) -> LivePredictor:
    """The model's boosters (as text) and post-processing in a self-contained predictor.

    A submitted column of an alias target (a duplicate of a trained one) is the trained target's.
    """
    post = model_postprocess(model)
    aliases = {prediction_column(a): prediction_column(t) for a, t in model.aliases.items()}
    return LivePredictor({t: b.model_to_string() for t, b in model.boosters.items()}, model.features,
                         model.meta.get("ensemble_weights"), aliases.get(post.column, post.column), post.proportion,
                         list(post.features or model.features))


def export_model(model: TrainedModel, path: str | Path) -> int:
    """Write ``predict(live_features, live_benchmark_models) -> DataFrame`` to ``path``; returns its size.

    The predictor's module is pickled by value, so loading the file needs cloudpickle, numpy,
    pandas and lightgbm, not eraflow. The model is checked first and the pickled function is run
    once on a synthetic frame (see the module docstring); nothing is written when a check fails.
    """
    path = check_output_file(path, "export")
    post = check_postprocess(model, model_postprocess(model))
    check_postprocess_features(model, post)
    predictor = live_predictor(model)

    def predict(live_features, live_benchmark_models=None):
        return predictor(live_features, live_benchmark_models)

    predict.eraflow_output = EXPORT_MARK  # lets a later export recognise the file without unpickling it
    cloudpickle.register_pickle_by_value(live_model)
    try:
        data = cloudpickle.dumps(predict)
    finally:
        cloudpickle.unregister_pickle_by_value(live_model)
    smoke_test(data, list(dict.fromkeys(predictor.features + predictor.neutral_features)))
    atomic_write_bytes(path, data, "export")
    return len(data)
