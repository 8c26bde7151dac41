"""Per-era evaluation of prediction columns: every score the diagnostics show, from the kernels.

Per era and prediction column (a batch of eras at a time, features gathered as int8):
numerai_corr, TB200, feature-neutral corr (FNC), neutral correlation, max and RMS feature
exposure, mean prediction and mean target; with a meta model MMC and corr with it; with
benchmark predictions BMC and corr with the benchmark. Summaries use engine.metrics; names
follow numerblox's (``mean``, ``sharpe``, ``max_drawdown``, ``apy``, ``calmar_ratio``, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eraflow.kernels import (correlation_contribution, era_summary, feature_exposure, neutral_scores, numerai_corr,
                             pearson)

from .eras import eras_in_range
from .errors import InputError
from .ingest import Progress
from .ledger import Run
from .metrics import score_summary, top_bottom_corr
from .predictions import AlignedPredictions, align_predictions
from .scoring import era_batches, feature_indices, gather_features, meta_model_values, target_index
from .store import FNC_FEATURE_SET, EraStore


@dataclass(frozen=True)
class EvaluateOptions:
    target: str = "target"
    feature_set: str | None = None  # features for exposure, FNC and neutral corr (default: see neutral_feature_set)
    meta_model: Path | None = None
    benchmark: Path | None = None
    eras: str | None = None
    backend: str = "auto"


@dataclass
class Evaluation:
    """Per-era arrays (n_eras × m) by metric, and one summary dict per prediction column."""

    columns: list[str]
    eras: list[str]
    target: str
    per_era: dict[str, np.ndarray] = field(default_factory=dict)
    feature_sets: dict[str, str] = field(default_factory=dict)  # {"exposure": name, "neutral": name}

    def summary(self) -> list[dict]:
        rows = []
        for j, name in enumerate(self.columns):
            col = {k: v[:, j] for k, v in self.per_era.items()}
            row = {"prediction": name, "target": self.target, **score_summary(col["corr"])}
            for key, prefix in (("tb200", "tb200_"), ("fnc", "feature_neutral_"), ("neutral_corr", "neutral_corr_"),
                                ("mmc", "mmc_"), ("bmc", "bmc_")):
                if key in col:
                    s = era_summary(col[key])
                    row.update({f"{prefix}mean": s.mean, f"{prefix}std": s.std, f"{prefix}sharpe": s.sharpe})
            row["max_feature_exposure"] = float(np.nanmean(col["exposure_max"]))
            row["mean_feature_exposure"] = float(np.nanmean(col["exposure_rms"]))
            for key in ("corr_with_meta_model", "corr_with_benchmark"):
                if key in col:
                    row[key] = float(np.nanmean(col[key]))
            rows.append(row)
        return rows


def _keep_eras(preds: AlignedPredictions, keep: np.ndarray) -> AlignedPredictions:
    """The predictions of the eras where ``keep`` (per covered era) is true."""
    sizes = np.diff(preds.offsets)
    row_mask = np.repeat(keep, sizes)
    return AlignedPredictions(preds.columns, preds.values[row_mask], preds.rows[row_mask], preds.era_index[keep],
                              np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64), preds.ids[row_mask])


def _era_means(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean of the present values per era and column, (n_eras, m); NaN where an era has none."""
    present = ~np.isnan(x)
    sums = np.add.reduceat(np.where(present, x, 0.0), offsets[:-1], axis=0)
    counts = np.add.reduceat(present, offsets[:-1], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def evaluate_predictions(store: EraStore, path: str | Path, options: EvaluateOptions = EvaluateOptions(),
                         columns: list[str] | None = None, progress: Progress | None = None) -> Evaluation:
    """Align ``path`` to ``store`` and compute every per-era metric (see the module doc);
    ``progress("evaluate", rows, total)`` after each batch of eras."""
    preds = align_predictions(store, path, columns)
    if options.eras:
        wanted = set(eras_in_range(store.eras, options.eras))
        keep = np.array([store.eras[k] in wanted for k in preds.era_index])
        if not keep.any():
            raise InputError(f"{Path(path).name} predicts no era in {options.eras}")
        preds = _keep_eras(preds, keep)
    t_col = target_index(store, options.target)
    cols = feature_indices(store, options.feature_set)
    neutral_cols = feature_indices(store, neutral_feature_set(store, options))
    extra = {name: meta_model_values(store, preds, p, None)
             for name, p in (("meta", options.meta_model), ("benchmark", options.benchmark)) if p}
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
                 "pred_mean": _era_means(x, off), "target_mean": np.repeat(_era_means(t[:, None], off), x.shape[1], 1)}
        for name, values in extra.items():
            v = values[r0:r1]
            contribution = correlation_contribution(x, v, t, off, backend=options.backend)
            batch["mmc" if name == "meta" else "bmc"] = contribution
            batch[f"corr_with_{'meta_model' if name == 'meta' else 'benchmark'}"] = pearson(x, v, off,
                                                                                           backend=options.backend)
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
        if progress:
            progress("evaluate", r1 - r0, len(preds.rows))
    per_era = {k: np.concatenate(v) for k, v in parts.items()}
    feature_sets = {"exposure": options.feature_set or "all", "neutral": neutral_feature_set(store, options) or "all"}
    return Evaluation(preds.columns, preds.era_labels(store), options.target, per_era, feature_sets)


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
              "benchmark": str(options.benchmark) if options.benchmark else None}
    features = store.feature_sets.get(options.feature_set, store.feature_names) if options.feature_set else store.feature_names
    return Run("evaluate", command, params, store.fingerprint, [ev.target], features,
               {row["prediction"]: row for row in ev.summary()}, artifacts, per_era)
