"""Kind ``linear``: ridge regression on the feature codes, solved from exact per-era int8 Grams.

One pass over the training eras computes each era's normal equations (:mod:`.ridge`: the exact
bit-plane Gram ``F1ᵀF1``, ``F1ᵀy``; rows without a target dropped, missing codes read as 2). With
several ``alphas`` the per-row penalty α is chosen by era CV: ``cv_folds`` contiguous blocks of
the training eras (``blocked`` folds, ``data.embargo`` store eras dropped on both sides of each
test block). Each era's system is added into the total and into the training sum of every fold
it trains, so memory holds ``cv_folds + 1`` systems of ``(k+1)²`` floats (45 MB each for 2376
features) plus the eras in flight, never one system per era. A second pass predicts each fold's
test eras with that fold's coefficients for every α (``F_test β``); α scores the mean over folds
of the fold's mean per-era numerai_corr, and the best one is refitted on the total system.
Cost: the Gram pass (about 1 s per 5000-row era at 2376 features on one busy core), then
``cv_folds · len(alphas) + 1`` dense k×k solves (1.6 s each at k = 2376 on 2 busy cores).

Settings: ``alphas`` (default 1e-3 … 1e3, seven powers of ten; α per row, i.e. scikit-learn's
``Ridge(alpha=α·n)``), ``cv_folds`` (default 5). The model is saved as ``model_<target>.npz``.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eraflow.kernels import numerai_corr

from ..data.store import era_blocks, era_subset_offsets, read_codes, row_runs
from ..errors import InputError
from .kind import FitData, Tracker, unknown_settings
from .model_files import damaged_file, missing_file
from .portable.linear import LinearCodes
from .predict import PREDICT_BATCH_ROWS
from .ridge import (
    NormalEquations,
    code_matmul,
    era_equations_stream,
    linear_predict,
    ridge_coefficients,
)

DEFAULTS = {"alphas": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0], "cv_folds": 5}


def model_file(target: str) -> str:
    return f"model_{target}.npz"


def cpu_only(kind: str, device: str) -> str:
    """``cpu`` for ``cpu``/``auto``; InputError for any other device."""
    if device in ("cpu", "auto"):
        return "cpu"
    raise InputError(f"model kind {kind!r} runs on the CPU; use --device cpu (not {device!r})")


def check_number(kind: str, name: str, value, integer: bool = False, least: float = 0.0) -> float:
    """``value`` when it is a finite number (an integer when ``integer``) above ``least``."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= least:
        what = "an integer" if integer else "a number"
        raise InputError(f"model kind {kind!r}: {name} must be {what} above {least:g}, got {value!r}")
    return value


def save_arrays(file: Path, **arrays: np.ndarray) -> None:
    with open(file, "wb") as out:
        np.savez(out, **arrays)


