"""Per-row files beside a store — Numerai Signals neutralizers and sample weights — in the order of predictions.

Such a file names its rows like the store: by ``id``, or, on a keyed (Signals) store, by a date and a
ticker column (``friday_date``/``date``, ``numerai_ticker``/``ticker``/…; the store's own ``keys``
columns first), whose id is ``"<era>|<ticker>"`` (:mod:`.keys`). :func:`neutralizers_for` and
:func:`sample_weights_for` return one row per prediction row, in the order of
:class:`~eraflow.engine.evaluation.predictions.AlignedPredictions`; rows of the file that no prediction
needs (other eras, other tickers) are ignored, and checked for nothing but duplicate keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from ..data.sources import ERA_COLUMN, ID_COLUMN, open_parquet
from ..errors import InputError
from .keys import ERA_COLUMNS, TICKER_COLUMNS, era_labels, make_keys

if TYPE_CHECKING:
    from ..data.store import EraStore
    from ..evaluation.predictions import AlignedPredictions

WEIGHT_COLUMNS = ("sample_weight", "weight")  # a weight file's column, else its only numeric column


def store_keys(store: EraStore) -> dict[str, str] | None:
    """meta.json ``keys`` of a keyed (Signals) store — its source's date and ticker columns — else None."""
    return store.meta.get("keys")


def key_columns(names: list[str], keys: dict[str, str] | None, where: str) -> tuple[str, str]:
    """(date column, ticker column) of a file without ``id`` that belongs to a keyed store: the store's own
    ``keys`` names first, then the Signals names. One-line InputError listing the accepted names."""
    eras = tuple(dict.fromkeys([keys["era"], *ERA_COLUMNS, ERA_COLUMN])) if keys else (*ERA_COLUMNS, ERA_COLUMN)
    tickers = tuple(dict.fromkeys([keys["id"], *TICKER_COLUMNS])) if keys else TICKER_COLUMNS
    era = next((c for c in eras if c in names), None)
    ticker = next((c for c in tickers if c in names), None)
    if era is None or ticker is None:
        kind, accepted = ("date", eras) if era is None else ("ticker", tickers)
        raise InputError(f"{where} has no `id` column and no {kind} column to key its rows by: expected one of "
                         f"{', '.join(accepted)}")
    return era, ticker


def keyed_ids(frame: pl.DataFrame, era: str, ticker: str, where: str) -> pl.Series:
    """Ids ``"<era>|<ticker>"`` of a frame's date and ticker columns; InputError for a missing ticker or date."""
    for name in (era, ticker):
        if frame[name].null_count():
            raise InputError(f"{where}: the {name} column has missing values")
    dates = frame[era].cast(pl.String) if frame[era].dtype in (pl.Categorical, pl.Enum) else frame[era]
    return make_keys(era_labels(dates, where), frame[ticker])


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def read_keyed_frame(path: str | Path, keys: dict[str, str] | None) -> tuple[pl.DataFrame, list[str]]:
    """``id`` (strings) and the numeric value columns of a parquet file keyed by ``id`` or, when it has none and
    ``keys`` says the store is keyed, by date and ticker. Key columns (and ``era``) are never values.

    InputError: no such / not a parquet file, no key columns, no numeric columns, no rows, duplicate keys.
    """
    path = Path(path)
    schema = open_parquet(path).schema_arrow
    names = schema.names
    if ID_COLUMN in names:
        key_cols: tuple[str, ...] = (ID_COLUMN,)
    elif keys is None:
        raise InputError(f"{path} has no `id` column; rows of a classic store's files are named by id")
    else:
        key_cols = key_columns(names, keys, str(path))
    values = [n for n in names if n not in (*key_cols, ERA_COLUMN) and _is_number(schema.field(n).type)]
    if not values:
        raise InputError(f"{path} has no numeric columns besides its keys ({', '.join(key_cols)})")
    frame = pl.read_parquet(path, columns=[*key_cols, *values])
    if frame.height == 0:
        raise InputError(f"{path} has no rows")
    if key_cols == (ID_COLUMN,):
        if frame[ID_COLUMN].null_count():
            raise InputError(f"{path}: the id column has missing values")
        ids = frame[ID_COLUMN].cast(pl.String)
    else:
        ids = keyed_ids(frame, *key_cols, str(path))
    frame = frame.select(values).with_columns(ids.alias(ID_COLUMN))
    duplicated = frame[ID_COLUMN].is_duplicated()
    if duplicated.any():
        raise InputError(f"{path}: row {frame[ID_COLUMN].filter(duplicated)[0]!r} appears more than once; "
                         "each key must appear once")
    return frame, values


