"""LightGBM Datasets built from a store in row blocks, cached as LightGBM binaries.

LightGBM copies a dense array it is given into float32 (n × k × 4 bytes): 9.5 GB for 1M × 2376.
A ``lightgbm.Sequence`` over the store's features file hands it blocks instead, so only the block
being binned is ever float. The constructed Dataset (binned features, no labels) is saved with
``save_binary`` in the store's cache (:mod:`eraflow.engine.data.cache`) under a key of the store
fingerprint, rows, features and binning parameters; later runs reload it after checking its
sha256 (no re-binning), and set the labels from the store.

While LightGBM bins a feature into 4-bit bins it also fills a 4-bit push buffer that it never frees
(``DenseBin::buf_``): a Dataset built in one piece holds 1 byte per cell, 6.1 GiB for 2.74M × 2376.
Large sets are therefore binned in column blocks of at most ``BLOCK_CELLS`` cells; every later block
is merged into the first with ``Dataset.add_features_from`` (which keeps a compact copy: 0.5 byte per
cell) and then freed, so the set holds 0.5 byte per cell plus the first block's buffer. Each block is
its own cache entry. The model is the one-piece model (tests/test_lgb_data_blocks.py) unless LightGBM
would have bundled sparse features of different blocks (exclusive feature bundling), which dense
codes such as Numerai's never are.
"""

from __future__ import annotations

import functools
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
BLOCK_CELLS = 1 << 29  # rows × features binned at once: 512 MiB while binning, 256 MiB once merged
# Parameters (LightGBM's main names) a column block cannot take: lists or files per feature, and linear
# trees (LightGBM's merge leaves their raw values in the wrong order when sparse features share a group).
ONE_PIECE_PARAMS = frozenset({"max_bin_by_feature", "monotone_constraints", "feature_contri", "forcedbins_filename",
                              "categorical_feature", "linear_tree"})
# Parameters (main names) that change what a constructed Dataset holds: part of its cache key.
# min_data_in_leaf: with feature_pre_filter (the default) features it leaves unsplittable are dropped.
BINNING_PARAMS = ("max_bin", "min_data_in_bin", "bin_construct_sample_cnt", "data_random_seed",
                  "feature_pre_filter", "use_missing", "zero_as_missing", "linear_tree", "max_bin_by_feature",
                  "min_data_in_leaf", "enable_bundle", "is_enable_sparse")


@functools.cache
def lightgbm_names() -> dict[str, str]:
    """LightGBM's parameter names and aliases → the main name (``subsample`` → ``bagging_fraction``)."""
    table = lgb.basic._ConfigAliases._get_all_param_aliases()
    return {alias: main for main, aliases in table.items() for alias in (main, *aliases)}


def main_names(params: dict) -> dict:
    """``params`` under LightGBM's main names (``max_bins`` → ``max_bin``; unknown names kept)."""
    names = lightgbm_names()
    return {names.get(k, k): v for k, v in params.items()}


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


def _cache_key(store: EraStore, runs, cols, params: dict, names_from: int = 0) -> str:
    """``names_from``: the number in the first feature's name (``Column_<n>``), a block's place in its set."""
    main = main_names(params)
    binning = {k: main[k] for k in BINNING_PARAMS if k in main}
    record = {"version": KEY_VERSION, "store": store.fingerprint, "runs": runs,
              "cols": None if cols is None else list(map(int, cols)), "binning": binning, "lightgbm": lgb.__version__}
    if names_from:
        record["names_from"] = names_from
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


