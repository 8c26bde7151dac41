"""score / evaluate with Signals neutralizers and sample weights: alpha, MPC and neutral MMC per era equal
numerai-tools 0.7.2 applied era by era, on a keyed (Signals) store and on a classic store."""

from __future__ import annotations

import base64
import json
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from numerai_tools import scoring as nt

from eraflow.cli import cli
from eraflow.engine import IngestOptions, InputError, ingest_files, open_store
from eraflow.engine.evaluation.evaluate import EvaluateOptions, evaluate_predictions
from eraflow.engine.evaluation.ledger import show_run
from eraflow.engine.evaluation.report import PLOTS, SCORE_PLOTS
from eraflow.engine.evaluation.scoring import ScoreOptions, score_predictions

FRIDAYS = pd.date_range("2024-01-05", periods=6, freq="7D")
TICKERS = [f"T{i:03d} US" for i in range(70)]
NEUTRALIZERS = 3


def _signals_frame(seed: int = 0) -> pd.DataFrame:
    """(date, numerai_ticker) rows: 45–70 tickers per Friday, 6 int8 features, a 5-bin target with a few NaN,
    two prediction columns (ties in ``a``; a few NaN in ``b``), a meta model, neutralizers and sample weights."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, friday in enumerate(FRIDAYS):
        tickers = sorted(rng.choice(TICKERS, 45 + 5 * k, replace=False))
        frames.append(pd.DataFrame({"date": friday.date(), "numerai_ticker": tickers}))
    df = pd.concat(frames, ignore_index=True)
    n = len(df)
    for j in range(6):
        df[f"feature_{j}"] = rng.integers(0, 5, n).astype(np.int8)
    signal = df.feature_0 + df.feature_3 + rng.normal(0, 1.5, n)
    df["target"] = pd.qcut(signal + rng.normal(0, 2, n), 5, labels=False) / 4
    df.loc[rng.random(n) < 0.05, "target"] = np.nan
    df["a"] = np.round(signal + rng.normal(0, 1, n), 0)  # ties
    df["b"] = rng.random(n)
    df.loc[rng.random(n) < 0.05, "b"] = np.nan
    df["meta"] = signal + rng.normal(0, 1, n)
    for j in range(NEUTRALIZERS):
        df[f"neutralizer_{j}"] = rng.normal(0, 1, n) / np.sqrt(n)
    df["sample_weight"] = rng.uniform(0.5, 2.0, n)
    return df


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    """A keyed store (ingested from (date, numerai_ticker) rows) and its Signals files, keyed by date and ticker;
    the neutralizer and weight files hold extra rows (a ticker and a Friday no prediction has): ignored."""
    out = tmp_path_factory.mktemp("signals")
    df = _signals_frame()
    df[["date", "numerai_ticker", *[f"feature_{j}" for j in range(6)], "target"]].to_parquet(out / "train.parquet",
                                                                                             index=False)
    store = ingest_files([out / "train.parquet"], out / "store", IngestOptions()).store
    keys = ["date", "numerai_ticker"]
    df[[*keys, "a", "b"]].sample(frac=1.0, random_state=1).to_parquet(out / "preds.parquet", index=False)
    df[[*keys, "meta"]].rename(columns={"meta": "prediction"}).to_parquet(out / "meta.parquet", index=False)
    extra = pd.DataFrame({"date": [FRIDAYS[0].date(), (FRIDAYS[-1] + pd.Timedelta(days=7)).date()],
                          "numerai_ticker": ["ZZZ US", TICKERS[0]]})
    neutral = [f"neutralizer_{j}" for j in range(NEUTRALIZERS)]
    pd.concat([df[[*keys, *neutral]], extra.assign(**{c: 0.5 for c in neutral})]).to_parquet(
        out / "neutralizers.parquet", index=False)
    pd.concat([df[[*keys, "sample_weight"]], extra.assign(sample_weight=1.0)]).to_parquet(
        out / "weights.parquet", index=False)
    return {"dir": out, "store": store, "frame": df}


def _era_frames(df: pd.DataFrame):
    """(era label, the era's rows indexed by ticker, sorted) as numerai-tools wants them."""
    for friday, part in df.groupby("date", sort=True):
        yield str(friday), part.set_index("numerai_ticker").sort_index()


def _oracle(part: pd.DataFrame, column: str, neutralizer_columns: list[str]) -> dict[str, float]:
    """numerai-tools' alpha, MPC (stakes [0 column, 1 meta]) and neutral MMC of one column in one era."""
    neutralizers, weights, target = part[neutralizer_columns], part.sample_weight, part.target
    preds = part[[column]]
    stakes = pd.Series([0.0, 1.0], index=[column, "meta"])
    return {"alpha": nt.alpha(preds, neutralizers, weights, target)[column],
            "mpc": nt.meta_portfolio_contribution(part[[column, "meta"]], stakes, neutralizers, weights,
                                                  target)[column],
            "neutral_mmc": nt.neutral_contribution(preds, part.meta, neutralizers, target)[column]}


def _assert_equal_to_numerai_tools(per_era: dict, eras: list[str], df: pd.DataFrame, columns: list[str],
                                   neutralizer_columns: list[str], keys=("alpha", "mpc", "neutral_mmc")) -> None:
    checked = 0
    for era, part in _era_frames(df):
        k = eras.index(era)
        for j, column in enumerate(columns):
            want = _oracle(part, column, neutralizer_columns)
            for key in keys:
                np.testing.assert_allclose(per_era[key][k, j], want[key], atol=1e-6, err_msg=f"{key} {column} {era}")
            checked += 1
    assert checked == len(columns) * len(eras)


def test_score_alpha_and_mpc_equal_numerai_tools_per_era_on_a_keyed_store(signals):
    d, df = signals["dir"], signals["frame"]
    store = open_store(signals["store"])
    assert store.eras == [str(f.date()) for f in FRIDAYS]
    options = ScoreOptions(meta_model=d / "meta.parquet", neutralizers=d / "neutralizers.parquet",
                           sample_weights=d / "weights.parquet")
    [scores] = score_predictions(store, d / "preds.parquet", options)
    assert scores.columns == ["a", "b"]
    _assert_equal_to_numerai_tools({"alpha": scores.alpha, "mpc": scores.mpc}, scores.eras, df, ["a", "b"],
                                   [f"neutralizer_{j}" for j in range(NEUTRALIZERS)], ("alpha", "mpc"))
    row = scores.summary()[0]
    assert row["alpha_mean"] == pytest.approx(np.mean(scores.alpha[:, 0]))
    assert row["mpc_sharpe"] == pytest.approx(np.mean(scores.mpc[:, 0]) / np.std(scores.mpc[:, 0]))
    assert {"alpha_std", "alpha_sharpe", "alpha_max_drawdown", "mpc_mean", "mpc_max_drawdown"} <= set(row)
    table = pd.DataFrame(scores.per_era())
    np.testing.assert_array_equal(table.loc[table.prediction == "b", "alpha"], scores.alpha[:, 1])


def test_evaluate_alpha_mpc_and_neutral_mmc_equal_numerai_tools_on_a_keyed_store(signals):
    d, df = signals["dir"], signals["frame"]
    options = EvaluateOptions(meta_model=d / "meta.parquet", neutralizers=d / "neutralizers.parquet",
                              sample_weights=d / "weights.parquet")
    ev = evaluate_predictions(open_store(signals["store"]), d / "preds.parquet", options)
    _assert_equal_to_numerai_tools(ev.per_era, ev.eras, df, ["a", "b"],
                                   [f"neutralizer_{j}" for j in range(NEUTRALIZERS)])
    assert ev.feature_sets["neutral_mmc"] == "neutralizers file neutralizers.parquet"
    row = ev.summary()[1]
    assert row["neutral_mmc_mean"] == pytest.approx(np.mean(ev.per_era["neutral_mmc"][:, 1]))
    assert row["alpha_max_drawdown"] >= 0 and "mpc_sharpe" in row and "mmc_mean" in row


def test_a_nan_in_one_column_leaves_the_other_columns_scores_unchanged(signals, tmp_path):
    """Guards against scoring columns jointly (numerai-tools' frame filter): b's NaN rows would drop rows of a."""
    d, df = signals["dir"], signals["frame"]
    df[["date", "numerai_ticker", "a"]].to_parquet(tmp_path / "a.parquet", index=False)
    options = EvaluateOptions(meta_model=d / "meta.parquet", neutralizers=d / "neutralizers.parquet",
                              sample_weights=d / "weights.parquet")
    store = open_store(signals["store"])
    both = evaluate_predictions(store, d / "preds.parquet", options)
    alone = evaluate_predictions(store, tmp_path / "a.parquet", options)
    assert df.b.isna().any()
    for key in ("alpha", "mpc", "neutral_mmc"):
        np.testing.assert_allclose(both.per_era[key][:, 0], alone.per_era[key][:, 0], rtol=1e-12, err_msg=key)


@pytest.fixture(scope="module")
def classic(store_path, synth_dir, tmp_path_factory):
    """The shared classic store's validation rows: predictions, and neutralizer / sample-weight files by id."""
    out = tmp_path_factory.mktemp("classic-signals")
    valid = pd.read_parquet(synth_dir / "validation.parquet").set_index("id")
    rng = np.random.default_rng(11)
    n = len(valid)
    f = [c for c in valid.columns if c.startswith("feature")]
    frame = pd.DataFrame({"a": valid[f[0]] + valid[f[7]] + rng.normal(0, 1, n), "b": rng.random(n)},
                         index=valid.index)
    frame.reset_index().to_parquet(out / "preds.parquet", index=False)
    neutral = pd.DataFrame(rng.normal(0, 1, (n, NEUTRALIZERS)) / np.sqrt(n), index=valid.index,
                           columns=[f"n{j}" for j in range(NEUTRALIZERS)])
    neutral.reset_index().to_parquet(out / "neutralizers.parquet", index=False)
    weights = pd.Series(rng.uniform(0.5, 2, n), index=valid.index, name="weight")
    weights.reset_index().to_parquet(out / "weights.parquet", index=False)
    meta = pd.read_parquet(synth_dir / "meta_model.parquet").set_index("id")["numerai_meta_model"]
    joined = valid.join(frame).join(neutral).assign(sample_weight=weights, meta=meta.loc[valid.index])
    return {"dir": out, "frame": joined}


def test_evaluate_on_a_classic_store_equals_numerai_tools(store_path, synth_dir, classic):
    """Files keyed by id; eras without targets get NaN; neutral MMC without --neutralizers uses the FNC set."""
    d = classic["dir"]
    df = classic["frame"]
    store = open_store(store_path)
    options = EvaluateOptions(meta_model=synth_dir / "meta_model.parquet", neutralizers=d / "neutralizers.parquet",
                              sample_weights=d / "weights.parquet")
    ev = evaluate_predictions(store, d / "preds.parquet", options)
    plain = evaluate_predictions(store, d / "preds.parquet",
                                 EvaluateOptions(meta_model=synth_dir / "meta_model.parquet"))
    assert "alpha" not in plain.per_era and "mpc" not in plain.per_era
    fnc_set = store.feature_sets["fncv3_features"]
    assert plain.feature_sets["neutral_mmc"] == "fncv3_features"
    checked = 0
    for k, era in enumerate(ev.eras):
        part = df[(df.era == era) & df.target.notna()].sort_index()
        if part.empty:
            assert np.isnan(ev.per_era["alpha"][k]).all() and np.isnan(ev.per_era["mpc"][k]).all()
            continue
        for j, column in enumerate(["a", "b"]):
            want = _oracle(part, column, ["n0", "n1", "n2"])
            for key in ("alpha", "mpc", "neutral_mmc"):
                np.testing.assert_allclose(ev.per_era[key][k, j], want[key], atol=1e-6, err_msg=f"{key} {era}")
            on_features = nt.neutral_contribution(part[[column]], part.meta, part[fnc_set].astype(float), part.target)
            np.testing.assert_allclose(plain.per_era["neutral_mmc"][k, j], on_features[column], atol=1e-6,
                                       err_msg=f"neutral mmc on features {era}")
        checked += 1
    assert checked >= 2
    np.testing.assert_array_equal(plain.per_era["mmc"], ev.per_era["mmc"])


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["score", "evaluate"])
@pytest.mark.parametrize("given,missing", [("--neutralizers", "--sample-weights"),
                                           ("--sample-weights", "--neutralizers")])
