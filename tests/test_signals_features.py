"""``eraflow signals features``: indicators, Friday sampling, quintile codes and lags against plain pandas /
SciPy oracles; no look-ahead; bad price tables refused in one line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner
from scipy.stats import rankdata

from eraflow.cli.main import cli
from eraflow.engine.signals.features import (
    FeatureOptions,
    daily_indicators,
    friday_rows,
    integer_quintile_codes,
    log_return,
    quintile_codes,
    read_prices,
    rsi,
    signals_features,
    volatility,
    volume_ratio,
)

START = dt.date(2001, 1, 1)
HOLIDAY_FRIDAYS = (dt.date(2001, 6, 15), dt.date(2001, 12, 21))  # no row anywhere: Thursday rows stand in
HOLIDAY_THU_FRI = (dt.date(2001, 11, 15), dt.date(2001, 11, 16))  # no row anywhere: Wednesday rows stand in
LAGS = 3
INDICATORS = ("rsi", "ret_4w", "ret_12w", "vol_20d", "volume_ratio")


def invoke(*argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def assert_refused(result, *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words``."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.count("\n") == 1 and all(w in result.stderr for w in words), result.stderr


def business_days(start: dt.date, n: int) -> list[dt.date]:
    days = pd.bdate_range(start, periods=n).date
    return [d for d in days if d not in HOLIDAY_FRIDAYS + HOLIDAY_THU_FRI]


def walk(rng, n: int) -> np.ndarray:
    return 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))


def price_table(seed: int = 0) -> pd.DataFrame:
    """Tickers exercising every path: full histories, one with a flat stretch (RSI 0/0), a pair where B
    starts the week after A ends (lags must not mix them), one missing a week (a broken lag run),
    one too short, one that never trades on Thursday or Friday (sampled on Wednesdays), one trading on
    weekends only (never sampled), one missing every third week."""
    rng = np.random.default_rng(seed)
    frames = []

    def add(ticker: str, days: list[dt.date], close: np.ndarray | None = None):
        close = walk(rng, len(days)) if close is None else close
        volume = rng.integers(0, 5000, len(days)).astype(float)
        frames.append(pd.DataFrame({"numerai_ticker": ticker, "date": days, "close": close, "volume": volume}))

    for i in range(8):
        add(f"T{i} US", business_days(START, 330))
    days = business_days(START, 330)
    flat = walk(rng, len(days))
    flat[150:175] = flat[150]
    add("FLAT US", days, flat)
    a_days = business_days(START, 160)
    add("PAIR_A US", a_days)
    add("PAIR_B US", business_days(a_days[-1] + dt.timedelta(days=3), 170))
    add("HOLE US", [d for d in days if not (dt.date(2001, 7, 9) <= d <= dt.date(2001, 7, 13))])
    add("SHORT US", business_days(START, 40))
    add("MONWED US", [d for d in days if d.weekday() <= 2])
    add("WEEKEND US", [d for d in pd.date_range(START, periods=400).date if d.weekday() >= 5])
    add("GAPPY US", [d for d in days if (d - START).days // 7 % 3 != 2])
    return pd.concat(frames, ignore_index=True)


def write_prices(path: Path, frame: pd.DataFrame) -> Path:
    pl.from_pandas(frame).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def prices_path(tmp_path_factory) -> Path:
    return write_prices(tmp_path_factory.mktemp("signals") / "prices.parquet", price_table())


@pytest.fixture(scope="module")
def features(prices_path) -> pd.DataFrame:
    return signals_features(prices_path, FeatureOptions(lags=LAGS)).frame.to_pandas()


# -- oracles -------------------------------------------------------------------------------------

def pandas_indicators(prices: pd.DataFrame, rsi_window: int = 14) -> pd.DataFrame:
    """Daily indicators per ticker the way a user writes them with pandas groupby/rolling."""
    out = prices.sort_values(["numerai_ticker", "date"], kind="stable").reset_index(drop=True)
    by = out.groupby("numerai_ticker", sort=False)
    change = by["close"].diff()
    gains = change.clip(lower=0).groupby(out["numerai_ticker"]).rolling(rsi_window).mean().reset_index(0, drop=True)
    losses = (-change).clip(lower=0).groupby(out["numerai_ticker"]).rolling(rsi_window).mean().reset_index(0, drop=True)
    out["rsi"] = 100 - 100 / (1 + gains / losses)
    out["ret_4w"] = np.log(out["close"] / by["close"].shift(20))
    out["ret_12w"] = np.log(out["close"] / by["close"].shift(60))
    daily = np.log(out["close"] / by["close"].shift(1))
    out["vol_20d"] = daily.groupby(out["numerai_ticker"]).rolling(20).std().reset_index(0, drop=True)
    vol = out.groupby("numerai_ticker", sort=False)["volume"]
    out["volume_ratio"] = (vol.rolling(5).mean().reset_index(0, drop=True)
                           / vol.rolling(20).mean().reset_index(0, drop=True)).replace(np.inf, np.nan)
    return out


def oracle_codes(values: pd.Series, eras: pd.Series) -> pd.Series:
    """min(4, ⌊5(rank − ½)/n⌋) per era with SciPy's average ranks over the non-NaN values."""
    codes = pd.Series(np.nan, index=values.index)
    for _, idx in values.groupby(eras).groups.items():
        v = values.loc[idx].dropna()
        if len(v):
            codes.loc[v.index] = np.minimum(4, np.floor(5 * (rankdata(v) - 0.5) / len(v)))
    return codes


