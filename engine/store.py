"""EraStore: rows sorted by era in memory-mapped files, plus era offsets.

A store is a directory::

    meta.json     format version, sources, feature/target names, feature sets, era labels, n_rows
    features.i8   n_rows × n_features int8, C order; missing = -1
    targets.f32   n_rows × n_targets float32; NaN kept
    offsets.i64   era offsets, length n_eras + 1: era k is rows offsets[k]:offsets[k+1]
    ids.parquet   row ids in store order, plus extra source columns (e.g. data_type)

Opening maps the files read-only; nothing is loaded until used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .eras import eras_in_range
from .errors import InputError, StoreError

FORMAT = "eraflow-store"
FORMAT_VERSION = 1
META, FEATURES, TARGETS, OFFSETS, IDS = "meta.json", "features.i8", "targets.f32", "offsets.i64", "ids.parquet"
MISSING = -1  # int8 code of a missing feature value
FNC_FEATURE_SET = "fncv3_features"  # the features.json set behind Numerai's FNCv3 (feature-neutral corr)
BATCH_BYTES = 64 << 20  # default float32 bytes per batch from EraStore.batches


def open_store(path: str | Path) -> EraStore:
    """Open the store at ``path``; StoreError if missing, damaged, or of another format version."""
    return EraStore(Path(path))


def _read_meta(path: Path) -> dict:
    if not path.exists():
        raise StoreError(f"no store at {path}: create one with `eraflow ingest SRC.parquet {path}`")
    if not path.is_dir():
        raise StoreError(f"{path} is a file, not a store directory")
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        raise StoreError(f"store {path} is damaged: {META} is missing; rebuild it with `eraflow ingest --force`") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"store {path} is damaged: {META} is not valid JSON ({exc.msg}); rebuild it with --force") from None
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path} is not an eraflow store ({META} has no format {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"store {path} has format version {meta.get('format_version')}, this eraflow reads "
                         f"version {FORMAT_VERSION}; rebuild it with `eraflow ingest --force`")
    return meta


def _check_size(path: Path, name: str, expected: int) -> None:
    f = path / name
    if not f.exists():
        raise StoreError(f"store {path} is damaged: {name} is missing; rebuild it with `eraflow ingest --force`")
    size = f.stat().st_size
    if size != expected:
        raise StoreError(f"store {path} is damaged: {name} has {size} bytes, expected {expected}; "
                         "rebuild it with `eraflow ingest --force`")


def _memmap(path: Path, dtype, shape: tuple[int, int]) -> np.ndarray:
    if shape[0] * shape[1] == 0:  # mmap cannot map an empty file
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


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
    """A store opened read-only. ``features``/``targets`` are np.memmap; ``offsets`` int64."""

    def __init__(self, path: Path):
        self.path = path
        self.meta = meta = _read_meta(path)
        n, nf, nt = meta["n_rows"], len(meta["feature_names"]), len(meta["target_names"])
        n_eras = len(meta["eras"])
        _check_size(path, FEATURES, n * nf)
        _check_size(path, TARGETS, n * nt * 4)
        _check_size(path, OFFSETS, (n_eras + 1) * 8)
        if not (path / IDS).exists():
            raise StoreError(f"store {path} is damaged: {IDS} is missing; rebuild it with --force")
        self.features = _memmap(path / FEATURES, np.int8, (n, nf))
        self.targets = _memmap(path / TARGETS, np.float32, (n, nt))
        self.offsets = np.fromfile(path / OFFSETS, dtype=np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != n or np.any(np.diff(self.offsets) < 0):
            raise StoreError(f"store {path} is damaged: {OFFSETS} is not a valid offsets array")

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

    @cached_property
    def _id_table(self):
        return pq.read_table(self.path / IDS)

    @cached_property
    def ids(self) -> np.ndarray:
        """Row ids in store order (numpy str objects; read on first use)."""
        return self._id_table.column("id").to_numpy()

    def extra(self, name: str) -> np.ndarray:
        """An extra source column kept beside the ids (e.g. ``data_type``), in store order."""
        if name not in self._id_table.column_names or name == "id":
            raise InputError(f"store has no extra column {name!r}; it has {self.meta['extra_columns']}")
        return self._id_table.column(name).to_numpy()

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
            if feature_set not in self.feature_sets:
                raise InputError(f"unknown feature set {feature_set!r}; the store has {sorted(self.feature_sets)}")
            features = self.feature_sets[feature_set]
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
