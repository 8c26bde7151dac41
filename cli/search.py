"""The ``search`` command: random search of a model kind's parameters by era CV, locally or on Dask."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eraflow.engine import open_store
from eraflow.engine.cluster.client import check_store_visible, open_client
from eraflow.engine.errors import EraflowError, InputError
from eraflow.engine.evaluation.ledger import ledger_path, list_runs, record_run
from eraflow.engine.experiments.search import (
    BEST_PARAMS,
    LEADERBOARD,
    METRICS,
    REPORT,
    SAMPLERS,
    SearchConfig,
    SearchPlan,
    SearchResult,
    check_search_dir,
    plan_search,
    run_search,
    trial_run,
    trial_run_id,
)
from eraflow.engine.experiments.space import read_space
from eraflow.engine.models.era_boost import with_era_boost
from eraflow.engine.models.kind import DEFAULT_KIND, TRAINABLE
from eraflow.engine.models.params import kind_params
from eraflow.engine.notices import warn
from eraflow.engine.threads import set_threads

from .options import cluster_options, command_line, csv_list, era_boost_option, json_option, print_json, quiet_option
from .runs import ledger_option


def parse_proportions(value: str | None) -> tuple[float, ...]:
    """``"0,0.5,1"`` → ``(0.0, 0.5, 1.0)``; InputError naming a value that is not a number."""
    out = []
    for item in csv_list(value) or []:
        try:
            out.append(float(item))
        except ValueError:
            raise InputError(f"--neutralize takes proportions such as 0,0.25,0.5; {item!r} is not a number") from None
    return tuple(out)


def trial_line(record: dict, done: int, trials: int, metric: str) -> str:
    """``trial 7 (8/20 done) num_leaves=31 …: cv_sharpe +0.52, cv_mean +0.0123, folds -0.01..+0.03, 3.2 s``."""
    s = record["scores"]
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record["params"].items())
    other = "cv_mean" if metric == "cv_sharpe" else "cv_sharpe"
    return (f"trial {record['trial']} ({done}/{trials} done) {params}: {metric} {s[metric]:+.4f}, "
            f"{other} {s[other]:+.4f}, folds {s['fold_min']:+.4f}..{s['fold_max']:+.4f}, {record['seconds']:.1f} s")


def record_missing_trials(plan: SearchPlan, result: SearchResult, command: str, ledger) -> list[str]:
    """Ledger runs of the trials done before this run that the ledger lacks (a process that died between a
    trial's file and its run); returns the files they went to. Run ids are fixed by (search, directory,
    trial), so a trial already in the ledger is not recorded again."""
    if not result.skipped:
        return []
    try:
        known = {r["run_id"] for r in list_runs(ledger)} if ledger_path(ledger).exists() else set()
    except EraflowError as exc:
        warn(f"could not check the ledger for finished trials' runs ({exc}); they are in {result.out_dir}")
        return []
    missing = [t for t in result.skipped if trial_run_id(plan, result.out_dir, t) not in known]
    return [str(record_run(trial_run(plan, result.trials[t], result.out_dir, command), ledger)) for t in missing]


@contextmanager
def search_progress(quiet: bool):
    """Yield ``(on_task, echo)``: a bar of tasks on a terminal (none when ``quiet`` or off one) and a
    way to print a line per trial on stderr that does not break the bar."""
    if quiet:
        yield None, lambda line: None
        return
    if not sys.stderr.isatty():
        yield None, lambda line: click.echo(line, err=True)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tasks"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("search", total=None)

        def on_task(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield on_task, lambda line: bar.console.print(line, highlight=False, markup=False)


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--space", "space_path", required=True, type=click.Path(path_type=Path),
              help="SPACE.toml: per parameter a constant, a list to choose from, or {low, high, log} (see README).")
@click.option("--trials", type=click.IntRange(min=1), required=True, help="Trials in all (a re-run adds the missing).")
@click.option("--cv", type=click.IntRange(min=1), default=3, show_default=True, help="Era CV folds per trial.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Search directory to write.")
@click.option("--model", "kind", type=click.Choice(TRAINABLE), default=DEFAULT_KIND, show_default=True,
              help="Kind of model searched.")
@click.option("--params", "params_spec",
              help="Base parameters the space's draws update: lgbm a preset or a params.toml [default: starter]; "
                   "other kinds a params.toml [default: the kind's].")
@era_boost_option
@click.option("--target", default="target", show_default=True, help="Target to score against.")
@click.option("--feature-set", help="A feature set of the store [default: every feature].")
@click.option("--features", help="Comma-separated features.")
@click.option("--train-eras", help="Era range to search on, e.g. 0001:0400 [default: all labeled eras].")
@click.option("--valid-eras", help="Era range never used (nor the embargo around it); must not overlap --train-eras.")
@click.option("--embargo", type=click.IntRange(min=0), help="Eras dropped between training and test eras "
                                                             "[default: from the target].")
@click.option("--cv-mode", type=click.Choice(["expanding", "blocked"]), default="expanding", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the trial list and of every fit.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="random", show_default=True,
              help="How trials are drawn (random: trial i from its own seeded generator).")
@click.option("--metric", type=click.Choice(METRICS), default="cv_sharpe", show_default=True,
              help="What best_params.toml maximises.")
@click.option("--neutralize", "neutralize_spec", help="Also score each trial's OOF predictions neutralized per era at "
                                                      "these proportions, e.g. 0,0.25,0.5,0.75,1.")
@click.option("--neutralize-features", help="Feature set to neutralize against [default: the trial's features].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads per task (pinned, so a trial scores the same wherever it runs).")
@cluster_options
@ledger_option
@quiet_option
@json_option
def search(store_path, space_path, trials, cv, output, kind, params_spec, era_boost, target, feature_set, features,
           train_eras, valid_eras, embargo, cv_mode, seed, sampler, metric, neutralize_spec, neutralize_features,
           threads, workers, scheduler, scheduler_timeout, ledger, quiet, as_json):
    """Search a model's parameters by era CV, locally or on a Dask cluster.

    Trial i draws each parameter from a generator seeded by (--seed, i, the parameter's name) and is
    scored by --cv folds of era CV with the embargo: mean, std and sharpe of the out-of-fold
    per-era corr, and the spread of the folds. Each fold fits for the full number of rounds (no
    early stopping: the test eras only score). Writes OUT_DIR/leaderboard.parquet,
    best_params.toml (for `train --params`), report.html, and trials/trial-NNNN.json as trials
    finish; re-running the same command skips finished trials. Each trial is a ledger run.

    \b
    Example:
      eraflow search store/ --space space.toml --trials 20 --cv 4 -o searches/lgbm --valid-eras 0575:
      eraflow search store/ --space space.toml --trials 200 -o searches/big --workers 8 --neutralize 0,0.5,1
      eraflow search /shared/store --space space.toml --trials 500 -o /shared/s --scheduler tcp://10.0.0.5:8786
    """
    set_threads(threads)
    command = command_line()
    check_search_dir(output, store_path)
    base = with_era_boost(kind, kind_params(kind, params_spec), era_boost)
    config = SearchConfig(read_space(space_path), trials, cv, kind, base, target,
                          feature_set, tuple(csv_list(features)) if features else None, train_eras, valid_eras,
                          embargo, cv_mode, seed, parse_proportions(neutralize_spec), neutralize_features, metric,
                          sampler, threads)
    store = open_store(store_path)
    plan = plan_search(store, config)
    ledger_files = set()
    with open_client(workers, scheduler, scheduler_timeout) as client, search_progress(quiet or as_json) as (bar, echo):
        check_store_visible(client, store_path, store.fingerprint)

        def on_trial(record: dict, done: int) -> None:
            ledger_files.add(str(record_run(trial_run(plan, record, output, command), ledger)))
            echo(trial_line(record, done, trials, metric))

        try:
            result = run_search(plan, output, client, command, bar, on_trial)
        except KeyboardInterrupt:
            click.echo(f"interrupted: finished trials are kept in {output}; run the same command again to run the "
                       "rest", err=True)
            raise
    recorded = record_missing_trials(plan, result, command, ledger)
    ledger_files.update(recorded)
    best = result.best
    report = {"search_dir": str(output), "search": result.search_id, "trials": len(result.trials),
              "ran": sorted(result.ran), "skipped": result.skipped, "ledger": sorted(ledger_files),
              "best": None if best is None else {"trial": best["trial"], "params": best["params"], **best["scores"]},
              "seconds": round(result.seconds, 2)}
    if as_json:
        print_json(report)
        return
    click.echo(f"search {result.search_id}: {len(result.ran)} trials run, {len(result.skipped)} already done, "
               f"{len(result.trials)} in {output} ({result.seconds:.1f} s)")
    if best is not None:
        s = best["scores"]
        click.echo(f"  best by {metric}: trial {best['trial']} {best['params']}")
        click.echo(f"  cv_mean {s['cv_mean']:+.4f}  cv_std {s['cv_std']:.4f}  cv_sharpe {s['cv_sharpe']:+.2f}  "
                   f"folds {s['fold_min']:+.4f}..{s['fold_max']:+.4f}")
    if recorded:
        click.echo(f"  recorded {len(recorded)} finished trial(s) missing from the ledger")
    click.echo(f"  {output / LEADERBOARD}, {output / BEST_PARAMS}, {output / REPORT}")
