"""Streaming a parquet source in row slices, through Polars lazy scans or DuckDB.

Both readers yield Polars DataFrames in file order, so the ingest code is one path. The Polars
reader collects one slice of a lazy scan at a time (slice pushdown decodes only the row groups it
needs), which keeps decode buffers to one slice; its footprint was measured lower than a
``collect_batches`` loop or pyarrow's ``iter_batches``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from .sources import ERA_COLUMN, Source

ENGINES = ("polars", "duckdb")


class PolarsReader:
    """Row slices of ``pl.scan_parquet`` collected one at a time."""

    def era_labels(self, src: Source) -> list[str]:
        lf = pl.scan_parquet(src.path).select(pl.col(ERA_COLUMN).cast(pl.String).unique())
        return lf.collect(engine="streaming").to_series().to_list()

    def slices(self, src: Source, columns: Sequence[str], batch_rows: int) -> Iterator[pl.DataFrame]:
        lf = pl.scan_parquet(src.path).select([_normalised(src, c) for c in columns])
        for start in range(0, src.n_rows, batch_rows):
            yield lf.slice(start, batch_rows).collect()


class DuckDBReader:
    """``con.sql(query).to_arrow_reader(batch_rows)`` over ``read_parquet``, insertion order kept."""

    def __init__(self):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute(f"SET threads = {os.cpu_count() or 1}")
        self.con.execute("SET preserve_insertion_order = true")

    def era_labels(self, src: Source) -> list[str]:
        q = f"SELECT DISTINCT CAST({_quote(ERA_COLUMN)} AS VARCHAR) FROM {_scan(src.path)}"
        return [row[0] for row in self.con.sql(q).fetchall()]

    def slices(self, src: Source, columns: Sequence[str], batch_rows: int) -> Iterator[pl.DataFrame]:
        cols = ", ".join(_duck_column(src, c) for c in columns)
        reader = self.con.sql(f"SELECT {cols} FROM {_scan(src.path)}").to_arrow_reader(batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield pl.from_arrow(batch)


def make_reader(engine: str) -> PolarsReader | DuckDBReader:
    return DuckDBReader() if engine == "duckdb" else PolarsReader()


def _is_key(src: Source, column: str) -> bool:
    return column in (ERA_COLUMN, src.id_column)


def _normalised(src: Source, column: str) -> pl.Expr:
    """Era and id as strings (they may be stored as integers or dictionaries); others as stored."""
    expr = pl.col(column).cast(pl.String) if _is_key(src, column) else pl.col(column)
    return expr.alias("id") if column == src.id_column else expr


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scan(path: Path) -> str:
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def _duck_column(src: Source, column: str) -> str:
    if not _is_key(src, column):
        return _quote(column)
    alias = "id" if column == src.id_column else column
    return f"CAST({_quote(column)} AS VARCHAR) AS {_quote(alias)}"
