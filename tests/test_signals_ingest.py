"""Keyed (Signals) ingest, keyed prediction files and neutralizer / sample-weight alignment.

Oracle: plain pandas — the store row of (date, ticker) holds that source row's features and targets,
and each aligned neutralizer / weight is the file's value of the prediction row's (date, ticker).
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import IngestOptions, InputError, StoreError, ingest_files, open_store, plan_ingest
from eraflow.engine.evaluation.predictions import align_eras, align_predictions
from eraflow.engine.signals.aligned import neutralizers_for, sample_weights_for
from eraflow.engine.signals.keys import split_keys

from .conftest import tiny_frame, write_parquet

FRIDAYS = [dt.date(2024, 1, 5) + dt.timedelta(weeks=k) for k in range(5)]
N_TICKERS = 12


def signals_frame(seed: int = 0, n_features: int = 4) -> pd.DataFrame:
    """Signals-shaped rows (numerai_ticker, date, feature_*, target), a few tickers absent some Fridays, shuffled."""
    rng = np.random.default_rng(seed)
    rows = [(f"T{t:03d} US", d) for d in FRIDAYS for t in range(N_TICKERS) if rng.random() > 0.15]
    df = pd.DataFrame({"numerai_ticker": [r[0] for r in rows], "date": [r[1] for r in rows]})
    for j in range(n_features):
        df[f"feature_{j}"] = rng.integers(0, 5, len(df)).astype(np.int8)
    df["target"] = rng.choice([0, 0.25, 0.5, 0.75, 1.0, np.nan], len(df))
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_frame(path, df: pd.DataFrame, row_group_size: int | None = None):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group_size)
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def keyed(tmp_path):
    """A keyed store of ``signals_frame()`` and its source frame."""
    df = signals_frame()
    src = write_frame(tmp_path / "signals.parquet", df)
    return open_store(ingest_files([src], tmp_path / "store", IngestOptions(batch_rows=7)).store), df


# -- keyed ingest ----------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_keyed_store_rows_equal_the_source_rows_of_their_date_and_ticker(tmp_path, engine):
    """Guards: ids not "<ISO date>|<ticker>", rows mixed up while scattering, eras out of date order."""
    df = signals_frame(seed=1)
    src = write_frame(tmp_path / "s.parquet", df, row_group_size=9)
    store = open_store(ingest_files([src], tmp_path / "s", IngestOptions(batch_rows=5, engine=engine)).store)
    assert store.eras == [d.isoformat() for d in FRIDAYS]
    assert store.meta["keys"] == {"era": "date", "id": "numerai_ticker"}
    assert store.meta["extra_columns"] == [], "date and ticker are keys, not extra columns"
    eras, tickers = split_keys(store.ids)
    assert list(eras) == list(np.repeat(store.eras, np.diff(store.offsets)))
    oracle = df.assign(id=df.date.astype(str) + "|" + df.numerai_ticker).set_index("id")
    assert oracle.index.is_unique
    want = oracle.loc[store.ids]
    np.testing.assert_array_equal(tickers, want.numerai_ticker.to_numpy())
    np.testing.assert_array_equal(store.features, want[store.feature_names].to_numpy())
    np.testing.assert_array_equal(store.targets[:, 0], want.target.to_numpy(np.float32))
    for k, era in enumerate(store.eras):  # within an era, rows keep their source order
        in_source = df[df.date.astype(str) == era].numerai_ticker.tolist()
        assert list(tickers[store.offsets[k]:store.offsets[k + 1]]) == in_source, era


@pytest.mark.parametrize("column,values", [
    ("date", lambda d: pa.array(d, pa.date32())),
    ("date", lambda d: pa.array([dt.datetime.combine(x, dt.time(16, 30)) for x in d], pa.timestamp("us"))),
    ("date", lambda d: pa.array([x.isoformat() for x in d])),
    ("friday_date", lambda d: pa.array([int(x.strftime("%Y%m%d")) for x in d], pa.int64())),
    ("friday_date", lambda d: pa.array([x.isoformat() for x in d]).dictionary_encode()),
])
def test_every_date_form_gives_the_same_ids(tmp_path, column, values):
    """Guards: a date, datetime, YYYY-MM-DD or YYYYMMDD era column keying rows differently."""
    df = signals_frame(seed=2)
    table = pa.table({"numerai_ticker": df.numerai_ticker, column: values(df.date.tolist()),
                      "feature_0": df.feature_0, "target": df.target})
    pq.write_table(table, tmp_path / "s.parquet")
    store = open_store(ingest_files([tmp_path / "s.parquet"], tmp_path / "s").store)
    assert sorted(store.ids) == sorted(df.date.astype(str) + "|" + df.numerai_ticker)
    assert store.meta["keys"] == {"era": column, "id": "numerai_ticker"}


def test_era_and_id_columns_can_be_named(tmp_path):
    """Guards: --era-column / --id-column ignored in favour of the default names."""
    df = signals_frame(seed=3)
    df["bloomberg_ticker"] = df.numerai_ticker.str.replace(" US", " UW")
    df["week"] = df.date
    df["date"] = dt.date(2000, 1, 7)  # a decoy: the default era column
    src = write_frame(tmp_path / "s.parquet", df)
    result = run("ingest", src, tmp_path / "s", "--era-column", "week", "--id-column", "bloomberg_ticker", "--quiet")
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "s")
    assert store.meta["keys"] == {"era": "week", "id": "bloomberg_ticker"}
    assert sorted(store.ids) == sorted(df.week.astype(str) + "|" + df.bloomberg_ticker)
    assert store.meta["extra_columns"] == ["numerai_ticker", "date"], "other columns are kept beside the ids"


def test_era_column_of_dates_without_ids_is_keyed_by_ticker(tmp_path):
    """A Signals file with an `era` column of dates and no id is keyed (not refused for lacking an id)."""
    df = signals_frame(seed=4).rename(columns={"date": "era"})
    df["era"] = [int(d.strftime("%Y%m%d")) for d in df.era]
    store = open_store(ingest_files([write_frame(tmp_path / "s.parquet", df)], tmp_path / "s").store)
    assert store.eras == [d.isoformat() for d in FRIDAYS]
    assert store.meta["keys"] == {"era": "era", "id": "numerai_ticker"}


def test_changing_the_id_column_rebuilds_and_classic_plans_have_no_keys(tmp_path):
    """Guards: a store kept as "unchanged" though its ids would now come from another column."""
    df = signals_frame(seed=5)
    df["ticker"] = "X" + df.numerai_ticker
    src = write_frame(tmp_path / "s.parquet", df)
    assert ingest_files([src], tmp_path / "s").status == "built"
    assert ingest_files([src], tmp_path / "s").status == "unchanged"
    assert ingest_files([src], tmp_path / "s", IngestOptions(id_column="ticker")).status == "built"
    assert split_keys(open_store(tmp_path / "s").ids)[1][0].startswith("X")
    classic = plan_ingest([write_parquet(tmp_path / "c.parquet", tiny_frame())])
    assert classic.keys is None and "keys" not in classic.describe()


def test_keyed_sources_concatenate_like_classic_ones(tmp_path):
    df = signals_frame(seed=6)
    half = len(df) // 2
    a = write_frame(tmp_path / "a.parquet", df.iloc[:half])
    b = write_frame(tmp_path / "b.parquet", df.iloc[half:].rename(columns={"date": "friday_date"}))
    store = open_store(ingest_files([a, b], tmp_path / "s", IngestOptions(batch_rows=4)).store)
    assert sorted(store.ids) == sorted(df.date.astype(str) + "|" + df.numerai_ticker)
    assert store.meta["keys"] == {"era": "date", "id": "numerai_ticker"}, "the first source's names"


def bad_inputs(tmp_path) -> dict:
    """name: (argv after `ingest`, text the one error line must contain)."""
    df = signals_frame(seed=7)
    dup = pd.concat([df, df.iloc[[3]]])
    same_day = df.assign(date=[dt.datetime.combine(d, dt.time(9)) for d in df.date])
    same_day = pd.concat([same_day, same_day.iloc[[2]].assign(date=same_day.date.iloc[2] + dt.timedelta(hours=5))])
    paths = {
        "dup": write_frame(tmp_path / "dup.parquet", dup),
        "same_day": write_frame(tmp_path / "same_day.parquet", same_day),
        "no_ticker": write_frame(tmp_path / "no_ticker.parquet", df.rename(columns={"numerai_ticker": "symbol"})),
        "bad_date": write_frame(tmp_path / "bad_date.parquet", df.assign(date=df.date.astype(str).str.replace(
            "2024-01-12", "2024-13-12"))),
        "null_ticker": write_frame(tmp_path / "null_ticker.parquet", df.assign(
            numerai_ticker=df.numerai_ticker.where(df.index != 4, None))),
        "float_date": write_frame(tmp_path / "float_date.parquet", df.assign(date=1.5)),
        "null_date": write_frame(tmp_path / "null_date.parquet", df.assign(date=df.date.where(df.index != 5, None))),
        "ok": write_frame(tmp_path / "ok.parquet", df),
        "bloomberg": write_frame(tmp_path / "bloomberg.parquet", df.rename(
            columns={"numerai_ticker": "bloomberg_ticker", "date": "friday_date"})),
        "classic": write_parquet(tmp_path / "classic.parquet", tiny_frame()),
    }
    t0, d0 = dup.numerai_ticker.iloc[-1], dup.date.iloc[-1].isoformat()
    t2, d2 = same_day.numerai_ticker.iloc[2], same_day.date.iloc[2].date().isoformat()
    return {
        "duplicate date and ticker": ([paths["dup"]], f"duplicate row for date {d0}, numerai_ticker '{t0}'"),
        "two times of one day": ([paths["same_day"]], f"duplicate row for date {d2}, numerai_ticker '{t2}'"),
        "unknown ticker column": ([paths["no_ticker"]], "has no id column: expected one of numerai_ticker, ticker, "
                                                        "bloomberg_ticker, composite_figi, sedol"),
        "unknown --id-column": ([paths["ok"], "--id-column", "symbol"], "has no id column 'symbol'"),
        "unknown --era-column": ([paths["ok"], "--era-column", "week"], "has no era column 'week'"),
        "not a date": ([paths["bad_date"]], "date value '2024-13-12' is not a date"),
        "missing ticker": ([paths["null_ticker"]], "the id column numerai_ticker has missing values"),
        "missing date": ([paths["null_date"]], "the era column date has missing values"),
        "float dates": ([paths["float_date"]], "era column date has type double"),
        "era and id the same": ([paths["ok"], "--era-column", "date", "--id-column", "date"],
                                "date cannot be both the era (date) and the id (ticker) column"),
        "keyed and classic": ([paths["ok"], paths["classic"]], "ingest Signals and classic files into separate"),
        "two ticker columns": ([paths["ok"], paths["bloomberg"]], "bloomberg.parquet is keyed by ticker column "
                                                                  "bloomberg_ticker but ok.parquet by numerai_ticker"),
    }


@pytest.mark.parametrize("case", ["duplicate date and ticker", "two times of one day", "unknown ticker column",
                                  "unknown --id-column", "unknown --era-column", "not a date", "missing ticker",
                                  "missing date", "float dates", "era and id the same", "keyed and classic",
                                  "two ticker columns"])
def test_bad_signals_files_are_one_line_exit_2_and_build_nothing(tmp_path, case):
    """Guards "two ticker columns": numerai_ticker and bloomberg_ticker ids merged into one store (a date column
    named differently stays allowed: test_keyed_sources_concatenate_like_classic_ones)."""
    argv, message = bad_inputs(tmp_path)[case]
    line = one_error_line(run("ingest", *argv, tmp_path / "store", "--quiet"))
    assert message in line, line
    assert not (tmp_path / "store").exists()


def test_dry_run_shows_the_keys(tmp_path):
    src = write_frame(tmp_path / "s.parquet", signals_frame())
    result = run("ingest", src, tmp_path / "s", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keys"] == {"era": "date", "id": "numerai_ticker"}
    assert "keys: {'era': 'date', 'id': 'numerai_ticker'}" in run("ingest", src, tmp_path / "s", "--dry-run").stdout


@pytest.mark.parametrize("keys,message", [
    ({"era": "date"}, "key 'keys' must be an object with the era and id column names"),
    ({"era": "date", "id": 3}, "key 'keys' must be an object with the era and id column names"),
    ("date", "key 'keys' must be an object"),
])
def test_malformed_keys_in_meta_json_is_a_damaged_store(keyed, keys, message):
    store, _ = keyed
    meta = json.loads((store.path / "meta.json").read_text())
    (store.path / "meta.json").write_text(json.dumps({**meta, "keys": keys}))
    with pytest.raises(StoreError, match=f"damaged: meta.json {message}"):
        open_store(store.path)


# -- prediction files on a keyed store -------------------------------------------------------

def submission(df: pd.DataFrame, seed: int = 0, date_column: str = "friday_date") -> pd.DataFrame:
    """Signals-submission-shaped predictions of every row of ``df``, in another order."""
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({"numerai_ticker": df.numerai_ticker, date_column: df.date, "signal": rng.random(len(df)),
                        "data_type": "validation"})
    return out.sample(frac=1.0, random_state=seed + 1)


def id_file(df: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"id": df.date.astype(str) + "|" + df.numerai_ticker, "signal": values})


def test_date_and_ticker_predictions_align_as_their_keyed_ids(keyed, tmp_path):
    """Guards: a Signals-shaped file misaligned, or its date column taken as a prediction column."""
    store, df = keyed
    sub = submission(df)
    sub[["friday_date"]] = sub[["friday_date"]].map(lambda d: int(d.strftime("%Y%m%d")))  # numeric YYYYMMDD
    write_frame(tmp_path / "sub.parquet", sub)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    write_frame(tmp_path / "ids.parquet", id_file(df.loc[sub.index], sub.signal))
    want = align_predictions(store, tmp_path / "ids.parquet")
    for name in ("sub.parquet", "sub.csv"):
        got = align_predictions(store, tmp_path / name)
        assert got.columns == ["signal"], name
        np.testing.assert_array_equal(got.rows, want.rows)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.values, want.values)
    part = align_eras(store, tmp_path / "sub.parquet", None, np.array([1, 3]))
    keep = np.isin(want.era_index, [1, 3])
    np.testing.assert_array_equal(part.values, want.values[np.repeat(keep, np.diff(want.offsets))])


def test_keyed_prediction_file_errors_are_one_line(keyed, tmp_path):
    store, df = keyed
    no_ticker = write_frame(tmp_path / "a.parquet", submission(df).drop(columns="numerai_ticker"))
    with pytest.raises(InputError, match="has no `id` column and no ticker column to key its rows by: expected one "
                                         "of numerai_ticker, ticker"):
        align_predictions(store, no_ticker)
    other = submission(df)
    other["numerai_ticker"] = other.numerai_ticker.where(other.index != other.index[0], "ZZZ US")
    with pytest.raises(InputError, match=r"1 ids of b.parquet are not in the store \(e.g. '2024-01-\d\d\|ZZZ US'\)"):
        align_predictions(store, write_frame(tmp_path / "b.parquet", other))


def test_classic_store_still_needs_an_id_column(store_path, synth_dir, tmp_path):
    valid = pd.read_parquet(synth_dir / "validation.parquet")
    path = write_frame(tmp_path / "p.parquet", pd.DataFrame({"date": "2024-01-05", "numerai_ticker": valid.id,
                                                             "prediction": 0.5}))
    with pytest.raises(InputError, match="p.parquet has no `id` column$"):
        align_predictions(open_store(store_path), path)


def test_score_reads_a_signals_submission_on_a_keyed_store(keyed, tmp_path):
    """score works unchanged on a keyed store: same numbers from the id file and the Signals-shaped one."""
    store, df = keyed
    sub = submission(df)
    write_frame(tmp_path / "sub.parquet", sub)
    write_frame(tmp_path / "ids.parquet", id_file(df.loc[sub.index], sub.signal))
    a = run("score", tmp_path / "sub.parquet", "--store", store.path, "--json")
    b = run("score", tmp_path / "ids.parquet", "--store", store.path, "--json")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    assert json.loads(a.stdout) == json.loads(b.stdout)


# -- neutralizers and sample weights ---------------------------------------------------------

def side_file(df: pd.DataFrame, seed: int, extra_rows: bool = True) -> pd.DataFrame:
    """Neutralizers n0..n2 and sample_weight for every (date, ticker) of ``df`` plus rows nobody predicts."""
    rng = np.random.default_rng(seed)
    rows = df[["date", "numerai_ticker"]]
    if extra_rows:
        rows = pd.concat([rows, pd.DataFrame({"date": [dt.date(2023, 12, 29)] * 3 + [FRIDAYS[0]],
                                              "numerai_ticker": ["T000 US", "T001 US", "T002 US", "NEW US"]})])
    rows = rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return rows.assign(n0=rng.normal(size=len(rows)), n1=rng.normal(size=len(rows)),
                       n2=rng.integers(-3, 3, len(rows)), sample_weight=rng.uniform(0.1, 2, len(rows)))


def oracle(preds, side: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The file's values of each prediction row, through a plain pandas merge on (date, ticker)."""
    eras, tickers = split_keys(preds.ids)
    keys = pd.DataFrame({"date": eras, "numerai_ticker": tickers})
    side = side.assign(date=side.date.astype(str))
    return keys.merge(side, on=["date", "numerai_ticker"], how="left", validate="one_to_one")[columns].to_numpy(float)