def oracle_weekly(prices: pd.DataFrame) -> pd.DataFrame:
    """Friday samples (a ticker's last Monday–Friday row of the week) with per-Friday codes of every indicator."""
    daily = pandas_indicators(prices)
    dates = pd.to_datetime(daily["date"])
    week = daily[dates.dt.day_of_week <= 4].copy()
    week["friday"] = (dates + pd.to_timedelta(4 - dates.dt.day_of_week, unit="D"))[week.index]
    week = week.sort_values(["numerai_ticker", "friday", "date"]).groupby(["numerai_ticker", "friday"]).last()
    week = week.reset_index()
    for name in INDICATORS:
        week[name] = oracle_codes(week[name], week["friday"])
    return week.set_index(["numerai_ticker", "friday"])


# -- indicators ----------------------------------------------------------------------------------

def one_ticker(close) -> tuple[np.ndarray, np.ndarray]:
    close = np.asarray(close, float)
    return close, np.arange(len(close))


@pytest.mark.parametrize("close, expected", [(np.arange(1, 31), 100.0), (np.arange(30, 0, -1), 0.0)])
def test_rsi_seed_cases_rising_100_falling_0(close, expected):
    """Seed acceptance 31: RSI(10) is 100 on a rising series, 0 on a falling one, NaN for the first 10 values."""
    values = rsi(*one_ticker(close), 10)
    assert np.isnan(values[:10]).all()
    np.testing.assert_array_equal(values[10:], expected)


def test_rsi_flat_prices_are_nan():
    """Seed acceptance 31: a constant series gives 0/0 = NaN, not 50 or 100 (and no warning)."""
    assert np.isnan(rsi(*one_ticker(np.full(25, 7.0)), 10)).all()


