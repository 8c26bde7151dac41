"""What a parquet source holds, read from its footer only: rows, columns, id column, fingerprint."""

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

    @property
    def name(self) -> str:
        return self.path.name

    def type_of(self, column: str) -> pa.DataType:
        return self.schema.field(column).type


def footer_digest(path: Path) -> str:
    """sha256 of the parquet footer (schema, row groups, statistics): changes with the content."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        length, magic = struct.unpack("<i4s", fh.read(8))
        fh.seek(-8 - length, os.SEEK_END)
        return hashlib.sha256(fh.read(length)).hexdigest()[:32]


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


def _id_column(path: Path, schema: pa.Schema) -> str:
    """``id`` as a column, or the pandas index recorded in the file's pandas metadata."""
    if ID_COLUMN in schema.names:
        return ID_COLUMN
    pandas_meta = (schema.metadata or {}).get(b"pandas")
    if pandas_meta:
        index = json.loads(pandas_meta).get("index_columns", [])
        if index and isinstance(index[0], str) and index[0] in schema.names:
            return index[0]
    raise InputError(f"{path} has no id column (neither an `id` column nor a pandas index)")


def inspect_source(path: str | Path) -> Source:
    """Read the footer of ``path``; InputError for a missing, non-parquet, damaged or empty file."""
    path = Path(path)
    pf = open_parquet(path)
    schema = pf.schema_arrow
    if ERA_COLUMN not in schema.names:
        raise InputError(f"{path} has no era column (`{ERA_COLUMN}`)")
    era_type = schema.field(ERA_COLUMN).type
    if pa.types.is_dictionary(era_type):
        era_type = era_type.value_type
    if not (pa.types.is_string(era_type) or pa.types.is_large_string(era_type) or pa.types.is_integer(era_type)):
        raise InputError(f"{path}: era column has type {era_type}; expected strings like 0001 or integers")
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise InputError(f"{path} has no rows")
    stat = path.stat()
    fingerprint = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                   "footer_sha256": footer_digest(path)}
    row_groups = tuple((g.num_rows, g.total_byte_size) for g in map(pf.metadata.row_group, range(pf.num_row_groups)))
    return Source(path, n_rows, schema, _id_column(path, schema), fingerprint, row_groups)
