"""Synthetic Numerai Signals data (`eraflow synth --signals`): determinism, calendar, causal targets checked
against a pandas oracle, orthonormal neutralizers, weights, and the planted momentum that
`eraflow signals features` finds."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine.data.synth import TARGET_SHARES, TARGET_VALUES
from eraflow.engine.errors import InputError
from eraflow.engine.signals.synth import (
    FILES,
    HORIZON_WEEKS,
    TRAILING_DAYS,
    SignalsSynthSpec,
    write_signals_synthetic,
)

SPEC = SignalsSynthSpec(tickers=60, weeks=40, neutralizers=5, seed=3)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signals_synth")
    write_signals_synthetic(out, SPEC)
    return out


def read(data: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(data / f"{name}.parquet")


def sample_closes(prices: pd.DataFrame, fridays) -> pd.DataFrame:
    """Oracle of the sampling rule: per (Friday, ticker) the Friday's close, else the Thursday's, …, else the
    Monday's; never later."""
    by_key = prices.set_index(["numerai_ticker", "date"])["close"]
    rows = []
    for friday in fridays:
        for day in (friday - timedelta(days=k) for k in range(5)):
            on_day = prices.loc[prices["date"] == day, ["numerai_ticker"]].assign(friday=friday, day=day)
            rows.append(on_day)
    frame = pd.concat(rows).drop_duplicates(["friday", "numerai_ticker"], keep="first")  # Friday first
    frame["close"] = by_key.loc[list(zip(frame["numerai_ticker"], frame["day"]))].to_numpy()
    return frame.set_index(["friday", "numerai_ticker"]).sort_index()


def test_same_seed_gives_identical_files(tmp_path, data):
    write_signals_synthetic(tmp_path, SPEC)
    for name in (*FILES, "synth.json"):
        assert digest(tmp_path / name) == digest(data / name), name


def test_other_seed_gives_other_prices(tmp_path, data):
    write_signals_synthetic(tmp_path, SignalsSynthSpec(**{**SPEC.__dict__, "seed": 4}))
    assert digest(tmp_path / "prices.parquet") != digest(data / "prices.parquet")


def test_files_have_signals_schemas(data):
    schema = {name: pq.read_schema(data / f"{name}.parquet") for name in
              ("prices", "targets", "neutralizers", "sample_weights", "meta_model", "universe")}
    assert [(f.name, str(f.type)) for f in schema["prices"]] == [
        ("numerai_ticker", "string"), ("date", "date32[day]"), ("close", "double"), ("volume", "int64")]
    neutralizers = [f"neutralizer_{j}" for j in range(SPEC.neutralizers)]
    for name, values in [("targets", ["target"]), ("neutralizers", neutralizers),
                         ("sample_weights", ["sample_weight"]), ("meta_model", ["prediction"])]:
        assert schema[name].names == ["date", "numerai_ticker", *values], name
        assert str(schema[name].field("date").type) == "date32[day]", name
    assert schema["universe"].names == ["numerai_ticker"]
    record = json.loads((data / "synth.json").read_text())
    assert record["spec"] == SPEC.__dict__ and record["files"] == [*FILES, "synth.json"]
    assert record["rows"]["prices"] == pq.read_metadata(data / "prices.parquet").num_rows


def test_calendar_is_business_days_with_holiday_fridays_sampled_on_thursday(data):
    prices = read(data, "prices")
    days = pd.to_datetime(prices["date"])
    assert (days.dt.day_of_week < 5).all(), "business days only"
    fridays = sorted(read(data, "neutralizers")["date"].unique())
    assert len(fridays) == SPEC.weeks and all(f.weekday() == 4 for f in fridays)
    assert set(np.diff(pd.to_datetime(fridays)).astype("timedelta64[D]").astype(int)) == {7}
    traded = set(prices["date"])
    holidays = [f for f in fridays if f not in traded]
    assert holidays, "some Fridays are market holidays (the Thursday fallback gets exercised)"
    assert all(f - timedelta(days=1) in traded for f in holidays)
    record = json.loads((data / "synth.json").read_text())
    assert {str(h) for h in holidays} <= set(record["holidays"])


