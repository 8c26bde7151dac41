"""Parquet sources → EraStore, out of core, rows sorted by era.

Planning (``plan_ingest``) reads only footers and features.json: it resolves columns and types and
fails early on bad input. Building (``build_store``) is an out-of-core counting sort:

1. pass 1 reads only the era and id columns: era code per row (natural era order), rows per era
   → offsets, duplicate-id check (64-bit hashes, then exact check of colliding ids);
2. pass 2 reads row slices; each row goes to ``offsets[era] + rows already placed in that era``,
   so within an era rows keep their source order. A slice is permuted into destination order and
   written with ``pwrite`` as contiguous runs (one run when the source is already era-sorted).

The store is built in a temporary sibling directory, fsynced, and swapped into place; a lock
file keeps two ingests out of one store. Memory is one slice plus 6–8 bytes per row (era code
and id hash), whatever the file size.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_writer_path, fsync_path, remove_stale_temporaries, replace_dir
from .codes import to_codes
from .eras import eras_in_range, sort_eras
from .errors import InputError, StoreError
from .lock import exclusive_lock
from .readers import ENGINES, make_reader
from .sources import ERA_COLUMN, Source, inspect_source
from .store import FEATURES, FORMAT, FORMAT_VERSION, IDS, META, OFFSETS, TARGETS, open_store
from .version import eraflow_version

SLICE_BYTES = 32 << 20  # int8 feature bytes per pass-2 slice: bounds decode buffers
KEY_ROWS = 1 << 17  # rows per pass-1 slice (era and id columns only): bounds its string buffers
Progress = Callable[[str, int, int], None]  # (stage, rows done since last call, total rows)


@dataclass(frozen=True)
class IngestOptions:
    """What to take from the sources. ``targets`` are names or globs; ``eras`` a range ``A:B``."""

    features: Sequence[str] | None = None
    feature_set: str | None = None
    features_json: Path | None = None
    targets: Sequence[str] = ("target*",)
    eras: str | None = None
    batch_rows: int | None = None
    engine: str = "polars"


@dataclass(frozen=True)
class IngestPlan:
    """Resolved columns and sources; computed from footers only."""

    sources: list[Source]
    feature_names: list[str]
    target_names: list[str]
    extra_columns: list[str]
    feature_sets: dict[str, list[str]]
    options: IngestOptions

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.sources)

    @property
    def batch_rows(self) -> int:
        return self.options.batch_rows or max(1024, SLICE_BYTES // max(1, len(self.feature_names)))

    @property
    def fingerprint(self) -> str:
        """Changes when a source or the column/era selection changes."""
        record = {"sources": [s.fingerprint for s in self.sources], "features": self.feature_names,
                  "targets": self.target_names, "extra": self.extra_columns, "eras": self.options.eras,
                  "format_version": FORMAT_VERSION}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]

    def describe(self) -> dict:
        return {"sources": [str(s.path) for s in self.sources], "rows_in_sources": self.n_rows,
                "features": len(self.feature_names), "targets": self.target_names,
                "extra_columns": self.extra_columns, "eras": self.options.eras or "all",
                "engine": self.options.engine, "batch_rows": self.batch_rows,
                "feature_sets": sorted(self.feature_sets)}


@dataclass
class IngestResult:
    store: Path
    status: str  # "built" or "unchanged"
    n_rows: int = 0
    n_eras: int = 0
    seconds: float = 0.0


# -- planning ------------------------------------------------------------------------------------

def read_features_json(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("feature_sets"), dict):
        raise InputError(f"{path} has no `feature_sets` object; is it Numerai's features.json?")
    return doc


def _match(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Names matching any pattern (exact or glob), in the order the names appear."""
    return [n for n in names if any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns)]


