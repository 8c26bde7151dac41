"""Prediction files (Numerai format: ``id`` plus prediction columns, parquet or CSV) aligned to a store's rows.

Alignment joins the file's ids with the store's ``ids.parquet`` (row numbers in store order), so
any row order is accepted. On a keyed (Signals) store a file without ``id`` may name its rows by a
date and a ticker column instead (e.g. ``friday_date``/``date`` and ``numerai_ticker``, as a Signals
submission does): its ids are made as the store's, ``"<era>|<ticker>"``. The result lists the store
rows it covers, in store order, grouped by era: ``values[offsets[k]:offsets[k+1]]`` are the
predictions of era ``eras[k]``. A Dask part (:func:`align_eras`) reads only the rows of its eras
when the file has an ``era`` column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from ..data.sources import is_parquet, is_text, open_parquet
from ..data.store import EraStore, era_rows
from ..errors import InputError
from ..signals.aligned import key_columns, keyed_ids, store_keys

if TYPE_CHECKING:
    import pandas as pd

MIN_COVERAGE = 0.99  # share of the rows of each touched era a file must predict
NOT_PREDICTIONS = ("id", "era", "data_type")


@dataclass(frozen=True)
class AlignedPredictions:
    """Predictions in store order. ``rows`` are store row numbers; ``era_index`` the store eras."""

    columns: list[str]
    values: np.ndarray  # float64 (n × m)
    rows: np.ndarray  # int64 (n,), increasing
    era_index: np.ndarray  # int64 (n_eras,), store era numbers covered
    offsets: np.ndarray  # int64 (n_eras + 1,)
    ids: np.ndarray  # (n,) id strings

    def era_labels(self, store: EraStore) -> list[str]:
        return [store.eras[k] for k in self.era_index]


def _no_rows(path: Path) -> InputError:
    return InputError(f"{path} has no rows; it needs one row per id with its predictions")


def pandas_numeric_columns(frame: pd.DataFrame, skip) -> list[str]:
    """Names of the numeric (not bool) columns of ``frame`` outside ``skip``."""
    import pandas as pd  # here, not at the top: only CSV files need it (0.5 s of every `predict` and `score`)

    return [str(n) for n in frame.columns if n not in skip and pd.api.types.is_numeric_dtype(frame[n])
            and not pd.api.types.is_bool_dtype(frame[n])]


def prediction_columns(path, numeric: list[str], columns: list[str] | None) -> list[str]:
    """The requested columns, or every numeric one that is not a target or feature; errors name what exists."""
    chosen = columns or [n for n in numeric if not n.startswith(("target", "feature"))]
    if not chosen:
        raise InputError(f"{path} has no prediction columns (numeric columns besides id/era)")
    unknown = [c for c in chosen if c not in numeric]
    if unknown:
        raise InputError(f"{path} has no prediction column {', '.join(map(repr, unknown))} "
                         f"(numeric columns: {', '.join(numeric) or 'none'})")
    return chosen


def _key_columns(path: Path, names: list[str], keys: dict[str, str] | None) -> tuple[str, ...]:
    """``("id",)``, or on a keyed store a file's (date, ticker) columns when it has no ``id``."""
    if "id" in names:
        return ("id",)
    if keys is None:
        raise InputError(f"{path} has no `id` column")
    return key_columns(names, keys, str(path))


def _with_ids(path: Path, frame: pl.DataFrame, key_cols: tuple[str, ...], chosen: list[str]) -> pl.DataFrame:
    """``id`` (strings; made from date and ticker for a keyed file) and the chosen columns."""
    ids = frame["id"].cast(pl.String) if key_cols == ("id",) else keyed_ids(frame, *key_cols, str(path))
    return frame.select(chosen).with_columns(ids.alias("id")).select("id", *chosen)


