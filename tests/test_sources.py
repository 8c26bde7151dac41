"""engine/data/sources.py: which files are keyed (date, ticker) and the one-line errors naming what a source lacks."""

from __future__ import annotations

import pyarrow as pa
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine.data.sources import inspect_source, is_keyed, is_parquet, is_text
from eraflow.engine.errors import InputError
from tests.conftest import tiny_frame, write_parquet

DATES = ["2024-01-05"] * 6
TICKERS = [f"T{i} US" for i in range(6)]


def schema(*names: str) -> pa.Schema:
    return pa.schema([(n, pa.string()) for n in names])


@pytest.mark.parametrize("names, keyed", [
    (("id", "era", "feature_a"), False),  # classic
    (("id", "feature_a"), False),  # classic without its era: refused as classic (below), not as keyed
    (("id", "date", "feature_a"), True),  # a date column: the file is keyed, `id` is no ticker
    (("id", "numerai_ticker", "feature_a"), True),  # a ticker column: keyed (its date is missing)
    (("date", "numerai_ticker", "feature_a"), True),
    (("era", "numerai_ticker", "feature_a"), True),  # no id but a ticker
    (("feature_a",), True),  # neither: asked for a date and a ticker
])
def test_is_keyed(names, keyed):
    assert is_keyed(schema(*names)) is keyed


def test_a_classic_file_without_era_is_told_so(tmp_path):
    """Guards: a file with `id` but no `era` was called keyed and told "has no era column: expected one of
    friday_date, date, era", or with a date column "has no id column: expected one of numerai_ticker, …"."""
    columns = tiny_frame()
    del columns["era"]
    path = write_parquet(tmp_path / "no_era.parquet", columns)
    with pytest.raises(InputError, match=r"no_era.parquet has no era column \(`era`\)$"):
        inspect_source(path)
    result = CliRunner().invoke(cli, ["ingest", str(path), str(tmp_path / "store"), "--quiet"])
    assert result.exit_code == 2 and result.stderr.strip().endswith("has no era column (`era`)"), result.output
    dated = write_parquet(tmp_path / "dated.parquet", {"id": [str(i) for i in range(6)], "date": DATES,
                                                     "feature_a": [1] * 6})
    with pytest.raises(InputError, match="has no id column: expected one of numerai_ticker"):
        inspect_source(dated)  # keyed by its date: the ticker is what is missing
    keyed = inspect_source(write_parquet(tmp_path / "k.parquet", {"date": DATES, "numerai_ticker": TICKERS}))
    assert keyed.keys == {"era": "date", "id": "numerai_ticker"}


def test_is_parquet_and_is_text(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", {"x": [1]})
    (tmp_path / "a.csv").write_text("x\n1\n")
    assert is_parquet(path) and not is_parquet(tmp_path / "a.csv")
    assert is_text(pa.string()) and is_text(pa.large_string()) and is_text(pa.dictionary(pa.int32(), pa.string()))
    assert not is_text(pa.int64()) and not is_text(pa.dictionary(pa.int32(), pa.int64()))