def _choose_features(first: Source, options: IngestOptions, sets: dict) -> list[str]:
    if options.feature_set is not None:
        if options.feature_set not in sets:
            raise InputError(f"unknown feature set {options.feature_set!r}; features.json has "
                             f"{', '.join(sorted(sets))}")
        return list(sets[options.feature_set])
    if options.features is not None:
        return list(options.features)
    names = [n for n in first.schema.names if n.startswith("feature")]
    if not names:
        raise InputError(f"{first.path} has no feature columns (names starting with `feature`)")
    return names


def _check_columns(sources: list[Source], wanted: list[str], kind: str, every_source: bool) -> None:
    for src in sources:
        missing = [c for c in wanted if c not in src.schema.names]
        if missing:
            raise InputError(f"{src.name} lacks {len(missing)} {kind} column(s) that were asked for or that "
                             f"{sources[0].name} has: {', '.join(missing[:5])}")
        if every_source:
            extra = [c for c in src.schema.names if c.startswith("feature") and c not in set(wanted)]
            if extra:
                raise InputError(f"{src.name} has {len(extra)} feature column(s) that {sources[0].name} lacks: "
                                 f"{', '.join(extra[:5])}; pass --features or --feature-set to choose")


def _check_numeric(src: Source, column: str, kind: str) -> None:
    t = src.type_of(column)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise InputError(f"{src.name}: {kind} column {column} has type {t}; expected numbers")


def plan_ingest(paths: Sequence[str | Path], options: IngestOptions = IngestOptions()) -> IngestPlan:
    """Inspect sources and options; raise InputError before any data is read."""
    if not paths:
        raise InputError("no source files given")
    if options.engine not in ENGINES:
        raise InputError(f"unknown engine {options.engine!r}; choose one of {', '.join(ENGINES)}")
    if options.batch_rows is not None and options.batch_rows < 1:
        raise InputError("--batch-rows must be a positive number of rows")
    if options.feature_set is not None and options.features_json is None:
        raise InputError("--feature-set needs --features-json (Numerai's features.json)")
    sources = [inspect_source(p) for p in paths]
    doc = read_features_json(options.features_json) if options.features_json else {"feature_sets": {}}
    features = _choose_features(sources[0], options, doc["feature_sets"])
    if not features:
        raise InputError("no features selected")
    if len(set(features)) != len(features):
        raise InputError("a feature is listed twice")
    _check_columns(sources, features, "feature", every_source=options.features is None and options.feature_set is None)
    targets = _match(sources[0].schema.names, options.targets)
    _check_columns(sources, targets, "target", every_source=False)
    for src in sources:
        for name in features:
            _check_numeric(src, name, "feature")
        for name in targets:
            _check_numeric(src, name, "target")
    extras = []  # columns that are neither era, id, feature nor target, e.g. data_type
    for src in sources:
        extras += [c for c in src.schema.names if c not in extras and c not in (ERA_COLUMN, src.id_column, "id")
                   and not c.startswith(("feature", "target", "__index_level"))]
    chosen = set(features)
    feature_sets = {name: [f for f in members if f in chosen] for name, members in doc["feature_sets"].items()
                    if isinstance(members, list)}
    feature_sets = {k: v for k, v in feature_sets.items() if v}
    feature_sets["all"] = features
    return IngestPlan(sources, features, targets, extras, feature_sets, options)


# -- pass 1: era codes, offsets, duplicate ids ----------------------------------------------------

@dataclass
class EraLayout:
    eras: list[str]  # labels kept, natural order
    codes: list[np.ndarray]  # per source: era code per row, -1 = era not kept
    offsets: np.ndarray  # int64, len(eras) + 1
    sorted: bool  # sources, concatenated, already in era order


def _code_dtype(n_eras: int):
    return np.int16 if n_eras < np.iinfo(np.int16).max else np.int32


