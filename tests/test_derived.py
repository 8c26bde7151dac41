"""Per-group row statistics kept in the store, feature-set composition, named sets, and the model paths
that need the statistics where they are absent (predict, live, export)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from eraflow.engine import SynthSpec, open_store
from eraflow.engine.data.derived import (
    GROUP_STATS,
    add_group_stats,
    derived_recipe,
    plan_group_stats,
    save_feature_set,
)
from eraflow.engine.data.ingest import IngestOptions, ingest_files
from eraflow.engine.data.store import era_blocks
from eraflow.engine.data.synth import GROUPS
from eraflow.engine.errors import InputError
from eraflow.engine.models.portable.derived import quantize_per_era, row_stats
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.engine.numerai.export import export_model
from eraflow.engine.numerai.live import (
    SUBMITTED,
    Postprocess,
    feature_set_names,
    live_predictions,
    model_store,
    override_postprocess,
    predict_submitted,
    set_postprocess,
)
from tests.conftest import synthetic_store, tiny_frame, write_parquet
from tests.test_train import FAST

SPEC = SynthSpec(eras=10, rows_per_era=60, features=40, targets=1, seed=3)
STATS = ("mean", "std", "skew")


# -- the statistics and the per-era codes against pandas and a plain rank oracle ----------------------

def pandas_stats(codes: np.ndarray) -> dict[str, np.ndarray]:
    """pandas 2.x's statistics (Numerai's runtime): skew 0 for a constant row of ≥ 3 codes (pandas ≥ 3: NaN)."""
    frame = pd.DataFrame(np.where(codes < 0, np.nan, codes.astype(np.float64)))
    constant = (frame.count(axis=1) >= 3) & (frame.max(axis=1) == frame.min(axis=1))
    return {"mean": frame.mean(axis=1).to_numpy(), "std": frame.std(axis=1, ddof=1).to_numpy(),
            "skew": frame.skew(axis=1).mask(constant, 0.0).to_numpy()}


def oracle_codes(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """min(4, floor(5 (rank − 0.5) / n)) per era with scipy's average ranks of the non-NaN values; NaN → -1.
    Values are rounded to 1e-12 first: pandas and eraflow sum in different orders, ties must stay ties."""
    out = np.full(len(values), -1, dtype=np.int64)
    for lo, hi in itertools.pairwise(offsets):
        era = np.round(values[lo:hi], 12)
        present = ~np.isnan(era)
        ranks = rankdata(era[present], method="average")
        out[lo:hi][present] = np.minimum(4, np.floor(5 * (ranks - 0.5) / present.sum()))
    return out


def test_row_stats_equal_pandas_including_missing_and_degenerate_rows():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, (400, 7)).astype(np.int8)
    codes[rng.random(codes.shape) < 0.3] = -1
    codes[:6] = [[-1] * 7, [3] + [-1] * 6, [1, 4] + [-1] * 5, [2] * 7, [0, 0, 4] + [-1] * 4, [4, 4, 4, 0, -1, -1, -1]]
    ours, theirs = row_stats(codes), pandas_stats(codes)
    for stat in STATS:
        np.testing.assert_allclose(ours[stat], theirs[stat], rtol=1e-12, atol=1e-12, err_msg=stat)
    assert ours["skew"][3] == 0.0, "constant row: skew 0 as pandas 2.x (Numerai's runtime), not NaN"
    assert np.isnan(ours["skew"][2]), "two codes: skew undefined"
    floats = np.where(codes < 0, np.nan, codes.astype(np.float64))  # the live path reads float codes, NaN missing
    for stat in STATS:
        np.testing.assert_array_equal(row_stats(floats)[stat], ours[stat], err_msg=stat)


def test_stats_of_the_same_codes_in_any_order_tie_exactly():
    """Guards against float summation order breaking ties: permuted rows must rank identically."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, (50, 9)).astype(np.int8)
    shuffled = np.array([rng.permutation(row) for row in codes])
    for stat in STATS:
        np.testing.assert_array_equal(row_stats(codes)[stat], row_stats(shuffled)[stat], err_msg=stat)


