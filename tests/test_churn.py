"""eraflow churn and the weekly pipeline's churn: numbers equal to numerai-tools 0.7.2 on the same frames."""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timezone
from statistics import fmean

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from numerai_tools import signals as nt

from eraflow.cli import cli
from eraflow.engine.errors import InputError
from eraflow.engine.evaluation.churn import churn_of_files
from eraflow.engine.numerai.pipeline import SUBMISSIONS, keep_submission, kept_submissions, run_pipeline

TICKER = "numerai_ticker"
DATES = ["2026-11-13", "2026-11-20", "2026-11-27"]
TICKERS = [f"T{i:04d} US" for i in range(160)]


def signals_series(rng, tickers, ties: bool = True) -> pd.Series:
    """A Signals submission as numerai-tools takes it: values in (0, 1) indexed by ticker, sorted."""
    values = rng.uniform(0.01, 0.99, len(tickers))
    if ties:
        values = np.round(values, 1)  # many ties: ranks are averages
    return pd.Series(values, index=pd.Index(tickers, name=TICKER), name="signal").sort_index()


def write_signals(path, series: pd.Series, date: str | None = None):
    frame = series.reset_index()
    if date is not None:
        frame.insert(0, "friday_date", int(date.replace("-", "")))  # YYYYMMDD integers, as Numerai writes
    frame = frame.sample(frac=1, random_state=0)  # file order is not key order
    if str(path).endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def universes(rng) -> dict[str, pd.DataFrame]:
    """Neutralizers per date (3 columns), each date's universe a different slice of TICKERS."""
    spans = {DATES[0]: (0, 140), DATES[1]: (6, 150), DATES[2]: (10, 155)}
    return {d: pd.DataFrame(rng.normal(size=(b - a, 3)), columns=["n0", "n1", "n2"],
                            index=pd.Index(TICKERS[a:b], name=TICKER)) for d, (a, b) in spans.items()}


def write_neutralizers(path, frames: dict[str, pd.DataFrame]):
    long = pd.concat([f.reset_index().assign(date=pd.Timestamp(d).date()) for d, f in frames.items()])
    long.to_parquet(path, index=False)
    return path


def test_churn_of_signals_files_equals_numerai_tools_churn(tmp_path):
    """Guards: rows aligned by ticker whatever the file order, NaN values left out, ties as average ranks."""
    rng = np.random.default_rng(0)
    new = signals_series(rng, TICKERS[:140])
    new.iloc[3] = np.nan  # a row without a value: numerai-tools' dropna leaves it out
    olds = [signals_series(rng, TICKERS[5:145]), signals_series(rng, TICKERS[2:138], ties=False)]
    paths = [write_signals(tmp_path / f"old{i}.parquet", s) for i, s in enumerate(olds)]
    report = churn_of_files(write_signals(tmp_path / "new.csv", new), paths, backend="numpy")
    for pair, old in zip(report.pairs, olds):
        assert pair.churn == pytest.approx(nt.churn(new, old), abs=1e-9)
        assert pair.common == len(new.dropna().index.intersection(old.index))
        assert pair.skipped == "" and pair.neutral_churn is None
    assert report.mean_churn == pytest.approx(fmean(p.churn for p in report.pairs))
    assert report.max_churn == max(p.churn for p in report.pairs)
    assert report.payout_retained is None, "no penalty without neutralizers (it is defined on neutral churn)"


@pytest.mark.parametrize("n", [1, 10, 60])
def test_top_bottom_churn_equals_numerai_tools(tmp_path, n):
    """Guards: each side's top and bottom taken over its own tickers (not the common ones), ties in ticker order."""
    rng = np.random.default_rng(n)
    new, old = signals_series(rng, TICKERS[:120]), signals_series(rng, TICKERS[30:160])
    report = churn_of_files(write_signals(tmp_path / "new.parquet", new),
                            [write_signals(tmp_path / "old.parquet", old)], top_bottom=n, backend="numpy")
    assert report.pairs[0].churn == pytest.approx(nt.churn(new, old, top_bottom=n), abs=1e-12)