def layout_eras(plan: IngestPlan, reader, progress: Progress | None) -> EraLayout:
    """Pass 1: era labels, per-row era codes and offsets; InputError on null/duplicate ids."""
    labels = sort_eras(label for src in plan.sources for label in reader.era_labels(src) if label is not None)
    if plan.options.eras:
        labels = eras_in_range(labels, plan.options.eras)
    lookup = pl.DataFrame({"era": labels, "code": np.arange(len(labels), dtype=np.int32)})
    dtype = _code_dtype(len(labels))
    codes = []
    hashes = np.empty(plan.n_rows, dtype=np.uint64)
    hashed = 0
    for src in plan.sources:
        src_codes = np.empty(src.n_rows, dtype=dtype)
        done = 0
        for keys in reader.slices(src, [ERA_COLUMN, src.id_column], KEY_ROWS):
            if keys["era"].null_count():
                raise InputError(f"{src.name}: the era column has missing values")
            if keys["id"].null_count():
                raise InputError(f"{src.name}: the id column has missing values")
            code = keys.join(lookup, on="era", how="left", maintain_order="left")["code"].fill_null(-1)
            src_codes[done:done + len(keys)] = code.to_numpy()
            hashes[hashed:hashed + len(keys)] = keys["id"].hash(seed=0).to_numpy()
            hashed += len(keys)
            done += len(keys)
            if progress:
                progress("scanning eras", len(keys), plan.n_rows)
        codes.append(src_codes)
    _check_unique_ids(plan, reader, hashes)
    kept = np.concatenate([c[c >= 0] for c in codes])
    counts = np.bincount(kept.astype(np.int64), minlength=len(labels))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    is_sorted = bool(kept.size < 2 or np.all(np.diff(kept) >= 0))
    return EraLayout(labels, codes, offsets, is_sorted)


def _check_unique_ids(plan: IngestPlan, reader, hashes: np.ndarray) -> None:
    """Sort the 64-bit id hashes; colliding hashes are checked against the ids themselves."""
    hashes.sort()
    collisions = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if collisions.size == 0:
        return
    seen: set[str] = set()
    for src in plan.sources:
        for keys in reader.slices(src, [src.id_column], KEY_ROWS):
            ids = keys["id"]
            for value in ids.filter(ids.hash(seed=0).is_in(collisions.tolist())).to_list():
                if value in seen:
                    raise InputError(f"duplicate id {value!r} (found again in {src.name}); ids must be unique")
                seen.add(value)


# -- pass 2: scatter slices into the store -------------------------------------------------------

