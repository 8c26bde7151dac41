"""LightGBM training from a store: validity on a planted signal, caching, model directory, errors."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy.stats import rankdata

from eraflow.cli import cli
from eraflow.engine import InputError, SynthSpec, ingest_files, open_store, write_synthetic
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.evaluation.scoring import score_aligned
from eraflow.engine.models import lgb_data
from eraflow.engine.models.params import load_params
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, train_models

from .conftest import synthetic_store

FAST = {**load_params("starter"), "n_estimators": 60, "learning_rate": 0.1, "colsample_bytree": 0.5,
        "deterministic": True, "force_col_wise": True, "num_threads": 2}
# Additive signal: stumps learn it with few rows; deterministic for a fixed seed on any machine.
ADDITIVE = {**FAST, "n_estimators": 1000, "learning_rate": 0.02, "max_depth": 2, "num_leaves": 4}


def _scores(store, path, eras):
    scores = score_aligned(store, align_predictions(store, path, min_coverage=0.0), "target")
    keep = np.isin(scores.eras, eras)
    return scores.corr[keep]


def test_model_learns_the_planted_signal_and_cv_predicts_held_out(tmp_path):
    write_synthetic(tmp_path, SynthSpec(eras=200, rows_per_era=1200, features=48, validation_eras=50, seed=1))
    store = open_store(ingest_files([tmp_path / "train.parquet", tmp_path / "validation.parquet"],
                                    tmp_path / "store").store)
    result = train_models(store, tmp_path / "model", TrainConfig(params=ADDITIVE, cv=3, train_eras="0001:0150"))
    table = predict_table(load_model(tmp_path / "model"), store, "0151:")
    preds = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"id": table.ids, "pred": table.columns["pred_target"]}), preds)
    held_out = [e for e in store.eras if e >= "0151"]
    model_corr = _scores(store, preds, held_out)[:, 0]
    oracle_corr = _scores(store, tmp_path / "oracle.parquet", held_out)[:, 0]
    ratio = np.nanmean(model_corr) / np.nanmean(oracle_corr)
    assert ratio >= 0.7, f"model reaches {ratio:.0%} of the oracle's per-era corr"
    cv_mean = result.cv["target"]["overall"]["mean"]
    se = np.nanstd(model_corr) / np.sqrt(np.isfinite(model_corr).sum())
    assert abs(cv_mean - np.nanmean(model_corr)) <= 2 * se, (cv_mean, np.nanmean(model_corr), se)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("train"),
                           SynthSpec(eras=40, rows_per_era=150, features=20, validation_eras=10, seed=4))


def test_model_directory_holds_models_meta_and_oof(store, tmp_path):
    config = TrainConfig(targets=("target", "target_*_20"), params=FAST, cv=2, valid_eras="0035:")
    result = train_models(store, tmp_path / "m", config, command="eraflow train …")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["targets"] == ["target", "target_cyrus_20"] == result.targets
    assert meta["aliases"] == {"target_ender_20": "target"}, "target is target_ender_20 in synthetic data"
    assert meta["features"] == store.feature_names and meta["store_fingerprint"] == store.fingerprint
    assert set(meta["cv"]["target"]) == {"folds", "overall", "per_era"} and len(meta["cv"]["target"]["folds"]) == 2
    assert len(meta["cv"]["target"]["per_era"]) == meta["cv"]["target"]["overall"]["eras"]
    assert meta["valid"]["target"]["eras"] == 2, "0035..0040 minus the 4 unlabeled eras"
    for t in meta["targets"]:
        booster = lgb.Booster(model_file=str(tmp_path / "m" / f"model_{t}.txt"))
        assert booster.num_trees() == meta["rounds"][t]
    oof = pq.read_table(tmp_path / "m" / "oof.parquet").to_pandas()
    assert list(oof.columns) == ["id", "era", "pred_target", "pred_target_ender_20", "pred_target_cyrus_20",
                                 "ensemble"]
    fold_eras = {e for f in meta["cv"]["target"]["folds"] for e in f["test_eras"]}
    assert set(oof.era) >= fold_eras and oof.era.max() < "0035", "no out-of-fold prediction of validation eras"
    by_era = oof.groupby("era")
    expected = by_era[["pred_target", "pred_target_cyrus_20"]].transform(
        lambda c: (rankdata(c) - 0.5) / len(c)).mean(axis=1)
    np.testing.assert_allclose(oof.ensemble, expected, atol=1e-6, err_msg="ensemble is the per-era rank mean")


def test_training_set_is_cached_and_reloaded(store, tmp_path, monkeypatch):
    config = TrainConfig(params=FAST)
    train_models(store, tmp_path / "a", config)
    cached = list((store.path / "cache").glob("lgb-*.bin"))
    assert cached, "training set saved as a LightGBM binary next to the store"
    calls = []
    monkeypatch.setattr(lgb_data.StoreRows, "__getitem__", lambda *a: calls.append(a))
    train_models(store, tmp_path / "b", config)
    assert calls == [], "second run reloads the binary instead of reading the store"
    a = lgb.Booster(model_file=str(tmp_path / "a" / "model_target.txt")).model_to_string()
    b = lgb.Booster(model_file=str(tmp_path / "b" / "model_target.txt")).model_to_string()
    assert a.split("parameters:")[0] == b.split("parameters:")[0], "same trees from the cached set"


def test_store_rows_sequence_matches_the_store(store):
    fh = open(store.path / "features.i8", "rb")
    seq = lgb_data.StoreRows(fh.fileno(), len(store.feature_names), 10, 60, np.array([3, 1]))
    assert len(seq) == 50
    np.testing.assert_array_equal(seq[5:8], store.features[15:18][:, [3, 1]].astype(np.float32))
    row = seq[7]
    assert row.dtype == np.float64 and row.tolist() == store.features[17, [3, 1]].tolist()
    fh.close()


def test_predict_cli_neutralizes_and_writes_every_row(store, tmp_path):
    train_models(store, tmp_path / "m", TrainConfig(params=FAST))
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "m"), str(store.path), "-o", str(out),
                                      "--neutralize", "1", "--feature-set", "small"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pandas()
    assert list(table.id) == list(store.ids) and list(table.columns) == ["id", "era", "pred_target"]
    cols = [store.feature_names.index(f) for f in store.feature_sets["small"]]
    rows = slice(store.offsets[3], store.offsets[4])
    f1 = np.column_stack([store.features[rows][:, cols], np.ones(rows.stop - rows.start)]).astype(float)
    np.testing.assert_allclose(f1.T @ table.pred_target.to_numpy()[rows], 0, atol=1e-3)


def test_estimator_fits_arrays_and_stores(store):
    from sklearn.base import clone

    from eraflow.engine.models.estimator import EraLGBMRegressor

    est = EraLGBMRegressor(n_estimators=20, learning_rate=0.1, num_leaves=7)
    assert clone(est).get_params()["n_estimators"] == 20
    X = store.features[:2000].astype(np.float32)
    y = np.nan_to_num(store.targets[:2000, 0], nan=0.5)
    eras = np.repeat(store.eras, np.diff(store.offsets))[:2000]
    assert est.fit(X, y, eras=eras).predict(X[:5]).shape == (5,)
    est.fit(store)
    np.testing.assert_allclose(est.predict(store.features[:5]), est.predict(store.features[:5].astype(np.float32)))


@pytest.mark.parametrize("argv,message", [
    (["--target", "target_nope"], "no store target matches"),
    (["--params", "nope"], "neither a preset"),
    (["--cv", "50"], "cannot make 50 expanding folds"),
    (["--device", "cuda"], "needs LightGBM built with CUDA"),
    (["--features", "feature_x"], "unknown features"),
])
def test_bad_train_options_are_one_line_errors(store, tmp_path, argv, message):
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), *argv])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "m").exists()


def test_model_needs_the_features_it_was_trained_on(store, tmp_path):
    train_models(store, tmp_path / "m", TrainConfig(params=FAST))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["features"][0] = "feature_gone"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="lacks 1 of the model's features"):
        predict_table(load_model(tmp_path / "m"), store)
