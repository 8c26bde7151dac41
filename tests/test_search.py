"""The search engine: fold scores against plain LightGBM/SciPy oracles, no leakage from validation eras,
resume, identity, best_params.toml, and refusals before any work."""

from __future__ import annotations

import json
import shutil

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from eraflow.engine import SynthSpec, open_store
from eraflow.engine.errors import InputError, LockedError, OutputError
from eraflow.engine.experiments import search as search_module
from eraflow.engine.experiments.search import (
    BEST_PARAMS,
    LEADERBOARD,
    SEARCH_JSON,
    SearchConfig,
    plan_search,
    run_search,
    trial_file,
)
from eraflow.engine.experiments.space import parse_space
from eraflow.engine.lock import exclusive_lock
from eraflow.engine.models.params import kind_params, split_rounds, without_clash
from tests.conftest import synthetic_store

SPEC = SynthSpec(eras=30, rows_per_era=80, features=20, targets=2, seed=3)  # validation eras 0024..0030
SPACE = parse_space({"n_estimators": 15, "num_leaves": [4, 8], "learning_rate": {"low": 0.02, "high": 0.2, "log": True},
                     "min_data_in_leaf": {"low": 5, "high": 30}, "colsample_bytree": 0.5})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("search"), SPEC)


def config(**changes) -> SearchConfig:
    base = dict(space=SPACE, trials=3, cv=2, embargo=2, valid_eras="0024:", neutralize=(0.0, 0.5, 1.0), threads=1)
    return SearchConfig(**{**base, **changes})


def board(path) -> dict:
    """The leaderboard without its timings (which differ between runs)."""
    table = pq.read_table(path / LEADERBOARD).to_pydict()
    return {k: v for k, v in table.items() if k != "time"}


# -- oracles ---------------------------------------------------------------------------------------

def oracle_numerai_corr(pred: np.ndarray, target: np.ndarray) -> float:
    """numerai-tools' numerai_corr of one era, in SciPy/NumPy."""
    keep = np.isfinite(target)
    p = (stats.rankdata(pred[keep]) - 0.5) / keep.sum()
    p = stats.norm.ppf(p)
    p = np.sign(p) * np.abs(p) ** 1.5
    t = target[keep] - target[keep].mean()
    t = np.sign(t) * np.abs(t) ** 1.5
    return float(np.corrcoef(p, t)[0, 1])


def oracle_neutralize(x: np.ndarray, codes: np.ndarray, proportion: float) -> np.ndarray:
    """x − p · [F, 1] lstsq([F, 1], x) with missing codes read as 2."""
    f = np.where(codes < 0, 2, codes).astype(np.float64)
    f1 = np.column_stack([f, np.ones(len(x))])
    return x - proportion * f1 @ np.linalg.lstsq(f1, x, rcond=None)[0]


def rows_of(store, eras: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(store.offsets[k], store.offsets[k + 1]) for k in eras])


def oracle_fold(store, plan, trial: int, train: np.ndarray, test: np.ndarray) -> tuple[list[float], dict]:
    """Plain lightgbm on the fold's training rows (all rounds, no early stopping), scored per test era."""
    rest, rounds = split_rounds(plan.settings(trial))
    params = {**without_clash(rest), "num_threads": 1, "device_type": "cpu", "seed": plan.config.seed}
    t_col = store.target_names.index(plan.config.target)
    x = store.features[rows_of(store, train)][:, plan.cols].astype(np.float32)
    x[x < 0] = np.nan
    y = store.targets[rows_of(store, train), t_col].astype(np.float64)
    booster = lgb.train(params, lgb.Dataset(x, np.nan_to_num(y, nan=0.5), weight=np.isfinite(y).astype(float)), rounds)
    corr, neutral = [], {f"{p:g}": [] for p in plan.config.neutralize}
    for k in test:
        rows = np.arange(store.offsets[k], store.offsets[k + 1])
        codes = store.features[rows][:, plan.cols]
        neutral_codes = codes if plan.neutral_cols is None else store.features[rows][:, plan.neutral_cols]
        xt = codes.astype(np.float32)
        xt[codes < 0] = np.nan
        pred, target = booster.predict(xt), store.targets[rows, t_col].astype(np.float64)
        corr.append(oracle_numerai_corr(pred, target))
        for p in plan.config.neutralize:
            neutral[f"{p:g}"].append(oracle_numerai_corr(oracle_neutralize(pred, neutral_codes, p), target))
    return corr, neutral