def test_each_ticker_history_is_sorted_without_long_gaps(data):
    """Guards against data `eraflow signals features` refuses: unsorted dates, duplicates, gaps > 10 days."""
    prices = read(data, "prices")
    assert (prices["close"] > 0).all() and (prices["volume"] > 0).all()
    gaps = prices.groupby("numerai_ticker")["date"].diff().dropna()
    assert gaps.min() >= timedelta(days=1) and gaps.max() <= timedelta(days=4)
    assert list(prices["numerai_ticker"]) == sorted(prices["numerai_ticker"]), "ticker-major order"


def test_a_ticker_ending_midweek_is_sampled_on_its_last_day(tmp_path):
    """Guards the synthetic weekly files disagreeing with `eraflow signals features` on a ticker whose last
    trading day is a Monday to Wednesday: both sample that day for the week's Friday."""
    write_signals_synthetic(tmp_path, SignalsSynthSpec(tickers=80, weeks=30, neutralizers=4, seed=5))
    prices = read(tmp_path, "prices")
    ends = prices.groupby("numerai_ticker")["date"].max()
    midweek = ends[[d.weekday() <= 2 and d < prices["date"].max() for d in ends]]
    assert len(midweek), "the seed must give a ticker ending on a Monday to Wednesday"
    weights = read(tmp_path, "sample_weights").set_index(["numerai_ticker", "date"])
    for ticker, end in midweek.items():
        assert (ticker, end + timedelta(days=4 - end.weekday())) in weights.index, ticker


def test_some_tickers_start_late_or_end_early(data):
    prices = read(data, "prices")
    span = prices.groupby("numerai_ticker")["date"].agg(["min", "max", "size"])
    late = span["min"] > prices["date"].min()
    early = span["max"] < prices["date"].max()
    assert late.sum() >= 2 and early.sum() >= 2 and not (late & early).any()
    assert span["size"].min() < 15, "one ticker too new for weekly lags (features drop it)"
    universe = read(data, "universe")["numerai_ticker"]
    assert set(universe) == set(span.index[~early]), "the universe is the tickers listed on the live Friday"


def test_weekly_rows_are_the_tickers_sampled_each_friday(data):
    prices = read(data, "prices")
    fridays = sorted(read(data, "neutralizers")["date"].unique())
    expected = sample_closes(prices, fridays).index
    for name in ("neutralizers", "sample_weights", "meta_model"):
        frame = read(data, name)
        got = pd.MultiIndex.from_frame(frame[["date", "numerai_ticker"]], names=["friday", "numerai_ticker"])
        assert got.equals(expected), name


def test_targets_equal_a_pandas_oracle_of_forward_returns(data):
    """The target at Friday t is the binned return from the sample close at t to the one 4 Fridays later,
    residual to the neutralizers under the weights: it moves only with prices after t (causal by
    construction), and rows exist only where both closes do; the newest 4 Fridays have none."""
    prices = read(data, "prices")
    neutral = read(data, "neutralizers").set_index(["date", "numerai_ticker"])
    weights = read(data, "sample_weights").set_index(["date", "numerai_ticker"])["sample_weight"]
    targets = read(data, "targets").set_index(["date", "numerai_ticker"])["target"]
    fridays = sorted(neutral.index.get_level_values(0).unique())
    closes = sample_closes(prices, fridays)["close"]
    assert sorted(targets.index.get_level_values(0).unique()) == fridays[:-HORIZON_WEEKS]
    for k, friday in enumerate(fridays[:-HORIZON_WEEKS]):
        now = closes.loc[friday]
        later = closes.loc[fridays[k + HORIZON_WEEKS]]
        tickers = now.index.intersection(later.index)
        forward = (later[tickers] / now[tickers] - 1.0).to_numpy()
        x = neutral.loc[friday].loc[tickers].to_numpy()
        root = np.sqrt(weights.loc[friday].loc[tickers].to_numpy())
        b = np.linalg.lstsq(root[:, None] * x, root * forward, rcond=None)[0]
        ranks = pd.Series(forward - x @ b).rank(method="first").to_numpy()
        edges = np.round(np.cumsum(TARGET_SHARES)[:-1] * len(ranks))
        expected = TARGET_VALUES[np.searchsorted(edges, ranks - 1, side="right")]
        got = targets.loc[friday]
        assert list(got.index) == list(tickers), friday
        np.testing.assert_array_equal(got.to_numpy(), expected, err_msg=str(friday))


