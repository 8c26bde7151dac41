"""Data commands: ``synth``, ``ingest``, ``info``."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from eraflow.engine import IngestOptions, SynthSpec, build_store, open_store, plan_ingest, store_info, write_synthetic
from eraflow.engine.errors import InputError

from .options import csv_list, human_size, json_option, print_json, quiet_option
from .progress import row_progress

CLASSIC_SYNTH_OPTIONS = ("eras", "rows_per_era", "features", "targets", "validation_eras")
SIGNALS_SYNTH_OPTIONS = ("tickers", "weeks", "neutralizers", "momentum")


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--eras", default=120, show_default=True, help="Eras in train + validation.")
@click.option("--rows-per-era", default=400, show_default=True, help="Mean rows per era (±10 %).")
@click.option("--features", default=300, show_default=True, help="Feature columns (int8 0..4).")
@click.option("--targets", default=4, show_default=True, help="Named targets besides `target`.")
@click.option("--validation-eras", default=0, help="Eras in validation.parquet [default: a quarter].")
@click.option("--signals", is_flag=True, help="Numerai Signals data instead: daily prices and weekly files.")
@click.option("--tickers", default=300, show_default=True, help="--signals: tickers (some start late, some end early).")
@click.option("--weeks", default=160, show_default=True, help="--signals: weeks of business days (Fridays).")
@click.option("--neutralizers", default=8, show_default=True,
              help="--signals: neutralizer columns (constant, beta, style loadings).")
@click.option("--momentum", default=0.05, show_default=True,
              help="--signals: planted momentum, the corr of the trailing return with next week's return.")
@click.option("--seed", default=0, show_default=True, help="Same seed, identical files.")
@quiet_option
@json_option
@click.pass_context
def synth(ctx, out_dir, eras, rows_per_era, features, targets, validation_eras, signals, tickers, weeks,
          neutralizers, momentum, seed, quiet, as_json):
    """Write Numerai v5-shaped synthetic data with a planted signal into OUT_DIR.

    Writes train.parquet, validation.parquet (data_type; newest eras without targets),
    live.parquet, meta_model.parquet, features.json and synth.json (settings and the oracle
    per-era correlation of the planted signal).

    With --signals, Numerai Signals data: prices.parquet (numerai_ticker, date, close, volume:
    business days with a few market holidays, a planted weekly momentum), and per Friday
    targets.parquet (the binned return of the next 4 weeks, neutral to the neutralizers; none on
    the newest 4 Fridays), neutralizers.parquet (orthonormal under the sample weights),
    sample_weights.parquet, meta_model.parquet, universe.parquet (the live Friday's tickers).

    \b
    Example:
      eraflow synth data/ --eras 574 --rows-per-era 4800 --features 2376   # v5-sized train
      eraflow synth --signals signals/ --tickers 300 --weeks 160
    """
    wrong = [f"--{n.replace('_', '-')}" for n in (CLASSIC_SYNTH_OPTIONS if signals else SIGNALS_SYNTH_OPTIONS)
             if ctx.get_parameter_source(n) is not ParameterSource.DEFAULT]
    if wrong:
        raise InputError(f"{', '.join(wrong)}: only for classic data (drop it or --signals)" if signals else
                         f"{', '.join(wrong)}: only with --signals")
    if signals:
        _synth_signals(out_dir, tickers, weeks, neutralizers, momentum, seed, quiet, as_json)
        return
    spec = SynthSpec(eras=eras, rows_per_era=rows_per_era, features=features, targets=targets,
                     validation_eras=validation_eras, seed=seed)
    with row_progress(quiet) as progress:
        tick = (lambda rows: progress("generating rows", rows, eras * rows_per_era)) if progress else None
        record = write_synthetic(out_dir, spec, tick)
    if as_json:
        print_json({k: v for k, v in record.items() if k != "oracle_corr"})
        return
    _echo_files(out_dir, record["files"])
    rows = record["rows"]
    click.echo(f"rows: train {rows['train']:,}, validation {rows['validation']:,}, live {rows['live']:,}; "
               f"oracle per-era corr {record['oracle_corr_mean']:.4f} "
               f"({record['oracle_corr_positive_share']:.0%} of eras positive)")


def _echo_files(out_dir: Path, names: list[str]) -> None:
    """One line per written file: its path and size."""
    for name in names:
        click.echo(f"{out_dir / name}  {human_size((out_dir / name).stat().st_size)}")


def _synth_signals(out_dir: Path, tickers: int, weeks: int, neutralizers: int, momentum: float, seed: int,
                   quiet: bool, as_json: bool) -> None:
    """``synth --signals``: write the files, then list them with sizes and a summary line (or JSON)."""
    from eraflow.engine.signals.synth import SignalsSynthSpec, write_signals_synthetic

    spec = SignalsSynthSpec(tickers=tickers, weeks=weeks, neutralizers=neutralizers, momentum=momentum, seed=seed)
    with row_progress(quiet) as progress:
        tick = (lambda rows: progress("simulating weeks", rows, weeks * tickers)) if progress else None
        record = write_signals_synthetic(out_dir, spec, tick)
    if as_json:
        print_json({k: v for k, v in record.items() if k != "momentum_spearman"})
        return
    _echo_files(out_dir, record["files"])
    rows, fridays = record["rows"], record["fridays"]
    click.echo(f"prices: {rows['prices']:,} rows, {tickers} tickers ({record['tickers_starting_late']} start late, "
               f"{record['tickers_ending_early']} end early), {fridays['count']} Fridays {fridays['first']} … "
               f"{fridays['last']}, {len(record['holidays'])} holidays; targets on {fridays['with_target']} Fridays; "
               f"per-Friday Spearman of the 20-day return with the target {record['momentum_spearman_mean']:+.4f} "
               f"({record['momentum_spearman_positive_share']:.0%} positive)")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="SRC... STORE")
@click.option("--features-json", type=click.Path(path_type=Path), help="Numerai's features.json.")
@click.option("--feature-set", help="A feature set of --features-json: small, medium, all, or a group name.")
@click.option("--features", help="Comma-separated feature columns [default: every column named feature*].")
@click.option("--targets", default="target*", show_default=True,
              help="Comma-separated target columns or globs; '' for none.")
@click.option("--eras", help="Inclusive era range FIRST:LAST, e.g. 0001:0500 (either side may be empty).")
@click.option("--batch-rows", type=int, help="Rows per slice [default: 32 MiB of int8 features].")
@click.option("--engine", type=click.Choice(["polars", "duckdb"]), default="polars", show_default=True)
@click.option("--era-column", help="Signals files: the date column eras come from [default: friday_date or date].")
@click.option("--id-column", help="Signals files: the ticker column [default: numerai_ticker, ticker, "
              "bloomberg_ticker, composite_figi or sedol].")
@click.option("--force", is_flag=True, help="Rebuild even when the sources are unchanged.")
@click.option("--dry-run", is_flag=True, help="Print the plan (columns, sizes) and stop.")
@quiet_option
@json_option
def ingest(paths, features_json, feature_set, features, targets, eras, batch_rows, engine, era_column, id_column,
           force, dry_run, quiet, as_json):
    """Stream parquet SRC files into an era-sorted store at STORE (a directory).

    Rows are sorted by era (natural order) across all sources; features become int8 0..4 with
    missing as -1. The store is built aside and swapped in atomically; re-running with unchanged
    sources does nothing unless --force.

    Numerai Signals files (no `era` column, no id but a ticker column, or --era-column/--id-column
    given) are keyed by date and ticker: the era is the date (YYYY-MM-DD) and the id
    "<era>|<ticker>", so a ticker appears once per date.

    \b
    Example:
      eraflow ingest train.parquet validation.parquet store/ \\
          --features-json features.json --feature-set medium --targets 'target,target_*_20'
      eraflow ingest signals_features.parquet signals_store/ --id-column numerai_ticker
    """
    if len(paths) < 2:
        raise InputError("give at least one source file and the store path: eraflow ingest SRC... STORE")
    *sources, store = paths
    options = IngestOptions(features=csv_list(features), feature_set=feature_set, features_json=features_json,
                            targets=csv_list(targets) or (), eras=eras, batch_rows=batch_rows, engine=engine,
                            era_column=era_column, id_column=id_column)
    plan = plan_ingest(sources, options)
    if dry_run:
        if as_json:
            print_json(plan.describe())
        else:
            _print_plan(plan.describe(), store)
        return
    with row_progress(quiet) as progress:
        result = build_store(plan, store, force=force, progress=progress)
    if as_json:
        print_json({"store": str(result.store), "status": result.status, "rows": result.n_rows,
                     "eras": result.n_eras, "seconds": round(result.seconds, 3)})
    elif result.status == "unchanged":
        click.echo(f"{store} is up to date (sources and options unchanged); use --force to rebuild")
    else:
        click.echo(f"built {store}: {result.n_rows:,} rows, {result.n_eras} eras, "
                   f"{len(plan.feature_names)} features, {len(plan.target_names)} targets "
                   f"in {result.seconds:.1f} s")


def _print_plan(plan: dict, store: Path) -> None:
    click.echo(f"would build {store} from {len(plan['sources'])} file(s), {plan['rows_in_sources']:,} rows:")
    for key in ("features", "targets", "extra_columns", "eras", "engine", "batch_rows", "feature_sets", "keys"):
        if key in plan:
            click.echo(f"  {key}: {plan[key]}")


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@json_option
def info(store, as_json):
    """Summarise a store: rows, eras, features, feature sets, targets with NaN share, size.

    \b
    Example:
      eraflow info store/ --json
    """
    summary = store_info(open_store(store))
    if as_json:
        print_json(summary)
        return
    eras = summary["eras"]
    console = Console(highlight=False)
    console.print(f"[bold]{summary['path']}[/bold]  {human_size(summary['bytes_on_disk'])} on disk")
    console.print(f"rows      {summary['rows']:,}")
    console.print(f"eras      {eras['count']} ({eras['first']} … {eras['last']}); rows per era "
                  f"min {eras['rows_min']:,} / median {eras['rows_median']:,.0f} / max {eras['rows_max']:,}")
    console.print(f"features  {summary['features']}; sets: " +
                  ", ".join(f"{k} ({v})" for k, v in summary["feature_sets"].items()))
    if summary["extra_columns"]:
        console.print(f"extra     {', '.join(summary['extra_columns'])}")
    table = Table("target", "NaN share", box=None, pad_edge=False)
    for name, t in summary["targets"].items():
        table.add_row(name, f"{t['nan_share']:.1%}")
    console.print(table)
