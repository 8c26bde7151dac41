"""Kinds ``linear`` (ridge from exact int8 Grams, alpha by era CV) and ``logistic`` (L-BFGS out of
core), against scikit-learn fitted on the same rows as a float array (missing codes → 2)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression, Ridge

from eraflow.cli import cli
from eraflow.engine import InputError, SynthSpec
from eraflow.engine.models.kind import FitData, get_kind
from eraflow.engine.models.linear import KIND as LINEAR
from eraflow.engine.models.logistic import KIND as LOGISTIC
from eraflow.engine.models.predict import load_model, predict_model
from eraflow.engine.models.ridge import era_equations_stream
from eraflow.kernels import numerai_corr

from .conftest import synthetic_store

ERAS, FEATURES = 14, 9


@pytest.fixture(scope="module")
def fake_store():
    """Eras of uneven sizes, codes with missing (−1) cells, some NaN targets, a planted signal."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(30, 90, ERAS)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    codes = rng.integers(0, 5, (offsets[-1], FEATURES)).astype(np.int8)
    codes[rng.random(codes.shape) < 0.06] = -1
    signal = np.where(codes < 0, 2, codes) @ rng.normal(0, 0.3, FEATURES) + rng.normal(0, 1.0, len(codes))
    target = np.clip(np.round(2 + signal - signal.mean()), 0, 4) / 4
    target[rng.random(len(target)) < 0.05] = np.nan
    return SimpleNamespace(features=codes, targets=target[:, None].astype(np.float32), offsets=offsets,
                           target_names=["target"], eras=[f"{e:04d}" for e in range(1, ERAS + 1)])


def fit_data(store, eras=None, embargo: int = 1) -> FitData:
    eras = np.arange(ERAS) if eras is None else np.asarray(eras)
    return FitData(store, eras, np.arange(FEATURES), "target", embargo=embargo)


