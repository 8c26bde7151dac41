"""XGBoost training data straight from a store: a ``DataIter`` of int8 row blocks → ``QuantileDMatrix``.

XGBoost copies a dense array it is given into float32 (1M × 2376 × 4 bytes = 9.5 GB). Instead
a :class:`StoreBatches` iterator hands it blocks of rows read from the store's features file
(``BLOCK_VALUES`` values, int8 → float32 with missing −1 → NaN). ``QuantileDMatrix`` passes over
the blocks a few times (four in XGBoost 3.2: sizes, quantile sketch, binning) and keeps the
binned matrix (on the CPU two bytes per value: the row-wise bin index and the column-wise one
of the ``hist`` updater), never more than one float block. Held-out eras are binned with the
training matrix's cuts (``ref=``), so both see the same bins.

With a cache directory, the blocks become an ``ExtMemQuantileDMatrix`` instead: the same sketch
and cuts, the binned pages written to cache files there (``on_host=False``: files, not memory) and
read back a page at a time each round, so the trees are the same and memory stays at a page or so
(measured on 100k × 2376: 360 MiB peak RSS vs 800 MiB in memory; 2.4× slower per round).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xgboost as xgb

from ..data.store import EraStore, int8_to_float32, row_runs

BLOCK_VALUES = 1 << 22  # values of one float32 block handed to XGBoost: 16 MiB (1765 rows of 2376 features)
BINNING_KEYS = ("max_bin",)  # parameters that shape the QuantileDMatrix (training must use the same)
# An in-memory QuantileDMatrix on the CPU takes about 2 bytes per value (a bin index per value row-wise
# and another column-wise; measured 2.4 at 100k × 2376 with 8 bins). Above 2 GiB of them (≈ 450k rows of
# 2376 features) "auto" caches the matrix on disk, which keeps a 1M-row fit under the 4 GiB peak RSS goal.
IN_MEMORY_BYTES_PER_VALUE = 2
IN_MEMORY_BUDGET = 2 << 30


def block_runs(runs: list[tuple[int, int]], n_features: int, block_values: int = BLOCK_VALUES) -> list[tuple[int, int]]:
    """Row ranges of at most ``block_values // n_features`` rows (at least one) covering ``runs``."""
    rows = max(1, block_values // max(1, n_features))
    return [(lo, min(lo + rows, hi)) for start, hi in runs for lo in range(start, hi, rows)]


def read_rows(store: EraStore, lo: int, hi: int, cols: np.ndarray) -> np.ndarray:
    """Rows ``lo:hi``, columns ``cols`` of the store's features as float32 (missing → NaN).

    Read with ``pread`` from the store's open features file: the pages read are page cache, not
    resident memory of this process (as :class:`~eraflow.engine.models.lgb_data.StoreRows`).
    """
    width = len(store.feature_names)
    data = os.pread(store.features_fd, (hi - lo) * width, lo * width)
    return int8_to_float32(np.take(np.frombuffer(data, dtype=np.int8).reshape(hi - lo, width), cols, axis=1))


class StoreBatches(xgb.DataIter):
    """Rows ``runs`` of the store's features, columns ``cols``, as float32 blocks with their
    ``label`` and ``weight`` (arrays in the same row order; ``weight`` None for none).

    ``handed``: blocks handed to XGBoost so far (each pass over the data hands every block);
    ``cache_prefix``: where an ``ExtMemQuantileDMatrix`` writes its cache files (None: in memory).
    """

    def __init__(self, store: EraStore, runs: list[tuple[int, int]], cols: np.ndarray, label: np.ndarray,
                 weight: np.ndarray | None = None, block_values: int = BLOCK_VALUES, cache_prefix: str | None = None):
        self.store, self.cols, self.label, self.weight = store, np.asarray(cols, dtype=np.int64), label, weight
        self.blocks = block_runs(runs, len(self.cols), block_values)
        self.starts = np.concatenate([[0], np.cumsum([hi - lo for lo, hi in self.blocks])]).astype(np.int64)
        self.position, self.handed = 0, 0
        super().__init__(cache_prefix=cache_prefix, release_data=True, on_host=False)

    def next(self, input_data) -> bool:
        if self.position == len(self.blocks):
            return False
        (lo, hi), start = self.blocks[self.position], int(self.starts[self.position])
        rows = slice(start, start + hi - lo)
        extra = {} if self.weight is None else {"weight": self.weight[rows]}
        input_data(data=read_rows(self.store, lo, hi, self.cols), label=self.label[rows], **extra)
        self.position += 1
        self.handed += 1
        return True

    def reset(self) -> None:
        self.position = 0


def matrix_params(params: dict) -> dict:
    """The QuantileDMatrix arguments among training ``params`` (its bins, its threads)."""
    out = {k: params[k] for k in BINNING_KEYS if k in params}
    if params.get("nthread"):
        out["nthread"] = int(params["nthread"])
    return out


def external_memory(setting: bool | str, values: int, device: str) -> bool:
    """Whether to cache the matrices on disk: ``setting`` True/False, or for ``"auto"`` when training
    on the CPU and ``values`` (rows × features of all matrices of a fit) would take more than
    :data:`IN_MEMORY_BUDGET` in memory (on a GPU the matrix lives in GPU memory)."""
    if setting != "auto":
        return bool(setting)
    return device == "cpu" and values * IN_MEMORY_BYTES_PER_VALUE > IN_MEMORY_BUDGET


def store_matrix(store: EraStore, era_index: np.ndarray, cols: np.ndarray, label: np.ndarray,
                 weight: np.ndarray | None = None, params: dict | None = None,
                 reference: xgb.DMatrix | None = None, block_values: int = BLOCK_VALUES,
                 cache: Path | None = None, name: str | None = None) -> xgb.DMatrix:
    """A QuantileDMatrix of the rows of eras ``era_index`` (store order; ``label``/``weight`` in
    that order), built block by block; with ``reference``, binned with its cuts; with ``cache`` (a
    directory), an ExtMemQuantileDMatrix whose cache files go there, named ``name`` (default
    ``valid`` with a reference, else ``train``)."""
    prefix = None if cache is None else str(cache / (name or ("valid" if reference is not None else "train")))
    batches = StoreBatches(store, row_runs(store.offsets, np.asarray(era_index)), cols, label, weight, block_values,
                           prefix)
    matrix = xgb.QuantileDMatrix if cache is None else xgb.ExtMemQuantileDMatrix
    return matrix(batches, ref=reference, missing=np.nan, **matrix_params(params or {}))
