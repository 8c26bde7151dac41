"""eraflow ensemble: model directories combined per era (rank mean, stacking on out-of-fold predictions)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.optimize import nnls

from eraflow.cli import cli
from eraflow.engine import SynthSpec
from eraflow.engine.errors import InputError
from eraflow.engine.evaluation.ledger import show_run
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.engine.numerai.export import export_model
from eraflow.engine.numerai.live import live_predictions
from tests.test_train import FAST

from .conftest import synthetic_store

SPEC = SynthSpec(eras=36, rows_per_era=150, features=16, validation_eras=8, seed=5)
# three members: different trees and seeds; the third trains two targets (its submitted column is its ensemble)
MEMBERS = {
    "a": TrainConfig(params={**FAST, "n_estimators": 40, "learning_rate": 0.05, "max_depth": 2, "num_leaves": 4},
                     cv=2, seed=0),
    "b": TrainConfig(params={**FAST, "num_leaves": 7, "colsample_bytree": 0.5}, cv=2, seed=1),
    "c": TrainConfig(targets=("target", "target_cyrus_20"), params={**FAST, "n_estimators": 40}, cv=2, seed=2),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    store = synthetic_store(root, SPEC)
    dirs = {name: root / name for name in MEMBERS}
    for name, config in MEMBERS.items():
        train_models(store, dirs[name], config)
    return store, dirs, root


def _run(*argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def _ranks(frame: pd.DataFrame, eras) -> pd.DataFrame:
    """Per-era ``(rank − 0.5) / n`` of each column (pandas, ties averaged)."""
    grouped = frame.groupby(np.asarray(eras))
    return (grouped.rank(method="average") - 0.5).div(grouped.transform("count"))


def _submitted(model_dir, store) -> pd.DataFrame:
    """A member's own predictions of every store row, and its submitted column."""
    model = load_model(model_dir)
    table = predict_table(model, store)
    column = "ensemble" if len(model.targets) > 1 else f"pred_{model.targets[0]}"
    return pd.DataFrame({"era": table.eras, "p": table.columns[column]}, index=table.ids)


