"""``eraflow features``: engineered columns and named feature sets kept with a store."""

from __future__ import annotations

import math
from pathlib import Path

import click
from click.core import ParameterSource

from eraflow.engine import open_store
from eraflow.engine.data.derived import (
    GROUP_STATS,
    add_group_stats,
    check_set_name,
    plan_group_stats,
    save_feature_set,
)

from .options import csv_list, json_option, print_json, quiet_option
from .progress import row_progress

METHODS = ("importance", "cluster", "era-sharpe")  # engine.experiments.selection.METHODS (imported when used)
SELECT_ONLY = ("keep", "name", "target", "feature_set", "train_eras", "valid_eras", "cv", "embargo", "seed")


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--add", type=click.Choice([GROUP_STATS]),
              help="Append per-group row statistics (mean, std, skew; int8 quintiles per era) to the store.")
@click.option("--groups", help="--add: comma-separated feature sets to summarise [default: Numerai's groups the store "
                               "has: intelligence, charisma, …].")
@click.option("--dry-run", is_flag=True, help="--add: print what would be written and stop.")
@click.option("--select", "method", type=click.Choice(METHODS),
              help="Choose features on training eras: CV-fold gain importance, correlation clusters (one per "
                   "cluster) or per-era feature-target corr sharpe.")
@click.option("--keep", type=int, help="--select: features to keep.")
@click.option("--name", help="--select: name of the feature set to save in the store.")
@click.option("--target", default="target", show_default=True, help="--select: target to score features against.")
@click.option("--feature-set", help="--select: candidate features, a set or sets joined by '+' [default: all].")
@click.option("--train-eras", help="--select: era range to choose on [default: all labeled eras].")
@click.option("--valid-eras", help="--select: era range held out (never read), with the embargo eras around it.")
@click.option("--cv", type=int, default=3, show_default=True, help="--select importance: era CV folds.")
@click.option("--embargo", type=int, help="--select: eras dropped around --valid-eras and between folds [default: "
                                          "from the target].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="--select: seed of LightGBM's fits (importance) and of the row sample (cluster).")
@quiet_option
@json_option
def features(store_path, add, groups, dry_run, method, keep, name, target, feature_set, train_eras, valid_eras, cv,
             embargo, seed, quiet, as_json):
    """Engineer and select features of a store: per-group row statistics, named feature sets.

    --add group-stats appends, for each feature group, the row mean, std and skew of the group's
    codes as int8 features feature_<group>_<mean|std|skew> (quintiles per era, codes 0..4) and
    the feature set group-stats. The store is rewritten aside and swapped in atomically; running
    it again replaces only what --add made. Use them with --feature-set medium+group-stats.

    --select saves the --keep best features as the feature set --name, chosen on training eras
    only (--valid-eras and the embargo eras around them are never read).

    \b
    Example:
      eraflow features store/ --add group-stats
      eraflow train store/ -o models/gs --feature-set medium+group-stats
      eraflow features store/ --select era-sharpe --keep 50 --name sharpe50 --valid-eras 0575:
    """
    if (add is None) == (method is None):
        raise click.UsageError("give one of --add group-stats or --select METHOD")
    if add is not None:
        given = options_given(SELECT_ONLY)
        if given:
            raise click.UsageError(f"{', '.join(given)} go with --select, not --add")
        _add(store_path, csv_list(groups), dry_run, quiet, as_json)
        return
    if keep is None or name is None:
        raise click.UsageError("--select needs --keep N and --name SET")
    if groups is not None or dry_run:
        raise click.UsageError("--groups and --dry-run go with --add")
    options = {"target": target, "feature_set": feature_set, "train_eras": train_eras, "valid_eras": valid_eras,
               "cv": cv, "embargo": embargo, "seed": seed}
    _select(store_path, method, keep, name, options, quiet, as_json)


def options_given(names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` (parameter names) given on the command line, as ``--option``."""
    ctx = click.get_current_context()
    return [f"--{n.replace('_', '-')}" for n in names if ctx.get_parameter_source(n) is not ParameterSource.DEFAULT]


def _add(store_path: Path, groups: list[str] | None, dry_run: bool, quiet: bool, as_json: bool) -> None:
    if dry_run:
        with open_store(store_path) as store:
            plan = plan_group_stats(store, groups).describe()
        if as_json:
            print_json(plan)
            return
        click.echo(f"would add {len(plan['features'])} features to {store_path} ({plan['rows']:,} rows, "
                   f"{plan['bytes']:,} bytes of features.i8):")
        for group, n in plan["groups"].items():
            click.echo(f"  {group}: mean, std, skew of {n} features")
        if plan["replaces"]:
            click.echo(f"  replacing {len(plan['replaces'])} features of the previous --add")
        return
    with row_progress(quiet) as progress:
        result = add_group_stats(store_path, groups, progress)
    if as_json:
        print_json({"store": str(result.store), "features": result.features, "feature_set": GROUP_STATS,
                    "dropped_sets": result.dropped_sets, "seconds": round(result.seconds, 3)})
        return
    click.echo(f"added {len(result.features)} features (feature set {GROUP_STATS}) to {store_path} "
               f"in {result.seconds:.1f} s")
    for dropped in result.dropped_sets:
        click.echo(f"  dropped feature set {dropped}: it used group statistics this --add no longer makes")


def _select(store_path: Path, method: str, keep: int, name: str, options: dict, quiet: bool, as_json: bool) -> None:
    from eraflow.engine.experiments.selection import select_features

    with open_store(store_path) as store:
        check_set_name(store, name)  # before the work, not after
        with row_progress(quiet) as progress:
            chosen = select_features(store, method, keep, progress=progress, **options)
    recipe = {"made_by": "eraflow features --select", "method": chosen.method, "keep": keep, **options,
              "eras": chosen.eras,
              "scores": {f: _number(chosen.scores.get(f)) for f in chosen.features}}
    save_feature_set(store_path, name, chosen.features, recipe)
    if as_json:
        print_json({"store": str(store_path), "feature_set": name, "method": chosen.method,
                    "features": chosen.features, "scores": recipe["scores"], "eras": chosen.eras})
        return
    click.echo(f"saved feature set {name} ({len(chosen.features)} features by {chosen.method}, chosen on "
               f"{len(chosen.eras)} training eras {chosen.eras[0]}..{chosen.eras[-1]}) in {store_path}")
    for f in chosen.features[:10]:
        score = recipe["scores"][f]
        click.echo(f"  {f}  {'n/a' if score is None else f'{score:+.4g}'}")
    if len(chosen.features) > 10:
        click.echo(f"  … and {len(chosen.features) - 10} more (--json lists them all)")


def _number(value) -> float | None:
    """A score for JSON: a float, or None for a missing or NaN score."""
    return None if value is None or math.isnan(value) else float(value)
