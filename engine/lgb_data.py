"""LightGBM Datasets built from a store in row blocks, cached as LightGBM binaries.

LightGBM copies a dense array it is given into float32 (n × k × 4 bytes): 9.5 GB for 1M × 2376.
A ``lightgbm.Sequence`` over the int8 memmap hands it blocks instead, so only the block being
binned is ever float. The constructed Dataset is saved with ``save_binary`` under a key of the
store fingerprint, rows, features, label and binning parameters; later runs reload it (no
re-binning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence as Seq
from pathlib import Path

import lightgbm as lgb
import numpy as np

from .atomic import atomic_writer_path
from .store import FEATURES, EraStore, int8_to_float32, row_runs

# LightGBM's own messages (e.g. "Saving data to binary file") go to this logger, silent unless
# the application configures logging: library code does not print.
LOGGER = logging.getLogger("eraflow.lightgbm")
LOGGER.addHandler(logging.NullHandler())
lgb.register_logger(LOGGER)

CACHE_DIR = "cache"  # inside the store directory; a rebuilt store starts with none
BINNING_PARAMS = ("max_bin", "min_data_in_bin", "bin_construct_sample_cnt", "data_random_seed",
                  "feature_pre_filter", "use_missing", "zero_as_missing", "linear_tree", "max_bin_by_feature")


class StoreRows(lgb.Sequence):
    """Rows ``start:stop`` and columns ``cols`` of the store's int8 features as a LightGBM Sequence.

    Rows are read with ``pread`` from the open features file rather than through the memmap, so
    the pages read are page cache, not resident memory of this process.
    """

    batch_size = 8192

    def __init__(self, fd: int, n_features: int, start: int, stop: int, cols: np.ndarray | None):
        self.fd, self.n_features, self.start, self.stop, self.cols = fd, n_features, start, stop, cols

    def __len__(self) -> int:
        return self.stop - self.start

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        data = os.pread(self.fd, (hi - lo) * self.n_features, (self.start + lo) * self.n_features)
        block = np.frombuffer(data, dtype=np.int8).reshape(hi - lo, self.n_features)
        return int8_to_float32(block if self.cols is None else block[:, self.cols])

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            lo, hi, _ = idx.indices(len(self))
            return self._rows(lo, hi)
        return self._rows(int(idx), int(idx) + 1)[0].astype(np.float64)


def _cache_key(store: EraStore, runs, cols, target: str, params: dict) -> str:
    binning = {k: params[k] for k in BINNING_PARAMS if k in params}
    record = {"store": store.fingerprint, "runs": runs, "cols": None if cols is None else list(map(int, cols)),
              "target": target, "binning": binning, "lightgbm": lgb.__version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def store_dataset(store: EraStore, era_index: np.ndarray, cols: Seq[int] | None, target: str, label: np.ndarray,
                  params: dict, reference: lgb.Dataset | None = None, cache: bool = True) -> lgb.Dataset:
    """A constructed Dataset of the eras ``era_index`` (label given in the same row order).

    Training sets (``reference is None``) are cached under ``<store>/cache/``; validation sets
    share the training set's bins through ``reference`` and are built directly.
    """
    runs = row_runs(store.offsets, np.asarray(era_index))
    cols = None if cols is None else np.asarray(cols, dtype=np.int64)
    ds_params = {**params, "verbose": -1}
    path = store.path / CACHE_DIR / f"lgb-{_cache_key(store, runs, cols, target, params)}.bin"
    use_cache = cache and reference is None
    if use_cache and path.exists():
        return lgb.Dataset(str(path), params=ds_params, free_raw_data=False).construct()
    with open(store.path / FEATURES, "rb") as fh:
        data = [StoreRows(fh.fileno(), len(store.feature_names), lo, hi, cols) for lo, hi in runs]
        dataset = lgb.Dataset(data, label=label, params=ds_params, reference=reference).construct()
    if use_cache:
        path.parent.mkdir(exist_ok=True)
        tmp = atomic_writer_path(path)
        dataset.save_binary(str(tmp))
        Path(tmp).replace(path)
    return dataset
