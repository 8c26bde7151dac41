"""Kind ``xgb``: one XGBoost ``hist`` booster per target, trained from the store through a ``DataIter``.

1. The training eras become a ``QuantileDMatrix`` built block by block from the int8 store
   (:mod:`~eraflow.engine.models.xgb_data`); rows without a target have weight 0. With
   ``external_memory`` (``"auto"``: on the CPU when the matrices would take over 2 GiB, e.g. from
   about 450k rows of 2376 features) an ``ExtMemQuantileDMatrix`` instead, its cache files in a
   temporary directory of the system's (``$TMPDIR``, else ``/tmp``) removed after training: the
   same cuts and trees, slower rounds.
2. With stopping eras (binned with the training cuts), each round's mean per-era numerai_corr of
   them is reported to the tracker, and training stops after ``early_stopping`` rounds without
   a higher one; the booster keeps the best round's trees.
3. With era boosting (:mod:`~eraflow.engine.models.era_boost`), the booster then gets ``trees``
   more rounds per step on a ``QuantileDMatrix`` of the worst training eras' rows (binned with the
   training matrix's cuts, read block by block from the store), continuing it (``xgb_model``).
4. The booster is saved as ``model_<target>.json`` (XGBoost's JSON, in the form XGBoost 3.0, the
   version in Numerai's runtime, reads) and checked before XGBoost loads it back.

Settings are XGBoost training parameters plus ``n_estimators`` (the rounds), ``external_memory``
(``"auto"``, true or false) and the era boosting keys; a name XGBoost does not use is refused:
XGBoost itself validates parameter names (``validate_parameters``), and eraflow trains one round
on a tiny set with the settings and turns its "Parameters: { … } are not used" warning into an
error naming them. ``--device cuda`` is checked the same way: XGBoost falls back to the CPU (with
a warning) when it finds no GPU, so the device the probe booster ended on tells whether one is there.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import xgboost as xgb

from eraflow.kernels import numerai_corr

from ..data.store import EraStore, era_subset_offsets, int8_to_float32
from ..errors import InputError
from ..threads import configured_threads
from .era_boost import EraBoost, boost_eras, describe, era_boost_of, first_fit_rounds, local_rows, without_era_boost
from .kind import MISSING_LABEL, FitData, Tracker
from .model_files import damaged_file, missing_file
from .portable.boosters import XGBoostJSON
from .xgb_data import external_memory, matrix_params, store_matrix

# Close to the lgbm starter preset (Numerai's example XGBoost model): shallow trees, few features per tree.
# max_bin 8: features take at most 5 values (+ missing), so 8 bins cut them exactly as 256 would, and
# XGBoost's quantile sketch, which grows with max_bin, not with the values present, stays small
# (measured on 50k × 2376: the QuantileDMatrix took 1.55 GiB with 256 bins, 0.29 GiB with 8).
DEFAULTS = {"objective": "reg:squarederror", "tree_method": "hist", "n_estimators": 2000, "learning_rate": 0.01,
            "max_depth": 5, "colsample_bytree": 0.1, "max_bin": 8, "external_memory": "auto"}
ALIASES = {"num_boost_round": "n_estimators", "eta": "learning_rate"}  # other names of the defaults' keys
ROUNDS = "n_estimators"
EXTERNAL = "external_memory"  # "auto" | True | False: cache the binned matrices on disk (xgb_data.external_memory)
DEVICES = ("cpu", "gpu", "cuda", "auto")  # gpu: XGBoost's CUDA device, as cuda
PARAMETERS_DOC = "https://xgboost.readthedocs.io/en/stable/parameter.html"
UNUSED = re.compile(r"Parameters: \{(.*?)\} are not used")
LOG_PREFIX = re.compile(r"^\[[\d:]+\] (?:WARNING: )?\S+:\d+: ")  # "[00:18:38] /src/learner.cc:782: "
VECTOR_BASE_SCORE = re.compile(rb'"base_score":"\[([^",\]]+)\]"')
ROOT_PARENT = 2147483647  # the root's parent in XGBoost's JSON trees
INT_ARRAYS = ("left_children", "right_children", "parents", "split_indices", "split_type", "default_left")


def model_file(target: str) -> str:
    return f"model_{target}.json"


def xgboost_message(text: str) -> str:
    """XGBoost's message on one line, without its ``[time] file:line:`` prefix and stack trace."""
    lines = [LOG_PREFIX.sub("", line).strip() for line in text.strip().splitlines()]
    return next((line for line in lines if line), "no message")


