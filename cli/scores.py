"""Scoring commands: ``score`` and ``neutralize``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from eraflow.engine import open_store
from eraflow.engine.atomic import atomic_write_parquet
from eraflow.engine.cluster.client import check_store_visible, open_client
from eraflow.engine.evaluation.evaluate import EvaluateOptions, evaluate_predictions, evaluation_run
from eraflow.engine.evaluation.ledger import record_run
from eraflow.engine.evaluation.prediction_writer import write_predictions
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.evaluation.scoring import (
    ScoreOptions,
    check_portfolio_files,
    neutralize_aligned,
    score_predictions,
)
from eraflow.engine.outputs import check_output_dir, check_output_file

from .options import cluster_options, command_line, csv_list, json_option, print_json
from .progress import row_progress
from .runs import ledger_option

store_option = click.option("--store", "store_path", required=True, type=click.Path(path_type=Path),
                            help="The store the predictions are for.")
columns_option = click.option("--columns", help="Comma-separated prediction columns [default: every numeric one].")
backend_option = click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cupy"]), default="auto",
                              show_default=True, help="Kernel backend.")


def signals_options(command):
    """--neutralizers and --sample-weights: Numerai Signals' alpha (and MPC with --meta-model)."""
    command = click.option("--sample-weights", type=click.Path(path_type=Path),
                           help="Signals sample weights (date/friday_date + ticker, or id, and `sample_weight`); "
                                "with --neutralizers.")(command)
    return click.option("--neutralizers", type=click.Path(path_type=Path),
                        help="Signals neutralizers (date/friday_date + ticker, or id, and numeric columns): alpha "
                             "per era, and MPC with --meta-model; needs --sample-weights.")(command)


@click.command()
@click.argument("preds", type=click.Path(path_type=Path))
@store_option
@click.option("--target", "targets", multiple=True, help="Target(s) to score against [default: target].")
@click.option("--meta-model", type=click.Path(path_type=Path), help="Meta model predictions (id + one column) for MMC.")
@click.option("--meta-column", help="The meta model column when the file has several.")
@click.option("--feature-set", help="Feature set for feature exposure [default: all features].")
@click.option("--per-era", type=click.Path(path_type=Path), help="Write the per-era table to this parquet file.")
@signals_options
@columns_option
@backend_option
@cluster_options
@json_option
def score(preds, store_path, targets, meta_model, meta_column, feature_set, per_era, neutralizers, sample_weights,
          columns, backend, workers, scheduler, scheduler_timeout, as_json):
    """Score prediction columns era by era: numerai_corr, MMC, feature exposure.

    PREDS is Numerai's format (parquet or CSV): `id` plus one or more prediction columns; rows are
    matched to the store by id (on a Signals store also by a date and a ticker column). Summary per
    column: corr mean, std, sharpe, max drawdown; MMC mean/std/sharpe with --meta-model; mean over
    eras of the max |corr| with any feature. Numerai Signals: with --neutralizers and
    --sample-weights, alpha per era (mean, std, sharpe, max drawdown), and with --meta-model also
    MPC: each column's meta portfolio contribution with the meta model as the meta portfolio
    (stakes [column 0, meta model 1]).
    With --workers N or --scheduler ADDRESS the eras are scored in parts on a Dask cluster (same numbers).

    \b
    Example:
      eraflow score preds.parquet --store store/ --target target --meta-model meta_model.parquet
      eraflow score preds.parquet --store signals_store/ --neutralizers neutralizers.parquet \\
          --sample-weights sample_weights.parquet --meta-model meta_model.parquet
      eraflow score preds.parquet --store /shared/store --scheduler tcp://10.0.0.5:8786
    """
    check_portfolio_files(neutralizers, sample_weights)
    if per_era:
        check_output_file(per_era, "per_era", inputs=[preds, store_path, meta_model, neutralizers, sample_weights])
    store = open_store(store_path)
    options = ScoreOptions(tuple(targets) or ("target",), meta_model, meta_column, feature_set, backend, neutralizers,
                           sample_weights)
    with open_client(workers, scheduler, scheduler_timeout) as client:
        check_store_visible(client, store_path, store.fingerprint)
        results = score_predictions(store, preds, options, csv_list(columns), client)
    summary = [row for r in results for row in r.summary()]
    if per_era:
        atomic_write_parquet(per_era, pa.concat_tables([pa.table(r.per_era()) for r in results]), "per_era")
    if as_json:
        print_json(summary)
        return
    _print_summary(summary)


