"""Signals submissions: numerai-tools' validate_submission_signals as the oracle, upload through a fake SignalsAPI."""

from __future__ import annotations

import doctest
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from numerai_tools.submissions import (
    SIGNALS_ALLOWED_DATE_COLS,
    SIGNALS_ALLOWED_ID_COLS,
    SIGNALS_ALLOWED_PRED_COLS,
    SIGNALS_MIN_TICKERS,
    validate_submission_signals,
)

from eraflow.cli import cli
from eraflow.engine.errors import InputError
from eraflow.engine.evaluation.prediction_writer import write_predictions
from eraflow.engine.numerai.numerai import check_signals_client, numerai_client, submit_signals
from eraflow.engine.signals import submission as submission_module
from eraflow.engine.signals.submission import (
    DATE_COLUMNS,
    MIN_TICKERS,
    SIGNAL_COLUMNS,
    TICKER_COLUMNS,
    latest_era_signals,
    percentile_ranks,
    read_universe,
    validate_signals_submission,
)

SECRET = "S3CR3T-KEY-0123456789"
TICKERS = [f"T{i:04d} US" for i in range(130)]
UNIVERSE = pd.DataFrame({c: TICKERS for c in TICKER_COLUMNS})
FRIDAYS = ["2024-01-05", "2024-01-12"]


def test_docstring_examples_run():
    result = doctest.testmod(submission_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_constants_are_numerai_tools():
    """Guards against a rule list drifting from the oracle's (e.g. a ticker column Numerai added)."""
    assert (list(TICKER_COLUMNS), list(SIGNAL_COLUMNS), list(DATE_COLUMNS), MIN_TICKERS) == (
        SIGNALS_ALLOWED_ID_COLS, SIGNALS_ALLOWED_PRED_COLS, SIGNALS_ALLOWED_DATE_COLS, SIGNALS_MIN_TICKERS)


# ---------------------------------------------------------------- the oracle over generated frames


REJECTIONS: list[str] = []  # our messages, for checking that the generator exercises every rule


def oracle(frame: pd.DataFrame, universe: pd.DataFrame = UNIVERSE):
    """numerai-tools' verdict: its result, or None when an assertion rejects the file."""
    try:
        logging.getLogger("numerai_tools").setLevel(logging.ERROR)  # its data_type deprecation line
        with warnings.catch_warnings():  # numerai-tools 0.7.2 drops columns with the deprecated inplace=True
            warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
            return validate_submission_signals(universe.copy(), frame.copy())
    except AssertionError:
        return None


def ours(frame: pd.DataFrame, universe: pd.DataFrame = UNIVERSE):
    try:
        return validate_signals_submission(frame, universe)
    except InputError as exc:
        assert str(exc).startswith("invalid submission: ") and "\n" not in str(exc), str(exc)
        REJECTIONS.append(str(exc))
        return None


def set_live_values(values: np.ndarray, n_live: int, case: str, rng) -> None:
    """Values edge cases on the live rows (the first ``n_live``) or on the others."""
    live = values[:n_live]
    if case == "min_isclose_0":
        live[rng.integers(n_live)] = -1e-9
    elif case == "max_isclose_1":
        live[rng.integers(n_live)] = 1 + 1e-9
    elif case == "both_isclose":
        live[0], live[1] = -1e-9, 1 + 1e-9
    elif case == "min_isclose_0_max_1.2":
        live[0], live[1] = -1e-9, 1.2
    elif case == "min_just_below_isclose":
        live[0] = -1e-6
    elif case == "above_1":
        live[rng.integers(n_live)] = 1.2
    elif case == "negative":
        live[rng.integers(n_live)] = -0.2
    elif case == "exact_0_1":
        live[0], live[1] = 0.0, 1.0
    elif case == "nan_live":
        live[rng.integers(n_live)] = np.nan
    elif case == "inf_live":
        live[rng.integers(n_live)] = np.inf
    elif case == "constant":
        live[:] = 0.5
    elif case == "nearly_constant":
        live[:] = 0.5 + np.linspace(0, 1e-9, n_live)
    elif case == "bad_non_live" and len(values) > n_live:
        values[n_live:] = rng.choice([np.nan, 7.0, -3.0, np.inf], len(values) - n_live)


VALUE_CASES = ["uniform"] * 20 + ["min_isclose_0", "max_isclose_1", "both_isclose", "min_isclose_0_max_1.2",
                                 "min_just_below_isclose", "above_1", "negative", "exact_0_1", "nan_live", "nan_live",
                                 "inf_live", "constant", "nearly_constant", "bad_non_live"]


def random_submission(rng) -> pd.DataFrame:
    """A Signals-shaped frame with, each with some probability, one of the rules' edge cases."""
    n_live = int(rng.choice([95, 99, 100, 100, 101, 110, 120, 130]))
    tickers = list(rng.choice(TICKERS, n_live, replace=False)) + [f"X{i:03d}" for i in range(rng.integers(0, 6))]
    values = rng.uniform(0, 1, len(tickers))
    set_live_values(values, n_live, str(rng.choice(VALUE_CASES)), rng)
    ticker_case = rng.choice(["ok"] * 14 + ["nan_ticker", "dup_live", "dup_non_live"])
    if ticker_case == "nan_ticker":
        tickers, values = tickers + [np.nan], np.r_[values, 0.5]
    elif ticker_case == "dup_live":
        tickers, values = tickers + [tickers[0]], np.r_[values, 0.3]
    elif ticker_case == "dup_non_live":
        tickers, values = tickers + ["X900", "X900"], np.r_[values, 0.3, 0.4]
    ticker_col = str(rng.choice(list(TICKER_COLUMNS) * 6 + ["symbol", "id", "Ticker"]))
    signal_col = str(rng.choice(list(SIGNAL_COLUMNS) * 8 + ["probability", "target"]))
    frame = pd.DataFrame({ticker_col: pd.Series(tickers, dtype=object), signal_col: values})
    if rng.random() < 0.05:
        frame = frame[[signal_col, ticker_col]]  # signal first: wrong order
    dates = rng.choice(["none", "date", "friday_date", "both"], p=[0.5, 0.2, 0.25, 0.05])
    for name in {"none": [], "date": ["date"], "friday_date": ["friday_date"], "both": ["friday_date", "date"]}[dates]:
        frame.insert(int(rng.integers(0, frame.shape[1] + 1)), name, "2024-01-12")
    if rng.random() < 0.15:
        frame.insert(int(rng.integers(0, frame.shape[1] + 1)), "data_type", "live")
    if rng.random() < 0.05:
        frame["era"] = "x"
    return frame.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)