def _read_csv_ids_and_values(path: Path, columns: list[str] | None,
                             keys: dict[str, str] | None) -> tuple[pl.DataFrame, list[str]]:
    """A CSV prediction file, read as ``submit`` reads it (ids as strings)."""
    from ..numerai.submission import read_submission  # imports pandas

    df = read_submission(path)
    key_cols = _key_columns(path, [str(n) for n in df.columns], keys)
    if df.empty:  # before choosing columns: a header-only CSV has no numeric column
        raise _no_rows(path)
    numeric = pandas_numeric_columns(df, (*NOT_PREDICTIONS, *key_cols))
    chosen = prediction_columns(path, numeric, columns)
    frame = pl.DataFrame({**{k: pl.from_pandas(df[k]) for k in key_cols},
                          **{c: pl.Series(df[c].to_numpy(dtype=np.float64)) for c in chosen}})
    return _with_ids(path, frame, key_cols, chosen), chosen


def _read_ids_and_values(path: Path, columns: list[str] | None, eras: list[str] | None = None,
                         keys: dict[str, str] | None = None) -> tuple[pl.DataFrame, list[str]]:
    """``id`` (as strings) and the prediction columns of a parquet or CSV file, told apart by content; with
    ``eras``, only the rows whose ``era`` is one of them when the file is parquet with a string ``era`` column
    (a polars filter pushed into the scan: row groups whose statistics exclude those eras are skipped), else
    every row. ``keys``: the store's meta.json ``keys`` (keyed store), so a file without ``id`` is keyed by its
    date and ticker columns."""
    if path.is_file() and path.stat().st_size and not is_parquet(path):
        return _read_csv_ids_and_values(path, columns, keys)
    schema = open_parquet(path).schema_arrow
    key_cols = _key_columns(path, schema.names, keys)
    numeric = [n for n in schema.names if n not in (*NOT_PREDICTIONS, *key_cols)
               and (pa.types.is_floating(schema.field(n).type) or pa.types.is_integer(schema.field(n).type))]
    chosen = prediction_columns(path, numeric, columns)
    if eras is not None and "era" in schema.names and is_text(schema.field("era").type):
        frame = pl.scan_parquet(path).filter(pl.col("era").is_in(eras)).select(*key_cols, *chosen).collect()
    else:
        frame = pl.read_parquet(path, columns=[*key_cols, *chosen])
    return _with_ids(path, frame, key_cols, chosen), chosen


def align_predictions(store: EraStore, path: str | Path, columns: list[str] | None = None,
                      min_coverage: float = MIN_COVERAGE, reference: bool = False) -> AlignedPredictions:
    """Read ``path`` (parquet or CSV) and place its rows in store order.

    Errors: no rows, ids not in the store, duplicate ids, NaN-only columns, ±inf values (NaN marks
    a missing prediction), or fewer than ``min_coverage`` of the rows of the eras the file touches.
    A ``reference`` file (a meta model, benchmarks) may hold ids the store lacks: they are dropped.
    """
    path = Path(path)
    frame, chosen = _read_ids_and_values(path, columns, keys=store_keys(store))
    if frame.height == 0:
        raise _no_rows(path)
    if frame["id"].null_count():
        raise InputError(f"{path}: the id column has missing values")
    if frame["id"].is_duplicated().any():
        dup = frame.filter(pl.col("id").is_duplicated())["id"][0]
        raise InputError(f"{path}: duplicate id {dup!r}; each row must be predicted once")
    store_ids = pl.from_arrow(store.id_table(["id"])).with_row_index("row")
    joined = frame.join(store_ids, on="id", how="left")
    unknown = joined.filter(pl.col("row").is_null())
    if reference and len(unknown) < len(joined):
        joined, unknown = joined.filter(pl.col("row").is_not_null()), unknown.clear()
    if len(unknown):
        raise InputError(f"{len(unknown):,} ids of {path.name} are not in the store (e.g. {unknown['id'][0]!r}); "
                         "was it made for other data?")
    joined = joined.sort("row")
    rows = joined["row"].to_numpy().astype(np.int64)
    era_of_row = np.searchsorted(store.offsets, rows, side="right") - 1
    era_index, counts = np.unique(era_of_row, return_counts=True)
    sizes = np.diff(store.offsets)[era_index]
    coverage = counts.sum() / sizes.sum()
    if coverage < min_coverage:
        raise InputError(f"{path.name} predicts {coverage:.1%} of the rows of the {len(era_index)} eras it touches "
                         f"(at least {min_coverage:.0%} needed); predict every row of an era")
    values = joined.select(chosen).cast(pl.Float64).to_numpy()
    _refuse_infinite(path, chosen, values, joined["id"])
    for j, name in enumerate(chosen):
        if np.isnan(values[:, j]).all():
            raise InputError(f"{path.name}: prediction column {name} has no values")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return AlignedPredictions(chosen, values, rows, era_index.astype(np.int64), offsets, joined["id"].to_numpy())


