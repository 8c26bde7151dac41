"""Per-era evaluation of prediction columns: every score the diagnostics show, from the kernels.

Per era and prediction column (a batch of eras at a time, features gathered as int8):
numerai_corr, TB200, feature-neutral corr (FNC), neutral correlation, max and RMS feature
exposure, mean prediction and mean target, mean target per prediction decile; with a meta
model MMC, neutral MMC (numerai-tools ``neutral_contribution`` against the neutralizer file when
given, else the features FNC uses) and corr with it; with benchmark models BMC and corr with each
benchmark column; with Signals neutralizers and sample weights alpha, and with a meta model MPC too
(see :mod:`.scoring`).
Summaries use engine.metrics; names follow numerblox's (``mean``, ``sharpe``, ``max_drawdown``,
``apy``, ``calmar_ratio``, …). BMC keys: ``bmc_*`` and ``corr_with_benchmark`` for one benchmark
column; ``bmc_<column>_*`` and ``corr_with_<column>`` per column when there are several.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eraflow.kernels import (
    correlation_contribution,
    era_summary,
    feature_exposure,
    neutral_contribution,
    neutral_scores,
    numerai_corr,
    pearson,
    rank,
)

from ..data.eras import eras_in_range
from ..data.ingest import Progress
from ..data.store import FNC_FEATURE_SET, EraStore, open_store_checked
from ..errors import InputError
from .ledger import Run
from .metrics import score_summary, top_bottom_corr
from .predictions import AlignedPredictions, align_eras, align_predictions, keep_eras
from .scoring import (
    Portfolio,
    absolute,
    alpha_per_era,
    check_portfolio_files,
    era_batches,
    feature_indices,
    gather_features,
    meta_model_values,
    mpc_per_era,
    per_nan_group,
    portfolio_values,
    reference_values,
    target_index,
)

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class EvaluateOptions:
    target: str = "target"
    feature_set: str | None = None  # features for exposure, FNC and neutral corr (default: see neutral_feature_set)
    meta_model: Path | None = None
    benchmark: Path | None = None
    eras: str | None = None
    backend: str = "auto"
    meta_column: str | None = None  # the meta model column when its file has several
    benchmark_columns: tuple[str, ...] = ()  # benchmark columns for BMC [default: every numeric one]
    neutralizers: Path | None = None  # Signals neutralizers for alpha, MPC and neutral MMC
    sample_weights: Path | None = None  # Signals sample weights, given with the neutralizers


DECILES = 10  # prediction buckets per era for the mean target by decile
PORTFOLIO_SCORES = ("alpha", "mpc")  # Signals scores, summarized like corr: mean, std, sharpe, max drawdown


def benchmark_keys(names: list[str]) -> list[tuple[str, str]]:
    """Per benchmark column, its per-era keys ``(bmc, corr with it)``: ``bmc`` and
    ``corr_with_benchmark`` for a single column, ``bmc_<name>`` and ``corr_with_<name>`` for several."""
    if len(names) == 1:
        return [("bmc", "corr_with_benchmark")]
    return [(f"bmc_{name}", f"corr_with_{name}") for name in names]


@dataclass
class Evaluation:
    """Per-era arrays (n_eras × m) by metric, and one summary dict per prediction column."""

    columns: list[str]
    eras: list[str]
    target: str
    per_era: dict[str, np.ndarray] = field(default_factory=dict)
    feature_sets: dict[str, str] = field(default_factory=dict)  # {"exposure": name, "neutral": name}
    benchmarks: list[str] = field(default_factory=list)  # benchmark columns BMC is reported against
    sources: dict[str, str | list[str] | None] = field(default_factory=dict)  # input paths, store fingerprint

    @property
    def eras_without_target(self) -> list[str]:
        """The evaluated eras in which no row has a target value (they get no score)."""
        return [era for era, mean in zip(self.eras, self.per_era["target_mean"][:, 0]) if np.isnan(mean)]

    def summary(self) -> list[dict]:
        contributions = [("tb200", "tb200_"), ("fnc", "feature_neutral_"), ("neutral_corr", "neutral_corr_"),
                         ("mmc", "mmc_"), ("neutral_mmc", "neutral_mmc_")] + [
                            (bmc, f"{bmc}_") for bmc, _ in benchmark_keys(self.benchmarks)]
        correlations = ["corr_with_meta_model"] + [corr for _, corr in benchmark_keys(self.benchmarks)]
        rows = []
        for j, name in enumerate(self.columns):
            col = {k: v[:, j] for k, v in self.per_era.items()}
            row = {"prediction": name, "target": self.target, **score_summary(col["corr"])}
            for key, prefix in contributions:
                if key in col:
                    s = era_summary(col[key])
                    row.update({f"{prefix}mean": s.mean, f"{prefix}std": s.std, f"{prefix}sharpe": s.sharpe})
            for key in PORTFOLIO_SCORES:
                if key in col:
                    s = era_summary(col[key])
                    row.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_sharpe": s.sharpe,
                                f"{key}_max_drawdown": s.max_drawdown})
            row["max_feature_exposure"] = float(np.nanmean(col["exposure_max"]))
            row["mean_feature_exposure"] = float(np.nanmean(col["exposure_rms"]))
            for key in correlations:
                if key in col:
                    row[key] = float(np.nanmean(col[key]))
            rows.append(row)
        return rows


def _era_means(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean of the present values per era and column, (n_eras, m); NaN where an era has none."""
    present = ~np.isnan(x)
    sums = np.add.reduceat(np.where(present, x, 0.0), offsets[:-1], axis=0)
    counts = np.add.reduceat(present, offsets[:-1], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def target_by_decile(x: np.ndarray, t: np.ndarray, offsets: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Mean of the era-centered target per era, prediction column and prediction decile, (n_eras, m, 10).

    1. Per era and column, over the rows where prediction and target are present: the decile
       ``⌊10 · (rank − 0.5) / n⌋`` of the prediction's rank (ties averaged).
    2. The target minus the era's mean target, averaged per decile (NaN for an empty decile).
    """
    n_eras, m = len(offsets) - 1, x.shape[1]
    kept = ~np.isnan(x) & ~np.isnan(t)[:, None]
    ranks = rank(np.where(kept, x, np.nan), offsets, backend=backend)  # in (0, 1): deciles 0..9
    decile = np.where(kept, ranks * DECILES, 0).astype(np.int64)
    era = np.repeat(np.arange(n_eras), np.diff(offsets))
    cell = ((era[:, None] * m + np.arange(m)) * DECILES + decile)[kept]
    t_centered = t - np.repeat(_era_means(t[:, None], offsets)[:, 0], np.diff(offsets))
    sums = np.bincount(cell, np.broadcast_to(t_centered[:, None], x.shape)[kept], n_eras * m * DECILES)
    counts = np.bincount(cell, minlength=n_eras * m * DECILES)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(n_eras, m, DECILES)


def _aligned(store: EraStore, path: str | Path, options: EvaluateOptions,
             columns: list[str] | None) -> AlignedPredictions:
    """The predictions of ``path`` aligned to ``store``, the eras of ``options.eras``; bad options refused."""
    check_portfolio_files(options.neutralizers, options.sample_weights)
    preds = align_predictions(store, path, columns)
    if options.eras:
        wanted = set(eras_in_range(store.eras, options.eras))
        keep = np.array([store.eras[k] in wanted for k in preds.era_index])
        if not keep.any():
            raise InputError(f"{Path(path).name} predicts no era in {options.eras}")
        preds = keep_eras(preds, keep)
    target_index(store, options.target)  # unknown target or feature set: refused before any work
    feature_indices(store, options.feature_set)
    feature_indices(store, neutral_feature_set(store, options))
    return preds


@dataclass(frozen=True)
class Prepared:
    """What the per-era scores need besides the store: the aligned predictions, the reference values per row
    ({(contribution key, corr key): (n,)}), the benchmark columns, the Signals neutralizers and weights."""

    preds: AlignedPredictions
    references: dict[tuple[str, str], np.ndarray]
    benchmarks: list[str]
    portfolio: Portfolio | None


def _prepared(store: EraStore, path: str | Path, options: EvaluateOptions, columns: list[str] | None,
              era_index: np.ndarray | None = None, era_sizes: np.ndarray | None = None) -> Prepared:
    """The predictions of ``path`` aligned to ``store`` (the eras of ``options.eras``; with ``era_index``, a
    Dask part's eras of those, ``era_sizes`` rows predicted in each, read by :func:`align_eras`) and what goes
    with each of their rows (:class:`Prepared`)."""
    part = era_index is not None
    if part:
        preds = align_eras(store, path, columns, era_index, int(np.sum(era_sizes)))
    else:
        preds = _aligned(store, path, options, columns)
    references: dict[tuple[str, str], np.ndarray] = {}  # (contribution key, corr key) -> values (n,)
    if options.meta_model:
        references["mmc", "corr_with_meta_model"] = meta_model_values(store, preds, Path(options.meta_model),
                                                                      options.meta_column, part)
    benchmarks: list[str] = []
    if options.benchmark:
        benchmarks, values = reference_values(store, preds, Path(options.benchmark),
                                              list(options.benchmark_columns) or None, part)
        references.update(zip(benchmark_keys(benchmarks), values.T))
    portfolio = portfolio_values(store, preds, options.neutralizers, options.sample_weights)
    return Prepared(preds, references, benchmarks, portfolio)


def neutral_mmc_per_era(x: np.ndarray, meta: np.ndarray, neutralizers: np.ndarray, t: np.ndarray,
                        offsets: np.ndarray, backend: str = "auto") -> np.ndarray:
    """numerai-tools ``neutral_contribution`` per era and column, (n_eras, m), each column on its own rows;
    ``neutralizers`` (n, k): floats, or the store's int8 codes. One kernel call per group of columns with the
    same NaN rows (:func:`.scoring.per_nan_group`): the meta model is neutralized and the neutralizers factored
    once per era for the whole group, and each column's score depends only on it and the meta model."""
    return per_nan_group(lambda p: neutral_contribution(p, meta, neutralizers, t, offsets, backend=backend), x)


def _per_era_scores(store: EraStore, prepared: Prepared, options: EvaluateOptions,
                    progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Every per-era metric of the module doc, (n_eras × m) per key (n_eras × m × 10 for target_by_decile)."""
    preds, references, portfolio = prepared.preds, prepared.references, prepared.portfolio
    t_col = target_index(store, options.target)
    cols = feature_indices(store, options.feature_set)
    neutral_cols = feature_indices(store, neutral_feature_set(store, options))
    parts: dict[str, list[np.ndarray]] = {}
    for k0, k1 in era_batches(preds.offsets, len(cols)):
        r0, r1 = preds.offsets[k0], preds.offsets[k1]
        off = preds.offsets[k0:k1 + 1] - r0
        x = preds.values[r0:r1]
        t = store.targets[preds.rows[r0:r1], t_col].astype(np.float64)
        f = gather_features(store, preds.rows[r0:r1], cols)
        exposure = feature_exposure(x, f, off, backend=options.backend)
        f_neutral = f if np.array_equal(cols, neutral_cols) else gather_features(store, preds.rows[r0:r1], neutral_cols)
        neutral = neutral_scores(x, f_neutral, t, off, backend=options.backend)
        batch = {"corr": numerai_corr(x, t, off, backend=options.backend), "tb200": top_bottom_corr(x, t, off),
                 "fnc": neutral.fnc, "neutral_corr": neutral.neutral_corr,
                 "exposure_max": exposure.max_abs, "exposure_rms": exposure.rms,
                 "target_mean": np.repeat(_era_means(t[:, None], off), x.shape[1], 1),
                 "target_by_decile": target_by_decile(x, t, off, options.backend)}
        for (contribution, corr), values in references.items():
            batch[contribution] = correlation_contribution(x, values[r0:r1], t, off, backend=options.backend)
            batch[corr] = pearson(x, values[r0:r1], off, backend=options.backend)
        meta = references.get(("mmc", "corr_with_meta_model"))
        if meta is not None:
            neutralizers = f_neutral if portfolio is None else portfolio.neutralizers[r0:r1]
            batch["neutral_mmc"] = neutral_mmc_per_era(x, meta[r0:r1], neutralizers, t, off, options.backend)
        if portfolio is not None:
            batch["alpha"] = alpha_per_era(x, portfolio.rows(r0, r1), t, off, options.backend)
            if meta is not None:
                batch["mpc"] = mpc_per_era(x, meta[r0:r1], portfolio.rows(r0, r1), t, off, options.backend)
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
        if progress:
            progress("evaluate", r1 - r0, len(preds.rows))
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate_part(store_path: str, fingerprint: str, path: str, options: EvaluateOptions, columns: list[str] | None,
                  era_index: np.ndarray, era_sizes: np.ndarray) -> dict[str, np.ndarray]:
    """A Dask task: the per-era metrics of the store eras ``era_index`` (``era_sizes`` rows predicted in
    each), opening the store and the prediction (and reference) files by path where it runs and reading
    only those eras' rows where it can (:func:`align_eras`)."""
    with open_store_checked(store_path, fingerprint) as store:
        return _per_era_scores(store, _prepared(store, path, options, columns, era_index, era_sizes), options)


def _per_era_scores_on_dask(client: Client, store: EraStore, path: str | Path, preds: AlignedPredictions,
                            options: EvaluateOptions, columns: list[str] | None,
                            progress: Progress | None) -> dict[str, np.ndarray]:
    """``_per_era_scores`` with the eras split into parts of about equal rows, one Dask task each."""
    from ..cluster.partition import map_era_parts

    sizes = np.diff(preds.offsets)
    options = replace(options, meta_model=absolute(options.meta_model), benchmark=absolute(options.benchmark),
                      neutralizers=absolute(options.neutralizers), sample_weights=absolute(options.sample_weights))
    done: dict[int, dict[str, np.ndarray]] = {}
    for k0, k1, per_era in map_era_parts(client, evaluate_part, preds.era_index, sizes, str(store.path.resolve()),
                                         store.fingerprint, str(Path(path).resolve()), options, columns):
        done[k0] = per_era
        if progress:
            progress("evaluate", int(sizes[k0:k1].sum()), len(preds.rows))
    parts = [done[k0] for k0 in sorted(done)]  # era order
    return {metric: np.concatenate([part[metric] for part in parts]) for metric in parts[0]}


def evaluate_predictions(store: EraStore, path: str | Path, options: EvaluateOptions = EvaluateOptions(),
                         columns: list[str] | None = None, progress: Progress | None = None,
                         client: Client | None = None) -> Evaluation:
    """Align ``path`` to ``store`` and compute every per-era metric (see the module doc);
    ``progress("evaluate", rows, total)`` after each batch of eras (each part of eras on Dask).

    With a Dask ``client`` the eras are split into parts of about equal rows (a few per worker), each
    scored by a task that opens the store and the files by path (storage every worker sees at the same
    path); every metric is per era, so the numbers equal those of a local run.
    """
    prepared = _prepared(store, path, options, columns)
    preds = prepared.preds
    if client is None:
        per_era = _per_era_scores(store, prepared, options, progress)
    else:
        per_era = _per_era_scores_on_dask(client, store, path, preds, options, columns, progress)
    feature_sets = {"exposure": options.feature_set or "all", "neutral": neutral_feature_set(store, options) or "all"}
    if options.meta_model:
        feature_sets["neutral_mmc"] = (f"neutralizers file {Path(options.neutralizers).name}" if options.neutralizers
                                       else feature_sets["neutral"])
    sources = {"predictions": str(Path(path).resolve()), "store": str(store.path.resolve()),
               "store_fingerprint": store.fingerprint,
               "meta_model": str(Path(options.meta_model).resolve()) if options.meta_model else None,
               "benchmark": str(Path(options.benchmark).resolve()) if options.benchmark else None,
               "neutralizers": str(absolute(options.neutralizers)) if options.neutralizers else None,
               "sample_weights": str(absolute(options.sample_weights)) if options.sample_weights else None}
    return Evaluation(preds.columns, preds.era_labels(store), options.target, per_era, feature_sets,
                      prepared.benchmarks, sources)


def model_era_overlap(model_meta: dict, eras: list[str]) -> list[str]:
    """Warnings when evaluated ``eras`` are eras the model (model.json ``train_eras`` /
    ``stopping_eras``, per target) trained on (in-sample scores) or chose its rounds on (optimistic)."""
    notes = []
    for key, what, scores in (("train_eras", "trained on", "in-sample"),
                              ("stopping_eras", "chose its number of rounds on", "optimistic")):
        used = set().union(*(set(labels) for labels in (model_meta.get(key) or {}).values()))
        seen = sorted(set(eras) & used)
        if seen:
            notes.append(f"the model {what} {len(seen)} of the evaluated eras ({seen[0]}…{seen[-1]}): "
                         f"scores there are {scores}")
    return notes


def neutral_feature_set(store: EraStore, options: EvaluateOptions) -> str | None:
    """Features FNC and neutral corr neutralize against: ``--feature-set`` if given, else Numerai's
    ``fncv3_features`` (their FNCv3) when the store has it, else all features (None)."""
    if options.feature_set or FNC_FEATURE_SET not in store.feature_sets:
        return options.feature_set
    return FNC_FEATURE_SET


def evaluation_run(ev: Evaluation, store: EraStore, options: EvaluateOptions, command: str, artifacts: dict) -> Run:
    """The ledger record of an evaluation: summaries per column and per-era corr."""
    per_era = [(c, ev.target, era, float(ev.per_era["corr"][k, j]))
               for j, c in enumerate(ev.columns) for k, era in enumerate(ev.eras)]
    params = {"feature_set": options.feature_set, "neutral_feature_set": neutral_feature_set(store, options),
              "eras": options.eras,
              "meta_model": str(options.meta_model) if options.meta_model else None,
              "meta_column": options.meta_column,
              "benchmark": str(options.benchmark) if options.benchmark else None,
              "benchmark_columns": ev.benchmarks or None,
              "neutralizers": str(options.neutralizers) if options.neutralizers else None,
              "sample_weights": str(options.sample_weights) if options.sample_weights else None}
    features = store.feature_names
    if options.feature_set:
        features = store.select(feature_set=options.feature_set).feature_names
    return Run("evaluate", command, params, store.fingerprint, [ev.target], features,
               {row["prediction"]: row for row in ev.summary()}, artifacts, per_era)