def destination(codes: np.ndarray, cursor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a slice's era codes: (rows of the slice in destination order, their destination rows).

    Row i of era e goes to ``cursor[e]`` + its rank among the slice's rows of era e; ``cursor`` is
    advanced in place. Rows with code -1 are dropped.
    """
    keep = np.flatnonzero(codes >= 0)
    kept = codes[keep].astype(np.int64)
    if kept.size and np.all(kept[1:] >= kept[:-1]):
        order = np.arange(kept.size)
    else:
        order = np.argsort(kept, kind="stable")
    sorted_codes = kept[order]
    counts = np.bincount(sorted_codes, minlength=cursor.size)
    first_in_slice = np.cumsum(counts) - counts
    dest = cursor[sorted_codes] + np.arange(sorted_codes.size) - first_in_slice[sorted_codes]
    cursor += counts
    return keep[order], dest


def contiguous_runs(dest: np.ndarray) -> list[tuple[int, int]]:
    """(start index, length) of runs where dest increases by exactly 1."""
    breaks = np.flatnonzero(np.diff(dest) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [dest.size]])
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def _pwrite_rows(fd: int, block: np.ndarray, dest: np.ndarray) -> None:
    """Write C-order rows of ``block`` to rows ``dest`` of a row-major file."""
    row_bytes = block.shape[1] * block.itemsize
    for start, length in contiguous_runs(dest):
        view = memoryview(np.ascontiguousarray(block[start:start + length])).cast("B")
        offset = int(dest[start]) * row_bytes
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


@dataclass(frozen=True)
class _FeatureColumns:
    """How one source's feature columns become codes: float quarters are scaled ×4."""

    exprs: list[pl.Expr]
    scales: np.ndarray  # per feature: 4 for quarters, else 1


def _feature_columns(plan: IngestPlan, src: Source) -> _FeatureColumns:
    """Float feature columns hold quarters when their maximum is ≤ 1 (older Numerai files), else codes."""
    floats = [f for f in plan.feature_names if pa.types.is_floating(src.type_of(f))]
    quarters = False
    if floats:
        top = pl.scan_parquet(src.path).select(pl.max_horizontal(pl.col(floats).max())).collect().item()
        quarters = top is not None and top <= 1.0
    scaled = set(floats) if quarters else set()
    exprs = [pl.col(f) * 4 if f in scaled else pl.col(f) for f in plan.feature_names]
    return _FeatureColumns(exprs, np.array([4.0 if f in scaled else 1.0 for f in plan.feature_names]))


def _feature_codes(plan: IngestPlan, src: Source, frame: pl.DataFrame, columns: _FeatureColumns, row0: int,
                   codes: np.ndarray, eras: list[str]) -> np.ndarray:
    values = frame.select(columns.exprs).to_numpy(order="c")
    out, bad = to_codes(values)
    if bad >= 0:
        i, j = divmod(bad, len(plan.feature_names))
        scale = columns.scales[j]
        allowed = "0, 0.25, 0.5, 0.75, 1 or missing" if scale == 4 else "integers 0..4 or missing"
        era = eras[codes[i]] if codes[i] >= 0 else "?"
        value = (values[i, j] / scale).item() if scale != 1 else values[i, j].item()
        raise InputError(f"{src.name}: {plan.feature_names[j]} has value {value!r} in row {row0 + i} "
                         f"(era {era}); features must be {allowed}")
    return out


class _IdWriter:
    """ids.parquet in store order: streamed when sources are era-sorted, else sorted at the end."""

    def __init__(self, path: Path, schema: pa.Schema, in_order: bool):
        self.path, self.schema, self.in_order = path, schema, in_order
        target = path if in_order else path.with_name("ids.unsorted.parquet")
        self._schema = schema if in_order else schema.append(pa.field("_row", pa.int64()))
        self._target = target
        self._writer = pq.ParquetWriter(target, self._schema)

    def write(self, frame: pl.DataFrame, take: np.ndarray, dest: np.ndarray) -> None:
        cols = {}
        for f in self.schema:
            col = frame[f.name].to_arrow() if f.name in frame.columns else pa.nulls(len(frame), f.type)
            cols[f.name] = col.cast(f.type).take(pa.array(take))
        if not self.in_order:
            cols["_row"] = pa.array(dest)
        self._writer.write_table(pa.table(cols, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
        if not self.in_order:
            pl.scan_parquet(self._target).sort("_row").drop("_row").sink_parquet(self.path)
            self._target.unlink()


def _id_schema(plan: IngestPlan) -> pa.Schema:
    fields = [pa.field("id", pa.string())]
    for name in plan.extra_columns:
        typ = next(s.type_of(name) for s in plan.sources if name in s.schema.names)
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        fields.append(pa.field(name, typ))
    return pa.schema(fields)


def _scatter(plan: IngestPlan, reader, layout: EraLayout, tmp: Path, progress: Progress | None) -> dict:
    """Pass 2: write features, targets and ids of every kept row to its place. Returns NaN counts."""
    n_rows = int(layout.offsets[-1])
    nf, nt = len(plan.feature_names), len(plan.target_names)
    cursor = layout.offsets[:-1].copy()
    nan_counts = np.zeros(nt, dtype=np.int64)
    fds = {name: os.open(tmp / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644) for name in (FEATURES, TARGETS)}
    ids = _IdWriter(tmp / IDS, _id_schema(plan), layout.sorted)
    try:
        os.ftruncate(fds[FEATURES], n_rows * nf)
        os.ftruncate(fds[TARGETS], n_rows * nt * 4)
        for src, codes in zip(plan.sources, layout.codes):
            feature_columns = _feature_columns(plan, src)
            extras = [c for c in plan.extra_columns if c in src.schema.names]
            columns = [src.id_column, *extras, *plan.feature_names, *plan.target_names]
            row0 = 0
            for frame in reader.slices(src, columns, plan.batch_rows):
                slice_codes = codes[row0:row0 + len(frame)]
                take, dest = destination(slice_codes, cursor)
                if take.size:
                    feats = _feature_codes(plan, src, frame, feature_columns, row0, slice_codes, layout.eras)
                    in_order = take.size == len(frame) and bool(np.all(take == np.arange(take.size)))
                    _pwrite_rows(fds[FEATURES], feats if in_order else feats[take], dest)
                    targets = frame.select(pl.col(plan.target_names).cast(pl.Float32)).to_numpy(order="c")
                    if nt:
                        targets = targets[take]
                        nan_counts += np.isnan(targets).sum(axis=0)
                        _pwrite_rows(fds[TARGETS], targets, dest)
                    ids.write(frame, take, dest)
                row0 += len(frame)
                if progress:
                    progress("writing rows", len(frame), plan.n_rows)
        ids.close()
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
    if not np.array_equal(cursor, layout.offsets[1:]):
        raise StoreError("a source changed while it was being read (row counts differ between passes); run again")
    return {name: int(c) for name, c in zip(plan.target_names, nan_counts)}


def _meta(plan: IngestPlan, layout: EraLayout, nan_counts: dict) -> dict:
    n = int(layout.offsets[-1])
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": plan.fingerprint,
        "n_rows": n, "eras": layout.eras, "feature_names": plan.feature_names,
        "target_names": plan.target_names, "feature_sets": plan.feature_sets,
        "extra_columns": plan.extra_columns,
        "target_nan_share": {t: (c / n if n else 0.0) for t, c in nan_counts.items()},
        "sources": [s.fingerprint for s in plan.sources], "era_range": plan.options.eras,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "eraflow_version": eraflow_version(),
    }


def _is_current(store: Path, plan: IngestPlan) -> bool:
    try:
        return open_store(store).fingerprint == plan.fingerprint
    except StoreError:
        return False


def build_store(plan: IngestPlan, store: str | Path, force: bool = False,
                progress: Progress | None = None) -> IngestResult:
    """Build the store at ``store`` from ``plan`` (skipped when it is already current, unless ``force``)."""
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise InputError(f"store path {store} is an existing file; choose a directory path")
    store.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with exclusive_lock(store):
        remove_stale_temporaries(store)
        if not force and store.exists() and _is_current(store, plan):
            return IngestResult(store, "unchanged")
        reader = make_reader(plan.options.engine)
        layout = layout_eras(plan, reader, progress)
        if layout.offsets[-1] == 0:
            raise InputError(f"no rows left after selecting eras {plan.options.eras}")
        tmp = atomic_writer_path(store)
        tmp.mkdir()
        try:
            nan_counts = _scatter(plan, reader, layout, tmp, progress)
            layout.offsets.tofile(tmp / OFFSETS)
            (tmp / META).write_text(json.dumps(_meta(plan, layout, nan_counts), indent=1))
            for name in (OFFSETS, META, IDS):
                fsync_path(tmp / name)
            fsync_path(tmp)
            replace_dir(tmp, store)
        except BaseException:
            remove_stale_temporaries(store)
            raise
    return IngestResult(store, "built", int(layout.offsets[-1]), len(layout.eras),
                        time.perf_counter() - started)


def ingest_files(paths: Sequence[str | Path], store: str | Path, options: IngestOptions = IngestOptions(),
           force: bool = False, progress: Progress | None = None) -> IngestResult:
    """Plan and build in one call."""
    return build_store(plan_ingest(paths, options), store, force, progress)