@pytest.mark.parametrize("changes", [{}, {"neutralize_features": "small", "neutralize": (0.5, 1.0)}],
                         ids=["own-features", "neutralize-features"])
def test_fold_scores_equal_plain_lightgbm_and_scipy(store, tmp_path, changes):
    """Guards against early stopping on test eras, a fold fit on the wrong eras, a wrong per-era corr or
    neutralization, or neutralizing against the trial's features when --neutralize-features names a set:
    each fold's per-era scores equal a plain LightGBM fit on its training rows, scored by SciPy."""
    plan = plan_search(store, config(trials=2, **changes))
    result = run_search(plan, tmp_path / "s")
    for trial in (0, 1):
        record = result.trials[trial]
        for fold, (train, test) in zip(record["folds"], plan.folds):
            corr, neutral = oracle_fold(store, plan, trial, train, test)
            assert fold["eras"] == [store.eras[k] for k in test]
            np.testing.assert_allclose(fold["corr"], corr, rtol=1e-6, atol=1e-9, err_msg=f"trial {trial}")
            for p, values in neutral.items():
                np.testing.assert_allclose(fold["neutral"][p], values, rtol=1e-6, atol=1e-9, err_msg=f"proportion {p}")
        if "0" in record["folds"][0]["neutral"]:
            np.testing.assert_allclose(record["folds"][0]["neutral"]["0"], record["folds"][0]["corr"])


def test_leaderboard_scores_follow_their_formulas(store, tmp_path):
    """cv_* from the concatenated OOF per-era corr (population std), fold_* from each fold's mean corr."""
    plan = plan_search(store, config(trials=2))
    result = run_search(plan, tmp_path / "s")
    table = pq.read_table(tmp_path / "s" / LEADERBOARD).to_pydict()
    assert list(table) == ["trial", "n_estimators", "num_leaves", "learning_rate", "min_data_in_leaf",
                           "colsample_bytree", "cv_mean", "cv_std", "cv_sharpe", "fold_min", "fold_max", "fold_std",
                           "cv_mean_n0", "cv_sharpe_n0", "cv_mean_n0.5", "cv_sharpe_n0.5", "cv_mean_n1", "cv_sharpe_n1",
                           "time"]
    for row, trial in enumerate(table["trial"]):
        folds = result.trials[trial]["folds"]
        oof = np.concatenate([f["corr"] for f in folds])
        means = np.array([np.mean(f["corr"]) for f in folds])
        half = np.concatenate([f["neutral"]["0.5"] for f in folds])
        assert table["num_leaves"][row] == SPACE.draw(0, trial)["num_leaves"]
        np.testing.assert_allclose([table[k][row] for k in ("cv_mean", "cv_std", "cv_sharpe", "fold_min", "fold_max",
                                                            "fold_std", "cv_mean_n0.5", "cv_sharpe_n0.5")],
                                   [oof.mean(), oof.std(), oof.mean() / oof.std(), means.min(), means.max(),
                                    means.std(), half.mean(), half.mean() / half.std()], rtol=1e-12)


def test_folds_never_touch_validation_eras_or_their_embargo(store):
    plan = plan_search(store, config())
    first_valid = store.eras.index("0024")
    for train, test in plan.folds:
        assert max(train.max(), test.max()) < first_valid - plan.embargo
        assert not np.isin(train, test).any()