@contextmanager
def xgboost_errors(what: str) -> Iterator[None]:
    """XGBoost errors as one-line InputErrors about ``what``."""
    try:
        yield
    except xgb.core.XGBoostError as exc:
        raise InputError(f"XGBoost failed on {what}: {xgboost_message(str(exc))}") from None


def train_params(settings: dict, device: str = "cpu", seed: int = 0) -> dict:
    """XGBoost's parameters for a fit: the settings less the rounds and era boosting, with threads (``--threads``),
    device, seed, XGBoost silent and no default metric (stopping uses its own)."""
    threads = configured_threads()
    dropped = (ROUNDS, EXTERNAL, "nthread", "n_jobs") if threads > 0 else (ROUNDS, EXTERNAL)
    params = {k: v for k, v in without_era_boost(settings).items() if k not in dropped}
    return {**params, **({"nthread": threads} if threads > 0 else {}), "device": device, "seed": seed,
            "verbosity": 0, "disable_default_eval_metric": 1}


def probe(params: dict) -> tuple[str, list[str]]:
    """Train one round on a tiny random set with ``params`` (one thread): the device XGBoost ended on
    and its warnings. InputError for values XGBoost refuses and for names it does not use."""
    x = np.random.default_rng(0).random((64, 2), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught, xgb.config_context(verbosity=1):
        warnings.simplefilter("always")
        with xgboost_errors("the settings"):
            tiny = xgb.QuantileDMatrix(x, x[:, 0], **{**matrix_params(params), "nthread": 1})
            booster = xgb.train({**params, "verbosity": 1, "nthread": 1}, tiny, 1)
    messages = [str(w.message) for w in caught]
    unused = [name for m in messages for names in UNUSED.findall(m) for name in re.findall(r'"([^"]+)"', names)]
    if unused:
        raise InputError(f"model kind 'xgb' takes no parameter {', '.join(map(repr, unused))}; it takes "
                         f"{ROUNDS} and XGBoost's training parameters ({PARAMETERS_DOC})")
    return json.loads(booster.save_config())["learner"]["generic_param"]["device"], list(map(xgboost_message, messages))


def check_settings(params: dict | None) -> dict:
    """:data:`DEFAULTS` updated with ``params`` (aliases of their keys under the defaults' names),
    checked by XGBoost (:func:`probe`)."""
    params = params or {}
    given = {ALIASES.get(k, k): v for k, v in params.items()}
    if len(given) < len(params):
        twice = [f"{a!r} and {k!r}" for a, k in ALIASES.items() if a in params and k in params]
        raise InputError(f"--params gives {', '.join(twice)}, two names of one parameter; keep one")
    if "device" in given:
        raise InputError("--params sets 'device'; choose the device with --device cpu|cuda|auto")
    if given.get("booster", "gbtree") != "gbtree":
        raise InputError(f"model kind 'xgb' trains trees (booster 'gbtree'), not booster {given['booster']!r}")
    settings = {**DEFAULTS, **given}
    rounds = settings[ROUNDS]
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise InputError(f"{ROUNDS} must be a whole number of rounds ≥ 1, got {rounds!r}")
    if not (settings[EXTERNAL] == "auto" or isinstance(settings[EXTERNAL], bool)):
        raise InputError(f'{EXTERNAL} must be "auto", true or false, got {settings[EXTERNAL]!r}')
    era_boost_of(settings, rounds)
    probe(train_params(settings))
    return settings


def resolve_device(device: str, settings: dict) -> str:
    """``cuda`` (or ``gpu``) when XGBoost trains on a GPU here, else an InputError; ``auto`` → ``cuda``
    when it does, else ``cpu``."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    try:
        used, messages = probe(train_params(settings, "cuda"))
    except InputError:
        if device == "auto":
            return "cpu"
        raise
    if used.startswith("cuda"):
        return "cuda"
    if device == "auto":
        return "cpu"
    why = next((m for m in messages if "GPU" in m or "CUDA" in m), "no CUDA device found")
    raise InputError(f"--device {device}: XGBoost cannot train on a GPU here ({why}); use --device cpu or auto")


def portable_json(booster: xgb.Booster) -> bytes:
    """The booster's JSON in the form XGBoost 3.0 reads too: XGBoost ≥ 3.1 writes ``base_score`` as a
    vector ``"[v]"``, which 3.0 silently reads as 0.5; a single value is written as a scalar."""
    return VECTOR_BASE_SCORE.sub(rb'"base_score":"\1"', bytes(booster.save_raw("json")), count=1)


def booster_from_json(raw: bytes) -> xgb.Booster:
    """A booster loaded from its JSON, predicting with ``--threads`` threads when set."""
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    threads = configured_threads()
    if threads > 0:
        booster.set_param({"nthread": threads})
    return booster


@dataclass
class XGBoostModel:
    """A fitted XGBoost booster of ``rounds`` rounds (the best, when it stopped early), kept as the
    JSON it saves (``raw``) and loaded from it, so what is saved predicts as this does."""

    raw: bytes
    booster: xgb.Booster
    rounds: int
    info: dict = field(default_factory=dict)  # what model.json records of the fit (era boosting)

    @classmethod
    def from_json(cls, raw: bytes) -> XGBoostModel:
        booster = booster_from_json(raw)
        return cls(raw, booster, booster.num_boosted_rounds())

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        with xgboost_errors("the model's predictions"):
            return self.booster.inplace_predict(int8_to_float32(x)).astype(np.float64)

    def save(self, model_dir: Path, target: str) -> None:
        (model_dir / model_file(target)).write_bytes(self.raw)

    def portable(self) -> XGBoostJSON:
        return XGBoostJSON(self.raw)

    def importance(self) -> np.ndarray:
        """Total gain of each feature's splits (0 for a feature never split on), in model feature order."""
        gain = np.zeros(self.booster.num_features())
        for name, value in self.booster.get_score(importance_type="total_gain").items():
            gain[int(name[1:])] = value  # features are named f0, f1, … in training order
        return gain

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-row, per-feature contributions (SHAP values; the bias column dropped)."""
        with xgboost_errors("the model's contributions"):
            return self.booster.predict(xgb.DMatrix(int8_to_float32(x)), pred_contribs=True)[:, :-1].astype(np.float64)

    def describe(self) -> dict:
        return self.info


class EraCorrStopping(xgb.callback.TrainingCallback):
    """After each round: the mean per-era numerai_corr of the stopping eras' predictions (higher is
    better), told to ``tracker``; stops after ``patience`` rounds without a higher one.

    The stopping matrix is predicted whole each round; XGBoost caches its predictions, so each
    round adds only the new tree's.
    """

    def __init__(self, valid: xgb.DMatrix, target: np.ndarray, offsets: np.ndarray, patience: int,
                 tracker: Tracker | None):
        self.valid, self.target, self.offsets, self.patience, self.tracker = valid, target, offsets, patience, tracker
        self.best_corr, self.best_round = -np.inf, 0
        super().__init__()

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log) -> bool:
        preds = model.predict(self.valid, output_margin=True)
        corr = float(np.nanmean(numerai_corr(preds.astype(np.float64), self.target, self.offsets)))
        if corr > self.best_corr:
            self.best_corr, self.best_round = corr, epoch + 1
        if self.tracker:
            self.tracker.step(epoch + 1, corr)
        return epoch + 1 - self.best_round >= self.patience


class RoundSteps(xgb.callback.TrainingCallback):
    """Tells a tracker of each round (training without stopping eras), numbered after ``before`` rounds."""

    def __init__(self, tracker: Tracker, before: int = 0):
        self.tracker, self.before = tracker, before
        super().__init__()

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log) -> bool:
        self.tracker.step(self.before + epoch + 1, None)
        return False


@dataclass(frozen=True)
class Stopping:
    """Eras early stopping watches (store indices), their target (NaN kept) and the patience in rounds."""

    eras: np.ndarray
    target: np.ndarray
    patience: int


def train_booster(store: EraStore, eras: np.ndarray, cols: np.ndarray, label: np.ndarray, weight: np.ndarray,
                  params: dict, rounds: int, stopping: Stopping | None = None,
                  tracker: Tracker | None = None, external: bool | str = "auto",
                  boost: EraBoost | None = None, target: np.ndarray | None = None) -> XGBoostModel:
    """At most ``rounds`` rounds on the rows of ``eras`` (``label``, ``weight`` in store order); with
    ``stopping``, the rounds up to the best per-era corr of its eras; then ``boost``'s era boosting,
    which scores eras against ``target`` (the rows' target, NaN kept: ``FitData.target_values``).
    ``external``: cache the matrices on disk (True, False or ``"auto"``:
    :func:`~eraflow.engine.models.xgb_data.external_memory`), in a temporary directory removed when
    training ends."""
    fit_eras = np.concatenate([eras, [] if stopping is None else stopping.eras]).astype(np.int64)
    values = int(np.diff(store.offsets)[fit_eras].sum()) * len(cols)
    if boost:  # the worst eras' matrix lives beside the training matrix
        values += math.ceil(boost.proportion * int(np.diff(store.offsets)[eras].sum())) * len(cols)
    if not external_memory(external, values, params.get("device", "cpu")):
        return _train_booster(store, eras, cols, label, weight, params, rounds, stopping, tracker, boost, target)
    with tempfile.TemporaryDirectory(prefix="eraflow-xgb-") as cache:
        return _train_booster(store, eras, cols, label, weight, params, rounds, stopping, tracker, boost, target,
                              Path(cache))


def _train_booster(store: EraStore, eras: np.ndarray, cols: np.ndarray, label: np.ndarray, weight: np.ndarray,
                   params: dict, rounds: int, stopping: Stopping | None, tracker: Tracker | None,
                   boost: EraBoost | None = None, target: np.ndarray | None = None,
                   cache: Path | None = None) -> XGBoostModel:
    """:func:`train_booster` with its matrices in memory, or cached in the directory ``cache``."""
    with xgb.config_context(verbosity=0), xgboost_errors("training"):
        train = store_matrix(store, eras, cols, label, weight, params, cache=cache)
        booster, best, ran = _first_fit(store, train, cols, params, rounds, stopping, tracker, cache)
        if boost is None:
            return XGBoostModel.from_json(portable_json(booster[:best or ran]))
        booster, info = _era_boosted(booster[:best] if best else booster, ran, train, store, eras, cols, label,
                                     weight, target, params, boost, tracker, cache)
        return replace(XGBoostModel.from_json(portable_json(booster)), info=info)


def _first_fit(store: EraStore, train: xgb.DMatrix, cols: np.ndarray, params: dict, rounds: int,
               stopping: Stopping | None, tracker: Tracker | None, cache: Path | None) -> tuple[xgb.Booster, int, int]:
    """The booster of at most ``rounds`` rounds on ``train``, its best round with ``stopping`` (else 0) and
    the rounds that ran."""
    callbacks: list[xgb.callback.TrainingCallback] = [RoundSteps(tracker)] if tracker and not stopping else []
    if stopping:
        valid = store_matrix(store, stopping.eras, cols, np.nan_to_num(stopping.target, nan=MISSING_LABEL),
                             params=params, reference=train, cache=cache)
        callbacks.append(EraCorrStopping(valid, stopping.target, era_subset_offsets(store.offsets, stopping.eras),
                                         stopping.patience, tracker))
    booster = xgb.train(params, train, rounds, callbacks=callbacks, verbose_eval=False)
    return booster, callbacks[-1].best_round if stopping else 0, booster.num_boosted_rounds()


def _era_boosted(booster: xgb.Booster, ran: int, train: xgb.DMatrix, store: EraStore, eras: np.ndarray,
                 cols: np.ndarray, label: np.ndarray, weight: np.ndarray, target: np.ndarray, params: dict,
                 boost: EraBoost, tracker: Tracker | None, cache: Path | None) -> tuple[xgb.Booster, dict]:
    """``booster`` (fit on ``train``, the rows of ``eras`` with ``target``, NaN kept; ``ran`` rounds run) after
    era boosting (:func:`~eraflow.engine.models.era_boost.boost_eras`), and what model.json records of it. Each step
    predicts ``train`` (binned: no float copy, no store read) and continues the booster
    (``xgb_model``, as plain XGBoost continues one) for ``boost.trees`` rounds on a matrix of the
    worst eras' rows, read from the store and binned with ``train``'s cuts."""
    offsets, first, current = era_subset_offsets(store.offsets, eras), booster.num_boosted_rounds(), [booster]

    def predict() -> np.ndarray:
        return current[0].predict(train, output_margin=True).astype(np.float64)

    def grow(worst: np.ndarray) -> None:
        rows, done = local_rows(offsets, worst), current[0].num_boosted_rounds()
        matrix = store_matrix(store, eras[worst], cols, label[rows], weight[rows], params, reference=train,
                              cache=cache, name=f"boost{done}")
        steps = [RoundSteps(tracker, ran + done - first)] if tracker else []
        current[0] = xgb.train(params, matrix, boost.trees, xgb_model=current[0], callbacks=steps, verbose_eval=False)

    steps = boost_eras(store, eras, target, boost, predict, grow)
    return current[0], describe(boost, first, steps)


def _tree_problem(tree: dict, index: int, n_features: int) -> str | None:
    """What is wrong with one JSON tree (None when nothing): scalar leaves, node arrays of
    ``num_nodes`` entries, children after their parent, each node but the root the child of exactly
    one node, split features in range, numerical splits only."""
    shape = tree["tree_param"]
    if int(shape["num_feature"]) != n_features:
        return f"{shape['num_feature']} features"
    if int(shape["size_leaf_vector"]) > 1 or int(shape["num_deleted"]):
        return "vector leaves or deleted nodes"
    n = int(shape["num_nodes"])
    ints = [np.asarray(tree[k], dtype=np.int64) for k in INT_ARRAYS]
    floats = [np.asarray(tree[k], dtype=np.float64) for k in ("split_conditions", "base_weights")]
    if tree["id"] != index or n < 1 or any(a.shape != (n,) for a in (*ints, *floats)):
        return "node arrays of the wrong length"
    left, right, parents, feature, kinds, _ = ints
    inner = np.flatnonzero(left != -1)
    children, parent = np.concatenate([left[inner], right[inner]]), np.tile(inner, 2)
    if not np.array_equal(right == -1, left == -1) or not np.array_equal(np.sort(children), np.arange(1, n)):
        return "child pointers that do not form a tree"
    if (children <= parent).any() or (parents[children] != parent).any() or parents[0] != ROOT_PARENT:
        return "child or parent pointers out of order"
    if ((feature[inner] < 0) | (feature[inner] >= n_features)).any():
        return "split features out of range"
    if kinds.any() or tree["categories"] or tree["categories_nodes"]:
        return "categorical splits"
    return None


def _model_problem(doc: dict, n_features: int) -> str | None:
    """What is wrong with a JSON model of a ``gbtree`` of ``n_features`` features and one output
    (None when nothing)."""
    learner = doc["learner"]
    booster, shape = learner["gradient_booster"], learner["learner_model_param"]
    if booster["name"] != "gbtree":
        return f"booster {booster['name']!r}, not gbtree"
    if int(shape["num_feature"]) != n_features:
        return f"{shape['num_feature']} features where model.json lists {n_features}"
    if int(shape["num_target"]) != 1 or int(shape["num_class"]) > 1:
        return "more than one output"
    float(shape["base_score"])
    model = booster["model"]
    trees, indptr = model["trees"], np.asarray(model["iteration_indptr"], dtype=np.int64)
    if (int(model["gbtree_model_param"]["num_trees"]) != len(trees) or model["tree_info"] != [0] * len(trees)
            or indptr[0] != 0 or indptr[-1] != len(trees) or (np.diff(indptr) < 1).any()):
        return "a tree count that does not match its trees"
    return next((f"tree {i}: {p}" for i, t in enumerate(trees) if (p := _tree_problem(t, i, n_features))), None)


def check_model_json(raw: bytes, file: Path, n_features: int) -> None:
    """InputError naming ``file`` unless ``raw`` is a complete XGBoost JSON model this kind saved
    (:func:`_model_problem`): XGBoost trusts a model's tree pointers, so it is never shown a bad one."""
    try:
        problem = _model_problem(json.loads(raw), n_features)
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = "not complete JSON"
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError):
        problem = "not an XGBoost tree model of the expected layout"
    if problem:
        raise damaged_file(file, problem)