# header: the key in `score`'s summary, the key in `evaluate`'s (numerblox names)
CORR_HEADERS = {"eras": ("eras", "eras"), "corr": ("corr_mean", "mean"), "std": ("corr_std", "std"),
                "sharpe": ("corr_sharpe", "sharpe"), "max dd": ("corr_max_drawdown", "max_drawdown")}


def summary_columns(row: dict) -> list[tuple[str, str]]:
    """(header, key) of the terminal summary for a summary row of `score` or `evaluate`: eras and corr
    mean, std, sharpe, max drawdown; MMC mean, std, sharpe and neutral MMC mean, sharpe (`evaluate`) and
    BMC mean, std, sharpe when present (BMC mean only, one column per benchmark, when there are several);
    alpha and MPC mean, std, sharpe, max drawdown when present; max feature exposure."""
    columns = [(header, next(k for k in keys if k in row)) for header, keys in CORR_HEADERS.items()
               if any(k in row for k in keys)]
    if "mmc_mean" in row:
        columns += [("mmc", "mmc_mean"), ("mmc std", "mmc_std"), ("mmc sharpe", "mmc_sharpe")]
    if "neutral_mmc_mean" in row:
        columns += [("neutral mmc", "neutral_mmc_mean"), ("neutral mmc sharpe", "neutral_mmc_sharpe")]
    if "bmc_mean" in row:
        columns += [("bmc", "bmc_mean"), ("bmc std", "bmc_std"), ("bmc sharpe", "bmc_sharpe")]
    columns += [(f"bmc {key[4:-5]}", key) for key in row
                if key.startswith("bmc_") and key.endswith("_mean") and key != "bmc_mean"]
    for name in ("alpha", "mpc"):
        if f"{name}_mean" in row:
            columns += [(name, f"{name}_mean"), (f"{name} std", f"{name}_std"), (f"{name} sharpe", f"{name}_sharpe"),
                        (f"{name} max dd", f"{name}_max_drawdown")]
    return columns + [("max exposure", "max_feature_exposure")]


def _print_summary(rows: list[dict]) -> None:
    table = Table("prediction", "target", box=None, pad_edge=False)
    columns = summary_columns(rows[0])
    for header, _ in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(row["prediction"], row["target"],
                      *(str(row[k]) if k == "eras" else f"{row[k]:.4f}" for _, k in columns))
    Console(highlight=False, width=None if sys.stdout.isatty() else 240).print(table)