def test_rank_mean_is_the_weighted_mean_of_members_per_era_ranks(setup, tmp_path):
    store, dirs, _ = setup
    result = _run("ensemble", dirs["a"], dirs["b"], dirs["c"], "-o", tmp_path / "ens", "--weights", "2,1,1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["weights"] == [0.5, 0.25, 0.25]
    run = show_run(report["run_id"])
    assert run["kind"] == "ensemble" and run["params"]["weights"] == [0.5, 0.25, 0.25]
    assert run["artifacts"]["model_dir"] == str((tmp_path / "ens").resolve())
    meta = json.loads((tmp_path / "ens" / "model.json").read_text())
    assert meta["kind"] == "ensemble" and meta["method"] == "rank-mean" and meta["targets"] == ["target"]
    assert [m["column"] for m in meta["members"]] == ["pred_target", "pred_target", "ensemble"]
    a_meta = json.loads((dirs["a"] / "model.json").read_text())
    assert meta["members"][0]["train_eras"] == a_meta["train_eras"] and meta["features"] == a_meta["features"]
    got = predict_table(load_model(tmp_path / "ens"), store).columns["pred_target"]

    members = [_submitted(dirs[n], store) for n in "abc"]
    ranks = _ranks(pd.concat([m.p.rename(n) for m, n in zip(members, "abc")], axis=1), members[0].era)
    want = ranks @ np.array([2, 1, 1]) / 4
    np.testing.assert_allclose(got, want.to_numpy(), atol=1e-12)
    assert np.corrcoef(got, members[0].p)[0, 1] < 1 - 1e-6, "the members differ, so the ensemble is not one of them"


def test_an_ensemble_can_be_a_member(setup, tmp_path):
    store, dirs, _ = setup
    assert _run("ensemble", dirs["a"], dirs["b"], "-o", tmp_path / "ab").exit_code == 0
    assert _run("ensemble", tmp_path / "ab", dirs["c"], "-o", tmp_path / "abc", "--weights", "2,1").exit_code == 0
    got = predict_table(load_model(tmp_path / "abc"), store).columns["pred_target"]
    members = [_submitted(d, store) for d in (tmp_path / "ab", dirs["c"])]
    ranks = _ranks(pd.concat([m.p.rename(str(i)) for i, m in enumerate(members)], axis=1), members[0].era)
    np.testing.assert_allclose(got, (ranks @ np.array([2, 1]) / 3).to_numpy(), atol=1e-12)


def test_damaged_ensemble_directory_is_refused(setup, tmp_path):
    _, dirs, _ = setup
    assert _run("ensemble", dirs["a"], dirs["b"], "-o", tmp_path / "ens").exit_code == 0
    meta = json.loads((tmp_path / "ens" / "model.json").read_text())
    (tmp_path / "ens" / "model.json").write_text(json.dumps({**meta, "weights": [1, "x"]}))
    with pytest.raises(InputError, match="malformed: an ensemble needs"):
        load_model(tmp_path / "ens")
    (tmp_path / "ens" / "model.json").write_text(json.dumps(meta))
    shutil.rmtree(tmp_path / "ens" / "members" / "1")
    with pytest.raises(InputError, match="not a model directory"):
        load_model(tmp_path / "ens")


def test_ensemble_is_self_contained(setup, tmp_path):
    store, dirs, _ = setup
    for n in "ab":
        shutil.copytree(dirs[n], tmp_path / n)
    assert _run("ensemble", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "ens").exit_code == 0
    want = predict_table(load_model(tmp_path / "ens"), store).columns["pred_target"]
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")
    got = predict_table(load_model(tmp_path / "ens"), store).columns["pred_target"]
    np.testing.assert_array_equal(got, want)


def _oracle_stack(dirs, store):
    """Independent NNLS: members' OOF submitted columns joined on id, ranked per era less 0.5, against
    the target less its era mean, over the eras every member has OOF predictions for with a target."""
    frames = []
    for n in "abc":
        oof = pd.read_parquet(dirs[n] / "oof.parquet").set_index("id")
        frames.append(oof[["era", "ensemble" if n == "c" else "pred_target"]].rename(columns=lambda c: c + n))
    joined = pd.concat(frames, axis=1, join="inner")
    truth = pd.Series(store.targets[:, store.target_names.index("target")], index=store.ids)
    joined["y"] = truth.reindex(joined.index).to_numpy()
    joined = joined[joined.groupby("eraa").y.transform("count") > 0]
    ranks = _ranks(joined[["pred_targeta", "pred_targetb", "ensemblec"]], joined.eraa) - 0.5
    y = joined.y - joined.groupby("eraa").y.transform("mean")
    keep = y.notna().to_numpy()
    w = nnls(ranks.to_numpy()[keep], y.to_numpy()[keep])[0]
    return w / w.sum(), sorted(joined.eraa.unique())


def test_stack_weights_are_nnls_on_out_of_fold_predictions(setup, tmp_path):
    store, dirs, _ = setup
    result = _run("ensemble", dirs["a"], dirs["b"], dirs["c"], "-o", tmp_path / "st", "--method", "stack")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "st" / "model.json").read_text())
    weights, eras = _oracle_stack(dirs, store)
    np.testing.assert_allclose(meta["weights"], weights, atol=1e-9)
    assert min(weights) > 0.1, "these members give an interior solution (no weight pinned at 0)"
    assert meta["fit_eras"] == eras and len(eras) >= 8
    for n in "abc":
        held_out = json.loads((dirs[n] / "model.json").read_text())["cv"]["target"]["per_era"]
        assert set(eras) <= set(held_out), "every fit era was held out by each member's CV"
    assert abs(sum(meta["weights"]) - 1) < 1e-12 and min(meta["weights"]) >= 0
    got = predict_table(load_model(tmp_path / "st"), store).columns["pred_target"]
    members = [_submitted(dirs[n], store) for n in "abc"]
    ranks = _ranks(pd.concat([m.p.rename(n) for m, n in zip(members, "abc")], axis=1), members[0].era)
    np.testing.assert_allclose(got, (ranks @ np.asarray(weights)).to_numpy(), atol=1e-9)


EXPORTED_RUN = """
import sys, cloudpickle, pandas as pd
sys.modules["eraflow"] = None  # the exported function must not need eraflow
predict = cloudpickle.loads(open(sys.argv[1], "rb").read())
predict(pd.read_parquet(sys.argv[2]).set_index("id"), None).to_parquet(sys.argv[3])
"""


def test_export_and_live_match_predict(setup, tmp_path):
    store, dirs, root = setup
    assert _run("ensemble", dirs["a"], dirs["c"], "-o", tmp_path / "ens", "--weights", "1,3").exit_code == 0
    model = load_model(tmp_path / "ens")
    export_model(model, tmp_path / "m.pkl")
    rows = slice(int(store.offsets[2]), int(store.offsets[5]))  # three whole eras of the store
    frame = pd.DataFrame(store.features[rows].astype(np.float64), columns=store.feature_names,
                         index=pd.Index(store.ids[rows], name="id")).replace(-1, np.nan)
    frame.insert(0, "era", np.repeat(store.eras[2:5], np.diff(store.offsets[2:6])))
    frame.reset_index().to_parquet(tmp_path / "rows.parquet")
    subprocess.run([sys.executable, "-c", EXPORTED_RUN, tmp_path / "m.pkl", tmp_path / "rows.parquet",
                    tmp_path / "out.parquet"], check=True, cwd=tmp_path)
    exported = pd.read_parquet(tmp_path / "out.parquet").prediction
    table = predict_table(model, store, f"{store.eras[2]}:{store.eras[4]}")
    want = _ranks(pd.DataFrame({"p": table.columns["pred_target"]}), table.eras).p
    np.testing.assert_allclose(exported.to_numpy(), want.to_numpy(), atol=1e-12)

    live = live_predictions(model, root / "live.parquet")
    predict = cloudpickle.loads((tmp_path / "m.pkl").read_bytes())
    direct = predict(pd.read_parquet(root / "live.parquet").set_index("id"), None)
    np.testing.assert_allclose(live.prediction.to_numpy(), direct.prediction.to_numpy(), atol=1e-12)


