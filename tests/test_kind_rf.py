"""Kind ``rf``: a LightGBM random forest trained from the store's cached Dataset.

It is a forest (each prediction is the mean of its trees' leaves), the same forest LightGBM grows
from the float array of the training rows, it never stops early, it shares the lgbm kind's
cached Dataset, and its settings are checked before any work.
"""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import InputError, SynthSpec
from eraflow.engine.data.store import era_rows, int8_to_float32
from eraflow.engine.models import lgb_data
from eraflow.engine.models.kind import get_kind
from eraflow.engine.models.predict import load_model, predict_model
from eraflow.engine.models.train import TrainConfig, train_models

from .conftest import synthetic_store
from .test_train import FAST

TREES = 24
SMALL_FOREST = {"n_estimators": TREES, "min_data_in_leaf": 20, "num_leaves": 15, "num_threads": 2,
                "deterministic": True, "force_col_wise": True}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("rf"),
                           SynthSpec(eras=16, rows_per_era=100, features=20, validation_eras=4, seed=3))


@pytest.fixture(scope="module")
def forest(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("rf_model") / "m"
    train_models(store, out, TrainConfig(kind="rf", params=SMALL_FOREST))
    return load_model(out)


def _rows(store, era_index):
    """Float features (NaN missing) and target of the rows of ``era_index``."""
    rows = era_rows(store.offsets, era_index)
    return int8_to_float32(store.features[rows]), store.targets[rows, store.target_names.index("target")]


def test_predictions_are_the_mean_of_the_trees_leaves(forest, store):
    booster = forest.fitted["target"].booster
    x, _ = _rows(store, np.arange(store.n_eras))
    leaves = booster.predict(x, pred_leaf=True)  # rows × trees: the leaf each row falls in
    leaf_values = np.array([[booster.get_leaf_output(t, leaf) for t, leaf in enumerate(row)] for row in leaves])
    assert leaves.shape[1] == TREES
    got = predict_model(forest, store)["pred_target"]
    np.testing.assert_allclose(got, leaf_values.mean(axis=1), rtol=1e-12, err_msg="forest = mean of its trees")
    assert np.ptp(leaf_values, axis=1).max() > 0, "the trees differ (bagged rows, sampled features)"


def test_contributions_add_up_to_the_prediction(forest, store):
    """SHAP values of the mean of the trees (LightGBM's own pred_contrib sums them over an rf model's trees)."""
    fitted = forest.fitted["target"]
    codes = np.asarray(store.features[:300])
    bias = fitted.booster.predict(int8_to_float32(codes), pred_contrib=True)[:, -1] / TREES
    np.testing.assert_allclose(fitted.contributions(codes).sum(axis=1) + bias,
                               fitted.predict(codes, np.array([0, 300])), rtol=1e-9, atol=1e-12)


def test_forest_equals_lightgbm_trained_on_the_float_rows(forest, store):
    train = np.array([store.eras.index(e) for e in forest.meta["train_eras"]["target"]])
    x, y = _rows(store, train)
    settings = dict(forest.meta["params"])
    settings.pop("n_estimators")
    oracle = lgb.train({**settings, "device_type": "cpu", "seed": 0},
                       lgb.Dataset(x, np.nan_to_num(y, nan=0.5), weight=np.isfinite(y).astype(float)), TREES)
    everything, _ = _rows(store, np.arange(store.n_eras))
    np.testing.assert_allclose(predict_model(forest, store)["pred_target"], oracle.predict(everything), rtol=1e-12)


def test_it_grows_every_tree_and_still_scores_held_out_eras(store, tmp_path):
    params = tmp_path / "rf.toml"
    params.write_text("n_estimators = 30\nmin_data_in_leaf = 20\nnum_threads = 2\n")
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), "--model", "rf",
                                      "--params", str(params), "--cv", "2", "--embargo", "1", "--valid-eras", "0010:", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert report["kind"] == meta["kind"] == "rf" and meta["params"]["boosting"] == "rf"
    assert report["rounds"] == meta["rounds"] == {"target": 30}, "no early stopping"
    assert [f["best_round"] for f in meta["cv"]["target"]["folds"]] == [30, 30]
    assert lgb.Booster(model_file=str(tmp_path / "m" / "model_target.txt")).num_trees() == 30
    assert meta["valid"]["target"]["eras"] > 0 and report["cv"]["target"]["eras"] > 0, "held-out eras are scored"
    assert meta["stopping_eras"]["target"] == [] and "optimistic" not in result.stderr, "no eras chose the rounds"
    assert (tmp_path / "m" / "oof.parquet").exists()


def test_it_reads_the_lgbm_kinds_cached_dataset(store, tmp_path, monkeypatch):
    train_models(store, tmp_path / "lgbm", TrainConfig(params={**FAST, "n_estimators": 5}))
    reads = []
    monkeypatch.setattr(lgb_data.StoreRows, "__getitem__", lambda *a: reads.append(a))
    train_models(store, tmp_path / "rf", TrainConfig(kind="rf", params=SMALL_FOREST))
    assert reads == [], "the forest trains from the binary the lgbm kind cached, not from the store"


def test_settings_take_lightgbms_aliases():
    settings = get_kind("rf").check_settings({"subsample": 0.5, "boosting_type": "random_forest", "num_trees": 7})
    assert settings["bagging_fraction"] == 0.5 and settings["boosting"] == "rf" and settings["n_estimators"] == 7
    assert "subsample" not in settings and "num_trees" not in settings


@pytest.mark.parametrize("toml, message", [
    ('boosting = "gbdt"', "grows a random forest (boosting 'rf'), got boosting 'gbdt'"),
    ("nope = 1", "takes no parameter 'nope'"),
    ("bagging_fraction = 1.0", "needs random trees"),
    ("subsample = 0.5\nbagging_fraction = 0.5", "'bagging_fraction' twice"),
    ("num_leaves = 1", "LightGBM refused the parameters"),
])
def test_bad_settings_are_one_line_errors(store, tmp_path, toml, message):
    params = tmp_path / "rf.toml"
    params.write_text(toml + "\n")
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), "--model", "rf",
                                      "--params", str(params)])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "m").exists()


def test_no_settings_are_the_defaults():
    settings = get_kind("rf").check_settings(None)
    assert settings["boosting"] == "rf" and settings["n_estimators"] == 200 and 0 < settings["bagging_fraction"] < 1
    with pytest.raises(InputError, match="'blocks'"):
        get_kind("rf").check_settings({"blocks": 3})
