"""Training Datasets binned in column blocks train the same model as one built in one piece.

Bug guarded against: a block binned from other sample rows, features renamed or reordered by the merge,
a block cached under another block's key, or a per-feature parameter (max_bin_by_feature) split across
blocks would change the model silently, or LightGBM would fail a length check deep inside the build.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eraflow.engine import IngestOptions, SynthSpec, ingest_files, open_store, write_synthetic
from eraflow.engine.data import cache as dataset_cache
from eraflow.engine.models import lgb_data, opencl
from eraflow.engine.models.lgb_data import column_blocks, store_dataset

PARAMS = {"objective": "regression", "verbose": -1, "num_threads": 1, "force_col_wise": True, "max_depth": 3,
          "num_leaves": 7, "learning_rate": 0.1, "colsample_bytree": 0.5, "bin_construct_sample_cnt": 300, "seed": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """30 features; three of them bin unlike the rest: a constant, one with 20 % missing, one with a rare value."""
    out = tmp_path_factory.mktemp("blocks")
    write_synthetic(out, SynthSpec(eras=12, rows_per_era=80, features=30, targets=1, seed=3))
    rng = np.random.default_rng(5)
    for name in ("train.parquet", "validation.parquet"):
        table = pq.read_table(out / name)
        features = [c for c in table.column_names if c.startswith("feature_")]
        n = table.num_rows
        odd = {features[5]: np.full(n, 2, dtype=np.int8),
               features[13]: pa.array(table[features[13]].to_numpy(), mask=rng.random(n) < 0.2),
               features[22]: np.where(rng.random(n) < 0.03, 4, rng.integers(0, 2, n)).astype(np.int8)}
        for column, values in odd.items():
            table = table.set_column(table.column_names.index(column), column, pa.array(values))
        pq.write_table(table, out / name)
    store = open_store(ingest_files([out / "train.parquet", out / "validation.parquet"], out / "store",
                                    IngestOptions(features_json=out / "features.json", feature_set="all")).store)
    yield store
    store.close()


def model_text(store, cols, monkeypatch, width: int | None, cache: bool, params=PARAMS) -> str:
    """The model of 12 trees on the first 8 eras, its Dataset binned ``width`` features at a time (None: at once)."""
    n_rows = int(store.offsets[8])
    monkeypatch.setattr(lgb_data, "BLOCK_CELLS", 1 << 40 if width is None else n_rows * width)
    label = np.nan_to_num(store.targets[:n_rows, 0].astype(np.float32), nan=0.5)
    dataset = store_dataset(store, np.arange(8), cols, label, params, cache=cache)
    return lgb.train(params, dataset, 12).model_to_string()


def test_column_blocks_cover_every_feature_once():
    blocks = column_blocks(1000, 25, {})
    assert [(b.start, b.stop) for b in blocks] == [(0, 25)]
    lgb_cells = lgb_data.BLOCK_CELLS
    widths = [b.stop - b.start for b in column_blocks(lgb_cells // 7, 30, {})]
    assert widths == [7, 7, 7, 7, 2]
    assert column_blocks(lgb_cells * 4, 3, {}) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # never an empty block
    assert column_blocks(lgb_cells, 30, {"max_bin_by_feature": [5] * 30}) == [slice(0, 30)]
    assert column_blocks(lgb_cells, 30, {"linear_tree": True}) == [slice(0, 30)]  # LightGBM's merge misorders raw values


@pytest.mark.parametrize("cols", [None, np.array([29, 3, 7, 0, 15, 22, 11, 8, 5])])
@pytest.mark.parametrize("cache", [False, True])
def test_blocked_build_trains_the_same_model(store, monkeypatch, cols, cache):
    whole = model_text(store, cols, monkeypatch, None, cache=False)
    before = len(dataset_cache.store_entries(store))
    assert model_text(store, cols, monkeypatch, 4, cache=cache) == whole
    if cache:  # each block its own entry; a second run loads them and still trains the same model
        assert len(dataset_cache.store_entries(store)) - before == -(-(30 if cols is None else len(cols)) // 4)
        assert model_text(store, cols, monkeypatch, 4, cache=True) == whole


def test_per_feature_parameters_bin_in_one_piece(store, monkeypatch):
    params = {**PARAMS, "max_bin_by_feature": [3] * 30}
    assert model_text(store, None, monkeypatch, 4, cache=False, params=params) == \
        model_text(store, None, monkeypatch, None, cache=False, params=params)


@pytest.mark.skipif(not opencl.opencl_devices(), reason="no OpenCL device (apt-get install pocl-opencl-icd)")
def test_opencl_learner_trains_the_same_model_on_blocks(store, monkeypatch):
    """LightGBM's OpenCL learner lays the merged feature groups out on the device as it does one piece's."""
    params = {**PARAMS, "device_type": "gpu"}
    assert model_text(store, None, monkeypatch, 4, cache=False, params=params) == \
        model_text(store, None, monkeypatch, None, cache=False, params=params)


def test_a_block_never_serves_a_set_of_the_same_columns(store, monkeypatch):
    """The second block of every feature (features 4..7, named Column_4..7) and a set of only those features
    (named Column_0..3) bin alike but are named differently: the set must not load the block's entry (its
    model would name features the model file check refuses)."""
    model_text(store, None, monkeypatch, 4, cache=True)
    cols = np.arange(4, 8)
    assert model_text(store, cols, monkeypatch, None, cache=True) == model_text(store, cols, monkeypatch, None,
                                                                                cache=False)


@pytest.mark.parametrize("change", [{"max_bins": 3}, {"min_data_per_leaf": 300}])
def test_binning_parameters_reach_the_cache_key_by_any_name(store, monkeypatch, change):
    """A set cached with the default binning must not be what a set asked for under an alias (``max_bins``) or
    with another ``min_data_in_leaf`` (feature_pre_filter drops the features it leaves unsplittable) looks up:
    LightGBM refuses such a binary (eraflow then deletes and rebuilds it, so two configurations would evict each
    other) or loads it with the other binning. Both entries stay, and the model is the uncached one."""
    model_text(store, None, monkeypatch, None, cache=True)
    before = len(dataset_cache.store_entries(store))
    params = {**PARAMS, **change}
    assert model_text(store, None, monkeypatch, None, cache=True, params=params) == \
        model_text(store, None, monkeypatch, None, cache=False, params=params)
    assert len(dataset_cache.store_entries(store)) == before + 1


def test_one_piece_parameters_by_any_name():
    assert column_blocks(lgb_data.BLOCK_CELLS, 30, {"linear_trees": True}) == [slice(0, 30)]
    assert column_blocks(lgb_data.BLOCK_CELLS, 30, {"monotone_constraint": [1] * 30}) == [slice(0, 30)]
