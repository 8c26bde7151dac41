"""One task of a search: a trial's parameters fit on one CV fold, scored on the fold's test eras.

:func:`evaluate_fold` runs where the executor puts it (this process or a Dask worker): it opens the
store by path, so its arguments and result are small (era indices, a dict of parameters, lists of
per-era scores). Nothing it fits sees a test era: the model trains on the fold's training eras for
the full number of rounds (no early stopping, which would choose the rounds on the eras it scores),
then predicts the test eras, which only score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from eraflow.kernels import neutralize, numerai_corr

from ..data.store import era_subset_offsets, open_store_checked, read_codes, row_runs
from ..models.kind import FitData, get_kind
from ..models.predict import predict_rows
from ..threads import configured_threads, set_threads


@dataclass(frozen=True)
class FoldTask:
    """What one (trial, fold) task needs; small enough to send to a worker."""

    trial: int
    fold: int
    kind: str
    params: dict  # the kind's settings (base parameters updated with the trial's draw)
    target: str
    train_eras: np.ndarray  # store era indices
    test_eras: np.ndarray
    cols: np.ndarray  # feature columns the model uses
    seed: int
    embargo: int
    threads: int  # threads the fit uses, wherever it runs
    neutralize: tuple[float, ...] = ()  # proportions the test predictions are also scored at
    neutral_cols: np.ndarray | None = None  # feature columns to neutralize against (None: ``cols``)


@dataclass(frozen=True)
class FoldResult:
    trial: int
    fold: int
    eras: list[str]  # the test eras, in store order
    corr: list[float]  # per-era numerai_corr of the predictions
    neutral: dict[str, list[float]] = field(default_factory=dict)  # proportion_label(p) → per-era corr at p
    seconds: float = 0.0
    rows_read: int = 0  # rows of features the fold read: training + test (+ test again to neutralize)
    bytes_read: int = 0  # int8 feature bytes of those rows


def proportion_label(p: float) -> str:
    """How a proportion names its scores: ``0.5`` → ``"0.5"`` (``cv_mean_n0.5``), ``1.0`` → ``"1"``."""
    return f"{p:g}"


def neutral_corrs(preds: np.ndarray, target: np.ndarray, features: np.ndarray, offsets: np.ndarray,
                  proportions: tuple[float, ...]) -> dict[str, list[float]]:
    """Per-era numerai_corr of ``preds`` neutralized per era at each proportion.

    One per-era regression serves every proportion: with ``r = neutralize(x, F, 1)``,
    ``neutralize(x, F, p) = x − p·(x − r)``.
    """
    residual = neutralize(preds, features, offsets, 1.0)
    blended = np.column_stack([preds - p * (preds - residual) for p in proportions])
    corr = numerai_corr(blended, target, offsets)
    return {proportion_label(p): corr[:, j].tolist() for j, p in enumerate(proportions)}


def _codes(store, eras: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.concatenate([read_codes(store, lo, hi, cols) for lo, hi in row_runs(store.offsets, eras)])


def evaluate_fold(store_path: str, fingerprint: str, task: FoldTask) -> FoldResult:
    """Fit ``task.params`` on the fold's training eras (all rounds), predict its test eras, and score them.

    Steps:
    1. pin the threads (``task.threads``) so the numbers do not depend on the machine;
    2. open the store at ``store_path`` (InputError if it is not the store the search planned on);
    3. fit the kind on ``train_eras`` with no early-stopping eras, for its full number of rounds;
    4. per test era ``numerai_corr(pred, target)``, and of the predictions neutralized at each proportion.
    """
    started = time.perf_counter()
    if task.threads != configured_threads():
        set_threads(task.threads)
    with open_store_checked(store_path, fingerprint) as store:
        kind = get_kind(task.kind)
        settings = kind.check_settings(task.params)
        data = FitData(store, task.train_eras, task.cols, task.target, None, "cpu", task.seed, task.embargo)
        model = kind.fit(data, settings, None, None)
        preds = predict_rows(model, store, task.test_eras, task.cols)
        target = data.target_values(task.test_eras)
        offsets = era_subset_offsets(store.offsets, task.test_eras)
        corr = numerai_corr(preds, target, offsets)
        rows = int(np.diff(store.offsets)[task.train_eras].sum()), int(offsets[-1])
        nbytes = (rows[0] + rows[1]) * len(task.cols)
        neutral = {}
        if task.neutralize:
            ncols = task.cols if task.neutral_cols is None else task.neutral_cols
            neutral = neutral_corrs(preds, target, _codes(store, task.test_eras, ncols), offsets, task.neutralize)
            nbytes += rows[1] * len(ncols)
        return FoldResult(task.trial, task.fold, [store.eras[k] for k in task.test_eras], corr.tolist(), neutral,
                          time.perf_counter() - started, sum(rows) + (rows[1] if task.neutralize else 0), nbytes)
