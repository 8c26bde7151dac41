"""``eraflow cache``: list and clean the LightGBM Dataset cache of a store."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine.data.cache import (
    CacheEntry,
    budget_bytes,
    cache_dirs,
    clean,
    file_bytes,
    leftovers,
    plan_clean,
    store_entries,
)
from eraflow.engine.data.store import open_store
from eraflow.engine.errors import InputError

from .options import human_size, json_option, print_json

store_argument = click.argument("store", type=click.Path(path_type=Path))


@click.group()
def cache():
    """The LightGBM Dataset cache of a store: list or clean it.

    Training sets are cached as LightGBM binaries in STORE/cache/ (or, when the store cannot be
    written, in $XDG_CACHE_HOME/eraflow/datasets/<store fingerprint>/), checked against their
    recorded sha256 before each use, and pruned after each new entry to max(2 × features.i8,
    64 MiB) per directory, least recently used first.

    \b
    Example:
      eraflow cache list store/
      eraflow cache clean store/ --older-than 30 --dry-run
    """


def _when(entry: CacheEntry) -> str:
    return entry.last_used.astimezone().strftime("%Y-%m-%d %H:%M")


def _row(entry: CacheEntry) -> list[str]:
    r = entry.record
    if r is None:
        return [entry.path.name, human_size(entry.bytes), "?", "?", "?", _when(entry), "(no record: rebuilt before use)"]
    eras = f"{r['eras'][0]}..{r['eras'][-1]} ({r['n_eras']})" if r['eras'] else "-"
    return [entry.path.name, human_size(entry.bytes), f"{r['rows']:,}", str(r["features"]), eras, _when(entry),
            r.get("command", "?")]


def _count(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _table(rows: list[list[str]]) -> list[str]:
    """Columns aligned: numbers (size, rows, features) to the right, text to the left."""
    header = ["file", "size", "rows", "features", "eras", "last used", "made by"]
    right = {1, 2, 3}
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


@cache.command("list")
@store_argument
@json_option
def list_command(store, as_json):
    """List the cached Datasets of STORE: file, size, rows, features, eras, last use, the command that made it.

    \b
    Example:
      eraflow cache list store/ --json
    """
    with open_store(store) as opened:
        entries, dirs, budget = store_entries(opened), cache_dirs(opened), budget_bytes(opened)
    left = [p for d in dirs for p in leftovers(d)]
    left_bytes = file_bytes(left)
    total = sum(e.bytes for e in entries)
    if as_json:
        print_json({"directories": [str(d) for d in dirs], "budget_bytes": budget,
                    "entries": [e.summary() for e in entries], "total_bytes": total,
                    "leftovers": [str(p) for p in left], "leftover_bytes": left_bytes})
        return
    if not entries and not left:
        click.echo(f"no cached datasets (looked in {dirs[0]} and {dirs[1]})")
        return
    for d in dirs:
        here = [e for e in entries if e.path.parent == d]
        if here:
            click.echo(f"{d}:")
            for line in _table([_row(e) for e in here]):
                click.echo(f"  {line}")
    click.echo(f"total: {_count(len(entries))}, {human_size(total)} "
               f"(budget {human_size(budget)} per directory)")
    if left:
        click.echo(f"leftovers of ended writers: {len(left)} file(s), {human_size(left_bytes)} "
                   "(`eraflow cache clean` removes them)")


@cache.command("clean")
@store_argument
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Remove only entries last used more than DAYS days ago.")
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Keep the N most recently used entries.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@json_option
def clean_command(store, older_than, keep, dry_run, as_json):
    """Remove cached Datasets of STORE: all of them, or those chosen by --older-than and --keep.

    With both options, an entry is removed when it is beyond the N newest and older than DAYS.
    Leftovers of writers that were killed are always removed.

    \b
    Example:
      eraflow cache clean store/ --keep 2
      eraflow cache clean store/ --older-than 30 --dry-run
    """
    with open_store(store) as opened:
        entries = store_entries(opened)
        result = clean(opened, plan_clean(entries, older_than, keep), dry_run)
    kept = len(entries) - len(result.removed)
    if as_json:
        print_json({"dry_run": dry_run, "removed": [e.summary() for e in result.removed],
                    "failed": [{**e.summary(), "reason": why} for e, why in result.failed],
                    "kept": kept, "freed_bytes": result.freed})
    else:
        verb = "would remove" if dry_run else "removed"
        for e in result.removed:
            click.echo(f"{verb} {e.path}  {human_size(e.bytes)}  last used {_when(e)}")
        click.echo(f"{'would free' if dry_run else 'freed'} {human_size(result.freed)}: {_count(len(result.removed))} "
                   f"{'to remove' if dry_run else 'removed'}, {kept} kept")
    if result.failed:
        e, why = result.failed[0]
        raise InputError(f"could not remove {_count(len(result.failed))} (first: {e.path}: {why}); "
                         "check the directory's permissions")
