"""Every trainable kind works everywhere a model does, through the command line.

For each kind of ``TRAINABLE``, one model (few trees or epochs, ``--cv 2`` so out-of-fold predictions
exist) is trained once on a tiny store, then: ``predict``, ``live``, ``evaluate --model`` (the
importance plot where the kind has one), ``export`` (the pickle's predictions equal ``live``'s),
the ledger, ``eraflow run`` with ``[train] model = …``, and the export run in Numerai's runtime.
Bad input (unknown kinds, parameters a kind does not take, ``--blocks``, model directories of an
unknown kind or newer format, LightGBM presets for other kinds) is one line, exit 2, nothing
written; a model directory written before kinds existed still loads and predicts the same.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import rankdata

from eraflow.cli import cli
from eraflow.engine import SynthSpec
from eraflow.engine.evaluation.ledger import show_run
from eraflow.engine.models.kind import TRAINABLE
from eraflow.engine.models.predict import load_model, predict_model
from eraflow.engine.numerai.runtime import pickle_needs

from .conftest import check_exported, synthetic_store
from .test_train import FAST

# Few trees, iterations or epochs (networks: small batches and layers): each kind trains (with 2 CV folds) in
# about a second on the tiny store.
SMALL = {
    "lgbm": {**FAST, "n_estimators": 8},
    "xgb": {"n_estimators": 8, "learning_rate": 0.1, "max_depth": 3, "colsample_bytree": 0.5},
    "linear": {"cv_folds": 2},
    "logistic": {"max_iter": 30},
    "rf": {"n_estimators": 8, "min_data_in_leaf": 20, "num_leaves": 15, "num_threads": 2},
    "v3x": {"blocks": 2, "n_estimators": 8, "meta": "simplex"},  # simplex: no alpha CV on 2 stacking eras
    "gtruda": {"epochs": 2, "batch_size": 1024, "head": [16, 8], "patience": 2},
    "mlp": {"epochs": 2, "batch_size": 1024, "widths": [16, 8], "patience": 2},
}
# 160 features: GTRUDA's encoder needs at least 149
TINY = SynthSpec(eras=20, rows_per_era=100, features=160, validation_eras=4, unlabeled_eras=1, seed=11)
EMBARGO = "1"  # the tiny store's 19 labeled eras leave room for 2 folds, the alpha CV, V3X's blocks and stacking
LIVE_ERA = 17  # store era whose rows make live.parquet
PACKAGE = "eraflow.engine.models"


def kind_param(kind: str, *values):
    """``kind`` (and ``values``) as a test parameter, skipped (with the reason) while its module is not written yet."""
    missing = importlib.util.find_spec(f"{PACKAGE}.{kind}") is None
    reason = f"engine/models/{kind}.py not written yet"
    return pytest.param(kind, *values, marks=pytest.mark.skipif(missing, reason=reason))


KINDS = [kind_param(k) for k in TRAINABLE]


def invoke(*argv: str):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def train_refused(store, out, *argv: str):
    """``eraflow train`` expected to fail (--quiet: no progress lines beside the error)."""
    return invoke("train", store.path, "-o", out, "--quiet", *argv)


def write_toml(path, params: dict):
    """``params`` as a TOML file of ``name = value`` lines (JSON scalars and arrays are TOML values)."""
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in params.items()))
    return path


def assert_refused(result, *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words``."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.count("\n") == 1 and all(w in result.stderr for w in words), result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("everywhere"), TINY)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    """The ledger of this module's trainings (module fixtures run before the private per-test one)."""
    return tmp_path_factory.mktemp("ledger") / "ledger.duckdb"


@pytest.fixture(scope="module", params=KINDS)
def trained(request, store, ledger, tmp_path_factory):
    """(kind, model directory, `train --json` report) of one small model per kind."""
    kind, out = request.param, tmp_path_factory.mktemp(f"kind_{request.param}")
    params = write_toml(out / "params.toml", SMALL[kind])
    result = invoke("train", store.path, "-o", out / "model", "--model", kind, "--params", params, "--cv", "2",
                    "--embargo", EMBARGO, "--ledger", ledger, "--json")
    assert result.exit_code == 0, result.output
    return kind, out / "model", json.loads(result.stdout)


