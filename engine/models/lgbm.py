"""Kind ``lgbm``: one LightGBM booster per target, trained from the store's cached binary Dataset.

Settings are LightGBM parameters (a preset or a params.toml, :mod:`~eraflow.engine.models.params`)
and the era boosting keys (:mod:`~eraflow.engine.models.era_boost`); with stopping eras, training
stops early on their mean per-era numerai_corr. The booster is saved as ``model_<target>.txt``
(LightGBM's text format), checked before LightGBM reads it.

Era boosting continues the first fit's booster on a subset of its binned training Dataset
(``Dataset.subset``: the worst eras' binned rows, the same bins, no float copy); the per-era corr of
each step comes from predicting the training eras from the store a block of whole eras at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from eraflow.kernels import numerai_corr

from ..data.store import EraStore, era_subset_offsets, int8_to_float32
from ..errors import InputError
from ..notices import warn
from .era_boost import (
    EraBoost,
    boost_eras,
    describe,
    era_boost_of,
    first_fit_rounds,
    local_rows,
    predict_block_rows,
    without_era_boost,
)
from .kind import FitData, Tracker
from .lgb_data import lightgbm_names, predict_codes, store_dataset
from .lgb_errors import lightgbm_errors, lightgbm_failures, lightgbm_stderr_closed, predict_params
from .model_files import check_model_text, damaged_file, missing_file
from .opencl import cuda_device_name, lightgbm_opencl_device
from .params import DeviceChoice, device_params, load_params, split_rounds, with_threads, without_clash
from .portable.boosters import LightGBMText
from .predict import predict_rows


def model_file(target: str) -> str:
    return f"model_{target}.txt"


def era_corr_metric(target: np.ndarray, offsets: np.ndarray):
    """LightGBM feval: mean over eras of numerai_corr(preds, target) (higher is better)."""
    def era_corr(preds, _dataset):
        return "era_corr", float(np.nanmean(numerai_corr(preds, target, offsets))), True
    return era_corr


def unknown_lightgbm(kind: str, params: dict) -> None:
    """InputError naming the parameters in ``params`` that LightGBM does not know."""
    unknown = sorted(k for k in params if k not in lightgbm_names())
    if unknown:
        raise InputError(f"model kind {kind!r} takes no parameter {', '.join(map(repr, unknown))}: it takes "
                         "LightGBM's parameters (https://lightgbm.readthedocs.io/en/stable/Parameters.html)")


def probe_params(params: dict) -> None:
    """Train one round on a tiny random set with ``params`` (device included): bad parameters and
    missing devices fail here, in a second, with a clear message. Its features take 5 values, as
    Numerai's do, so the OpenCL learner compiles the kernel training will use (16 bins; PoCL caches it)."""
    x = np.random.default_rng(0).integers(0, 5, (64, 2)).astype(np.float64)
    with lightgbm_errors():
        lgb.train({**without_clash(params), "min_data_in_leaf": 1, "min_data_in_bin": 1}, lgb.Dataset(x, x[:, 0]), 1)


def cuda_name(params: dict) -> str | None:
    """The name of the CUDA device LightGBM's CUDA learner uses (``gpu_device_id``, default 0), if known."""
    name = cuda_device_name(max(int(params.get("gpu_device_id", -1)), 0))
    return f"{name} (CUDA)" if name else None


def opencl_choice(params: dict) -> DeviceChoice:
    """``--device gpu``: LightGBM's OpenCL device (:func:`~eraflow.engine.models.opencl.lightgbm_opencl_device`);
    a warning when it is not a GPU (PoCL's CPU device trains several times slower than the CPU learner)."""
    found = lightgbm_opencl_device(params)
    if found is not None and not found.is_gpu:
        warn(f"--device gpu: LightGBM's OpenCL device is {found.describe()}, not a GPU: it trains slower than "
             "--device cpu (LightGBM's CPU learner)")
    return DeviceChoice("gpu", "gpu", found.describe() if found else None)


def auto_choice(params: dict) -> DeviceChoice:
    """``--device auto``: cuda when LightGBM's CUDA learner trains here (a CUDA build and a GPU), else gpu
    when LightGBM's OpenCL device is of type GPU and trains, else cpu, saying why."""
    try:
        probe_params({**params, "device_type": "cuda"})
        return DeviceChoice("cuda", "auto", cuda_name(params))
    except InputError:
        pass
    found = lightgbm_opencl_device(params)
    if found is None:
        why = "no OpenCL or CUDA device found"
    elif not found.is_gpu:
        why = f"no GPU: LightGBM's OpenCL device is {found.describe()}, slower than the CPU learner"
    else:
        try:
            probe_params({**params, "device_type": "gpu"})
            return DeviceChoice("gpu", "auto", found.describe())
        except InputError:
            why = f"LightGBM's OpenCL learner failed on {found.describe()}"
    probe_params({**params, "device_type": "cpu"})
    return DeviceChoice("cpu", "auto", why=why)