def test_neutralizers_are_orthonormal_under_the_sample_weights(data):
    """NᵀWN = I per Friday, so numerai-tools' s − N(Nᵀ(w∘s)) is a projection (idempotent)."""
    neutral = read(data, "neutralizers")
    weights = read(data, "sample_weights")["sample_weight"].to_numpy()
    columns = [c for c in neutral.columns if c.startswith("neutralizer_")]
    rng = np.random.default_rng(0)
    for friday, rows in neutral.groupby("date").indices.items():
        n, w = neutral[columns].to_numpy()[rows], weights[rows]
        np.testing.assert_allclose(n.T @ (w[:, None] * n), np.eye(len(columns)), atol=1e-10, err_msg=str(friday))
        s = rng.standard_normal(len(rows))
        once = s - n @ (n.T @ (w * s))
        np.testing.assert_allclose(once - n @ (n.T @ (w * once)), once, atol=1e-10, err_msg=str(friday))


def test_sample_weights_are_positive_and_causal(data):
    """w = √(mean close·volume of the last ≤ 20 rows up to the sample day) / mean per Friday: an oracle from
    prices at dates ≤ the Friday only."""
    prices = read(data, "prices")
    prices["dollar"] = prices["close"] * prices["volume"]
    prices["mean_dollar"] = prices.groupby("numerai_ticker")["dollar"].transform(
        lambda s: s.rolling(TRAILING_DAYS, min_periods=1).mean())
    weights = read(data, "sample_weights")
    assert (weights["sample_weight"] > 0).all()
    by_key = prices.set_index(["numerai_ticker", "date"])["mean_dollar"]
    fridays = sorted(weights["date"].unique())
    days = sample_closes(prices, fridays).reset_index()
    raw = np.sqrt(by_key.loc[list(zip(days["numerai_ticker"], days["day"]))].to_numpy())
    expected = raw / pd.Series(raw).groupby(days["friday"].to_numpy()).transform("mean").to_numpy()
    np.testing.assert_allclose(weights["sample_weight"].to_numpy(), expected, rtol=1e-12)


def test_meta_model_is_a_rank_in_unit_interval(data):
    meta = read(data, "meta_model")
    assert meta["prediction"].between(0, 1, inclusive="neither").all()
    sizes = meta.groupby("date")["prediction"].transform("size")
    np.testing.assert_allclose(meta.groupby("date")["prediction"].transform("mean"), 0.5, atol=1e-12)
    assert (meta.groupby("date")["prediction"].max() == ((sizes - 0.5) / sizes).groupby(meta["date"]).max()).all()


def momentum_spearman(data: Path) -> pd.Series:
    """Per Friday, the Spearman of each ticker's trailing 20-row log return to its sample day with the target."""
    prices = read(data, "prices")
    prices["trailing"] = prices.groupby("numerai_ticker")["close"].transform(
        lambda s: np.log(s / s.shift(TRAILING_DAYS).fillna(s.iloc[0])))
    targets = read(data, "targets")
    fridays = sorted(targets["date"].unique())
    days = sample_closes(prices, fridays).reset_index()
    trailing = prices.set_index(["numerai_ticker", "date"])["trailing"]
    days["trailing"] = trailing.loc[list(zip(days["numerai_ticker"], days["day"]))].to_numpy()
    joined = targets.merge(days.rename(columns={"friday": "date"}), on=["date", "numerai_ticker"])
    return joined.groupby("date")[["trailing", "target"]].apply(
        lambda g: g["trailing"].rank().corr(g["target"].rank()))


def test_record_momentum_equals_pandas_oracle(data):
    record = json.loads((data / "synth.json").read_text())
    oracle = momentum_spearman(data)
    got = pd.Series(record["momentum_spearman"])
    assert list(got.index) == [str(d) for d in oracle.index]
    np.testing.assert_allclose(got.to_numpy(), oracle.to_numpy(), atol=1e-12)
    assert record["momentum_spearman_mean"] == pytest.approx(oracle.mean())


def test_momentum_is_what_the_knob_plants(tmp_path):
    """Guards against a signal leaking in from elsewhere (no momentum: no trailing-return edge) and against a
    knob that plants nothing."""
    strong = write_signals_synthetic(tmp_path / "strong", SignalsSynthSpec(tickers=200, weeks=60, momentum=0.3))
    none = write_signals_synthetic(tmp_path / "none", SignalsSynthSpec(tickers=200, weeks=60, momentum=0.0))
    assert strong["momentum_spearman_mean"] > 0.1
    assert abs(none["momentum_spearman_mean"]) < 0.03


