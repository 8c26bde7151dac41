"""Submission checks against the oracle, numerai-tools 0.7.2 ``validate_submission_numerai``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numerai_tools.submissions import validate_submission_numerai

from eraflow.engine.errors import InputError
from eraflow.engine.numerai.submission import (
    read_live_ids,
    read_submission,
    validate_submission,
)

LIVE = [f"n{i:05d}" for i in range(40)]


def good() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"id": LIVE[::-1], "prediction": rng.uniform(0.05, 0.95, len(LIVE))})


def with_value(row: int, value: float) -> pd.DataFrame:
    df = good()
    df.loc[row, "prediction"] = value
    return df


def extra_rows(ids, values) -> pd.DataFrame:
    return pd.concat([good(), pd.DataFrame({"id": ids, "prediction": values})], ignore_index=True)


def spread(lo: float, hi: float) -> pd.DataFrame:
    return good().assign(prediction=np.linspace(lo, hi, len(LIVE)))


CASES = {
    "good": good,
    "probability_header": lambda: good().rename(columns={"prediction": "probability"}),
    "wrong_header": lambda: good().rename(columns={"prediction": "pred"}),
    "upper_case_id": lambda: good().rename(columns={"id": "ID"}),
    "swapped_columns": lambda: good()[["prediction", "id"]],
    "extra_column": lambda: good().assign(era="0001"),
    "nan_id": lambda: extra_rows([np.nan], [0.5]),
    "nan_value": lambda: with_value(3, np.nan),
    "nan_value_in_non_live_row": lambda: extra_rows(["zzz"], [np.nan]),
    "value_1.2": lambda: with_value(0, 1.2),
    "negative_value": lambda: with_value(0, -0.2),
    "infinite_value": lambda: with_value(0, np.inf),
    "min_isclose_0": lambda: spread(-1e-9, 0.9),
    "max_isclose_1": lambda: spread(0.1, 1 + 1e-9),
    "both_ends_isclose": lambda: spread(-1e-9, 1 + 1e-9),
    "min_isclose_0_but_max_1.2": lambda: spread(-1e-9, 1.2),
    "min_just_below_isclose": lambda: spread(-1e-6, 0.9),
    "exact_0_and_1": lambda: spread(0.0, 1.0),
    "constant": lambda: good().assign(prediction=0.5),
    "nearly_constant": lambda: good().assign(prediction=0.5 + np.linspace(0, 1e-9, len(LIVE))),
    "duplicate_live_id": lambda: extra_rows([LIVE[5]], [0.3]),
    "duplicate_non_live_id": lambda: extra_rows(["zzz", "zzz"], [0.3, 0.4]),
    "missing_live_id": lambda: good().iloc[1:],
    "empty": lambda: good().iloc[:0],
    "extra_non_live_ids": lambda: extra_rows(["x1", "x2", "x3"], [0.1, 7.0, -3.0]),
}


def oracle_accepts(df: pd.DataFrame, live: list[str]) -> bool:
    try:
        validate_submission_numerai(pd.Series(live), df.copy())
    except AssertionError:
        return False
    return True


def eraflow_accepts(df: pd.DataFrame, live: list[str]) -> bool:
    try:
        validate_submission(df.copy(), live)
    except InputError as exc:
        assert str(exc).startswith("invalid submission: ") and "\n" not in str(exc)
        return False
    return True


@pytest.mark.parametrize("case", sorted(CASES))
def test_accepts_exactly_what_numerai_tools_accepts(case):
    df = CASES[case]()
    assert eraflow_accepts(df, LIVE) == oracle_accepts(df, LIVE), case


def test_the_cases_cover_both_verdicts():
    verdicts = {case: oracle_accepts(make(), LIVE) for case, make in CASES.items()}
    assert verdicts["good"] and verdicts["min_isclose_0"] and verdicts["extra_non_live_ids"]
    assert not verdicts["value_1.2"] and not verdicts["missing_live_id"] and not verdicts["constant"]


def test_a_single_live_row_has_no_std_and_passes_like_numerai_tools():
    df = pd.DataFrame({"id": ["a", "b"], "prediction": [0.4, 0.5]})
    assert eraflow_accepts(df, ["a"]) and oracle_accepts(df, ["a"])


def test_returns_the_live_rows_sorted_as_numerai_tools_filters_them():
    df = extra_rows(["x1", "x2"], [0.1, 0.2])
    kept = validate_submission(df, LIVE)
    *_, oracle, invalid = validate_submission_numerai(pd.Series(LIVE), df.copy())
    assert kept["id"].tolist() == oracle["id"].tolist() == sorted(LIVE)
    np.testing.assert_array_equal(kept["prediction"].to_numpy(), oracle["prediction"].to_numpy())
    assert sorted(invalid) == ["x1", "x2"]


@pytest.mark.parametrize("case, message", [
    ("missing_live_id", f"invalid submission: 1 live id(s) are missing (e.g. {LIVE[-1]})"),
    ("negative_value", "invalid submission: values must lie in [0, 1] (min -0.2"),
    ("value_1.2", "max 1.2)"),
    ("wrong_header", "columns must be exactly `id` and one of `prediction`, `probability` (got id, pred)"),
    ("duplicate_live_id", f"1 live id(s) appear more than once (e.g. {LIVE[5]})"),
    ("nan_value", "1 `prediction` value(s) are NaN"),
    ("nan_id", "1 row(s) have no id (NaN)"),
    ("constant", "`prediction` values are constant"),
])
def test_messages_name_the_problem(case, message):
    with pytest.raises(InputError) as info:
        validate_submission(CASES[case](), LIVE)
    assert message in str(info.value)


def test_non_numeric_values_are_an_input_error():
    df = good().assign(prediction="high")
    with pytest.raises(InputError, match="values must be numbers"):
        validate_submission(df, LIVE)


def test_read_submission_csv_parquet_and_index(tmp_path):
    df = good()
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet", index=False)
    df.set_index("id").to_parquet(tmp_path / "indexed.parquet")
    for name in ("p.csv", "p.parquet", "indexed.parquet"):
        back = read_submission(tmp_path / name)
        assert list(back.columns) == ["id", "prediction"], name
        assert back["id"].tolist() == df["id"].tolist(), name
        np.testing.assert_allclose(back["prediction"], df["prediction"], err_msg=name)
        assert eraflow_accepts(back, LIVE), name


def test_read_submission_keeps_ticker_text_and_a_ticker_index(tmp_path):
    """Guards: only `id` was read as text and restored from a pandas index, so CSV sedols lost their leading zeros
    ("0012345" → 12345) and a Signals parquet indexed by numerai_ticker lost its tickers."""
    df = pd.DataFrame({"sedol": ["0012345", "0000007"], "bloomberg_ticker": ["1234 JP", "007 HK"],
                       "numerai_ticker": ["0042", "A US"], "signal": [0.2, 0.8]})
    df.to_csv(tmp_path / "s.csv", index=False)
    assert read_submission(tmp_path / "s.csv").to_dict("list") == df.to_dict("list")
    df[["numerai_ticker", "signal"]].set_index("numerai_ticker").to_parquet(tmp_path / "indexed.parquet")
    back = read_submission(tmp_path / "indexed.parquet", "submission")
    assert back.to_dict("list") == {"numerai_ticker": ["0042", "A US"], "signal": [0.2, 0.8]}
    with pytest.raises(InputError, match="no such universe file"):
        read_submission(tmp_path / "nope.parquet", "universe")


def test_read_submission_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such prediction file"):
        read_submission(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(InputError, match="not a readable parquet or CSV"):
        read_submission(tmp_path / "empty.csv")
    (tmp_path / "trunc.parquet").write_bytes(b"PAR1" + b"\0" * 40)
    with pytest.raises(InputError, match="not a readable parquet or CSV"):
        read_submission(tmp_path / "trunc.parquet")


def test_read_live_ids_from_column_or_pandas_index(tmp_path):
    frame = pd.DataFrame({"id": LIVE, "era": "X", "feature_a": np.int8(2)})
    frame.to_parquet(tmp_path / "col.parquet", index=False)
    frame.set_index("id").to_parquet(tmp_path / "index.parquet")
    for name in ("col.parquet", "index.parquet"):
        assert read_live_ids(tmp_path / name).tolist() == LIVE, name


def test_read_live_ids_errors(tmp_path):
    pq.write_table(pa.table({"era": ["X"]}), tmp_path / "noid.parquet")
    with pytest.raises(InputError, match="no id column"):
        read_live_ids(tmp_path / "noid.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="no rows"):
        read_live_ids(tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="no such file"):
        read_live_ids(tmp_path / "missing.parquet")
