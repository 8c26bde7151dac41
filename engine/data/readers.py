"""Streaming a parquet source in row slices, through Polars lazy scans or DuckDB.

Both readers yield Polars DataFrames in file order, so the ingest code is one path. The Polars
reader collects one slice of a lazy scan at a time (slice pushdown decodes only the row groups it
needs), which keeps decode buffers to one slice; its footprint was measured lower than a
``collect_batches`` loop or pyarrow's ``iter_batches``.

A slice costs its whole row group: Polars fetches the row group's column chunks (into memory when
they are not in the page cache) and decompresses whole pages, and an int8 feature column chunk is a
single page up to ~2.8M rows (a 1 MiB page of 3-bit dictionary codes). Files written by pandas hold
up to 1Mi rows per row group (one group for most user files), so slicing them directly costs memory
in proportion to rows (+350 MiB at 400k rows × 2376 features) and time in proportion to rows². Row
groups over ``READ_BYTES`` are staged instead when the caller gives a spill directory: each group of
columns of at most ``STAGE_BYTES`` decoded is read once, whole, into an Arrow IPC file there, and
the slices are taken from those files through memory maps (file-backed, not anonymous, memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .sources import ERA_COLUMN, Source

ENGINES = ("polars", "duckdb")
READ_BYTES = 64 << 20  # uncompressed bytes of a row group (all columns) up to which slices read it directly
STAGE_BYTES = 32 << 20  # decoded bytes of one staged column group


class PolarsReader:
    """Row slices of ``pl.scan_parquet`` collected one at a time."""

    def era_labels(self, src: Source) -> list[str]:
        lf = pl.scan_parquet(src.path).select(pl.col(ERA_COLUMN).cast(pl.String).unique())
        return lf.collect(engine="streaming").to_series().to_list()

    def slices(self, src: Source, columns: Sequence[str], batch_rows: int,
               spill: Path | None = None) -> Iterator[pl.DataFrame]:
        """Slices of at most ``batch_rows`` rows in file order; with a ``spill`` directory, row groups
        over ``READ_BYTES`` are staged there (see the module docstring)."""
        lf = pl.scan_parquet(src.path).select([_normalised(src, c) for c in columns])
        for span in _row_spans(src, columns, stage=spill is not None):
            if span.groups:
                yield from _staged_slices(src, span, batch_rows, spill)
            else:
                for start in range(span.start, span.stop, batch_rows):
                    yield lf.slice(start, min(batch_rows, span.stop - start)).collect()


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

    def slices(self, src: Source, columns: Sequence[str], batch_rows: int,
               spill: Path | None = None) -> Iterator[pl.DataFrame]:
        """Slices in file order. DuckDB decodes whole row groups itself, so nothing is staged in ``spill``."""
        cols = ", ".join(_duck_column(src, c) for c in columns)
        reader = self.con.sql(f"SELECT {cols} FROM {_scan(src.path)}").to_arrow_reader(batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield pl.from_arrow(batch)


def make_reader(engine: str) -> PolarsReader | DuckDBReader:
    return DuckDBReader() if engine == "duckdb" else PolarsReader()


@dataclass(frozen=True)
class _Span:
    """Rows ``start:stop`` of a file: read directly, or staged by column ``groups`` when there are any."""

    start: int
    stop: int
    groups: list[list[str]]


def _row_spans(src: Source, columns: Sequence[str], stage: bool) -> list[_Span]:
    """Consecutive row groups read directly, merged into one span; each row group to stage (``stage``
    and larger than ``READ_BYTES`` uncompressed, all columns), a span of its own."""
    spans: list[_Span] = []
    start = 0
    for index, (rows, size) in enumerate(src.row_groups):
        stop = start + rows
        if stage and size > READ_BYTES:
            spans.append(_Span(start, stop, _column_groups(columns, _decoded_bytes(src, columns, index), STAGE_BYTES)))
        elif spans and not spans[-1].groups:
            spans[-1] = _Span(spans[-1].start, stop, [])
        elif rows:
            spans.append(_Span(start, stop, []))
        start = stop
    return spans


def _decoded_bytes(src: Source, columns: Sequence[str], row_group: int) -> dict[str, int]:
    """Bytes of each column of a row group once decoded: fixed-width types exactly, others estimated
    from the footer (read again here: a file with row groups this large has a small footer)."""
    group = pq.ParquetFile(src.path).metadata.row_group(row_group)
    raw: dict[str, int] = {}
    for j in range(group.num_columns):
        chunk = group.column(j)
        name = chunk.path_in_schema.split(".")[0]
        raw[name] = raw.get(name, 0) + chunk.total_uncompressed_size
    return {c: _column_bytes(src, c, group.num_rows, raw.get(c, 0)) for c in columns}


def _column_bytes(src: Source, column: str, rows: int, raw: int) -> int:
    """Decoded bytes of ``rows`` values of ``column``, whose chunks hold ``raw`` bytes uncompressed."""
    typ = src.type_of(column)
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if not _is_key(src, column):  # keys are read as strings
        try:
            return rows * typ.bit_width // 8
        except ValueError:  # variable width: strings, lists
            pass
    return 16 * rows + raw


def _column_groups(columns: Sequence[str], decoded: dict[str, int], budget: int) -> list[list[str]]:
    """``columns`` in order, cut into groups of at most ``budget`` decoded bytes (at least one column each)."""
    groups: list[list[str]] = [[]]
    size = 0
    for c in columns:
        if groups[-1] and size + decoded[c] > budget:
            groups.append([])
            size = 0
        groups[-1].append(c)
        size += decoded[c]
    return groups


def _staged_slices(src: Source, span: _Span, batch_rows: int, spill: Path) -> Iterator[pl.DataFrame]:
    """Decode each column group of the span once into an IPC file of ``batch_rows`` batches, then
    yield the batches side by side (memory-mapped, so staged data stays out of anonymous memory)."""
    paths = [spill / f"stage-{k}.arrow" for k in range(len(span.groups))]
    try:
        for group, path in zip(span.groups, paths):
            lf = pl.scan_parquet(src.path).select([_normalised(src, c) for c in group])
            table = lf.slice(span.start, span.stop - span.start).collect().rechunk().to_arrow()
            # buffered: a write per column and batch took twice as long
            with pa.output_stream(str(path), buffer_size=1 << 20) as sink, ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=batch_rows)
            del table
        files = [ipc.open_file(pa.memory_map(str(p))) for p in paths]
        for b in range(files[0].num_record_batches):
            parts = [f.get_batch(b) for f in files]
            yield pl.from_arrow(pa.RecordBatch.from_arrays([a for p in parts for a in p.columns],
                                                           names=[n for p in parts for n in p.schema.names]))
    finally:
        for p in paths:
            p.unlink(missing_ok=True)


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
