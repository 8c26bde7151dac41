"""LightGBM training straight from a store: era CV with embargo, early stopping on per-era corr.

For each target:
1. training eras = the chosen eras with any target value, minus validation eras and the
   embargo before them; rows without a target get weight 0;
2. with ``cv`` folds (engine.cv): train on each fold's training eras, stop early on the mean
   per-era numerai_corr of its test eras, predict them (out-of-fold predictions);
3. the final model trains on every training era, for the median best round of the folds (or
   stops early on ``valid_eras``, or runs all rounds).
The model directory is built aside and renamed into place.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from eraflow.kernels import numerai_corr

from .atomic import atomic_write_parquet, atomic_writer_path, replace_dir
from .cv import default_embargo, era_splits
from .eras import eras_in_range
from .errors import InputError
from .ledger import Run
from .lgb_data import store_dataset
from .metrics import score_summary
from .params import device_params, load_params, split_rounds
from .predict import ENSEMBLE, MODEL_JSON, model_file, prediction_column, predict_rows, rank_ensemble
from .store import EraStore, era_rows, era_subset_offsets, row_runs
from .version import eraflow_version

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    targets: tuple[str, ...] = ("target",)
    feature_set: str | None = None
    features: tuple[str, ...] | None = None
    params: dict = field(default_factory=lambda: load_params("starter"))
    cv: int = 0
    embargo: int | None = None
    cv_mode: str = "expanding"
    train_eras: str | None = None
    valid_eras: str | None = None
    device: str = "cpu"
    seed: int = 0
    early_stopping_rounds: int = 100
    ensemble_weights: tuple[float, ...] | None = None


def resolve_targets(store: EraStore, patterns) -> list[str]:
    chosen = [t for t in store.target_names if any(t == p or fnmatch.fnmatchcase(t, p) for p in patterns)]
    if not chosen:
        raise InputError(f"no store target matches {list(patterns)}; the store has {', '.join(store.target_names)}")
    return chosen


def feature_selection(store: EraStore, config: TrainConfig) -> tuple[list[str], np.ndarray]:
    view = store.select(features=config.features, feature_set=config.feature_set)
    cols = np.arange(len(store.feature_names)) if view.cols is None else view.cols
    return view.feature_names, cols


def _era_indices(store: EraStore, spec: str | None) -> np.ndarray:
    if spec is None:
        return np.arange(store.n_eras)
    wanted = set(eras_in_range(store.eras, spec))
    return np.array([k for k, e in enumerate(store.eras) if e in wanted], dtype=np.int64)


def _labeled(store: EraStore, era_index: np.ndarray, t_col: int) -> np.ndarray:
    """Eras with at least one target value."""
    keep = [k for k in era_index
            if not np.isnan(store.targets[store.offsets[k]:store.offsets[k + 1], t_col]).all()]
    return np.array(keep, dtype=np.int64)


def _rows_target(store: EraStore, era_index: np.ndarray, t_col: int) -> np.ndarray:
    return np.concatenate([store.targets[lo:hi, t_col] for lo, hi in row_runs(store.offsets, era_index)])


def era_corr_metric(target: np.ndarray, offsets: np.ndarray):
    """LightGBM feval: mean over eras of numerai_corr(preds, target) (higher is better)."""
    def era_corr(preds, _dataset):
        return "era_corr", float(np.nanmean(numerai_corr(preds, target, offsets))), True
    return era_corr


def probe_params(params: dict) -> None:
    """Train one round on a tiny random set with ``params`` (device included): bad parameters and
    missing devices fail here, in a second, with a clear message."""
    x = np.random.default_rng(0).random((64, 2))
    with lightgbm_errors():
        lgb.train({**params, "min_data_in_leaf": 1, "min_data_in_bin": 1}, lgb.Dataset(x, x[:, 0]), 1)


def resolve_device(device: str, params: dict) -> str:
    """``auto`` → ``gpu`` when LightGBM's OpenCL learner finds a device, else ``cpu``; checks ``params``."""
    device_params(device)
    if device == "auto":
        try:
            probe_params({**params, "device_type": "gpu"})
            return "gpu"
        except InputError:
            device = "cpu"
    probe_params({**params, "device_type": device})
    return device