@pytest.fixture
def aligned(keyed, tmp_path):
    """(store, predictions of a subset of eras, their source frame, the side file)."""
    store, df = keyed
    sub = submission(df)
    sub = sub[sub.friday_date != FRIDAYS[2]]  # predictions need not cover every era of the store
    preds = align_predictions(store, write_frame(tmp_path / "sub.parquet", sub))
    return store, preds, df, side_file(df, seed=11)


def test_neutralizers_and_weights_come_in_prediction_order(aligned, tmp_path):
    """Guards: values returned in file order, or neutralizers including the key or weight-less columns."""
    store, preds, _, side = aligned
    n_path = write_frame(tmp_path / "n.parquet", side.drop(columns="sample_weight").rename(
        columns={"date": "friday_date"}))
    neutralizers = neutralizers_for(store, preds, n_path)
    assert neutralizers.dtype == np.float64 and neutralizers.shape == (len(preds.rows), 3)
    np.testing.assert_array_equal(neutralizers, oracle(preds, side, ["n0", "n1", "n2"]))
    w_path = write_frame(tmp_path / "w.parquet", side[["numerai_ticker", "date", "sample_weight"]])
    weights = sample_weights_for(store, preds, w_path)
    assert weights.dtype == np.float64 and weights.shape == (len(preds.rows),)
    np.testing.assert_array_equal(weights, oracle(preds, side, ["sample_weight"])[:, 0])


