"""Era boosting (lgbm, xgb): against the same procedure written with plain LightGBM / XGBoost on float arrays,
leak-free (only training eras are read), rounds through CV, and the model files unchanged in form."""

from __future__ import annotations

import json
import math

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import ndtri
from scipy.stats import rankdata

from eraflow.engine import IngestOptions, InputError, ingest_files, open_store
from eraflow.engine.data.store import int8_to_float32, row_runs
from eraflow.engine.models import era_boost
from eraflow.engine.models import lgbm as lgbm_kind
from eraflow.engine.models import xgb as xgb_kind
from eraflow.engine.models.kind import FitData, get_kind
from eraflow.engine.models.params import BASE
from eraflow.engine.models.predict import load_model, predict_model
from eraflow.engine.models.train import TrainConfig, train_models

from .conftest import write_parquet

N_ERAS, ROWS, N_FEATURES = 24, 80, 8
TRAIN = np.arange(12)  # eras 0001..0012 (store indices)
LGB = {**BASE, "n_estimators": 12, "learning_rate": 0.1, "num_leaves": 6, "min_data_in_leaf": 20, "num_threads": 1}
XGB = {"n_estimators": 12, "learning_rate": 0.1, "max_depth": 2, "colsample_bytree": 1.0, "nthread": 1}
BOOST = {"era_boost_steps": 3, "era_boost_proportion": 0.4, "era_boost_trees": 4}
KINDS = {"lgbm": (lgbm_kind.KIND, LGB), "xgb": (xgb_kind.KIND, XGB)}


