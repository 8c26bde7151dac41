"""``eraflow signals``: Numerai Signals helpers; ``features`` turns daily prices into a weekly feature table."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine.outputs import check_output_file
from eraflow.engine.signals.features import (
    KIND,
    LAGS,
    MAX_GAP_DAYS,
    RSI_WINDOW,
    FeatureOptions,
    signals_features,
    write_features,
)

from .options import json_option, print_json, quiet_option
from .progress import row_progress


@click.group()
def signals():
    """Numerai Signals: technical features from a daily price table.

    \b
    Example:
      eraflow signals features prices.parquet -o features.parquet --targets targets.parquet
      eraflow ingest features.parquet store/
    """


@signals.command()
@click.argument("prices", type=click.Path(path_type=Path))
@click.option("--output", "-o", "out", required=True, type=click.Path(path_type=Path),
              help="Parquet file to write: ticker, date (the Friday), feature_* int8 codes 0..4, target*.")
@click.option("--targets", type=click.Path(path_type=Path),
              help="Parquet of date or friday_date, ticker and target* columns, joined on (ticker, Friday); rows "
                   "without a target keep NaN (the live Friday).")
@click.option("--ticker-column", help="Ticker column of PRICES [default: the first of numerai_ticker, ticker, "
                                      "bloomberg_ticker, composite_figi, sedol].")
@click.option("--rsi-window", type=int, default=RSI_WINDOW, show_default=True,
              help="Days of the RSI's simple means of gains and losses.")
@click.option("--lags", type=int, default=LAGS, show_default=True,
              help="Weekly lags of each indicator's code (and as many diffs and abs diffs).")
@click.option("--max-gap-days", type=int, default=MAX_GAP_DAYS, show_default=True,
              help="Longest gap in calendar days allowed between two rows of a ticker.")
@quiet_option
@json_option
def features(prices, out, targets, ticker_column, rsi_window, lags, max_gap_days, quiet, as_json):
    """Weekly int8 features of a daily price table: RSI and other indicators as quintiles, lags, diffs.

    PRICES has one row per ticker and trading day: a ticker column, date, close (> 0) and
    optionally volume, each ticker's rows in date order. Per ticker, daily indicators use prices
    up to that day only: RSI (simple means), 4- and 12-week log returns, 20-day volatility, the
    5/20-day volume ratio. Each Friday (a ticker's last row of that week when it has no Friday
    row: Thursday, else Wednesday…; never a later day) they become quintile codes 0..4 across
    tickers; then per ticker weekly lags 0..L-1, diffs (coded per Friday as quintiles) and abs
    diffs. Warm-up rows and tickers without L+1 consecutive complete Fridays are dropped and
    counted. The output ingests into a store as is.

    \b
    Example:
      eraflow signals features prices.parquet -o features.parquet --targets targets.parquet
    """
    check_output_file(out, KIND, inputs=[prices, targets])
    options = FeatureOptions(rsi_window=rsi_window, lags=lags, max_gap_days=max_gap_days, ticker_column=ticker_column)
    with row_progress(quiet) as progress:
        result = signals_features(prices, options, targets, progress)
        write_features(result, out)
    summary = result.describe()
    if as_json:
        print_json({"output": str(out), **summary, "feature_names": result.features})
        return
    dropped = summary["tickers_dropped"]
    click.echo(f"wrote {out}: {summary['rows']:,} rows, {summary['fridays']} Fridays "
               f"({summary['first_friday']} … {summary['last_friday']}), {summary['tickers_kept']:,} tickers, "
               f"{summary['features']} features from {', '.join(result.indicators)}"
               + (f", targets {', '.join(result.targets)}" if result.targets else "")
               + f" in {result.seconds:.1f} s")
    click.echo(f"dropped tickers: {dropped['indicators']:,} without a Friday of complete indicators, "
               f"{dropped['lags']:,} without {lags + 1} consecutive such Fridays; dropped rows: "
               f"{summary['rows_dropped']['indicators']:,} missing an indicator (warm-up), "
               f"{summary['rows_dropped']['lags']:,} missing a lag")
