"""Parquet sources → EraStore, out of core, rows sorted by era.

Planning (``plan_ingest``) reads only footers and features.json: it resolves columns and types and
fails early on bad input. Building (``build_store``) is an out-of-core counting sort:

1. pass 1 reads only the era and id columns: era code per row (natural era order), rows per era
   → offsets, duplicate-id check (64-bit hashes, then exact check of colliding ids);
2. pass 2 reads row slices; each row goes to ``offsets[era] + rows already placed in that era``,
   so within an era rows keep their source order. A slice is permuted into destination order and
   written with ``pwrite`` as contiguous runs (one run when the source is already era-sorted).
   Row groups too large to slice cheaply are staged in the temporary directory first (see
   ``readers``); ids of sources not sorted by era are sorted one bucket of rows at a time.

The store is built in a temporary sibling directory, fsynced, and swapped into place; a lock
file keeps two ingests out of one store. Memory is one slice plus 10 bytes per row (era code
and id hash), whatever the file size or its row groups.

Keyed sources (Numerai Signals: rows named by date and ticker, see ``sources``) take the same path:
each slice's era is the ISO date of the date column and its id ``"<era>|<ticker>"``, so a duplicate
(date, ticker) is a duplicate id; meta.json records the source columns under ``keys``.
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
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..atomic import atomic_writer_path, fsync_path, remove_stale_temporaries, replace_dir
from ..errors import InputError, StoreError
from ..lock import exclusive_lock
from ..outputs import check_output_dir, translates_write_errors
from ..signals.keys import era_labels, make_keys
from ..version import eraflow_version
from .eras import eras_in_range, sort_eras
from .readers import ENGINES, make_reader
from .sources import ERA_COLUMN, Source, inspect_source
from .store import FEATURES, FORMAT, FORMAT_VERSION, IDS, META, OFFSETS, TARGETS, open_store

SLICE_BYTES = 32 << 20  # int8 feature bytes per pass-2 slice: bounds decode buffers
DEFAULT_TARGETS = "target*"  # the one target pattern allowed to match nothing (live.parquet has no targets)
KEY_ROWS = 1 << 17  # rows per pass-1 slice (era and id columns only): bounds its string buffers
ID_BUCKET_ROWS = 1 << 18  # store rows per id bucket sorted at once when sources are not era-sorted
MAX_ID_BUCKETS = 256  # open bucket files at most; buckets grow beyond ID_BUCKET_ROWS past 67M rows
WRITE_BYTES = 1 << 20  # bytes per pwrite: 33 MiB writes were 4× slower per byte than 1 MiB ones (2-core VM)
Progress = Callable[[str, int, int], None]  # (stage, rows done since last call, total rows)


@dataclass(frozen=True)
class IngestOptions:
    """What to take from the sources. ``targets`` are names or globs; ``eras`` a range ``A:B``."""

    features: Sequence[str] | None = None
    feature_set: str | None = None
    features_json: Path | None = None
    targets: Sequence[str] = (DEFAULT_TARGETS,)
    eras: str | None = None
    batch_rows: int | None = None
    engine: str = "polars"
    era_column: str | None = None  # keyed sources: the date column [default: friday_date or date]
    id_column: str | None = None  # keyed sources: the ticker column [default: numerai_ticker, ticker, ...]


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
    def keys(self) -> dict[str, str] | None:
        """The first source's key columns when the sources are keyed (meta.json ``keys``), else None."""
        return self.sources[0].keys

    @property
    def fingerprint(self) -> str:
        """Changes when a source or the column/era selection changes."""
        record = {"sources": [s.fingerprint for s in self.sources], "features": self.feature_names,
                  "targets": self.target_names, "extra": self.extra_columns, "eras": self.options.eras,
                  "format_version": FORMAT_VERSION}
        if self.keys is not None:  # only keyed: a classic store's fingerprint stays what it was
            record["keys"] = [s.keys for s in self.sources]
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]

    def describe(self) -> dict:
        return {"sources": [str(s.path) for s in self.sources], "rows_in_sources": self.n_rows,
                "features": len(self.feature_names), "targets": self.target_names,
                "extra_columns": self.extra_columns, "eras": self.options.eras or "all",
                "engine": self.options.engine, "batch_rows": self.batch_rows,
                "feature_sets": sorted(self.feature_sets), **({"keys": self.keys} if self.keys else {})}


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
    for name, members in doc["feature_sets"].items():
        if not _is_str_list(members):
            raise InputError(f"{path}: feature set {name!r} must be a list of feature names")
    if "targets" in doc and not _is_str_list(doc["targets"]):
        raise InputError(f"{path}: `targets` must be a list of target names")
    return doc


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _match(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Names matching any pattern (exact or glob), in the order the names appear."""
    return [n for n in names if any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns)]


def _choose_targets(first: Source, patterns: Sequence[str]) -> list[str]:
    """Columns of ``first`` matching the target patterns; every pattern but the default must match one."""
    names = first.schema.names
    unmatched = [p for p in patterns if p != DEFAULT_TARGETS and not _match(names, [p])]
    if unmatched:
        available = [n for n in names if n.startswith("target")]
        more = f" ({len(available)} in all)" if len(available) > 8 else ""
        has = f"its targets are {', '.join(available[:8])}{more}" if available else "it has no target columns"
        raise InputError(f"target pattern {', '.join(map(repr, unmatched))} matches no column of {first.name}; {has} "
                         "(--targets '' selects none)")
    return _match(names, patterns)


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
    chosen = set(wanted)
    for src in sources:
        names = set(src.schema.names)  # a set: `in schema.names` built a list per lookup (0.5 s at 2376 columns)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise InputError(f"{src.name} lacks {len(missing)} {kind} column(s) that were asked for or that "
                             f"{sources[0].name} has: {', '.join(missing[:5])}")
        if every_source:
            extra = [c for c in src.schema.names if c.startswith("feature") and c not in chosen]
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
    sources = [inspect_source(p, options.era_column, options.id_column) for p in paths]
    mixed = next((s for s in sources if s.keyed != sources[0].keyed), None)
    if mixed is not None:
        keyed, classic = (mixed, sources[0]) if mixed.keyed else (sources[0], mixed)
        raise InputError(f"{keyed.name} is keyed by ({keyed.era_column}, {keyed.id_column}) but {classic.name} has "
                         "era and id columns; ingest Signals and classic files into separate stores")
    other = next((s for s in sources if s.keyed and s.id_column != sources[0].id_column), None)
    if other is not None:  # one store, one ticker namespace: numerai_ticker and bloomberg_ticker ids never match
        raise InputError(f"{other.name} is keyed by ticker column {other.id_column} but {sources[0].name} by "
                         f"{sources[0].id_column}; give every Signals file the same ticker column (rename one)")
    doc = read_features_json(options.features_json) if options.features_json else {"feature_sets": {}}
    features = _choose_features(sources[0], options, doc["feature_sets"])
    if not features:
        raise InputError("no features selected")
    if len(set(features)) != len(features):
        raise InputError("a feature is listed twice")
    _check_columns(sources, features, "feature", every_source=options.features is None and options.feature_set is None)
    targets = _choose_targets(sources[0], options.targets)
    taken = [t for t in targets if t in _key_columns(sources[0]) or t in set(features)]
    if taken:
        raise InputError(f"--targets selects {', '.join(taken)}, which {'is' if len(taken) == 1 else 'are'} the era, "
                         "id or feature column(s), not targets; name the target columns")
    _check_columns(sources, targets, "target", every_source=False)
    for src in sources:
        for name in features:
            _check_numeric(src, name, "feature")
        for name in targets:
            _check_numeric(src, name, "target")
    extras = []  # columns that are neither era, id, feature nor target, e.g. data_type
    for src in sources:
        extras += [c for c in src.schema.names if c not in extras and c not in _key_columns(src)
                   and not c.startswith(("feature", "target", "__index_level"))]
    chosen = set(features)
    feature_sets = {name: [f for f in members if f in chosen] for name, members in doc["feature_sets"].items()}
    feature_sets = {k: v for k, v in feature_sets.items() if v}
    feature_sets["all"] = features
    return IngestPlan(sources, features, targets, extras, feature_sets, options)


def _key_columns(src: Source) -> tuple[str, ...]:
    """Source columns that make eras and ids (never features, targets or extra columns)."""
    return (ERA_COLUMN, src.era_column, src.id_column, "id")


# -- keyed sources: era and id made from date and ticker ------------------------------------------

def _era_labels(reader, src: Source) -> list[str]:
    """Distinct era labels of a source; a keyed source's are the ISO dates of its date column."""
    if not src.keyed:
        return reader.era_labels(src)
    dates = pl.scan_parquet(src.path).select(pl.col(src.era_column).unique()).collect().to_series()
    return era_labels(_as_read(src, dates), src.name).drop_nulls().to_list()


def _as_read(src: Source, dates: pl.Series) -> pl.Series:
    """A keyed source's date column, read either way: the readers read a column named ``era`` as strings, so
    YYYYMMDD integers or datetimes there come back as text; both are made YYYY-MM-DD (a date column is kept).
    Dictionary-encoded dates are read as their strings."""
    if dates.dtype in (pl.Categorical, pl.Enum):
        dates = dates.cast(pl.String)
    if src.era_column != ERA_COLUMN or dates.dtype != pl.String:
        return dates
    return dates.str.replace(r"^(\d{4})(\d{2})(\d{2})$", "$1-$2-$3").str.replace(r"^(\d{4}-\d{2}-\d{2})[ T].*$", "$1")


def _slices(reader, src: Source, columns: Sequence[str], batch_rows: int, spill: Path | None = None):
    """``reader.slices``; a keyed source's ``era`` and ``id`` (the ticker, as read) become the ISO date of its
    date column and ``"<era>|<ticker>"``. One-line InputError for a value that is not a date."""
    if not src.keyed:
        yield from reader.slices(src, columns, batch_rows, spill)
        return
    wanted = [c for c in columns if c != ERA_COLUMN]
    for frame in reader.slices(src, [src.era_column, *wanted], batch_rows, spill):
        eras = era_labels(_as_read(src, frame[src.era_column]), src.name)
        keyed = frame.drop(src.era_column).with_columns(make_keys(eras, frame["id"]))
        yield keyed.with_columns(eras.alias(ERA_COLUMN)).select(_columns_as_read(src, columns))


def _columns_as_read(src: Source, columns: Sequence[str]) -> list[str]:
    """Names of ``columns`` in a slice: the id column is read as ``id``."""
    return ["id" if c == src.id_column else c for c in columns]


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
    labels = sort_eras(label for src in plan.sources for label in _era_labels(reader, src) if label is not None)
    if plan.options.eras:
        labels = eras_in_range(labels, plan.options.eras)
    lookup = pl.DataFrame({"era": labels, "code": np.arange(len(labels), dtype=np.int32)})
    dtype = _code_dtype(len(labels))
    codes = []
    hashes = np.empty(plan.n_rows, dtype=np.uint64)
    hashed = 0
    counts = np.zeros(len(labels), dtype=np.int64)
    order = _EraOrder()
    for src in plan.sources:
        src_codes = np.empty(src.n_rows, dtype=dtype)
        done = 0
        for keys in _slices(reader, src, [ERA_COLUMN, src.id_column], KEY_ROWS):
            if keys["era"].null_count():
                raise InputError(f"{src.name}: the era column {src.era_column} has missing values")
            if keys["id"].null_count():
                raise InputError(f"{src.name}: the id column {src.id_column} has missing values")
            code = keys.join(lookup, on="era", how="left", maintain_order="left")["code"].fill_null(-1)
            block = src_codes[done:done + len(keys)]
            block[:] = code.to_numpy()
            kept = block[block >= 0]
            counts += np.bincount(kept, minlength=len(labels))
            order.see(kept)
            hashes[hashed:hashed + len(keys)] = keys["id"].hash(seed=0).to_numpy()
            hashed += len(keys)
            done += len(keys)
            if progress:
                progress("scanning eras", len(keys), plan.n_rows)
        codes.append(src_codes)
    _check_unique_ids(plan, reader, hashes)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return EraLayout(labels, codes, offsets, order.sorted)


class _EraOrder:
    """Whether the era codes of kept rows, seen slice by slice, never decrease."""

    def __init__(self):
        self.sorted, self._last = True, -1

    def see(self, kept: np.ndarray) -> None:
        if self.sorted and kept.size:
            self.sorted = bool(kept[0] >= self._last and np.all(kept[1:] >= kept[:-1]))
            self._last = int(kept[-1])


def _check_unique_ids(plan: IngestPlan, reader, hashes: np.ndarray) -> None:
    """Sort the 64-bit id hashes; colliding hashes are checked against the ids themselves."""
    hashes.sort()
    collisions = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if collisions.size == 0:
        return
    seen: set[str] = set()
    for src in plan.sources:
        for keys in _slices(reader, src, [src.id_column], KEY_ROWS):
            ids = keys["id"]
            for value in ids.filter(ids.hash(seed=0).is_in(collisions.tolist())).to_list():
                if value in seen:
                    raise _duplicate(src, value)
                seen.add(value)


def _duplicate(src: Source, value: str) -> InputError:
    if not src.keyed:
        return InputError(f"duplicate id {value!r} (found again in {src.name}); ids must be unique")
    era, ticker = value.split("|", 1)
    return InputError(f"duplicate row for {src.era_column} {era}, {src.id_column} {ticker!r} (found again in "
                      f"{src.name}); each ticker must appear once per date")


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
    """Write C-order rows of ``block`` to rows ``dest`` of a row-major file, ``WRITE_BYTES`` at a time."""
    row_bytes = block.shape[1] * block.itemsize
    for start, length in contiguous_runs(dest):
        view = memoryview(np.ascontiguousarray(block[start:start + length])).cast("B")
        offset = int(dest[start]) * row_bytes
        while view:
            written = os.pwrite(fd, view[:WRITE_BYTES], offset)
            view, offset = view[written:], offset + written


@dataclass(frozen=True)
class _FeatureColumns:
    """How one source's feature columns become codes: float quarters are scaled ×4."""

    exprs: list[pl.Expr]
    scales: np.ndarray  # per feature: 4 for quarters, else 1


def _feature_columns(plan: IngestPlan, src: Source) -> _FeatureColumns:
    """Float feature columns hold quarters when their maximum is ≤ 1 (older Numerai files), else codes."""
    floats = [f for f in plan.feature_names if pa.types.is_floating(src.type_of(f))]
    top = _float_max(src, floats) if floats else None
    scaled = set(floats) if top is not None and top <= 1.0 else set()
    exprs = [pl.col(f) * 4 if f in scaled else pl.col(f) for f in plan.feature_names]
    return _FeatureColumns(exprs, np.array([4.0 if f in scaled else 1.0 for f in plan.feature_names]))


def _float_max(src: Source, floats: list[str]) -> float | None:
    """Largest value of the ``floats`` columns (None when all are missing): from the footer's statistics when
    every chunk has them, else scanned a few columns at a time (a scan of all decoded them at once)."""
    meta = pq.ParquetFile(src.path).metadata
    leaf = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
    tops = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for name in floats:
            stats = group.column(leaf[name]).statistics
            if stats is None or not stats.has_min_max or stats.max != stats.max:  # none, or NaN (old writers)
                return _scanned_max(src, floats)
            tops.append(stats.max)
    return max(tops, default=None)


def _scanned_max(src: Source, floats: list[str]) -> float | None:
    width = max(1, SLICE_BYTES // (8 * max(rows for rows, _ in src.row_groups)))  # float64 columns of a row group
    scan = pl.scan_parquet(src.path)
    tops = [scan.select(pl.max_horizontal(pl.col(floats[k:k + width]).max())).collect().item()
            for k in range(0, len(floats), width)]
    return max((t for t in tops if t is not None and t == t), default=None)  # t == t: not NaN (an all-NaN column)


def _feature_codes(plan: IngestPlan, src: Source, frame: pl.DataFrame, columns: _FeatureColumns, row0: int,
                   codes: np.ndarray, eras: list[str]) -> np.ndarray:
    from .codes import to_codes  # numba: not loaded by a re-run that finds the store up to date (0.2 s, ~60 MiB)

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
    """ids.parquet (ids and extra columns) in store order, in memory bounded whatever the row count.

    Era-sorted sources stream straight into it. Otherwise a slice's rows, in destination order
    (their destination rows increase), are appended with those rows to the spill file of each bucket
    of ``bucket_rows`` destination rows they fall in; ``close`` then sorts one bucket at a time.
    """

    def __init__(self, path: Path, schema: pa.Schema, in_order: bool, n_rows: int):
        self.path, self.schema, self.in_order = path, schema, in_order
        self.bucket_rows = max(ID_BUCKET_ROWS, -(-n_rows // MAX_ID_BUCKETS))
        self._writer = pq.ParquetWriter(path, schema)
        self._buckets: dict[int, ipc.RecordBatchStreamWriter] = {}

    def write(self, frame: pl.DataFrame, take: np.ndarray, dest: np.ndarray) -> None:
        """Rows ``take`` of ``frame`` go to store rows ``dest`` (increasing). Gathers through Polars:
        ``pa.array`` of a numpy array imports pandas (0.4 s)."""
        rows = frame.select([c for c in self.schema.names if c in frame.columns])[take]
        cols = {f.name: rows[f.name].to_arrow().cast(f.type) if f.name in rows.columns else pa.nulls(take.size, f.type)
                for f in self.schema}
        table = pa.table(cols, schema=self.schema)
        if self.in_order:
            self._writer.write_table(table)
            return
        table = table.append_column("_row", pl.Series(dest).to_arrow())
        first, last = int(dest[0]) // self.bucket_rows, int(dest[-1]) // self.bucket_rows
        cuts = np.searchsorted(dest, np.arange(first + 1, last + 1) * self.bucket_rows).tolist()
        for bucket, lo, hi in zip(range(first, last + 1), [0, *cuts], [*cuts, dest.size]):
            self._bucket(bucket, table.schema).write_table(table.slice(lo, hi - lo))

    def _bucket(self, bucket: int, schema: pa.Schema) -> ipc.RecordBatchStreamWriter:
        if bucket not in self._buckets:
            self._buckets[bucket] = ipc.new_stream(str(self._bucket_path(bucket)), schema)
        return self._buckets[bucket]

    def _bucket_path(self, bucket: int) -> Path:
        return self.path.with_name(f"ids.bucket-{bucket}.arrow")

    def close(self) -> None:
        for bucket in sorted(self._buckets):
            self._buckets.pop(bucket).close()
            path = self._bucket_path(bucket)
            with pa.memory_map(str(path)) as source:
                table = ipc.open_stream(source).read_all()
            self._writer.write_table(table.sort_by("_row").drop_columns(["_row"]))
            del table
            path.unlink()
        self._writer.close()

    def abort(self) -> None:
        """Close every open writer after a failure (the caller removes the temporary directory)."""
        for writer in [*self._buckets.values(), self._writer]:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 — already failing: the first error is the one reported
                pass
        self._buckets.clear()


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
    ids = _IdWriter(tmp / IDS, _id_schema(plan), layout.sorted, n_rows)
    try:
        os.ftruncate(fds[FEATURES], n_rows * nf)
        os.ftruncate(fds[TARGETS], n_rows * nt * 4)
        for src, codes in zip(plan.sources, layout.codes):
            feature_columns = _feature_columns(plan, src)
            extras = [c for c in plan.extra_columns if c in src.schema.names]
            columns = [src.id_column, *extras, *plan.feature_names, *plan.target_names]
            row0 = 0
            for frame in _slices(reader, src, columns, plan.batch_rows, spill=tmp):
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
    except BaseException:
        ids.abort()
        raise
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
        "n_rows": n, "eras": layout.eras, "era_rows": np.diff(layout.offsets).tolist(),
        "feature_names": plan.feature_names,
        "target_names": plan.target_names, "feature_sets": plan.feature_sets,
        "extra_columns": plan.extra_columns,
        "target_nan_share": {t: (c / n if n else 0.0) for t, c in nan_counts.items()},
        "sources": [s.fingerprint for s in plan.sources], "era_range": plan.options.eras,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "eraflow_version": eraflow_version(),
        **({"keys": plan.keys} if plan.keys else {}),
    }


def _is_current(store: Path, plan: IngestPlan) -> bool:
    try:
        with open_store(store) as current:
            return current.meta.get("base_fingerprint", current.fingerprint) == plan.fingerprint
    except StoreError:
        return False


@translates_write_errors("store", "store")
def build_store(plan: IngestPlan, store: str | Path, force: bool = False,
                progress: Progress | None = None) -> IngestResult:
    """Build the store at ``store`` from ``plan`` (skipped when it is already current, unless ``force``)."""
    store = check_output_dir(store, "store", inputs=[s.path for s in plan.sources])
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