@contextmanager
def lightgbm_errors():
    """Silence LightGBM's C++ stderr (it prints fatal errors before raising) and turn its errors into advice."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    except lgb.basic.LightGBMError as exc:
        msg = str(exc).splitlines()[0]
        if "CUDA Tree Learner was not enabled" in msg:
            raise InputError("--device cuda needs LightGBM built with CUDA: run `make lightgbm-cuda`") from None
        if "OpenCL" in msg or "GPU Tree Learner was not enabled" in msg:
            raise InputError(f"--device gpu: LightGBM's OpenCL learner cannot run here ({msg}); "
                             "use --device cpu or --device auto") from None
        raise InputError(f"LightGBM refused the parameters: {msg}") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fit_booster(store: EraStore, train_eras: np.ndarray, valid_eras: np.ndarray | None, cols: np.ndarray,
                target: str, params: dict, rounds: int, stopping: int) -> tuple[lgb.Booster, np.ndarray | None]:
    """Train on ``train_eras``; with ``valid_eras`` stop early on their per-era corr.

    Returns the booster and the per-era corr of ``valid_eras`` (None without them).
    """
    t_col = store.target_names.index(target)
    y = _rows_target(store, train_eras, t_col)
    label, weight = np.nan_to_num(y, nan=0.5), np.isfinite(y).astype(np.float64)
    train = store_dataset(store, train_eras, cols, target, label, params)
    train.set_weight(weight)
    if valid_eras is None:
        return lgb.train(params, train, rounds), None
    yv = _rows_target(store, valid_eras, t_col)
    valid = store_dataset(store, valid_eras, cols, target, np.nan_to_num(yv, nan=0.5), params, reference=train)
    offsets = era_subset_offsets(store.offsets, valid_eras)
    booster = lgb.train(params, train, rounds, valid_sets=[valid], valid_names=["valid"],
                         feval=era_corr_metric(yv, offsets),
                         callbacks=[lgb.early_stopping(stopping, verbose=False)])
    preds = predict_rows(booster, store, valid_eras, cols)
    return booster, numerai_corr(preds, yv, offsets)


@dataclass
class TrainResult:
    model_dir: Path
    targets: list[str]
    features: list[str]
    cv: dict  # target → {"folds": [...], "overall": {...}}
    valid: dict  # target → summary on valid_eras
    rounds: dict  # target → rounds of the final model
    device: str
    seconds: float


def _split_eras(store: EraStore, config: TrainConfig, t_col: int, embargo: int) -> tuple[np.ndarray, np.ndarray | None]:
    chosen = _labeled(store, _era_indices(store, config.train_eras), t_col)
    if config.valid_eras is None:
        return chosen, None
    valid = _labeled(store, _era_indices(store, config.valid_eras), t_col)
    if valid.size == 0:
        raise InputError(f"--valid-eras {config.valid_eras} has no era with target values")
    lo, hi = valid.min() - embargo, valid.max() + embargo
    return chosen[(chosen < lo) | (chosen > hi)], valid


def _cross_validate(store, config, target, train, cols, params, rounds, embargo, progress):
    """Out-of-fold predictions of ``train`` eras, fold summaries with per-era corr, and the median best round."""
    splits = era_splits([store.eras[k] for k in train], config.cv, embargo, config.cv_mode)
    oof = {}
    folds, best, per_era, tested = [], [], [], []
    for i, split in enumerate(splits):
        tr, te = train[split.train], train[split.test]
        booster, corr = fit_booster(store, tr, te, cols, target, params, rounds, config.early_stopping_rounds)
        oof.update(zip(te.tolist(), np.split(predict_rows(booster, store, te, cols),
                                              np.cumsum(np.diff(store.offsets)[te])[:-1])))
        best.append(booster.best_iteration or rounds)
        per_era.append(corr)
        tested += [store.eras[k] for k in te]
        folds.append({"fold": i, "test_eras": [store.eras[te[0]], store.eras[te[-1]]], "train_eras": len(tr),
                      "best_round": best[-1], **score_summary(corr)})
        if progress:
            progress(f"cv {target}", 1, len(splits))
    scores = np.concatenate(per_era)
    report = {"folds": folds, "overall": score_summary(scores), "per_era": dict(zip(tested, scores.tolist()))}
    return oof, report, int(np.median(best))


def train_models(store: EraStore, out_dir: str | Path, config: TrainConfig, command: str = "",
                 progress: Progress | None = None) -> TrainResult:
    """Train one model per target (plus a rank ensemble) into ``out_dir``; see the module doc."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file; give a directory for the model")
    targets = resolve_targets(store, config.targets)
    names, cols = feature_selection(store, config)
    base, max_rounds = split_rounds(config.params)
    device = resolve_device(config.device, base)
    params = {**base, **device_params(device), "seed": config.seed}
    tmp = atomic_writer_path(out_dir)
    tmp.mkdir(parents=True)
    cv_report, valid_report, rounds_used, oof_columns = {}, {}, {}, {}
    try:
        for target in targets:
            t_col = store.target_names.index(target)
            embargo = config.embargo if config.embargo is not None else default_embargo(target)
            train, valid = _split_eras(store, config, t_col, embargo)
            if train.size == 0:
                raise InputError(f"no training eras with {target} values left; check --train-eras/--valid-eras")
            rounds = max_rounds
            if config.cv:
                oof, cv_report[target], rounds = _cross_validate(store, config, target, train, cols, params,
                                                                 max_rounds, embargo, progress)
                oof_columns[target] = oof
            booster, corr = fit_booster(store, train, valid, cols, target, params, rounds,
                                        config.early_stopping_rounds)
            if corr is not None:
                valid_report[target] = score_summary(corr)
            rounds_used[target] = booster.best_iteration or rounds
            booster.save_model(str(tmp / model_file(target)), num_iteration=rounds_used[target])
            if progress:
                progress("training", 1, len(targets))
        if oof_columns:
            _write_oof(store, tmp / "oof.parquet", oof_columns, config)
        meta = {"features": names, "targets": targets, "params": {**params, "n_estimators": max_rounds},
                "rounds": rounds_used, "device": device, "store": str(store.path),
                "store_fingerprint": store.fingerprint, "config": {**asdict(config), "params": None},
                "cv": cv_report, "valid": valid_report, "ensemble_weights": config.ensemble_weights,
                "command": command, "eraflow_version": eraflow_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=1, default=float))
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrainResult(out_dir, targets, names, cv_report, valid_report, rounds_used, device,
                       time.perf_counter() - started)