def test_quantize_per_era_equals_a_rank_oracle_with_ties_and_nan():
    rng = np.random.default_rng(2)
    values = rng.integers(0, 12, 300).astype(np.float64) / 3  # many ties
    values[rng.random(300) < 0.1] = np.nan
    offsets = np.array([0, 7, 100, 101, 250, 300])
    got = quantize_per_era(values, offsets)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, oracle_codes(values, offsets))
    for lo, hi in itertools.pairwise(offsets):  # a large tie-free era gets five near-equal bins
        if hi - lo > 100:
            counts = np.bincount(quantize_per_era(rng.normal(size=hi - lo), np.array([0, hi - lo])), minlength=5)
            assert counts.max() - counts.min() <= 1


# -- the store ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A synthetic store (with features.json groups) and its data directory; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("derived")
    synthetic_store(out, SPEC).close()
    return out


def copy_store(base, dest):
    import shutil

    shutil.copytree(base / "store", dest)
    return dest


@pytest.fixture(scope="module")
def added(base, tmp_path_factory):
    """The store with group statistics added, and the store as it was before."""
    before = copy_store(base, tmp_path_factory.mktemp("before") / "store")
    after = copy_store(base, tmp_path_factory.mktemp("after") / "store")
    add_group_stats(after)
    return open_store(before), open_store(after)


def test_added_codes_equal_pandas_stats_ranked_per_era(added):
    before, after = added
    assert after.feature_names[:len(before.feature_names)] == before.feature_names
    for g in GROUPS:
        cols = [before.feature_names.index(f) for f in before.feature_sets[g]]
        theirs = pandas_stats(np.asarray(before.features[:, cols]))
        for stat in STATS:
            got = np.asarray(after.features[:, after.feature_names.index(f"feature_{g}_{stat}")])
            np.testing.assert_array_equal(got, oracle_codes(theirs[stat], before.offsets), err_msg=f"{g} {stat}")
    assert after.feature_sets[GROUP_STATS] == [f"feature_{g}_{s}" for g in GROUPS for s in STATS]


def test_add_keeps_every_other_file_and_changes_the_fingerprint(added):
    before, after = added
    np.testing.assert_array_equal(after.features[:, :len(before.feature_names)], before.features)
    np.testing.assert_array_equal(after.targets, before.targets)
    np.testing.assert_array_equal(after.offsets, before.offsets)
    assert list(after.ids) == list(before.ids)
    assert after.fingerprint != before.fingerprint and after.meta["base_fingerprint"] == before.fingerprint
    assert after.meta["derived"][GROUP_STATS]["groups"]["rain"] == before.feature_sets["rain"]
    assert set(after.meta["made_sets"]) == {GROUP_STATS}


def test_a_reader_of_the_old_version_is_unaffected_and_rerun_replaces_only_what_add_made(base, tmp_path):
    path = copy_store(base, tmp_path / "store")
    add_group_stats(path)
    reader = open_store(path)
    old = np.array(reader.features)
    add_group_stats(path, ["rain", "medium"])  # replaces the 30 columns by 6
    np.testing.assert_array_equal(reader.features, old)  # still the version it opened
    fresh = open_store(path)
    assert fresh.feature_names[-6:] == [f"feature_{g}_{s}" for g in ("rain", "medium") for s in STATS]
    assert len(fresh.feature_names) == SPEC.features + 6
    assert not any(p.name.startswith("store.tmp-") for p in tmp_path.iterdir())  # no version left aside
    once = np.array(fresh.features)
    add_group_stats(path, ["rain", "medium"])
    np.testing.assert_array_equal(open_store(path).features, once)  # idempotent


