"""``eraflow churn NEW OLD [OLD2 …]``: churn of a submission against earlier ones, and the payout penalty."""

from __future__ import annotations

import math
from pathlib import Path

import click

from eraflow.engine.evaluation.churn import MIN_OVERLAP, ChurnReport, churn_of_files

from .options import json_option, print_json


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4f}"


def print_churn(report: ChurnReport, echo=click.echo) -> None:
    """The report as a table: one line per earlier submission, then the means and the payout retained."""
    neutral = report.mean_neutral_churn is not None
    width = max([len(Path(p.previous).name) for p in report.pairs] + [len("previous")])
    kind = f"top/bottom-{report.top_bottom} churn" if report.top_bottom else "churn"
    echo(f"{'previous':<{width}}  {'common':>7}  {kind:>{max(len(kind), 7)}}"
         + (f"  {'neutral churn':>13}" if neutral else ""))
    for pair in report.pairs:
        line = f"{Path(pair.previous).name:<{width}}  {pair.common:>7,}  {_number(pair.churn):>{max(len(kind), 7)}}"
        if neutral:
            line += f"  {_number(pair.neutral_churn):>13}"
        echo(line + (f"  (skipped: {pair.skipped})" if pair.skipped else ""))
    echo(f"mean churn {_number(report.mean_churn)}, max {_number(report.max_churn)}")
    if neutral:
        echo(f"mean neutral churn {_number(report.mean_neutral_churn)}: payout retained "
             f"{_number(report.payout_retained)} of a positive payout (1 up to neutral churn 0.1)")


@click.command("churn")
@click.argument("new", type=click.Path(path_type=Path))
@click.argument("previous", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--neutralizers", type=click.Path(path_type=Path),
              help="Parquet of neutralizers: an id or ticker column, an optional date/friday_date column "
                   "(each submission then uses its own date's rows), numeric neutralizer columns.")
@click.option("--top-bottom", type=click.IntRange(min=1), metavar="N",
              help="Churn as the share of the top N and bottom N kept, instead of 1 − Spearman.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cupy"]), default="auto",
              show_default=True, help="Kernel backend.")
@json_option
def churn(new, previous, neutralizers, top_bottom, backend, as_json):
    """Churn and neutral churn of a submission against previous ones, and the payout penalty.

    NEW and each PREVIOUS are submission files (parquet or CSV): classic (id, prediction) or
    Signals (numerai_ticker/ticker/bloomberg_ticker/composite_figi/sedol, signal or prediction, an
    optional date or friday_date column). Rows are aligned by id or ticker. As numerai-tools 0.7:
    churn is 1 − Spearman over the common rows; a comparison is skipped when under 80 % of either
    file's rows are common. With --neutralizers each submission is ranked on its universe (the
    neutralizer rows of its date, holding at least 100 of the file's tickers; tickers without a
    value 0.5), gaussianized and neutralized, and neutral churn is 1 − Spearman of the residuals; their mean (1.0 when none could be compared)
    sets the payout retained, min(1, 2 / (1 + exp(10 (mean − 0.1)))). Numerai takes it against your
    five most recent submissions.

    \b
    Example:
      eraflow churn this_week.parquet last_week.parquet two_weeks_ago.parquet
      eraflow churn signals_new.csv signals_old.csv --neutralizers neutralizers.parquet
    """
    report = churn_of_files(new, list(previous), neutralizers, top_bottom, backend)
    if as_json:
        print_json({**report.as_dict(), "min_overlap": MIN_OVERLAP})
        return
    print_churn(report)