def test_accepts_exactly_what_numerai_tools_accepts_over_generated_frames():
    """Accept/reject and, when accepted, the same columns, live rows (order, index, values) and invalid tickers."""
    rng = np.random.default_rng(15)
    verdicts, REJECTIONS[:] = [], []
    for case in range(400):
        frame = random_submission(rng)
        before = frame.copy()
        expected, got = oracle(frame), ours(frame)
        pd.testing.assert_frame_equal(frame, before)  # ours never modifies the caller's frame
        assert (expected is None) == (got is None), (case, list(frame.columns), "numerai-tools accepts"
                                                     if expected is not None else "numerai-tools rejects")
        verdicts.append(got is not None)
        if got is None:
            continue
        ticker_col, signal_col, date_col, filtered, invalid = expected
        assert (got.ticker_column, got.signal_column, got.date_column) == (ticker_col, signal_col, date_col), case
        pd.testing.assert_frame_equal(got.filtered, filtered)
        assert got.invalid_tickers == sorted(invalid), case
    assert 0.3 < np.mean(verdicts) < 0.7, np.mean(verdicts)  # both verdicts well represented
    for rule in ("columns must be", "have no ticker", "appear more than once", "at least 100 needed",
                 "value(s) are NaN", "values must lie in [0, 1]", "values are constant"):
        assert sum(rule in message for message in REJECTIONS) >= 5, rule  # every rule was exercised


def good(n: int = 120, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"numerai_ticker": TICKERS[:n][::-1], "signal": rng.uniform(0.05, 0.95, n)})