def test_importance_is_the_weighted_mean_of_normalised_member_importances(setup, tmp_path):
    _, dirs, _ = setup
    assert _run("ensemble", dirs["a"], dirs["b"], "-o", tmp_path / "ens", "--weights", "3,1").exit_code == 0
    gains = [load_model(dirs[n]).fitted["target"].importance() for n in "ab"]
    want = 0.75 * gains[0] / gains[0].sum() + 0.25 * gains[1] / gains[1].sum()
    np.testing.assert_allclose(load_model(tmp_path / "ens").fitted["target"].importance(), want, atol=1e-12)


@pytest.fixture(scope="module")
def odd_members(setup):
    """A member without CV (no oof.parquet), one on other features, one of a kind eraflow does not know, one
    whose oof.parquet holds eras its model.json's CV never held out."""
    store, dirs, root = setup
    train_models(store, root / "no_cv", TrainConfig(params={**FAST, "n_estimators": 10}))
    train_models(store, root / "fewer", TrainConfig(params={**FAST, "n_estimators": 10},
                                                   features=tuple(store.feature_names[:8])))
    shutil.copytree(dirs["a"], root / "unknown")
    meta = json.loads((root / "unknown" / "model.json").read_text())
    (root / "unknown" / "model.json").write_text(json.dumps({**meta, "kind": "quantum"}))
    shutil.copytree(dirs["a"], root / "oof_not_held_out")
    (root / "oof_not_held_out" / "model.json").write_text(json.dumps({**meta, "cv": {}}))
    (root / "not_ours").mkdir()
    (root / "not_ours" / "notes.txt").write_text("mine")
    return root


@pytest.mark.parametrize("argv,message", [
    (["a", "-o", "{out}"], "at least 2 model directories"),
    (["a", "b", "-o", "{out}", "--weights", "1,2,3"], "3 weights for 2 members"),
    (["a", "b", "-o", "{out}", "--weights", "1,-1"], "non-negative"),
    (["a", "b", "-o", "{out}", "--weights", "1,x"], "not a comma-separated list of numbers"),
    (["a", "b", "-o", "{out}", "--method", "stack", "--weights", "1,1"], "stack fits its weights"),
    (["a", "no_cv", "-o", "{out}", "--method", "stack"], "no_cv has none (no oof.parquet"),
    (["a", "oof_not_held_out", "-o", "{out}", "--method", "stack"], "holds eras its CV did not hold out"),
    (["a", "fewer", "-o", "{out}"], "ensembling models trained on different feature sets"),
    (["a", "unknown", "-o", "{out}"], "of kind 'quantum'"),
    (["a", "b", "-o", "not_ours"], "not an eraflow model"),
    (["a", "b", "-o", "{out}", "--method", "stack", "--target", "target_nope"], "no target 'target_nope'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(setup, odd_members, tmp_path, argv, message):
    root = odd_members
    args = [str(tmp_path / "out") if a == "{out}" else str(root / a) if (root / a).exists() else a for a in argv]
    before = sorted(p.name for p in root.iterdir())
    result = _run("ensemble", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in root.iterdir()) == before and (root / "not_ours" / "notes.txt").read_text() == "mine"


def test_ensemble_is_not_a_trainable_kind(setup, tmp_path):
    store, _, _ = setup
    result = _run("train", store.path, "-o", tmp_path / "m", "--model", "ensemble")
    assert result.exit_code == 2 and "ensemble" in result.stderr
    assert not (tmp_path / "m").exists()


def test_stacking_members_that_stop_early_with_one_that_does_not_warns(setup, tmp_path):
    """lgbm's CV folds chose their rounds on the eras stack fits its weights on; a linear member's did not."""
    store, dirs, _ = setup
    train_models(store, tmp_path / "lin", TrainConfig(kind="linear", params={"alphas": 1.0}, cv=2))
    result = _run("ensemble", dirs["a"], tmp_path / "lin", "-o", tmp_path / "st", "--method", "stack")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and str(dirs["a"]) in warning[0] and "stopped early" in warning[0]
    assert str(tmp_path / "lin") not in warning[0]