def regime_rows(seed: int, eras: int = N_ERAS) -> dict:
    """Codes 0..4 (3% missing); the target is per-era quintiles of feature 0 in even eras and of feature 1 in
    odd ones, plus noise (4% missing): a model of the first fit serves one regime worse, which era boosting
    can find."""
    rng = np.random.default_rng(seed)
    n = eras * ROWS
    x = rng.integers(0, 5, (n, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan
    era = np.repeat(np.arange(eras), ROWS)
    driver = np.where(era % 2 == 0, np.nan_to_num(x[:, 0], nan=2), np.nan_to_num(x[:, 1], nan=2) * 0.6)
    signal = driver + rng.normal(0, 1.5, n)
    quintile = np.argsort(np.argsort(signal.reshape(eras, ROWS), axis=1), axis=1) * 5 // ROWS
    y = (quintile.ravel() / 4).astype(np.float32)
    y[rng.random(n) < 0.04] = np.nan
    cols = {"id": [f"id{i:06d}" for i in range(n)], "era": [f"{1 + i // ROWS:04d}" for i in range(n)]}
    cols.update({f"feature_{j}": pa.array(x[:, j], mask=np.isnan(x[:, j])) for j in range(N_FEATURES)})
    cols["target"] = pa.array(y, mask=np.isnan(y))
    return cols


def make_store(out, cols: dict):
    src = write_parquet(out / "train.parquet", cols)
    return open_store(ingest_files([src], out / "store", IngestOptions()).store)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("boost"), regime_rows(5))


def rows_of(store, eras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float features (NaN missing) and target (NaN kept) of the rows of ``eras``, in store order."""
    runs = row_runs(store.offsets, eras)
    x = int8_to_float32(np.concatenate([np.asarray(store.features[lo:hi]) for lo, hi in runs]))
    return x, np.concatenate([store.targets[lo:hi, 0] for lo, hi in runs]).astype(np.float64)


def era_corr(pred: np.ndarray, target: np.ndarray) -> float:
    """numerai_corr of one era, written out: the target centred over its present values; on the rows with a
    target, Gaussianized average ranks of the predictions and the centred target, each to the power 1.5 with
    its sign; their Pearson correlation."""
    kept = np.isfinite(target)
    p = ndtri((rankdata(pred[kept]) - 0.5) / kept.sum())
    t = target[kept] - target[kept].mean()
    return float(np.corrcoef(np.sign(p) * np.abs(p) ** 1.5, np.sign(t) * np.abs(t) ** 1.5)[0, 1])


def worst_rows(pred: np.ndarray, target: np.ndarray, proportion: float) -> np.ndarray:
    """Rows of the ⌈proportion·n⌉ eras (of ROWS rows each) of lowest corr."""
    corr = np.array([era_corr(pred[e * ROWS:(e + 1) * ROWS], target[e * ROWS:(e + 1) * ROWS])
                     for e in range(len(pred) // ROWS)])
    worst = np.sort(np.argsort(corr, kind="stable")[:math.ceil(proportion * len(corr))])
    return np.concatenate([np.arange(e * ROWS, (e + 1) * ROWS) for e in worst])


def labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.nan_to_num(y, nan=0.5), np.isfinite(y).astype(np.float64)


def lightgbm_oracle(x, y, params: dict, rounds: int, boost: dict) -> lgb.Booster:
    """Era boosting with plain LightGBM on a float array, as a user would write it: each step a new booster
    continuing the last (``init_model``) on a Dataset of the worst eras' rows."""
    label, weight = labels(y)
    booster = lgb.train(params, lgb.Dataset(x, label, weight=weight, params=params), rounds)
    for _ in range(boost["era_boost_steps"]):
        rows = worst_rows(booster.predict(x), y, boost["era_boost_proportion"])
        booster = lgb.train(params, lgb.Dataset(x[rows], label[rows], weight=weight[rows], params=params),
                            boost["era_boost_trees"], init_model=booster)
    return booster


def xgboost_oracle(x, y, params: dict, rounds: int, boost: dict) -> xgb.Booster:
    """Era boosting with plain XGBoost on a float array (numerblox's loop): each step continues the booster
    (``xgb_model``) on a QuantileDMatrix of the worst eras' rows, binned with the full matrix's cuts."""
    label, weight = labels(y)
    full = xgb.QuantileDMatrix(x, label, weight=weight, max_bin=8, nthread=1)
    booster = xgb.train(params, full, rounds)
    for _ in range(boost["era_boost_steps"]):
        rows = worst_rows(booster.inplace_predict(x), y, boost["era_boost_proportion"])
        part = xgb.QuantileDMatrix(x[rows], label[rows], weight=weight[rows], ref=full, max_bin=8, nthread=1)
        booster = xgb.train(params, part, boost["era_boost_trees"], xgb_model=booster)
    return booster


def fit(kind: str, store, params: dict, stop_eras=None, rounds=None, eras=TRAIN):
    k, base = KINDS[kind]
    data = FitData(store, eras, np.arange(N_FEATURES), "target", stop_eras, early_stopping=3)
    return k.fit(data, k.check_settings({**base, **params}), rounds, None)


def all_codes(store) -> np.ndarray:
    return np.asarray(store.features)


def test_lgbm_equals_plain_lightgbm_continuing_on_the_worst_eras(store):
    """Guards against boosting on the wrong rows (an offset slip), on the best eras, or with the first
    fit's trees dropped: the oracle picks eras by its own corr and fits with LightGBM's own init_model."""
    model = fit("lgbm", store, BOOST)
    x, y = rows_of(store, TRAIN)
    params = lgbm_kind.KIND.train_params(FitData(store, TRAIN, np.arange(N_FEATURES), "target"),
                                         lgbm_kind.KIND.check_settings({**LGB, **BOOST}))
    oracle = lightgbm_oracle(x, y, params, LGB["n_estimators"], BOOST)
    assert model.rounds == oracle.current_iteration() == 12 + 3 * 4
    everything = all_codes(store)
    assert_allclose(model.predict(everything, None), oracle.predict(int8_to_float32(everything)), rtol=1e-12)
    again = fit("lgbm", store, BOOST)  # from the Dataset cached by the first fit (a subset of a binary file)
    assert_array_equal(again.predict(everything, None), model.predict(everything, None))


def test_lgbm_with_feature_sampling_equals_plain_lightgbm_updating_one_booster(store):
    """With feature_fraction and bagging the trees depend on the booster's random state: the oracle continues
    one booster (``update`` on a float Dataset of the worst eras' rows binned with the full Dataset's bins),
    as the kind does on a subset of its cached binned Dataset."""
    sampled = {"feature_fraction": 0.5, "bagging_fraction": 0.7, "bagging_freq": 1}
    model = fit("lgbm", store, {**BOOST, **sampled})
    x, y = rows_of(store, TRAIN)
    label, weight = labels(y)
    params = lgbm_kind.KIND.train_params(FitData(store, TRAIN, np.arange(N_FEATURES), "target"),
                                         lgbm_kind.KIND.check_settings({**LGB, **BOOST, **sampled}))
    full = lgb.Dataset(x, label, weight=weight, params=params, free_raw_data=False)
    booster = lgb.train(params, full, LGB["n_estimators"], keep_training_booster=True)
    parts = []  # kept alive: LightGBM reads the previous training data when it resets to the next
    for _ in range(BOOST["era_boost_steps"]):
        rows = worst_rows(booster.predict(x), y, BOOST["era_boost_proportion"])
        parts.append(lgb.Dataset(x[rows], label[rows], weight=weight[rows], reference=full, params=params))
        for _ in range(BOOST["era_boost_trees"]):
            booster.update(train_set=parts[-1])
    everything = all_codes(store)
    assert_allclose(model.predict(everything, None), booster.predict(int8_to_float32(everything)), rtol=1e-12)


def test_xgb_equals_plain_xgboost_continuing_on_the_worst_eras(store):
    model = fit("xgb", store, {**BOOST, "colsample_bytree": 0.6, "subsample": 0.8})
    x, y = rows_of(store, TRAIN)
    settings = xgb_kind.check_settings({**XGB, **BOOST, "colsample_bytree": 0.6, "subsample": 0.8})
    oracle = xgboost_oracle(x, y, xgb_kind.train_params(settings), XGB["n_estimators"], BOOST)
    assert model.rounds == oracle.num_boosted_rounds() == 12 + 3 * 4
    everything = all_codes(store)
    assert_allclose(model.predict(everything, None), oracle.inplace_predict(int8_to_float32(everything)),
                    rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_a_step_raises_the_corr_of_the_eras_it_chose_more_than_of_the_others(store, kind):
    """Era boosting that fit its trees on all rows, the wrong rows or none would not favour the chosen eras."""
    model = fit(kind, store, {**BOOST, "era_boost_steps": 1, "era_boost_trees": 10})
    step = model.describe()["era_boost"]["per_step"][0]
    chosen = np.array([store.eras[k] in step["worst_eras"] for k in TRAIN])
    assert chosen.sum() == math.ceil(0.4 * len(TRAIN))
    x, y = rows_of(store, TRAIN)
    before = fit(kind, store, {}).predict(all_codes(store)[:len(x)], None)
    after = model.predict(all_codes(store)[:len(x)], None)
    gain = np.array([era_corr(after[e * ROWS:(e + 1) * ROWS], y[e * ROWS:(e + 1) * ROWS])
                     - era_corr(before[e * ROWS:(e + 1) * ROWS], y[e * ROWS:(e + 1) * ROWS]) for e in TRAIN])
    assert gain[chosen].mean() > 0 and gain[chosen].mean() > gain[~chosen].mean() + 0.01, gain


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_boosting_never_reads_eras_outside_its_training_eras(store, tmp_path, kind):
    """The leak a fold's boosting could have: reading or scoring rows of other eras (the fold's test eras).
    A second store whose every other era has other features and targets must give the same model."""
    cols = regime_rows(5)
    other = regime_rows(99)
    outside = np.array([e not in {f"{k + 1:04d}" for k in TRAIN} for e in cols["era"]])
    for name in [c for c in cols if c.startswith(("feature_", "target"))]:
        mixed = np.where(outside, other[name].to_numpy(zero_copy_only=False), cols[name].to_numpy(zero_copy_only=False))
        cols[name] = pa.array(mixed, mask=np.isnan(mixed))
    poisoned = make_store(tmp_path, cols)
    assert not np.array_equal(np.asarray(poisoned.features), np.asarray(store.features))
    ours, theirs = fit(kind, store, BOOST), fit(kind, poisoned, BOOST)
    everything = all_codes(store)
    assert_array_equal(ours.predict(everything, None), theirs.predict(everything, None))
    assert ours.describe() == theirs.describe()


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_early_stopping_chooses_only_the_first_fit_and_boosting_stays_on_training_eras(store, kind):
    """Stopping eras (a fold's test eras) cut the first fit back to its best round; the boosting trees are
    then added in full and only training eras are ever chosen."""
    stop = np.arange(15, 20)
    plain = fit(kind, store, {"n_estimators": 200, "learning_rate": 0.3}, stop_eras=stop)
    boosted = fit(kind, store, {**BOOST, "n_estimators": 200, "learning_rate": 0.3}, stop_eras=stop)
    assert plain.rounds < 200
    info = boosted.describe()["era_boost"]
    assert info["first_rounds"] == plain.rounds and boosted.rounds == plain.rounds + 3 * 4
    if kind == "lgbm":  # no stale best round of the first fit: a booster predicting by default uses every tree
        assert boosted.booster.best_iteration == boosted.rounds == boosted.booster.current_iteration()
    train_labels = {store.eras[k] for k in TRAIN}
    assert all(set(s["worst_eras"]) <= train_labels for s in info["per_step"])


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_given_rounds_count_the_boosting_trees(store, kind):
    """The trainer gives the final fit the folds' median rounds, boosting trees included: the first fit
    must get them less the boosting trees, or every CV round would add 12 trees more."""
    model = fit(kind, store, BOOST, rounds=20)
    assert model.rounds == 20 and model.describe()["era_boost"]["first_rounds"] == 20 - 12
    k, base = KINDS[kind]
    assert k.max_rounds(k.check_settings({**base, **BOOST})) == 12 + 12
    assert k.max_rounds(k.check_settings(base)) == 12


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_steps_zero_is_the_plain_model(store, kind):
    plain, off = fit(kind, store, {}), fit(kind, store, {**BOOST, "era_boost_steps": 0})
    everything = all_codes(store)
    assert_array_equal(off.predict(everything, None), plain.predict(everything, None))
    assert off.describe() == {} and off.rounds == 12


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_train_with_cv_saves_one_booster_that_loads_and_exports_as_fitted(store, tmp_path, kind):
    _, base = KINDS[kind]
    out = tmp_path / "model"
    config = TrainConfig(kind=kind, params={**base, **BOOST, "n_estimators": 60, "learning_rate": 0.3}, cv=2,
                         embargo=1, train_eras="0001:0016", early_stopping_rounds=3)
    statuses = []
    result = train_models(store, out, config, status=statuses.append)
    assert statuses[-1].done == statuses[-1].total, "the progress bar ends full: boosting trees are counted"
    final = [s for s in statuses if s.model == "final" and s.event == "round"]
    assert [s.round for s in final] == list(range(1, result.rounds["target"] + 1))
    meta = json.loads((out / "model.json").read_text())
    folds = [f["best_round"] for f in meta["cv"]["target"]["folds"]]
    assert all(f > 12 for f in folds), "each fold's rounds hold its boosting trees"
    assert result.rounds["target"] == int(np.median(folds))
    info = meta["fitted"]["target"]["era_boost"]
    assert info["first_rounds"] == result.rounds["target"] - 12 and len(info["per_step"]) == 3
    assert meta["params"]["era_boost_steps"] == 3
    model = load_model(out)
    loaded = model.fitted["target"]
    assert loaded.rounds == result.rounds["target"]
    everything = all_codes(store)
    preds = predict_model(model, store)["pred_target"]
    assert_array_equal(loaded.predict(everything, None), preds)
    codes = int8_to_float32(everything).astype(np.float64)
    assert_allclose(loaded.portable().predict(codes, np.zeros(len(codes))), preds, rtol=1e-6, atol=1e-7)


def test_first_fit_rounds_subtract_the_boosting_trees_only_when_rounds_are_given():
    boost = era_boost.EraBoost(steps=3, proportion=0.5, trees=4)
    assert era_boost.first_fit_rounds(boost, 50, None) == 50
    assert era_boost.first_fit_rounds(boost, 50, 20) == 8
    assert era_boost.first_fit_rounds(boost, 50, 5) == 1
    assert era_boost.first_fit_rounds(None, 50, 20) == 20


def test_train_command_takes_era_boost_and_records_it(store, tmp_path):
    """The --era-boost option reaches the kind's settings (model.json params) and the fit (its era_boost entry)."""
    from click.testing import CliRunner

    from eraflow.cli import cli

    (tmp_path / "p.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in LGB.items()))
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), "--params",
                                      str(tmp_path / "p.toml"), "--era-boost", "proportion=0.5,steps=2", "-q"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["params"]["era_boost_steps"] == 2 and meta["params"]["era_boost_proportion"] == 0.5
    info = meta["fitted"]["target"]["era_boost"]
    assert info["steps"] == 2 and info["proportion"] == 0.5 and len(info["per_step"]) == 2
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "bad"), "--era-boost", "steps=x"])
    assert result.exit_code == 2 and "--era-boost steps='x' is not a whole number" in result.stderr


