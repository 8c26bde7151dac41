"""LightGBM Datasets built from a store in row blocks, cached as LightGBM binaries.

LightGBM copies a dense array it is given into float32 (n × k × 4 bytes): 9.5 GB for 1M × 2376.
A ``lightgbm.Sequence`` over the store's features file hands it blocks instead, so only the block
being binned is ever float. The constructed Dataset (binned features, no labels) is saved with
``save_binary`` in the store's cache (:mod:`eraflow.engine.data.cache`) under a key of the store
fingerprint, rows, features and binning parameters; later runs reload it after checking its
sha256 (no re-binning), and set the labels from the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence as Seq

import lightgbm as lgb
import numpy as np

from ..data import cache as dataset_cache
from ..data.store import EraStore, int8_to_float32, row_runs
from ..errors import first_line
from .lgb_errors import lightgbm_stderr_closed

# LightGBM's own messages (e.g. "Saving data to binary file") go to this logger, silent unless
# the application configures logging: library code does not print.
LOGGER = logging.getLogger("eraflow.lightgbm")
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False  # not user warnings: the CLI prints those of the "eraflow" logger
lgb.register_logger(LOGGER)

KEY_VERSION = 2  # 2: labels left out of the binary and the key (one entry serves every target)
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

    def codes(self, lo: int, hi: int) -> np.ndarray:
        """The int8 codes of rows ``lo:hi`` (of this sequence) and its columns."""
        data = os.pread(self.fd, (hi - lo) * self.n_features, (self.start + lo) * self.n_features)
        block = np.frombuffer(data, dtype=np.int8).reshape(hi - lo, self.n_features)
        return block if self.cols is None else block[:, self.cols]

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        return int8_to_float32(self.codes(lo, hi))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            lo, hi, _ = idx.indices(len(self))
            return self._rows(lo, hi)
        return self._rows(int(idx), int(idx) + 1)[0].astype(np.float64)


def _cache_key(store: EraStore, runs, cols, params: dict) -> str:
    binning = {k: params[k] for k in BINNING_PARAMS if k in params}
    record = {"version": KEY_VERSION, "store": store.fingerprint, "runs": runs,
              "cols": None if cols is None else list(map(int, cols)), "binning": binning, "lightgbm": lgb.__version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def _load_cached(store: EraStore, key: str, n_rows: int, n_features: int, ds_params: dict) -> lgb.Dataset | None:
    """The verified cached Dataset of ``key``, or None (a damaged entry is removed, with a warning)."""
    path = dataset_cache.find_entry(store, key)
    if path is None:
        return None
    try:
        dataset = lgb.Dataset(str(path), params=ds_params, free_raw_data=False).construct()
    except lgb.basic.LightGBMError as exc:
        dataset_cache.discard(path, f"cached dataset {path} cannot be loaded ({first_line(exc)}); rebuilding it")
        return None
    if (dataset.num_data(), dataset.num_feature()) != (n_rows, n_features):
        dataset_cache.discard(path, f"cached dataset {path} holds {dataset.num_data()} × {dataset.num_feature()}, "
                                    f"expected {n_rows} × {n_features}; rebuilding it")
        return None
    dataset_cache.mark_used(path)
    return dataset


def _save_cached(store: EraStore, key: str, dataset: lgb.Dataset, record: dict) -> None:
    """Write ``dataset`` to the cache (the store's, or the user's when the store is read-only)."""
    slot = dataset_cache.reserve(store, key)
    if slot is None:
        return
    try:
        with lightgbm_stderr_closed():
            dataset.save_binary(str(slot.tmp))
        dataset_cache.commit(slot, store, record)
    except (OSError, lgb.basic.LightGBMError) as exc:
        dataset_cache.abandon(slot, first_line(exc))


def store_dataset(store: EraStore, era_index: np.ndarray, cols: Seq[int] | None, label: np.ndarray,
                  params: dict, reference: lgb.Dataset | None = None, cache: bool = True) -> lgb.Dataset:
    """A constructed Dataset of the eras ``era_index`` (label given in the same row order).

    Training sets (``reference is None``) are cached (:mod:`eraflow.engine.data.cache`) without
    labels: ``label`` is set after building or loading, so a cache entry cannot change what a
    model learns. Validation sets share the training set's bins through ``reference`` and are
    built directly.
    """
    era_index = np.asarray(era_index)
    runs = row_runs(store.offsets, era_index)
    cols = None if cols is None else np.asarray(cols, dtype=np.int64)
    n_rows = sum(hi - lo for lo, hi in runs)
    n_features = len(store.feature_names) if cols is None else len(cols)
    ds_params = {**params, "verbose": -1}
    if not cache or reference is not None:
        return _build(store, runs, cols, label, ds_params, reference)
    key = _cache_key(store, runs, cols, params)
    dataset = _load_cached(store, key, n_rows, n_features, ds_params)
    if dataset is None:
        dataset = _build(store, runs, cols, None, ds_params, None)
        eras = [store.eras[int(era_index[0])], store.eras[int(era_index[-1])]] if era_index.size else []
        _save_cached(store, key, dataset, {"rows": n_rows, "features": n_features, "eras": eras,
                                           "n_eras": int(era_index.size), "store_fingerprint": store.fingerprint,
                                           "lightgbm": lgb.__version__})
    return dataset.set_label(label)


def sample_codes(seqs: list[StoreRows], indices: np.ndarray) -> np.ndarray:
    """The int8 codes of the rows ``indices`` (increasing, counted across ``seqs``), one row each."""
    starts = np.cumsum([0, *(len(s) for s in seqs)])
    which = np.searchsorted(starts, indices, side="right") - 1
    n_cols = seqs[0].n_features if seqs[0].cols is None else len(seqs[0].cols)
    out = np.empty((len(indices), n_cols), dtype=np.int8)
    for i, (k, row) in enumerate(zip(which.tolist(), (indices - starts[which]).tolist())):
        out[i] = seqs[k].codes(row, row + 1)[0]
    return out


def sample_columns(codes: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per column of ``codes`` (sample rows × features), what LightGBM finds bins from: the values
    that are not 0 (float64, missing codes < 0 → NaN) and their sample rows (int32)."""
    values, rows = [], []
    for col in np.ascontiguousarray(codes.T):
        keep = np.flatnonzero(col).astype(np.int32)
        picked = col[keep].astype(np.float64)
        picked[picked < 0] = np.nan
        values.append(picked)
        rows.append(keep)
    return values, rows