def float_rows(store, eras) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes as floats (missing → 2), target and era offsets of the rows of ``eras`` with a target."""
    rows = np.concatenate([np.arange(store.offsets[e], store.offsets[e + 1]) for e in eras])
    x = store.features[rows].astype(np.float64)
    x[x < 0] = 2
    y = store.targets[rows, 0].astype(np.float64)
    kept = np.isfinite(y)
    era = np.repeat(np.arange(len(eras)), np.diff(store.offsets)[eras])[kept]
    return x[kept], y[kept], np.concatenate([[0], np.cumsum(np.bincount(era, minlength=len(eras)))])


class Steps:
    def __init__(self):
        self.rounds = []

    def step(self, round, corr):
        self.rounds.append(round)


@pytest.mark.parametrize("cols", [np.arange(FEATURES), np.array([7, 0, 3, 4, 8])])
def test_era_grams_are_the_exact_integer_grams(fake_store, cols):
    for era, eq in enumerate(era_equations_stream(fake_store, np.arange(ERAS), cols, 0)):
        x, y, _ = float_rows(fake_store, [era])
        x1 = np.column_stack([x[:, cols], np.ones(len(x))]).astype(np.int64)
        np.testing.assert_array_equal(eq.gram, x1.T @ x1)
        np.testing.assert_allclose(eq.b, x1.T @ y, rtol=1e-12)


@pytest.mark.parametrize("alpha", [1e-3, 2.0])
def test_linear_equals_sklearn_ridge(fake_store, alpha):
    steps = Steps()
    model = LINEAR.fit(fit_data(fake_store), LINEAR.check_settings({"alphas": alpha}), None, steps)
    x, y, _ = float_rows(fake_store, np.arange(ERAS))
    oracle = Ridge(alpha=alpha * len(y), solver="cholesky").fit(x, y)  # alpha is per row
    np.testing.assert_allclose(model.coef, oracle.coef_, rtol=1e-9, atol=1e-12)
    assert model.intercept == pytest.approx(oracle.intercept_, rel=1e-9)
    assert steps.rounds == [1] and model.describe() == {"alpha": alpha, "rows": len(y)}
    np.testing.assert_allclose(model.importance(), np.abs(oracle.coef_) * x.std(axis=0), rtol=1e-9)


def brute_force_cv(store, alphas, n_folds, embargo) -> np.ndarray:
    """Mean over blocked folds of the mean per-era corr of sklearn Ridge fits, per alpha."""
    scores = np.zeros((n_folds, len(alphas)))
    for f, test in enumerate(np.array_split(np.arange(ERAS), n_folds)):
        train = [e for e in range(ERAS) if e < test[0] - embargo or e > test[-1] + embargo]
        x, y, _ = float_rows(store, train)
        xt, yt, offsets = float_rows(store, test)
        for a, alpha in enumerate(alphas):
            preds = Ridge(alpha=alpha * len(y), solver="cholesky").fit(x, y).predict(xt)
            scores[f, a] = numerai_corr(preds, yt, offsets).mean()
    return scores


def test_alpha_cv_picks_the_best_fold_score_as_a_brute_force_loop(fake_store):
    alphas = [1e-3, 0.3, 3.0, 30.0, 3000.0]
    steps = Steps()
    model = LINEAR.fit(fit_data(fake_store, embargo=1), LINEAR.check_settings({"alphas": alphas, "cv_folds": 3}),
                       None, steps)
    scores = brute_force_cv(fake_store, alphas, 3, 1)
    table = model.describe()["alpha_cv"]
    np.testing.assert_allclose([row["fold_corr"] for row in table], scores.T, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose([row["corr"] for row in table], scores.mean(axis=0), rtol=1e-7, atol=1e-10)
    assert np.ptp(scores.mean(axis=0)) > 1e-3  # the choice matters
    assert model.describe()["alpha"] == alphas[int(np.argmax(scores.mean(axis=0)))]
    assert model.describe()["cv_folds"] == 3 and steps.rounds == [1, 2]
    x, y, _ = float_rows(fake_store, np.arange(ERAS))  # the final fit uses every training era
    oracle = Ridge(alpha=model.describe()["alpha"] * len(y), solver="cholesky").fit(x, y)
    np.testing.assert_allclose(model.coef, oracle.coef_, rtol=1e-9, atol=1e-12)


def test_logistic_equals_sklearn_logistic_regression(fake_store):
    steps = Steps()
    settings = LOGISTIC.check_settings({"C": 0.05, "tol": 1e-10, "max_iter": 500})
    model = LOGISTIC.fit(fit_data(fake_store), settings, None, steps)
    x, y, _ = float_rows(fake_store, np.arange(ERAS))
    mean, std = x.mean(axis=0), x.std(axis=0)
    oracle = LogisticRegression(C=0.05, tol=1e-10, max_iter=1000).fit((x - mean) / std, y > 0.5)
    raw = oracle.coef_[0] / std
    np.testing.assert_allclose(model.coef, raw, rtol=1e-6, atol=1e-9)
    assert model.intercept == pytest.approx(oracle.intercept_[0] - mean @ raw, rel=1e-6)
    np.testing.assert_allclose(model.importance(), np.abs(oracle.coef_[0]), rtol=1e-6)
    info = model.describe()
    assert info["converged"] and info["rows"] == len(y) and steps.rounds == list(range(1, info["iterations"] + 1))
    np.testing.assert_allclose(model.predict(fake_store.features, fake_store.offsets)[np.isfinite(
        fake_store.targets[:, 0])], oracle.predict_proba((x - mean) / std)[:, 1], rtol=1e-6)


@pytest.mark.parametrize("kind", [LINEAR, LOGISTIC])
def test_save_load_and_portable_predict_alike(fake_store, tmp_path, kind):
    model = kind.fit(fit_data(fake_store), kind.check_settings({}), None, None)
    model.save(tmp_path, "target")
    meta = {"features": [f"f{i}" for i in range(FEATURES)], "fitted": {"target": model.describe()}}
    loaded = kind.load(tmp_path, "target", meta)
    x, offsets = fake_store.features, fake_store.offsets
    preds = model.predict(x, offsets)
    np.testing.assert_array_equal(loaded.predict(x, offsets), preds)
    assert loaded.describe() == model.describe() and np.array_equal(loaded.importance(), model.importance())
    floats = np.where(x < 0, np.nan, x).astype(np.float64)
    np.testing.assert_allclose(model.portable().predict(floats, np.zeros(len(x), int)), preds, rtol=1e-12)
    assert np.ptp(preds) > 0


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "wrong length"])
def test_damaged_model_file_is_one_line_error(fake_store, tmp_path, damage):
    model = LINEAR.fit(fit_data(fake_store), LINEAR.check_settings({"alphas": 1.0}), None, None)
    model.save(tmp_path, "target")
    file = tmp_path / "model_target.npz"
    if damage == "missing":
        file.unlink()
    elif damage == "truncated":
        file.write_bytes(file.read_bytes()[:300])
    elif damage == "garbage":
        file.write_bytes(b"not a model\n" * 10)
    n_features = FEATURES + (damage == "wrong length")
    with pytest.raises(InputError) as err:
        LINEAR.load(tmp_path, "target", {"features": [f"f{i}" for i in range(n_features)]})
    message = str(err.value)
    assert "model_target.npz" in message and "\n" not in message
    assert ("missing" if damage == "missing" else "is damaged") in message


@pytest.mark.parametrize("kind,params,named", [
    ("linear", {"max_depth": 3}, "'max_depth'"), ("logistic", {"alphas": [1.0]}, "'alphas'"),
    ("linear", {"alphas": [1.0, -2.0]}, "each alpha"), ("linear", {"cv_folds": 1}, "cv_folds"),
    ("logistic", {"C": 0}, "C must be"), ("logistic", {"max_iter": 2.5}, "max_iter must be an integer")])
def test_bad_settings_are_named(kind, params, named):
    with pytest.raises(InputError, match=named):
        get_kind(kind).check_settings(params)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("linear"), SynthSpec(eras=24, rows_per_era=60, features=16,
                                                                        targets=2, seed=4))


@pytest.mark.parametrize("kind", ["linear", "logistic"])
def test_train_via_cli_then_predict(store, tmp_path, kind):
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(out), "--model", kind, "--cv", "2",
                                      "--embargo", "1", "--device", "auto"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == kind and meta["device"] == "cpu" and (out / "model_target.npz").is_file()
    if kind == "linear":
        fitted = meta["fitted"]["target"]
        assert fitted["alpha"] in meta["params"]["alphas"] and len(fitted["alpha_cv"]) == len(meta["params"]["alphas"])
    model = load_model(out)
    preds = predict_model(model, store)["pred_target"]
    assert np.isfinite(preds).all() and np.ptp(preds) > 0
    assert model.fitted["target"].describe() == meta["fitted"]["target"]


def test_cli_refuses_unknown_parameter_and_cuda(store, tmp_path):
    params = tmp_path / "params.toml"
    params.write_text("C = 1.0\nmax_depth = 4\n")
    bad = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "a"), "--model", "logistic",
                                   "--params", str(params)])
    assert bad.exit_code == 2 and "'max_depth'" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    cuda = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "b"), "--model", "linear",
                                    "--device", "cuda"])
    assert cuda.exit_code == 2 and "runs on the CPU" in cuda.stderr and cuda.stderr.count("\n") == 1, cuda.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_alpha_cv_with_too_few_eras_names_the_setting(fake_store):
    with pytest.raises(InputError, match="set cv_folds lower, or give one alpha"):
        LINEAR.fit(fit_data(fake_store, eras=[0, 1, 2]), LINEAR.check_settings({"cv_folds": 5}), None, None)
    one = LINEAR.fit(fit_data(fake_store, eras=[0, 1, 2]), LINEAR.check_settings({"alphas": [0.5]}), None, None)
    assert one.describe()["alpha"] == 0.5