def load_xgb(file: Path, n_features: int) -> XGBoostModel:
    """The model saved in ``file``, checked first (:func:`check_model_json`)."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise missing_file(file) from None
    check_model_json(raw, file, n_features)
    try:
        return XGBoostModel.from_json(raw)
    except xgb.core.XGBoostError as exc:
        raise damaged_file(file, xgboost_message(str(exc))) from None


class XGBoostKind:
    """XGBoost gradient-boosted trees (``hist``)."""

    name = "xgb"
    stops_early = True

    def check_settings(self, params: dict | None) -> dict:
        return check_settings(params)

    def resolve_device(self, device: str, settings: dict) -> str:
        return resolve_device(device, settings)

    def max_rounds(self, settings: dict) -> int:
        """The first fit's rounds and the era boosting trees."""
        boost = era_boost_of(settings, int(settings[ROUNDS]))
        return int(settings[ROUNDS]) + (boost.extra_trees if boost else 0)

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> XGBoostModel:
        """``rounds`` (all trees, era boosting's included) when given, else the settings' rounds; with
        era boosting the first fit gets ``rounds`` less the boosting trees."""
        boost = era_boost_of(settings, int(settings[ROUNDS]))
        first = first_fit_rounds(boost, int(settings[ROUNDS]), rounds)
        label, weight = data.labels(data.train_eras)
        stopping = None if data.stop_eras is None else Stopping(data.stop_eras, data.target_values(data.stop_eras),
                                                                data.early_stopping)
        return train_booster(data.store, data.train_eras, data.cols, label, weight,
                             train_params(settings, data.device, data.seed), first, stopping, tracker,
                             settings.get(EXTERNAL, "auto"), boost, data.target_values(data.train_eras))

    def load(self, model_dir: Path, target: str, meta: dict) -> XGBoostModel:
        return load_xgb(model_dir / model_file(target), len(meta["features"]))


KIND = XGBoostKind()