def column_blocks(n_rows: int, n_features: int, params: dict) -> list[slice]:
    """The column ranges binned one at a time: ``BLOCK_CELLS // n_rows`` features each (at least one),
    or all at once when ``params`` hold one of ``ONE_PIECE_PARAMS``."""
    if ONE_PIECE_PARAMS.intersection(main_names(params)):
        return [slice(0, n_features)]
    width = max(1, BLOCK_CELLS // max(n_rows, 1))
    return [slice(lo, min(lo + width, n_features)) for lo in range(0, n_features, width)] or [slice(0, 0)]


def store_dataset(store: EraStore, era_index: np.ndarray, cols: Seq[int] | None, label: np.ndarray,
                  params: dict, reference: lgb.Dataset | None = None, cache: bool = True) -> lgb.Dataset:
    """A constructed Dataset of the eras ``era_index`` (label given in the same row order).

    Training sets (``reference is None``) are built in :func:`column_blocks` and cached
    (:mod:`eraflow.engine.data.cache`) without labels: ``label`` is set after building or loading,
    so a cache entry cannot change what a model learns. Validation sets share the training set's
    bins through ``reference`` and are built directly.
    """
    era_index = np.asarray(era_index)
    runs = row_runs(store.offsets, era_index)
    ds_params = {**params, "verbose": -1}
    if reference is not None:
        return _build(store, runs, cols, label, ds_params, reference)
    cols = None if cols is None else np.asarray(cols, dtype=np.int64)
    n_rows = sum(hi - lo for lo, hi in runs)
    n_features = len(store.feature_names) if cols is None else len(cols)
    blocks = column_blocks(n_rows, n_features, params)
    if len(blocks) == 1:
        return _block_dataset(store, era_index, runs, cols, ds_params, cache).set_label(label)
    block_cols = np.arange(n_features) if cols is None else cols
    sample = functools.cache(lambda: _sample_codes(store, runs, cols, ds_params, n_rows))  # read if a block is built
    dataset = None
    for block in blocks:
        part = _block_dataset(store, era_index, runs, block_cols[block], ds_params, cache, block, sample)
        dataset = part if dataset is None else dataset.add_features_from(part)
        del part  # its bins and push buffers go; `dataset` keeps a compact copy
    return dataset.set_label(label)


def _sample_codes(store: EraStore, runs, cols, ds_params: dict, n_rows: int) -> np.ndarray:
    """The int8 codes (every column of ``cols``) of the rows LightGBM samples to find bins, read once for all blocks."""
    seqs = _sequences(store, runs, cols)
    return sample_codes(seqs, StoreDataset(seqs, params=ds_params)._create_sample_indices(total_nrow=n_rows))


def _block_dataset(store: EraStore, era_index: np.ndarray, runs, cols, ds_params: dict, cache: bool,
                   block: slice | None = None, sample=None) -> lgb.Dataset:
    """The Dataset (no labels) of the columns ``cols``, from the cache or built (and cached). A block
    of a larger set names its features by their place in the set, as LightGBM's own names do, and
    bins from the set's ``sample()``."""
    n_rows = sum(hi - lo for lo, hi in runs)
    n_features = len(store.feature_names) if cols is None else len(cols)
    names = None if block is None else [f"Column_{j}" for j in range(block.start, block.stop)]

    def build() -> lgb.Dataset:
        return _build(store, runs, cols, None, ds_params, None, names, None if sample is None else sample()[:, block])

    if not cache:
        return build()
    key = _cache_key(store, runs, cols, ds_params, 0 if block is None else block.start)
    dataset = _load_cached(store, key, n_rows, n_features, ds_params)
    if dataset is None:
        dataset = build()
        eras = [store.eras[int(era_index[0])], store.eras[int(era_index[-1])]] if era_index.size else []
        _save_cached(store, key, dataset, {"rows": n_rows, "features": n_features, "eras": eras,
                                           "n_eras": int(era_index.size), "store_fingerprint": store.fingerprint,
                                           "lightgbm": lgb.__version__})
    return dataset


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

    def __init__(self, *args, sample: np.ndarray | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sample = sample  # the sample's codes when already read (a column block of a larger set)

    def _init_from_sample(self, sample_data: list, sample_indices: list, sample_cnt: int, total_nrow: int):
        """LightGBM's, then the sample freed: LightGBM's caller would keep it alive through every push of rows
        (the sample's float64 values are most of the build's memory at 60k × 1000)."""
        try:
            return super()._init_from_sample(sample_data, sample_indices, sample_cnt, total_nrow)
        finally:
            sample_data.clear()
            sample_indices.clear()

    def _Dataset__sample(self, *, seqs: list[StoreRows], total_nrow: int):  # noqa: N802 (Dataset.__sample)
        codes, self.sample = self.sample, None  # not kept for the Dataset's life
        if codes is None:
            codes = sample_codes(seqs, self._create_sample_indices(total_nrow=total_nrow))
        return sample_columns(codes)


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


def _sequences(store: EraStore, runs, cols) -> list[StoreRows]:
    return [StoreRows(store.features_fd, len(store.feature_names), lo, hi, cols) for lo, hi in runs]


def _build(store: EraStore, runs, cols, label, ds_params: dict, reference, names: list[str] | None = None,
           sample: np.ndarray | None = None) -> lgb.Dataset:
    """Bin the rows ``runs`` of the store's features (read from the store's open descriptor)."""
    return StoreDataset(_sequences(store, runs, cols), label=label, params=ds_params, reference=reference,
                        feature_name=names or "auto", sample=sample).construct()