def _rows_for(preds: AlignedPredictions, frame: pl.DataFrame, columns: list[str], path: Path,
              what: str) -> np.ndarray:
    """float64 (len(preds.rows), len(columns)): the file's values of each prediction row, in preds' order
    (a null value becomes NaN); InputError naming how many prediction rows the file lacks, and one."""
    wanted = pl.DataFrame({ID_COLUMN: pl.Series(preds.ids, dtype=pl.String)})
    marked = frame.select(ID_COLUMN, *columns).with_columns(pl.lit(True).alias("_present"))
    joined = wanted.join(marked, on=ID_COLUMN, how="left", maintain_order="left")
    missing = joined["_present"].is_null()
    if missing.any():
        raise InputError(f"{path.name} has no {what} row for {int(missing.sum()):,} of the {len(wanted):,} "
                         f"prediction rows (e.g. {wanted[ID_COLUMN].filter(missing)[0]!r}); it must cover every "
                         "era and ticker predicted")
    return joined.select(pl.col(columns).cast(pl.Float64)).to_numpy()


def neutralizers_for(store: EraStore, preds: AlignedPredictions, path: str | Path) -> np.ndarray:
    """Neutralizers of each prediction row: float64 ``(len(preds.rows), k)``, every numeric column of ``path``
    except its keys, in file order.

    InputError (one line): a prediction row without a neutralizer row (count and an example id), a NaN or
    ±inf neutralizer value of a predicted row, duplicate keys, no numeric columns.
    """
    path = Path(path)
    frame, columns = read_keyed_frame(path, store_keys(store))
    values = _rows_for(preds, frame, columns, path, "neutralizer")
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{path.name}: neutralizer {columns[col]} is {values[row, col]} for "
                         f"{preds.ids[row]!r}; neutralizers must be finite numbers")
    return values


def weight_column(columns: list[str], path: Path) -> str:
    """``sample_weight``, ``weight``, or the only numeric column."""
    for name in WEIGHT_COLUMNS:
        if name in columns:
            return name
    if len(columns) == 1:
        return columns[0]
    raise InputError(f"{path.name} has {len(columns)} numeric columns ({', '.join(columns[:6])}) and none is named "
                     f"{' or '.join(WEIGHT_COLUMNS)}; name the weight column sample_weight")


def sample_weights_for(store: EraStore, preds: AlignedPredictions, path: str | Path) -> np.ndarray:
    """Sample weight of each prediction row: float64 ``(len(preds.rows),)`` from the ``sample_weight`` or
    ``weight`` column of ``path``, or its only numeric column.

    InputError (one line): a prediction row without a weight row (count and an example id), a weight of a
    predicted row ≤ 0, NaN or ±inf, duplicate keys, no numeric columns.
    """
    path = Path(path)
    frame, columns = read_keyed_frame(path, store_keys(store))
    column = weight_column(columns, path)
    weights = _rows_for(preds, frame, [column], path, "sample weight")[:, 0]
    bad = ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path.name}: sample weight {column} is {weights[row]} for {preds.ids[row]!r}; "
                         "weights must be finite and > 0")
    return weights