def test_too_little_overlap_is_skipped_like_numerai_tools(tmp_path):
    """Guards: a comparison numerai-tools refuses (< 80 % common) must not be averaged in."""
    rng = np.random.default_rng(1)
    new, old = signals_series(rng, TICKERS[:100]), signals_series(rng, TICKERS[30:130])
    with pytest.raises(AssertionError, match="overlapping"):
        nt.churn(new, old)
    report = churn_of_files(write_signals(tmp_path / "new.parquet", new),
                            [write_signals(tmp_path / "old.parquet", old)], backend="numpy")
    pair = report.pairs[0]
    assert math.isnan(pair.churn) and pair.common == 70 and "70%" in pair.skipped
    assert report.mean_churn is None and report.max_churn is None


def oracle_neutral(new, new_date, olds, neutralizers):
    """numerai-tools' mean neutral churn of ``new`` against ``olds`` [(series, date)], and per old alone."""
    weights = {d: pd.Series(1.0, index=f.index) for d, f in neutralizers.items()}

    def mean(previous):
        subs = {f"{i}:{d}": s for i, (s, d) in enumerate(previous)}
        with warnings.catch_warnings():  # numerai-tools 0.7.2 calls DataFrame.drop(inplace=True)
            warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
            return nt.calculate_mean_neutral_churn(
                new, neutralizers[new_date], weights[new_date], subs,
                {k: neutralizers[k.split(":")[1]] for k in subs}, {k: weights[k.split(":")[1]] for k in subs})
    return mean(olds), [mean([old]) for old in olds]


def test_neutral_churn_mean_and_payout_equal_numerai_tools(tmp_path):
    """Guards: each submission ranked and filled (0.5) on its own date's universe, neutralized against its own
    date's neutralizers; the mean over the comparisons and the penalty as calculate_mean_neutral_churn."""
    rng = np.random.default_rng(2)
    frames = universes(rng)
    new = signals_series(rng, TICKERS[8:150])  # misses universe tickers 150..154 (→ 0.5), has 8, 9 (dropped)
    olds = [(signals_series(rng, TICKERS[6:150]), DATES[1]), (signals_series(rng, TICKERS[0:140]), DATES[0])]
    paths = [write_signals(tmp_path / f"old{i}.parquet", s, d) for i, (s, d) in enumerate(olds)]
    report = churn_of_files(write_signals(tmp_path / "new.parquet", new, DATES[2]), paths,
                            write_neutralizers(tmp_path / "neutralizers.parquet", frames), backend="numpy")
    mean, singles = oracle_neutral(new, DATES[2], olds, frames)
    for pair, single in zip(report.pairs, singles):
        assert pair.neutral_churn == pytest.approx(single, abs=1e-7)
    assert report.pairs[0].neutral_common == 140 and report.pairs[1].neutral_common == 130
    assert report.mean_neutral_churn == pytest.approx(mean, abs=1e-7)
    assert report.payout_retained == pytest.approx(nt.neutral_churn_penalty(mean), abs=1e-9)
    assert 0 < report.payout_retained < 1


def test_mean_neutral_churn_is_one_when_nothing_compares(tmp_path):
    """Guards: every earlier universe too different → numerai-tools' 1.0, not a mean of nothing (NaN)."""
    rng = np.random.default_rng(3)
    frames = {DATES[0]: pd.DataFrame(rng.normal(size=(110, 2)), columns=["a", "b"],
                                     index=pd.Index(TICKERS[:110], name=TICKER)),
              DATES[1]: pd.DataFrame(rng.normal(size=(110, 2)), columns=["a", "b"],
                                     index=pd.Index(TICKERS[50:160], name=TICKER))}
    new, old = signals_series(rng, TICKERS[50:160]), signals_series(rng, TICKERS[:110])
    report = churn_of_files(write_signals(tmp_path / "new.parquet", new, DATES[1]),
                            [write_signals(tmp_path / "old.parquet", old, DATES[0])],
                            write_neutralizers(tmp_path / "n.parquet", frames), backend="numpy")
    mean, _ = oracle_neutral(new, DATES[1], [(old, DATES[0])], frames)
    assert mean == 1.0 and report.mean_neutral_churn == 1.0
    assert math.isnan(report.pairs[0].neutral_churn) and "neutral churn: only 55%" in report.pairs[0].skipped
    assert report.payout_retained == pytest.approx(nt.neutral_churn_penalty(1.0))


