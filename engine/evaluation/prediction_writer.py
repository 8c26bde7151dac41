"""Writing prediction files (``id``, ``era``, float32 columns) without pandas.

Apart from :mod:`.predictions` (which aligns files to a store with polars) so that `eraflow predict`
loads neither polars nor pandas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..atomic import atomic_write_parquet
from ..outputs import check_output_file


def write_predictions(path: str | Path, ids: np.ndarray, eras: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Write ``id``, ``era`` and prediction columns (float32) to ``path`` atomically.

    The Arrow arrays are built from buffers: ``pa.array`` imports pandas on its first call (0.3 s and
    ~50 MiB of `eraflow predict`, which needs no pandas otherwise)."""
    table = pa.table({"id": string_array(ids), "era": string_array(eras),
                      **{k: float32_array(v) for k, v in columns.items()}})
    atomic_write_parquet(check_output_file(path, "predictions"), table, "predictions")


def string_array(values) -> pa.Array:
    """``values`` (str) as an Arrow ``string`` array, as ``pa.array(values, pa.string())`` makes it (which
    this falls back to for anything else: None, numbers, over 2 GiB of text)."""
    try:
        data = [v.encode() for v in values]
    except AttributeError:
        return pa.array(values, pa.string())
    ends = np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)))
    if len(ends) and ends[-1] > np.iinfo(np.int32).max:
        return pa.array(values, pa.string())
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def float32_array(values) -> pa.Array:
    """``values`` as an Arrow ``float`` array (NaN stays NaN), as ``pa.array(float32 values)`` makes it."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.Array.from_buffers(pa.float32(), len(values), [None, pa.py_buffer(values)])