def test_composed_feature_sets_are_the_union_in_order(added):
    _, after = added
    view = after.select(feature_set="medium+group-stats+small")
    expected = list(dict.fromkeys(after.feature_sets["medium"] + after.feature_sets[GROUP_STATS]
                                  + after.feature_sets["small"]))
    assert view.feature_names == expected
    with pytest.raises(InputError, match="unknown feature set 'nope'.*join sets with"):
        after.select(feature_set="medium+nope")


@pytest.mark.parametrize("groups, message", [
    (["nope"], "'nope' is not a feature set of the store"),
    ([GROUP_STATS], "holds derived features"),
])
def test_bad_groups_are_refused(added, groups, message):
    with pytest.raises(InputError, match=message):
        plan_group_stats(added[1], groups)


def test_a_store_without_groups_or_with_a_clashing_raw_feature_is_refused_untouched(tmp_path):
    cols = tiny_frame(n_eras=3, rows=6, n_features=4)
    cols["feature_a_mean"] = cols.pop("feature_3")
    write_parquet(tmp_path / "t.parquet", cols)
    (tmp_path / "f.json").write_text(json.dumps({"feature_sets": {"a": ["feature_0", "feature_1", "feature_2"]}}))
    plain = ingest_files([tmp_path / "t.parquet"], tmp_path / "plain").store
    with pytest.raises(InputError, match="no feature-group sets .* --groups"):
        add_group_stats(plain)
    options = IngestOptions(features_json=tmp_path / "f.json")
    store = ingest_files([tmp_path / "t.parquet"], tmp_path / "s", options).store
    meta = (store / "meta.json").read_bytes()
    with pytest.raises(InputError, match="raw feature named feature_a_mean"):
        add_group_stats(store, ["a"])
    assert (store / "meta.json").read_bytes() == meta


def test_a_features_json_set_named_group_stats_is_never_replaced(base, tmp_path):
    path = copy_store(base, tmp_path / "store")
    meta = json.loads((path / "meta.json").read_text())
    meta["feature_sets"][GROUP_STATS] = meta["feature_sets"]["small"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="came from features.json"):
        add_group_stats(path)


def test_named_sets_are_saved_in_meta_without_touching_the_data(base, tmp_path):
    path = copy_store(base, tmp_path / "store")
    inode = os.stat(path / "features.i8").st_ino
    save_feature_set(path, "mine", ["feature_rain_0039", "feature_rain_0038"], {"made_by": "test", "keep": 2})
    save_feature_set(path, "mine", ["feature_rain_0037"], {"made_by": "test", "keep": 1})  # replaces its own
    store = open_store(path)
    assert store.feature_sets["mine"] == ["feature_rain_0037"]
    assert store.meta["made_sets"]["mine"]["keep"] == 1
    assert os.stat(path / "features.i8").st_ino == inode
    for name, features, message in [("medium", ["feature_rain_0037"], "came from features.json"),
                                    ("a+b", ["feature_rain_0037"], "no '\\+'"),
                                    ("x", ["feature_nope"], "unknown: \\['feature_nope'\\]"),
                                    ("x", [], "needs features")]:
        with pytest.raises(InputError, match=message):
            save_feature_set(path, name, features, {})
    assert open_store(path).feature_sets["medium"] == store.feature_sets["medium"]


def test_a_selected_set_using_dropped_statistics_is_dropped_with_them(base, tmp_path):
    path = copy_store(base, tmp_path / "store")
    add_group_stats(path)
    save_feature_set(path, "sel", ["feature_wisdom_mean", "feature_rain_0039"], {"made_by": "test"})
    save_feature_set(path, "raw", ["feature_rain_0039"], {"made_by": "test"})
    result = add_group_stats(path, ["rain"])
    store = open_store(path)
    assert result.dropped_sets == ["sel"] and "sel" not in store.feature_sets and "sel" not in store.meta["made_sets"]
    assert store.feature_sets["raw"] == ["feature_rain_0039"]