EDGE_CASES = {
    "good": lambda: good(),
    "exactly_100": lambda: good(100),
    "99_tickers": lambda: good(99),
    "100_with_non_live": lambda: pd.concat([good(100), pd.DataFrame({"numerai_ticker": ["ZZZ"], "signal": [0.1]})]),
    "date_first": lambda: good().assign(date="2024-01-12")[["date", "numerai_ticker", "signal"]],
    "date_between": lambda: good().assign(friday_date=20240112)[["numerai_ticker", "friday_date", "signal"]],
    "two_date_columns": lambda: good().assign(friday_date="a", date="b"),
    "data_type_and_date": lambda: good().assign(data_type="live", date="x"),
    "prediction_header": lambda: good().rename(columns={"signal": "prediction"}),
    "bloomberg_ticker": lambda: good().rename(columns={"numerai_ticker": "bloomberg_ticker"}),
    "swapped": lambda: good()[["signal", "numerai_ticker"]],
    "probability_header": lambda: good().rename(columns={"signal": "probability"}),
    "extra_column": lambda: good().assign(era="x"),
    "bool_values": lambda: good().assign(signal=np.arange(120) % 2 == 0),
    "int_values_0_1": lambda: good().assign(signal=np.arange(120) % 2),
    "nan_value_outside_universe": lambda: pd.concat([good(), pd.DataFrame({"numerai_ticker": ["ZZZ"],
                                                                           "signal": [np.nan]})]),
    "empty": lambda: good().iloc[:0],
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_agree_with_numerai_tools(case):
    frame = EDGE_CASES[case]()
    assert (oracle(frame) is None) == (ours(frame) is None), case


def test_the_edge_cases_cover_both_verdicts():
    accepted = {case for case, make in EDGE_CASES.items() if oracle(make()) is not None}
    assert {"good", "exactly_100", "date_first", "date_between", "data_type_and_date", "bool_values"} <= accepted
    assert not {"99_tickers", "two_date_columns", "swapped", "probability_header", "extra_column"} & accepted


def test_tickers_compare_as_strings_like_numerai_tools():
    """Integer tickers (e.g. sedol codes read as numbers) match the universe's strings."""
    universe = pd.DataFrame({"sedol": [str(1000 + i) for i in range(120)]})
    frame = pd.DataFrame({"sedol": np.arange(1000, 1120), "signal": np.linspace(0.1, 0.9, 120)})
    got, expected = ours(frame, universe), oracle(frame, universe)
    assert got is not None and expected is not None
    pd.testing.assert_frame_equal(got.filtered, expected[3])
    assert got.filtered["sedol"].iloc[0] == "1000"
    pd.testing.assert_frame_equal(ours(frame, universe["sedol"]).filtered, got.filtered)  # a Series universe too


@pytest.mark.parametrize("frame, message", [
    (good()[["signal", "numerai_ticker"]], "columns must be a ticker column (ticker, sedol, bloomberg_ticker, "
                                           "composite_figi, numerai_ticker) then a signal column (prediction, signal)"),
    (pd.concat([good(), pd.DataFrame({"numerai_ticker": [np.nan], "signal": [0.5]})]),
     "1 row(s) have no ticker (NaN in `numerai_ticker`)"),
    (pd.concat([good(), good().iloc[:2]]), "2 live ticker(s) appear more than once (e.g. T0118 US, T0119 US)"),
    (good(99), "99 rows have a ticker of the universe, at least 100 needed"),
    (good().assign(signal=np.r_[np.nan, np.full(119, 0.5)]), "1 `signal` value(s) are NaN"),
    (good().assign(signal=np.linspace(0.1, 1.3, 120)), "values must lie in [0, 1] (min 0.1, max 1.3)"),
    (good().assign(signal=0.3), "`signal` values are constant"),
    (good().rename(columns={"numerai_ticker": "composite_figi"}),
     "the universe has no `composite_figi` column (its ticker columns: numerai_ticker)"),
])
def test_messages_name_the_problem(frame, message):
    with pytest.raises(InputError) as info:
        validate_signals_submission(frame, UNIVERSE[["numerai_ticker"]])
    assert str(info.value).startswith("invalid submission: ") and message in str(info.value), str(info.value)


# ---------------------------------------------------------------- eraflow predictions → submission


def keyed_predictions(path: Path, columns: dict[str, np.ndarray] | None = None, n: int = 120) -> Path:
    """An eraflow predictions file of a keyed store: two Fridays, ids "<era>|<ticker>", store order."""
    ids = np.array([f"{era}|{t}" for era in FRIDAYS for t in TICKERS[:n]], dtype=object)
    eras = np.repeat(FRIDAYS, n)
    rng = np.random.default_rng(7)
    columns = columns or {"pred_target": rng.normal(0.5, 0.3, 2 * n)}  # raw model output, outside [0, 1] too
    write_predictions(path, ids, eras, columns)
    return path


def test_latest_era_is_the_newest_friday_ranked_as_pandas_does(tmp_path):
    """Guards against submitting an older era, mixing eras, or values outside (0, 1)."""
    path = keyed_predictions(tmp_path / "p.parquet")
    frame = pd.read_parquet(path)
    frame.loc[130, "pred_target"] = frame.loc[131, "pred_target"]  # a tie in the newest era
    latest = latest_era_signals(frame, "numerai_ticker")
    newest = frame[frame["era"] == FRIDAYS[1]]
    expected = ((newest["pred_target"].rank(method="average") - 0.5) / len(newest)).to_numpy()
    assert (latest.era, latest.column) == (FRIDAYS[1], "pred_target")
    assert latest.frame["numerai_ticker"].tolist() == TICKERS[:120]
    np.testing.assert_allclose(latest.frame["signal"].to_numpy(), expected, rtol=0, atol=1e-15)
    assert 0 < latest.frame["signal"].min() and latest.frame["signal"].max() < 1
    assert latest.frame["signal"].iloc[10] == latest.frame["signal"].iloc[11]


def test_percentile_ranks_equal_pandas_average_ranks():
    """eraflow's one (rank − 0.5) / count (synthetic Signals data uses it too): pandas' average ranks as oracle,
    ties and NaN included, ndarray or Series."""
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=500), 1)
    values[rng.choice(500, 40, replace=False)] = np.nan
    series = pd.Series(values)
    expected = ((series.rank(method="average") - 0.5) / series.count()).to_numpy()
    np.testing.assert_array_equal(percentile_ranks(values), expected)
    np.testing.assert_array_equal(percentile_ranks(series), expected)


