"""Training batches of the network kinds (engine/models/nn/data.py), checked against the source parquet.

The hand-made store's first four features spell each row's number in base 5, so every row of a
batch names the source row it came from, whatever the plan: the tests decode them and compare
inputs, targets and eras with the parquet file the store was ingested from.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from numpy.testing import assert_array_equal

from eraflow.engine import IngestOptions, InputError, ingest_files, open_store
from eraflow.engine.data.store import era_rows
from eraflow.engine.models.nn import data
from eraflow.engine.models.nn.data import (
    batch_loader,
    cut_sizes,
    epoch_plan,
    group_until,
    inputs_from_int8,
    iter_batches,
    pack_eras,
)
from eraflow.engine.models.portable.nets import inputs_from_codes

ERA_ROWS = [30, 7, 41, 1, 25, 12, 33, 3, 19, 28, 16, 22]  # varied sizes: a 1-row era, eras above small batches
DIGITS = 4  # features 0..3: the row number in base 5 (5⁴ = 625 rows at most)
OTHER = 3  # features 4..6: random codes, some missing
ALL_NAN_ERA, ONE_TARGET_ERA = 5, 8  # an era without targets; an era with one target row


def source_table(seed: int = 0) -> pa.Table:
    """Rows sorted by era; feature_0..3 = base-5 digits of the row number; NaN targets sprinkled,
    era ALL_NAN_ERA without any, era ONE_TARGET_ERA with one."""
    rng = np.random.default_rng(seed)
    n = sum(ERA_ROWS)
    era = np.repeat(np.arange(len(ERA_ROWS)), ERA_ROWS)
    cols = {"id": [f"r{i:04d}" for i in range(n)], "era": [f"{1 + e:04d}" for e in era]}
    for j in range(DIGITS):
        cols[f"feature_{j}"] = pa.array((np.arange(n) // 5 ** j % 5).astype(np.int8))
    for j in range(DIGITS, DIGITS + OTHER):
        codes = rng.integers(0, 5, n).astype(np.int8)
        cols[f"feature_{j}"] = pa.array(codes, mask=rng.random(n) < 0.15)
    target = rng.choice([0, .25, .5, .75, 1], n).astype(np.float32)
    target[rng.random(n) < 0.2] = np.nan
    target[era == ALL_NAN_ERA] = np.nan
    one = np.flatnonzero(era == ONE_TARGET_ERA)
    target[one] = np.nan
    target[one[1]] = 0.75
    cols["target"] = pa.array(target)
    return pa.table(cols)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(store, source table as NumPy: features with −1 for missing, target, era number per row)."""
    out = tmp_path_factory.mktemp("nn_data")
    table = source_table()
    pq.write_table(table, out / "train.parquet")
    store = open_store(ingest_files([out / "train.parquet"], out / "store", IngestOptions()).store)
    features = np.stack([table.column(f"feature_{j}").to_numpy(zero_copy_only=False) for j in range(DIGITS + OTHER)],
                        axis=1)
    features = np.where(np.isnan(features), -1, features).astype(np.int8)
    era = np.repeat(np.arange(len(ERA_ROWS)), ERA_ROWS)
    return store, features, table.column("target").to_numpy(), era


def store_cols(store, names: list[str]) -> np.ndarray:
    return np.array([store.feature_names.index(n) for n in names], dtype=np.int64)


COLS = ["feature_5", "feature_0", "feature_1", "feature_2", "feature_3", "feature_4"]  # reordered, not a run


def decode_rows(x: np.ndarray) -> np.ndarray:
    """Source row numbers of inputs ``x`` (columns COLS: the digits are columns 1..4)."""
    digits = np.rint(x[:, 1:1 + DIGITS] * 4).astype(np.int64)
    return digits @ 5 ** np.arange(DIGITS)


