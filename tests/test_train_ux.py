"""Training and model loading as a user meets them: progress off a terminal, the summary, duplicate
targets, --era-step, --threads, and damaged model directories refused on one line."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy.stats import rankdata

from eraflow.cli import cli
from eraflow.engine import InputError, SynthSpec, threads
from eraflow.engine.models import lgbm as lgbm_module
from eraflow.engine.models.model_files import check_model_text
from eraflow.engine.models.params import load_params
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, cv_splits, train_models
from eraflow.kernels import numerai_corr

from .conftest import synthetic_store

FAST = {**load_params("starter"), "n_estimators": 30, "learning_rate": 0.1, "num_leaves": 4, "colsample_bytree": 0.5,
        "deterministic": True, "force_col_wise": True, "num_threads": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("ux"),
                           SynthSpec(eras=40, rows_per_era=80, features=20, validation_eras=10, seed=3))


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "fast.toml"
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in FAST.items()) + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    train_models(store, out, TrainConfig(params=FAST))
    return out


@pytest.fixture
def warnings_seen():
    """Messages of eraflow.engine.notices.warn during the test."""
    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("eraflow")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def _train_cli(store, out, params_file, *argv):
    return CliRunner().invoke(cli, ["train", str(store.path), "-o", str(out), "--params", str(params_file), *argv])


def test_training_off_a_terminal_logs_rounds_and_corr(store, params_file, tmp_path, monkeypatch):
    monkeypatch.setattr("eraflow.cli.progress.LOG_EVERY_SECONDS", 0.0)
    result = _train_cli(store, tmp_path / "m", params_file, "--cv", "2", "--valid-eras", "0031:")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("train target")]
    assert "train target fold 1/2: up to 30 rounds on" in lines[0]
    rounds = [line for line in lines if " round " in line and ", corr " in line and "ETA" in line]
    assert rounds and any("round 5/30, corr +" in line or "round 5/30, corr -" in line for line in rounds), lines
    ends = [line for line in lines if ": done at round " in line and "best corr" in line]
    assert len(ends) == 3, "two folds and the final model each end with their best round and corr"

    quiet = _train_cli(store, tmp_path / "q", params_file, "--cv", "2", "--quiet")
    assert quiet.exit_code == 0 and "train target" not in quiet.stderr, quiet.stderr


def test_summary_shows_the_ensemble_and_warns_that_validation_is_optimistic(store, params_file, tmp_path):
    result = _train_cli(store, tmp_path / "m", params_file, "--target", "target", "--target", "target_cyrus_20",
                        "--valid-eras", "0031:", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: validation scores are optimistic" in result.stderr
    report = json.loads(result.stdout)
    ensemble = report["ensemble"]
    assert ensemble["targets"] == ["target", "target_cyrus_20"] and ensemble["scored_on"] == "target"
    table = predict_table(load_model(tmp_path / "m"), store, "0031:")
    t_col = store.target_names.index("target")
    y = np.concatenate([store.targets[store.offsets[store.eras.index(e)]:store.offsets[store.eras.index(e) + 1], t_col]
                        for e in dict.fromkeys(table.eras)])
    offsets = np.concatenate([[0], np.cumsum([np.sum(table.eras == e) for e in dict.fromkeys(table.eras)])])
    per_era = numerai_corr(table.columns["ensemble"], y, offsets)
    np.testing.assert_allclose(ensemble["valid"]["mean"], np.nanmean(per_era), rtol=1e-6)
    assert ensemble["valid"]["eras"] == np.isfinite(per_era).sum()

    text = _train_cli(store, tmp_path / "m", params_file, "--target", "target", "--target", "target_cyrus_20",
                      "--valid-eras", "0031:", "--quiet")
    assert text.exit_code == 0, text.output
    assert any(line.split()[:2] == ["valid", "ensemble"] for line in text.stdout.splitlines()), text.stdout
    assert "ensemble = per-era rank mean of target, target_cyrus_20, scored on target" in text.stdout


def test_duplicate_target_is_trained_once_and_counted_once(store, tmp_path, warnings_seen):
    result = train_models(store, tmp_path / "m", TrainConfig(targets=("target", "target_*_20"), params=FAST, cv=2))
    assert result.targets == ["target", "target_cyrus_20"] and result.aliases == {"target_ender_20": "target"}
    assert sorted(p.name for p in (tmp_path / "m").glob("model_*.txt")) == ["model_target.txt",
                                                                            "model_target_cyrus_20.txt"]
    assert any("target_ender_20 has the same values as target" in w for w in warnings_seen), warnings_seen
    model = load_model(tmp_path / "m")
    assert model.meta["aliases"] == {"target_ender_20": "target"} and len(model.fitted) == 2
    table = predict_table(model, store, "0001:0003")
    assert list(table.columns) == ["pred_target", "pred_target_ender_20", "pred_target_cyrus_20", "ensemble"]
    np.testing.assert_array_equal(table.columns["pred_target_ender_20"], table.columns["pred_target"])
    rows = store.offsets[1] - store.offsets[0]
    first = {k: v[:rows] for k, v in table.columns.items()}
    expected = ((rankdata(first["pred_target"]) + rankdata(first["pred_target_cyrus_20"])) / 2 - 0.5) / rows
    np.testing.assert_allclose(first["ensemble"], expected, atol=1e-9, err_msg="each trained target weighs 1/2")
    oof = pq.read_table(tmp_path / "m" / "oof.parquet").to_pandas()
    assert list(oof.columns) == ["id", "era", "pred_target", "pred_target_ender_20", "pred_target_cyrus_20",
                                 "ensemble"]


def test_era_step_trains_on_every_4th_era_with_the_embargo_in_store_eras(store, tmp_path, monkeypatch):
    built = []
    original = lgbm_module.store_dataset

    def spy(store_, era_index, *args, reference=None, **kwargs):
        if reference is None:
            built.append(np.asarray(era_index).tolist())
        return original(store_, era_index, *args, reference=reference, **kwargs)

    monkeypatch.setattr(lgbm_module, "store_dataset", spy)
    config = TrainConfig(params=FAST, train_eras="0001:0030", era_step=4)
    train_models(store, tmp_path / "m", config)
    assert built == [list(range(0, 30, 4))], "eras 0001, 0005, …, 0029"
    assert json.loads((tmp_path / "m" / "model.json").read_text())["config"]["era_step"] == 4

    folds = cv_splits(store, np.arange(0, 40, 4), 2, 4, "expanding")
    assert [te.tolist() for _, te in folds] == [[16, 20, 24], [28, 32, 36]]
    assert [tr.tolist() for tr, _ in folds] == [[0, 4, 8], [0, 4, 8, 12, 16, 20]], \
        "the era 4 store eras before each test block is embargoed, the one 8 before is not"


def test_a_params_file_asking_for_row_wise_histograms_overrides_the_col_wise_default(store, tmp_path):
    """The base parameters force col-wise histograms (memory); a file's force_row_wise replaces that
    instead of failing LightGBM's "cannot set both"."""
    params = tmp_path / "p.toml"
    params.write_text("n_estimators = 3\nforce_row_wise = true\n")
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), "--params", str(params),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "model.json").read_text())["params"]["force_row_wise"] is True