def keep_eras(preds: AlignedPredictions, keep: np.ndarray) -> AlignedPredictions:
    """The predictions of the eras where ``keep`` (bool per covered era) is true."""
    sizes = np.diff(preds.offsets)
    row_mask = np.repeat(keep, sizes)
    return AlignedPredictions(preds.columns, preds.values[row_mask], preds.rows[row_mask], preds.era_index[keep],
                              np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64), preds.ids[row_mask])


def align_eras(store: EraStore, path: str | Path, columns: list[str] | None, era_index: np.ndarray,
               expected_rows: int | None = None, reference: bool = False) -> AlignedPredictions:
    """The aligned rows of the store eras ``era_index`` (increasing) of a file :func:`align_predictions`
    accepted whole (a Dask part's share: its checks are not repeated).

    Reads only the rows labeled with those eras when the file is parquet with a string ``era`` column, else
    every row (:func:`_read_ids_and_values`), and joins them with the ids of those eras' store rows only. Era
    labels that disagree with the store would lose rows: unless ``expected_rows`` (the whole file's rows in
    those eras) are found, the whole file is aligned and cut to those eras. Same rows and values either way.
    """
    path = Path(path)
    era_index = np.asarray(era_index, dtype=np.int64)
    frame, chosen = _read_ids_and_values(path, columns, [store.eras[k] for k in era_index], store_keys(store))
    rows = era_rows(store.offsets, era_index) if len(era_index) else np.zeros(0, np.int64)
    ids = store.id_table(["id"]).column("id").take(pa.array(rows))
    part_ids = pl.DataFrame({"id": pl.from_arrow(ids).cast(pl.String), "row": rows})
    joined = frame.join(part_ids, on="id", how="inner").sort("row")
    if expected_rows is not None and joined.height != expected_rows:  # era labels that disagree with the store
        whole = align_predictions(store, path, columns, min_coverage=0.0, reference=reference)
        return keep_eras(whole, np.isin(whole.era_index, era_index))
    found = joined["row"].to_numpy().astype(np.int64)
    era_of_row = np.searchsorted(store.offsets, found, side="right") - 1
    covered, counts = np.unique(era_of_row, return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return AlignedPredictions(chosen, joined.select(chosen).cast(pl.Float64).to_numpy(), found,
                              covered.astype(np.int64), offsets, joined["id"].to_numpy())


def _refuse_infinite(path: Path, columns: list[str], values: np.ndarray, ids: pl.Series) -> None:
    """InputError naming the column and an id of the first ±inf value (NaN is a missing prediction)."""
    infinite = np.isinf(values)
    if infinite.any():
        row, col = np.argwhere(infinite)[0]
        raise InputError(f"{path.name}: prediction column {columns[col]} is {values[row, col]} for id "
                         f"{ids[int(row)]!r}; predictions must be finite numbers (leave a missing one empty/NaN)")
