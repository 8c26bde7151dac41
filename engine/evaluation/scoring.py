"""Scoring and neutralizing prediction files against a store, one batch of eras at a time.

Features are gathered from the int8 memmap for one batch of eras (≤ ``BATCH_BYTES`` of int8
codes), handed to the kernels, and dropped before the next batch: a whole validation store is
never held as float.

Numerai Signals scores (with a neutralizer file and a sample-weight file, :class:`Portfolio`):
``alpha`` per era, and with a meta model ``mpc``, the meta portfolio contribution of each column
taken against the meta model as the meta portfolio: numerai-tools ``meta_portfolio_contribution``
of the predictions ``[column, meta model]`` with stakes ``[0, 1]``, i.e. the gradient of the meta
portfolio's alpha with respect to the column's stake at stake 0. Each column is scored on its own
rows (where it, the meta model and the target are present), as numerai-tools given that one
column, like numerai_corr: a NaN in one column never changes another column's score. Columns with
the same NaN rows share one kernel call (:func:`per_nan_group`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eraflow.kernels import (
    alpha,
    correlation_contribution,
    era_summary,
    feature_exposure,
    meta_portfolio_contribution,
    neutralize,
    numerai_corr,
    rank,
)

from ..data.store import EraStore, era_rows, era_subset_offsets, open_store_checked
from ..errors import InputError
from ..signals.aligned import neutralizers_for, sample_weights_for
from .predictions import AlignedPredictions, align_eras, align_predictions

if TYPE_CHECKING:
    from distributed import Client

BATCH_BYTES = 128 << 20  # int8 feature bytes gathered per batch of eras


def era_batches(offsets: np.ndarray, row_bytes: int, budget: int = BATCH_BYTES) -> Iterator[tuple[int, int]]:
    """Consecutive [k0, k1) era ranges whose rows take ≤ ``budget`` bytes (at least one era each)."""
    k0, n_eras = 0, len(offsets) - 1
    while k0 < n_eras:
        k1 = k0 + 1
        while k1 < n_eras and (offsets[k1 + 1] - offsets[k0]) * row_bytes <= budget:
            k1 += 1
        yield k0, k1
        k0 = k1


def feature_indices(store: EraStore, features: str | list[str] | None) -> np.ndarray:
    """Column indices of a feature set name, a list of feature names, or all features (None)."""
    if features is None:
        return np.arange(len(store.feature_names))
    view = store.select(feature_set=features) if isinstance(features, str) else store.select(features=features)
    return view.cols


def gather_features(store: EraStore, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """int8 features of ``rows`` (increasing) × ``cols``; copies only that block."""
    all_cols = np.array_equal(cols, np.arange(store.features.shape[1]))
    if rows[-1] - rows[0] + 1 == len(rows):  # contiguous: a view of the memmap
        block = store.features[rows[0]:rows[-1] + 1]
        return block if all_cols else block.take(cols, axis=1)
    return store.features[rows] if all_cols else store.features[np.ix_(rows, cols)]


def target_index(store: EraStore, target: str) -> int:
    if target not in store.target_names:
        raise InputError(f"unknown target {target!r}; the store has {', '.join(store.target_names)}")
    return store.target_names.index(target)


@dataclass(frozen=True)
class Portfolio:
    """Per predicted row (aligned with an :class:`AlignedPredictions`), the Signals neutralizers and sample
    weights alpha and MPC use."""

    neutralizers: np.ndarray  # float64 (n, k)
    weights: np.ndarray  # float64 (n,), > 0

    def rows(self, r0: int, r1: int) -> Portfolio:
        return Portfolio(self.neutralizers[r0:r1], self.weights[r0:r1])


def check_portfolio_files(neutralizers: str | Path | None, sample_weights: str | Path | None) -> None:
    """InputError unless both files or neither are given (alpha and MPC need both)."""
    if (neutralizers is None) != (sample_weights is None):
        given, missing = ("--neutralizers", "--sample-weights") if neutralizers else ("--sample-weights",
                                                                                       "--neutralizers")
        raise InputError(f"{given} needs {missing}: alpha and MPC use a neutralizer file and a sample-weight "
                         "file; give both, or neither")


def portfolio_values(store: EraStore, preds: AlignedPredictions, neutralizers: str | Path | None,
                     sample_weights: str | Path | None) -> Portfolio | None:
    """The neutralizers and sample weights of each predicted row (None without the files); InputError if a
    predicted row has none, or for NaN/inf neutralizers or weights ≤ 0 (engine.signals.aligned)."""
    check_portfolio_files(neutralizers, sample_weights)
    if neutralizers is None:
        return None
    return Portfolio(neutralizers_for(store, preds, Path(neutralizers)),
                     sample_weights_for(store, preds, Path(sample_weights)))


def nan_groups(x: np.ndarray) -> list[np.ndarray]:
    """Indices of the columns of ``x (n, m)`` grouped by identical NaN rows, groups in order of their first column."""
    missing = np.isnan(x)
    if not missing.any():
        return [np.arange(x.shape[1])]
    groups: dict[bytes, list[int]] = {}
    for j, mask in enumerate(np.packbits(missing, axis=0).T):  # one row of bits per column
        groups.setdefault(mask.tobytes(), []).append(j)
    return [np.array(columns) for columns in groups.values()]


def per_nan_group(score, x: np.ndarray) -> np.ndarray:
    """``score(columns (n, c)) -> (n_eras, c)`` on each group of columns of ``x (n, m)`` with the same NaN rows
    (:func:`nan_groups`), stacked (n_eras, m). The alpha, MPC and neutral MMC kernels keep only rows where every
    column is present; within a group those are each column's own present rows, so every column is scored as if
    alone, with one kernel call per group instead of per column (for neutral MMC, the neutralizers factored and
    the meta model neutralized once per era)."""
    out = None
    for cols in nan_groups(x):
        scores = score(x[:, cols])
        if out is None:
            out = np.empty((scores.shape[0], x.shape[1]))
        out[:, cols] = scores
    return out


def alpha_per_era(x: np.ndarray, portfolio: Portfolio, t: np.ndarray, offsets: np.ndarray,
                  backend: str = "auto") -> np.ndarray:
    """numerai-tools ``alpha`` per era and column, (n_eras, m), each column on its own rows."""
    return per_nan_group(lambda p: alpha(p, portfolio.neutralizers, portfolio.weights, t, offsets, backend=backend),
                         x)


def mpc_per_era(x: np.ndarray, meta: np.ndarray, portfolio: Portfolio, t: np.ndarray, offsets: np.ndarray,
                backend: str = "auto") -> np.ndarray:
    """MPC per era and column, (n_eras, m): numerai-tools ``meta_portfolio_contribution`` of the predictions
    ``[column, meta]`` with stakes ``[0, 1]`` (the meta model is the meta portfolio), the column's entry: the
    gradient of the meta portfolio's alpha with respect to the column's stake, at stake 0.

    One call per group of columns with the same NaN rows, ``[columns…, meta]`` with stakes ``[0, …, 0, 1]``:
    the portfolio ``v = W_c s`` is the meta model's column alone, and column j's entry ``R_jᵀ t_c / ‖v‖ / 50``
    with ``R_j = W_c,j − v (vᵀ W_c,j) / ‖v‖²`` depends on no other column, so it equals the call on
    ``[column j, meta]`` (the kept rows are the same: the group's columns are present on the same rows)."""

    def group_mpc(p: np.ndarray) -> np.ndarray:
        stakes = np.append(np.zeros(p.shape[1]), 1.0)
        return meta_portfolio_contribution(np.column_stack([p, meta]), stakes, portfolio.neutralizers,
                                           portfolio.weights, t, offsets, backend=backend)[:, :-1]

    return per_nan_group(group_mpc, x)


@dataclass(frozen=True)
class Scores:
    """Per-era scores of each prediction column (arrays n_eras × m) and their summaries."""

    columns: list[str]
    target: str
    eras: list[str]
    corr: np.ndarray
    mmc: np.ndarray | None
    exposure_max: np.ndarray
    exposure_rms: np.ndarray
    alpha: np.ndarray | None = None  # with neutralizers and sample weights
    mpc: np.ndarray | None = None  # with those and a meta model

    def summary(self) -> list[dict]:
        """One row per prediction column: corr mean/std/sharpe/max drawdown, MMC, alpha and MPC mean/std/sharpe/
        max drawdown, max exposure."""
        corr = era_summary(self.corr)
        mmc = era_summary(self.mmc) if self.mmc is not None else None
        portfolio = {name: era_summary(v) for name, v in (("alpha", self.alpha), ("mpc", self.mpc)) if v is not None}
        rows = []
        for j, name in enumerate(self.columns):
            row = {"prediction": name, "target": self.target, "eras": int(corr.n_eras[j]),
                   "corr_mean": float(corr.mean[j]), "corr_std": float(corr.std[j]),
                   "corr_sharpe": float(corr.sharpe[j]), "corr_max_drawdown": float(corr.max_drawdown[j])}
            if mmc is not None:
                row.update(mmc_mean=float(mmc.mean[j]), mmc_std=float(mmc.std[j]), mmc_sharpe=float(mmc.sharpe[j]))
            for key, s in portfolio.items():
                row.update({f"{key}_mean": float(s.mean[j]), f"{key}_std": float(s.std[j]),
                            f"{key}_sharpe": float(s.sharpe[j]), f"{key}_max_drawdown": float(s.max_drawdown[j])})
            row["max_feature_exposure"] = float(np.nanmean(self.exposure_max[:, j]))
            rows.append(row)
        return rows

    def per_era(self) -> dict[str, np.ndarray]:
        """Long table: one row per (era, prediction column)."""
        n, m = self.corr.shape
        table = {"era": np.repeat(self.eras, m), "prediction": np.tile(self.columns, n),
                 "target": np.full(n * m, self.target), "numerai_corr": self.corr.ravel(),
                 "feature_exposure_max": self.exposure_max.ravel(), "feature_exposure_rms": self.exposure_rms.ravel()}
        for key in ("mmc", "alpha", "mpc"):
            if getattr(self, key) is not None:
                table[key] = getattr(self, key).ravel()
        return table


def score_aligned(store: EraStore, preds: AlignedPredictions, target: str, meta: np.ndarray | None = None,
                  feature_set: str | None = None, backend: str = "auto", portfolio: Portfolio | None = None) -> Scores:
    """numerai_corr, MMC (when ``meta`` is given, aligned with ``preds``) and feature exposure per era; with a
    ``portfolio`` (aligned with ``preds``) alpha, and MPC when ``meta`` is given too."""
    t_col = target_index(store, target)
    cols = feature_indices(store, feature_set)
    parts: dict[str, list[np.ndarray]] = {"corr": [], "mmc": [], "max": [], "rms": [], "alpha": [], "mpc": []}
    for k0, k1 in era_batches(preds.offsets, len(cols)):
        r0, r1 = preds.offsets[k0], preds.offsets[k1]
        rows = preds.rows[r0:r1]
        offsets = preds.offsets[k0:k1 + 1] - r0
        x = preds.values[r0:r1]
        t = store.targets[rows, t_col].astype(np.float64)
        parts["corr"].append(numerai_corr(x, t, offsets, backend=backend))
        if meta is not None:
            parts["mmc"].append(correlation_contribution(x, meta[r0:r1], t, offsets, backend=backend))
        if portfolio is not None:
            parts["alpha"].append(alpha_per_era(x, portfolio.rows(r0, r1), t, offsets, backend))
            if meta is not None:
                parts["mpc"].append(mpc_per_era(x, meta[r0:r1], portfolio.rows(r0, r1), t, offsets, backend))
        exposure = feature_exposure(x, gather_features(store, rows, cols), offsets, backend=backend)
        parts["max"].append(exposure.max_abs)
        parts["rms"].append(exposure.rms)
    joined = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    return Scores(preds.columns, target, preds.era_labels(store), joined["corr"], joined["mmc"], joined["max"],
                  joined["rms"], joined["alpha"], joined["mpc"])


@dataclass(frozen=True)
class ScoreOptions:
    targets: tuple[str, ...] = ("target",)
    meta_model: Path | None = None  # meta model predictions (id + a column) for MMC
    meta_column: str | None = None  # the meta model column when its file has several
    feature_set: str | None = None  # features for exposure [default: all]
    backend: str = "auto"
    neutralizers: Path | None = None  # Signals neutralizers (keyed by era and ticker, or id) for alpha and MPC
    sample_weights: Path | None = None  # Signals sample weights, given with the neutralizers


def _score_eras(store: EraStore, preds: AlignedPredictions, options: ScoreOptions, part: bool = False) -> list[Scores]:
    """Scores of ``preds`` against each target of ``options`` (``part``: a Dask part's eras, see reference_values)."""
    meta = None
    if options.meta_model:
        meta = meta_model_values(store, preds, Path(options.meta_model), options.meta_column, part)
    portfolio = portfolio_values(store, preds, options.neutralizers, options.sample_weights)
    return [score_aligned(store, preds, t, meta, options.feature_set, options.backend, portfolio)
            for t in options.targets]


def score_part(store_path: str, fingerprint: str, path: str, options: ScoreOptions, columns: list[str] | None,
               era_index: np.ndarray, era_sizes: np.ndarray) -> list[Scores]:
    """A Dask task: the scores of the store eras ``era_index`` (``era_sizes`` rows predicted in each), opening
    the store and the files by path and reading only those eras' rows where it can (:func:`align_eras`)."""
    with open_store_checked(store_path, fingerprint) as store:
        preds = align_eras(store, path, columns, era_index, int(np.sum(era_sizes)))
        return _score_eras(store, preds, options, part=True)


def concat_scores(parts: list[Scores]) -> Scores:
    """One Scores from the scores of consecutive parts of the eras (same columns and target)."""

    def joined(key: str) -> np.ndarray | None:
        values = [getattr(p, key) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    return Scores(parts[0].columns, parts[0].target, [era for p in parts for era in p.eras], joined("corr"),
                  joined("mmc"), joined("exposure_max"), joined("exposure_rms"), joined("alpha"), joined("mpc"))


def score_predictions(store: EraStore, path: str | Path, options: ScoreOptions = ScoreOptions(),
                      columns: list[str] | None = None, client: Client | None = None) -> list[Scores]:
    """Align ``path`` to ``store`` and score it per era against each target of ``options`` (numerai_corr,
    MMC with a meta model, feature exposure).

    With a Dask ``client`` the eras are split into parts of about equal rows (a few per worker), each
    scored by a task that opens the store and the files by path; every score is per era, so the numbers
    equal those of a local run.
    """
    for target in options.targets:
        target_index(store, target)  # unknown target or feature set: refused before any work
    feature_indices(store, options.feature_set)
    check_portfolio_files(options.neutralizers, options.sample_weights)
    preds = align_predictions(store, path, columns)
    if client is None:
        return _score_eras(store, preds, options)
    from ..cluster.partition import map_era_parts

    if options.meta_model:  # a meta model file that misses predicted rows: refused before any task
        meta_model_values(store, preds, Path(options.meta_model), options.meta_column)
    portfolio_values(store, preds, options.neutralizers, options.sample_weights)  # the same for the Signals files
    options = replace(options, meta_model=absolute(options.meta_model), neutralizers=absolute(options.neutralizers),
                      sample_weights=absolute(options.sample_weights))
    done = {k0: part for k0, _, part in map_era_parts(client, score_part, preds.era_index, np.diff(preds.offsets),
                                                       str(store.path.resolve()), store.fingerprint,
                                                       str(Path(path).resolve()), options, columns)}
    parts = [done[k0] for k0 in sorted(done)]  # era order
    return [concat_scores([part[j] for part in parts]) for j in range(len(options.targets))]


def absolute(path: str | Path | None) -> Path | None:
    """``path`` resolved (what a Dask worker opens), or None."""
    return Path(path).resolve() if path else None


def _positions(ref: AlignedPredictions, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``rows`` is in ``ref.rows``, and whether it is there at all."""
    position = np.searchsorted(ref.rows, rows)
    found = (position < len(ref.rows)) & (ref.rows[np.minimum(position, len(ref.rows) - 1)] == rows)
    return position, found


def reference_values(store: EraStore, preds: AlignedPredictions, path: Path, columns: list[str] | None = None,
                     part: bool = False) -> tuple[list[str], np.ndarray]:
    """Columns of a reference file (meta model, benchmark models) for each predicted row: names and
    values (n × c); ids the store lacks are ignored; InputError if a predicted row has no value.

    ``part``: ``preds`` is a Dask part's eras of a file checked whole against this reference before:
    read only those eras' rows (:func:`align_eras`), or the whole file if that misses a predicted row."""
    ref = align_eras(store, path, columns, preds.era_index, reference=True) if part else None
    if ref is None or not _positions(ref, preds.rows)[1].all():
        ref = align_predictions(store, path, columns, min_coverage=0.0, reference=True)
    position, found = _positions(ref, preds.rows)
    if not found.all():
        raise InputError(f"{path.name} has no value for {int((~found).sum()):,} predicted rows "
                         f"(e.g. id {preds.ids[~found][0]!r})")
    return ref.columns, ref.values[position]


def meta_model_values(store: EraStore, preds: AlignedPredictions, path: Path, column: str | None,
                      part: bool = False) -> np.ndarray:
    """The meta model's value for each predicted row; InputError if it misses any of them (``part``: see
    :func:`reference_values`)."""
    names, values = reference_values(store, preds, path, [column] if column else None, part)
    if len(names) != 1:
        raise InputError(f"{path} has several numeric columns {names}; name one with --meta-column")
    return values[:, 0]


def check_proportion(proportion: float) -> float:
    """``proportion`` if it lies in [0, 1], else InputError."""
    if not 0 <= proportion <= 1:
        raise InputError(f"proportion must lie in [0, 1], got {proportion}; "
                         "1 removes the whole linear feature exposure, 0 none of it")
    return proportion


def neutralize_aligned(store: EraStore, preds: AlignedPredictions, feature_set: str | list[str] | None,
                       proportion: float,
                       backend: str = "auto", ranked: bool = False) -> np.ndarray:
    """Per-era neutralization of every prediction column against the store's features; ``ranked``
    then ranks each column per era to ``(rank − 0.5) / n`` (ties averaged), ready to submit."""
    check_proportion(proportion)
    cols = feature_indices(store, feature_set)
    out = np.empty_like(preds.values)
    for k0, k1 in era_batches(preds.offsets, len(cols)):
        r0, r1 = preds.offsets[k0], preds.offsets[k1]
        features = gather_features(store, preds.rows[r0:r1], cols)
        out[r0:r1] = neutralize(preds.values[r0:r1], features, preds.offsets[k0:k1 + 1] - r0, proportion,
                                backend=backend)
    return rank(out, preds.offsets, backend=backend) if ranked else out


def neutralize_columns(store: EraStore, columns: dict[str, np.ndarray], era_index: np.ndarray,
                       features: str | list[str] | None, proportion: float) -> dict[str, np.ndarray]:
    """Neutralize named columns holding every row of the eras ``era_index`` (in store order)."""
    rows = era_rows(store.offsets, era_index)
    aligned = AlignedPredictions(list(columns), np.column_stack(list(columns.values())), rows,
                                 np.asarray(era_index), era_subset_offsets(store.offsets, era_index), store.ids[rows])
    values = neutralize_aligned(store, aligned, features, proportion)
    return {name: values[:, j] for j, name in enumerate(aligned.columns)}
