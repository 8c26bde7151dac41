"""Store integrity: not-a-store vs damaged, the era-rows record, meta.json schema, readers that keep
the version they opened while a re-ingest swaps the store, lock files that are links, target patterns."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import eraflow.engine.data.store as store_module
from eraflow.cli import cli
from eraflow.engine import IngestOptions, InputError, StoreError, ingest_files, open_store, plan_ingest, store_info
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.lock import exclusive_lock
from eraflow.engine.numerai.numerai import MANIFEST, download_datasets

from .conftest import tiny_frame, write_parquet
from .test_numerai import VERSION, FakeNumerAPI, served_files


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def copy(store_path, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(store_path, target)
    return target


def edit_meta(store: Path, change) -> None:
    meta = json.loads((store / "meta.json").read_text())
    change(meta)
    (store / "meta.json").write_text(json.dumps(meta))


def frame_with_ids(prefix: str, seed: int) -> dict:
    cols = tiny_frame(n_eras=3, rows=5, n_features=4, seed=seed)
    cols["id"] = [f"{prefix}{i:04d}" for i in range(len(cols["id"]))]
    return cols


def features_of(cols: dict) -> np.ndarray:
    return np.column_stack([np.asarray(cols[f"feature_{j}"]) for j in range(4)]).astype(np.int8)


def ingest_frame(tmp_path: Path, cols: dict, store: Path, name: str, force: bool = False):
    return ingest_files([write_parquet(tmp_path / name, cols)], store, force=force)


# -- not a store vs damaged ------------------------------------------------------------------

def test_plain_directory_is_not_a_store_not_damaged(tmp_path):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(StoreError, match=r"mydir is not an eraflow store \(no meta.json\)") as err:
        open_store(mine)
    assert "damaged" not in str(err.value) and "--force" not in str(err.value)
    line = one_error_line(run("info", mine))
    assert "is not an eraflow store (no meta.json)" in line and "damaged" not in line
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("meta_text,message", [
    ('{"hello": 1}', r"is not an eraflow store \(meta.json has no format 'eraflow-store'\)"),
    ("{", r"is not an eraflow store \(meta.json is not valid JSON\)"),
])
def test_foreign_meta_json_without_store_files_is_not_a_store(tmp_path, meta_text, message):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text(meta_text)
    with pytest.raises(StoreError, match=message):
        open_store(tmp_path / "other")


def test_store_files_without_meta_json_are_a_damaged_store(copy):
    (copy / "meta.json").unlink()
    with pytest.raises(StoreError, match="is damaged: meta.json is missing; remove the directory"):
        open_store(copy)


# -- the integrity record --------------------------------------------------------------------

def test_new_stores_record_rows_per_era(store_path):
    meta = json.loads((store_path / "meta.json").read_text())
    offsets = np.fromfile(store_path / "offsets.i64", dtype=np.int64)
    assert meta["format_version"] == 2 and meta["era_rows"] == np.diff(offsets).tolist()


def test_shifted_inner_offset_is_detected(copy):
    offsets = np.fromfile(copy / "offsets.i64", dtype=np.int64)
    offsets[3] += 1  # still increasing, still 0..n_rows: only the record can tell
    offsets.tofile(copy / "offsets.i64")
    with pytest.raises(StoreError, match=r"offsets.i64 gives era 0003 \d+ rows, meta.json records \d+"):
        open_store(copy)
    assert "error: store" in one_error_line(run("info", copy))


def test_ids_parquet_with_other_row_count_is_detected(copy):
    ids = pq.read_table(copy / "ids.parquet")
    pq.write_table(ids.slice(1), copy / "ids.parquet")
    with pytest.raises(StoreError, match=rf"ids.parquet has {ids.num_rows - 1} rows, expected {ids.num_rows}"):
        open_store(copy)


def test_version_1_store_without_record_still_opens(copy):
    edit_meta(copy, lambda m: (m.pop("era_rows"), m.update(format_version=1)))
    store = open_store(copy)
    assert store.n_rows == store.offsets[-1] and store_info(store)["format_version"] == 1


# -- meta.json schema ------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("n_rows"), "has no key 'n_rows'"),
    (lambda m: m.update(n_rows=str(m["n_rows"])), "key 'n_rows' must be an integer >= 0"),
    (lambda m: m.update(n_rows=-1), "key 'n_rows' must be an integer >= 0"),
    (lambda m: m.update(eras="0001"), "key 'eras' must be a non-empty list"),
    (lambda m: m.update(eras=[]), "key 'eras' must be a non-empty list"),
    (lambda m: m.update(feature_names=list(range(len(m["feature_names"])))), "key 'feature_names' must be a list"),
    (lambda m: m.update(target_names=None), "key 'target_names' must be a list"),
    (lambda m: m.update(feature_sets={"small": "feature_1"}), "key 'feature_sets' must be an object of lists"),
    (lambda m: m.update(feature_sets={"small": ["feature_nope"]}),
     "key 'feature_sets' lists unknown features in 'small': feature_nope"),
    (lambda m: m.update(target_nan_share={}), "key 'target_nan_share' has no entry for target"),
    (lambda m: m.update(target_nan_share=[0.1]), "key 'target_nan_share' must be an object"),
    (lambda m: m.update(extra_columns="data_type"), "key 'extra_columns' must be a list"),
    (lambda m: m.pop("created"), "has no key 'created'"),
    (lambda m: m.pop("era_rows"), "has no key 'era_rows'"),
    (lambda m: m.update(era_rows=m["era_rows"][:-1]), "key 'era_rows' must give the rows of each era"),
])
def test_malformed_meta_json_is_a_one_line_store_error(copy, change, message):
    edit_meta(copy, change)
    with pytest.raises(StoreError, match=f"damaged: meta.json {message}"):
        open_store(copy)
    line = one_error_line(run("info", copy))
    assert "meta.json" in line and "--force" in line


@pytest.mark.parametrize("doc,message", [
    ({"feature_sets": {"small": "feature_0"}}, "feature set 'small' must be a list of feature names"),
    ({"feature_sets": {"small": ["feature_0", 1]}}, "feature set 'small' must be a list of feature names"),
    ({"feature_sets": {}, "targets": "target"}, "`targets` must be a list of target names"),
])
def test_malformed_features_json_is_an_input_error(tmp_path, doc, message):
    src = write_parquet(tmp_path / "train.parquet", tiny_frame())
    (tmp_path / "features.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message):
        plan_ingest([src], IngestOptions(features_json=tmp_path / "features.json"))


# -- damaged ids.parquet ---------------------------------------------------------------------

def test_damaged_ids_parquet_with_intact_footer_is_a_store_error(copy, tmp_path):
    store = open_store(copy)
    expected_ids = store.ids.tolist()
    with open(copy / "ids.parquet", "r+b") as fh:  # first page header: the footer still reads
        fh.seek(4)
        fh.write(b"\xff" * 16)
    store = open_store(copy)
    with pytest.raises(StoreError, match="damaged: ids.parquet cannot be read"):
        _ = store.ids
    preds = write_parquet(tmp_path / "p.parquet", {"id": expected_ids, "prediction": np.zeros(len(expected_ids))})
    with pytest.raises(StoreError, match="damaged: ids.parquet cannot be read"):
        align_predictions(store, preds)


def test_truncated_ids_parquet_is_refused_on_open(copy):
    data = (copy / "ids.parquet").read_bytes()
    (copy / "ids.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="damaged: ids.parquet cannot be read"):
        open_store(copy)


# -- readers keep one version ----------------------------------------------------------------

def test_reader_keeps_the_version_it_opened_while_a_reingest_replaces_it(tmp_path):
    old, new = frame_with_ids("old", seed=0), frame_with_ids("new", seed=1)
    path = tmp_path / "store"
    ingest_frame(tmp_path, old, path, "old.parquet")
    reader = open_store(path)
    preds = write_parquet(tmp_path / "p.parquet", {"id": old["id"], "prediction": np.arange(15.0)})
    assert ingest_frame(tmp_path, new, path, "new.parquet", force=True).status == "built"

    n, nf = reader.features.shape
    assert reader.ids.tolist() == old["id"]
    assert reader.id_table(["id"]).column("id").to_pylist() == old["id"]
    np.testing.assert_array_equal(reader.features, features_of(old))
    np.testing.assert_array_equal(reader.targets[:, 0], np.asarray(old["target"]))
    read = np.frombuffer(os.pread(reader.features_fd, n * nf, 0), dtype=np.int8).reshape(n, nf)
    np.testing.assert_array_equal(read, features_of(old))
    aligned = align_predictions(reader, preds)
    np.testing.assert_array_equal(aligned.rows, np.arange(15))
    assert aligned.ids.tolist() == old["id"]

    fresh = open_store(path)
    assert fresh.ids.tolist() == new["id"]
    np.testing.assert_array_equal(fresh.features, features_of(new))
    assert not np.array_equal(features_of(old), features_of(new))


def swap_while_opening(monkeypatch, tmp_path, path: Path, times: int) -> list:
    """Make the next ``times`` directory opens of open_store be followed by a real re-ingest of ``path``."""
    swaps = []
    real = store_module._open_dir

    def opened_then_swapped(p):
        fd = real(p)
        if len(swaps) < times:
            cols = frame_with_ids(f"v{len(swaps)}", seed=10 + len(swaps))
            swaps.append(cols)
            ingest_frame(tmp_path, cols, path, f"v{len(swaps)}.parquet", force=True)
        return fd

    monkeypatch.setattr(store_module, "_open_dir", opened_then_swapped)
    return swaps


def test_store_swapped_while_being_opened_is_opened_again_whole(tmp_path, monkeypatch):
    path = tmp_path / "store"
    ingest_frame(tmp_path, frame_with_ids("old", seed=0), path, "old.parquet")
    swaps = swap_while_opening(monkeypatch, tmp_path, path, times=1)
    store = open_store(path)
    assert len(swaps) == 1
    assert store.ids.tolist() == swaps[0]["id"]
    np.testing.assert_array_equal(store.features, features_of(swaps[0]))


def test_store_that_keeps_changing_while_opened_is_a_store_error(tmp_path, monkeypatch):
    path = tmp_path / "store"
    ingest_frame(tmp_path, frame_with_ids("old", seed=0), path, "old.parquet")
    swap_while_opening(monkeypatch, tmp_path, path, times=store_module.OPEN_ATTEMPTS)
    with pytest.raises(StoreError, match="kept changing while it was opened"):
        open_store(path)


def open_in(directory: Path) -> list[str]:
    """Files under ``directory`` that this process holds open (descriptors and the maps' own)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link.startswith(str(directory))]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors through /proc")
def test_opened_stores_release_their_descriptors(copy):
    for _ in range(20):
        assert len(open_store(copy).ids) > 0
    gc.collect()  # pyarrow's Parquet metadata objects form reference cycles, freed (with the map) by the collector
    assert open_in(copy) == []
    with open_store(copy) as store:
        fd = store.features_fd
        assert os.fstat(fd).st_size == store.features.nbytes
    assert str(copy / "features.i8") in open_in(copy)  # the memmap's own descriptor
    with pytest.raises(OSError):
        os.fstat(fd)
    assert store.features_fd == -1, "a closed descriptor's number may be reused by another file"
    assert store.features.sum() == open_store(copy).features.sum()  # maps stay readable after close()
    del store
    gc.collect()
    assert open_in(copy) == []


# -- lock files ------------------------------------------------------------------------------

def test_lock_path_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    (tmp_path / "store.lock").symlink_to(victim)
    with pytest.raises(InputError, match="store.lock is a symbolic link"):
        with exclusive_lock(tmp_path / "store"):
            pass
    assert victim.read_text() == "do not truncate me"
    src = write_parquet(tmp_path / "train.parquet", tiny_frame())
    assert "is a symbolic link" in one_error_line(run("ingest", src, tmp_path / "store"))
    assert victim.read_text() == "do not truncate me" and not (tmp_path / "store").exists()


def test_dangling_symlink_and_hard_link_lock_paths_are_refused(tmp_path):
    (tmp_path / "a.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="symbolic link"):
        with exclusive_lock(tmp_path / "a"):
            pass
    assert not (tmp_path / "elsewhere").exists()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    os.link(victim, tmp_path / "b.lock")
    with pytest.raises(InputError, match="hard link"):
        with exclusive_lock(tmp_path / "b"):
            pass
    assert victim.read_text() == "keep"


def test_download_manifest_lock_does_not_follow_a_symlink(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    (out / f"{MANIFEST}.lock").symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"):
        download_datasets(FakeNumerAPI(served_files()), out, VERSION, ["features"])
    assert victim.read_text() == "keep"


# -- target patterns -------------------------------------------------------------------------

def with_targets(cols: dict, names: list[str]) -> dict:
    cols = {k: v for k, v in cols.items() if k != "target"}
    for j, name in enumerate(names):
        cols[name] = pa.array(np.full(len(cols["id"]), 0.25 * j, dtype=np.float32))
    return cols


def test_target_pattern_that_matches_nothing_names_the_targets(tmp_path):
    src = write_parquet(tmp_path / "train.parquet", with_targets(tiny_frame(), ["target", "target_ender_20"]))
    with pytest.raises(InputError, match=r"target pattern 'targt' matches no column of train.parquet; "
                                         r"its targets are target, target_ender_20"):
        plan_ingest([src], IngestOptions(targets=("targt",)))
    with pytest.raises(InputError, match=r"pattern 'x\*' matches no column"):
        plan_ingest([src], IngestOptions(targets=("target", "x*")))
    assert plan_ingest([src], IngestOptions(targets=())).target_names == []
    assert plan_ingest([src], IngestOptions(targets=("target_*",))).target_names == ["target_ender_20"]
    line = one_error_line(run("ingest", src, tmp_path / "store", "--targets", "targt"))
    assert "its targets are target, target_ender_20" in line and not (tmp_path / "store").exists()
    assert run("ingest", src, tmp_path / "store", "--targets", "").exit_code == 0
    assert open_store(tmp_path / "store").target_names == []


def test_era_id_or_feature_columns_are_not_targets(tmp_path):
    src = write_parquet(tmp_path / "train.parquet", with_targets(tiny_frame(), ["target"]))
    for pattern in ("era", "id", "feature_0", "*"):
        with pytest.raises(InputError, match="the era, id or feature column"):
            plan_ingest([src], IngestOptions(targets=(pattern,)))


def test_default_target_pattern_may_match_nothing(tmp_path):
    src = write_parquet(tmp_path / "live.parquet", with_targets(tiny_frame(), []))
    assert plan_ingest([src]).target_names == []
    with pytest.raises(InputError, match="'target' matches no column of live.parquet; it has no target columns"):
        plan_ingest([src], IngestOptions(targets=("target",)))
