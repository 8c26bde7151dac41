"""What a parquet source holds, read from its footer only: rows, columns, era and id columns, fingerprint.

A classic source has an ``era`` column and a unique ``id`` (a column or the pandas index). A keyed
source (Numerai Signals) names a row by (date, ticker): its era is the ISO date of its date column
and its id ``"<era>|<ticker>"`` (:mod:`eraflow.engine.signals.keys`). A source is keyed when
``--era-column``/``--id-column`` name other columns than ``era``/``id``, when it has no ``era``
column (except a file with an ``id`` and neither a date nor a ticker column: a classic file without its
era, refused as such), or when it has no id but a ticker column.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..signals.keys import ERA_COLUMNS, TICKER_COLUMNS, find_column

ERA_COLUMN = "era"
ID_COLUMN = "id"


@dataclass(frozen=True)
class Source:
    """One parquet file: its arrow schema, row count, id column and a change fingerprint."""

    path: Path
    n_rows: int
    schema: pa.Schema
    id_column: str
    fingerprint: dict
    row_groups: tuple[tuple[int, int], ...]  # (rows, uncompressed bytes of all columns) per row group
    era_column: str = ERA_COLUMN  # keyed: the date column eras come from
    keyed: bool = False  # rows named by (era_column, id_column = the ticker column)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def keys(self) -> dict[str, str] | None:
        """``{"era": date column, "id": ticker column}`` of a keyed source, else None (meta.json ``keys``)."""
        return {"era": self.era_column, "id": self.id_column} if self.keyed else None

    def type_of(self, column: str) -> pa.DataType:
        return self.schema.field(column).type


def footer_digest(path: Path) -> str:
    """sha256 of the parquet footer (schema, row groups, statistics): changes with the content."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        length, magic = struct.unpack("<i4s", fh.read(8))
        fh.seek(-8 - length, os.SEEK_END)
        return hashlib.sha256(fh.read(length)).hexdigest()[:32]


def is_parquet(path: Path) -> bool:
    """Whether ``path`` starts with the parquet magic ``PAR1`` (else it is read as CSV)."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def open_parquet(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a parquet file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes), not a parquet file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        if head == b"PAR1":
            msg = f"{path} is a truncated or damaged parquet file ({size} bytes); download it again"
        else:
            msg = f"{path} is not a parquet file ({str(exc).splitlines()[0][:120]})"
        raise InputError(msg) from None


def _pandas_index(schema: pa.Schema) -> str | None:
    """The pandas index column recorded in the file's pandas metadata, if it is stored as a column."""
    pandas_meta = (schema.metadata or {}).get(b"pandas")
    if pandas_meta:
        index = json.loads(pandas_meta).get("index_columns", [])
        if index and isinstance(index[0], str) and index[0] in schema.names:
            return index[0]
    return None


def _id_column(path: Path, schema: pa.Schema) -> str:
    """``id`` as a column, or the pandas index recorded in the file's pandas metadata."""
    if ID_COLUMN in schema.names:
        return ID_COLUMN
    index = _pandas_index(schema)
    if index is None:
        raise InputError(f"{path} has no id column (neither an `id` column nor a pandas index)")
    return index


def is_keyed(schema: pa.Schema, era_column: str | None = None, id_column: str | None = None) -> bool:
    """Whether rows are named by (date, ticker): other key columns asked for than ``era``/``id``, no ``era``
    column (unless the file has an ``id`` but neither a date nor a ticker column: a classic file lacking its
    era), or no id (column or pandas index) but a ticker column."""
    if era_column not in (None, ERA_COLUMN) or id_column not in (None, ID_COLUMN):
        return True
    names = schema.names
    has_id = ID_COLUMN in names or _pandas_index(schema) is not None
    has_ticker = any(name in names for name in TICKER_COLUMNS)
    if ERA_COLUMN not in names:
        return not has_id or has_ticker or any(name in names for name in ERA_COLUMNS)
    return not has_id and has_ticker


def _value_type(schema: pa.Schema, column: str) -> pa.DataType:
    t = schema.field(column).type
    return t.value_type if pa.types.is_dictionary(t) else t


def is_text(t: pa.DataType) -> bool:
    """A string type, plain or dictionary-encoded."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _keyed_columns(path: Path, schema: pa.Schema, era_column: str | None, id_column: str | None) -> tuple[str, str]:
    """(date column, ticker column) of a keyed source, their types checked: one-line errors naming the choices."""
    names = schema.names
    era = find_column(names, era_column, (*ERA_COLUMNS, ERA_COLUMN), "era", str(path))
    ticker = find_column(names, id_column, TICKER_COLUMNS, "id", str(path))
    if era == ticker:
        raise InputError(f"{path}: {era} cannot be both the era (date) and the id (ticker) column")
    era_type, ticker_type = _value_type(schema, era), _value_type(schema, ticker)
    if not (pa.types.is_date(era_type) or pa.types.is_timestamp(era_type) or is_text(era_type)
            or pa.types.is_integer(era_type)):
        raise InputError(f"{path}: era column {era} has type {era_type}; expected dates, YYYY-MM-DD or YYYYMMDD")
    if not (is_text(ticker_type) or pa.types.is_integer(ticker_type)):
        raise InputError(f"{path}: id column {ticker} has type {ticker_type}; expected tickers (strings)")
    return era, ticker


def _check_era_type(path: Path, schema: pa.Schema) -> None:
    if ERA_COLUMN not in schema.names:
        raise InputError(f"{path} has no era column (`{ERA_COLUMN}`)")
    era_type = _value_type(schema, ERA_COLUMN)
    if not (is_text(era_type) or pa.types.is_integer(era_type)):
        raise InputError(f"{path}: era column has type {era_type}; expected strings like 0001 or integers")


def inspect_source(path: str | Path, era_column: str | None = None, id_column: str | None = None) -> Source:
    """Read the footer of ``path``; InputError for a missing, non-parquet, damaged or empty file.

    ``era_column``/``id_column`` name the key columns (None: found by name, see the module docstring).
    """
    path = Path(path)
    pf = open_parquet(path)
    schema = pf.schema_arrow
    keyed = is_keyed(schema, era_column, id_column)
    if keyed:
        era, ident = _keyed_columns(path, schema, era_column, id_column)
    else:
        _check_era_type(path, schema)
        era, ident = ERA_COLUMN, _id_column(path, schema)
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise InputError(f"{path} has no rows")
    stat = path.stat()
    fingerprint = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                   "footer_sha256": footer_digest(path)}
    row_groups = tuple((g.num_rows, g.total_byte_size) for g in map(pf.metadata.row_group, range(pf.num_row_groups)))
    return Source(path, n_rows, schema, ident, fingerprint, row_groups, era, keyed)