class StoreDataset(lgb.Dataset):
    """A Dataset over :class:`StoreRows` that reads its bin-finding sample as int8 in one pass.

    LightGBM's own ``Dataset.__sample`` fetches each sampled row through ``Sequence.__getitem__``
    as float64 and stacks the rows: 2.4–3.4 s for a 20k-row sample of 1000 features, against
    0.8–1.0 s here (2 busy cores), and the build's peak RSS 533 → 490 MiB at 60k × 1000. This
    override hands LightGBM the same per-column values and rows, from the same sample indices
    (tests/test_lgb_data_sample.py: byte-identical binaries).
    """

    def _Dataset__sample(self, *, seqs: list[StoreRows], total_nrow: int):  # noqa: N802 (Dataset.__sample)
        return sample_columns(sample_codes(seqs, self._create_sample_indices(total_nrow=total_nrow)))


PREDICT_ROWS = 8192  # rows converted to float32 at a time: 31 MiB at 1000 features, 74 MiB at 2376


def predict_codes(booster: lgb.Booster, codes: np.ndarray, **kwargs) -> np.ndarray:
    """``booster.predict`` of int8 ``codes`` (missing < 0 → NaN), converted ``PREDICT_ROWS`` rows at a
    time into one reused float32 buffer. Converting a whole 50k-row block faulted in a fresh 200 MB
    array per block: `eraflow predict` of 60k rows × 1000 took 9.8 s (median of 3) and 612 MiB,
    7.5 s and 451 MiB this way."""
    buffer = np.empty((min(len(codes), PREDICT_ROWS), codes.shape[1]), dtype=np.float32)
    parts = []
    for lo in range(0, len(codes), PREDICT_ROWS):
        chunk = codes[lo:lo + PREDICT_ROWS]
        x = buffer[:len(chunk)]
        np.copyto(x, chunk, casting="unsafe")
        x[chunk < 0] = np.nan
        parts.append(booster.predict(x, **kwargs))
    return np.concatenate(parts) if parts else booster.predict(buffer, **kwargs)


def _build(store: EraStore, runs, cols, label, ds_params: dict, reference) -> lgb.Dataset:
    """Bin the rows ``runs`` of the store's features (read from the store's open descriptor)."""
    data = [StoreRows(store.features_fd, len(store.feature_names), lo, hi, cols) for lo, hi in runs]
    return StoreDataset(data, label=label, params=ds_params, reference=reference).construct()