def test_one_signals_file_alone_is_one_line(signals, tmp_path, command, given, missing):
    d = signals["dir"]
    path = d / ("neutralizers.parquet" if given == "--neutralizers" else "weights.parquet")
    args = [command, str(d / "preds.parquet"), "--store", str(signals["store"]), given, str(path)]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "r")] if command == "evaluate" else args)
    _one_line_error(result, f"{given} needs {missing}")
    assert not (tmp_path / "r").exists()
    option = {given.strip("-").replace("-", "_"): path}
    run, options = ((score_predictions, ScoreOptions(**option)) if command == "score"
                    else (evaluate_predictions, EvaluateOptions(**option)))
    with pytest.raises(InputError, match=f"{given} needs {missing}"):
        run(open_store(signals["store"]), d / "preds.parquet", options)


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_missing_neutralizer_rows_exit_2(signals, tmp_path, command):
    d = signals["dir"]
    neutral = pd.read_parquet(d / "neutralizers.parquet")
    neutral.iloc[5:].to_parquet(tmp_path / "short.parquet", index=False)
    args = [command, str(d / "preds.parquet"), "--store", str(signals["store"]), "--neutralizers",
            str(tmp_path / "short.parquet"), "--sample-weights", str(d / "weights.parquet")]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "r")] if command == "evaluate" else args)
    _one_line_error(result, "short.parquet", "neutralizer")
    assert not (tmp_path / "r").exists()


