"""The search's report page: report.html beside PNGs (matplotlib, Agg) in OUT_DIR.

Plots: the chosen metric against each parameter the space varies (log axis for log ranges, one slot
per value for choices), the spread of the folds' mean corr of the best trials, and, with
``--neutralize``, the neutralization curve (cv_mean and cv_sharpe against the proportion) of the
best trial and the median trial. Everything taken from the inputs is escaped.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..atomic import atomic_write_bytes  # noqa: E402
from ..outputs import save_plot  # noqa: E402
from .search import REPORT  # noqa: E402
from .space import Choice, Range  # noqa: E402
from .trials import proportion_label  # noqa: E402

SPREAD_TRIALS = 20  # best trials shown in the fold-spread plot
TABLE_TRIALS = 10  # best trials listed on the page


def _ranked(done: dict[int, dict], metric: str) -> list[dict]:
    """Trials best first by ``metric`` (NaN last)."""
    return sorted(done.values(), key=lambda r: (-r["scores"][metric] if math.isfinite(r["scores"][metric])
                                                else math.inf, r["trial"]))


def plot_metric_vs_param(ax, records: list[dict], name: str, param, metric: str, best: dict | None) -> None:
    """One point per trial: the metric against the parameter's value."""
    y = np.array([r["scores"][metric] for r in records])
    values = [r["params"][name] for r in records]
    if isinstance(param, Choice):
        slots = {str(v): i for i, v in enumerate(param.values)}
        x = np.array([slots[str(v)] for v in values], dtype=float)
        ax.set_xticks(range(len(slots)), list(slots), fontsize=7)
    else:
        x = np.array(values, dtype=float)
        if isinstance(param, Range) and param.log:  # plain tick labels: mathtext is off (names are text)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.scatter(x, y, s=14, alpha=0.7)
    if best is not None:
        i = next(j for j, r in enumerate(records) if r["trial"] == best["trial"])
        ax.scatter([x[i]], [y[i]], s=60, facecolors="none", edgecolors="red", label=f"best (trial {best['trial']})")
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel(name)
    ax.set_ylabel(metric)


def plot_fold_spread(ax, ranked: list[dict]) -> None:
    """Each of the best trials: its folds' mean corr (dots) and their range (a bar)."""
    for j, r in enumerate(ranked[:SPREAD_TRIALS]):
        means = [float(np.nanmean(f["corr"])) if np.isfinite(f["corr"]).any() else np.nan for f in r["folds"]]
        finite = [m for m in means if math.isfinite(m)]
        if finite:
            ax.vlines(j, min(finite), max(finite), color="#999")
        ax.scatter([j] * len(means), means, s=12)
    ax.set_xticks(range(min(SPREAD_TRIALS, len(ranked))), [str(r["trial"]) for r in ranked[:SPREAD_TRIALS]],
                  fontsize=7)
    ax.axhline(0, color="#ccc", lw=0.8)
    ax.set_xlabel("trial (best first)")
    ax.set_ylabel("fold mean corr")


def plot_neutralization(axes, ranked: list[dict], proportions: tuple[float, ...]) -> None:
    """cv_mean and cv_sharpe against the proportion, for the best and the median trial."""
    order = sorted(proportions)
    picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2])] if len(ranked) > 1 else [("best", ranked[0])]
    for ax, stat in zip(axes, ("cv_mean", "cv_sharpe")):
        for label, r in picks:
            ax.plot(order, [r["scores"][f"{stat}_n{proportion_label(p)}"] for p in order], marker="o",
                    label=f"{label} (trial {r['trial']})")
        ax.set_xlabel("neutralization proportion")
        ax.set_ylabel(stat)
        ax.legend(fontsize=7, loc="best")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_plot(fig, path)
    plt.close(fig)


def draw_plots(out_dir: Path, plan, done: dict[int, dict], best: dict | None) -> list[str]:
    """The PNGs of the page (names without .png)."""
    metric, space = plan.config.metric, plan.config.space
    records, ranked = [done[i] for i in sorted(done)], _ranked(done, metric)
    names = []
    varied = space.varied()
    if varied:
        cols = min(3, len(varied))
        rows = math.ceil(len(varied) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.flat, varied):
            plot_metric_vs_param(ax, records, name, space.params[name], metric, best)
        for ax in list(axes.flat)[len(varied):]:
            ax.set_visible(False)
        _save(fig, out_dir / "metric_vs_params.png")
        names.append("metric_vs_params")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    plot_fold_spread(ax, ranked)
    _save(fig, out_dir / "fold_spread.png")
    names.append("fold_spread")
    if plan.config.neutralize:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        plot_neutralization(axes, ranked, plan.config.neutralize)
        _save(fig, out_dir / "neutralization.png")
        names.append("neutralization")
    return names


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(ranked: list[dict], params: list[str]) -> str:
    scores = list(ranked[0]["scores"]) if ranked else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["trial", *params, *scores])
    rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in
                                    [r["trial"], *(r["params"][p] for p in params), *r["scores"].values()]) + "</tr>"
                   for r in ranked[:TABLE_TRIALS])
    return f"<table><tr>{head}</tr>{rows}</table>"


def search_html(out_dir: Path, plan, done: dict[int, dict], best: dict | None, images: list[str]) -> str:
    e, config, identity = html.escape, plan.config, plan.identity
    eras = identity["train_eras"]
    figures = "".join(f'<figure><img alt="{e(n)}" src="data:image/png;base64,'
                      f'{base64.b64encode((out_dir / f"{n}.png").read_bytes()).decode()}">'
                      f"<figcaption>{e(n.replace('_', ' '))}</figcaption></figure>" for n in images)
    table = _table(_ranked(done, config.metric), list(config.space.params))
    best_line = ("no trial has a finite score yet" if best is None else
                 f"best by {e(config.metric)}: trial {best['trial']} ({e(str(best['params']))}), "
                 f"{e(config.metric)} {best['scores'][config.metric]:+.4f}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>eraflow search</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
            "figure{margin:1.5em 0}</style></head><body>"
            f"<h1>Search {e(plan.search_id)}: {e(config.kind)} on {e(config.target)}</h1>"
            f"<p>{len(done)} trials, random search (seed {config.seed}), {config.cv} {e(config.cv_mode)} folds "
            f"with an embargo of {plan.embargo} eras over {len(eras)} training eras ({e(eras[0])}..{e(eras[-1])}); "
            f"validation eras never used. Scores: per-era numerai_corr of out-of-fold predictions. {best_line}.</p>"
            f"<h2>Best {min(TABLE_TRIALS, len(done))} trials</h2>{table}"
            f"{figures}</body></html>")


def write_search_report(out_dir: Path, plan, done: dict[int, dict], best: dict | None) -> Path | None:
    """Write the PNGs and report.html into ``out_dir`` (each atomically); None when no trial is done."""
    if not done:
        return None
    with plt.rc_context({"text.parse_math": False}):
        images = draw_plots(out_dir, plan, done, best)
    path = out_dir / REPORT
    atomic_write_bytes(path, search_html(out_dir, plan, done, best, images).encode())
    return path