def test_validation_data_cannot_change_the_search(store, tmp_path):
    """Leakage guard: scrambling the targets and features of the validation eras and the embargo before them
    leaves every number of the search unchanged."""
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy, ignore=shutil.ignore_patterns("cache"))
    cut = int(store.offsets[store.eras.index("0024") - 2])
    rng = np.random.default_rng(0)
    targets = np.memmap(copy / "targets.f32", np.float32, "r+", shape=store.targets.shape)
    targets[cut:] = rng.random(targets[cut:].shape)
    features = np.memmap(copy / "features.i8", np.int8, "r+", shape=store.features.shape)
    features[cut:] = rng.integers(0, 5, features[cut:].shape)
    targets.flush(), features.flush()
    del targets, features
    scrambled = open_store(copy)
    assert not np.array_equal(scrambled.targets[cut:], store.targets[cut:], equal_nan=True)
    run_search(plan_search(store, config(trials=2)), tmp_path / "a")
    run_search(plan_search(scrambled, config(trials=2)), tmp_path / "b")
    assert board(tmp_path / "a") == board(tmp_path / "b")


def test_train_eras_overlapping_valid_eras_refused(store):
    with pytest.raises(InputError, match="overlaps --valid-eras"):
        plan_search(store, config(train_eras="0001:0025", valid_eras="0024:"))
    assert plan_search(store, config(train_eras="0001:0020", valid_eras="0024:")).train_eras.max() <= 19