@pytest.fixture(scope="module")
def live_file(store, tmp_path_factory):
    """live.parquet as Numerai ships it (id, era "X", int8 features), from the rows of one store era."""
    lo, hi = store.offsets[LIVE_ERA], store.offsets[LIVE_ERA + 1]
    codes = np.asarray(store.features[lo:hi])
    frame = pd.DataFrame({"id": store.ids[lo:hi], "era": "X", "data_type": "live",
                          **{f: codes[:, j] for j, f in enumerate(store.feature_names)}})
    path = tmp_path_factory.mktemp("live") / "live.parquet"
    frame.to_parquet(path, index=False)
    return path


def test_every_trainable_kind_has_its_module():
    missing = [k for k in TRAINABLE if importlib.util.find_spec(f"eraflow.engine.models.{k}") is None]
    assert missing == [], f"kinds without engine/models/<kind>.py: {missing}"


def test_train_writes_the_kind_its_settings_and_oof(trained, store):
    kind, model_dir, report = trained
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["kind"] == report["kind"] == kind and meta["format"] == 2
    oof = pd.read_parquet(model_dir / "oof.parquet")
    assert len(oof) > 0 and np.isfinite(oof.pred_target).all() and oof.pred_target.std() > 0
    assert set(oof.era) < set(store.eras), "out-of-fold predictions of the folds' test eras only"
    assert report["cv"]["target"]["eras"] == oof.era.nunique()


def test_the_ledger_has_the_run_with_its_kind(trained, ledger):
    kind, model_dir, report = trained
    run = show_run(report["run_id"], ledger)
    assert run["kind"] == "train" and run["params"]["kind"] == kind
    assert run["artifacts"]["model_dir"] == str(model_dir.resolve()) and "cv_target" in run["metrics"]
    assert len(run["per_era"]) == report["cv"]["target"]["eras"], "the out-of-fold corr of each era"


def test_predict_writes_every_row(trained, store, tmp_path):
    _, model_dir, _ = trained
    result = invoke("predict", model_dir, store.path, "-o", tmp_path / "p.parquet")
    assert result.exit_code == 0, result.output
    preds = pd.read_parquet(tmp_path / "p.parquet")
    assert list(preds.id) == list(store.ids) and np.isfinite(preds.pred_target).all()
    np.testing.assert_allclose(preds.pred_target, predict_model(load_model(model_dir), store)["pred_target"],
                               rtol=1e-6)  # the file holds float32


def test_live_and_the_exported_pickle_rank_the_stores_predictions(trained, store, live_file, tmp_path):
    """live = export's pickle = per-era ranks of the store predictions of the same rows."""
    _, model_dir, _ = trained
    result = invoke("live", model_dir, "--live", live_file, "-o", tmp_path / "live_predictions.parquet")
    assert result.exit_code == 0, result.output
    live = pd.read_parquet(tmp_path / "live_predictions.parquet").set_index("id")
    result = invoke("export", model_dir, "-o", tmp_path / "model.pkl")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "model.pkl", "rb") as fh:
        exported = cloudpickle.load(fh)(pd.read_parquet(live_file).set_index("id"), None)
    np.testing.assert_allclose(exported.loc[live.index, "prediction"], live.prediction, atol=1e-12)
    stored = predict_model(load_model(model_dir), store, np.array([LIVE_ERA]))["pred_target"]
    np.testing.assert_allclose(live.prediction, (rankdata(stored) - 0.5) / len(stored), atol=1e-12)


def test_evaluate_with_the_model_plots_its_importance(trained, store, tmp_path):
    _, model_dir, _ = trained
    result = invoke("evaluate", model_dir / "oof.parquet", "--store", store.path, "-o", tmp_path / "report",
                    "--model", model_dir, "--json")
    assert result.exit_code == 0, result.output
    fitted = load_model(model_dir).fitted["target"]
    has_importance = fitted.importance() is not None
    assert (tmp_path / "report" / "feature_gain.png").exists() == has_importance
    assert (tmp_path / "report" / "shap_summary.png").exists() == (has_importance and hasattr(fitted, "contributions"))


def test_the_export_runs_in_numerais_runtime(trained, live_file, runtime_root, tmp_path):
    """The pickle passes in Numerai's runtime, which lacks torch: no kind's pickle names it (networks: NumPy)."""
    _, model_dir, _ = trained
    check = check_exported(model_dir, tmp_path / "model.pkl", runtime_root, live_file)
    assert check.passed, check.reason
    assert pickle_needs(tmp_path / "model.pkl") == set()


