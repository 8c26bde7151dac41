"""EraStore: rows sorted by era in memory-mapped files, plus era offsets.

A store is a directory::

    meta.json     format version, sources, feature/target names, feature sets, era labels, n_rows,
                  rows per era (era_rows, format version 2); after ``eraflow features``: the recipe of
                  added columns (derived), the sets eraflow made (made_sets), base_fingerprint; for
                  keyed (Signals) sources: keys, the date and ticker columns ids "<era>|<ticker>" came from
    features.i8   n_rows × n_features int8, C order; missing = -1
    targets.f32   n_rows × n_targets float32; NaN kept
    offsets.i64   era offsets, length n_eras + 1: era k is rows offsets[k]:offsets[k+1]
    ids.parquet   row ids in store order, plus extra source columns (e.g. data_type)

Opening checks meta.json's schema, the file sizes, offsets.i64 against era_rows and the row count
of ids.parquet's footer, then maps the files read-only; nothing else is loaded until used. All
files are opened together from one version of the directory, so a reader is unaffected by a
re-ingest that swaps in a new store while it runs.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, StoreError, first_line
from .eras import eras_in_range

FORMAT = "eraflow-store"
FORMAT_VERSION = 2  # 2: meta.json records rows per era (``era_rows``), checked against offsets.i64 on open
READ_VERSIONS = (1, 2)  # version 1 stores (no ``era_rows``) still open, with the other checks only
META, FEATURES, TARGETS, OFFSETS, IDS = "meta.json", "features.i8", "targets.f32", "offsets.i64", "ids.parquet"
DATA_FILES = (FEATURES, TARGETS, OFFSETS, IDS)
MISSING = -1  # int8 code of a missing feature value
FNC_FEATURE_SET = "fncv3_features"  # the features.json set behind Numerai's FNCv3 (feature-neutral corr)
BATCH_BYTES = 64 << 20  # default float32 bytes per batch from EraStore.batches
OPEN_ATTEMPTS = 3  # tries to open one version of a store that a re-ingest is swapping
REBUILD = "rebuild it with `eraflow ingest --force`"
REMAKE = "remove the directory and run `eraflow ingest` again"  # --force replaces only a dir with our meta.json


def open_store(path: str | Path) -> EraStore:
    """Open the store at ``path``; StoreError if missing, damaged, or of another format version.

    Every file is opened at once from one version of the directory, so a reader keeps seeing the
    store it opened while a re-ingest swaps in a new one.
    """
    return EraStore(Path(path))


def open_store_checked(path: str | Path, fingerprint: str) -> EraStore:
    """The store at ``path`` (opened where a task runs, e.g. on a Dask worker), which must be the store the
    caller planned on (``fingerprint``); InputError otherwise: re-ingested since, or another copy there."""
    from socket import gethostname

    store = open_store(path)
    if store.fingerprint != fingerprint:
        store.close()
        raise InputError(f"the store at {path} on host {gethostname()} is another store than the one this run began "
                         f"with (fingerprint {store.fingerprint}, not {fingerprint}): re-ingested since, or another "
                         "copy; every worker must see the same store at the same path, unchanged: run again")
    return store


def _damaged(path: Path, problem: str, fix: str = REBUILD) -> StoreError:
    return StoreError(f"store {path} is damaged: {problem}; {fix}")


# -- opening one version ---------------------------------------------------------------------

def _open_dir(path: Path) -> int:
    """A descriptor of the store directory; its files are opened through it."""
    if not path.exists():
        raise StoreError(f"no store at {path}: create one with `eraflow ingest SRC.parquet {path}`")
    if not path.is_dir():
        raise StoreError(f"{path} is a file, not a store directory")
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def _open_present(path: Path, dir_fd: int) -> dict[str, int]:
    """Read-only descriptors of the store files present in the directory ``dir_fd``."""
    fds: dict[str, int] = {}
    try:
        for name in (META, *DATA_FILES):
            try:
                fds[name] = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
    except OSError as exc:
        _close_all(fds)
        raise StoreError(f"cannot read store {path}: {exc.strerror} ({exc.filename or name})") from None
    return fds


def _was_swapped(path: Path, dir_fd: int) -> bool:
    """True when ``path`` no longer names the directory ``dir_fd`` (a re-ingest replaced it)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    then = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino)