def test_report_json_table_and_ledger_carry_alpha_and_mpc(signals, tmp_path):
    d = signals["dir"]
    out = tmp_path / "report"
    args = ["evaluate", str(d / "preds.parquet"), "--store", str(signals["store"]), "--meta-model",
            str(d / "meta.parquet"), "--neutralizers", str(d / "neutralizers.parquet"), "--sample-weights",
            str(d / "weights.parquet")]
    result = CliRunner().invoke(cli, [*args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for name in SCORE_PLOTS:
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 200 and image.std() > 0, name
    page = (out / "report.html").read_text()
    embedded = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in embedded] == [*PLOTS, *SCORE_PLOTS]
    assert base64.b64decode(dict(embedded)["cumulative_alpha"]) == (out / "cumulative_alpha.png").read_bytes()
    assert "neutral MMC against <code>neutralizers file neutralizers.parquet</code>" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_era"]["alpha"]["a"]) == len(metrics["eras"]) == len(FRIDAYS)
    assert metrics["provenance"]["neutralizers"] == str((d / "neutralizers.parquet").resolve())
    run = show_run(report["run_id"])
    assert run["metrics"]["a"]["alpha_mean"] == pytest.approx(report["summary"][0]["alpha_mean"])
    assert run["params"]["sample_weights"] == str(d / "weights.parquet")
    table = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "again")])
    assert table.exit_code == 0, table.output
    header = re.split(r"\s{2,}", table.stdout.splitlines()[0].strip())  # on one line in a pipe (width 240)
    assert header[10:12] == ["neutral mmc", "neutral mmc sharpe"]
    assert header[-9:] == ["alpha", "alpha std", "alpha sharpe", "alpha max dd", "mpc", "mpc std", "mpc sharpe",
                           "mpc max dd", "max exposure"]


