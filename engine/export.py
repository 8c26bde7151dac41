"""``eraflow export``: a trained model as the cloudpickled ``predict`` function Numerai's model upload runs."""

from __future__ import annotations

from pathlib import Path

import cloudpickle

from . import live_model
from .atomic import atomic_write_bytes
from .live import model_postprocess
from .live_model import LivePredictor
from .predict import TrainedModel


def live_predictor(model: TrainedModel) -> LivePredictor:
    """The model's boosters (as text) and post-processing in a self-contained predictor."""
    post = model_postprocess(model)
    return LivePredictor({t: b.model_to_string() for t, b in model.boosters.items()}, model.features,
                         model.meta.get("ensemble_weights"), post.column, post.proportion,
                         list(post.features or model.features))


def export_model(model: TrainedModel, path: str | Path) -> int:
    """Write ``predict(live_features, live_benchmark_models) -> DataFrame`` to ``path``; returns its size.

    The predictor's module is pickled by value, so loading the file needs cloudpickle, numpy,
    pandas and lightgbm, not eraflow.
    """
    predictor = live_predictor(model)

    def predict(live_features, live_benchmark_models=None):
        return predictor(live_features, live_benchmark_models)

    cloudpickle.register_pickle_by_value(live_model)
    try:
        data = cloudpickle.dumps(predict)
    finally:
        cloudpickle.unregister_pickle_by_value(live_model)
    atomic_write_bytes(Path(path), data)
    return len(data)