def test_xgb_external_memory_boosts_the_same_trees(store, tmp_path, monkeypatch):
    """The worst eras' matrices get cache files of their own (a name clash would overwrite the training
    matrix's pages); the directory is removed after training."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    in_memory = fit("xgb", store, {**BOOST, "external_memory": False})
    external = fit("xgb", store, {**BOOST, "external_memory": True})
    everything = all_codes(store)
    assert_array_equal(external.predict(everything, None), in_memory.predict(everything, None))
    assert list(tmp_path.iterdir()) == []


def test_parse_era_boost_reads_the_option():
    assert era_boost.parse_era_boost("proportion=0.5,steps=10") == {"era_boost_proportion": 0.5,
                                                                    "era_boost_steps": 10}
    assert era_boost.parse_era_boost(" trees = 50 ") == {"era_boost_trees": 50, "era_boost_steps": 10}
    assert era_boost.parse_era_boost("steps=0") == {"era_boost_steps": 0}


@pytest.mark.parametrize(("spec", "message"), [
    ("proportion=0.5,depth=3", "cannot read 'depth=3'"),
    ("steps", "cannot read 'steps'"),
    ("", "cannot read ''"),
    ("steps=2,steps=3", "gives steps twice"),
    ("steps=2.5", "steps='2.5' is not a whole number"),
    ("proportion=half", "proportion='half' is not a number"),
    ("proportion=1.5", "era_boost_proportion must be a number in (0, 1], got 1.5"),
    ("proportion=0", "era_boost_proportion must be a number in (0, 1], got 0.0"),
    ("steps=-1", "era_boost_steps must be a whole number ≥ 0, got -1"),
    ("trees=0", "era_boost_trees must be a whole number ≥ 1, got 0"),
])
def test_parse_era_boost_refuses_in_one_line(spec, message):
    with pytest.raises(InputError) as caught:
        era_boost.parse_era_boost(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_bad_settings_are_refused_before_any_work(kind):
    k, base = KINDS[kind]
    with pytest.raises(InputError, match="era_boost_trees must be a whole number ≥ 1, got 'many'"):
        k.check_settings({**base, "era_boost_steps": 2, "era_boost_trees": "many"})
    with pytest.raises(InputError, match=r"era_boost_proportion must be a number in \(0, 1\], got True"):
        k.check_settings({**base, "era_boost_proportion": True})


def test_default_trees_are_a_tenth_of_the_rounds():
    settings = lgbm_kind.KIND.check_settings({**LGB, "n_estimators": 2000, "era_boost_steps": 10})
    assert era_boost.era_boost_of(settings, 2000) == era_boost.EraBoost(10, 0.5, 200)
    assert lgbm_kind.KIND.max_rounds(settings) == 2000 + 10 * 200


def test_era_boost_is_refused_for_other_kinds():
    assert era_boost.with_era_boost("lgbm", {"max_depth": 3}, "steps=2") == {"max_depth": 3, "era_boost_steps": 2}
    assert era_boost.with_era_boost("xgb", None, None) is None
    with pytest.raises(InputError, match="--era-boost applies to model kinds lgbm and xgb, not 'linear'"):
        era_boost.with_era_boost("linear", None, "steps=2")
    with pytest.raises(InputError, match="model kind 'rf' takes no parameter 'era_boost_steps'"):
        get_kind("rf").check_settings({"era_boost_steps": 2})


def test_worst_eras_ties_and_undefined_corr():
    corr = np.array([0.3, np.nan, -0.1, 0.2, -0.1])
    assert_array_equal(era_boost.worst_eras(corr, 0.5), [2, 4])  # ⌈0.5 · 4 finite⌉ = 2
    assert_array_equal(era_boost.worst_eras(corr, 0.1), [2])  # at least one; the tie goes to the earlier era
    assert_array_equal(era_boost.worst_eras(np.full(3, np.nan), 0.5), [0, 1, 2])