def test_classic_files_and_undated_neutralizers(tmp_path):
    """Classic (id, prediction) files with one neutralizer set for both: the numerai-tools steps by hand."""
    from numerai_tools.scoring import tie_kept_rank

    rng = np.random.default_rng(4)
    ids = [f"n{i:05x}" for i in range(300)]
    n = pd.DataFrame(rng.normal(size=(300, 4)), index=pd.Index(ids, name="id"))
    n.columns = [f"feature_{j}" for j in range(4)]
    new = pd.Series(rng.uniform(size=280), index=pd.Index(ids[:280], name="id"), name="prediction")
    old = pd.Series(rng.uniform(size=290), index=pd.Index(ids[10:], name="id"), name="prediction")
    new.to_frame().to_parquet(tmp_path / "new.parquet")  # ids in the pandas index, as df.to_parquet writes
    old.reset_index().to_csv(tmp_path / "old.csv", index=False)
    n.reset_index().assign(era="0575").to_parquet(tmp_path / "features.parquet", index=False)
    report = churn_of_files(tmp_path / "new.parquet", [tmp_path / "old.csv"], tmp_path / "features.parquet",
                            backend="numpy")

    def neutral(s):
        cleaned = tie_kept_rank(s.reindex(n.index)).fillna(0.5)
        return nt._neutralize_signal(cleaned, n)
    assert report.pairs[0].churn == pytest.approx(nt.churn(new, old), abs=1e-9)
    assert report.pairs[0].neutral_churn == pytest.approx(nt.churn(neutral(new), neutral(old)), abs=1e-7)


def test_backends_agree(tmp_path):
    rng = np.random.default_rng(5)
    frames = universes(rng)
    new = write_signals(tmp_path / "new.parquet", signals_series(rng, TICKERS[10:155]), DATES[2])
    old = write_signals(tmp_path / "old.parquet", signals_series(rng, TICKERS[6:150]), DATES[1])
    neutralizers = write_neutralizers(tmp_path / "n.parquet", frames)
    numpy, numba = (churn_of_files(new, [old], neutralizers, backend=b) for b in ("numpy", "numba"))
    assert numba.pairs[0].churn == pytest.approx(numpy.pairs[0].churn, abs=1e-9)
    assert numba.mean_neutral_churn == pytest.approx(numpy.mean_neutral_churn, abs=1e-9)


# ---------------------------------------------------------------- the command


