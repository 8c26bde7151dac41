"""EraStore: memmap views, selections, float batches, damaged stores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from eraflow.engine import InputError, StoreError, open_store, store_info


@pytest.fixture
def store(store_path):
    return open_store(store_path)


@pytest.fixture
def copy(store_path, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(store_path, target)
    return target


def test_arrays_have_documented_types_and_shapes(store):
    assert isinstance(store.features, np.memmap) and store.features.dtype == np.int8
    assert store.features.flags.c_contiguous and not store.features.flags.writeable
    assert store.targets.dtype == np.float32 and store.targets.shape == (store.n_rows, 5)
    assert store.offsets.dtype == np.int64 and store.offsets.shape == (store.n_eras + 1,)
    assert store.offsets[0] == 0 and store.offsets[-1] == store.n_rows
    assert len(store.ids) == store.n_rows
    assert store.features.min() >= 0 and store.features.max() <= 4


def test_era_slice_is_a_view_of_one_era(store):
    k = 5
    view = store.era_slice(k)
    rows = slice(store.offsets[k], store.offsets[k + 1])
    assert np.shares_memory(view.features, store.features)
    np.testing.assert_array_equal(view.features, store.features[rows])
    np.testing.assert_array_equal(view.offsets, [0, store.offsets[k + 1] - store.offsets[k]])
    assert view.eras == [store.eras[k]]
    with pytest.raises(InputError, match="out of range"):
        store.era_slice(store.n_eras)


def test_select_feature_set_and_era_range(store):
    view = store.select(feature_set="small", eras="0003:0005")
    small = store.feature_sets["small"]
    assert view.feature_names == small and view.eras == ["0003", "0004", "0005"]
    cols = [store.feature_names.index(f) for f in small]
    rows = slice(store.offsets[2], store.offsets[5])
    np.testing.assert_array_equal(view.features, store.features[rows][:, cols])
    np.testing.assert_array_equal(view.offsets, store.offsets[2:6] - store.offsets[2])
    assert np.shares_memory(store.select(eras=["0004", "0003"]).features, store.features)


@pytest.mark.parametrize("kwargs,message", [
    ({"feature_set": "huge"}, "unknown feature set"),
    ({"features": ["feature_nope"]}, "unknown features"),
    ({"eras": ["0001", "0003"]}, "contiguous"),
    ({"eras": ["9999"]}, "not in the store"),
    ({"eras": "0100:0200"}, "selects no era"),
    ({"features": ["x"], "feature_set": "small"}, "not both"),
])
def test_bad_selections_say_what_is_wrong(store, kwargs, message):
    with pytest.raises(InputError, match=message):
        store.select(**kwargs)


def test_batches_are_float32_with_missing_as_nan(store_path, tmp_path):
    target = tmp_path / "s"
    shutil.copytree(store_path, target)
    with open(target / "features.i8", "r+b") as fh:  # mark two cells missing
        fh.seek(0)
        fh.write(b"\xff")
        fh.seek(store_path.joinpath("features.i8").stat().st_size - 1)
        fh.write(b"\xff")
    store = open_store(target)
    blocks = list(store.batches(batch_rows=100))
    assert all(b.dtype == np.float32 and b.shape[0] <= 100 for b in blocks)
    full = np.concatenate(blocks)
    expected = store.features.astype(np.float32)
    expected[store.features == -1] = np.nan
    np.testing.assert_array_equal(full, expected)
    assert np.isnan(full[0, 0]) and np.isnan(full[-1, -1])
    names = store.feature_names[3:6]
    part = np.concatenate(list(store.select(eras="0002:0003").batches(rows=slice(5, 50), cols=names, batch_rows=7)))
    r0 = store.offsets[1]
    np.testing.assert_array_equal(part, store.features[r0 + 5:r0 + 50, 3:6])


def test_info_summarises_the_store(store):
    info = store_info(store)
    per_era = np.diff(store.offsets)
    assert info["rows"] == store.n_rows and info["features"] == 40
    assert info["eras"] == {"count": 24, "first": "0001", "last": "0024", "rows_min": int(per_era.min()),
                            "rows_median": float(np.median(per_era)), "rows_max": int(per_era.max())}
    nan_share = np.isnan(store.targets[:, store.target_names.index("target_ender_60")]).mean()
    assert info["targets"]["target_ender_60"]["nan_share"] == pytest.approx(nan_share)
    assert info["feature_sets"]["all"] == 40
    assert info["bytes_on_disk"] >= store.features.nbytes


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / "features.i8").unlink(), "features.i8 is missing"),
    (lambda p: (p / "targets.f32").write_bytes(b"short"), "targets.f32 has 5 bytes"),
    (lambda p: (p / "ids.parquet").unlink(), "ids.parquet is missing"),
    (lambda p: (p / "meta.json").write_text("{"), "not valid JSON"),
    (lambda p: (p / "meta.json").unlink(), "meta.json is missing"),
    (lambda p: (p / "offsets.i64").write_bytes(np.zeros(25, np.int64).tobytes()), "not a valid offsets"),
])
def test_damaged_store_is_a_clear_error(copy, damage, message):
    damage(copy)
    with pytest.raises(StoreError, match=message):
        open_store(copy)


def test_other_format_version_is_refused(copy):
    meta = json.loads((copy / "meta.json").read_text())
    meta["format_version"] = 99
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format version 99"):
        open_store(copy)


def test_missing_store_and_file_path(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        open_store(tmp_path / "nothing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(tmp_path / "f")
