"""The evaluation report: PNG plots, metrics.json and one self-contained HTML page.

The directory is built aside and renamed into place. Plots (matplotlib, Agg backend):
per-era corr bars, cumulative corr, drawdown, rolling 52-era sharpe, per-era corr box plots
(one box per column), feature exposure histogram, mean target per prediction decile; cumulative
alpha and cumulative MPC when the evaluation has them (Signals neutralizers and sample weights,
MPC with a meta model too); and, with a model, top features by gain and a SHAP-style summary
from LightGBM's ``pred_contrib``.
The page also says which eras had no target and where every input came from (provenance);
everything taken from the data (era labels, column and feature set names, paths) is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_writer_path, replace_dir  # noqa: E402
from ..data.store import EraStore, int8_to_float32  # noqa: E402
from ..models.predict import TrainedModel, feature_columns  # noqa: E402
from ..notices import warn  # noqa: E402
from ..outputs import check_output_dir, save_plot, translates_write_errors  # noqa: E402
from ..version import eraflow_version  # noqa: E402
from .evaluate import DECILES, Evaluation, model_era_overlap  # noqa: E402

ROLLING_ERAS = 52
SHAP_SAMPLE_ROWS = 2000
TOP_FEATURES = 20
LISTED_ERAS = 12  # eras without a target named in the page header before "…"
UNITS = {"eras": "eras with a target", "apy": "% per year: per-era corr compounded over 52 eras",
         "calmar_ratio": "ratio: APY ÷ max drawdown", "hit_rate": "share of scored eras with corr > 0"}


def _cumulative(x: np.ndarray) -> np.ndarray:
    return np.cumsum(np.nan_to_num(x), axis=0)


def _rolling_sharpe(x: np.ndarray, window: int) -> np.ndarray:
    """mean / std (ddof 0) of the scored eras among the last ``window``, per column; NaN below 2."""
    out = np.full(x.shape, np.nan)
    for e in range(window - 1, len(x)):
        for j in range(x.shape[1]):
            block = x[e - window + 1:e + 1, j]
            block = block[~np.isnan(block)]
            if block.size > 1 and block.std() > 0:
                out[e, j] = block.mean() / block.std()
    return out


def _era_axis(ax, eras: list[str]) -> None:
    step = max(1, len(eras) // 10)
    ax.set_xticks(range(0, len(eras), step), [eras[i] for i in range(0, len(eras), step)], rotation=45, fontsize=7)
    ax.set_xlabel("era")
    ax.grid(alpha=0.3)


def plot_corr_bars(ev: Evaluation, ax) -> None:
    corr = ev.per_era["corr"]
    width = 0.8 / len(ev.columns)
    for j, name in enumerate(ev.columns):
        ax.bar(np.arange(len(ev.eras)) + j * width, corr[:, j], width, label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title=f"Per-era numerai_corr with {ev.target}", ylabel="corr")
    _era_axis(ax, ev.eras)


def _plot_cumulative_score(ev: Evaluation, ax, key: str, name: str) -> None:
    """Per column, the running sum over eras of the per-era score ``ev.per_era[key]`` (NaN eras add 0), titled
    "Cumulative per-era ``name``", with a line at 0."""
    ax.plot(_cumulative(ev.per_era[key]), label=ev.columns)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title=f"Cumulative per-era {name}", ylabel=f"sum of {key}")
    _era_axis(ax, ev.eras)


def plot_cumulative(ev: Evaluation, ax) -> None:
    _plot_cumulative_score(ev, ax, "corr", "corr")


def plot_drawdown(ev: Evaluation, ax) -> None:
    cum = _cumulative(ev.per_era["corr"])
    ax.plot(cum - np.maximum.accumulate(cum, axis=0), label=ev.columns)
    ax.set(title="Drawdown of cumulative corr", ylabel="corr below running peak")
    _era_axis(ax, ev.eras)


def plot_rolling_sharpe(ev: Evaluation, ax) -> None:
    window = min(ROLLING_ERAS, max(2, len(ev.eras) // 2))
    ax.plot(_rolling_sharpe(ev.per_era["corr"], window), label=ev.columns)
    ax.set(title=f"Rolling {window}-era sharpe of corr", ylabel="mean / std")
    _era_axis(ax, ev.eras)


def plot_corr_boxes(ev: Evaluation, ax) -> None:
    corr = ev.per_era["corr"]
    ax.boxplot([c[~np.isnan(c)] for c in corr.T], tick_labels=ev.columns)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title="Distribution of per-era corr", ylabel="corr")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.grid(alpha=0.3)


def plot_exposure_hist(ev: Evaluation, ax) -> None:
    for j, name in enumerate(ev.columns):
        values = ev.per_era["exposure_max"][:, j]
        ax.hist(values[~np.isnan(values)], bins=20, alpha=0.5, label=name)
    ax.set(title="Max feature exposure per era", xlabel="max |corr| with any feature", ylabel="eras")
    ax.grid(alpha=0.3)


def decile_means(ev: Evaluation) -> np.ndarray:
    """Per column and prediction decile, the mean over scored eras of the era-centered target, (m, 10)."""
    per_era = ev.per_era["target_by_decile"]
    present = ~np.isnan(per_era)
    means = np.where(present, per_era, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    return np.where(present.any(axis=0), means, np.nan)


def plot_target_by_decile(ev: Evaluation, ax) -> None:
    """Where the signal lives: bars rising from decile 1 to 10 mean the ranking orders the target."""
    means = decile_means(ev)
    width = 0.8 / len(ev.columns)
    for j, name in enumerate(ev.columns):
        ax.bar(np.arange(1, DECILES + 1) + (j - (len(ev.columns) - 1) / 2) * width, np.nan_to_num(means[j]), width,
               label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(1, DECILES + 1))
    ax.set(title=f"Mean {ev.target} minus its era mean, per prediction decile within the era",
           xlabel="prediction decile (1 = lowest predictions)", ylabel=f"{ev.target} − era mean")
    ax.grid(alpha=0.3)


def plot_cumulative_alpha(ev: Evaluation, ax) -> None:
    _plot_cumulative_score(ev, ax, "alpha", "alpha (Signals: neutralized, sample-weighted portfolio return)")


def plot_cumulative_mpc(ev: Evaluation, ax) -> None:
    _plot_cumulative_score(ev, ax, "mpc", "MPC (meta portfolio contribution against the meta model)")


PLOTS = {"corr_bars": plot_corr_bars, "cumulative_corr": plot_cumulative, "drawdown": plot_drawdown,
         "rolling_sharpe": plot_rolling_sharpe, "corr_distribution": plot_corr_boxes,
         "feature_exposure": plot_exposure_hist, "target_by_prediction_decile": plot_target_by_decile}
# plots drawn when the evaluation has their per-era score: name -> (per-era key, plot)
SCORE_PLOTS = {"cumulative_alpha": ("alpha", plot_cumulative_alpha), "cumulative_mpc": ("mpc", plot_cumulative_mpc)}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_plot(fig, path)
    plt.close(fig)


def _draw(plot, ev: Evaluation, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    plot(ev, ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def model_plots(model: TrainedModel, store: EraStore, out: Path) -> list[str]:
    """For the first target: top features by importance (gain, or |weight| for linear kinds) where the
    kind has one, and mean |SHAP| with a value-coloured strip per feature where it has contributions."""
    target = model.targets[0]
    fitted = model.fitted[target]
    gain = fitted.importance()
    if gain is None:
        return []
    top = np.argsort(gain)[::-1][:TOP_FEATURES]
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.barh([model.features[i] for i in top][::-1], gain[top][::-1])
    ax.set(title=f"Top {len(top)} features by importance ({model.kind} model for {target})", xlabel="importance")
    ax.tick_params(axis="y", labelsize=7)
    _save(fig, out / "feature_gain.png")
    if not hasattr(fitted, "contributions"):
        return ["feature_gain"]
    rows = np.random.default_rng(0).choice(store.n_rows, min(SHAP_SAMPLE_ROWS, store.n_rows), replace=False)
    codes = store.features[np.sort(rows)][:, feature_columns(store, model.features)]
    x = int8_to_float32(codes)
    contrib = fitted.contributions(codes)
    order = np.argsort(np.abs(contrib).mean(axis=0))[::-1][:TOP_FEATURES]
    fig, ax = plt.subplots(figsize=(8, 6))
    jitter = np.random.default_rng(1).uniform(-0.3, 0.3, len(x))
    for rank, i in enumerate(order[::-1]):
        points = ax.scatter(contrib[:, i], rank + jitter, c=x[:, i], cmap="coolwarm", s=4, vmin=0, vmax=4)
    ax.set_yticks(range(len(order)), [model.features[i] for i in order[::-1]], fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title=f"SHAP-style summary: per-row contributions on {len(x):,} sampled rows",
           xlabel="contribution to prediction")
    fig.colorbar(points, ax=ax, label="feature value (0..4)")
    _save(fig, out / "shap_summary.png")
    return ["feature_gain", "shap_summary"]


def provenance(ev: Evaluation, model: TrainedModel | None) -> dict:
    """Where an evaluation came from: input files, the store and its fingerprint, the model, the
    eraflow version and the time the report was made (UTC)."""
    return {**ev.sources, "benchmark_columns": ev.benchmarks or None,
            "model": str(Path(model.path).resolve()) if model else None,
            "model_era_overlap": (model_era_overlap(model.meta, ev.eras) or None) if model else None,
            "eraflow_version": eraflow_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _era_sentence(ev: Evaluation) -> str:
    """How many eras were evaluated and scored, naming those without a target (escaped HTML)."""
    e = html.escape
    missing = ev.eras_without_target
    text = (f"{len(ev.eras)} eras evaluated ({e(ev.eras[0])} … {e(ev.eras[-1])}), {len(ev.columns)} prediction "
            f"column(s); {len(ev.eras) - len(missing)} eras have {e(ev.target)} values and are scored")
    if missing:
        listed = ", ".join(e(era) for era in missing[:LISTED_ERAS]) + (", …" if len(missing) > LISTED_ERAS else "")
        text += f"; {len(missing)} have no {e(ev.target)} value and get no score: {listed}"
    return text + "."


def _metric_label(key: str) -> str:
    unit = UNITS.get(key)
    return html.escape(key) + (f" <small>({html.escape(unit)})</small>" if unit else "")


def _html(ev: Evaluation, summary: list[dict], images: list[str], out: Path, sources: dict) -> str:
    e = html.escape
    keys = [k for k in summary[0] if k not in ("prediction", "target")]
    head = "".join(f"<th>{e(r['prediction'])}</th>" for r in summary)
    body = "".join(f"<tr><td>{_metric_label(k)}</td>" + "".join(f"<td>{_fmt(k, r.get(k))}</td>" for r in summary)
                   + "</tr>" for k in keys)
    origin = "".join(f"<tr><td>{e(k.replace('_', ' '))}</td><td>{e(', '.join(v) if isinstance(v, list) else str(v))}"
                     "</td></tr>" for k, v in sources.items() if v is not None)
    figures = "".join(
        f'<figure><img alt="{e(name)}" src="data:image/png;base64,{_base64(out / f"{name}.png")}">'
        f"<figcaption>{e(name.replace('_', ' '))}</figcaption></figure>" for name in images)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>eraflow evaluation</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
            ".sources td{text-align:left;word-break:break-all}"
            "img{max-width:100%}figure{margin:1.5em 0}</style></head><body>"
            f"<h1>Evaluation against {e(ev.target)}</h1>"
            f"<p>{_era_sentence(ev)} Feature exposure against the feature set "
            f"<code>{e(ev.feature_sets.get('exposure', 'all'))}</code>, FNC and neutral corr against "
            f"<code>{e(ev.feature_sets.get('neutral', 'all'))}</code>{_neutral_mmc_sentence(ev)}.</p>"
            f"<table><tr><th>metric</th>{head}</tr>{body}</table>{figures}"
            f"<h2>Provenance</h2><table class='sources'>{origin}</table></body></html>")


def _neutral_mmc_sentence(ev: Evaluation) -> str:
    """Where neutral MMC's neutralizers came from (escaped HTML), or nothing without a meta model."""
    against = ev.feature_sets.get("neutral_mmc")
    return f", neutral MMC against <code>{html.escape(against)}</code>" if against else ""