def test_cli_table_and_json(tmp_path):
    rng = np.random.default_rng(6)
    frames = universes(rng)
    new = write_signals(tmp_path / "new.parquet", signals_series(rng, TICKERS[10:155]), DATES[2])
    olds = [write_signals(tmp_path / "week2.parquet", signals_series(rng, TICKERS[6:150]), DATES[1]),
            write_signals(tmp_path / "week1.parquet", signals_series(rng, TICKERS[0:140]), DATES[0])]
    neutralizers = write_neutralizers(tmp_path / "n.parquet", frames)
    args = ["churn", str(new), *map(str, olds), "--neutralizers", str(neutralizers), "--backend", "numpy"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["previous", "common", "churn", "neutral", "churn"]
    assert [line.split()[0] for line in lines[1:3]] == ["week2.parquet", "week1.parquet"]
    assert lines[-1].startswith("mean neutral churn ") and "payout retained" in lines[-1]

    doc = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    report = churn_of_files(new, olds, neutralizers, backend="numpy")
    assert doc["mean_neutral_churn"] == pytest.approx(report.mean_neutral_churn)
    assert [p["previous"] for p in doc["pairs"]] == list(map(str, olds))
    assert doc["payout_retained"] == pytest.approx(report.payout_retained) and doc["min_overlap"] == 0.8


def test_cli_json_writes_null_for_a_skipped_comparison(tmp_path):
    rng = np.random.default_rng(7)
    new = write_signals(tmp_path / "new.parquet", signals_series(rng, TICKERS[:100]))
    old = write_signals(tmp_path / "old.parquet", signals_series(rng, TICKERS[100:]))
    result = CliRunner().invoke(cli, ["churn", str(new), str(old), "--json"])
    assert result.exit_code == 0, result.output
    pair, = json.loads(result.stdout)["pairs"]
    assert pair["churn"] is None and pair["common"] == 0 and pair["skipped"] == "no common rows"


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


BAD = {
    "no prediction column": (_frame(numerai_ticker=["A", "B"], score=[0.1, 0.2]), "no prediction column"),
    "no key": (_frame(stock=["A", "B"], signal=[0.1, 0.2]), "no id or ticker column"),
    "duplicate ticker": (_frame(numerai_ticker=["A", "A"], signal=[0.1, 0.2]), "'A' appears more than once"),
    "two dates": (_frame(date=["2026-11-20", "2026-11-27"], numerai_ticker=["A", "B"], signal=[0.1, 0.2]),
                  "holds 2 dates"),
    "bad date": (_frame(date=["20261399", "20261127"], numerai_ticker=["A", "B"], signal=[0.1, 0.2]),
                 "is not a date"),
    "text values": (_frame(numerai_ticker=["A", "B"], signal=["x", "y"]), "must hold numbers"),
    "other key kind": (_frame(bloomberg_ticker=["A", "B"], signal=[0.1, 0.2]), "keyed by bloomberg_ticker"),
    "classic against signals": (_frame(id=["A", "B"], prediction=[0.1, 0.2]), "keyed by id"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_one_line_errors(tmp_path, case):
    frame, message = BAD[case]
    _frame(numerai_ticker=["A", "B", "C"], signal=[0.1, 0.5, 0.9]).to_parquet(tmp_path / "new.parquet")
    frame.to_parquet(tmp_path / "old.parquet", index=False)
    result = CliRunner().invoke(cli, ["churn", str(tmp_path / "new.parquet"), str(tmp_path / "old.parquet")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def test_neutralizer_problems_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(8)
    frames = universes(rng)
    dated = write_signals(tmp_path / "dated.parquet", signals_series(rng, TICKERS[10:150]), DATES[2])
    undated = write_signals(tmp_path / "undated.parquet", signals_series(rng, TICKERS[10:150]))
    other_day = write_signals(tmp_path / "other.parquet", signals_series(rng, TICKERS[10:150]), "2026-12-04")
    neutralizers = write_neutralizers(tmp_path / "n.parquet", frames)
    nan = pd.read_parquet(neutralizers)
    nan.loc[5, "n1"] = np.nan
    nan.to_parquet(tmp_path / "nan.parquet")
    pd.concat([nan.dropna(), nan.dropna().iloc[:1]]).to_parquet(tmp_path / "dup.parquet")
    cases = [((dated, undated, neutralizers), "undated.parquet has no date column"),
             ((dated, other_day, neutralizers), "has no rows of 2026-12-04"),
             ((dated, undated, tmp_path / "nan.parquet"), "hold NaN or infinite neutralizers (e.g. n1"),
             ((dated, undated, tmp_path / "dup.parquet"), "appears more than once; one row per (date, numerai_ticker)"),
             ((dated, undated, tmp_path / "missing.parquet"), "no such neutralizer file")]
    for (new, old, n), message in cases:
        result = CliRunner().invoke(cli, ["churn", str(new), str(old), "--neutralizers", str(n)])
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, (message, result.output)
        assert message in result.stderr, result.stderr
    with pytest.raises(InputError, match="at least one earlier"):
        churn_of_files(dated, [])
    assert CliRunner().invoke(cli, ["churn", str(dated)]).exit_code == 2  # click: PREVIOUS required


SEDOLS = [f"{i:07d}" for i in range(1, 161)]  # numeric-looking tickers with leading zeros


def sedol_frames(rng) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """A new and an old sedol submission and the undated neutralizers of their universe (sedols as text)."""
    new = pd.Series(rng.uniform(size=150), index=pd.Index(SEDOLS[:150], name="sedol"), name="signal")
    old = pd.Series(rng.uniform(size=150), index=pd.Index(SEDOLS[5:155], name="sedol"), name="signal")
    neutral = pd.DataFrame(rng.normal(size=(160, 2)), columns=["n0", "n1"], index=pd.Index(SEDOLS, name="sedol"))
    return new, old, neutral


def test_csv_sedols_keep_their_leading_zeros(tmp_path):
    """Guards: a CSV read with sedols as numbers ("0000001" → 1) matched none of the neutralizers' sedols, every
    value became 0.5, the comparison was skipped and the payout was silently wrong; the CSVs must give the
    parquet files' numbers."""
    new, old, neutral = sedol_frames(np.random.default_rng(11))
    neutral.reset_index().to_parquet(tmp_path / "n.parquet", index=False)
    for suffix in ("csv", "parquet"):
        write_signals(tmp_path / f"new.{suffix}", new)
        write_signals(tmp_path / f"old.{suffix}", old)
    csv = churn_of_files(tmp_path / "new.csv", [tmp_path / "old.csv"], tmp_path / "n.parquet", backend="numpy")
    pq_ = churn_of_files(tmp_path / "new.parquet", [tmp_path / "old.parquet"], tmp_path / "n.parquet",
                         backend="numpy")
    assert csv.pairs[0].skipped == "" and csv.pairs[0].neutral_common == 160
    assert csv.pairs[0].neutral_churn == pytest.approx(pq_.pairs[0].neutral_churn, abs=1e-12)
    assert csv.mean_neutral_churn == pytest.approx(pq_.mean_neutral_churn, abs=1e-12) != 1.0
    assert csv.pairs[0].churn == pytest.approx(nt.churn(new, old), abs=1e-9)


def test_keys_outside_the_universe_are_an_error_not_a_payout(tmp_path):
    """Guards: sedols that are not the neutralizers' (here numbers without leading zeros) were all filled with
    0.5 and reported as mean neutral churn 1.0, payout retained 0.0002, exit 0."""
    new, old, neutral = sedol_frames(np.random.default_rng(12))
    neutral.reset_index().to_parquet(tmp_path / "n.parquet", index=False)
    write_signals(tmp_path / "new.parquet", new)
    write_signals(tmp_path / "old.parquet", old)
    stripped = old.rename(index=lambda s: s.lstrip("0"))  # "0000006" → "6": not in the universe
    write_signals(tmp_path / "stripped.parquet", stripped)
    partly = old.rename(index=lambda s: s.lstrip("0") if int(s) % 2 == 0 else s)  # half outside: under 100 in
    write_signals(tmp_path / "partly.parquet", partly)
    for bad, count in (("stripped", 0), ("partly", 75)):
        result = CliRunner().invoke(cli, ["churn", str(tmp_path / "new.parquet"), str(tmp_path / f"{bad}.parquet"),
                                          "--neutralizers", str(tmp_path / "n.parquet")])
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
        assert f"{bad}.parquet: {count} of its 150 sedol values are in the universe of" in result.stderr
        assert "at least 100 needed" in result.stderr
    fine = churn_of_files(tmp_path / "new.parquet", [tmp_path / "old.parquet"], tmp_path / "n.parquet",
                          backend="numpy")
    assert fine.pairs[0].skipped == "" and not math.isnan(fine.pairs[0].neutral_churn)


def test_a_signals_parquet_indexed_by_ticker_is_read(tmp_path):
    """Guards: only an `id` index was restored as a column, so df.set_index("numerai_ticker").to_parquet failed
    ("has no id or ticker column") although `eraflow submit --signals` accepts it."""
    rng = np.random.default_rng(13)
    new, old = signals_series(rng, TICKERS[:150]), signals_series(rng, TICKERS[5:155])
    new.to_frame().to_parquet(tmp_path / "new.parquet")  # numerai_ticker is the pandas index
    old.to_frame().assign(friday_date=20261127).to_parquet(tmp_path / "old.parquet")
    report = churn_of_files(tmp_path / "new.parquet", [tmp_path / "old.parquet"], backend="numpy")
    assert report.pairs[0].churn == pytest.approx(nt.churn(new, old), abs=1e-9)
    assert report.pairs[0].common == 145


# ---------------------------------------------------------------- the weekly pipeline


PIPELINE = """
workdir = "work"

[data]
source = "synthetic"
eras = 16
rows_per_era = 80
features = 12
seed = 4

[train]
targets = ["target"]
params = "fast.toml"

[postprocess]
neutralize = {neutralize}

[submit]
model = "my_model"
dry_run = true
"""


def write_pipeline(tmp_path, neutralize: float):
    (tmp_path / "fast.toml").write_text('preset = "starter"\nn_estimators = 15\nnum_threads = 1\n')
    path = tmp_path / "pipeline.toml"
    path.write_text(PIPELINE.replace("{neutralize}", str(neutralize)))
    return path


def test_pipeline_keeps_each_submission_and_reports_churn_against_the_last_five(tmp_path):
    """Guards: the kept file is what was validated; only the five newest earlier ones are compared (newest
    first); a skipped submit step still reports; a file not named by eraflow in the folder is ignored."""
    first = run_pipeline(write_pipeline(tmp_path, 0.0))
    work = tmp_path / "work"
    kept, = kept_submissions(work / SUBMISSIONS)
    assert kept.read_bytes() == (work / "live_predictions.parquet").read_bytes()
    assert first.churn is not None and first.churn.pairs == [] and first.churn.new == str(kept)

    live = pd.read_parquet(kept)
    rng = np.random.default_rng(9)
    older = []
    for day in range(1, 7):  # six earlier submissions, kept before the first run's
        path = tmp_path / f"made{day}.parquet"
        live.assign(prediction=rng.uniform(size=len(live))).to_parquet(path, index=False)
        older.append(keep_submission(path, work / SUBMISSIONS, 800 + day, datetime(2026, 1, day, tzinfo=timezone.utc)))
    (work / SUBMISSIONS / "notes.parquet").write_bytes(b"not kept by eraflow")

    second = run_pipeline(write_pipeline(tmp_path, 0.7))
    assert dict((s, st) for s, st, _ in second.steps)["submit"] == "ran"
    everything = kept_submissions(work / SUBMISSIONS)
    assert everything[:6] == older and everything[6] == kept and len(everything) == 8
    assert older[0].name == "20260101T000000.000000Z_round801.parquet"
    report = second.churn
    expected = [kept, *older[::-1][:4]]  # newest first: the first run's, then the four newest made ones
    assert [p.previous for p in report.pairs] == list(map(str, expected))
    newest = pd.read_parquet(everything[-1]).set_index("id")["prediction"]
    for pair, path in zip(report.pairs, expected):
        assert pair.churn == pytest.approx(nt.churn(newest, pd.read_parquet(path).set_index("id")["prediction"]),
                                           abs=1e-9)
    assert 0 < report.pairs[0].churn < 0.5 < report.pairs[1].churn, "re-neutralized vs random earlier files"

    result = CliRunner().invoke(cli, ["run", str(tmp_path / "pipeline.toml")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = lines.index(f"churn of {everything[-1].name} against the 5 kept before it:")
    assert lines[at + 2].split()[0] == kept.name and lines[at + 7].startswith("  mean churn ")
    doc = json.loads(CliRunner().invoke(cli, ["run", str(tmp_path / "pipeline.toml"), "--json"]).stdout)
    assert len(doc["churn"]["pairs"]) == 5 and len(kept_submissions(work / SUBMISSIONS)) == 8, \
        "skipped submit steps keep nothing new"


def test_an_unreadable_kept_file_only_warns(tmp_path, caplog):
    """Guards: the submission already went through, so a damaged kept file must not fail the run."""
    path = write_pipeline(tmp_path, 0.0)
    run_pipeline(path)
    (tmp_path / "work" / SUBMISSIONS / "29991231T000000.000000Z.parquet").write_bytes(b"PAR1 damaged")
    result = run_pipeline(path)
    assert result.churn is None and dict((s, st) for s, st, _ in result.steps)["submit"] == "skipped"
    assert any(r.getMessage().startswith("churn not computed: ") for r in caplog.records)


def test_numerai_rounds_name_the_kept_files(tmp_path):
    """Guards: with source = "numerai" each upload is kept under its round, and the next round compares with it."""
    from eraflow.engine.data.synth import SynthSpec, write_synthetic
    from tests.test_numerai import FakeNumerAPI
    from tests.test_pipeline import NUMERAI_PIPELINE, _served

    spec = {"eras": 12, "rows_per_era": 60, "features": 16, "seed": 5}
    write_synthetic(tmp_path / "round1", SynthSpec(**spec))
    write_synthetic(tmp_path / "round2", SynthSpec(**{**spec, "seed": 6}))
    api = FakeNumerAPI(_served(tmp_path / "round1"), round_num=100)
    write_pipeline(tmp_path, 0.0)
    path = tmp_path / "pipeline.toml"
    path.write_text(NUMERAI_PIPELINE)
    run_pipeline(path, client_factory=lambda auth: api)
    api.round = 101
    api.files["v5.2/live.parquet"] = (tmp_path / "round2" / "live.parquet").read_bytes()
    report = run_pipeline(path, client_factory=lambda auth: api).churn
    first, second = kept_submissions(tmp_path / "pipeline" / SUBMISSIONS)
    assert first.name.endswith("_round100.parquet") and second.name.endswith("_round101.parquet")
    assert len(api.uploads) == 2 and report.new == str(second) and [p.previous for p in report.pairs] == [str(first)]
    new, old = (pd.read_parquet(p).set_index("id")["prediction"] for p in (second, first))
    pair, = report.pairs
    assert pair.common == len(new.index.intersection(old.index)) == 49  # of 63 live ids: < 80 %
    with pytest.raises(AssertionError, match="overlapping"):
        nt.churn(new, old)
    assert math.isnan(pair.churn) and pair.skipped == "only 78% of rows common (< 80%)"
