"""Kind ``xgb``: XGBoost ``hist`` from the store through a DataIter, against XGBoost on a float array."""

from __future__ import annotations

import json
import re
import tempfile
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from click.testing import CliRunner
from numpy.testing import assert_allclose, assert_array_equal

from eraflow.cli import cli
from eraflow.engine import IngestOptions, InputError, ingest_files, open_store
from eraflow.engine.data.store import era_subset_offsets, int8_to_float32, row_runs
from eraflow.engine.models import xgb as xgb_kind
from eraflow.engine.models import xgb_data
from eraflow.engine.models.kind import FitData
from eraflow.engine.models.predict import load_model, predict_model
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.kernels import numerai_corr

from .conftest import write_parquet

# One thread: XGBoost's OpenMP threads on a busy 2-core machine are many times slower.
FAST = {"n_estimators": 30, "learning_rate": 0.1, "max_depth": 3, "colsample_bytree": 0.5, "nthread": 1}
N_FEATURES = 10
CONSTANT = N_FEATURES - 1  # a feature that never varies: never split on


def planted_rows(eras: int, rows: int, seed: int) -> dict:
    """Columns id, era, feature_0.. (codes 0..4, 5% missing; the last constant, never missing) and a target of
    per-era quintiles of ``x0 + x1/2 + noise`` with 5% missing."""
    rng = np.random.default_rng(seed)
    n = eras * rows
    x = rng.integers(0, 5, (n, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, CONSTANT] = 2
    signal = np.nan_to_num(x[:, 0], nan=2) + 0.5 * np.nan_to_num(x[:, 1], nan=2) + rng.normal(0, 1.5, n)
    quintile = np.argsort(np.argsort(signal.reshape(eras, rows), axis=1), axis=1) * 5 // rows
    y = (quintile.ravel() / 4).astype(np.float32)
    y[rng.random(n) < 0.05] = np.nan
    cols = {"id": [f"id{i:06d}" for i in range(n)], "era": [f"{1 + i // rows:04d}" for i in range(n)]}
    cols.update({f"feature_{j}": pa.array(x[:, j], mask=np.isnan(x[:, j])) for j in range(N_FEATURES)})
    cols["target"] = pa.array(y, mask=np.isnan(y))
    return cols


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("xgb")
    src = write_parquet(out / "train.parquet", planted_rows(eras=24, rows=100, seed=3))
    return open_store(ingest_files([src], out / "store", IngestOptions()).store)


@pytest.fixture(scope="module")
def stopped(store, tmp_path_factory):
    """A model trained with early stopping on eras 19..24, and the rounds it reported."""
    steps = []
    out = tmp_path_factory.mktemp("stopped") / "model"
    config = TrainConfig(kind="xgb", params={**FAST, "n_estimators": 400, "learning_rate": 0.3},
                         train_eras="0001:0014", valid_eras="0019:", early_stopping_rounds=8)
    result = train_models(store, out, config, status=steps.append)
    return result, [s for s in steps if s.event == "round"]


def era_index(store, first: int, last: int) -> np.ndarray:
    return np.arange(first - 1, last)


def oracle(store, eras: np.ndarray, params: dict) -> xgb.Booster:
    """XGBoost trained directly on the float array of the same rows (missing → NaN, weight 0 without target)."""
    runs = row_runs(store.offsets, eras)
    x = int8_to_float32(np.concatenate([store.features[lo:hi] for lo, hi in runs]))
    y = np.concatenate([store.targets[lo:hi, 0] for lo, hi in runs])
    train = xgb.DMatrix(x, label=np.nan_to_num(y, nan=0.5), weight=np.isfinite(y).astype(np.float64))
    rest = {k: v for k, v in params.items() if k != "n_estimators"}
    return xgb.train({"objective": "reg:squarederror", "tree_method": "hist", "seed": 0, **rest}, train,
                     params["n_estimators"])


def test_predictions_equal_xgboost_on_the_float_array(store, tmp_path):
    train_models(store, tmp_path / "m", TrainConfig(kind="xgb", params=FAST, train_eras="0001:0016"))
    model = load_model(tmp_path / "m")
    assert model.kind == "xgb" and model.fitted["target"].rounds == FAST["n_estimators"]
    ours = predict_model(model, store)["pred_target"]
    expected = oracle(store, era_index(store, 1, 16), FAST).inplace_predict(int8_to_float32(np.asarray(store.features)))
    assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)
    assert np.unique(ours).size > 20  # not a constant model


def test_early_stopping_keeps_the_round_of_the_best_per_era_corr(store, stopped, tmp_path):
    result, rounds = stopped
    corr = np.array([s.corr for s in rounds])
    best = int(np.argmax(corr)) + 1
    assert len(rounds) == best + 8 < 400, "stops 8 rounds after the best, well before the cap"
    assert result.rounds["target"] == best
    model = load_model(result.model_dir)
    valid = era_index(store, 19, 24)
    preds = predict_model(model, store, valid)["pred_target"]
    y = np.concatenate([store.targets[lo:hi, 0] for lo, hi in row_runs(store.offsets, valid)])
    kept = np.nanmean(numerai_corr(preds, y, era_subset_offsets(store.offsets, valid)))
    assert kept == pytest.approx(corr[best - 1], abs=1e-6), "the saved model predicts as at its best round"
    assert corr[best - 1] > 0.1  # the planted signal was learned


