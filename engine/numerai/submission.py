"""Numerai submission checks: the rules of numerai-tools 0.7.2 ``validate_submission_numerai``.

Numerai rejects an upload that fails these rules, so eraflow applies them before uploading and
reports each failure as one line. The rules, in numerai-tools' order:

1. headers are exactly ``[id, prediction]`` or ``[id, probability]``;
2. no NaN id;
3. after keeping the rows whose id is a live id: no duplicate id, and at least ``len(live_ids)``
   rows (every live id predicted); rows with other ids are allowed and dropped;
4. on the kept rows: no NaN value; values in [0, 1], where a minimum ``np.isclose`` to 0 or a
   maximum ``np.isclose`` to 1 is allowed just outside; a standard deviation (pandas, ddof 1)
   not ``np.isclose`` to 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..data.sources import is_parquet, open_parquet
from ..errors import InputError
from ..signals.keys import TICKER_COLUMNS

ID_COLUMN = "id"
PREDICTION_COLUMNS = ("prediction", "probability")  # numerai-tools NUMERAI_ALLOWED_PRED_COLS
KEY_COLUMNS = (ID_COLUMN, *TICKER_COLUMNS)  # read as text from a CSV; a pandas index of these is restored
EXAMPLES = 3  # ids quoted in a message


def _invalid(problem: str) -> InputError:
    return InputError(f"invalid submission: {problem}")


def _examples(ids: Iterable[str]) -> str:
    shown = sorted(ids)[:EXAMPLES]
    return ", ".join(shown) + (", …" if len(shown) == EXAMPLES else "")


def check_headers(df: pd.DataFrame) -> str:
    """The prediction column's name when the columns are exactly ``[id, prediction|probability]``."""
    allowed = [[ID_COLUMN, col] for col in PREDICTION_COLUMNS]
    if list(df.columns) not in allowed:
        got = ", ".join(map(str, df.columns)) or "none"
        raise _invalid(f"columns must be exactly `id` and one of `prediction`, `probability` (got {got})")
    return df.columns[1]


def live_rows(df: pd.DataFrame, live_ids: pd.Series) -> pd.DataFrame:
    """Rows of ``df`` whose id is a live id, ids as str, sorted by id; errors for NaN, duplicate or missing ids.

    1. NaN ids reject the file; ids are compared as ``str`` (numerai-tools ``astype(str)``).
    2. Rows with non-live ids are dropped; duplicated live ids reject.
    3. Fewer kept rows than ``len(live_ids)`` rejects (a live id without a prediction).
    """
    ids = df[ID_COLUMN]
    if ids.isna().any():
        raise _invalid(f"{int(ids.isna().sum())} row(s) have no id (NaN)")
    sub = df.assign(**{ID_COLUMN: ids.astype(str)})
    live = live_ids.astype(str)
    kept = sub[sub[ID_COLUMN].isin(live)].sort_values(ID_COLUMN)
    dup = kept[ID_COLUMN][kept[ID_COLUMN].duplicated()]
    if len(dup):
        raise _invalid(f"{dup.nunique()} live id(s) appear more than once (e.g. {_examples(dup.unique())})")
    if len(kept) < len(live):
        missing = set(live) - set(kept[ID_COLUMN])
        if missing:
            raise _invalid(f"{len(missing)} live id(s) are missing (e.g. {_examples(missing)})")
        raise _invalid(f"{len(kept)} rows for {len(live)} live ids (the live id list has duplicates)")
    return kept


def _numeric(values: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        try:
            return pd.to_numeric(values).astype(float)
        except (TypeError, ValueError):
            raise _invalid(f"`{name}` values must be numbers (got {values.dtype})") from None
    return values


def check_values(values: pd.Series, name: str) -> None:
    """Errors unless ``values`` have no NaN, lie in [0, 1] (isclose at the ends) and vary."""
    values = _numeric(values, name)
    if values.isna().any():
        raise _invalid(f"{int(values.isna().sum())} `{name}` value(s) are NaN")
    lo, hi = values.min(), values.max()
    low_ok, high_ok = bool(np.isclose(lo, 0)), bool(np.isclose(hi, 1))
    in_range = (values.between(0, 1).all() or (low_ok and values.le(1).all())
                or (values.ge(0).all() and high_ok) or (low_ok and high_ok))
    if not in_range:
        raise _invalid(f"values must lie in [0, 1] (min {lo:.6g}, max {hi:.6g})")
    if np.isclose(0, values.std()):
        raise _invalid(f"`{name}` values are constant (standard deviation {values.std():.3g}); "
                       "Numerai needs varying predictions")


def validate_submission(df: pd.DataFrame, live_ids) -> pd.DataFrame:
    """The rows of ``df`` that Numerai would score: ``id`` (str, sorted) and the prediction column.

    Applies numerai-tools 0.7.2 ``validate_submission_numerai`` (headers, ids, then values of the
    kept rows); ``live_ids`` is any sequence of the round's live ids. Raises InputError naming the
    first rule broken.

    Example:
        >>> kept = validate_submission(pd.DataFrame({"id": ["b", "a", "x"], "prediction": [.8, .2, .5]}),
        ...                            ["a", "b"])   # rows a, b; x is not live and is dropped
    """
    name = check_headers(df)
    kept = live_rows(df, pd.Series(live_ids))
    check_values(kept[name], name)
    return kept.reset_index(drop=True)


def read_submission(path: str | Path, what: str = "prediction") -> pd.DataFrame:
    """A prediction, submission or universe file (parquet or CSV, told apart by content) as a DataFrame.

    ``id`` and every ticker column (:data:`~eraflow.engine.signals.keys.TICKER_COLUMNS`) of a CSV are
    read as str, so ids and tickers such as sedols keep their leading zeros. A parquet file whose
    keys are its pandas index (``df.set_index("id" or a ticker column).to_parquet``) gets that column
    back as its first column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    try:
        if is_parquet(path):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={c: str for c in KEY_COLUMNS})
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{path} is not a readable parquet or CSV {what} file ({first})") from None
    if df.index.name in KEY_COLUMNS and df.index.name not in df.columns:
        df = df.reset_index()
    return df


def _live_id_column(path: Path, schema: pa.Schema) -> str:
    """``id`` as a column, else the pandas index column (Numerai's live.parquet keeps ids there)."""
    if ID_COLUMN in schema.names:
        return ID_COLUMN
    index = json.loads((schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns", [])
    if index and isinstance(index[0], str) and index[0] in schema.names:
        return index[0]
    raise InputError(f"{path} has no id column (neither an `id` column nor a pandas index); "
                     "pass Numerai's live.parquet as --live")


def read_live_ids(path: str | Path) -> pd.Series:
    """The ids of a live parquet file (one column read with pyarrow) as a str Series named ``id``."""
    path = Path(path)
    pf = open_parquet(path)
    column = _live_id_column(path, pf.schema_arrow)
    ids = pf.read(columns=[column], use_pandas_metadata=False).column(column)
    if len(ids) == 0:
        raise InputError(f"{path} has no rows: no live ids to check the submission against")
    return pd.Series(ids.cast(pa.string()).to_pylist(), name=ID_COLUMN, dtype=object)