def _write_oof(store: EraStore, path: Path, oof: dict[str, dict[int, np.ndarray]], config: TrainConfig) -> None:
    """Out-of-fold predictions for the eras every target's CV covered: id, era, one column per target."""
    eras = sorted(set.intersection(*(set(o) for o in oof.values())))
    era_index = np.array(eras, dtype=np.int64)
    columns = {prediction_column(t): np.concatenate([o[k] for k in eras]) for t, o in oof.items()}
    if len(columns) > 1:
        offsets = era_subset_offsets(store.offsets, era_index)
        columns[ENSEMBLE] = rank_ensemble(np.column_stack(list(columns.values())), offsets,
                                          config.ensemble_weights)
    rows = era_rows(store.offsets, era_index)
    table = {"id": pa.array(store.ids[rows], pa.string()),
             "era": pa.array(np.repeat([store.eras[k] for k in eras], np.diff(store.offsets)[era_index]), pa.string()),
             **{k: pa.array(v.astype(np.float32)) for k, v in columns.items()}}
    atomic_write_parquet(path, pa.table(table))


def training_run(result: TrainResult, store: EraStore, config: TrainConfig, command: str) -> Run:
    """The ledger record of a training: CV and validation summaries, per-era out-of-fold corr."""
    metrics = {**{f"cv_{t}": r["overall"] for t, r in result.cv.items()},
               **{f"valid_{t}": s for t, s in result.valid.items()}}
    per_era = [("oof", t, era, corr) for t, r in result.cv.items() for era, corr in r["per_era"].items()]
    params = {**config.params, "cv": config.cv, "cv_mode": config.cv_mode, "embargo": config.embargo,
              "device": result.device, "rounds": result.rounds}
    return Run("train", command, params, store.fingerprint, result.targets, result.features, metrics,
               {"model_dir": str(result.model_dir.resolve())}, per_era)