@pytest.mark.parametrize("columns,chosen", [(["weight", "n0"], "weight"), (["n1"], "n1"),
                                            (["sample_weight", "weight"], "sample_weight")])
def test_weight_column_is_sample_weight_weight_or_the_only_number(aligned, tmp_path, columns, chosen):
    store, preds, _, side = aligned
    side = side.assign(weight=side.sample_weight * 2, n1=side.sample_weight * 3)
    path = write_frame(tmp_path / "w.parquet", side[["date", "numerai_ticker", *columns]])
    np.testing.assert_array_equal(sample_weights_for(store, preds, path), oracle(preds, side, [chosen])[:, 0])


def test_files_keyed_by_id_align_on_classic_and_keyed_stores(aligned, store_path, synth_dir, tmp_path):
    store, preds, _, side = aligned
    ids = side.date.astype(str) + "|" + side.numerai_ticker
    path = write_frame(tmp_path / "n.parquet", pd.DataFrame({"id": ids, "n0": side.n0}))
    np.testing.assert_array_equal(neutralizers_for(store, preds, path)[:, 0], oracle(preds, side, ["n0"])[:, 0])
    classic = open_store(store_path)
    valid = pd.read_parquet(synth_dir / "validation.parquet")
    write_frame(tmp_path / "p.parquet", pd.DataFrame({"id": valid.id, "prediction": np.arange(len(valid))}))
    classic_preds = align_predictions(classic, tmp_path / "p.parquet")
    rng = np.random.default_rng(0)
    side = pd.DataFrame({"id": valid.id, "era": valid.era, "n0": rng.normal(size=len(valid)),
                         "weight": rng.uniform(1, 2, len(valid))}).sample(frac=1.0, random_state=1)
    write_frame(tmp_path / "cn.parquet", side.drop(columns="weight"))
    write_frame(tmp_path / "cw.parquet", side)
    want = side.set_index("id").loc[classic_preds.ids]
    np.testing.assert_array_equal(neutralizers_for(classic, classic_preds, tmp_path / "cn.parquet")[:, 0], want.n0)
    np.testing.assert_array_equal(sample_weights_for(classic, classic_preds, tmp_path / "cw.parquet"), want.weight)
    write_frame(tmp_path / "keyed.parquet", side.rename(columns={"id": "numerai_ticker"}).assign(date="2024-01-05"))
    with pytest.raises(InputError, match="keyed.parquet has no `id` column; rows of a classic store's files"):
        neutralizers_for(classic, classic_preds, tmp_path / "keyed.parquet")