def test_score_cli_json_and_per_era_table_with_signals_files(signals, tmp_path):
    d = signals["dir"]
    per_era = tmp_path / "per_era.parquet"
    result = CliRunner().invoke(cli, ["score", str(d / "preds.parquet"), "--store", str(signals["store"]),
                                      "--neutralizers", str(d / "neutralizers.parquet"), "--sample-weights",
                                      str(d / "weights.parquet"), "--per-era", str(per_era), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert "mpc_mean" not in rows[0], "MPC needs a meta model"
    table = pd.read_parquet(per_era)
    assert "mpc" not in table and rows[1]["alpha_mean"] == pytest.approx(table[table.prediction == "b"].alpha.mean())


def test_score_and_evaluate_on_dask_equal_local_runs(signals):
    """Each part reads its own rows of the Signals files: the numbers equal a local run's bit for bit."""
    from eraflow.engine.cluster.client import open_client

    d = signals["dir"]
    store = open_store(signals["store"])
    files = {"meta_model": d / "meta.parquet", "neutralizers": d / "neutralizers.parquet",
             "sample_weights": d / "weights.parquet"}
    local_ev = evaluate_predictions(store, d / "preds.parquet", EvaluateOptions(**files))
    [local_scores] = score_predictions(store, d / "preds.parquet", ScoreOptions(**files))
    with open_client(workers=2) as client:
        dask_ev = evaluate_predictions(store, d / "preds.parquet", EvaluateOptions(**files), client=client)
        [dask_scores] = score_predictions(store, d / "preds.parquet", ScoreOptions(**files), client=client)
    assert dask_ev.per_era.keys() == local_ev.per_era.keys()
    for key in ("alpha", "mpc", "neutral_mmc", "corr"):
        np.testing.assert_array_equal(dask_ev.per_era[key], local_ev.per_era[key], err_msg=key)
    for key in ("alpha", "mpc", "corr"):
        np.testing.assert_array_equal(getattr(dask_scores, key), getattr(local_scores, key), err_msg=key)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_kernel_call_per_nan_group_equals_each_column_alone(backend, monkeypatch):
    """Guards the grouping of columns by NaN rows (one kernel call per group, not per column): a column's alpha,
    MPC (stakes [0, …, 0, 1] over [group…, meta]) and neutral MMC equal the call on that column alone."""
    from eraflow.engine.evaluation import evaluate, scoring
    from eraflow.kernels import alpha, meta_portfolio_contribution, neutral_contribution

    rng = np.random.default_rng(5)
    offsets = np.array([0, 40, 95, 150])
    n = offsets[-1]
    x = rng.normal(size=(n, 5))
    x[rng.random(n) < 0.1, 2] = np.nan  # columns 2 and 3 share their NaN rows; 4 has its own
    x[:, 3] = np.where(np.isnan(x[:, 2]), np.nan, x[:, 3])
    x[rng.random(n) < 0.1, 4] = np.nan
    meta, t = x[:, 0] + rng.normal(size=n), rng.integers(0, 5, n) / 4
    t[rng.random(n) < 0.05] = np.nan
    features = rng.integers(0, 5, (n, 4)).astype(np.int8)
    portfolio = scoring.Portfolio(rng.normal(size=(n, 3)) / np.sqrt(50), rng.uniform(0.5, 2, n))
    assert [list(g) for g in scoring.nan_groups(x)] == [[0, 1], [2, 3], [4]]

    def alone(score):
        return np.column_stack([score(x[:, j]) for j in range(x.shape[1])])

    want = {"alpha": alone(lambda p: alpha(p, portfolio.neutralizers, portfolio.weights, t, offsets, backend=backend)),
            "mpc": alone(lambda p: meta_portfolio_contribution(
                np.column_stack([p, meta]), [0.0, 1.0], portfolio.neutralizers, portfolio.weights, t, offsets,
                backend=backend)[:, 0]),
            "neutral_mmc": alone(lambda p: neutral_contribution(p, meta, features, t, offsets, backend=backend))}
    calls = []
    for module, name in ((scoring, "alpha"), (scoring, "meta_portfolio_contribution"),
                         (evaluate, "neutral_contribution")):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _k=kernel, _n=name, **kw: calls.append(_n) or _k(*a, **kw))
    got = {"alpha": scoring.alpha_per_era(x, portfolio, t, offsets, backend),
           "mpc": scoring.mpc_per_era(x, meta, portfolio, t, offsets, backend),
           "neutral_mmc": evaluate.neutral_mmc_per_era(x, meta, features, t, offsets, backend)}
    assert sorted(calls) == sorted(["alpha", "meta_portfolio_contribution", "neutral_contribution"] * 3)
    for key, value in want.items():
        assert np.isfinite(value).all(), key
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-15, err_msg=key)