def test_latest_era_needs_keyed_ids_and_one_column(tmp_path):
    frame = pd.DataFrame({"id": ["n1", "n2"], "era": "0001", "prediction": [0.1, 0.2]})
    with pytest.raises(InputError, match=r"ids are not keyed as <era>\|<ticker>.*store ingested from Signals"):
        latest_era_signals(frame, "numerai_ticker")
    two = pd.read_parquet(keyed_predictions(tmp_path / "p.parquet", {"pred_a": np.ones(240), "pred_b": np.ones(240)}))
    with pytest.raises(InputError, match=r"has 2 prediction columns \(pred_a, pred_b\); choose one with --column"):
        latest_era_signals(two, "numerai_ticker")
    assert latest_era_signals(two, "numerai_ticker", "pred_b").column == "pred_b"
    with pytest.raises(InputError, match=r"no prediction column 'pred_c' \(numeric columns: pred_a, pred_b\)"):
        latest_era_signals(two, "numerai_ticker", "pred_c")


def test_read_universe_parquet_index_and_csv(tmp_path):
    UNIVERSE[["numerai_ticker"]].set_index("numerai_ticker").to_parquet(tmp_path / "indexed.parquet")
    pd.DataFrame({"ticker": ["007", "AAPL"], "x": [1, 2]}).to_csv(tmp_path / "u.csv", index=False)
    assert read_universe(tmp_path / "indexed.parquet")["numerai_ticker"].tolist() == TICKERS
    assert read_universe(tmp_path / "u.csv").to_dict("list") == {"ticker": ["007", "AAPL"]}  # leading zeros kept
    pd.DataFrame({"symbol": ["A"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="has no ticker column: expected one of ticker, sedol"):
        read_universe(tmp_path / "bad.parquet")


# ---------------------------------------------------------------- upload through a fake SignalsAPI


class FakeSignalsAPI:
    """The numerapi SignalsAPI methods eraflow calls; ``tournament_id`` as numerapi sets it."""

    tournament_id = 11

    def __init__(self):
        self.models = {"my_signals": "signals-uuid-1", "other": "signals-uuid-2"}
        self.token = ("PUBLICID", SECRET)
        self.calls: list[str] = []
        self.uploads: list[tuple[str, str, bytes]] = []
        self.error: Exception | None = None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.error is not None:
            raise self.error

    def get_models(self, tournament=None):
        self._call("get_models")
        return dict(self.models)

    def upload_predictions(self, file_path="predictions.csv", model_id=None, df=None, data_datestamp=None,
                           timeout=(10, 600)):
        self._call("upload_predictions")
        self.uploads.append((os.path.basename(file_path), model_id, Path(file_path).read_bytes()))
        return "signals-submission-7"


@pytest.fixture
def fake() -> FakeSignalsAPI:
    return FakeSignalsAPI()


def uploaded(fake: FakeSignalsAPI) -> pd.DataFrame:
    (_, _, content), = fake.uploads
    return pd.read_csv(io.BytesIO(content), dtype={c: str for c in TICKER_COLUMNS})


def test_submit_uploads_only_the_validated_live_rows(fake, tmp_path):
    frame = pd.concat([good(), pd.DataFrame({"numerai_ticker": ["GONE US"], "signal": [0.5]})]).assign(date="x")
    frame.to_parquet(tmp_path / "sub.parquet", index=False)
    result = submit_signals(fake, tmp_path / "sub.parquet", "my_signals", UNIVERSE[["numerai_ticker"]])
    assert (result.submission_id, result.model_id, result.rows, result.dropped, result.invalid_tickers) == (
        "signals-submission-7", "signals-uuid-1", 120, 1, 1)
    assert fake.calls == ["get_models", "upload_predictions"] and fake.uploads[0][:2] == ("sub.csv", "signals-uuid-1")
    sent = uploaded(fake)
    assert list(sent.columns) == ["numerai_ticker", "signal"] and sent["numerai_ticker"].tolist() == TICKERS[:120]
    np.testing.assert_array_equal(sent["signal"].to_numpy(), good()["signal"].to_numpy()[::-1])


def test_an_eraflow_predictions_file_submits_its_newest_era(fake, tmp_path):
    path = keyed_predictions(tmp_path / "preds.parquet")
    result = submit_signals(fake, path, "my_signals", UNIVERSE[["numerai_ticker", "ticker"]])
    assert (result.era, result.source_column, result.rows, result.ticker_column) == (
        FRIDAYS[1], "pred_target", 120, "numerai_ticker")
    expected = latest_era_signals(pd.read_parquet(path), "numerai_ticker").frame
    np.testing.assert_array_equal(uploaded(fake)["signal"].to_numpy(), expected["signal"].to_numpy())


def test_invalid_files_are_never_uploaded_and_need_no_client(fake, tmp_path):
    made = []

    def factory():
        made.append(1)
        return fake

    good(99).to_parquet(tmp_path / "short.parquet", index=False)
    with pytest.raises(InputError, match="at least 100 needed"):
        submit_signals(factory, tmp_path / "short.parquet", "my_signals", UNIVERSE)
    assert made == [] and fake.calls == []


def test_a_classic_client_is_refused_before_any_upload(tmp_path):
    """Guards against uploading a Signals file to a classic-tournament model."""
    good().to_parquet(tmp_path / "sub.parquet", index=False)
    classic = FakeSignalsAPI()
    classic.tournament_id = 8
    with pytest.raises(InputError, match=r"client is for tournament 8, not Signals \(11\)"):
        submit_signals(classic, tmp_path / "sub.parquet", "my_signals", UNIVERSE)
    assert classic.calls == []


def test_the_real_signals_client_is_a_signals_api():
    import numerapi

    client = numerai_client(None, signals=True)
    assert isinstance(client, numerapi.SignalsAPI) and client.tournament_id == 11
    check_signals_client(client)
    with pytest.raises(InputError, match=r"tournament 8, not Signals"):
        check_signals_client(numerai_client(None))  # the classic NumerAPI


# ---------------------------------------------------------------- CLI


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def cli_fake(fake, monkeypatch):
    made = []

    def factory(*, auth, progress_bars=False, signals=False):
        made.append((auth, signals))
        return fake

    monkeypatch.setattr("eraflow.cli.numerai.client_factory", factory)
    fake.made = made
    return fake


@pytest.fixture
def universe_file(tmp_path) -> Path:
    path = tmp_path / "universe.parquet"
    UNIVERSE[["numerai_ticker"]].to_parquet(path, index=False)
    return path


def one_line_error(out, message: str) -> None:
    lines = out.stderr.strip().splitlines()
    assert out.exit_code == 2, out.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.output and SECRET not in out.output


def test_cli_signals_dry_run_then_upload(cli_fake, tmp_path, universe_file):
    preds = keyed_predictions(tmp_path / "preds.parquet")
    out = run("submit", "--signals", preds, "--model", "my_signals", "--live", universe_file, "--dry-run")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == f"valid: 120 tickers (era {FRIDAYS[1]}, pred_target ranked), dry run, nothing uploaded"
    assert cli_fake.made == [] and cli_fake.calls == []
    out = run("submit", "--signals", preds, "--model", "other", "--live", universe_file)
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == (f"submitted 120 tickers (era {FRIDAYS[1]}, pred_target ranked) for Signals model "
                                  "other: signals-submission-7")
    assert cli_fake.made == [(True, True)] and cli_fake.uploads[0][1] == "signals-uuid-2"


def test_cli_signals_json(cli_fake, tmp_path, universe_file):
    pd.concat([good(), pd.DataFrame({"numerai_ticker": ["GONE US"], "signal": [0.5]})]).to_csv(
        tmp_path / "sub.csv", index=False)
    record = json.loads(run("submit", "--signals", tmp_path / "sub.csv", "--model", "my_signals", "--live",
                            universe_file, "--json").stdout)
    assert record == {"tournament": "signals", "model": "my_signals", "model_id": "signals-uuid-1", "rows": 120,
                      "dropped": 1, "invalid_tickers": 1, "ticker_column": "numerai_ticker", "signal_column": "signal",
                      "era": None, "source_column": None, "dry_run": False, "submission_id": "signals-submission-7"}


def test_cli_signals_bad_input(cli_fake, tmp_path, universe_file):
    good(99).to_parquet(tmp_path / "short.parquet", index=False)
    one_line_error(run("submit", "--signals", tmp_path / "short.parquet", "--model", "my_signals", "--live",
                       universe_file), "invalid submission: 99 rows have a ticker of the universe")
    good().to_parquet(tmp_path / "sub.parquet", index=False)
    one_line_error(run("submit", "--signals", tmp_path / "sub.parquet", "--model", "nobody", "--live",
                       universe_file), "no model named 'nobody' in this Numerai account (models: my_signals, other)")
    one_line_error(run("submit", "--signals", tmp_path / "sub.parquet", "--model", "m", "--live",
                       tmp_path / "none.parquet"), "no such universe file")
    one_line_error(run("submit", "--signals", tmp_path / "sub.parquet", "--model", "m", "--live", universe_file,
                       "--column", "x"), "--column applies to eraflow predictions files")
    one_line_error(run("submit", tmp_path / "sub.parquet", "--model", "m", "--live", universe_file, "--column", "x"),
                   "--column applies to --signals submissions only")
    assert cli_fake.uploads == []
    cli_fake.error = ValueError(f"Invalid API key ({SECRET})")
    one_line_error(run("submit", "--signals", tmp_path / "sub.parquet", "--model", "my_signals", "--live",
                       universe_file), "check your API keys")


def test_cli_signals_without_credentials_uses_the_real_factory(tmp_path, universe_file):
    good().to_parquet(tmp_path / "sub.parquet", index=False)
    out = run("submit", "--signals", tmp_path / "sub.parquet", "--model", "m", "--live", universe_file)
    one_line_error(out, "no Numerai credentials: set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")


def test_ingest_train_predict_then_submit_the_live_friday(cli_fake, tmp_path, universe_file):
    """The whole Signals journey on a keyed store: predict's ids come back as the newest Friday's tickers."""
    fridays = pd.date_range("2023-01-06", periods=8, freq="7D").date
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"date": np.repeat(fridays, len(TICKERS)), "numerai_ticker": TICKERS * len(fridays)})
    for k in range(4):
        rows[f"feature_{k}"] = rng.integers(0, 5, len(rows)).astype(np.int8)
    rows["target"] = np.clip(rows["feature_0"] / 4 + rng.normal(0, 0.2, len(rows)), 0, 1)
    rows.loc[rows["date"] == fridays[-1], "target"] = np.nan  # the live Friday has no target yet
    rows.to_parquet(tmp_path / "signals.parquet", index=False)
    (tmp_path / "linear.toml").write_text("alphas = [1.0]\n")  # one penalty: no alpha CV over 7 eras
    for args in (("ingest", tmp_path / "signals.parquet", tmp_path / "store"),
                 ("train", tmp_path / "store", "-o", tmp_path / "model", "--model", "linear", "--params",
                  tmp_path / "linear.toml", "--quiet"),
                 ("predict", tmp_path / "model", tmp_path / "store", "-o", tmp_path / "preds.parquet")):
        out = run(*args)
        assert out.exit_code == 0, (args[0], out.output)
    out = run("submit", "--signals", tmp_path / "preds.parquet", "--model", "my_signals", "--live", universe_file,
              "--json")
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert (record["era"], record["rows"], record["dropped"]) == (str(fridays[-1]), len(TICKERS), 0)
    sent = uploaded(cli_fake)
    assert sorted(sent["numerai_ticker"]) == TICKERS
    live = rows[rows["date"] == fridays[-1]].set_index("numerai_ticker")["feature_0"]
    corr = np.corrcoef(sent.set_index("numerai_ticker")["signal"], live.loc[sent["numerai_ticker"]])[0, 1]
    assert corr > 0.9  # the signal follows feature_0 for the right tickers: no ticker shuffled
