"""StoreDataset's one-pass bin sample gives LightGBM exactly what its own per-row Sequence sample does;
predict_codes predicts int8 codes in chunks exactly as LightGBM does the whole float32 matrix.

Bug guarded against: a faster sample that differs from LightGBM's (other rows, zeros kept, missing
codes not NaN, a column subset misapplied) bins features differently, so models change silently.
The oracle is LightGBM's own ``Dataset`` over the same sequences: the saved binaries must be equal.
"""

from __future__ import annotations

import os

import lightgbm as lgb
import numpy as np
import pytest

from eraflow.engine.models.lgb_data import StoreDataset, StoreRows, sample_codes, sample_columns

PARAMS = {"verbose": -1, "bin_construct_sample_cnt": 500, "num_threads": 1, "force_col_wise": True}


@pytest.fixture()
def features(tmp_path):
    """An int8 features file, 3000 rows × 12 codes in -1..4 (-1 missing), and its open descriptor."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, (3000, 12)).astype(np.int8)
    codes[rng.random(codes.shape) < 0.05] = -1
    codes[:, 3] = 0  # a constant column: nothing sampled but zeros
    path = tmp_path / "features.i8"
    codes.tofile(path)
    fd = os.open(path, os.O_RDONLY)
    yield fd, codes
    os.close(fd)


def sequences(fd: int, cols) -> list[StoreRows]:
    """Three runs of rows, as a training set of non-adjacent eras has."""
    return [StoreRows(fd, 12, lo, hi, cols) for lo, hi in ((0, 700), (900, 2100), (2500, 3000))]


def binary(tmp_path, dataset: lgb.Dataset, name: str) -> bytes:
    path = tmp_path / name
    dataset.construct().save_binary(str(path))
    return path.read_bytes()


@pytest.mark.parametrize("cols", [None, np.array([7, 0, 3, 11, 5])])
def test_binary_equals_lightgbm_sequence_build(tmp_path, features, cols):
    fd, _ = features
    ours = binary(tmp_path, StoreDataset(sequences(fd, cols), params=PARAMS), "ours.bin")
    theirs = binary(tmp_path, lgb.Dataset(sequences(fd, cols), params=PARAMS), "theirs.bin")
    assert ours == theirs


def test_sample_matches_lightgbm_sample(features):
    """Column by column: the same values (NaN for missing) at the same sample rows."""
    fd, codes = features
    seqs = sequences(fd, None)
    reference = lgb.Dataset(seqs, params=PARAMS)
    indices = reference._create_sample_indices(total_nrow=2400)
    values, rows = sample_columns(sample_codes(seqs, indices))
    their_values, their_rows = reference._Dataset__sample(seqs=seqs, total_nrow=2400)
    assert len(values) == 12 and len(values[3]) == 0
    for v, r, tv, tr in zip(values, rows, their_values, their_rows):
        np.testing.assert_array_equal(r, tr)
        np.testing.assert_array_equal(v, tv)
        assert v.dtype == np.float64 and r.dtype == np.int32
    kept = np.concatenate([codes[0:700], codes[900:2100], codes[2500:3000]])[indices]
    np.testing.assert_array_equal(sample_codes(seqs, indices), kept)


def test_predict_codes_equals_one_float32_predict(features, monkeypatch):
    """Chunked prediction through the reused buffer = LightGBM on the whole float32 matrix (missing → NaN).

    Bug guarded against: a reused buffer leaking the previous chunk's rows, a last partial chunk
    predicted with stale rows, or missing codes not turned to NaN."""
    from eraflow.engine.data.store import int8_to_float32
    from eraflow.engine.models import lgb_data

    _, codes = features
    x = int8_to_float32(codes)
    y = np.nan_to_num(x[:, 0]) + np.random.default_rng(1).random(len(x))
    booster = lgb.train({**PARAMS, "min_data_in_leaf": 5}, lgb.Dataset(x, y), 10)
    monkeypatch.setattr(lgb_data, "PREDICT_ROWS", 700)  # 3000 rows: four full chunks and a partial one
    np.testing.assert_array_equal(lgb_data.predict_codes(booster, codes), booster.predict(x))
    np.testing.assert_array_equal(lgb_data.predict_codes(booster, codes[:5], num_iteration=3),
                                  booster.predict(x[:5], num_iteration=3))
