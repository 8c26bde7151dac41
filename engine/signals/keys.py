"""Keyed rows: Numerai Signals files name a row by (date, ticker), not by a unique ``id``.

A store ingested from such files gives each row the id ``"<era>|<ticker>"``, so every step that
aligns by id (predict, score, evaluate, ensembles, the ledger) works unchanged, and the ticker
comes back with :func:`split_keys`. Eras are ISO dates ``YYYY-MM-DD`` (they sort as time does),
whatever the file held: a date, a datetime, a ``YYYY-MM-DD`` string or a ``YYYYMMDD`` integer.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..errors import InputError

KEY_SEPARATOR = "|"
ERA_COLUMNS = ("friday_date", "date")  # numerai-tools SIGNALS_ALLOWED_DATE_COLS
TICKER_COLUMNS = ("numerai_ticker", "ticker", "bloomberg_ticker", "composite_figi", "sedol")


def era_dates(column: pl.Series, where: str) -> pl.Series:
    """A ``pl.Date`` column of a date, datetime, ``YYYY-MM-DD`` string or ``YYYYMMDD`` integer column."""
    dtype = column.dtype
    if dtype == pl.Date:
        return column
    if dtype.is_temporal():
        return column.cast(pl.Date)
    if dtype.is_integer():
        dates = column.cast(pl.String).str.strptime(pl.Date, "%Y%m%d", strict=False)
    elif dtype == pl.String:
        dates = column.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    else:
        raise InputError(f"{where}: column {column.name} has type {dtype}; expected dates, YYYY-MM-DD or YYYYMMDD")
    bad = dates.is_null() & column.is_not_null()
    if bad.any():
        raise InputError(f"{where}: {column.name} value {column.filter(bad)[0]!r} is not a date "
                         "(expected YYYY-MM-DD or YYYYMMDD)")
    return dates


def era_labels(column: pl.Series, where: str) -> pl.Series:
    """ISO dates ``YYYY-MM-DD`` (strings) of :func:`era_dates`."""
    return era_dates(column, where).dt.strftime("%Y-%m-%d").alias(column.name)


def make_keys(eras: pl.Series, tickers: pl.Series) -> pl.Series:
    """Row ids ``"<era>|<ticker>"`` of ISO-date eras and tickers (as strings)."""
    return (eras + KEY_SEPARATOR + tickers.cast(pl.String)).alias("id")


def split_keys(ids) -> tuple[np.ndarray, np.ndarray]:
    """``(eras, tickers)`` (object arrays of str) of ids made by :func:`make_keys`."""
    parts = pl.Series(np.asarray(ids, dtype=object).astype(str)).str.splitn(KEY_SEPARATOR, 2).struct.unnest()
    if parts.width < 2 or parts[:, 1].is_null().any():
        raise InputError(f"ids are not keyed as <era>{KEY_SEPARATOR}<ticker>: e.g. {str(np.asarray(ids)[0])!r}")
    return parts[:, 0].to_numpy().astype(object), parts[:, 1].to_numpy().astype(object)


def find_column(names: list[str], wanted: str | None, candidates: tuple[str, ...], kind: str, where: str) -> str:
    """The ``wanted`` column, else the first of ``candidates`` present; one-line error naming what was looked for."""
    if wanted is not None:
        if wanted not in names:
            raise InputError(f"{where} has no {kind} column {wanted!r} (columns: {', '.join(names[:8])}…)")
        return wanted
    for name in candidates:
        if name in names:
            return name
    raise InputError(f"{where} has no {kind} column: expected one of {', '.join(candidates)} "
                     f"(or name it with --{kind.replace(' ', '-')}-column)")
