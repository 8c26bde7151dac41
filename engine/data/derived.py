"""Features eraflow makes and keeps with a store: per-group row statistics, and named feature sets.

``add_group_stats`` appends, for each feature group, the row mean, std and skew of the group's
codes, each quantized per era into int8 codes 0..4 (:mod:`eraflow.engine.models.portable.derived`
computes them; exports run the same code). Why int8 per era: every kind, the CV, the ridge Gram,
the torch loader and exports read one int8 matrix unchanged, and Numerai's own features are
per-era bins too. The store is rewritten era block by era block into a new version beside it and
swapped in atomically, as ``eraflow ingest --force`` does: readers of the old version keep
reading it. meta.json records the recipe under ``derived`` and the set ``group-stats`` under
``made_sets``; re-running replaces only the columns a previous ``--add`` made.

``save_feature_set`` adds or replaces a named feature set made by eraflow (e.g. by
``eraflow features --select``): an atomic meta.json update, the recipe kept under ``made_sets``.
A set that came from features.json is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_writer_path, fsync_path, remove_stale_temporaries, replace_dir
from ..errors import InputError
from ..lock import exclusive_lock
from ..models.portable.derived import BINS, STATS, derived_name, group_stat_codes
from ..outputs import check_output_dir, translates_write_errors
from .store import (
    BLOCK_BYTES,
    FEATURES,
    GROUPS,
    IDS,
    META,
    OFFSETS,
    TARGETS,
    EraStore,
    era_blocks,
    open_store,
    read_codes,
    row_runs,
)

GROUP_STATS = "group-stats"  # the --add recipe, and the name of the feature set of its columns
DERIVED, MADE_SETS = "derived", "made_sets"  # meta.json keys: recipes of added columns; sets eraflow made
Progress = Callable[[str, int, int], None]  # (stage, rows done since last call, total rows)


def add_command(store: Path | str, groups: Sequence[str] | None = None) -> str:
    """The command that (re)computes group statistics, for error messages."""
    more = f" --groups {','.join(groups)}" if groups else ""
    return f"eraflow features {store} --add {GROUP_STATS}{more}"


# -- planning -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupStatsPlan:
    """What ``--add group-stats`` will write: the raw features kept, the groups and the new columns."""

    store: Path
    raw_features: list[str]
    groups: dict[str, list[str]]  # group → its raw features
    names: list[str]  # derived features, group by group: feature_{group}_{mean|std|skew}
    n_rows: int
    replaced: list[str] = field(default_factory=list)  # derived columns of a previous --add, dropped

    @property
    def recipe(self) -> dict:
        return {"groups": self.groups, "stats": list(STATS), "bins": BINS, "features": self.names}

    def describe(self) -> dict:
        return {"store": str(self.store), "groups": {g: len(m) for g, m in self.groups.items()},
                "features": self.names, "replaces": self.replaced, "rows": self.n_rows,
                "bytes": self.n_rows * (len(self.raw_features) + len(self.names))}


def derived_features(meta: dict) -> list[str]:
    """The columns a previous ``--add group-stats`` made (none when it never ran)."""
    return list((meta.get(DERIVED) or {}).get(GROUP_STATS, {}).get("features", []))


def default_groups(store: EraStore) -> list[str]:
    """Numerai's feature groups (intelligence, charisma, …) that the store has as feature sets."""
    found = [g for g in GROUPS if g in store.feature_sets]
    if not found:
        raise InputError(f"store {store.path} has no feature-group sets ({', '.join(GROUPS[:3])}, …; from "
                         "features.json); ingest with --features-json, or name feature sets with --groups a,b")
    return found