def test_a_features_json_set_using_dropped_statistics_is_reported_too(base, tmp_path):
    """Guards against new_meta dropping a set silently because eraflow did not make it."""
    path = copy_store(base, tmp_path / "store")
    add_group_stats(path)
    meta = json.loads((path / "meta.json").read_text())
    meta["feature_sets"]["mixed"] = ["feature_wisdom_mean", "feature_rain_0039"]
    (path / "meta.json").write_text(json.dumps(meta))
    assert add_group_stats(path, ["rain"]).dropped_sets == ["mixed"]
    assert "mixed" not in open_store(path).feature_sets


def test_an_add_without_the_disk_space_is_refused_before_writing(base, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import eraflow.engine.data.derived as derived

    path = copy_store(base, tmp_path / "store")
    meta = (path / "meta.json").read_bytes()
    store = open_store(path)
    need = store.n_rows * (len(store.feature_names) + 30)
    monkeypatch.setattr(derived.shutil, "disk_usage", lambda _: SimpleNamespace(free=need - 1))
    with pytest.raises(InputError, match=f"needs {need / 2**30:.2f} GiB for features.i8"):
        add_group_stats(path)
    assert (path / "meta.json").read_bytes() == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "store.lock"]


def test_era_blocks_hold_whole_eras_within_the_budget():
    offsets = np.array([0, 3, 5, 15, 16, 18, 20])
    blocks = era_blocks(offsets, np.array([0, 1, 2, 3, 5]), 5)
    assert [b.tolist() for b in blocks] == [[0, 1], [2], [3, 5]]  # era 2 (10 rows) alone; era 4 not asked
    assert era_blocks(offsets, np.array([], dtype=np.int64), 5) == []


def test_added_codes_do_not_depend_on_the_block_size(added, base, tmp_path, monkeypatch):
    """Guards against blocks cutting an era (codes are quantized per era): one era per block gives the same."""
    import eraflow.engine.data.derived as derived

    monkeypatch.setattr(derived, "BLOCK_BYTES", 1)
    path = copy_store(base, tmp_path / "store")
    add_group_stats(path)
    np.testing.assert_array_equal(np.asarray(open_store(path).features), np.asarray(added[1].features))


def test_derived_recipe_names_only_the_groups_a_model_uses(added):
    before, after = added
    assert derived_recipe(after, after.feature_sets["medium"]) is None
    assert derived_recipe(before, before.feature_names) is None
    recipe = derived_recipe(after, ["feature_rain_0039", "feature_rain_skew", "feature_wisdom_mean"])[GROUP_STATS]
    assert recipe["features"] == ["feature_rain_skew", "feature_wisdom_mean"]
    assert recipe["groups"] == {g: after.feature_sets[g] for g in ("wisdom", "rain")}


# -- models trained with the statistics: predict, live, export ---------------------------------------

@pytest.fixture(scope="module")
def model(added, tmp_path_factory):
    _, store = added
    out = tmp_path_factory.mktemp("gsmodel") / "model"
    train_models(store, out, TrainConfig(feature_set="medium+group-stats", params={**FAST, "n_estimators": 8}))
    meta = json.loads((out / "model.json").read_text())
    expected = derived_recipe(store, meta["features"])
    if "derived" not in meta:  # until train.py records it (the integrator adds the line)
        (out / "model.json").write_text(json.dumps({**meta, "derived": expected}))
    assert json.loads((out / "model.json").read_text())["derived"] == expected
    return load_model(out)


def test_predict_on_a_store_without_the_statistics_names_the_command(model, added, base, tmp_path):
    before, _ = added
    with pytest.raises(InputError, match=f"--add {GROUP_STATS} --groups "):
        predict_table(model, before)
    other = copy_store(base, tmp_path / "store")
    meta = json.loads((other / "meta.json").read_text())
    meta["feature_sets"]["rain"] = meta["feature_sets"]["rain"][:-1]
    (other / "meta.json").write_text(json.dumps(meta))
    add_group_stats(other)
    with pytest.raises(InputError, match="computed group 'rain' from other features"):
        predict_table(model, open_store(other))