def test_era_step_is_recorded_in_the_ledger_and_checked(store, params_file, tmp_path):
    result = _train_cli(store, tmp_path / "m", params_file, "--era-step", "4", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    shown = CliRunner().invoke(cli, ["runs", "show", json.loads(result.stdout)["run_id"], "--json"])
    assert json.loads(shown.stdout)["params"]["era_step"] == 4
    bad = _train_cli(store, tmp_path / "n", params_file, "--era-step", "0")
    assert bad.exit_code == 2 and "--era-step must be at least 1" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["-1", "1.5", "nan"])
def test_predict_neutralize_outside_0_1_is_refused(model_dir, store, tmp_path, value):
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(cli, ["predict", str(model_dir), str(store.path), "-o", str(out),
                                      "--neutralize", value])
    assert result.exit_code == 2 and "proportion must lie in [0, 1]" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not out.exists()
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        predict_table(load_model(model_dir), store, proportion=float(value))


def test_truncations_of_a_model_file_are_refused_before_lightgbm(model_dir, store):
    """Cuts every 7th byte and through the whole tail (where a cut leaves the most of a valid file)."""
    file = model_dir / "model_target.txt"
    data = file.read_bytes()
    check_model_text(data, file, store.feature_names)
    tail = data.rindex(b"end of trees") - 200
    for cut in sorted({*range(0, len(data) - 1, 7), *range(tail, len(data) - 1)}):
        with pytest.raises(InputError, match="damaged"):
            check_model_text(data[:cut], file, store.feature_names)