def plan_group_stats(store: EraStore, groups: Sequence[str] | None = None) -> GroupStatsPlan:
    """Resolve the groups (feature sets of the store) and the derived columns; InputError on a bad group,
    a group of derived features, or a derived name that a raw feature already has."""
    old = set(derived_features(store.meta))
    raw = [f for f in store.feature_names if f not in old]
    chosen = list(dict.fromkeys(groups)) if groups else default_groups(store)
    members = {}
    for g in chosen:
        if g not in store.feature_sets:
            raise InputError(f"--groups: {g!r} is not a feature set of the store; it has {sorted(store.feature_sets)}")
        made = [f for f in store.feature_sets[g] if f in old]
        if made:
            raise InputError(f"--groups: set {g!r} holds derived features ({made[0]}…); give sets of raw features")
        members[g] = list(store.feature_sets[g])
    names = [derived_name(g, s) for g in chosen for s in STATS]
    clash = sorted(set(names) & set(raw))
    if clash:
        raise InputError(f"the store already has a raw feature named {clash[0]}; group statistics would replace it "
                         "(give other groups with --groups)")
    return GroupStatsPlan(store.path, raw, members, names, store.n_rows, sorted(old))


# -- writing a new version ------------------------------------------------------------------------

def write_features(store: EraStore, raw: list[str], recipe: dict, path: Path,
                   progress: Progress | None = None) -> None:
    """features.i8 of the new version: ``raw`` columns then the recipe's derived columns, era block by
    era block (whole eras: the codes are quantized per era)."""
    index = {f: i for i, f in enumerate(store.feature_names)}
    raw_cols = np.array([index[f] for f in raw], dtype=np.int64)
    groups = recipe["groups"]
    needed = list(dict.fromkeys(f for members in groups.values() for f in members))
    position = {f: i for i, f in enumerate(raw)}
    columns = {g: [position[f] for f in members] for g, members in groups.items()}
    width = len(raw) + len(recipe["features"])
    missing = [f for f in needed if f not in position]
    if missing:
        raise InputError(f"the store lacks {len(missing)} feature(s) the group statistics read (e.g. {missing[0]})")
    with open(path, "wb") as fh:
        for eras in era_blocks(store.offsets, np.arange(store.n_eras), max(1, BLOCK_BYTES // max(1, width))):
            (lo, hi), = row_runs(store.offsets, eras)
            block = np.empty((hi - lo, width), dtype=np.int8)
            block[:, :len(raw)] = read_codes(store, lo, hi, raw_cols)
            offsets = store.offsets[eras[0]:eras[-1] + 2] - lo
            block[:, len(raw):] = group_stat_codes(block[:, :len(raw)], columns, recipe["features"], offsets,
                                                   recipe["bins"])
            fh.write(block.data)
            if progress:
                progress("computing group statistics", hi - lo, store.n_rows)
        fh.flush()
        os.fsync(fh.fileno())


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (store files are never changed in place), or a copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def fingerprint_with(base: str, recipe: dict) -> str:
    """The store's fingerprint with derived columns: it changes when the recipe does."""
    record = json.dumps({"base": base, GROUP_STATS: recipe}, sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()[:32]


def new_meta(store: EraStore, plan: GroupStatsPlan) -> tuple[dict, list[str]]:
    """meta.json of the new version, and every feature set dropped (it used columns the new version lacks)."""
    meta = dict(store.meta)
    columns = set(plan.raw_features) | set(plan.names)
    made = dict(meta.get(MADE_SETS) or {})
    sets, dropped = {}, []
    for name, members in store.feature_sets.items():
        if name == GROUP_STATS:
            continue
        if all(f in columns for f in members):
            sets[name] = members
        else:
            dropped.append(name)
            made.pop(name, None)
    sets[GROUP_STATS] = plan.names
    made[GROUP_STATS] = {"made_by": f"eraflow features --add {GROUP_STATS}", "created": _now()}
    base = meta.get("base_fingerprint", meta["fingerprint"])
    meta.update({"feature_names": plan.raw_features + plan.names, "feature_sets": sets, MADE_SETS: made,
                 DERIVED: {GROUP_STATS: plan.recipe}, "base_fingerprint": base,
                 "fingerprint": fingerprint_with(base, plan.recipe)})
    return meta, dropped


@dataclass(frozen=True)
class AddResult:
    store: Path
    features: list[str]
    dropped_sets: list[str]  # sets that used columns the new recipe no longer has
    seconds: float


def _check_no_json_set(store: EraStore, name: str) -> None:
    if name in store.feature_sets and name not in (store.meta.get(MADE_SETS) or {}):
        raise InputError(f"the store's feature set {name!r} came from features.json; eraflow replaces only sets it "
                         "made (choose another --name)")


def check_set_name(store: EraStore, name: str) -> None:
    """InputError unless ``name`` may name a set eraflow saves: non-empty, no ``+``, not ``group-stats``
    (``--add``'s), not a features.json set."""
    if not name or "+" in name:
        raise InputError(f"feature set name {name!r} must be non-empty and have no '+' (it joins sets)")
    if name == GROUP_STATS:
        raise InputError(f"feature set name {GROUP_STATS!r} is reserved for `--add {GROUP_STATS}`; choose another "
                         "--name")
    _check_no_json_set(store, name)


@translates_write_errors("store", "path")
def add_group_stats(path: str | Path, groups: Sequence[str] | None = None,
                    progress: Progress | None = None) -> AddResult:
    """Append the group statistics to the store at ``path`` (a new version, swapped in atomically).

    Steps: 1. lock the store, plan (:func:`plan_group_stats`); 2. write features.i8 (raw columns +
    derived codes) in a temporary sibling, link targets, offsets and ids; 3. meta.json with the
    recipe; 4. fsync and swap (:func:`eraflow.engine.atomic.replace_dir`). The store's ``cache/``
    is not carried over (a rebuilt store starts with none).
    """
    path = check_output_dir(path, "store")
    started = time.perf_counter()
    with exclusive_lock(path):
        remove_stale_temporaries(path)
        with open_store(path) as store:
            _check_no_json_set(store, GROUP_STATS)
            plan = plan_group_stats(store, groups)
            meta, dropped = new_meta(store, plan)
            rebuild(store, plan.raw_features, plan.recipe, meta, progress)
    return AddResult(path, plan.names, dropped, time.perf_counter() - started)


def check_disk_space(store: EraStore, width: int) -> None:
    """InputError naming the space needed when the store's filesystem cannot hold the new version's
    features.i8 (``n_rows × width`` bytes; the other files are hard links) beside the old one."""
    need, free = store.n_rows * width, shutil.disk_usage(store.path.parent).free
    if need > free:
        raise InputError(f"the new version of {store.path} needs {need / 2**30:.2f} GiB for features.i8 beside the "
                         f"old one and {free / 2**30:.2f} GiB is free there; free some space and run again")


def rebuild(store: EraStore, raw: list[str], recipe: dict, meta: dict, progress: Progress | None = None) -> None:
    """Write a new version of ``store`` (raw + derived columns, ``meta``) beside it and swap it in; the
    disk space is checked first (:func:`check_disk_space`)."""
    check_disk_space(store, len(raw) + len(recipe["features"]))
    tmp = atomic_writer_path(store.path)
    tmp.mkdir()
    try:
        write_features(store, raw, recipe, tmp / FEATURES, progress)
        for name in (TARGETS, OFFSETS, IDS):
            link_or_copy(store.path / name, tmp / name)
        (tmp / META).write_text(json.dumps(meta, indent=1))
        fsync_path(tmp / META)
        fsync_path(tmp)
        with open_store(tmp):  # the new version opens and passes every check before it replaces the old
            pass
        replace_dir(tmp, store.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def add_recipe_to(path: Path, recipe: dict) -> None:
    """Add a model's derived columns (``derived_recipe``'s group-stats part) to the store at ``path``
    (e.g. the temporary store ``eraflow live`` makes from live.parquet)."""
    with open_store(path) as store:
        raw = [f for f in store.feature_names if f not in set(derived_features(store.meta))]
        meta = dict(store.meta, feature_names=raw + recipe["features"], **{DERIVED: {GROUP_STATS: recipe}})
        rebuild(store, raw, recipe, meta)


# -- what a model needs -----------------------------------------------------------------------------

def derived_recipe(store: EraStore, feature_names: Sequence[str]) -> dict | None:
    """The part of the store's derived-column recipe that ``feature_names`` use (for model.json ``derived``):
    ``{"group-stats": {"groups": {group: raw features}, "stats", "bins", "features": [used derived names]}}``,
    or None when the features include no derived column."""
    recipe = (store.meta.get(DERIVED) or {}).get(GROUP_STATS)
    if not recipe:
        return None
    made = set(recipe["features"])
    used = [f for f in feature_names if f in made]
    if not used:
        return None
    groups = {g: members for g, members in recipe["groups"].items() if any(derived_name(g, s) in used for s in STATS)}
    return {GROUP_STATS: {**recipe, "groups": groups, "features": used}}


def merged_recipe(*recipes: dict | None) -> dict | None:
    """One ``derived`` recipe computing the columns of all ``recipes`` (a model's and its post-processing's):
    groups and features in first-seen order; None when none has any. InputError when two compute a group
    from different raw features or with other bins."""
    parts = [r[GROUP_STATS] for r in recipes if r and r.get(GROUP_STATS)]
    if not parts:
        return None
    groups, features = dict(parts[0]["groups"]), list(parts[0]["features"])
    for part in parts[1:]:
        other = next((g for g, members in part["groups"].items() if groups.get(g, members) != members), None)
        if other is not None or part["bins"] != parts[0]["bins"]:
            raise InputError(f"the model and its post-processing compute group statistics of {other or 'a group'!r} "
                             "differently (the store's --add changed between them); set the post-processing again")
        groups.update(part["groups"])
        features += [f for f in part["features"] if f not in features]
    return {GROUP_STATS: {**parts[0], "groups": groups, "features": features}}


def check_store_has_derived(model_derived: dict | None, store: EraStore) -> None:
    """InputError (naming the command that adds them) when ``store`` lacks a model's derived columns
    or made them from other raw features."""
    recipe = (model_derived or {}).get(GROUP_STATS)
    if not recipe:
        return
    have = (store.meta.get(DERIVED) or {}).get(GROUP_STATS) or {"features": [], "groups": {}}
    missing = [f for f in recipe["features"] if f not in have["features"]]
    fix = add_command(store.path, list(recipe["groups"]))
    if missing:
        raise InputError(f"the store lacks the model's derived feature(s) {', '.join(missing[:3])}; "
                         f"add them with `{fix}`")
    other = [g for g, members in recipe["groups"].items() if have["groups"].get(g) != members]
    if other:
        raise InputError(f"the store computed group {other[0]!r} from other features than the model was trained "
                         f"with; recompute them with `{fix}`")


# -- named feature sets -----------------------------------------------------------------------------

def save_feature_set(path: str | Path, name: str, features: Sequence[str], recipe: dict) -> None:
    """Add or replace the feature set ``name`` (made by eraflow) in the store at ``path``.

    meta.json is rewritten atomically under the store's lock, with ``recipe`` (how the set was made)
    under ``made_sets``; the data files are untouched, so readers are unaffected. InputError when
    ``name`` is a features.json set, is empty or composed (``+``), or a feature is not in the store.
    """
    path = check_output_dir(path, "store")
    with exclusive_lock(path):
        with open_store(path) as store:
            check_set_name(store, name)
            unknown = [f for f in features if f not in set(store.feature_names)]
            if unknown or not features:
                raise InputError(f"feature set {name!r} needs features of the store; unknown: {unknown[:3]}")
            made = dict(store.meta.get(MADE_SETS) or {})
            made[name] = {**recipe, "created": _now()}
            meta = dict(store.meta, feature_sets={**store.feature_sets, name: list(features)}, **{MADE_SETS: made})
        atomic_write_json(path / META, meta)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
