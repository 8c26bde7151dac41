"""``eraflow runs``: the ledger of train and evaluate runs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from eraflow.engine.evaluation.ledger import compare_runs, list_runs, show_run
from eraflow.engine.outputs import check_output_file

from .options import json_option, print_json

ledger_option = click.option("--ledger", type=click.Path(path_type=Path),
                             help="Ledger file [default: $ERAFLOW_LEDGER or ~/.eraflow/ledger.duckdb].")
WIDE = 1000  # tables print at their own width: paths are never wrapped or cut


@click.group()
def runs():
    """The ledger of runs (a DuckDB file; plain SQL works on it too).

    \b
    Example:
      eraflow runs list
      eraflow runs show 20261121-093000-1a2b3c
    """


def _headline(metrics: dict) -> str:
    parts = [f"{name}: corr {m['mean']:+.4f} sharpe {m['sharpe']:+.2f}"
             for name, m in metrics.items() if isinstance(m, dict) and "mean" in m]
    return "; ".join(parts)


def _output(artifacts: dict) -> str:
    """What a run read and wrote: its model directory, or predictions file → report directory."""
    if "model_dir" in artifacts:
        return str(artifacts["model_dir"])
    report = str(Path(artifacts["report"]).parent) if "report" in artifacts else ""
    return f"{artifacts['predictions']} → {report}" if artifacts.get("predictions") else report


def _value(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@runs.command("list")
@ledger_option
@json_option
def list_command(ledger, as_json):
    """List runs, newest first, with what each read and wrote (model dir, or predictions → report dir).

    \b
    Example:
      eraflow runs list --json
    """
    rows = list_runs(ledger)
    if as_json:
        print_json(rows)
        return
    table = Table("run", "kind", "created", "targets", "output", "scores", box=None, pad_edge=False)
    for r in rows:
        table.add_row(r["run_id"], r["kind"], r["created"][:19], ", ".join(r["targets"]), _output(r["artifacts"]),
                      _headline(r["metrics"]))
    Console(highlight=False, width=WIDE).print(table)


@runs.command("show")
@click.argument("run_id")
@ledger_option
@json_option
def show_command(run_id, ledger, as_json):
    """Show one run: command, parameters, metrics per prediction, artifacts, per-era scores.

    \b
    Example:
      eraflow runs show 20261121-093000-1a2b3c --json
    """
    run = show_run(run_id, ledger)
    if as_json:
        print_json(run)
        return
    for key in ("run_id", "kind", "created", "command", "store_fingerprint", "targets", "eraflow_version"):
        click.echo(f"{key:18} {run[key]}")
    click.echo(f"{'features':18} {len(run['features'])}")
    click.echo(f"{'scores':18} {_headline(run['metrics'])}")
    click.echo(f"{'per-era rows':18} {len(run['per_era'])}")
    click.echo("params")
    for key, value in sorted(run["params"].items()):
        click.echo(f"  {key} = {_value(value)}")
    click.echo("metrics")
    for name, metrics in run["metrics"].items():
        click.echo(f"  {name}")
        for key, value in sorted(metrics.items()) if isinstance(metrics, dict) else [("value", metrics)]:
            click.echo(f"    {key} = {_value(value)}")
    click.echo("artifacts")
    for key, value in sorted(run["artifacts"].items()):
        for path in value if isinstance(value, list) else [value]:
            click.echo(f"  {key} = {path}")


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--plot", type=click.Path(path_type=Path), default=Path("runs-compare.png"), show_default=True,
              help="Where to write the cumulative-corr plot.")
@ledger_option
@json_option
def compare_command(run_ids, plot, ledger, as_json):
    """Compare runs over the eras and targets they share: a table and a cumulative-corr plot.

    Each run × prediction gets mean, std, sharpe and max drawdown of its per-era corr over the
    eras every run scored, so the numbers compare like with like.

    \b
    Example:
      eraflow runs compare 20261121-093000-1a2b3c 20261121-101500-4d5e6f --plot compare.png
    """
    from eraflow.engine.evaluation.report import plot_runs_cumulative

    check_output_file(plot, "plot")
    comparison = compare_runs(list(run_ids), ledger)
    plot_runs_cumulative(comparison, plot)
    if as_json:
        print_json({**{k: v for k, v in comparison.items() if k != "series"}, "plot": str(plot)})
        return
    counts = ", ".join(f"{run_id} {n}" for run_id, n in comparison["eras"].items())
    common = comparison["common_eras"]
    click.echo(f"target {', '.join(comparison['targets'])}; eras scored: {counts}; "
               f"common: {len(common)} ({common[0]}–{common[-1]})")
    table = Table("run", "kind", "prediction", "target", "eras", "mean", "std", "sharpe", "max dd", box=None,
                  pad_edge=False)
    for r in comparison["rows"]:
        table.add_row(r["run_id"], r["kind"], r["prediction"], r["target"], str(r["eras"]), f"{r['mean']:+.4f}",
                      f"{r['std']:.4f}", f"{r['sharpe']:+.2f}", f"{r['max_drawdown']:.4f}")
    Console(highlight=False, width=WIDE).print(table)
    click.echo(f"plot: {plot}")