def test_cli_train_with_cv_writes_oof_and_a_json_model(store, tmp_path):
    (tmp_path / "params.toml").write_text("n_estimators = 20\nmax_depth = 2\nnthread = 1\n")
    out = tmp_path / "model"
    res = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(out), "--model", "xgb", "--params",
                                   str(tmp_path / "params.toml"), "--cv", "2", "--embargo", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "xgb" and meta["params"]["max_depth"] == 2 and meta["params"]["colsample_bytree"] == 0.1
    assert len(meta["cv"]["target"]["folds"]) == 2
    oof = pa.parquet.read_table(out / "oof.parquet")
    assert oof.column_names == ["id", "era", "pred_target"] and oof.num_rows > 0
    raw = (out / "model_target.json").read_bytes()
    assert re.search(rb'"base_score":"[0-9.Ee+-]+"', raw), "base_score as a scalar: XGBoost 3.0 reads it"


def test_saved_model_and_portable_predictor_predict_as_the_fitted_one(store, tmp_path):
    data = FitData(store, era_index(store, 1, 12), np.arange(N_FEATURES), "target")
    fitted = xgb_kind.KIND.fit(data, xgb_kind.check_settings(FAST), None, None)
    x = np.asarray(store.features[store.offsets[14]:store.offsets[18]])
    fitted.save(tmp_path, "target")
    loaded = xgb_kind.load_xgb(tmp_path / "model_target.json", N_FEATURES)
    assert_array_equal(loaded.predict(x, None), fitted.predict(x, None))
    portable = fitted.portable()
    codes = int8_to_float32(x).astype(np.float64)  # as the exported predictor gets them: float64, NaN missing
    assert_array_equal(portable.predict(codes, np.zeros(len(x))), fitted.predict(x, None))


def test_importance_is_total_gain_in_feature_order_and_contributions_add_up(store, tmp_path):
    data = FitData(store, era_index(store, 1, 16), np.arange(N_FEATURES), "target")
    fitted = xgb_kind.KIND.fit(data, xgb_kind.check_settings(FAST), None, None)
    gain = fitted.importance()
    assert gain.shape == (N_FEATURES,) and gain[CONSTANT] == 0
    assert set(np.argsort(gain)[-2:]) == {0, 1}, "the planted features lead"
    assert gain.sum() == pytest.approx(sum(fitted.booster.get_score(importance_type="total_gain").values()))
    x = np.asarray(store.features[:300])
    bias = fitted.predict(x, None) - fitted.contributions(x).sum(axis=1)
    assert_allclose(bias, bias[0], atol=1e-5)


def damaged_copies(raw: bytes):
    """Truncations at every seventh of the file and edits that keep it JSON but break a tree."""
    yield from (raw[:len(raw) * k // 7] for k in range(7))
    for old, new in [(rb'"left_children":[1,', rb'"left_children":[0,'), (rb'"num_nodes":"', rb'"num_nodes":"9'),
                     (rb'"split_indices":[', rb'"split_indices":[99'), (rb'"num_trees":"', rb'"num_trees":"1'),
                     (rb'"right_children":[2,', rb'"right_children":[2000,'), (rb'"tree_info":[0', rb'"tree_info":[7'),
                     (rb'"split_type":[0', rb'"split_type":[1'), (rb'"num_feature":"', rb'"num_feature":"3')]:
        assert old in raw, old
        yield raw.replace(old, new, 1)


def test_damaged_model_file_is_a_one_line_error_naming_it(store, stopped, tmp_path):
    source = stopped[0].model_dir
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_bytes((source / "model.json").read_bytes())
    file = model / "model_target.json"
    for damaged in damaged_copies((source / "model_target.json").read_bytes()):
        file.write_bytes(damaged)
        with pytest.raises(InputError, match=re.escape(str(file)) + " is damaged") as err:
            load_model(model)
        assert "\n" not in str(err.value)
    file.unlink()
    with pytest.raises(InputError, match="model_target.json is missing"):
        load_model(model)


def test_unknown_and_bad_parameters_are_refused_by_name(store, tmp_path):
    with pytest.raises(InputError, match="takes no parameter 'num_leaves', 'warp'"):
        xgb_kind.check_settings({"max_depth": 3, "num_leaves": 31, "warp": 9})
    with pytest.raises(InputError, match="max_depth expect int but value='deep'"):
        xgb_kind.check_settings({"max_depth": "deep"})
    with pytest.raises(InputError, match="'eta' and 'learning_rate'"):
        xgb_kind.check_settings({"eta": 0.1, "learning_rate": 0.2})
    assert xgb_kind.check_settings({"eta": 0.2, "reg_alpha": 1.0})["learning_rate"] == 0.2
    (tmp_path / "p.toml").write_text("num_leaves = 31\n")
    res = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), "--model", "xgb",
                                   "--params", str(tmp_path / "p.toml")])
    assert res.exit_code == 2 and "'num_leaves'" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_device_cuda_without_a_gpu_is_a_clear_error():
    settings = xgb_kind.check_settings(FAST)
    if xgb_kind.resolve_device("auto", settings) == "cuda":
        pytest.skip("a GPU is present: cuda is available")
    with pytest.raises(InputError, match="--device cuda: XGBoost cannot train on a GPU here") as err:
        xgb_kind.resolve_device("cuda", settings)
    assert "\n" not in str(err.value)
    assert xgb_kind.resolve_device("cpu", settings) == "cpu"


