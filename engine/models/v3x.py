"""Kind ``v3x``: the seed's era-block ensemble (its "EraEnsemble"), leak-free.

From the training eras ``T`` (in order) of one fit, with ``n = |T|`` and embargo ``e``:

1. **stacking eras** ``S``: the last ``max(2, ⌈stack_frac·n⌉)`` eras of ``T``;
2. **sub-model eras**: the eras of ``T`` more than ``e`` store eras before ``S`` (so at least
   ``e`` eras lie between them and ``S``), cut into ``blocks`` contiguous, disjoint blocks whose
   sizes differ by at most one (the seed's blocks overlapped by one era);
3. per block, optionally a PCA (``pca_frac`` in (0, 1)): from the block's exact Gram ``FᵀF`` of
   int8 codes (missing → 2), accumulated in row chunks, ``C = FᵀF/n − μμᵀ``; keep the fewest
   eigenvectors ``V`` whose eigenvalues reach that share of ``tr C``; the sub-model then trains
   on the scores ``(x − μ)·V``, computed a chunk of rows at a time;
4. one gradient-boosted sub-model per block (``sub_model`` ``xgb`` or ``lgbm``), the seed's
   parameters pinned: 100 trees, depth 3, learning rate 0.1, and for XGBoost the rest of 0.90's
   defaults (base_score 0.5, lambda 1, min_child_weight 1; ``hist`` rather than its ``exact``;
   LightGBM: up to 2^depth leaves). Settings may override ``n_estimators``, ``max_depth``,
   ``learning_rate``, ``subsample``, ``colsample_bytree``, ``reg_lambda``. Sub-models never stop
   early: the trainer's held-out eras are only scored;
5. the **meta-model** on ``S`` only, never seen by a sub-model: ``ŷ = b + Σ_j w_j·p_j`` over the
   sub-models' predictions ``p_j``, rows without a target left out:
   - ``ridge``: ``w = (P_cᵀP_c + α·tr(P_cᵀP_c)/m·I)⁻¹ P_cᵀy_c`` (``P_c``, ``y_c`` centred, ``m``
     blocks, ``b = ȳ − p̄·w``); ``α`` from :data:`ALPHAS` by the mean per-era Pearson corr of
     contiguous folds of ``S``, each fitted on the stacking eras more than ``e`` eras away;
   - ``simplex``: ``w ≥ 0``, ``Σw = 1`` minimising ``‖y_c − P_c w‖²`` (accelerated projected
     gradient), ``b = ȳ − p̄·w``.

Leak-free: no sub-model predicts an era it trained on for the meta-model, and the meta-model's
eras are an embargo away from every block. (The seed fitted its RidgeCV on the sub-models'
in-sample predictions of all training eras, which trusts the sub-models that memorise most.)

Files: ``model_<target>/`` holds ``v3x.json`` (:meth:`V3XModel.describe`: eras, weights, files),
a sub-model file per block and, with PCA, ``pca_<j>.npz`` (``mean``, ``components``).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import xgboost as xgb

from ..data.store import EraStore, int8_to_float32, row_runs
from ..errors import InputError, first_line
from . import xgb as xgb_kind
from .kind import FitData, Tracker, unknown_settings
from .lgb_errors import lightgbm_errors, lightgbm_failures, lightgbm_stderr_closed, predict_params
from .lgbm import LightGBMSteps, load_booster, resolve_lightgbm_device, train_booster
from .model_files import damaged_file, missing_file
from .params import BASE, device_params, with_threads
from .portable.boosters import LightGBMText, XGBoostJSON
from .portable.v3x import MIDDLE_CODE, V3X, project
from .predict import predict_rows
from .xgb_data import matrix_params, read_rows

SUB_DEFAULTS = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1,  # the seed's (XGBoost 0.90's) defaults
                "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0}
DEFAULTS = {"blocks": 3, "sub_model": "xgb", "meta": "ridge", "pca_frac": None, "stack_frac": 0.25, **SUB_DEFAULTS}
SUB_MODELS = ("xgb", "lgbm")
METAS = ("ridge", "simplex")
ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)  # ridge penalty as a share of the mean sub-model sum of squares
META_FOLDS = 5
MIN_STACK_ERAS = 2
GRAM_ROWS = 16384  # rows per Gram chunk (float32; its sums of code products, ≤ 16 each, are exact below 2^24)
SIMPLEX_STEPS = 20000
SPEC_FILE = "v3x.json"


def model_dir_name(target: str) -> str:
    return f"model_{target}"


# --- settings ---------------------------------------------------------------------------------------------

def check_settings(params: dict | None) -> dict:
    """DEFAULTS updated with ``params``; one-line InputError for unknown keys or values out of range."""
    params = dict(params or {})
    unknown_settings("v3x", params, DEFAULTS)
    s = {**DEFAULTS, **params}
    problems = [
        (_is_int(s["blocks"]) and s["blocks"] >= 1, f"blocks must be a positive integer, got {s['blocks']!r}"),
        (s["sub_model"] in SUB_MODELS, f"sub_model must be one of {', '.join(SUB_MODELS)}, got {s['sub_model']!r}"),
        (s["meta"] in METAS, f"meta must be one of {', '.join(METAS)}, got {s['meta']!r}"),
        (s["pca_frac"] is None or (_is_real(s["pca_frac"]) and 0 < s["pca_frac"] < 1),
         f"pca_frac must be in (0, 1) (the share of variance kept), got {s['pca_frac']!r}"),
        (_is_real(s["stack_frac"]) and 0 < s["stack_frac"] < 1,
         f"stack_frac must be in (0, 1) (the share of training eras held out for the meta-model), "
         f"got {s['stack_frac']!r}"),
        (_is_int(s["n_estimators"]) and s["n_estimators"] >= 1, f"n_estimators must be ≥ 1, got {s['n_estimators']!r}"),
        (_is_int(s["max_depth"]) and 1 <= s["max_depth"] <= 16, f"max_depth must be 1..16, got {s['max_depth']!r}"),
        (_is_real(s["learning_rate"]) and s["learning_rate"] > 0,
         f"learning_rate must be > 0, got {s['learning_rate']!r}"),
        (_is_real(s["subsample"]) and 0 < s["subsample"] <= 1, f"subsample must be in (0, 1], got {s['subsample']!r}"),
        (_is_real(s["colsample_bytree"]) and 0 < s["colsample_bytree"] <= 1,
         f"colsample_bytree must be in (0, 1], got {s['colsample_bytree']!r}"),
        (_is_real(s["reg_lambda"]) and s["reg_lambda"] >= 0, f"reg_lambda must be ≥ 0, got {s['reg_lambda']!r}"),
    ]
    bad = next((msg for ok, msg in problems if not ok), None)
    if bad:
        raise InputError(f"model kind 'v3x': {bad}")
    return s


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- eras -------------------------------------------------------------------------------------------------

def split_eras(train: np.ndarray, settings: dict, embargo: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(the blocks of sub-model eras, the stacking eras), as store era indices; see the module doc."""
    train = np.asarray(train, dtype=np.int64)
    n_stack = max(MIN_STACK_ERAS, math.ceil(settings["stack_frac"] * train.size))
    stack = train[-n_stack:]
    sub = train[:-n_stack]
    sub = sub[sub < stack[0] - embargo]
    n_blocks = settings["blocks"]
    if sub.size < n_blocks:
        raise InputError(f"--blocks {n_blocks} needs at least {n_blocks} sub-model eras, but the {train.size} training "
                         f"eras of this fit leave {sub.size} after the last {n_stack} for stacking and an embargo of "
                         f"{embargo}; use --blocks {max(sub.size, 1)} or fewer, more eras (or fewer --cv folds) or a "
                         "smaller stack_frac")
    return np.array_split(sub, n_blocks), stack