@pytest.mark.parametrize("kind", KINDS)
def test_a_pipeline_trains_the_kind_it_names(kind, tmp_path):
    params = write_toml(tmp_path / "params.toml", SMALL[kind])
    (tmp_path / "pipeline.toml").write_text(f"""workdir = "work"
[data]
source = "synthetic"
eras = {TINY.eras}
validation_eras = {TINY.validation_eras}
rows_per_era = {TINY.rows_per_era}
features = {TINY.features}
[train]
model = "{kind}"
params = "{params.name}"
[live]
enabled = true
""")
    result = invoke("run", tmp_path / "pipeline.toml", "--ledger", tmp_path / "ledger.duckdb", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "work" / "model" / "model.json").read_text())["kind"] == kind
    assert len(pd.read_parquet(tmp_path / "work" / "live_predictions.parquet")) > 0


# --- bad input: one line, exit 2, nothing written -----------------------------------------------------------


def test_an_unknown_kind_is_refused(store, tmp_path):
    assert_refused(train_refused(store, tmp_path / "m", "--model", "nope"), "'nope'", "lgbm")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind, library, modules, extra", [
    kind_param("xgb", "xgboost", ("xgb",), "xgb"),
    kind_param("gtruda", "torch", ("gtruda", "nn"), "nn"),
    kind_param("mlp", "torch", ("mlp", "nn"), "nn"),
])
def test_a_kind_whose_library_is_missing_names_the_extra(kind, library, modules, extra, store, tmp_path,
                                                          monkeypatch):
    monkeypatch.setitem(sys.modules, library, None)  # `import <library>` fails as when the extra is missing
    for name in [n for n in sys.modules if any(n == f"{PACKAGE}.{m}" or n.startswith(f"{PACKAGE}.{m}.")
                                               for m in modules)]:
        monkeypatch.delitem(sys.modules, name)  # the kind's modules import it again
    assert_refused(train_refused(store, tmp_path / "m", "--model", kind), f"pip install 'eraflow[{extra}]'")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_parameter_the_kind_does_not_take_is_named(kind, store, tmp_path):
    params = write_toml(tmp_path / "p.toml", {**SMALL[kind], "not_a_parameter": 1})
    assert_refused(train_refused(store, tmp_path / "m", "--model", kind, "--params", params), "not_a_parameter")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", [k for k in KINDS if k.values[0] != "v3x"])
def test_blocks_are_refused_for_kinds_other_than_v3x(kind, store, tmp_path):
    params = write_toml(tmp_path / "p.toml", SMALL[kind])
    assert_refused(train_refused(store, tmp_path / "m", "--model", kind, "--params", params, "--blocks", "2"),
                   "blocks")
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(importlib.util.find_spec("eraflow.engine.models.v3x") is None, reason="no v3x kind yet")
def test_more_blocks_than_the_eras_allow_are_refused(store, tmp_path):
    assert_refused(train_refused(store, tmp_path / "m", "--model", "v3x", "--blocks", "50"), "--blocks 50")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", [k for k in KINDS if k.values[0] != "lgbm"])
def test_a_lightgbm_preset_is_refused_for_other_kinds(kind, store, tmp_path):
    assert_refused(train_refused(store, tmp_path / "m", "--model", kind, "--params", "starter"),
                   "'starter' is a LightGBM preset", repr(kind))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("change, words", [
    ({"kind": "nope"}, ("kind 'nope'", "upgrade eraflow")),
    ({"format": 99}, ("format 99", "upgrade eraflow")),
])
def test_a_model_of_an_unknown_kind_or_newer_format_is_refused(trained, store, tmp_path, change, words):
    _, model_dir, _ = trained
    copy = shutil.copytree(model_dir, tmp_path / "model")
    meta = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**meta, **change}))
    assert_refused(invoke("predict", copy, store.path, "-o", tmp_path / "p.parquet"), *words)
    assert not (tmp_path / "p.parquet").exists()


def test_a_model_directory_from_before_kinds_loads_and_predicts_the_same(store, tmp_path):
    params = write_toml(tmp_path / "params.toml", SMALL["lgbm"])
    assert invoke("train", store.path, "-o", tmp_path / "m", "--params", params).exit_code == 0
    fresh = predict_model(load_model(tmp_path / "m"), store)["pred_target"]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    old = {k: v for k, v in meta.items() if k not in ("kind", "format", "fitted")}  # keys kinds added
    (tmp_path / "m" / "model.json").write_text(json.dumps(old))
    model = load_model(tmp_path / "m")
    assert model.kind == "lgbm"
    np.testing.assert_array_equal(predict_model(model, store)["pred_target"], fresh)