def test_quantile_matrix_is_built_from_blocks_without_a_float_copy(store):
    eras = era_index(store, 1, 20)
    n_rows = int(store.offsets[20])
    label, weight = np.zeros(n_rows), np.ones(n_rows)
    block_values = 128 * N_FEATURES  # 128 rows a block
    batches = xgb_data.StoreBatches(store, row_runs(store.offsets, eras), np.arange(N_FEATURES), label, weight,
                                    block_values)
    tracemalloc.start()
    matrix = xgb.QuantileDMatrix(batches, missing=np.nan, nthread=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert matrix.num_row() == n_rows and matrix.num_col() == N_FEATURES
    assert len(batches.blocks) == -(-n_rows // 128) and batches.handed % len(batches.blocks) == 0
    assert peak < n_rows * N_FEATURES * 4 / 4, f"{peak} bytes traced while binning"


def test_fit_builds_its_matrices_through_the_iterator(store, monkeypatch):
    sizes = []

    def recording(store, era_index, cols, label, weight=None, params=None, reference=None, block_values=None,
                  cache=None):
        sizes.append((len(era_index), reference is not None))
        return real(store, era_index, cols, label, weight, params, reference, block_values=64 * N_FEATURES,
                    cache=cache)

    real = xgb_data.store_matrix
    monkeypatch.setattr(xgb_kind, "store_matrix", recording)
    data = FitData(store, era_index(store, 1, 12), np.arange(N_FEATURES), "target", era_index(store, 15, 18),
                   early_stopping=3)
    xgb_kind.KIND.fit(data, xgb_kind.check_settings(FAST), None, None)
    assert sizes == [(12, False), (4, True)], "training eras, then stopping eras binned with the training cuts"


def test_external_memory_trains_the_same_trees_and_removes_its_cache(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the cache directory goes
    made = []
    real = xgb_data.store_matrix

    def recording(*args, cache=None, **kwargs):  # blocks of 150 rows: several cache pages a matrix
        matrix = real(*args, cache=cache, **{**kwargs, "block_values": 150 * N_FEATURES})
        made.append((type(matrix).__name__, sorted(p.name.split("-")[0] for p in cache.iterdir()) if cache else None))
        return matrix

    monkeypatch.setattr(xgb_kind, "store_matrix", recording)
    data = FitData(store, era_index(store, 1, 12), np.arange(N_FEATURES), "target", era_index(store, 15, 20),
                   early_stopping=5)
    settings = xgb_kind.check_settings({**FAST, "n_estimators": 200, "learning_rate": 0.3})
    in_memory = xgb_kind.KIND.fit(data, {**settings, "external_memory": False}, None, None)
    external = xgb_kind.KIND.fit(data, {**settings, "external_memory": True}, None, None)
    assert [m for m, _ in made] == ["QuantileDMatrix"] * 2 + ["ExtMemQuantileDMatrix"] * 2
    assert made[3][1] == ["train", "valid"], "cache files of both matrices in the temporary directory"
    assert list(tmp_path.iterdir()) == [], "the cache directory is removed after training"
    assert external.rounds == in_memory.rounds < 200
    x = np.asarray(store.features)
    assert_array_equal(external.predict(x, None), in_memory.predict(x, None))


def test_auto_external_memory_above_the_in_memory_budget_on_the_cpu_only(monkeypatch):
    over = xgb_data.IN_MEMORY_BUDGET // xgb_data.IN_MEMORY_BYTES_PER_VALUE + 1
    assert xgb_data.external_memory("auto", over, "cpu") and not xgb_data.external_memory("auto", over - 1, "cpu")
    assert not xgb_data.external_memory("auto", over, "cuda")
    assert xgb_data.external_memory(True, 10, "cpu") and not xgb_data.external_memory(False, over, "cpu")
    assert xgb_kind.check_settings(FAST)["external_memory"] == "auto"
    assert xgb_kind.check_settings({**FAST, "external_memory": True})["external_memory"] is True
    for bad in ("yes", 1, None):
        with pytest.raises(InputError, match='external_memory must be "auto", true or false'):
            xgb_kind.check_settings({**FAST, "external_memory": bad})
