"""Kind ``logistic``: the seed's baseline, L2-penalised logistic regression of ``target > 0.5``.

Rows without a target get weight 0. Features (codes, missing → 2) are standardised with the
means and stds of the training rows (one streaming pass), and with ``W = Σ weights`` the fit
minimises scikit-learn's ``LogisticRegression(C)`` objective (intercept unpenalised), scaled by 1/W:

    f(β, β₀) = Σ_i w_i·[log(1 + e^{z_i}) − y_i z_i] / W + ‖β‖² / (2·C·W),   z_i = x̃_i β + β₀

(x̃: the standardised codes) by L-BFGS (scipy, scikit-learn's ``lbfgs`` options: ``gtol = tol``,
``maxiter = max_iter``). Each evaluation of f and its gradient is one pass over the int8 store in
blocks (two numba products per block: ``z = x a + c`` and ``Σ r_i x_i``, ``r = w·(σ(z) − y)``),
so memory is a few vectors of the training rows. L-BFGS rather than Newton/IRLS: a Newton step needs the weighted Gram
``XᵀDX`` (k² per row, and the exact bit-plane Gram does not take weights) and a k×k solve
each iteration; L-BFGS needs only gradients, O(n·k) per pass (about 1 s per 100k × 2376 rows on
2 busy cores).

The model predicts the probability ``σ(z)`` (its ranking is the logit's). It is saved as
``model_<target>.npz`` (as ``linear``) with the coefficients of the raw codes (``a = β/std``, ``c = β₀ − mean·a``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from ..errors import InputError
from ..notices import warn
from .kind import FitData, Tracker, unknown_settings
from .linear import LinearModel, check_number, cpu_only, load_arrays, model_file
from .portable.linear import LogisticCodes, sigmoid
from .ridge import SUM_CHUNKS, code_blocks, code_moments, code_rmatvec, linear_predict

DEFAULTS = {"C": 1.0, "max_iter": 100, "tol": 1e-4}


class LogisticModel(LinearModel):
    """``σ(codes · coef + intercept)`` (missing codes → 2); ``std``: each feature's training std
    (importance = |coef| · std, the |coefficient| of the standardised feature)."""

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return sigmoid(linear_predict(x, self.coef, self.intercept))

    def portable(self) -> LogisticCodes:
        return LogisticCodes(self.coef, self.intercept)


def binary_labels(data: FitData) -> tuple[np.ndarray, np.ndarray]:
    """``(y, w)`` of the training rows: y = target > 0.5 (0/1), w = 0 where the target is missing."""
    target = data.target_values(data.train_eras)
    return (target > 0.5).astype(np.float64), np.isfinite(target).astype(np.float64)


def feature_moments(data: FitData, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and population std of each feature code (missing → 2) over the training rows."""
    sums = sum(code_moments(x, w[rows], SUM_CHUNKS) for rows, x in code_blocks(data.store, data.train_eras, data.cols))
    mean, square = sums / w.sum()
    return mean, np.sqrt(np.maximum(square - mean * mean, 0.0))


class LogisticObjective:
    """f and ∇f of the module doc over the standardised parameters ``θ = [β (k), β₀]``, one pass each."""

    def __init__(self, data: FitData, y: np.ndarray, w: np.ndarray, mean: np.ndarray, scale: np.ndarray, C: float):
        self.data, self.y, self.w, self.mean, self.scale, self.C = data, y, w, mean, scale, C
        self.total = w.sum()

    def raw(self, theta: np.ndarray) -> tuple[np.ndarray, float]:
        """Coefficients of the raw codes: ``a = β/scale``, ``c = β₀ − mean·a``."""
        a = theta[:-1] / self.scale
        return a, float(theta[-1] - self.mean @ a)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, c = self.raw(theta)
        loss, xr, r_sum = 0.0, np.zeros(len(a)), 0.0
        for rows, x in code_blocks(self.data.store, self.data.train_eras, self.data.cols):
            z = linear_predict(x, a, c)
            y, w = self.y[rows], self.w[rows]
            loss += float(w @ (np.logaddexp(0.0, z) - y * z))
            r = w * (sigmoid(z) - y)
            xr += code_rmatvec(x, r, SUM_CHUNKS)
            r_sum += float(r.sum())
        beta = theta[:-1]
        grad = np.append((xr - self.mean * r_sum) / self.scale + beta / self.C, r_sum) / self.total
        return loss / self.total + float(beta @ beta) / (2 * self.C * self.total), grad


class LogisticKind:
    """L2 logistic regression of ``target > 0.5`` by L-BFGS over standardised codes."""

    name = "logistic"
    stops_early = False

    def check_settings(self, params: dict | None) -> dict:
        params = dict(params or {})
        unknown_settings(self.name, params, DEFAULTS)
        settings = {**DEFAULTS, **params}
        settings["C"] = float(check_number(self.name, "C", settings["C"]))
        settings["max_iter"] = int(check_number(self.name, "max_iter", settings["max_iter"], integer=True))
        settings["tol"] = float(check_number(self.name, "tol", settings["tol"]))
        return settings

    def resolve_device(self, device: str, settings: dict) -> str:
        return cpu_only(self.name, device)

    def max_rounds(self, settings: dict) -> int:
        return settings["max_iter"]  # L-BFGS iterations

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> LogisticModel:
        y, w = binary_labels(data)
        if w.sum() == 0:
            raise InputError(f"no rows with {data.target} values in the training eras")
        mean, std = feature_moments(data, w)
        objective = LogisticObjective(data, y, w, mean, np.where(std > 0, std, 1.0), settings["C"])
        iterations = [0]

        def step(_theta) -> None:
            iterations[0] += 1
            if tracker:
                tracker.step(iterations[0], None)

        result = minimize(objective, np.zeros(len(data.cols) + 1), jac=True, method="L-BFGS-B", callback=step,
                          options={"maxiter": settings["max_iter"], "gtol": settings["tol"],
                                   "ftol": 64 * np.finfo(float).eps, "maxls": 50})
        if not result.success:
            warn(f"logistic regression of {data.target} stopped after {result.nit} L-BFGS iterations without "
                 f"converging ({result.message}); raise max_iter or tol")
        a, c = objective.raw(result.x)
        info = {"C": settings["C"], "iterations": int(result.nit), "converged": bool(result.success),
                "rows": int(np.count_nonzero(w))}
        return LogisticModel(a, c, std, info)

    def load(self, model_dir: Path, target: str, meta: dict) -> LogisticModel:
        a = load_arrays(model_dir / model_file(target), len(meta["features"]), ("coef", "std"), ("intercept",))
        return LogisticModel(a["coef"], float(a["intercept"]), a["std"], (meta.get("fitted") or {}).get(target, {}))


KIND = LogisticKind()
