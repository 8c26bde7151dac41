"""``eraflow run PIPELINE.toml``: the whole journey, re-running only the steps whose inputs changed."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine.numerai.pipeline import run_pipeline

from . import numerai
from .options import json_option, print_json
from .progress import row_progress, training_log
from .runs import ledger_option

HEADLINE = ("mean", "sharpe", "max_drawdown", "feature_neutral_mean", "mmc_mean")


@click.command("run")
@click.argument("pipeline", type=click.Path(path_type=Path))
@ledger_option
@json_option
def run(pipeline, ledger, as_json):
    """Run a pipeline file: data, ingest, train, post-process, evaluate, live, submit.

    Steps whose inputs and outputs did not change since the last run are skipped. [data] source
    is synthetic, numerai (without network: the files already downloaded, with a warning) or
    files (your own paths). See examples/demo.toml and examples/numerai_weekly.toml.
    With [submit], each submitted (or dry-run validated) file is kept in WORKDIR/submissions/ and
    the run prints its churn against the last five kept (see eraflow churn).

    \b
    Example:
      eraflow run examples/demo.toml
    """
    def on_step(name: str, status: str, seconds: float) -> None:
        if not as_json:
            click.echo(f"  {name:12} {status:8} {seconds:6.1f} s")

    with row_progress(as_json) as progress, training_log(as_json) as status:
        result = run_pipeline(pipeline, lambda auth: numerai.client_factory(auth=auth), on_step, ledger, progress,
                              status)
    if as_json:
        print_json({"steps": [{"step": s, "status": st, "seconds": round(sec, 2)} for s, st, sec in result.steps],
                    "report": str(result.report) if result.report else None, "summary": result.summary,
                    "live": str(result.live) if result.live else None, "submission": result.submission,
                    "churn": result.churn.as_dict() if result.churn else None})
        return
    if result.report:
        click.echo(f"report: {result.report}")
        for row in result.summary:
            click.echo(f"  {row['prediction']:28} " + "  ".join(
                f"{k} {row[k]:+.4f}" for k in HEADLINE if isinstance(row.get(k), float)))
    if result.live:
        click.echo(f"live predictions: {result.live}")
    if result.submission:
        click.echo(f"submission: {result.submission}")
    if result.churn is not None:
        _print_churn(result.churn)


def _print_churn(report) -> None:
    """Churn of the newest kept submission against the ones before it, or why there is none."""
    from .churn import print_churn

    if not report.pairs:
        click.echo(f"churn: no earlier submission kept in {Path(report.new).parent} yet")
        return
    click.echo(f"churn of {Path(report.new).name} against the {len(report.pairs)} kept before it:")
    print_churn(report, lambda line: click.echo(f"  {line}"))