def bad_side_files(side: pd.DataFrame, preds) -> dict:
    """name: (frame, function, message regex)."""
    n, w = neutralizers_for, sample_weights_for
    eras, tickers = split_keys(preds.ids)
    first = (side.date.astype(str) == eras[0]) & (side.numerai_ticker == tickers[0])
    dropped = side[~first & ~((side.date.astype(str) == eras[5]) & (side.numerai_ticker == tickers[5]))]
    with_nan = side.assign(n1=side.n1.where(~first, np.nan))
    with_inf = side.assign(n0=side.n0.where(~first, -np.inf))
    unpredicted = side.date == dt.date(2023, 12, 29)
    return {
        "missing rows": (dropped, n, rf"has no neutralizer row for 2 of the {len(preds.ids)} prediction rows "
                                    rf"\(e\.g\. '{eras[0]}\|{tickers[0]}'\)"),
        "missing weight rows": (dropped, w, "has no sample weight row for 2 of"),
        "NaN neutralizer": (with_nan, n, rf"neutralizer n1 is nan for '{eras[0]}\|{tickers[0]}'; .* finite"),
        "inf neutralizer": (with_inf, n, r"neutralizer n0 is -inf for"),
        "zero weight": (side.assign(sample_weight=side.sample_weight.where(~first, 0.0)), w,
                        rf"sample weight sample_weight is 0.0 for '{eras[0]}\|{tickers[0]}'; .* > 0"),
        "negative weight": (side.assign(sample_weight=side.sample_weight.where(~first, -1.0)), w, "is -1.0 for"),
        "NaN weight": (side.assign(sample_weight=side.sample_weight.where(~first, np.nan)), w, "is nan for"),
        "duplicate keys": (pd.concat([side, side.iloc[[0]]]), n, "appears more than once"),
        "no numbers": (side[["date", "numerai_ticker"]].assign(x="a"), n, "has no numeric columns besides its keys"),
        "two weight candidates": (side[["date", "numerai_ticker", "n0", "n1"]], w,
                                  "has 2 numeric columns .* none is named sample_weight or weight"),
        "no ticker": (side.drop(columns="numerai_ticker"), n, "has no `id` column and no ticker column"),
        "no rows": (side.iloc[:0], n, "has no rows"),
        "unpredicted NaN is fine": (side.assign(n0=side.n0.where(~unpredicted, np.nan)), n, None),
    }


@pytest.mark.parametrize("case", ["missing rows", "missing weight rows", "NaN neutralizer", "inf neutralizer",
                                  "zero weight", "negative weight", "NaN weight", "duplicate keys", "no numbers",
                                  "two weight candidates", "no ticker", "no rows", "unpredicted NaN is fine"])
def test_bad_neutralizer_and_weight_files_are_one_line_input_errors(aligned, tmp_path, case):
    store, preds, _, side = aligned
    frame, function, message = bad_side_files(side, preds)[case]
    path = write_frame(tmp_path / "side.parquet", frame)
    if message is None:
        assert np.isfinite(function(store, preds, path)).all()
        return
    with pytest.raises(InputError, match=message) as err:
        function(store, preds, path)
    assert "\n" not in str(err.value)


def test_missing_side_file_is_an_input_error(aligned, tmp_path):
    store, preds, _, _ = aligned
    with pytest.raises(InputError, match="no such file"):
        neutralizers_for(store, preds, tmp_path / "nope.parquet")