def test_an_ensemble_of_members_with_other_derived_recipes_is_refused(model, tmp_path):
    """Guards against an ensemble keeping the first member's recipe for members whose statistics came from other
    raw features (their live predictions would read wrong codes)."""
    import shutil

    from eraflow.engine.models.ensemble import build_ensemble

    other = shutil.copytree(model.path, tmp_path / "other")
    meta = json.loads((other / "model.json").read_text())
    recipe = meta["derived"][GROUP_STATS]
    group = next(iter(recipe["groups"]))
    recipe["groups"][group] = recipe["groups"][group][:-1]
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="derived features are computed differently .*'derived'"):
        build_ensemble([model.path, other], tmp_path / "ens")
    assert not (tmp_path / "ens").exists()
    build_ensemble([model.path, shutil.copytree(model.path, tmp_path / "same")], tmp_path / "ok")
    assert load_model(tmp_path / "ok").meta["derived"] == model.meta["derived"]


def live_frame(base) -> pd.DataFrame:
    return pd.read_parquet(base / "live.parquet")


def oracle_live(model, base, tmp_path) -> np.ndarray:
    """Live predictions the long way: the whole live file ingested with features.json, statistics added
    by the store command, predicted, ranked per era."""
    store = ingest_files([base / "live.parquet"], tmp_path / "live", IngestOptions(
        features_json=base / "features.json", targets=())).store
    add_group_stats(store)
    preds = predict_table(model, open_store(store)).columns["pred_target"]
    return (rankdata(preds) - 0.5) / len(preds)


def test_live_computes_the_statistics_for_the_live_era(model, base, tmp_path):
    got = live_predictions(model, base / "live.parquet")
    assert list(got.id) == list(live_frame(base).id)
    np.testing.assert_allclose(got.prediction, oracle_live(model, base, tmp_path), atol=1e-12)


EXPORTED_RUN = """
import sys, cloudpickle, pandas as pd
sys.modules["eraflow"] = None  # the exported function must not need eraflow
predict = cloudpickle.loads(open(sys.argv[1], "rb").read())
live = pd.read_parquet(sys.argv[2])
features = sys.argv[4].split(",")
predict(live[["id", "era", *features]].set_index("id"), None).reset_index(names="id").to_parquet(sys.argv[3])
"""


def test_export_computes_the_statistics_in_the_runtime_without_eraflow(model, base, tmp_path):
    export_model(model, tmp_path / "m.pkl")
    raw = [f for f in live_frame(base).columns if f.startswith("feature_")]  # no derived column in live data
    subprocess.run([sys.executable, "-c", EXPORTED_RUN, tmp_path / "m.pkl", base / "live.parquet",
                    tmp_path / "out.parquet", ",".join(raw)], check=True, cwd=tmp_path)
    exported = pd.read_parquet(tmp_path / "out.parquet")
    assert list(exported.id) == list(live_frame(base).id)
    np.testing.assert_allclose(exported.prediction, oracle_live(model, base, tmp_path), atol=1e-9)