def _base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _fmt(key: str, value) -> str:
    """A table cell: counts as integers, APY in percent, other metrics to 4 decimals, NaN as –."""
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if np.isnan(value):
        return "–"
    return f"{100 * value:.2f} %" if key == "apy" else f"{value:.4f}"


@translates_write_errors("report", "out_dir")
def write_report(ev: Evaluation, out_dir: str | Path, store: EraStore, model: TrainedModel | None = None) -> dict:
    """Write PNGs, metrics.json and report.html into ``out_dir`` (replaced atomically); returns the paths."""
    out_dir = check_output_dir(out_dir, "report", inputs=[store.path])
    tmp = atomic_writer_path(out_dir)
    tmp.mkdir(parents=True)
    try:
        with plt.rc_context({"text.parse_math": False}):  # a `$` in a column name or era label is text
            plots = {**PLOTS, **{name: plot for name, (key, plot) in SCORE_PLOTS.items() if key in ev.per_era}}
            for name, plot in plots.items():
                _draw(plot, ev, tmp / f"{name}.png")
            images = list(plots) + (model_plots(model, store, tmp) if model else [])
        summary = ev.summary()
        sources = provenance(ev, model)
        for note in sources["model_era_overlap"] or ():
            warn(note)
        per_era = {k: {c: v[:, j].tolist() for j, c in enumerate(ev.columns)} for k, v in ev.per_era.items()}
        (tmp / "metrics.json").write_text(json.dumps({"target": ev.target, "eras": ev.eras,
                                                      "eras_without_target": ev.eras_without_target,
                                                      "feature_sets": ev.feature_sets, "provenance": sources,
                                                      "summary": summary, "per_era": per_era},
                                                     indent=1, default=float))
        (tmp / "report.html").write_text(_html(ev, summary, images, tmp, sources), encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"report": str(out_dir / "report.html"), "metrics": str(out_dir / "metrics.json"),
            "images": [str(out_dir / f"{n}.png") for n in images]}


@translates_write_errors("plot", "path")
def plot_runs_cumulative(comparison: dict, path: Path) -> None:
    """Cumulative per-era corr of the compared runs over the eras they share (``ledger.compare_runs``)."""
    eras = comparison["common_eras"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, values in comparison["series"].items():
        ax.plot(_cumulative(np.array(values, dtype=float)[:, None])[:, 0], label=label)
    ax.set(title=f"Cumulative per-era corr over the {len(eras)} eras the runs share", ylabel="sum of corr")
    _era_axis(ax, eras)
    ax.legend(fontsize=7)
    _save(fig, path)