def test_daily_indicators_match_pandas_groupby_rolling(prices_path):
    """RSI (simple means), returns, volatility and volume ratio per ticker equal pandas groupby/rolling;
    windows never reach into the previous ticker's rows (PAIR_A/PAIR_B are adjacent)."""
    prices = read_prices(prices_path)
    expected = pandas_indicators(pl.read_parquet(prices_path).to_pandas())
    assert list(expected["numerai_ticker"]) == list(prices.tickers[prices.tick])
    for name, compute in daily_indicators(prices, FeatureOptions()).items():
        np.testing.assert_allclose(compute(), expected[name].to_numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_indicator_functions_on_hand_values():
    close, pos = one_ticker([10.0, 11.0, 12.1, 11.0])
    np.testing.assert_allclose(log_return(close, pos, 2), [np.nan, np.nan, np.log(1.21), 0.0], equal_nan=True)
    r = np.log([1.1, 1.1, 11.0 / 12.1])
    np.testing.assert_allclose(volatility(close, pos, 3)[3], np.std(r, ddof=1))
    volume = np.array([1.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(volume_ratio(volume, np.arange(6), 1, 2), [np.nan, 1.5, 0.0, np.nan, np.nan, np.nan],
                               equal_nan=True)


# -- Friday sampling and codes -------------------------------------------------------------------

def test_weekly_sample_is_the_last_weekday_row_never_a_later_day():
    """A week's sample is its Friday row, else its last Monday–Thursday row: never a weekend row, never
    next Monday's (guards a Thursday + Friday holiday week losing its Friday)."""
    days = {"A": ["2021-01-07", "2021-01-08"],  # Thu + Fri → Fri
            "B": ["2021-01-07", "2021-01-11"],  # Thu, next Mon → Thu for Fri 01-08, Mon for Fri 01-15
            "C": ["2021-01-05", "2021-01-06", "2021-01-09", "2021-01-10"],  # Tue, Wed, Sat, Sun → Wed for 01-08
            "D": ["2021-01-09", "2021-01-10"]}  # weekend only → no sample
    tick = np.concatenate([np.full(len(v), i) for i, v in enumerate(days.values())])
    day = np.array([(dt.date.fromisoformat(d) - dt.date(1970, 1, 1)).days for v in days.values() for d in v])
    rows, fridays = friday_rows(tick, day)
    friday = (dt.date(2021, 1, 8) - dt.date(1970, 1, 1)).days
    assert rows.tolist() == [1, 2, 3, 5] and fridays.tolist() == [friday, friday, friday + 7, friday]
    assert ((fridays - day[rows] >= 0) & (fridays - day[rows] <= 4)).all()
    empty = friday_rows(tick[-2:], day[-2:])  # guards an IndexError when no row falls on a weekday
    assert len(empty[0]) == len(empty[1]) == 0


def test_quintile_codes_match_scipy_average_ranks():
    """Ties, NaN and several eras: codes equal the formula on SciPy's average ranks; NaN gets −1."""
    rng = np.random.default_rng(3)
    eras = np.repeat([10, 20, 30, 40], [1, 7, 50, 200])
    values = rng.integers(0, 6, len(eras)).astype(float)
    values[rng.random(len(eras)) < 0.1] = np.nan
    got = quintile_codes(values, eras)
    expected = oracle_codes(pd.Series(values), pd.Series(eras)).fillna(-1).to_numpy()
    np.testing.assert_array_equal(got, expected)


def test_integer_quintile_codes_equal_the_rank_codes():
    """The counting path for lag diffs (−4..4) equals the rank path on the same values and eras."""
    rng = np.random.default_rng(4)
    era_index = np.sort(rng.integers(0, 30, 3000))
    values = rng.integers(-4, 5, 3000).astype(np.int8)
    np.testing.assert_array_equal(integer_quintile_codes(values, era_index, 30),
                                  quintile_codes(values.astype(float), era_index))


def test_quintile_codes_fill_five_bins_on_continuous_values():
    """Seed acceptance 32: codes 0..4, a fifth in each on distinct values."""
    codes = quintile_codes(np.random.default_rng(1).normal(size=1000), np.zeros(1000, int))
    np.testing.assert_array_equal(np.bincount(codes), [200] * 5)


# -- the weekly table ----------------------------------------------------------------------------

def test_features_equal_pandas_pipeline(prices_path, features):
    """Every lag, abs diff and diff code equals the pandas pipeline's codes of the same ticker
    d weeks earlier; a row is present exactly when its L + 1 weeks are consecutive complete Fridays."""
    week = oracle_weekly(pl.read_parquet(prices_path).to_pandas())
    complete = week[list(INDICATORS)].notna().all(axis=1)
    expected_rows = [(ticker, friday) for ticker, friday in complete.index
                     if all(complete.get((ticker, friday - pd.Timedelta(weeks=d)), False) for d in range(LAGS + 1))]
    got_rows = list(zip(features["numerai_ticker"], pd.to_datetime(features["date"]), strict=True))
    assert sorted(got_rows) == sorted(expected_rows)
    for name in INDICATORS:
        for d in range(LAGS):
            lag = np.array([week.loc[(t, f - pd.Timedelta(weeks=d)), name] for t, f in got_rows])
            before = np.array([week.loc[(t, f - pd.Timedelta(weeks=d + 1)), name] for t, f in got_rows])
            np.testing.assert_array_equal(features[f"feature_{name}_lag_{d}"], lag, err_msg=f"{name} lag {d}")
            np.testing.assert_array_equal(features[f"feature_{name}_abs_diff_{d}"], np.abs(lag - before))
            diff_codes = oracle_codes(pd.Series(lag - before), features["date"])
            np.testing.assert_array_equal(features[f"feature_{name}_diff_{d}"], diff_codes)
    assert (features.filter(like="feature_").dtypes == np.int8).all()
    assert features.filter(like="feature_").isin(range(5)).all().all()


def test_holiday_fridays_use_thursday_and_broken_runs_drop_rows(features):
    """A market-wide holiday Friday is an era (Thursday rows), so is a Thursday + Friday holiday week's
    (Wednesday rows) and no ticker loses the L + 1 rows after it; HOLE's missing week and GAPPY's every-third
    missing week drop their rows; SHORT and WEEKEND never get a complete Friday; MONWED is sampled on
    Wednesdays."""
    thu_fri = pd.Timestamp(HOLIDAY_THU_FRI[1])
    assert {pd.Timestamp(d) for d in (*HOLIDAY_FRIDAYS, thu_fri)} <= set(features["date"])
    t0 = set(features[features["numerai_ticker"] == "T0 US"]["date"])
    assert {thu_fri + pd.Timedelta(weeks=d) for d in range(LAGS + 1)} <= t0
    hole = features[features["numerai_ticker"] == "HOLE US"]["date"]
    assert not hole.between(pd.Timestamp(2001, 7, 13), pd.Timestamp(2001, 7, 13) + pd.Timedelta(weeks=LAGS)).any()
    assert not features["numerai_ticker"].isin(["SHORT US", "WEEKEND US", "GAPPY US"]).any()
    assert (features["numerai_ticker"] == "MONWED US").sum() > 20
    pair_b = features[features["numerai_ticker"] == "PAIR_B US"]["date"]
    assert pair_b.min() > pd.Timestamp(2001, 8, 10) + pd.Timedelta(weeks=12)  # its own warm-up, not A's history


def test_drops_are_counted_by_reason(prices_path):
    result = signals_features(prices_path, FeatureOptions(lags=LAGS))
    assert result.tickers_dropped == {"indicators": 2, "lags": 1}  # SHORT, WEEKEND; GAPPY
    assert result.rows_dropped["indicators"] > 0 and result.rows_dropped["lags"] > 0
    assert result.describe()["tickers_kept"] == 13


@pytest.mark.parametrize("friday", [dt.date(2001, 9, 14), HOLIDAY_FRIDAYS[1], HOLIDAY_THU_FRI[1]])
def test_no_look_ahead_price_shock_after_friday(prices_path, tmp_path, features, friday):
    """Seed acceptance 38 / leak L9: shocking every price after Friday t (also a holiday Friday, whose
    Thursday rows stand in, and a Thursday + Friday holiday, whose Wednesday rows stand in), dropping a ticker's later rows and adding a ticker after t leave every
    feature at Fridays ≤ t unchanged."""
    t = pd.Timestamp(friday)
    prices = pl.read_parquet(prices_path).to_pandas()
    later = prices["date"] > t
    shocked = prices.copy()
    shocked.loc[later, "close"] *= np.random.default_rng(9).uniform(0.2, 5, later.sum())
    shocked.loc[later, "volume"] = 1e9
    shocked = shocked[~(later & (shocked["numerai_ticker"] == "T3 US"))]
    newcomer = pd.DataFrame({"numerai_ticker": "NEW US", "close": 10.0, "volume": 1.0,
                             "date": pd.to_datetime(business_days(t.date() + dt.timedelta(days=1), 30))})
    path = write_prices(tmp_path / "shocked.parquet", pd.concat([shocked, newcomer], ignore_index=True))
    again = signals_features(path, FeatureOptions(lags=LAGS)).frame.to_pandas()
    pd.testing.assert_frame_equal(again[again["date"] <= t].reset_index(drop=True),
                                  features[features["date"] <= t].reset_index(drop=True))
    assert not again[again["date"] > t].equals(features[features["date"] > t])


def test_date_major_rows_and_another_ticker_column_give_the_same_table(prices_path, tmp_path, features):
    """Rows ordered by date then ticker (each ticker's dates still increase) are accepted as they are;
    the output keeps the input's ticker column name."""
    prices = pl.read_parquet(prices_path).sort("date", "numerai_ticker").rename({"numerai_ticker": "bloomberg_ticker"})
    prices.write_parquet(tmp_path / "by_date.parquet")
    again = signals_features(tmp_path / "by_date.parquet", FeatureOptions(lags=LAGS)).frame.to_pandas()
    pd.testing.assert_frame_equal(again.rename(columns={"bloomberg_ticker": "numerai_ticker"}), features)


# -- the command ---------------------------------------------------------------------------------

def test_cli_writes_table_with_targets_left_joined(prices_path, tmp_path):
    """Targets join on (ticker, Friday) whatever the date format; the live Friday keeps NaN."""
    out = tmp_path / "features.parquet"
    first = invoke("signals", "features", prices_path, "-o", out, "--lags", LAGS, "--quiet")
    assert first.exit_code == 0, first.output
    frame = pl.read_parquet(out)
    fridays = sorted(frame["date"].unique())
    targets = frame.filter(pl.col("date") < fridays[-1]).select(
        pl.col("numerai_ticker"), pl.col("date").dt.strftime("%Y%m%d").cast(pl.Int64).alias("friday_date"),
        (pl.col("feature_rsi_lag_0") / 4).alias("target"), pl.lit(0.5).alias("target_other"))
    targets.write_parquet(tmp_path / "targets.parquet")
    result = invoke("signals", "features", prices_path, "-o", out, "--lags", LAGS, "--targets",
                    tmp_path / "targets.parquet", "--json")  # replaces its own output
    assert result.exit_code == 0, result.output
    joined = pl.read_parquet(out)
    assert joined.columns[:2] == ["numerai_ticker", "date"] and joined.schema["date"] == pl.Date
    assert joined.columns[-2:] == ["target", "target_other"]
    live = joined["date"] == fridays[-1]
    assert joined.filter(live)["target"].is_null().all()
    np.testing.assert_array_equal(joined.filter(~live)["target"], joined.filter(~live)["feature_rsi_lag_0"] / 4)


def bad_table(kind: str) -> pd.DataFrame:
    frame = pd.DataFrame({"numerai_ticker": "A US", "date": business_days(START, 30), "close": 10.0})
    if kind == "duplicate":
        return pd.concat([frame, frame.iloc[[5]]]).sort_values("date", kind="stable")
    if kind == "unsorted":
        return frame.iloc[[0, 2, 1, *range(3, 30)]]
    if kind == "gap":
        return frame.drop(index=range(10, 20))
    if kind == "zero close":
        return frame.assign(close=np.where(frame.index == 4, 0.0, 10.0))
    if kind == "nan close":
        return frame.assign(close=np.where(frame.index == 4, np.nan, 10.0))
    if kind == "inf close":
        return frame.assign(close=np.where(frame.index == 4, np.inf, 10.0))
    if kind == "inf volume":
        return frame.assign(volume=np.where(frame.index == 6, np.inf, 1.0))
    if kind == "no rows":
        return frame.iloc[:0]
    if kind == "weekends only":
        return frame.assign(date=pd.date_range(START + dt.timedelta(days=5), periods=30, freq="7D").date)
    if kind == "no close":
        return frame.drop(columns="close")
    if kind == "no ticker":
        return frame.rename(columns={"numerai_ticker": "symbol"})
    if kind == "too short":
        return frame
    if kind == "bad date":
        return frame.assign(date=frame["date"].astype(str).str.replace("-", "/"))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, words", [
    ("duplicate", ["A US", "two rows", "2001-01-08"]),
    ("unsorted", ["A US", "sort"]),
    ("gap", ["A US", "--max-gap-days"]),
    ("zero close", ["close 0.0", "A US", "> 0"]),
    ("nan close", ["close nan", "> 0"]),
    ("inf close", ["close inf", "A US", "finite"]),  # guards inf accepted with exit 0 and a NumPy warning
    ("inf volume", ["volume inf", "A US", "finite"]),
    ("no rows", ["prices.parquet has no rows"]),  # guards an internal IndexError (exit 1)
    ("weekends only", ["no ticker has 6 consecutive Fridays"]),  # no weekday row: the same IndexError
    ("no close", ["no close column"]),
    ("no ticker", ["numerai_ticker", "--ticker-column"]),
    ("bad date", ["2001/01/01", "not a date"]),
    ("too short", ["no ticker has 6 consecutive Fridays", "--lags"]),
])
def test_bad_price_tables_refused_in_one_line(tmp_path, kind, words):
    path = write_prices(tmp_path / "prices.parquet", bad_table(kind))
    result = invoke("signals", "features", path, "-o", tmp_path / "out.parquet", "--quiet")
    assert_refused(result, *words)
    assert not (tmp_path / "out.parquet").exists()


def test_bad_options_and_files_refused_in_one_line(prices_path, tmp_path):
    out = tmp_path / "out.parquet"
    assert_refused(invoke("signals", "features", prices_path, "-o", out, "--lags", 0), "--lags 0")
    assert_refused(invoke("signals", "features", tmp_path / "none.parquet", "-o", out), "does not exist")
    assert_refused(invoke("signals", "features", prices_path, "-o", out, "--ticker-column", "sym"), "'sym'")
    twice = pd.DataFrame({"numerai_ticker": ["T1 US", "T1 US"], "date": [dt.date(2001, 6, 1)] * 2, "target": 0.5})
    write_prices(tmp_path / "targets.parquet", twice)
    assert_refused(invoke("signals", "features", prices_path, "-o", out, "--targets", tmp_path / "targets.parquet"),
                   "two rows", "T1 US")
    assert not out.exists()


@pytest.mark.parametrize("rename, words", [({"date": "day"}, ["no date column", "friday_date, date", "rename"]),
                                           ({"numerai_ticker": "sym"}, ["no ticker column", "bloomberg_ticker",
                                                                       "rename"])])
def test_targets_without_key_columns_hint_at_renaming(prices_path, tmp_path, rename, words):
    """Guards a hint naming an option that does not exist (--date-column) or that means PRICES' column
    (--ticker-column) when the --targets file lacks its date or ticker column."""
    targets = pd.DataFrame({"numerai_ticker": ["T1 US"], "date": [dt.date(2001, 6, 1)], "target": 0.5})
    write_prices(tmp_path / "targets.parquet", targets.rename(columns=rename))
    result = invoke("signals", "features", prices_path, "-o", tmp_path / "out.parquet", "--targets",
                    tmp_path / "targets.parquet")
    assert_refused(result, "targets.parquet", *words)
    assert "-column" not in result.stderr


def test_refuses_to_replace_a_file_it_did_not_write(prices_path, tmp_path):
    """An existing parquet eraflow did not write (e.g. the user's prices) is left untouched."""
    out = tmp_path / "mine.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(out)
    before = out.read_bytes()
    assert_refused(invoke("signals", "features", prices_path, "-o", out), "mine.parquet", "eraflow")
    assert out.read_bytes() == before
    assert_refused(invoke("signals", "features", prices_path, "-o", prices_path), "input")


def test_output_ingests_into_a_store(prices_path, tmp_path):
    """The table ingests as is: eras are the Fridays, ids <Friday>|<ticker>, int8 features unchanged."""
    from eraflow.engine import build_store, open_store, plan_ingest

    out = tmp_path / "features.parquet"
    assert invoke("signals", "features", prices_path, "-o", out, "--lags", LAGS, "--quiet").exit_code == 0
    frame = pl.read_parquet(out)
    plan = plan_ingest([out])
    assert plan.feature_names == [c for c in frame.columns if c.startswith("feature_")]
    with open_store(build_store(plan, tmp_path / "store").store) as store:
        assert store.n_rows == frame.height
        assert list(store.eras) == sorted({d.isoformat() for d in frame["date"]})
        first = frame.sort("date", "numerai_ticker").row(0, named=True)
        assert f"{first['date'].isoformat()}|{first['numerai_ticker']}" in set(store.ids[:frame.height])