def _open_version(path: Path) -> dict[str, int]:
    """Descriptors of meta.json and the data files, all from one version of the store directory.

    A re-ingest swaps a new directory in and deletes the old one's files; when that happens while
    the files are being opened, some are gone, and they are all opened again from the new one.
    """
    for _ in range(OPEN_ATTEMPTS):
        dir_fd = _open_dir(path)
        try:
            fds = _open_present(path, dir_fd)
            swapped = len(fds) < 1 + len(DATA_FILES) and _was_swapped(path, dir_fd)
        finally:
            os.close(dir_fd)
        if not swapped:
            return fds
        _close_all(fds)
    raise StoreError(f"store {path} kept changing while it was opened (an ingest is replacing it); try again")


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    with open(fd, "rb", closefd=False) as fh:
        return fh.read()


# -- meta.json -------------------------------------------------------------------------------

def _read_meta(path: Path, fds: dict[str, int]) -> dict:
    """meta.json of the opened version, checked against its schema.

    A directory without meta.json and without store files is "not a store"; one that has store
    files or a meta.json of this format is a store, and any problem makes it "damaged".
    """
    has_data = any(name in fds for name in DATA_FILES)
    if META not in fds:
        if has_data:
            raise _damaged(path, f"{META} is missing", REMAKE)
        raise StoreError(f"{path} is not an eraflow store (no {META}); give a directory made by `eraflow ingest`")
    try:
        meta = json.loads(_read_fd(fds[META]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if has_data:
            raise _damaged(path, f"{META} is not valid JSON ({getattr(exc, 'msg', 'not UTF-8')})", REMAKE) from None
        raise StoreError(f"{path} is not an eraflow store ({META} is not valid JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        if has_data:
            raise _damaged(path, f"{META} has no format {FORMAT!r}", REMAKE)
        raise StoreError(f"{path} is not an eraflow store ({META} has no format {FORMAT!r})")
    if meta.get("format_version") not in READ_VERSIONS:
        raise StoreError(f"store {path} has format version {meta.get('format_version')}, this eraflow reads "
                         f"versions {', '.join(map(str, READ_VERSIONS))}; {REBUILD}")
    problem = _meta_problem(meta)
    if problem:
        raise _damaged(path, f"{META} {problem}")
    return meta


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v) and len(set(v)) == len(v)


def _is_share(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


META_KEYS = {  # key: (check, what the value must be)
    "fingerprint": (lambda v: isinstance(v, str), "a string"),
    "created": (lambda v: isinstance(v, str), "a string"),
    "n_rows": (_is_count, "an integer >= 0"),
    "eras": (lambda v: _is_names(v) and len(v) > 0, "a non-empty list of distinct strings"),
    "feature_names": (_is_names, "a list of distinct strings"),
    "target_names": (_is_names, "a list of distinct strings"),
    "extra_columns": (_is_names, "a list of distinct strings"),
    "feature_sets": (lambda v: isinstance(v, dict) and all(_is_names(m) for m in v.values()),
                     "an object of lists of feature names"),
    "target_nan_share": (lambda v: isinstance(v, dict) and all(_is_share(x) for x in v.values()),
                         "an object of shares in [0, 1]"),
    "era_rows": (lambda v: isinstance(v, list) and all(_is_count(x) for x in v), "a list of integers >= 0"),
}


def _is_group_stats(v) -> bool:
    """``derived["group-stats"]`` as ``eraflow features --add`` writes it (engine.data.derived)."""
    groups = v.get("groups") if isinstance(v, dict) else None
    return (isinstance(groups, dict) and all(_is_names(m) for m in groups.values())
            and _is_names(v.get("features")) and _is_count(v.get("bins")) and v["bins"] >= 2)


def _is_keys(v) -> bool:
    """``keys`` of a keyed (Signals) store: the source's era (date) and id (ticker) column names."""
    return isinstance(v, dict) and set(v) == {"era", "id"} and all(isinstance(x, str) and x for x in v.values())


OPTIONAL_KEYS = {  # written by `eraflow features` (derived, made_sets) and keyed ingest (keys); checked when present
    "keys": (_is_keys, "an object with the era and id column names"),
    "derived": (lambda v: isinstance(v, dict) and all(_is_group_stats(r) for r in v.values()),
                "an object of recipes with groups, features and bins"),
    "made_sets": (lambda v: isinstance(v, dict) and all(isinstance(r, dict) for r in v.values()),
                  "an object of recipe objects"),
}


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with a meta.json's keys, types or lengths (None when nothing is)."""
    required = [k for k in META_KEYS if k != "era_rows" or meta["format_version"] >= 2]
    for key in required:
        check, what = META_KEYS[key]
        if key not in meta:
            return f"has no key {key!r}"
        if not check(meta[key]):
            return f"key {key!r} must be {what}"
    for key, (check, what) in OPTIONAL_KEYS.items():
        if key in meta and not check(meta[key]):
            return f"key {key!r} must be {what}"
    features = set(meta["feature_names"])
    for name, members in meta["feature_sets"].items():
        unknown = [f for f in members if f not in features]
        if unknown:
            return f"key 'feature_sets' lists unknown features in {name!r}: {', '.join(unknown[:3])}"
    for recipe in meta.get("derived", {}).values():
        unknown = [f for f in recipe["features"] if f not in features]
        if unknown:
            return f"key 'derived' lists unknown features: {', '.join(unknown[:3])}"
    missing = [t for t in meta["target_names"] if t not in meta["target_nan_share"]]
    if missing:
        return f"key 'target_nan_share' has no entry for {', '.join(missing[:3])}"
    if "era_rows" in required and (len(meta["era_rows"]) != len(meta["eras"])
                                   or sum(meta["era_rows"]) != meta["n_rows"]):
        return "key 'era_rows' must give the rows of each era, summing to n_rows"
    return None


# -- data files ------------------------------------------------------------------------------

def _file_size(path: Path, fds: dict[str, int], name: str) -> int:
    if name not in fds:
        raise _damaged(path, f"{name} is missing")
    st = os.fstat(fds[name])
    if not stat.S_ISREG(st.st_mode):
        raise _damaged(path, f"{name} is not a file")
    return st.st_size


def _check_size(path: Path, fds: dict[str, int], name: str, expected: int) -> None:
    size = _file_size(path, fds, name)
    if size != expected:
        raise _damaged(path, f"{name} has {size} bytes, expected {expected}")


def _memmap(fd: int, dtype, shape: tuple[int, int]) -> np.ndarray:
    if shape[0] * shape[1] == 0:  # mmap cannot map an empty file
        return np.empty(shape, dtype=dtype)
    with open(fd, "rb", closefd=False) as fh:
        return np.memmap(fh, dtype=dtype, mode="r", shape=shape)


def _read_offsets(path: Path, fd: int, meta: dict) -> np.ndarray:
    """offsets.i64, checked against n_rows and (version 2) the rows per era recorded in meta.json."""
    offsets = np.frombuffer(_read_fd(fd), dtype=np.int64).copy()
    counts = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != meta["n_rows"] or np.any(counts < 0):
        raise _damaged(path, f"{OFFSETS} is not a valid offsets array")
    if "era_rows" in meta:
        differ = np.flatnonzero(counts != np.asarray(meta["era_rows"], dtype=np.int64))
        if differ.size:
            k = int(differ[0])
            raise _damaged(path, f"{OFFSETS} gives era {meta['eras'][k]} {int(counts[k])} rows, {META} records "
                                 f"{meta['era_rows'][k]}")
    return offsets


def _map_ids(path: Path, fds: dict[str, int], meta: dict) -> pa.Buffer:
    """ids.parquet mapped into memory (pages read when used), its footer checked: rows and columns."""
    if _file_size(path, fds, IDS) == 0:
        raise _damaged(path, f"{IDS} is empty")
    buffer = pa.py_buffer(mmap.mmap(fds[IDS], 0, access=mmap.ACCESS_READ))
    try:
        footer = pq.ParquetFile(pa.BufferReader(buffer)).metadata
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(path, f"{IDS} cannot be read ({first_line(exc)})") from None
    if footer.num_rows != meta["n_rows"]:
        raise _damaged(path, f"{IDS} has {footer.num_rows} rows, expected {meta['n_rows']}")
    missing = [c for c in ("id", *meta["extra_columns"]) if c not in footer.schema.names]
    if missing:
        raise _damaged(path, f"{IDS} lacks column(s) {', '.join(missing)}")
    return buffer


def row_runs(offsets: np.ndarray, era_index: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous row ranges covering the given (increasing) eras."""
    runs: list[tuple[int, int]] = []
    for k in era_index:
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        if runs and runs[-1][1] == lo:
            runs[-1] = (runs[-1][0], hi)
        else:
            runs.append((lo, hi))
    return runs


def era_rows(offsets: np.ndarray, era_index: np.ndarray) -> np.ndarray:
    """Row numbers of the given (increasing) eras, in store order."""
    return np.concatenate([np.arange(lo, hi) for lo, hi in row_runs(offsets, era_index)])


def era_subset_offsets(offsets: np.ndarray, era_index: np.ndarray) -> np.ndarray:
    """Offsets of the given eras' rows once concatenated: length len(era_index) + 1."""
    return np.concatenate([[0], np.cumsum(np.diff(offsets)[era_index])]).astype(np.int64)


def int8_to_float32(block: np.ndarray) -> np.ndarray:
    """Feature codes as float32 with missing (-1) → NaN."""
    out = block.astype(np.float32)
    out[block < 0] = np.nan
    return out


class EraStore:
    """A store opened read-only. ``features``/``targets`` are np.memmap; ``offsets`` int64.

    All files are opened in ``__init__`` from one version of the directory: a re-ingest that
    replaces the store later does not change what this object reads. Read features with
    ``pread`` on ``features_fd`` (open until ``close()`` or garbage collection), never by path.
    """

    def __init__(self, path: Path):
        self.path = path
        fds = _open_version(path)
        try:
            self.meta = meta = _read_meta(path, fds)
            n, nf, nt = meta["n_rows"], len(meta["feature_names"]), len(meta["target_names"])
            _check_size(path, fds, FEATURES, n * nf)
            _check_size(path, fds, TARGETS, n * nt * 4)
            _check_size(path, fds, OFFSETS, (len(meta["eras"]) + 1) * 8)
            self.offsets = _read_offsets(path, fds[OFFSETS], meta)
            self._ids_buffer = _map_ids(path, fds, meta)
            self.features = _memmap(fds[FEATURES], np.int8, (n, nf))
            self.targets = _memmap(fds[TARGETS], np.float32, (n, nt))
        except BaseException:
            _close_all(fds)
            raise
        self.features_fd: int = fds.pop(FEATURES)
        _close_all(fds)
        self._close = weakref.finalize(self, os.close, self.features_fd)

    def close(self) -> None:
        """Close ``features_fd`` (it becomes -1, so a later read fails instead of reading another
        file under a reused number); the memmaps and ids stay readable."""
        self._close()
        self.features_fd = -1

    def __enter__(self) -> EraStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- names -------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return self.meta["n_rows"]

    @property
    def eras(self) -> list[str]:
        return self.meta["eras"]

    @property
    def n_eras(self) -> int:
        return len(self.eras)

    @property
    def feature_names(self) -> list[str]:
        return self.meta["feature_names"]

    @property
    def target_names(self) -> list[str]:
        return self.meta["target_names"]

    @property
    def feature_sets(self) -> dict[str, list[str]]:
        return self.meta["feature_sets"]

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def id_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """ids.parquet of the opened version (``id`` and extra columns, or ``columns``), in store order.

        Read with ``ParquetFile``, not ``pq.read_table``: that goes through ``pyarrow.dataset``, whose
        import imports pandas (0.4 s of every `predict` and `score`). In this thread (``use_threads=False``):
        the buffer is a Python mmap, and an Arrow worker that drops the last reference to it after the read
        returned must take the GIL; at interpreter exit that killed the process (std::terminate, exit 134)."""
        try:
            return pq.ParquetFile(pa.BufferReader(self._ids_buffer)).read(columns=columns, use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(self.path, f"{IDS} cannot be read ({first_line(exc)})") from None

    @cached_property
    def ids(self) -> np.ndarray:
        """Row ids in store order (numpy str objects; read on first use). Through a list: Arrow's ``to_numpy``
        of strings imports pandas (0.3 s of `eraflow predict`)."""
        return np.array(self.id_table(["id"]).column("id").to_pylist(), dtype=object)

    def extra(self, name: str) -> np.ndarray:
        """An extra source column kept beside the ids (e.g. ``data_type``), in store order."""
        if name not in self.meta["extra_columns"]:
            raise InputError(f"store has no extra column {name!r}; it has {self.meta['extra_columns']}")
        return self.id_table([name]).column(name).to_numpy()

    # -- views -------------------------------------------------------------------------------
    def era_slice(self, k: int) -> StoreView:
        """Era ``k`` (index into ``eras``) as a view: rows offsets[k]:offsets[k+1], no copy."""
        if not -self.n_eras <= k < self.n_eras:
            raise InputError(f"era index {k} out of range: the store has {self.n_eras} eras")
        return self.select(eras=[self.eras[k]])

    def select(self, features: Sequence[str] | None = None, feature_set: str | None = None,
               eras: Sequence[str] | str | None = None, targets: Sequence[str] | None = None) -> StoreView:
        """A view of some features (names or a feature set), targets and eras (labels or "A:B").

        Eras must form one contiguous block so that rows stay a slice of the memmap (no copy).
        """
        return StoreView(self, self._columns(features, feature_set), self._target_columns(targets),
                         self._era_block(eras))

    def _columns(self, features, feature_set) -> np.ndarray | None:
        if features is not None and feature_set is not None:
            raise InputError("give features or feature_set, not both")
        if feature_set is not None:
            features = compose_feature_sets(self.feature_sets, feature_set)
        if features is None:
            return None
        return _name_indices(self.feature_names, features, "feature")

    def _target_columns(self, targets) -> np.ndarray | None:
        return None if targets is None else _name_indices(self.target_names, targets, "target")

    def _era_block(self, eras) -> tuple[int, int]:
        if eras is None:
            return 0, self.n_eras
        labels = eras_in_range(self.eras, eras) if isinstance(eras, str) else list(eras)
        index = {e: k for k, e in enumerate(self.eras)}
        missing = [e for e in labels if e not in index]
        if missing:
            raise InputError(f"eras not in the store: {missing[:5]}; it has {self.eras[0]}..{self.eras[-1]}")
        ks = sorted(index[e] for e in labels)
        if ks != list(range(ks[0], ks[-1] + 1)):
            raise InputError("eras must be one contiguous block of the store's eras (use a range such as 0001:0400)")
        return ks[0], ks[-1] + 1

    def batches(self, rows: slice | None = None, cols: Sequence[str] | None = None,
                batch_rows: int | None = None) -> Iterator[np.ndarray]:
        """float32 blocks of features (missing → NaN); see StoreView.batches."""
        return self.select().batches(rows, cols, batch_rows)


GROUPS = ("intelligence", "charisma", "strength", "dexterity", "constitution",
          "wisdom", "agility", "serenity", "sunshine", "rain")  # Numerai's feature groups (features.json sets)
BLOCK_BYTES = 64 << 20  # int8 feature bytes read at a time by whole-era block readers (era_blocks)


def compose_feature_sets(sets: dict[str, list[str]], spec: str, where: str = "the store") -> list[str]:
    """The features of ``spec``: one set's name, or names joined by ``+`` (``medium+group-stats``): the
    union of the sets in the order given, each feature once. InputError naming an unknown set and ``where``
    the sets come from."""
    names = [part.strip() for part in spec.split("+")]
    unknown = [n for n in names if n not in sets]
    if unknown:
        raise InputError(f"unknown feature set {unknown[0]!r} in {where}; it has {', '.join(sorted(sets))} "
                         "(join sets with '+', e.g. medium+group-stats)")
    return list(dict.fromkeys(f for n in names for f in sets[n]))


def era_blocks(offsets: np.ndarray, era_index: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """``era_index`` (increasing) cut into runs of consecutive entries of at most ``max_rows`` rows in all
    (an era larger than that is a block of its own): whole eras, for readers that work era by era.
    For a byte budget of int8 rows ``width`` wide: ``max_rows = BLOCK_BYTES // width``."""
    era_index = np.asarray(era_index, dtype=np.int64)
    blocks, start, rows = [], 0, 0
    for i, n in enumerate(np.diff(offsets)[era_index].tolist()):
        if i > start and rows + n > max_rows:
            blocks.append(era_index[start:i])
            start, rows = i, 0
        rows += n
    if era_index.size:
        blocks.append(era_index[start:])
    return blocks


def _name_indices(names: list[str], wanted: Sequence[str], kind: str) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    unknown = [w for w in wanted if w not in index]
    if unknown:
        raise InputError(f"unknown {kind}s {unknown[:5]} ({len(unknown)} in all); the store has {len(names)} {kind}s")
    return np.array([index[w] for w in wanted], dtype=np.int64)


@dataclass(frozen=True)
class StoreView:
    """Rows of a contiguous era block and a choice of columns; arrays are memmap views."""

    store: EraStore
    cols: np.ndarray | None  # feature column indices, None = all
    target_cols: np.ndarray | None  # target column indices, None = all
    era_range: tuple[int, int]  # [first, last) era index

    @property
    def rows(self) -> slice:
        k0, k1 = self.era_range
        return slice(int(self.store.offsets[k0]), int(self.store.offsets[k1]))

    @property
    def n_rows(self) -> int:
        return self.rows.stop - self.rows.start

    @property
    def offsets(self) -> np.ndarray:
        """Era offsets relative to the view's first row."""
        k0, k1 = self.era_range
        return self.store.offsets[k0:k1 + 1] - self.store.offsets[k0]

    @property
    def eras(self) -> list[str]:
        return self.store.eras[slice(*self.era_range)]

    @property
    def feature_names(self) -> list[str]:
        names = self.store.feature_names
        return names if self.cols is None else [names[i] for i in self.cols]

    @property
    def target_names(self) -> list[str]:
        names = self.store.target_names
        return names if self.target_cols is None else [names[i] for i in self.target_cols]

    @property
    def features(self) -> np.ndarray:
        """int8 (rows × features). A view when all features are chosen; a copy of the chosen columns otherwise."""
        block = self.store.features[self.rows]
        return block if self.cols is None else block[:, self.cols]

    @property
    def targets(self) -> np.ndarray:
        block = self.store.targets[self.rows]
        return block if self.target_cols is None else block[:, self.target_cols]

    def batches(self, rows: slice | None = None, cols: Sequence[str] | None = None,
                batch_rows: int | None = None) -> Iterator[np.ndarray]:
        """Yield float32 blocks (≤ batch_rows × chosen features), missing → NaN, in row order.

        ``rows`` is a slice of the view's rows, ``cols`` feature names (default: the view's).
        Only one block is held as float at a time.
        """
        start, stop, step = (rows or slice(None)).indices(self.n_rows)
        if step != 1:
            raise InputError("batches() takes a contiguous row slice (step 1)")
        col_idx = self.cols if cols is None else _name_indices(self.store.feature_names, cols, "feature")
        width = self.store.features.shape[1] if col_idx is None else len(col_idx)
        batch_rows = batch_rows or max(1, BATCH_BYTES // (4 * max(width, 1)))
        base = self.rows.start
        for r0 in range(start, stop, batch_rows):
            block = self.store.features[base + r0: base + min(r0 + batch_rows, stop)]
            yield int8_to_float32(block if col_idx is None else block[:, col_idx])


def read_codes(store: EraStore, lo: int, hi: int, cols: np.ndarray) -> np.ndarray:
    """Rows ``lo:hi`` of the store's int8 codes, columns ``cols``, C-contiguous. ``np.take`` (or a
    slice for a run of columns): indexing the memmap ``[:, cols]`` was ~20× slower (4 s for
    32768 × 2376)."""
    block = store.features[lo:hi]
    if len(cols) and cols[-1] - cols[0] + 1 == len(cols) and (np.diff(cols) == 1).all():
        return np.array(block[:, cols[0]:cols[-1] + 1])
    return np.asarray(np.take(block, cols, axis=1))
