"""The model interface: what every kind of model does, and the registry of kinds.

A **kind** (``lgbm``, ``xgb``, ``linear``, ``logistic``, ``rf``, ``v3x``, and the networks ``gtruda``
and ``mlp``) turns a store view into a **fitted model** for one target:

1. ``check_settings(params)`` completes the kind's defaults with ``--params`` and names any
   parameter the kind does not take;
2. ``fit(data, settings, rounds, tracker)`` trains on ``data.train_eras`` straight from the int8
   store (no float copy of the training matrix), stopping early on ``data.stop_eras`` when the
   kind can;
3. the fitted model predicts blocks of whole eras of int8 rows, saves itself into the model
   directory (files named ``model_<target>…``) and loads back, and gives a **portable**
   predictor (:mod:`eraflow.engine.models.portable`) that needs only what Numerai's runtime has.

The trainer (:mod:`eraflow.engine.models.train`) does the rest for every kind: targets, era CV
with embargo and out-of-fold predictions, model.json, the rank ensemble of targets. model.json
names the kind (``kind``) and its settings; a directory without ``kind`` is an ``lgbm`` one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..data.store import EraStore, row_runs
from ..errors import InputError

DEFAULT_KIND = "lgbm"
TRAINABLE = ("lgbm", "xgb", "linear", "logistic", "rf", "v3x", "gtruda", "mlp")  # kinds `eraflow train --model` fits
# kind → its module; ensembles come from `eraflow ensemble`, not `eraflow train`
KIND_MODULES = {**{k: k for k in TRAINABLE}, "ensemble": "ensemble"}
EXTRAS = {"xgboost": "xgb", "torch": "nn"}  # optional library → the extra that installs it
MODEL_FORMAT = 2  # model.json ``format``: 2 names the kind; a directory without it is format 1 (lgbm)
MISSING_LABEL = 0.5  # label of a row without a target value; its weight is 0


def labels_and_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(label, weight)`` of target values ``y``: a missing value is label ``MISSING_LABEL`` (0.5) with weight 0,
    a present one is itself with weight 1."""
    return np.nan_to_num(y, nan=MISSING_LABEL), np.isfinite(y).astype(np.float64)


@dataclass(frozen=True)
class FitData:
    """A store view to train on: eras (store indices), feature columns and one target.

    ``stop_eras``: eras early stopping watches (None: none). ``embargo``: eras between training
    and held-out eras wherever a kind holds eras out itself (alpha CV, V3X's stacking eras).
    """

    store: EraStore
    train_eras: np.ndarray
    cols: np.ndarray
    target: str
    stop_eras: np.ndarray | None = None
    device: str = "cpu"
    seed: int = 0
    embargo: int = 4
    early_stopping: int = 100  # rounds without improvement on ``stop_eras``

    @property
    def target_col(self) -> int:
        return self.store.target_names.index(self.target)

    def target_values(self, eras: np.ndarray) -> np.ndarray:
        """The target of the rows of ``eras`` (store order), NaN kept."""
        runs = row_runs(self.store.offsets, eras)
        return np.concatenate([self.store.targets[lo:hi, self.target_col] for lo, hi in runs])

    def labels(self, eras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(label, weight)`` of the rows of ``eras``: a missing target is label 0.5 with weight 0."""
        return labels_and_weights(self.target_values(eras))

    def era_labels(self, eras: np.ndarray) -> list[str]:
        return [self.store.eras[k] for k in eras]


class Tracker(Protocol):
    """Hears of a model's training rounds (progress bars, ``TrainStatus``)."""

    def step(self, round: int, corr: float | None) -> None: ...

    def batch(self, done: int, total: int) -> None:
        """``done`` of the ``total`` batches of the current round (epoch) have run (kinds that train in batches)."""


class Fitted(Protocol):
    """A model of one target, fitted."""

    rounds: int | None  # boosting rounds it uses (None: not a boosting kind)

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Predictions (float64, n) for int8 rows ``x`` (n × features, −1 missing) of whole eras
        ``offsets`` (local, n_eras + 1)."""

    def save(self, model_dir: Path, target: str) -> None:
        """Write the model's files (``model_<target>…``) into ``model_dir``."""

    def portable(self) -> object:
        """A predictor built from :mod:`~eraflow.engine.models.portable` only (pickled into exports)."""

    def importance(self) -> np.ndarray | None:
        """Importance per feature for reports (trees: total gain; linear kinds: |coefficient| × the
        feature's standard deviation); None when the kind has none."""

    def describe(self) -> dict:
        """What model.json records of this fit beyond the trainer's own keys (``{}`` for none)."""


class Kind(Protocol):
    name: str
    stops_early: bool  # watches ``FitData.stop_eras`` to end training (boosting kinds); others get None

    def check_settings(self, params: dict | None) -> dict:
        """The kind's defaults updated with ``params``; InputError naming parameters it does not take."""

    def resolve_device(self, device: str, settings: dict) -> str:
        """The device training will use (``auto`` resolved); InputError when it is not available."""

    def max_rounds(self, settings: dict) -> int:
        """Steps one fit reports at most (boosting rounds; 1 for a closed-form fit)."""

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> Fitted:
        """Train on ``data`` (at most ``rounds`` rounds when given: the median best round of CV folds)."""

    def load(self, model_dir: Path, target: str, meta: dict) -> Fitted:
        """The fitted model of ``target`` saved in ``model_dir``; InputError when its files are damaged."""


def get_kind(name: str) -> Kind:
    """The kind called ``name``; InputError listing the kinds otherwise."""
    if name not in KIND_MODULES:
        raise InputError(f"unknown model kind {name!r}; choose one of {', '.join(KIND_MODULES)}")
    try:
        return importlib.import_module(f".{KIND_MODULES[name]}", __package__).KIND
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRAS:
            raise
        raise InputError(f"model kind {name!r} needs {exc.name}, which is not installed: "
                         f"pip install 'eraflow[{EXTRAS[exc.name]}]'") from None


def meta_kind(meta: dict, file: Path) -> Kind:
    """The kind of a model.json; InputError for a newer format or an unknown kind."""
    fmt = meta.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > MODEL_FORMAT:
        raise InputError(f"{file} has model format {fmt!r}, newer than this eraflow reads ({MODEL_FORMAT}); "
                         "upgrade eraflow")
    name = meta.get("kind", DEFAULT_KIND)
    if name not in KIND_MODULES:
        raise InputError(f"{file} is a model of kind {name!r}, which this eraflow does not know "
                         f"({', '.join(KIND_MODULES)}); upgrade eraflow")
    return get_kind(name)


def unknown_settings(kind: str, params: dict, defaults: dict) -> None:
    """InputError naming the parameters in ``params`` that ``defaults`` (the kind's) lacks."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise InputError(f"model kind {kind!r} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"it takes {', '.join(sorted(defaults))}")