def load_arrays(file: Path, n_features: int, vectors: tuple[str, ...], scalars: tuple[str, ...]) -> dict:
    """The arrays of a model ``.npz``: ``vectors`` of ``n_features`` and ``scalars``, all finite;
    a one-line InputError when the file is missing or damaged."""
    try:
        with open(file, "rb") as handle:
            z = np.load(handle, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise damaged_file(file, "not an .npz archive")
            with z:
                arrays = {name: np.asarray(z[name], np.float64) for name in vectors + scalars}
    except FileNotFoundError:
        raise missing_file(file) from None
    except KeyError as exc:
        raise damaged_file(file, f"no array {exc}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise damaged_file(file, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}") \
            from None
    for name in vectors:
        if arrays[name].shape != (n_features,):
            raise damaged_file(file, f"{name} holds {arrays[name].size} values for {n_features} features")
    for name in scalars:
        if arrays[name].shape != ():
            raise damaged_file(file, f"{name} is not one number")
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise damaged_file(file, "it holds values that are not finite")
    return arrays


@dataclass
class LinearModel:
    """``prediction = codes · coef + intercept`` (missing codes → 2); ``std``: each feature's
    training std (importance = |coef| · std, the spread of the prediction the feature moves)."""

    coef: np.ndarray
    intercept: float
    std: np.ndarray
    info: dict = field(default_factory=dict)
    rounds: int | None = None

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return linear_predict(x, self.coef, self.intercept)

    def save(self, model_dir: Path, target: str) -> None:
        save_arrays(model_dir / model_file(target), coef=self.coef, intercept=np.float64(self.intercept),
                    std=self.std)

    def portable(self) -> LinearCodes:
        return LinearCodes(self.coef, self.intercept)

    def importance(self) -> np.ndarray:
        return np.abs(self.coef) * self.std

    def describe(self) -> dict:
        return self.info


def alpha_folds(data: FitData, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training eras, test eras) of the alpha CV: blocked folds with the embargo on both sides."""
    from .train import cv_splits  # the trainer imports kinds lazily; this avoids a cycle at import

    try:
        return cv_splits(data.store, data.train_eras, n_folds, data.embargo, "blocked")
    except InputError as exc:
        raise InputError(f"linear alpha CV over {len(data.train_eras)} training eras: {exc} "
                         "(set cv_folds lower, or give one alpha to skip the CV)") from None


def accumulate(data: FitData, folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[NormalEquations,
                                                                                   list[NormalEquations]]:
    """One pass over the training eras: the total system and each fold's training system."""
    k = len(data.cols)
    total = NormalEquations.zeros(k)
    fold_sums = [NormalEquations.zeros(k) for _ in folds]
    trains = [set(tr.tolist()) for tr, _ in folds]
    stream = era_equations_stream(data.store, data.train_eras, data.cols, data.target_col)
    for era, eq in zip(data.train_eras.tolist(), stream):
        total.add(eq)
        for train, fold_sum in zip(trains, fold_sums):
            if era in train:
                fold_sum.add(eq)
    return total, fold_sums


def fold_scores(data: FitData, test: np.ndarray, eq: NormalEquations, alphas: list[float]) -> np.ndarray:
    """Mean per-era numerai_corr over ``test`` eras of the ridge fits of ``eq``, one per alpha."""
    coef, intercept = ridge_coefficients(eq, alphas)
    store, per_era = data.store, []
    for group in era_blocks(store.offsets, test, PREDICT_BATCH_ROWS):
        x = np.concatenate([read_codes(store, lo, hi, data.cols) for lo, hi in row_runs(store.offsets, group)])
        preds = code_matmul(x, coef) + intercept  # rows × alphas
        per_era.append(numerai_corr(preds, data.target_values(group), era_subset_offsets(store.offsets, group)))
    return finite_mean(np.concatenate(per_era))


def finite_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite values (NaN where there is none)."""
    ok = np.isfinite(values)
    count = ok.sum(axis=0)
    return np.where(count > 0, np.where(ok, values, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


def json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def choose_alpha(data: FitData, folds, fold_sums, alphas: list[float]) -> tuple[float, list[dict]]:
    """The alpha with the best mean fold score, and the CV table (one row per alpha)."""
    scores = np.array([fold_scores(data, te, eq, alphas) for (_, te), eq in zip(folds, fold_sums)])  # folds × alphas
    mean = finite_mean(scores)
    best = int(np.nanargmax(mean)) if np.isfinite(mean).any() else 0
    table = [{"alpha": a, "corr": json_number(m), "fold_corr": [json_number(s) for s in scores[:, i]]}
             for i, (a, m) in enumerate(zip(alphas, mean))]
    return alphas[best], table


class LinearKind:
    """Ridge regression (intercept unpenalised) with the alpha chosen by era CV."""

    name = "linear"
    stops_early = False

    def check_settings(self, params: dict | None) -> dict:
        params = dict(params or {})
        unknown_settings(self.name, params, DEFAULTS)
        settings = {**DEFAULTS, **params}
        alphas = settings["alphas"]
        alphas = list(alphas) if isinstance(alphas, (list, tuple)) else [alphas]
        if not alphas:
            raise InputError("model kind 'linear': alphas must list at least one alpha")
        settings["alphas"] = [float(check_number(self.name, "each alpha", a)) for a in alphas]
        settings["cv_folds"] = int(check_number(self.name, "cv_folds", settings["cv_folds"], integer=True, least=1))
        return settings

    def resolve_device(self, device: str, settings: dict) -> str:
        return cpu_only(self.name, device)

    def max_rounds(self, settings: dict) -> int:
        return 2 if len(settings["alphas"]) > 1 else 1  # passes over the training eras

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> LinearModel:
        alphas = settings["alphas"]
        folds = alpha_folds(data, settings["cv_folds"]) if len(alphas) > 1 else []
        total, fold_sums = accumulate(data, folds)
        if total.rows == 0:
            raise InputError(f"no rows with {data.target} values in the training eras")
        if tracker:
            tracker.step(1, None)
        info: dict = {"rows": total.rows}
        alpha = alphas[0]
        if folds:
            alpha, table = choose_alpha(data, folds, fold_sums, alphas)
            info.update(cv_folds=len(folds), alpha_cv=table)
            if tracker:
                tracker.step(2, None)
        coef, intercept = ridge_coefficients(total, [alpha])
        return LinearModel(coef[0], float(intercept[0]), total.feature_std(), {"alpha": alpha, **info})

    def load(self, model_dir: Path, target: str, meta: dict) -> LinearModel:
        a = load_arrays(model_dir / model_file(target), len(meta["features"]), ("coef", "std"), ("intercept",))
        return LinearModel(a["coef"], float(a["intercept"]), a["std"], (meta.get("fitted") or {}).get(target, {}))


KIND = LinearKind()
