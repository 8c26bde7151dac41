"""Kind ``rf``: a random forest, grown by LightGBM's ``rf`` boosting from the store's cached binary Dataset.

Each tree is fitted to the labels (not to residuals) on its own random ``bagging_fraction`` of the
rows and ``feature_fraction_bynode`` of the features at each split; the forest predicts the mean
of its trees, ``ŷ(x) = (1/T) Σ_t tree_t(x)`` (LightGBM's ``average_output``).

Why LightGBM and not scikit-learn's RandomForestRegressor: scikit-learn needs the training matrix
as a dense float32 array (1M × 2376 × 4 bytes = 9.5 GB) and grows each tree to a leaf per few
rows (a 200-tree forest of 1M rows holds hundreds of millions of nodes). LightGBM trains from
the binned Dataset the ``lgbm`` kind already builds and caches (one byte or less per value, built
from int8 blocks of the store, the same cache entry for both kinds), and ``num_leaves`` bounds
each tree. Rows are drawn without replacement (0.632: the share of distinct rows in a bootstrap).

A forest does not overfit as trees are added, so training never stops early: the trainer still
predicts and scores the held-out eras (CV folds, ``--valid-eras``), but every fit grows all
``n_estimators`` trees, which model.json records as the rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .kind import FitData, Tracker
from .lgbm import LightGBMKind, LightGBMModel, lightgbm_names, probe_params, unknown_lightgbm
from .params import BASE, split_rounds

DEFAULTS = {
    **BASE,  # the lgbm kind's binning: the two kinds share the cached Dataset of a store
    "boosting": "rf",
    "n_estimators": 200,
    "bagging_fraction": 0.632,  # rows per tree: the share of distinct rows in a bootstrap sample
    "bagging_freq": 1,  # a new sample for every tree
    "feature_fraction_bynode": 0.33,  # features tried at each split (Breiman's p/3 for regression)
    # Shallow trees: on planted-signal data (200 eras × 1200 rows × 48 features, 150 eras to train) the
    # held-out corr is 0.86 of the oracle's with 31 leaves / depth 6, 0.83 with 63 / 8, 0.76 with 255 / 12
    # (deeper trees fit more of the noise, and take longer).
    "num_leaves": 31,
    "max_depth": 6,
    "min_data_in_leaf": 100,  # leaves average at least this many rows: era data are mostly noise
}
ROUNDS = "n_estimators"  # LightGBM's num_iterations, under the name split_rounds reads first
FOREST_NAMES = {"random_forest": "rf"}  # LightGBM's alias of boosting "rf"


def main_names(params: dict) -> dict:
    """``params`` under LightGBM's main names; InputError naming a parameter LightGBM lacks or one given twice."""
    unknown_lightgbm("rf", params)
    names = lightgbm_names()
    out: dict = {}
    for key, value in params.items():
        main = ROUNDS if names[key] == "num_iterations" else names[key]
        if main in out:
            raise InputError(f"model kind 'rf' got {main!r} twice (as {key!r} and another alias); give it once")
        out[main] = value
    return out


def random_trees(settings: dict) -> bool:
    """Whether trees differ: rows bagged (0 < bagging_fraction < 1, bagging_freq ≥ 1) or 0 < feature_fraction < 1
    (True when these are not numbers: LightGBM's probe names them)."""
    try:
        rows = int(settings.get("bagging_freq", 0)) > 0 and 0 < float(settings.get("bagging_fraction", 1.0)) < 1
        return rows or 0 < float(settings.get("feature_fraction", 1.0)) < 1
    except (TypeError, ValueError):
        return True


def check_forest(settings: dict) -> dict:
    """The settings with ``boosting = "rf"``; InputError for another boosting or trees that would all be alike."""
    boosting = FOREST_NAMES.get(settings["boosting"], settings["boosting"])
    if boosting != "rf":
        raise InputError(f"model kind 'rf' grows a random forest (boosting 'rf'), got boosting {boosting!r}; "
                         "use --model lgbm for gradient boosting")
    if not random_trees(settings):
        raise InputError("model kind 'rf' needs random trees: 0 < bagging_fraction < 1 with bagging_freq ≥ 1, "
                         "or 0 < feature_fraction < 1")
    return {**settings, "boosting": boosting}


@dataclass
class RandomForestModel(LightGBMModel):
    """A fitted forest: the lgbm kind's booster, with contributions averaged over the trees as predictions are."""

    def __post_init__(self):
        if self.rounds is None:
            self.rounds = self.booster.num_trees()  # all of them: a forest never stops early

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-row, per-feature contributions (SHAP values) of the mean of the trees: LightGBM's ``pred_contrib``
        sums them over an rf model's trees, so they are divided by the trees used."""
        return super().contributions(x) / self.rounds


class RandomForestKind(LightGBMKind):
    """A random forest of LightGBM trees (``boosting = "rf"``), trained and saved as the lgbm kind."""

    name = "rf"
    stops_early = False  # the trainer scores held-out eras but gives the forest none to stop on

    def check_settings(self, params: dict | None) -> dict:
        settings = check_forest({**DEFAULTS, **main_names(params or {})})
        probe_params(split_rounds(settings)[0])  # what else LightGBM refuses, in a second
        return settings

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> RandomForestModel:
        """Grow every tree (``data.stop_eras`` is None: the kind does not stop early)."""
        return RandomForestModel(super().fit(data, settings, rounds, tracker).booster)

    def load(self, model_dir: Path, target: str, meta: dict) -> RandomForestModel:
        return RandomForestModel(super().load(model_dir, target, meta).booster)


KIND = RandomForestKind()