def test_neutralizing_against_derived_features_computes_them_in_live_and_export(added, base, tmp_path):
    """Guards against live and the exported predictor reading derived neutralization features (the model itself
    uses none) from live data, which has no such column: the post-processing keeps their recipe."""
    _, store = added
    out = tmp_path / "m"
    train_models(store, out, TrainConfig(feature_set="medium", params={**FAST, "n_estimators": 8}))
    against = tuple(store.feature_sets[GROUP_STATS][:6])
    set_postprocess(out, Postprocess("pred_target", 0.5, against))
    model = load_model(out)
    assert "derived" not in model.meta or model.meta["derived"] is None
    assert model.meta["postprocess"]["derived"] == derived_recipe(store, against)
    assert override_postprocess(model, features=against).derived == derived_recipe(store, against)  # live --feature-set
    live = ingest_files([base / "live.parquet"], tmp_path / "live", IngestOptions(
        features_json=base / "features.json", targets=())).store
    add_group_stats(live)
    neutral = predict_submitted(model, open_store(live)).columns[SUBMITTED]
    want = (rankdata(neutral) - 0.5) / len(neutral)
    got = live_predictions(model, base / "live.parquet")
    np.testing.assert_allclose(got.prediction, want, atol=1e-12)
    export_model(model, tmp_path / "m.pkl")
    raw = [f for f in live_frame(base).columns if f.startswith("feature_")]
    subprocess.run([sys.executable, "-c", EXPORTED_RUN, tmp_path / "m.pkl", base / "live.parquet",
                    tmp_path / "out.parquet", ",".join(raw)], check=True, cwd=tmp_path)
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "out.parquet").prediction, want, atol=1e-9)


def test_a_model_trained_before_the_add_predicts_the_same_and_still_finds_its_store(base, tmp_path):
    """Guards against appended columns shifting a model's feature columns, and against the new fingerprint
    hiding the model's store (feature sets for live's --feature-set come from it)."""
    path = copy_store(base, tmp_path / "store")
    config = TrainConfig(feature_set="medium", params={**FAST, "n_estimators": 8})
    train_models(open_store(path), tmp_path / "m", config)
    model = load_model(tmp_path / "m")
    before = predict_table(model, open_store(path)).columns["pred_target"]
    add_group_stats(path)
    np.testing.assert_array_equal(predict_table(model, open_store(path)).columns["pred_target"], before)
    assert model_store(model).fingerprint == open_store(path).fingerprint
    assert feature_set_names(model, "small+rain", None) == tuple(
        dict.fromkeys(open_store(path).feature_sets["small"] + open_store(path).feature_sets["rain"]))
    with pytest.raises(InputError, match="unknown feature set 'nope' in the model's store"):
        feature_set_names(model, "small+nope", None)


def test_an_add_that_fails_midway_leaves_the_store_as_it_was(base, tmp_path, monkeypatch):
    import eraflow.engine.data.derived as derived

    path = copy_store(base, tmp_path / "store")
    meta = (path / "meta.json").read_bytes()

    def fail(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(derived, "group_stat_codes", fail)
    with pytest.raises(KeyboardInterrupt):
        add_group_stats(path)
    assert (path / "meta.json").read_bytes() == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "store.lock"]  # nothing left aside
    open_store(path).close()


def test_a_store_being_written_by_another_process_is_refused(base, tmp_path):
    from eraflow.engine.errors import LockedError
    from eraflow.engine.lock import exclusive_lock

    path = copy_store(base, tmp_path / "store")
    with exclusive_lock(path), pytest.raises(LockedError, match="being written by another process"):
        add_group_stats(path)
    with exclusive_lock(path), pytest.raises(LockedError):
        save_feature_set(path, "mine", ["feature_rain_0039"], {})


@pytest.mark.parametrize("change, message", [
    (lambda m: m["derived"][GROUP_STATS].pop("groups"), "key 'derived' must be"),
    (lambda m: m["derived"][GROUP_STATS]["features"].append("feature_x_mean"), "key 'derived' lists unknown features"),
    (lambda m: m.update(made_sets=[]), "key 'made_sets' must be"),
])
def test_a_malformed_recipe_in_meta_json_is_damage_not_a_traceback(base, tmp_path, change, message):
    from eraflow.engine.errors import StoreError

    path = copy_store(base, tmp_path / "store")
    add_group_stats(path)
    meta = json.loads((path / "meta.json").read_text())
    change(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=f"is damaged: meta.json {message}"):
        open_store(path)
