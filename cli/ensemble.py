"""``eraflow ensemble``: trained model directories combined into one model."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine.errors import InputError

from .options import command_line, csv_list, json_option, print_json
from .runs import ledger_option


def parse_weights(value: str | None) -> list[float] | None:
    """``"1, 2"`` → ``[1.0, 2.0]``; InputError naming a value that is not a number."""
    if value is None:
        return None
    try:
        return [float(v) for v in csv_list(value)]
    except ValueError:
        raise InputError(f"--weights {value!r} is not a comma-separated list of numbers, e.g. 2,1,1") from None


@click.command()
@click.argument("model_dirs", nargs=-1, required=True, metavar="MODEL_DIR...", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Ensemble model directory to write.")
@click.option("--method", type=click.Choice(["rank-mean", "stack"]), default="rank-mean", show_default=True,
              help="rank-mean: weighted mean of per-era ranks; stack: weights fitted (non-negative, summing to 1) "
                   "on the members' out-of-fold predictions (`train --cv`).")
@click.option("--weights", help="rank-mean: comma-separated weight per MODEL_DIR [default: equal].")
@click.option("--target", help="Name of the ensemble's target (stack: fitted against it) "
                               "[default: the target the members are scored on].")
@click.option("--store", "store_path", type=click.Path(path_type=Path),
              help="stack: store holding the target [default: the members' store].")
@ledger_option
@json_option
def ensemble(model_dirs, output, method, weights, target, store_path, ledger, as_json):
    """Combine trained model directories of any kinds into one model, per era: rank mean or stacked weights.

    Each member gives its submitted column (its target's predictions, or its ensemble of targets);
    these are ranked per era and averaged with the weights. The members are copied into the
    ensemble directory, which predicts, goes live and exports like any model.

    \b
    Example:
      eraflow ensemble models/lgbm models/rf models/mlp -o models/blend --weights 2,1,1
      eraflow ensemble models/lgbm models/xgb -o models/stacked --method stack
    """
    from eraflow.engine.evaluation.ledger import record_run
    from eraflow.engine.models.ensemble import build_ensemble, ensemble_run

    command = command_line()
    result = build_ensemble(list(model_dirs), output, method, parse_weights(weights), store_path, target, command)
    run = ensemble_run(result, command)
    ledger_file = record_run(run, ledger)
    report = {"model_dir": str(result.model_dir), "run_id": run.run_id, "ledger": str(ledger_file),
              "method": result.method, "target": result.target,
              "members": result.members, "weights": result.weights, "fit_eras": len(result.fit_eras),
              "seconds": round(result.seconds, 2)}
    if as_json:
        print_json(report)
        return
    click.echo(f"ensembled {len(result.members)} models ({result.method}) → {output} in {result.seconds:.1f} s "
               f"(run {run.run_id} in {ledger_file})")
    for member, weight in zip(result.members, result.weights):
        click.echo(f"  {weight:.4f}  {member}")
    if result.fit_eras:
        click.echo(f"  weights fitted on {len(result.fit_eras)} out-of-fold eras "
                   f"({result.fit_eras[0]}…{result.fit_eras[-1]}) against {result.target}")
