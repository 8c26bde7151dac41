"""Linear models on store codes, out of core: exact per-era normal equations, ridge solves and
products of int8 code blocks with coefficients.

Codes are int8 0..4 with missing −1 read as 2 (``MIDDLE_CODE``, eraflow's convention). For the
rows of an era that have a target (NaN targets dropped), with ``F1 = [F, 1]``:

    G_e = F1ᵀF1   exact integers: the bit-plane popcount Gram of the kernels (:mod:`eraflow.kernels._numba_codegram`)
    b_e = F1ᵀy,  yy_e = yᵀy

The system of any set of eras is the sum of theirs (:class:`NormalEquations`). Ridge with an
unpenalised intercept solves the centred system (:func:`ridge_coefficients`)

    (C + α·n·I) β = c,   C = FᵀF − s sᵀ/n,   c = Fᵀy − s·Σy/n,   s = Fᵀ1,   β₀ = (Σy − sᵀβ)/n

``α`` is per row: β minimises ``Σ(y − Fβ − β₀)²/n + α‖β‖²``, scikit-learn's ``Ridge(alpha=α·n)``,
so one α means the same shrinkage on a CV fold and on all training eras.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from eraflow.kernels._checks import MISSING_CODE
from eraflow.kernels._numba_codegram import code_gram, plane_words
from eraflow.kernels._numba_linalg import FASTMATH, cross, design_from_codes, float64_gram
from eraflow.kernels._xp_linalg import MIDDLE_CODE

from ..data.store import EraStore, read_codes, row_runs

GRAM_WORKERS = 8  # eras whose Grams are computed at once (each holds its rows as float32 and a Gram)
BLOCK_ROWS = 32_768  # rows of int8 codes read at a time by streaming passes
SUM_CHUNKS = 16  # partial sums of code_rmatvec: a fixed number, so results do not depend on threads


@dataclass
class NormalEquations:
    """``gram = F1ᵀF1`` ((k+1)², the intercept last), ``b = F1ᵀy``, ``yy = yᵀy`` of a set of rows."""

    gram: np.ndarray
    b: np.ndarray
    yy: float = 0.0

    @classmethod
    def zeros(cls, k: int) -> NormalEquations:
        return cls(np.zeros((k + 1, k + 1)), np.zeros(k + 1))

    @property
    def rows(self) -> int:
        return int(self.gram[-1, -1])

    def add(self, other: NormalEquations) -> None:
        self.gram += other.gram
        self.b += other.b
        self.yy += other.yy

    def feature_std(self) -> np.ndarray:
        """Population std of each feature over the rows: ``sqrt((G_jj − s_j²/n)/n)``."""
        n, s = self.gram[-1, -1], self.gram[:-1, -1]
        return np.sqrt(np.maximum(np.diag(self.gram)[:-1] - s * s / n, 0.0) / n)


def era_equations(codes: np.ndarray, y: np.ndarray, w: np.ndarray, planes: np.ndarray) -> NormalEquations:
    """The normal equations of one era's rows with a target: ``codes (n, k)`` int8, ``y (n,)``;
    ``w`` (≥ n·k float32) and ``planes (k, 3, ≥ plane_words(n))`` are scratch."""
    k = codes.shape[1]
    rows = np.flatnonzero(np.isfinite(y))
    out = NormalEquations.zeros(k)
    if rows.size == 0:
        return out
    design = w[:rows.size * k].reshape(rows.size, k)
    words = plane_words(rows.size)
    mean, _, small_codes = design_from_codes(codes, rows, design, planes, words)
    kept = y[rows].astype(np.float64)
    sums = np.rint(mean * rows.size)  # Fᵀ1: integers (mean = total / n)
    out.gram[:k, :k] = code_gram(planes, words) if small_codes else float64_gram(design)
    out.gram[:k, k] = out.gram[k, :k] = sums
    out.gram[k, k] = rows.size
    out.b[:k] = cross(design, kept[:, None])[:, 0]
    out.b[k] = kept.sum()
    out.yy = float(kept @ kept)
    return out


def era_equations_stream(store: EraStore, eras: np.ndarray, cols: np.ndarray,
                         target_col: int) -> Iterator[NormalEquations]:
    """:func:`era_equations` of each era of ``eras``, in order, computed ``GRAM_WORKERS`` eras at a
    time on threads (the numba pieces release the GIL)."""
    k = len(cols)
    largest = int(np.diff(store.offsets)[eras].max(initial=0))
    local = threading.local()

    def one(era: int) -> NormalEquations:
        if not hasattr(local, "w"):
            local.w = np.empty(largest * k, np.float32)
            local.planes = np.empty((k, 3, plane_words(largest)), np.uint64)
        lo, hi = store.offsets[era], store.offsets[era + 1]
        return era_equations(read_codes(store, lo, hi, cols), np.asarray(store.targets[lo:hi, target_col]),
                             local.w, local.planes)

    workers = max(1, min(GRAM_WORKERS, numba.get_num_threads()))
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for era in np.asarray(eras).tolist():
            pending.append(pool.submit(one, era))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def ridge_coefficients(eq: NormalEquations, alphas) -> tuple[np.ndarray, np.ndarray]:
    """``(coef (A, k), intercept (A,))`` of ridge with per-row ``alphas`` (see the module doc)."""
    n, s = eq.gram[-1, -1], eq.gram[:-1, -1]
    cov = eq.gram[:-1, :-1] - np.outer(s, s) / n
    c = eq.b[:-1] - s * eq.b[-1] / n
    diagonal = np.diag_indices(len(s))
    coef = []
    for alpha in alphas:
        system = cov.copy()
        system[diagonal] += alpha * n
        coef.append(np.linalg.solve(system, c))
    coef = np.array(coef).reshape(len(coef), len(s))
    return coef, (eq.b[-1] - coef @ s) / n


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def code_matmul(x, coef_t):
    """``F (n, m)`` products of int8 codes ``x (n, k)`` (missing → 2) with ``coef_t (m, k)``: ``x @ coef_t.T``."""
    n, k = x.shape
    m = coef_t.shape[0]
    out = np.zeros((n, m))
    for r in prange(n):
        for j in range(m):
            total = 0.0
            for i in range(k):
                code = x[r, i]
                total += coef_t[j, i] * (MIDDLE_CODE if code == MISSING_CODE else code)
            out[r, j] = total
    return out


@njit(parallel=True, cache=True)
def code_rmatvec(x, weights, chunks):
    """``Σ_rows weights[r] · x[r]`` (k,) of int8 codes ``x (n, k)`` (missing → 2), summed in
    ``chunks`` fixed row ranges (deterministic whatever the threads)."""
    n, k = x.shape
    part = np.zeros((chunks, k))
    for c in prange(chunks):
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            wr = weights[r]
            if wr != 0.0:
                for i in range(k):
                    code = x[r, i]
                    part[c, i] += wr * (MIDDLE_CODE if code == MISSING_CODE else code)
    return part.sum(axis=0)


@njit(parallel=True, cache=True)
def code_moments(x, weights, chunks):
    """``[Σ_rows w·x, Σ_rows w·x²]`` (2, k) of int8 codes ``x (n, k)`` (missing → 2), summed as in
    :func:`code_rmatvec`."""
    n, k = x.shape
    part = np.zeros((chunks, 2, k))
    for c in prange(chunks):
        for r in range(c * n // chunks, (c + 1) * n // chunks):
            wr = weights[r]
            if wr != 0.0:
                for i in range(k):
                    code = x[r, i]
                    value = MIDDLE_CODE if code == MISSING_CODE else code
                    part[c, 0, i] += wr * value
                    part[c, 1, i] += wr * value * value
    return part.sum(axis=0)


def linear_predict(x: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """``x β + β₀`` (n,) for int8 codes ``x (n, k)``, missing → 2."""
    return code_matmul(np.ascontiguousarray(x), np.asarray(coef, np.float64)[None])[:, 0] + intercept


def code_blocks(store: EraStore, eras: np.ndarray, cols: np.ndarray,
                block_rows: int = BLOCK_ROWS) -> Iterator[tuple[slice, np.ndarray]]:
    """The rows of ``eras`` (store order) as int8 blocks of at most ``block_rows`` rows:
    ``(where the block lies among those rows, codes)``."""
    done = 0
    for lo, hi in row_runs(store.offsets, eras):
        for start in range(lo, hi, block_rows):
            stop = min(start + block_rows, hi)
            yield slice(done, done + stop - start), read_codes(store, start, stop, cols)
            done += stop - start