# --- PCA --------------------------------------------------------------------------------------------------

def _codes(store: EraStore, lo: int, hi: int, cols: np.ndarray) -> np.ndarray:
    """Rows ``lo:hi`` of the store's codes as float32, missing → the middle code 2."""
    block = read_rows(store, lo, hi, cols)
    block[np.isnan(block)] = MIDDLE_CODE
    return block


def block_gram(store: EraStore, eras: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(FᵀF, Σ_rows F, n)`` of the codes of ``eras`` (missing → 2), exact, a chunk of rows at a time."""
    k = len(cols)
    gram, total, n = np.zeros((k, k)), np.zeros(k), 0
    for lo, hi in row_runs(store.offsets, eras):
        for a in range(lo, hi, GRAM_ROWS):
            chunk = _codes(store, a, min(a + GRAM_ROWS, hi), cols)
            gram += chunk.T @ chunk
            total += chunk.sum(axis=0, dtype=np.float64)
            n += len(chunk)
    return gram, total, n


def fit_pca(store: EraStore, eras: np.ndarray, cols: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """``(μ, V)``: the column means and the fewest principal axes (columns of V, largest first, each
    signed so its largest loading is positive) whose variance reaches ``frac`` of the total."""
    gram, total, n = block_gram(store, eras, cols)
    mean = total / n
    values, vectors = np.linalg.eigh(gram / n - np.outer(mean, mean))
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    share = np.cumsum(values) / max(values.sum(), np.finfo(float).tiny)
    k = min(int(np.searchsorted(share, frac)) + 1, len(values))
    axes = vectors[:, :k]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    return mean, axes * signs


def sub_inputs(x: np.ndarray, projection: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """What a sub-model reads: int8 codes as float32 (missing NaN), or their PCA scores."""
    return int8_to_float32(x) if projection is None else project(x, *projection).astype(np.float32)


class ProjectedRows(lgb.Sequence):
    """PCA scores of store rows ``start:stop`` (columns ``cols``), computed a batch at a time."""

    batch_size = 8192

    def __init__(self, store: EraStore, start: int, stop: int, cols: np.ndarray, projection):
        self.store, self.start, self.stop, self.cols, self.projection = store, start, stop, cols, projection

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            lo, hi, _ = idx.indices(len(self))
            codes = read_rows(self.store, self.start + lo, self.start + hi, self.cols)  # missing NaN
            return project(codes, *self.projection).astype(np.float32)
        return self[int(idx):int(idx) + 1][0].astype(np.float64)


def projected_rows(data: FitData, eras: np.ndarray, projection) -> list[ProjectedRows]:
    """The PCA scores of the rows of ``eras``, one :class:`ProjectedRows` per run of consecutive rows."""
    return [ProjectedRows(data.store, lo, hi, data.cols, projection) for lo, hi in row_runs(data.store.offsets, eras)]


# --- sub-models -------------------------------------------------------------------------------------------

class _Offset:
    """A tracker seeing one sub-model's rounds as rounds of the whole V3X fit."""

    def __init__(self, tracker: Tracker, base: int):
        self.tracker, self.base = tracker, base

    def step(self, round: int, corr: float | None) -> None:
        self.tracker.step(self.base + round, corr)


def lightgbm_params(settings: dict, data: FitData) -> dict:
    """The sub-model settings in LightGBM's terms (depth-d trees: up to 2^d leaves)."""
    bagging = {"bagging_fraction": settings["subsample"], "bagging_freq": 1} if settings["subsample"] < 1 else {}
    return {**with_threads(BASE), "max_depth": settings["max_depth"], "num_leaves": 2 ** settings["max_depth"],
            "learning_rate": settings["learning_rate"], "feature_fraction": settings["colsample_bytree"],
            "lambda_l2": settings["reg_lambda"], **bagging, **device_params(data.device), "seed": data.seed}


class LightGBMSub:
    """LightGBM sub-models: trained from the store's cached Dataset, or from PCA scores."""

    name, suffix = "lgbm", ".txt"

    @staticmethod
    def fit(data: FitData, eras: np.ndarray, projection, settings: dict, tracker: Tracker | None):
        params = lightgbm_params(settings, data)
        label, weight = data.labels(eras)
        callbacks = (LightGBMSteps(tracker),) if tracker else ()
        with lightgbm_errors():
            if projection is None:
                return train_booster(data.store, eras, None, data.cols, label, weight, None, params,
                                     settings["n_estimators"], data.early_stopping, callbacks)
            train = lgb.Dataset(projected_rows(data, eras, projection), label=label, weight=weight,
                                params={**params, "verbose": -1})
            return lgb.train(params, train, settings["n_estimators"], callbacks=list(callbacks))

    @staticmethod
    def predict(booster: lgb.Booster, inputs: np.ndarray) -> np.ndarray:
        with lightgbm_failures("the V3X sub-model's predictions"):
            return booster.predict(inputs, **predict_params())

    @staticmethod
    def gain(booster: lgb.Booster) -> np.ndarray:
        return booster.feature_importance("gain")

    @staticmethod
    def save(booster: lgb.Booster, file: Path) -> None:
        with lightgbm_stderr_closed():
            booster.save_model(str(file))

    @staticmethod
    def load(file: Path, n_inputs: int, features: list[str]) -> lgb.Booster:
        return load_booster(file, features if n_inputs == len(features) else [f"Column_{i}" for i in range(n_inputs)])

    @staticmethod
    def portable(booster: lgb.Booster) -> LightGBMText:
        return LightGBMText(booster.model_to_string())


def xgboost_params(settings: dict, codes: bool = False) -> dict:
    """The sub-model settings in XGBoost's terms, with XGBoost 0.90's other defaults pinned (as the seed had them).
    ``codes``: trained on the raw codes (0..4), which 8 bins cut as 256 would, with a far smaller quantile
    sketch (the xgb kind's ``max_bin``); PCA scores are continuous and keep XGBoost's 256."""
    bins = {"max_bin": xgb_kind.DEFAULTS["max_bin"]} if codes else {}
    return {"objective": "reg:squarederror", "tree_method": "hist", "base_score": 0.5, "min_child_weight": 1.0,
            "gamma": 0.0, "reg_alpha": 0.0, **bins, **{k: settings[k] for k in SUB_DEFAULTS if k != "n_estimators"}}


class ProjectedBatches(xgb.DataIter):
    """PCA scores of store rows (:class:`ProjectedRows`) handed to XGBoost a batch at a time."""

    def __init__(self, rows: list[ProjectedRows], label: np.ndarray, weight: np.ndarray):
        self.batches = [(r, lo, min(lo + r.batch_size, len(r))) for r in rows for lo in range(0, len(r), r.batch_size)]
        self.starts = np.cumsum([0] + [hi - lo for _, lo, hi in self.batches])
        self.label, self.weight, self.position = label, weight, 0
        super().__init__(release_data=True)

    def next(self, input_data) -> bool:
        if self.position == len(self.batches):
            return False
        (rows, lo, hi), start = self.batches[self.position], self.starts[self.position]
        at = slice(start, start + hi - lo)
        input_data(data=rows[lo:hi], label=self.label[at], weight=self.weight[at])
        self.position += 1
        return True

    def reset(self) -> None:
        self.position = 0


class XGBoostSub:
    """XGBoost sub-models (the ``xgb`` kind's :func:`~eraflow.engine.models.xgb.train_booster`), or
    from PCA scores through :class:`ProjectedBatches`."""

    name, suffix = "xgb", ".json"

    @staticmethod
    def fit(data: FitData, eras: np.ndarray, projection, settings: dict, tracker: Tracker | None):
        params = xgb_kind.train_params(xgboost_params(settings, codes=projection is None), data.device, data.seed)
        label, weight = data.labels(eras)
        if projection is None:
            return xgb_kind.train_booster(data.store, eras, data.cols, label, weight, params,
                                          settings["n_estimators"], None, tracker)
        rows = projected_rows(data, eras, projection)
        callbacks = [xgb_kind.RoundSteps(tracker)] if tracker else []
        with xgb.config_context(verbosity=0), xgb_kind.xgboost_errors("training a V3X sub-model"):
            train = xgb.QuantileDMatrix(ProjectedBatches(rows, label, weight), missing=np.nan,
                                        **matrix_params(params))
            booster = xgb.train(params, train, settings["n_estimators"], callbacks=callbacks, verbose_eval=False)
        return xgb_kind.XGBoostModel.from_json(xgb_kind.portable_json(booster))

    @staticmethod
    def predict(model, inputs: np.ndarray) -> np.ndarray:
        with xgb_kind.xgboost_errors("the V3X sub-model's predictions"):
            return model.booster.inplace_predict(inputs).astype(np.float64)

    @staticmethod
    def gain(model) -> np.ndarray:
        return model.importance()

    @staticmethod
    def save(model, file: Path) -> None:
        file.write_bytes(model.raw)

    @staticmethod
    def load(file: Path, n_inputs: int, features: list[str]):
        return xgb_kind.load_xgb(file, n_inputs)

    @staticmethod
    def portable(model) -> XGBoostJSON:
        return XGBoostJSON(model.raw)


SUB_LIBRARIES = {"lgbm": LightGBMSub, "xgb": XGBoostSub}


@dataclass
class Block:
    """One sub-model: its eras (labels), its booster and, with PCA, its ``(mean, components)``."""

    train_eras: list[str]
    booster: object
    projection: tuple[np.ndarray, np.ndarray] | None
    library: type

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return self.library.predict(self.booster, sub_inputs(x, self.projection))

    def importance(self) -> np.ndarray:
        """Gain per feature; a PCA block's gain per component is shared by the squared loadings."""
        gain = np.asarray(self.library.gain(self.booster), dtype=np.float64)
        return gain if self.projection is None else self.projection[1] ** 2 @ gain


# --- meta-model -------------------------------------------------------------------------------------------

def ridge_weights(p: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """``(w, b)`` minimising ``‖y − b − P w‖² + λ‖w‖²`` with ``λ = α·tr(P_cᵀP_c)/m``."""
    p_mean, y_mean = p.mean(axis=0), y.mean()
    pc = p - p_mean
    gram = pc.T @ pc
    if np.trace(gram) == 0:
        raise InputError("every V3X sub-model predicts one value on the stacking eras, so the ridge meta-model has "
                         "nothing to weigh; use more trees, more eras or --meta simplex")
    lam = alpha * np.trace(gram) / p.shape[1]
    w = np.linalg.solve(gram + lam * np.eye(p.shape[1]), pc.T @ (y - y_mean))
    return w, float(y_mean - p_mean @ w)


def project_simplex(v: np.ndarray) -> np.ndarray:
    """The point of ``{w ≥ 0, Σw = 1}`` nearest to ``v`` (Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1
    rho = np.nonzero(u - css / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0)


def simplex_weights(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``(w, b)``: ``w`` on the simplex minimising ``‖y_c − P_c w‖²`` (FISTA), ``b = ȳ − p̄·w``."""
    p_mean, y_mean = p.mean(axis=0), y.mean()
    pc = p - p_mean
    q, c = pc.T @ pc / len(p), pc.T @ (y - y_mean) / len(p)
    m = p.shape[1]
    w = z = np.full(m, 1 / m)
    step = 1 / max(np.linalg.eigvalsh(q)[-1], np.finfo(float).tiny)
    t = 1.0
    for _ in range(SIMPLEX_STEPS):
        w_next = project_simplex(z - step * (q @ z - c))
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = w_next + (t - 1) / t_next * (w_next - w)
        done = np.abs(w_next - w).max() < 1e-13
        w, t = w_next, t_next
        if done:
            break
    return w, float(y_mean - p_mean @ w)


def era_pearson(pred: np.ndarray, y: np.ndarray, era: np.ndarray) -> np.ndarray:
    """Pearson corr of ``pred`` and ``y`` within each era label of ``era`` (sorted)."""
    cuts = np.flatnonzero(np.diff(era)) + 1
    return np.array([np.corrcoef(a, b)[0, 1] if np.std(a) > 0 and np.std(b) > 0 else 0.0
                     for a, b in zip(np.split(pred, cuts), np.split(y, cuts))])


def meta_folds(stack: np.ndarray, embargo: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(test eras, fit eras)`` of the ridge α's CV: contiguous folds of the stacking eras, each fitted
    on the stacking eras more than ``embargo`` store eras away (folds left with none are dropped)."""
    folds = []
    for fold in np.array_split(stack, min(META_FOLDS, len(stack))):
        fit = stack[(stack < fold[0] - embargo) | (stack > fold[-1] + embargo)]
        if fit.size:
            folds.append((fold, fit))
    if not folds:
        raise InputError(f"the {len(stack)} stacking eras are too few to choose the ridge alpha with an embargo of "
                         f"{embargo}: no fold keeps eras to fit on; raise stack_frac or use --meta simplex")
    return folds


def choose_alpha(p: np.ndarray, y: np.ndarray, era: np.ndarray, folds) -> tuple[float, dict]:
    """The ridge ``α`` of :data:`ALPHAS` with the best mean per-era corr of the test eras of ``folds``
    (:func:`meta_folds`; ``era``: store era index per row)."""
    scores: dict[float, list[float]] = {a: [] for a in ALPHAS}
    for test_eras, fit_eras in folds:
        test, fit = np.isin(era, test_eras), np.isin(era, fit_eras)
        for a in ALPHAS:
            w, b = ridge_weights(p[fit], y[fit], a)
            scores[a] += era_pearson(b + p[test] @ w, y[test], era[test]).tolist()
    means = {a: float(np.mean(v)) for a, v in scores.items()}
    return max(ALPHAS, key=lambda a: means[a]), means


# --- the fitted model -------------------------------------------------------------------------------------

@dataclass
class V3XModel:
    """The fitted ensemble: blocks, then ``intercept + Σ_j weights_j · block_j``."""

    blocks: list[Block]
    meta: str
    weights: np.ndarray
    intercept: float
    fit_eras: list[str]
    alpha: float | None = None
    cv_corr: dict | None = None  # alpha → mean per-era corr of the meta-model's folds (ridge)
    rounds: int | None = None

    def sub_predictions(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.column_stack([b.predict(x, offsets) for b in self.blocks])

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return self.intercept + self.sub_predictions(x, offsets) @ self.weights

    def describe(self) -> dict:
        return {"sub_model": self.blocks[0].library.name,
                "blocks": [{"train_eras": b.train_eras,
                            "components": None if b.projection is None else int(b.projection[1].shape[1])}
                           for b in self.blocks],
                "meta": {"method": self.meta, "fit_eras": self.fit_eras, "weights": self.weights.tolist(),
                         "intercept": self.intercept, "alpha": self.alpha,
                         "cv_corr": None if self.cv_corr is None else {str(a): c for a, c in self.cv_corr.items()}}}

    def save(self, model_dir: Path, target: str) -> None:
        out = model_dir / model_dir_name(target)
        out.mkdir()
        for j, block in enumerate(self.blocks):
            block.library.save(block.booster, out / f"sub_{j}{block.library.suffix}")
            if block.projection is not None:
                np.savez(out / f"pca_{j}.npz", mean=block.projection[0], components=block.projection[1])
        (out / SPEC_FILE).write_text(json.dumps(self.describe(), indent=1))

    def portable(self) -> V3X:
        return V3X([b.library.portable(b.booster) for b in self.blocks], [b.projection for b in self.blocks],
                   self.weights, self.intercept)

    def importance(self) -> np.ndarray:
        return sum(abs(w) * b.importance() for w, b in zip(self.weights, self.blocks))


# --- loading ----------------------------------------------------------------------------------------------

def _read_spec(file: Path) -> dict:
    try:
        spec = json.loads(file.read_text())
    except FileNotFoundError:
        raise missing_file(file) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged_file(file, getattr(exc, "msg", "not UTF-8 text")) from None
    problem = _spec_problem(spec)
    if problem:
        raise damaged_file(file, problem)
    return spec


def _spec_problem(spec) -> str | None:
    try:
        blocks, meta = spec["blocks"], spec["meta"]
        m = len(blocks)
        ok = (spec["sub_model"] in SUB_MODELS and m >= 1 and meta["method"] in METAS
              and len(meta["weights"]) == m and all(_is_real(w) for w in meta["weights"])
              and _is_real(meta["intercept"])
              and all(b["components"] is None or (_is_int(b["components"]) and b["components"] >= 1) for b in blocks))
    except (KeyError, TypeError):
        ok = False
    return None if ok else "not a V3X description (sub_model, blocks, meta weights and intercept)"


def _load_projection(file: Path, n_features: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as handle:
            npz = np.load(handle, allow_pickle=False)
            mean, components = npz["mean"], npz["components"]
    except FileNotFoundError:
        raise missing_file(file) from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise damaged_file(file, f"not a PCA file: {first_line(exc)}") from None
    if mean.shape != (n_features,) or components.shape != (n_features, k) or not (
            np.isfinite(mean).all() and np.isfinite(components).all()):
        raise damaged_file(file, f"expected a mean of {n_features} and {n_features} × {k} components")
    return mean.astype(np.float64), components.astype(np.float64)


def load_v3x(model_dir: Path, target: str, meta: dict) -> V3XModel:
    """The V3X model of ``target`` saved in ``model_dir``; one-line InputError for missing or damaged files."""
    folder = model_dir / model_dir_name(target)
    spec = _read_spec(folder / SPEC_FILE)
    library = SUB_LIBRARIES[spec["sub_model"]]
    features = meta["features"]
    blocks = []
    for j, b in enumerate(spec["blocks"]):
        k = b["components"]
        projection = None if k is None else _load_projection(folder / f"pca_{j}.npz", len(features), k)
        booster = library.load(folder / f"sub_{j}{library.suffix}", k or len(features), features)
        blocks.append(Block(b["train_eras"], booster, projection, library))
    m = spec["meta"]
    return V3XModel(blocks, m["method"], np.array(m["weights"], dtype=np.float64), float(m["intercept"]),
                    m.get("fit_eras", []), m.get("alpha"),
                    None if m.get("cv_corr") is None else {float(a): c for a, c in m["cv_corr"].items()})


def fit_meta(data: FitData, blocks: list[Block], stack: np.ndarray, folds) -> V3XModel:
    """The meta-model on the stacking eras ``stack`` (see the module doc), rows with a target only:
    ridge with ``α`` chosen on ``folds`` (:func:`meta_folds`), or simplex when ``folds`` is None."""
    p = np.column_stack([predict_rows(b, data.store, stack, data.cols) for b in blocks])
    y = data.target_values(stack)
    era = np.repeat(stack, np.diff(data.store.offsets)[stack])
    keep = np.isfinite(y)
    p, y, era = p[keep], y[keep].astype(np.float64), era[keep]
    if folds is None:
        return V3XModel(blocks, "simplex", *simplex_weights(p, y), data.era_labels(stack))
    alpha, cv_corr = choose_alpha(p, y, era, folds)
    return V3XModel(blocks, "ridge", *ridge_weights(p, y, alpha), data.era_labels(stack), alpha, cv_corr)


# --- the kind ---------------------------------------------------------------------------------------------

class V3XKind:
    """The era-block ensemble (see the module doc)."""

    name = "v3x"
    stops_early = False

    def check_settings(self, params: dict | None) -> dict:
        return check_settings(params)

    def resolve_device(self, device: str, settings: dict) -> str:
        if settings["sub_model"] == "lgbm":
            return resolve_lightgbm_device(device, with_threads(BASE))
        return xgb_kind.resolve_device(device, xgboost_params(settings))

    def max_rounds(self, settings: dict) -> int:
        """Every sub-model's trees, plus one step for the meta-model."""
        return settings["blocks"] * settings["n_estimators"] + 1

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> V3XModel:
        block_eras, stack = split_eras(data.train_eras, settings, data.embargo)
        folds = meta_folds(stack, data.embargo) if settings["meta"] == "ridge" else None  # checked before training
        library = SUB_LIBRARIES[settings["sub_model"]]
        blocks = []
        for j, eras in enumerate(block_eras):
            projection = None if settings["pca_frac"] is None else fit_pca(data.store, eras, data.cols,
                                                                            settings["pca_frac"])
            sub_tracker = _Offset(tracker, j * settings["n_estimators"]) if tracker else None
            booster = library.fit(data, eras, projection, settings, sub_tracker)
            blocks.append(Block(data.era_labels(eras), booster, projection, library))
        model = fit_meta(data, blocks, stack, folds)
        if tracker:
            tracker.step(self.max_rounds(settings), None)
        return model

    def load(self, model_dir: Path, target: str, meta: dict) -> V3XModel:
        return load_v3x(model_dir, target, meta)


KIND = V3XKind()
