"""Ingest: what the store holds equals what pyarrow reads, rows sorted by era, atomic rebuilds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eraflow.engine import IngestOptions, InputError, LockedError, ingest_files, open_store, plan_ingest
from eraflow.engine.data.eras import era_key
from eraflow.engine.data.ingest import contiguous_runs, destination
from eraflow.engine.lock import exclusive_lock

from .conftest import tiny_frame, write_parquet


def pyarrow_rows(paths) -> pa.Table:
    """The oracle: all rows of the sources as pyarrow reads them."""
    return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")


def assert_store_matches(store, table: pa.Table) -> None:
    """Every store row equals the source row with the same id; eras in natural order."""
    ids = store.ids
    by_id = {v: i for i, v in enumerate(table.column("id").to_pylist())}
    src_rows = np.array([by_id[v] for v in ids])
    feats = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in store.feature_names])
    np.testing.assert_array_equal(store.features, feats[src_rows], err_msg="features differ from pyarrow")
    for j, t in enumerate(store.target_names):
        want = table.column(t).to_numpy(zero_copy_only=False)[src_rows].astype(np.float32)
        np.testing.assert_array_equal(store.targets[:, j], want, err_msg=t)
    eras = np.array(table.column("era").to_pylist(), dtype=object)[src_rows]
    expected_eras = np.repeat(store.eras, np.diff(store.offsets))
    assert list(eras) == list(expected_eras)
    assert store.eras == sorted(store.eras, key=era_key)


def test_synthetic_store_equals_pyarrow(synth_dir, store_path):
    store = open_store(store_path)
    sources = [synth_dir / "train.parquet", synth_dir / "validation.parquet"]
    assert_store_matches(store, pyarrow_rows(sources))
    assert store.n_rows == sum(pq.ParquetFile(p).metadata.num_rows for p in sources)
    assert store.target_names[0] == "target" and len(store.target_names) == 5
    data_type = store.extra("data_type")
    assert set(data_type[: store.offsets[1]]) == {None}, "train rows have no data_type"
    assert data_type[-1] == "validation"


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_unsorted_source_is_sorted_by_era_keeping_file_order(tmp_path, engine):
    cols = tiny_frame(n_eras=5, rows=7)
    order = np.random.default_rng(1).permutation(35)
    shuffled = {k: [v[i] for i in order] if isinstance(v, list) else v.take(pa.array(order)) for k, v in cols.items()}
    src = write_parquet(tmp_path / "shuffled.parquet", shuffled, row_group_size=8)
    store = open_store(ingest_files([src], tmp_path / "s", IngestOptions(batch_rows=6, engine=engine)).store)
    assert_store_matches(store, pq.read_table(src))
    eras = np.array(shuffled["era"])
    ids = np.array(shuffled["id"])
    expected = np.concatenate([ids[eras == e] for e in store.eras])  # file order within each era
    assert list(store.ids) == list(expected)


def test_engines_build_identical_stores(synth_dir, tmp_path):
    sources = [synth_dir / "train.parquet", synth_dir / "validation.parquet"]
    a = open_store(ingest_files(sources, tmp_path / "a", IngestOptions(batch_rows=500)).store)
    b = open_store(ingest_files(sources, tmp_path / "b", IngestOptions(engine="duckdb", batch_rows=700)).store)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert list(a.ids) == list(b.ids)


def test_integer_eras_sort_naturally(tmp_path):
    cols = tiny_frame(n_eras=3, rows=2)
    cols["era"] = pa.array([10, 10, 2, 2, 1, 1], pa.int64())
    store = open_store(ingest_files([write_parquet(tmp_path / "x.parquet", cols)], tmp_path / "s").store)
    assert store.eras == ["1", "2", "10"]
    assert list(store.ids) == ["id00004", "id00005", "id00002", "id00003", "id00000", "id00001"]


def test_id_as_pandas_index(tmp_path):
    cols = tiny_frame()
    frame = pd.DataFrame({k: (v.to_numpy() if isinstance(v, pa.Array) else v) for k, v in cols.items()})
    src = tmp_path / "indexed.parquet"
    frame.set_index("id").to_parquet(src)
    assert "id" in pq.read_schema(src).names and b"pandas" in pq.read_schema(src).metadata
    store = open_store(ingest_files([src], tmp_path / "s").store)
    assert list(store.ids) == cols["id"]


def test_float_quarters_int_widths_and_nan_become_codes(tmp_path):
    cols = tiny_frame(n_eras=2, rows=3, n_features=2)
    quarters = np.array([0, .25, .5, .75, 1, np.nan], dtype=np.float32)
    as_floats = {**cols, "feature_0": pa.array(quarters), "feature_1": pa.array(quarters[::-1].copy())}
    as_ints = {**cols, "feature_0": pa.array([0, 1, 2, 3, 4, None], pa.int64()),
               "feature_1": pa.array([None, 4, 3, 2, 1, 0], pa.int32())}
    as_float_codes = {**cols, "feature_0": pa.array([0, 1, 2, 3, 4, np.nan]),
                      "feature_1": pa.array([np.nan, 4, 3, 2, 1, 0])}
    for name, table in {"floats": as_floats, "ints": as_ints, "float_codes": as_float_codes}.items():
        store = open_store(ingest_files([write_parquet(tmp_path / f"{name}.parquet", table)], tmp_path / name).store)
        np.testing.assert_array_equal(store.features[:, 0], [0, 1, 2, 3, 4, -1], err_msg=name)
        np.testing.assert_array_equal(store.features[:, 1], [-1, 4, 3, 2, 1, 0], err_msg=name)


def test_several_files_extra_columns_and_nan_targets(tmp_path):
    a = tiny_frame(n_eras=2, rows=3, seed=1)
    b = tiny_frame(n_eras=2, rows=3, seed=2)
    b["id"] = [f"v{i}" for i in range(6)]
    b["era"] = ["0003"] * 3 + ["0004"] * 3
    b["data_type"] = ["validation"] * 6
    b["target"] = pa.array([0.5, np.nan, 1, np.nan, np.nan, 0], pa.float32())
    src_b = write_parquet(tmp_path / "b.parquet", b)
    src_a = write_parquet(tmp_path / "a.parquet", a)
    store = open_store(ingest_files([src_b, src_a], tmp_path / "s").store)  # given newest first
    assert store.eras == ["0001", "0002", "0003", "0004"]
    assert_store_matches(store, pyarrow_rows([src_a, src_b]))
    assert list(store.extra("data_type")) == [None] * 6 + ["validation"] * 6
    assert store.meta["target_nan_share"]["target"] == pytest.approx(3 / 12)


def test_era_range_and_feature_set(synth_dir, tmp_path):
    doc = json.loads((synth_dir / "features.json").read_text())
    opts = IngestOptions(features_json=synth_dir / "features.json", feature_set="small",
                         targets=("target", "target_*_60"), eras="0003:0010")
    store = open_store(ingest_files([synth_dir / "train.parquet"], tmp_path / "s", opts).store)
    assert store.eras == [f"{k:04d}" for k in range(3, 11)]
    assert store.feature_names == doc["feature_sets"]["small"]
    assert store.target_names == ["target", "target_ender_60", "target_cyrus_60"]
    assert set(store.feature_sets) >= {"small", "all"} and "medium" in store.feature_sets
    table = pq.read_table(synth_dir / "train.parquet")
    kept = table.filter(pa.compute.is_in(table.column("era"), pa.array(store.eras)))
    assert_store_matches(store, kept)


def test_rerun_is_a_no_op_until_a_source_changes(tmp_path):
    src = write_parquet(tmp_path / "x.parquet", tiny_frame(seed=1))
    store = tmp_path / "s"
    assert ingest_files([src], store).status == "built"
    assert ingest_files([src], store).status == "unchanged"
    assert ingest_files([src], store, force=True).status == "built"
    assert ingest_files([src], store, IngestOptions(targets=())).status == "built", "options are part of the key"
    write_parquet(src, tiny_frame(seed=2))
    assert ingest_files([src], store, IngestOptions(targets=())).status == "built"
    assert open_store(store).features[0].tolist() == pq.read_table(src).slice(0, 1).select(
        ["feature_0", "feature_1", "feature_2"]).to_pandas().iloc[0].tolist()


def test_a_second_writer_is_refused(tmp_path):
    src = write_parquet(tmp_path / "x.parquet", tiny_frame())
    with exclusive_lock(tmp_path / "s"):
        with pytest.raises(LockedError, match="another process"):
            ingest_files([src], tmp_path / "s")
    assert ingest_files([src], tmp_path / "s").status == "built"


def test_failed_rebuild_keeps_previous_store(tmp_path):
    good = tiny_frame()
    src = write_parquet(tmp_path / "x.parquet", good)
    store = tmp_path / "s"
    ingest_files([src], store)
    before = open_store(store).features.copy()
    bad = {**good, "feature_1": pa.array(np.full(12, 7, np.int8))}
    write_parquet(src, bad)
    with pytest.raises(InputError, match="feature_1 has value 7"):
        ingest_files([src], store)
    np.testing.assert_array_equal(open_store(store).features, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "s.lock", "x.parquet"]


def test_destination_places_rows_after_earlier_slices():
    cursor = np.array([0, 3, 5])
    take, dest = destination(np.array([2, 0, -1, 0, 1]), cursor)
    np.testing.assert_array_equal(take, [1, 3, 4, 0])
    np.testing.assert_array_equal(dest, [0, 1, 3, 5])
    np.testing.assert_array_equal(cursor, [2, 4, 6])
    assert contiguous_runs(np.array([0, 1, 3, 5, 6])) == [(0, 2), (2, 1), (3, 2)]


def test_plan_resolves_columns(synth_dir):
    plan = plan_ingest([synth_dir / "train.parquet"], IngestOptions(targets=("target",)))
    desc = plan.describe()
    assert desc["features"] == 40 and desc["targets"] == ["target"] and desc["extra_columns"] == []
    assert plan.batch_rows == (32 << 20) // 40


def test_progress_reports_every_row_of_each_stage(synth_dir, tmp_path):
    calls = []
    sources = [synth_dir / "train.parquet", synth_dir / "validation.parquet"]
    ingest_files(sources, tmp_path / "s", IngestOptions(batch_rows=333), progress=lambda *c: calls.append(c))
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in sources)
    for stage in ("scanning eras", "writing rows"):
        advances = [a for s, a, t in calls if s == stage]
        assert sum(advances) == total and {t for s, a, t in calls if s == stage} == {total}, stage
    assert max(a for s, a, t in calls if s == "writing rows") <= 333
