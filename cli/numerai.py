"""Numerai commands: ``download`` (dataset files), ``submit`` (validate, then upload predictions), ``upload-model``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eraflow.engine.numerai.numerai import (
    DATASET_FILES,
    DEFAULT_KEYS,
    download_datasets,
    load_credentials,
    numerai_client,
    submit_predictions,
    submit_signals,
)
from eraflow.engine.numerai.numerai import upload_model as upload_model_file
from eraflow.engine.numerai.submission import read_live_ids
from eraflow.engine.signals.submission import read_universe

from .options import csv_list, human_size, json_option, print_json, quiet_option


def make_client(*, auth: bool, progress_bars: bool = False, signals: bool = False):
    """The real numerapi client (``SignalsAPI`` when ``signals``); anonymous when ``auth`` is False and no
    credentials are configured."""
    credentials = load_credentials(required=auth)
    return numerai_client(credentials, show_progress_bars=progress_bars, signals=signals)


client_factory = make_client  # tests replace this hook with a fake client's factory


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--version", "version", default="v5.2", show_default=True, help="Numerai dataset version.")
@click.option("--files", "files", default=",".join(DEFAULT_KEYS), show_default=True,
              help=f"Comma-separated files to fetch, from: {', '.join(DATASET_FILES)}.")
@quiet_option
@json_option
def download(out_dir, version, files, quiet, as_json):
    """Download Numerai dataset files into OUT_DIR, resuming interrupted downloads.

    Files already in OUT_DIR are kept; live.parquet (and live benchmarks) are fetched again
    when a new round has started. A file appears under its final name only once complete.
    Credentials are optional here (NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY or
    ~/.eraflow/numerai.toml are used when set).

    \b
    Example:
      eraflow download data/ --version v5.2 --files train,validation,live,features,benchmarks
    """
    keys = csv_list(files) or []
    progress_bars = _show_progress(quiet)
    client = client_factory(auth=False, progress_bars=progress_bars)
    announce = (lambda name: click.echo(f"downloading {name} …", err=True)) if progress_bars else None
    results = download_datasets(client, out_dir, version, keys, progress=announce)
    if as_json:
        print_json({"version": version, "files": [
            {"name": r.name, "path": str(r.path), "bytes": r.bytes,
             "status": "present" if r.skipped else "downloaded", "round": r.round} for r in results]})
        return
    width = max(len(r.name) for r in results)
    for r in results:
        click.echo(f"{r.name:<{width}}  {human_size(r.bytes):>10}  {'present' if r.skipped else 'downloaded'}")


@click.command()
@click.argument("preds", type=click.Path(path_type=Path))
@click.option("--model", "model_name", required=True, help="Model name in your Numerai account.")
@click.option("--live", "live_path", required=True, type=click.Path(path_type=Path),
              help="This round's live.parquet: the ids the predictions must cover (with --signals: the live "
                   "universe, parquet or CSV with its ticker column).")
@click.option("--signals", is_flag=True, help="Numerai Signals: PREDS holds tickers, uploaded to a Signals model.")
@click.option("--column", help="With --signals, for an eraflow predictions file: the prediction column to submit "
                               "[default: the only one].")
@click.option("--dry-run", is_flag=True, help="Validate only; upload nothing (no credentials needed).")
@json_option
def submit(preds, model_name, live_path, signals, column, dry_run, as_json):
    """Validate PREDS (parquet or CSV: id, prediction) as Numerai does, then upload it for --model.

    The rules are numerai-tools': columns exactly id and prediction (or probability), every live
    id once, values in [0, 1] without NaN and not constant; rows with non-live ids are dropped.
    An invalid file is never uploaded. Credentials: NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY or
    ~/.eraflow/numerai.toml (chmod 600).

    With --signals, PREDS is a Signals submission (a ticker column: numerai_ticker, ticker,
    bloomberg_ticker, composite_figi or sedol; a signal or prediction column; an optional date or
    friday_date column) or an eraflow predictions file of a Signals store, whose newest era is
    submitted as per-era ranks in (0, 1). The rules are numerai-tools' validate_submission_signals:
    at least 100 tickers of the universe, none twice or NaN, values as above; other tickers are
    dropped.

    \b
    Example:
      eraflow submit preds.parquet --model my_model --live data/live.parquet --dry-run
      eraflow submit --signals preds.parquet --model my_signals --live universe.parquet --dry-run
    """
    if signals:
        return _submit_signals(preds, model_name, live_path, column, dry_run, as_json)
    if column is not None:
        raise click.UsageError("--column applies to --signals submissions only")
    live_ids = read_live_ids(live_path)
    client = None if dry_run else (lambda: client_factory(auth=True))
    result = submit_predictions(client, preds, model_name, live_ids, dry_run=dry_run)
    if as_json:
        print_json({"model": result.model_name, "model_id": result.model_id, "rows": result.rows,
                    "dropped": result.dropped, "dry_run": result.dry_run, "submission_id": result.submission_id})
        return
    dropped = f", {result.dropped:,} non-live rows dropped" if result.dropped else ""
    if result.dry_run:
        click.echo(f"valid: {result.rows:,} rows{dropped}, dry run, nothing uploaded")
    else:
        click.echo(f"submitted {result.rows:,} rows for {result.model_name}{dropped}: {result.submission_id}")


def _submit_signals(preds: Path, model_name: str, live_path: Path, column: str | None, dry_run: bool,
                    as_json: bool) -> None:
    universe = read_universe(live_path)
    client = None if dry_run else (lambda: client_factory(auth=True, signals=True))
    result = submit_signals(client, preds, model_name, universe, dry_run=dry_run, column=column)
    if as_json:
        print_json({"tournament": "signals", "model": result.model_name, "model_id": result.model_id,
                    "rows": result.rows, "dropped": result.dropped, "invalid_tickers": result.invalid_tickers,
                    "ticker_column": result.ticker_column, "signal_column": result.signal_column,
                    "era": result.era, "source_column": result.source_column, "dry_run": result.dry_run,
                    "submission_id": result.submission_id})
        return
    source = f" (era {result.era}, {result.source_column} ranked)" if result.era else ""
    dropped = f", {result.dropped:,} rows outside the universe dropped" if result.dropped else ""
    rows = f"{result.rows:,} tickers{source}{dropped}"
    if result.dry_run:
        click.echo(f"valid: {rows}, dry run, nothing uploaded")
    else:
        click.echo(f"submitted {rows} for Signals model {result.model_name}: {result.submission_id}")


@click.command("upload-model")
@click.argument("pickle_file", type=click.Path(path_type=Path))
@click.option("--model", "model_name", required=True, help="Model name in your Numerai account.")
@click.option("--docker-image", help="Numerai's image to run it in, e.g. \"Python 3.12\" [default: the model's "
                                     "current one]; match `eraflow export --runtime`.")
@json_option
def upload_model(pickle_file, model_name, docker_image, as_json):
    """Upload a pickle from `eraflow export` to Numerai's model upload for --model.

    Numerai then runs it every round. Check it first with `eraflow export --check`. Credentials:
    NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY or ~/.eraflow/numerai.toml (chmod 600), as for submit.

    \b
    Example:
      eraflow upload-model model.pkl --model my_model
    """
    result = upload_model_file(lambda: client_factory(auth=True), pickle_file, model_name, docker_image)
    if as_json:
        print_json({"model": result.model_name, "model_id": result.model_id, "upload_id": result.upload_id,
                    "bytes": result.bytes})
        return
    click.echo(f"uploaded {pickle_file} ({human_size(result.bytes)}) for {result.model_name}: {result.upload_id}")