def choose_lightgbm_device(device: str, params: dict) -> DeviceChoice:
    """The device LightGBM trains on for ``--device device``, ``params`` checked by a one-round probe on it:
    cpu; gpu, the OpenCL learner (:func:`opencl_choice`); cuda, the CUDA learner (a CUDA build of LightGBM);
    auto (:func:`auto_choice`), never a CPU OpenCL device."""
    device_params(device)
    if device == "auto":
        return auto_choice(params)
    probe_params({**params, "device_type": device})
    if device == "gpu":
        return opencl_choice(params)
    return DeviceChoice(device, device, cuda_name(params) if device == "cuda" else None)


def resolve_lightgbm_device(device: str, params: dict) -> str:
    """The device of :func:`choose_lightgbm_device`: ``cpu``, ``gpu`` or ``cuda``."""
    return choose_lightgbm_device(device, params).device


class LightGBMSteps:
    """LightGBM callback telling a :class:`~eraflow.engine.models.kind.Tracker` of each round."""

    order = 20  # before lgb.early_stopping (30), which ends training by raising

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def __call__(self, env) -> None:
        corr = next((float(r[2]) for r in env.evaluation_result_list if r[1] == "era_corr"), None)
        self.tracker.step(env.iteration - env.begin_iteration + 1, corr)


def train_booster(store: EraStore, train_eras: np.ndarray, valid_eras: np.ndarray | None, cols: np.ndarray,
                  label: np.ndarray, weight: np.ndarray, valid_label: np.ndarray | None, params: dict, rounds: int,
                  stopping: int, callbacks: tuple = (), keep: bool = False) -> lgb.Booster:
    """Train on ``train_eras``; with ``valid_eras`` stop early on their per-era corr. ``keep``: the
    booster keeps its training Dataset (``booster.train_set``) and can go on training."""
    train = store_dataset(store, train_eras, cols, label, params)
    train.set_weight(weight)
    if valid_eras is None:
        return lgb.train(params, train, rounds, callbacks=list(callbacks), keep_training_booster=keep)
    valid = store_dataset(store, valid_eras, cols, np.nan_to_num(valid_label, nan=0.5), params, reference=train)
    offsets = era_subset_offsets(store.offsets, valid_eras)
    return lgb.train(params, train, rounds, valid_sets=[valid], valid_names=["valid"],
                     feval=era_corr_metric(valid_label, offsets), keep_training_booster=keep,
                     callbacks=[*callbacks, lgb.early_stopping(stopping, verbose=False)])


def era_boosted(booster: lgb.Booster, data: FitData, boost: EraBoost, tracker: Tracker | None) -> LightGBMModel:
    """The model of ``booster`` (trained with ``keep``, on ``data.train_eras``) after era boosting:
    cut back to its best round when it stopped early, then ``boost.steps`` times ``boost.trees`` more
    trees fit on the worst eras' rows of its training Dataset
    (:func:`~eraflow.engine.models.era_boost.boost_eras`)."""
    ran = booster.current_iteration()
    for _ in range(ran - (booster.best_iteration or ran)):
        booster.rollback_one_iter()
    first, train = booster.current_iteration(), booster.train_set
    offsets = era_subset_offsets(data.store.offsets, data.train_eras)

    def predict() -> np.ndarray:
        return predict_rows(LightGBMModel(booster, booster.current_iteration()), data.store, data.train_eras, data.cols,
                            predict_block_rows(len(data.cols)))

    last: list[lgb.Dataset] = []  # the booster's previous training subset, alive until it has moved off it

    def grow(worst: np.ndarray) -> None:
        rows = train.subset(local_rows(offsets, worst))
        rows.free_raw_data = True  # binned rows of `train`: no raw data to keep (a cached one's is a file name)
        for _ in range(boost.trees):
            booster.update(train_set=rows)  # LightGBM reads the previous training data while it moves off it
            if tracker:
                tracker.step(ran + booster.current_iteration() - first, None)
        last[:] = [rows]

    steps = boost_eras(data.store, data.train_eras, data.target_values(data.train_eras), boost, predict, grow)
    rounds = booster.current_iteration()
    booster.model_from_string(booster.model_to_string(num_iteration=rounds)).free_dataset()  # as lgb.train does
    booster.best_iteration = rounds  # every tree, boosting's included: no stale best round of the first fit
    return LightGBMModel(booster, rounds, describe(boost, first, steps))