def expected_inputs(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The plain formula: code / 4, missing → 0.5, columns COLS."""
    codes = features[rows][:, [int(n.split("_")[1]) for n in COLS]].astype(np.float64)
    return np.where(codes < 0, 0.5, codes / 4).astype(np.float32)


def epoch_batches(store, eras, batch_size, **kw):
    y = np.concatenate([store.targets[lo:hi, 0] for lo, hi in
                        zip(store.offsets[eras], store.offsets[np.asarray(eras) + 1])])
    epoch = batch_loader(store, store_cols(store, COLS), y, np.asarray(eras), batch_size, **kw)
    return epoch, list(iter_batches(epoch.loader))


ALL_ERAS = np.arange(len(ERA_ROWS))


def test_inputs_from_int8_equals_the_exported_predictor():
    """Training and the exported predictor must read codes (and missing ones) as the same floats."""
    codes = np.random.default_rng(1).integers(-1, 5, (50, 7)).astype(np.int8)
    got = inputs_from_int8(codes)
    assert got.dtype == np.float32
    assert_array_equal(got, inputs_from_codes(np.where(codes < 0, np.nan, codes.astype(np.float64))))
    assert_array_equal(got, np.where(codes < 0, 0.5, codes / 4).astype(np.float32))


def test_epoch_has_every_row_with_a_target_once(source):
    """Guards against rows lost or repeated across chunks, NaN targets trained on, or x/y/era of
    different rows paired in a batch."""
    store, features, target, era = source
    epoch, batches = epoch_batches(store, ALL_ERAS, 8, chunk_rows=20)
    rows = np.concatenate([decode_rows(b.x.numpy()) for b in batches])
    labelled = np.flatnonzero(np.isfinite(target))
    assert_array_equal(np.sort(rows), labelled)
    assert (epoch.rows, epoch.skipped) == (len(labelled), len(target) - len(labelled))
    assert epoch.n_batches == len(batches)
    for b in batches:
        r = decode_rows(b.x.numpy())
        assert_array_equal(b.x.numpy(), expected_inputs(features, r))
        assert_array_equal(b.y.numpy(), target[r])
        assert b.x.dtype == torch.float32 and b.y.dtype == torch.float32
        assert_array_equal(b.era.numpy(), np.unique(era[r], return_inverse=True)[1])


def test_held_out_eras_are_never_read(source, monkeypatch):
    """The leak guard: eras a loop validates on (not given to the loader) are never read for
    training, not even as neighbours of a training era in one read."""
    store, features, target, era = source
    train = np.array([0, 1, 2, 6, 7, 9, 10])  # held out: 3, 4, 8 (between training eras), 11 (the last)
    reads, pread = [], data.os.pread

    def recorded_pread(fd, size, offset):
        reads.append((offset, size))
        return pread(fd, size, offset)

    monkeypatch.setattr(data.os, "pread", recorded_pread)
    _, batches = epoch_batches(store, train, 8, chunk_rows=20)
    width = len(store.feature_names)
    read = np.zeros(store.n_rows, bool)
    for offset, size in reads:
        assert offset % width == 0 and size % width == 0
        read[offset // width:(offset + size) // width] = True
    held_out = np.setdiff1d(ALL_ERAS, train)
    assert not read[era_rows(store.offsets, held_out)].any()
    rows = np.concatenate([decode_rows(b.x.numpy()) for b in batches])
    assert_array_equal(np.sort(rows), np.flatnonzero(np.isin(era, train) & np.isfinite(target)))


def test_small_reads_give_the_same_inputs(source, monkeypatch):
    """Eras read in several pread blocks (a block edge inside an era) place every row where it belongs."""
    store, features, target, era = source
    monkeypatch.setattr(data, "READ_BYTES", 4 * len(store.feature_names))  # four rows per read
    _, batches = epoch_batches(store, ALL_ERAS, 16, chunk_rows=50)
    rows = np.concatenate([decode_rows(b.x.numpy()) for b in batches])
    assert_array_equal(np.sort(rows), np.flatnonzero(np.isfinite(target)))
    x = np.concatenate([b.x.numpy() for b in batches])
    assert_array_equal(x, expected_inputs(features, rows))


def test_inputs_equal_the_store_rows_on_a_synthetic_store(store_path):
    """All columns of a synthetic store (a contiguous run of columns): inputs equal the store's codes / 4
    of the rows the plan names, targets its target column."""
    store = open_store(store_path)
    eras = np.arange(0, store.n_eras, 2)
    y = np.concatenate([store.targets[store.offsets[k]:store.offsets[k + 1], 1] for k in eras])
    cols = np.arange(len(store.feature_names))
    epoch = batch_loader(store, cols, y, eras, 64, seed=3, epoch=1, chunk_rows=100)
    batches = list(iter_batches(epoch.loader))
    plan = epoch_plan(store.offsets, eras, np.isfinite(y), 64, np.random.default_rng((3, 1)), chunk_rows=100)
    store_rows = era_rows(store.offsets, eras)[np.concatenate([c.rows for c in plan])]
    codes = np.asarray(store.features[store_rows]).astype(np.float64)
    assert_array_equal(np.concatenate([b.x.numpy() for b in batches]),
                       np.where(codes < 0, 0.5, codes / 4).astype(np.float32))
    assert_array_equal(np.concatenate([b.y.numpy() for b in batches]), store.targets[store_rows, 1])
    assert epoch.skipped == np.isnan(y).sum() > 0  # the synthetic data's unlabeled eras


@pytest.mark.parametrize("batch_size", [3, 5, 8, 64])
def test_batch_sizes(source, batch_size):
    """Guards against a one-row batch (BatchNorm fails on it in training) and batches above batch_size."""
    store = source[0]
    _, batches = epoch_batches(store, ALL_ERAS, batch_size, chunk_rows=20)
    sizes = [len(b.y) for b in batches]
    assert min(sizes) >= 2 and max(sizes) <= batch_size


def test_cut_sizes():
    """A remainder of one row borrows one from the batch before; at batch_size 2 they join."""
    assert cut_sizes(9, 4) == [4, 3, 2]
    assert cut_sizes(8, 4) == [4, 4]
    assert cut_sizes(3, 7) == [3]
    assert cut_sizes(5, 2) == [2, 3]
    assert cut_sizes(7, 3) == [3, 2, 2]


def test_group_until():
    """Chunks close once they reach the size; a last chunk of one row joins the one before (a
    chunk of one row would be a one-row batch)."""
    assert group_until(np.array([5, 5, 1]), 5) == [[0], [1, 2]]
    assert group_until(np.array([2, 2, 2, 3]), 5) == [[0, 1, 2], [3]]
    assert group_until(np.array([7]), 5) == [[0]]


def test_pack_eras():
    """Whole eras up to the batch size; an era above it alone; a one-row remainder joins the batch before."""
    assert pack_eras(np.array([3, 3, 3, 1]), 6) == [[0, 1], [2, 3]]
    assert pack_eras(np.array([9, 2, 2]), 4) == [[0], [1, 2]]
    assert pack_eras(np.array([4, 4, 1]), 4) == [[0], [1, 2]]
    assert pack_eras(np.array([1, 9, 2]), 4) == [[0, 1], [2]]


def test_whole_era_batches(source):
    """With whole_eras each batch holds all of its eras' rows with a target, and ``era`` numbers
    them 0..k−1 (the per-era Pearson loss groups rows by it)."""
    store, features, target, era = source
    _, batches = epoch_batches(store, ALL_ERAS, 45, whole_eras=True, chunk_rows=60)
    seen = []
    for b in batches:
        r = decode_rows(b.x.numpy())
        eras = np.unique(era[r])
        seen.extend(eras)
        assert_array_equal(np.sort(r), np.flatnonzero(np.isin(era, eras) & np.isfinite(target)))
        codes = b.era.numpy()
        assert_array_equal(np.unique(codes), np.arange(len(eras)))
        assert_array_equal(eras[codes], era[r])
        assert 2 <= len(r) <= 45
    assert sorted(seen) == [e for e in ALL_ERAS if e != ALL_NAN_ERA]
    assert len(batches) > 1 and any(len(np.unique(b.era.numpy())) > 1 for b in batches)


def batch_arrays(batches):
    return [(b.x.numpy().copy(), b.y.numpy().copy(), b.era.numpy().copy()) for b in batches]


def test_same_seed_and_epoch_same_batches(source):
    """Training is reproducible for a seed; each epoch sees the rows in another order."""
    store = source[0]
    first = batch_arrays(epoch_batches(store, ALL_ERAS, 8, seed=5, epoch=2, chunk_rows=20)[1])
    again = batch_arrays(epoch_batches(store, ALL_ERAS, 8, seed=5, epoch=2, chunk_rows=20)[1])
    other = batch_arrays(epoch_batches(store, ALL_ERAS, 8, seed=5, epoch=3, chunk_rows=20)[1])
    for a, b in zip(first, again, strict=True):
        for u, v in zip(a, b):
            assert_array_equal(u, v)
    order = np.concatenate([decode_rows(x) for x, _, _ in first])
    assert not np.array_equal(order, np.concatenate([decode_rows(x) for x, _, _ in other]))
    assert_array_equal(np.sort(order), np.sort(np.concatenate([decode_rows(x) for x, _, _ in other])))


def test_workers_give_the_same_batches(source):
    """Worker processes read the chunks of the same plan: the batches do not depend on workers."""
    store = source[0]
    alone = batch_arrays(epoch_batches(store, ALL_ERAS, 8, seed=1, chunk_rows=20)[1])
    epoch, batches = epoch_batches(store, ALL_ERAS, 8, seed=1, chunk_rows=20, workers=2)
    assert epoch.loader.num_workers == 2 and epoch.loader.prefetch_factor == 1
    workers = batch_arrays(batches)
    assert len(workers) == len(alone)
    for a, b in zip(alone, workers):
        for u, v in zip(a, b):
            assert_array_equal(u, v)


@pytest.mark.parametrize(("batch_size", "chunk_rows", "whole_eras"), [(8, 20, False), (16, 50, True), (64, 10, False)])
def test_chunk_memory_bound(source, batch_size, chunk_rows, whole_eras):
    """A chunk (what one loader item holds as float32) has at most max(batch_size, chunk_rows) rows
    plus one era's: the loader's memory does not grow with the training set."""
    store, features, target, era = source
    plan = epoch_plan(store.offsets, ALL_ERAS, np.isfinite(target), batch_size, np.random.default_rng(0),
                      whole_eras, chunk_rows)
    largest = max(np.isfinite(target[era == e]).sum() for e in ALL_ERAS)
    assert len(plan) > 1
    assert max(len(c.rows) for c in plan) <= max(batch_size, chunk_rows) + largest
    epoch, _ = epoch_batches(store, ALL_ERAS, batch_size, whole_eras=whole_eras, chunk_rows=chunk_rows)
    dataset = epoch.loader.dataset
    for i in range(len(dataset)):
        assert sum(len(b.y) for b in dataset[i]) == len(plan[i].rows)


def test_too_small_batches_or_targets_are_refused(source):
    store, _, target, _ = source
    with pytest.raises(InputError, match="batch_size must be at least 2"):
        epoch_plan(store.offsets, ALL_ERAS, np.isfinite(target), 1, np.random.default_rng(0))
    only = np.array([ALL_NAN_ERA, ONE_TARGET_ERA])
    has = np.isfinite(target[era_rows(store.offsets, only)])
    with pytest.raises(InputError, match="1 rows with a target"):
        epoch_plan(store.offsets, only, has, 8, np.random.default_rng(0))