@click.command()
@click.argument("preds", type=click.Path(path_type=Path))
@store_option
@click.option("--feature-set", help="Features to neutralize against [default: all features].")
@click.option("--proportion", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Share of the exposure to remove, from 0 (none) to 1 (all).")
@click.option("--rank", "ranked", is_flag=True,
              help="Rank each output column per era to (rank - 0.5) / n, in (0, 1): ready to submit.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output parquet file.")
@columns_option
@backend_option
def neutralize(preds, store_path, feature_set, proportion, ranked, output, columns, backend):
    """Neutralize prediction columns era by era against the store's features.

    Per era: x − proportion · F1 β with β the least-squares fit of x on the features and a
    constant (numerai-tools `neutralize`, no rescaling); with --rank each column is then ranked
    per era to (rank − 0.5) / n. PREDS is parquet or CSV. Writes `id`, `era` and the columns.

    \b
    Example:
      eraflow neutralize preds.parquet --store store/ --feature-set medium --proportion 0.5 -o neutral.parquet
      eraflow neutralize preds.csv --store store/ --rank -o submission_ready.parquet
    """
    check_output_file(output, "predictions", inputs=[preds, store_path])
    store = open_store(store_path)
    aligned = align_predictions(store, preds, csv_list(columns))
    values = neutralize_aligned(store, aligned, feature_set, proportion, backend, ranked)
    eras = np.repeat(aligned.era_labels(store), np.diff(aligned.offsets))
    write_predictions(output, aligned.ids, eras, {c: values[:, j] for j, c in enumerate(aligned.columns)})
    click.echo(f"wrote {output}: {len(aligned.rows):,} rows, {len(aligned.era_index)} eras, "
               f"columns {', '.join(aligned.columns)}")


@click.command()
@click.argument("preds", type=click.Path(path_type=Path))
@store_option
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Report directory to write.")
@click.option("--target", default="target", show_default=True)
@click.option("--feature-set", help="Features for exposure, FNC and neutral corr [default: all for exposure, and "
              "'fncv3_features' (Numerai's FNCv3) for FNC and neutral corr when the store has it].")
@click.option("--meta-model", type=click.Path(path_type=Path), help="Meta model predictions (id + a column): MMC.")
@click.option("--meta-column", help="The meta model column when the file has several.")
@click.option("--benchmark", type=click.Path(path_type=Path),
              help="Benchmark models (id + one or more columns, e.g. Numerai's validation_benchmark_models.parquet): "
                   "BMC against each column.")
@click.option("--benchmark-column", "benchmark_columns", multiple=True,
              help="Benchmark column(s) to report BMC against; repeat or comma-separate [default: every numeric one].")
@click.option("--eras", help="Era range to evaluate, e.g. 0575:.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="A MODEL_DIR: adds top features by gain and a SHAP-style summary.")
@signals_options
@columns_option
@backend_option
@cluster_options
@ledger_option
@json_option
def evaluate(preds, store_path, output, target, feature_set, meta_model, meta_column, benchmark, benchmark_columns,
             eras, model_dir, neutralizers, sample_weights, columns, backend, workers, scheduler, scheduler_timeout,
             ledger, as_json):
    """Evaluate prediction columns era by era and write a report with plots.

    REPORT_DIR gets report.html (self-contained, plots embedded), the PNGs and metrics.json:
    corr mean/std/sharpe/max drawdown/APY/calmar/autocorrelation/smart sharpe/hit rate, TB200,
    FNC, neutral corr, feature exposure; MMC and BMC with --meta-model / --benchmark (BMC against
    each benchmark column: `bmc_<column>_*` when there are several). With --meta-model also neutral
    MMC (numerai-tools neutral_contribution) against the --neutralizers file, else the FNC features.
    Numerai Signals: --neutralizers with --sample-weights add alpha per era, and MPC with --meta-model
    (the meta model as the meta portfolio), with cumulative plots. PREDS is parquet or CSV. The
    run is recorded in the ledger. With --workers N or --scheduler ADDRESS the eras are scored in
    parts on a Dask cluster (same numbers; every worker must see the files at the same paths).

    \b
    Example:
      eraflow evaluate preds.parquet --store store/ -o report/ --meta-model meta_model.parquet --feature-set medium
      eraflow evaluate preds.parquet --store /shared/store -o report/ --workers 4
      eraflow evaluate preds.parquet --store signals_store/ -o report/ --neutralizers neutralizers.parquet \\
          --sample-weights sample_weights.parquet --meta-model meta_model.parquet
    """
    check_portfolio_files(neutralizers, sample_weights)
    check_output_dir(output, "report", inputs=[preds, store_path, meta_model, benchmark, model_dir, neutralizers,
                                               sample_weights])
    store = open_store(store_path)
    options = EvaluateOptions(target, feature_set, meta_model, benchmark, eras, backend, meta_column,
                              tuple(c for value in benchmark_columns for c in csv_list(value)), neutralizers,
                              sample_weights)
    with open_client(workers, scheduler, scheduler_timeout) as client, row_progress(as_json) as progress:
        check_store_visible(client, store_path, store.fingerprint)
        result = evaluate_predictions(store, preds, options, csv_list(columns), progress, client)
    from eraflow.engine.evaluation.report import write_report  # matplotlib: only evaluate draws plots
    from eraflow.engine.models.predict import load_model

    model = load_model(model_dir) if model_dir else None
    paths = write_report(result, output, store, model)
    run = evaluation_run(result, store, options, command_line(), {**paths, "predictions": str(preds.resolve())})
    ledger_file = record_run(run, ledger)
    summary = result.summary()
    if as_json:
        print_json({"report": paths["report"], "run_id": run.run_id, "ledger": str(ledger_file), "summary": summary})
        return
    _print_summary(summary)
    click.echo(f"report: {paths['report']} (run {run.run_id})")