@pytest.mark.parametrize("field,value", [("tickers", 19), ("weeks", 15), ("neutralizers", 1),
                                         ("neutralizers", 16), ("momentum", 1.0)])
def test_bad_sizes_are_refused(tmp_path, field, value):
    with pytest.raises(InputError, match=field):
        write_signals_synthetic(tmp_path, SignalsSynthSpec(**{"tickers": 60, field: value}))


@pytest.mark.parametrize("args,message", [
    (["--signals", "--tickers", 5], "--tickers must be at least 20"),
    (["--signals", "--weeks", 3], "--weeks must be at least"),
    (["--signals", "--neutralizers", 1], "--neutralizers must be"),
    (["--signals", "--eras", 12], "--eras: only for classic data"),
    (["--weeks", 30], "--weeks: only with --signals"),
])
def test_cli_bad_options_exit_2_on_one_line(tmp_path, args, message):
    result = run("synth", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists(), "nothing written"


def test_sizes_beyond_the_memory_cap_are_refused_before_any_work(tmp_path):
    """Guards "internal error: MemoryError" (exit 1) leaving an empty OUT_DIR behind."""
    result = run("synth", "--signals", tmp_path / "out", "--tickers", 100_000, "--weeks", 5_000)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "--tickers 100000 × --weeks 5000 needs about" in result.stderr and "GiB" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_directory_it_did_not_make_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = run("synth", "--signals", foreign, "--tickers", 20, "--weeks", 16, "--neutralizers", 3)
    assert result.exit_code == 2 and "not eraflow's synthetic Signals data" in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    ours = tmp_path / "ours"
    for seed in (1, 2):
        result = run("synth", "--signals", ours, "--tickers", 20, "--weeks", 16, "--neutralizers", 3, "--seed", seed,
                     "--json")
        assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spec"]["seed"] == 2
    assert json.loads((ours / "synth.json").read_text())["spec"]["seed"] == 2
    assert sorted(p.name for p in ours.iterdir()) == sorted([*FILES, "synth.json"]), "no temporaries left"


def test_cli_prints_files_and_summary(tmp_path):
    result = run("synth", "--signals", tmp_path / "s", "--tickers", 30, "--weeks", 20, "--neutralizers", 4)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [Path(line.split()[0]).name for line in lines[:-1]] == [*FILES, "synth.json"]
    assert lines[-1].startswith("prices: ") and "30 tickers" in lines[-1] and "20 Fridays" in lines[-1]


def test_signals_features_find_the_planted_momentum(tmp_path):
    """`eraflow signals features` on the synthetic prices + targets: a simple feature (4-week return, lag 0) has
    a positive mean per-Friday Spearman with the target, every feature row has neutralizer and weight rows,
    and the newest Fridays keep NaN targets."""
    data = tmp_path / "data"
    write_signals_synthetic(data, SignalsSynthSpec(tickers=120, weeks=60, momentum=0.15, seed=1))
    out = tmp_path / "features.parquet"
    result = run("signals", "features", data / "prices.parquet", "-o", out, "--targets", data / "targets.parquet",
                 "--quiet")
    assert result.exit_code == 0, result.output
    features = pd.read_parquet(out)
    keys = features[["date", "numerai_ticker"]]
    for name in ("neutralizers", "sample_weights", "meta_model"):
        covered = keys.merge(read(data, name)[["date", "numerai_ticker"]], how="left", indicator=True)
        assert (covered["_merge"] == "both").all(), name
    newest = sorted(read(data, "neutralizers")["date"].unique())[-HORIZON_WEEKS:]
    assert features.loc[features["date"].isin(newest), "target"].isna().all()
    labelled = features.dropna(subset=["target"])
    for feature in ("feature_ret_4w_lag_0", "feature_rsi_lag_0"):
        per_friday = labelled.groupby("date")[[feature, "target"]].apply(
            lambda g, f=feature: g[f].rank().corr(g["target"].rank()))
        assert len(per_friday) > 30 and per_friday.mean() > 0.03, (feature, per_friday.mean())