@dataclass
class LightGBMModel:
    """A fitted LightGBM booster; ``rounds``: the rounds it predicts with (best, when it stopped early)."""

    booster: lgb.Booster
    rounds: int | None = None
    info: dict = field(default_factory=dict)  # what model.json records of the fit (era boosting)

    def __post_init__(self):
        if self.rounds is None:  # best_iteration is 0 without early stopping, −1 for a booster read from a file
            best = self.booster.best_iteration
            self.rounds = best if best > 0 else self.booster.current_iteration()

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        with lightgbm_failures("the model's predictions"):
            return predict_codes(self.booster, x, num_iteration=self.rounds, **predict_params())

    def save(self, model_dir: Path, target: str) -> None:
        with lightgbm_stderr_closed():
            self.booster.save_model(str(model_dir / model_file(target)), num_iteration=self.rounds)

    def portable(self) -> LightGBMText:
        return LightGBMText(self.booster.model_to_string(num_iteration=self.rounds))

    def importance(self) -> np.ndarray:
        return self.booster.feature_importance("gain", iteration=self.rounds)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-row, per-feature contributions (SHAP values; the bias column dropped)."""
        return self.booster.predict(int8_to_float32(x), num_iteration=self.rounds, pred_contrib=True)[:, :-1]

    def describe(self) -> dict:
        return self.info


def load_booster(file: Path, features: list[str]) -> lgb.Booster:
    """The booster in ``file``, checked first (:func:`check_model_text`) so LightGBM never reads a damaged file."""
    try:
        check_model_text(file.read_bytes(), file, features)
    except FileNotFoundError:
        raise missing_file(file) from None
    try:
        with lightgbm_failures(str(file)):
            return lgb.Booster(model_file=str(file))
    except ValueError as exc:  # the Python package's own parsing of the parameters (JSON)
        raise damaged_file(file, str(exc)) from None


class LightGBMKind:
    """LightGBM gradient boosting (``boosting`` from the settings; ``gbdt`` by default)."""

    name = "lgbm"
    stops_early = True
    preset = "starter"  # settings when --params is not given

    def check_settings(self, params: dict | None) -> dict:
        settings = dict(load_params(self.preset) if params is None else params)
        unknown_lightgbm(self.name, without_era_boost(settings))
        era_boost_of(settings, split_rounds(settings)[1])
        return settings

    def resolve_device(self, device: str, settings: dict) -> str:
        return self.choose_device(device, settings).device

    def choose_device(self, device: str, settings: dict) -> DeviceChoice:
        """The device, its name and why it was chosen (:func:`choose_lightgbm_device`)."""
        return choose_lightgbm_device(device, with_threads(split_rounds(without_era_boost(settings))[0]))

    def max_rounds(self, settings: dict) -> int:
        """The first fit's rounds and the era boosting trees."""
        rounds = split_rounds(settings)[1]
        boost = era_boost_of(settings, rounds)
        return rounds + (boost.extra_trees if boost else 0)

    def train_params(self, data: FitData, settings: dict) -> dict:
        """LightGBM's parameters for a fit: the settings less the rounds and era boosting, with threads,
        device and seed."""
        base = without_clash(with_threads(split_rounds(without_era_boost(settings))[0]))
        return {**base, **device_params(data.device), "seed": data.seed}

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> LightGBMModel:
        """``rounds`` (all trees, era boosting's included) when given, else the settings' rounds; with
        era boosting the first fit gets ``rounds`` less the boosting trees."""
        boost = era_boost_of(settings, split_rounds(settings)[1])
        first = first_fit_rounds(boost, split_rounds(settings)[1], rounds)
        label, weight = data.labels(data.train_eras)
        valid_label = None if data.stop_eras is None else data.target_values(data.stop_eras)
        with lightgbm_errors():
            booster = train_booster(data.store, data.train_eras, data.stop_eras, data.cols, label, weight,
                                    valid_label, self.train_params(data, settings), first, data.early_stopping,
                                    (LightGBMSteps(tracker),) if tracker else (), keep=boost is not None)
            return LightGBMModel(booster) if boost is None else era_boosted(booster, data, boost, tracker)

    def load(self, model_dir: Path, target: str, meta: dict) -> LightGBMModel:
        return LightGBMModel(load_booster(model_dir / model_file(target), meta["features"]))


KIND = LightGBMKind()