def _edit_tree(text: str, case: str) -> str:
    """One in-place damage of a model file that LightGBM would abort, crash or loop forever on."""
    if case == "a leaf value fewer":
        return re.sub(r"leaf_value=(\S+) ", "leaf_value=", text, count=1)
    if case == "a renamed key":
        return text.replace("num_cat=", "num_6at=", 1)
    if case == "a feature out of range":
        return re.sub(r"split_feature=\d+", "split_feature=999", text, count=1)
    if case == "a cycle of splits":
        return re.sub(r"(right_child=-?\d+ )(\d+)", r"\g<1>0", text, count=1)
    if case == "a parameter line without colon":
        return text.replace("[boosting: gbdt]", "[boosting gbdt]")
    raise ValueError(case)


@pytest.mark.parametrize("case", ["a leaf value fewer", "a renamed key", "a feature out of range", "a cycle of splits",
                                  "a parameter line without colon"])
def test_damage_inside_a_tree_or_the_parameters_is_refused(model_dir, store, case):
    file = model_dir / "model_target.txt"
    text = file.read_text()
    damaged = _edit_tree(text, case)
    assert damaged != text
    with pytest.raises(InputError, match="damaged"):
        check_model_text(damaged.encode(), file, store.feature_names)


def _damage(data: bytes, how: str) -> bytes:
    if how == "empty":
        return b""
    if how == "random":
        return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if how == "before end of trees":
        return data[:data.index(b"end of trees") - 3]
    return data[:int(len(data) * float(how))]


@pytest.mark.parametrize("command,how", [("predict", "0.5"), ("predict", "before end of trees"), ("predict", "empty"),
                                         ("predict", "random"), ("export", "0.97")])
def test_damaged_model_file_is_one_line_exit_2_never_an_abort(model_dir, store, tmp_path, command, how):
    damaged = tmp_path / "m"
    shutil.copytree(model_dir, damaged)
    file = damaged / "model_target.txt"
    file.write_bytes(_damage(file.read_bytes(), how))
    out = tmp_path / ("p.parquet" if command == "predict" else "model.pkl")
    argv = [str(damaged), str(store.path), "-o", str(out)] if command == "predict" else [str(damaged), "-o", str(out)]
    proc = subprocess.run([sys.executable, "-m", "eraflow.cli", command, *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "model_target.txt is damaged" in proc.stderr and not out.exists()


def _edit_meta(meta: dict, case: str) -> dict:
    if case == "missing features":
        del meta["features"]
    elif case == "features not a list":
        meta["features"] = "feature_a,feature_b"
    elif case == "targets of numbers":
        meta["targets"] = [1, 2]
    elif case == "weights of another length":
        meta["ensemble_weights"] = [1.0, 2.0, 3.0]
    elif case == "half the features":
        meta["features"] = meta["features"][:10]
    elif case == "not an object":
        meta = ["features"]
    return meta


@pytest.mark.parametrize("case,message", [
    ("missing features", "'features' must be a non-empty list"),
    ("features not a list", "'features' must be a non-empty list"),
    ("targets of numbers", "'targets' must be a non-empty list"),
    ("weights of another length", "'ensemble_weights' must be 1 non-negative numbers"),
    ("half the features", "was trained on 20 features but model.json lists 10"),
    ("not an object", "not a JSON object"),
])
def test_malformed_model_json_is_a_one_line_error(model_dir, store, tmp_path, case, message):
    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    meta = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps(_edit_meta(meta, case)))
    result = CliRunner().invoke(cli, ["predict", str(broken), str(store.path), "-o", str(tmp_path / "p.parquet")])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr


def test_threads_reach_every_lightgbm_call(store, tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_THREADS", 1)
    trained, predicted = [], []
    real_train, real_predict = lgb.train, lgb.Booster.predict
    monkeypatch.setattr(lgb, "train", lambda params, *a, **k: trained.append(params) or real_train(params, *a, **k))
    monkeypatch.setattr(lgb.Booster, "predict",
                        lambda self, data, **k: predicted.append(k) or real_predict(self, data, **k))
    params = {**FAST, "n_jobs": 2}
    params.pop("num_threads")
    train_models(store, tmp_path / "m", TrainConfig(params=params, valid_eras="0031:"))
    predict_table(load_model(tmp_path / "m"), store, "0031:")
    assert len(trained) == 2, "the parameter probe and the model"
    assert all(p.get("num_threads") == 1 and "n_jobs" not in p for p in trained), trained
    assert predicted and all(k.get("num_threads") == 1 for k in predicted), predicted
