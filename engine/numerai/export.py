"""``eraflow export``: a trained model as the cloudpickled ``predict`` function Numerai's model upload runs.

Before anything is written the model is checked as Numerai would run it (``load_model`` has
already checked that each booster reads exactly model.json's features): the post-processing
names one of the model's outputs and features its store has, and the pickled function, loaded
back, predicts a small synthetic frame of the model's features (random codes 0..4) with one
value in (0, 1) per row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd

from ..atomic import atomic_write_bytes
from ..errors import InputError
from ..models import portable
from ..models.portable.derived import WithGroupStats
from ..models.predict import TrainedModel, prediction_column
from ..outputs import EXPORT_MARK, check_output_file
from . import live_model
from .live import Postprocess, check_postprocess, live_recipe, model_postprocess, model_store
from .live_model import LivePredictor

RUNTIMES = ("3.11", "3.12")  # Python minors of Numerai's model-upload images eraflow targets
DEFAULT_RUNTIME = "3.11"
BY_VALUE = (live_model, portable)  # modules whose code travels inside the pickle (the runtime has no eraflow)
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


def live_predictor(model: TrainedModel, post: Postprocess) -> LivePredictor | WithGroupStats:
    """The model's portable predictors and post-processing ``post`` in a self-contained predictor.

    A submitted column of an alias target (a duplicate of a trained one) is the trained target's.
    A model trained or neutralized with derived features (:func:`.live.live_recipe`) computes them from
    the live frame first, with the same NumPy code as the store (:class:`.portable.derived.WithGroupStats`).
    """
    aliases = {prediction_column(a): prediction_column(t) for a, t in model.aliases.items()}
    predictor = LivePredictor({t: f.portable() for t, f in model.fitted.items()}, model.features,
                              model.meta.get("ensemble_weights"), aliases.get(post.column, post.column),
                              post.proportion, list(post.features or model.features))
    recipe = live_recipe(model, post)
    if not recipe:
        return predictor
    return WithGroupStats(predictor, recipe["groups"], recipe["features"], live_model.feature_codes, recipe["bins"])


def live_columns(predictor: LivePredictor | WithGroupStats) -> list[str]:
    """The columns of the live frame the predictor reads: its features and neutralization features, the
    derived ones replaced by the raw features they are computed from."""
    if not isinstance(predictor, WithGroupStats):
        return list(dict.fromkeys(predictor.features + predictor.neutral_features))
    inner, made = predictor.predictor, set(predictor.names)
    read = [f for f in inner.features + inner.neutral_features if f not in made]
    return list(dict.fromkeys(read + predictor.raw_features))


def check_python(runtime: str = DEFAULT_RUNTIME) -> None:
    """InputError unless eraflow runs under Python ``runtime`` (e.g. "3.11"), the minor of the image that loads
    the pickle.

    cloudpickle stores functions as code objects, which differ between Python minors: a pickle
    made under 3.12 can fail or crash when Numerai's 3.11 image loads it.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)} (Numerai's images)")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != runtime:
        fix = f", or pass --runtime {running} to target the {running} image" if running in RUNTIMES else ""
        raise InputError(f"eraflow runs under Python {running} but the pickle is for Numerai's Python {runtime} image "
                         f"(pickles break across Python versions); run eraflow under Python {runtime}{fix}")


def pickled_predict(model: TrainedModel) -> tuple[bytes, list[str]]:
    """The cloudpickled ``predict`` of ``model``, smoke-tested, and the live columns it reads.

    The model is checked first and the pickled function is run once on a synthetic frame (see
    the module docstring); InputError when a check fails.
    """
    post = check_postprocess(model, model_postprocess(model))
    check_postprocess_features(model, post)
    predictor = live_predictor(model, post)

    def predict(live_features, live_benchmark_models=None):
        return predictor(live_features, live_benchmark_models)

    predict.eraflow_output = EXPORT_MARK  # lets a later export recognise the file without unpickling it
    for module in BY_VALUE:
        cloudpickle.register_pickle_by_value(module)
    try:
        data = cloudpickle.dumps(predict)
    finally:
        for module in BY_VALUE:
            cloudpickle.unregister_pickle_by_value(module)
    columns = live_columns(predictor)
    smoke_test(data, columns)
    return data, columns


def export_model(model: TrainedModel, path: str | Path, runtime: str = DEFAULT_RUNTIME) -> int:
    """Write ``predict(live_features, live_benchmark_models) -> DataFrame`` to ``path``; returns its size.

    The predictor's modules are pickled by value, so loading the file needs cloudpickle, numpy,
    pandas and the kind's model library (lightgbm, xgboost; none for the network kinds, whose
    forward pass is NumPy), not eraflow or torch. Refused (InputError) when eraflow's Python minor
    is not ``runtime``'s (:func:`check_python`); nothing is written when a check of
    :func:`pickled_predict` fails. ``eraflow export --check`` also runs the pickle
    in the runtime's pins (:mod:`eraflow.engine.numerai.runtime`).
    """
    check_python(runtime)
    path = check_output_file(path, "export")
    data, _ = pickled_predict(model)
    atomic_write_bytes(path, data, "export")
    return len(data)
