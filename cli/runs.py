"""``eraflow runs``: the ledger of train and evaluate runs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from eraflow.engine.ledger import compare_runs, list_runs, show_run
from eraflow.engine.report import plot_runs_cumulative

from .data import print_json, json_option

ledger_option = click.option("--ledger", type=click.Path(path_type=Path),
                             help="Ledger file [default: $ERAFLOW_LEDGER or ~/.eraflow/ledger.duckdb].")


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


@runs.command("list")
@ledger_option
@json_option
def list_command(ledger, as_json):
    """List runs, newest first.

    \b
    Example:
      eraflow runs list --json
    """
    rows = list_runs(ledger)
    if as_json:
        print_json(rows)
        return
    table = Table("run", "kind", "created", "targets", "scores", box=None, pad_edge=False)
    for r in rows:
        table.add_row(r["run_id"], r["kind"], r["created"][:19], ", ".join(r["targets"]), _headline(r["metrics"]))
    Console(highlight=False, width=200).print(table)


@runs.command("show")
@click.argument("run_id")
@ledger_option
@json_option
def show_command(run_id, ledger, as_json):
    """Show one run: command, parameters, metrics, artifacts, per-era scores.

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
    click.echo(f"{'artifacts':18} {run['artifacts']}")
    click.echo(f"{'scores':18} {_headline(run['metrics'])}")
    click.echo(f"{'per-era rows':18} {len(run['per_era'])}")


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--plot", type=click.Path(path_type=Path), default=Path("runs-compare.png"), show_default=True,
              help="Where to write the cumulative-corr plot.")
@ledger_option
@json_option
def compare_command(run_ids, plot, ledger, as_json):
    """Compare runs: their scores side by side and a cumulative-corr plot of them together.

    \b
    Example:
      eraflow runs compare 20261121-093000-1a2b3c 20261121-101500-4d5e6f --plot compare.png
    """
    runs_ = compare_runs(list(run_ids), ledger)
    plot_runs_cumulative(runs_, plot)
    if as_json:
        print_json([{k: r[k] for k in ("run_id", "kind", "command", "metrics")} for r in runs_] + [{"plot": str(plot)}])
        return
    table = Table("run", "kind", "scores", box=None, pad_edge=False)
    for r in runs_:
        table.add_row(r["run_id"], r["kind"], _headline(r["metrics"]))
    Console(highlight=False, width=200).print(table)
    click.echo(f"plot: {plot}")