def test_interrupted_search_finishes_the_rest_on_rerun(store, tmp_path, monkeypatch):
    """A Ctrl-C after the first trial, then a task that fails: finished trials stay, a re-run runs only the
    others, and the end result equals an uninterrupted search."""
    plan = plan_search(store, config(trials=4))
    run_search(plan, tmp_path / "whole")

    def stop(record, done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(plan, tmp_path / "s", on_trial=stop)
    assert sorted(p.name for p in (tmp_path / "s" / "trials").iterdir()) == ["trial-0000.json"]
    assert board(tmp_path / "s")["trial"] == [0]
    real = search_module.evaluate_fold

    def fail_trial_2(path, fingerprint, task):
        if task.trial == 2:
            raise RuntimeError("worker exploded")
        return real(path, fingerprint, task)

    monkeypatch.setattr(search_module, "evaluate_fold", fail_trial_2)
    with pytest.raises(RuntimeError, match="exploded"):
        run_search(plan, tmp_path / "s")
    assert board(tmp_path / "s")["trial"] == [0, 1]
    monkeypatch.setattr(search_module, "evaluate_fold", real)
    first = trial_file(tmp_path / "s", 0).read_bytes()
    result = run_search(plan, tmp_path / "s")
    assert (result.skipped, result.ran) == ([0, 1], [2, 3])
    assert trial_file(tmp_path / "s", 0).read_bytes() == first
    assert board(tmp_path / "s") == board(tmp_path / "whole")


def test_resume_after_reordering_the_space(store, tmp_path):
    """Guards against draws tied to the file's key order: a re-run with the keys of SPACE.toml moved is the
    same search, skips the finished trials, and ends with the leaderboard of an unbroken run."""
    run_search(plan_search(store, config(trials=3)), tmp_path / "whole")
    run_search(plan_search(store, config(trials=2)), tmp_path / "s")
    moved = parse_space(dict(reversed(list(SPACE.doc.items()))))
    result = run_search(plan_search(store, config(trials=3, space=moved)), tmp_path / "s")
    assert (result.skipped, result.ran) == ([0, 1], [2])
    assert {k: v for k, v in board(tmp_path / "s").items()} == board(tmp_path / "whole")


def test_neutralize_features_without_neutralize_refused(store):
    with pytest.raises(InputError, match="--neutralize-features small needs --neutralize"):
        plan_search(store, config(neutralize=(), neutralize_features="small"))


def test_more_trials_keep_the_first_ones(store, tmp_path):
    run_search(plan_search(store, config(trials=2)), tmp_path / "s")
    before = board(tmp_path / "s")
    result = run_search(plan_search(store, config(trials=4)), tmp_path / "s")
    after = board(tmp_path / "s")
    assert result.ran == [2, 3]
    assert {k: v[:2] for k, v in after.items()} == before


def test_another_search_in_the_same_directory_refused(store, tmp_path):
    run_search(plan_search(store, config(trials=1)), tmp_path / "s")
    record = (tmp_path / "s" / SEARCH_JSON).read_bytes()
    with pytest.raises(InputError, match="another seed .*use a new -o"):
        run_search(plan_search(store, config(trials=1, seed=1)), tmp_path / "s")
    with pytest.raises(InputError, match="another cv "):
        run_search(plan_search(store, config(trials=1, cv=3)), tmp_path / "s")
    with pytest.raises(InputError, match="another threads "):  # threads can change a fit's numbers
        run_search(plan_search(store, config(trials=1, threads=2)), tmp_path / "s")
    assert (tmp_path / "s" / SEARCH_JSON).read_bytes() == record


def test_foreign_directory_refused_untouched(store, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not an eraflow search"):
        run_search(plan_search(store, config(trials=1)), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(OutputError, match="inside the store|holds or is inside"):
        run_search(plan_search(store, config(trials=1)), store.path / "search")


def test_tampered_trial_file_refused(store, tmp_path):
    """Guards against resuming from a trial record that is not this search's draw."""
    plan = plan_search(store, config(trials=1))
    run_search(plan, tmp_path / "s")
    path = trial_file(tmp_path / "s", 0)
    record = json.loads(path.read_text())
    record["params"]["num_leaves"] = 999
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="not trial 0's draw"):
        run_search(plan, tmp_path / "s")


def test_best_params_load_as_train_params(store, tmp_path):
    plan = plan_search(store, config(trials=3, metric="cv_mean"))
    result = run_search(plan, tmp_path / "s")
    best = max(result.trials.values(), key=lambda r: r["scores"]["cv_mean"])
    assert result.best["trial"] == best["trial"]
    assert kind_params("lgbm", str(tmp_path / "s" / BEST_PARAMS)) == plan.settings(best["trial"])
    assert (tmp_path / "s" / "report.html").read_text().count("<img") == 3


def test_drawn_alias_replaces_the_base_parameter(store):
    """Guards against a drawn num_iterations losing to the starter preset's n_estimators (LightGBM reads one)."""
    plan = plan_search(store, config(space=parse_space({"num_iterations": [7, 9]})))
    settings = plan.settings(0)
    assert "num_iterations" not in settings
    assert settings["n_estimators"] == plan.params(0)["num_iterations"]


@pytest.mark.parametrize("space, message", [
    ({"no_such_parameter": [1, 2]}, "takes no parameter 'no_such_parameter'"),
    ({"num_leaves": ["many"]}, "trial 0"),
])
def test_bad_parameters_refused_when_planning(store, space, message):
    """Guards against a bad draw found only after a cluster started (or trials ran): the plan refuses it."""
    with pytest.raises(InputError, match=message):
        plan_search(store, config(space=parse_space(space)))


def test_another_kind_searches_its_own_parameters(store, tmp_path):
    plan = plan_search(store, config(kind="linear", trials=2, neutralize=(),
                                     space=parse_space({"alphas": [1.0, 1000.0]})))
    result = run_search(plan, tmp_path / "s")
    assert sorted(result.trials) == [0, 1]
    assert np.isfinite(result.trials[0]["scores"]["cv_mean"])
    assert kind_params("linear", str(tmp_path / "s" / BEST_PARAMS)) == plan.settings(result.best["trial"])


def test_parameter_named_like_a_score_column_refused(store):
    """Guards against a parameter column silently overwritten by a score of the same name."""
    with pytest.raises(InputError, match="clash with leaderboard columns"):
        plan_search(store, config(space=parse_space({"cv_mean": [1, 2]})))


def test_two_runs_never_write_one_search_at_once(store, tmp_path):
    """Guards against two processes running (and writing) the same trials of one OUT_DIR together."""
    plan = plan_search(store, config(trials=1))
    run_search(plan, tmp_path / "s")
    with exclusive_lock(tmp_path / "s" / "search"), pytest.raises(LockedError, match="another process"):
        run_search(plan_search(store, config(trials=2)), tmp_path / "s")
    assert board(tmp_path / "s")["trial"] == [0]
