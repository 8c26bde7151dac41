"""Input validation for the public kernels; every failure is a one-line ``InputError``.

The kernels compute on C-contiguous float64 ``(n, m)`` columns and int64 offsets; these
helpers convert what callers pass (1-D or 2-D, float32, memmaps) and remember whether to
hand a 1-D result back.
"""

from __future__ import annotations

import numpy as np

from eraflow.engine.errors import InputError

RANK_METHODS = ("average", "first")
MISSING_CODE = -1  # int8 code of a missing feature value in an EraStore (eraflow.engine.data.store.MISSING)


def columns(values, name: str) -> tuple[np.ndarray, bool]:
    """``values`` as C-contiguous float64 ``(n, m)``, and whether it was 1-D ``(n,)``."""
    array = np.asarray(values)
    if array.ndim not in (1, 2):
        msg = f"{name} must be 1-D (n,) or 2-D (n, m), got shape {array.shape}"
        raise InputError(msg)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        msg = f"{name} must be numeric, got dtype {array.dtype}"
        raise InputError(msg)
    one_d = array.ndim == 1
    return np.ascontiguousarray(array[:, None] if one_d else array, dtype=np.float64), one_d


def row_dtype(values) -> np.dtype:
    """Dtype of a row-shaped result: float32 for float32 input (large arrays), else float64."""
    return np.dtype(np.float32) if np.asarray(values).dtype == np.float32 else np.dtype(np.float64)


def one_column(values, name: str, n_rows: int) -> np.ndarray:
    """A single column (target, meta model) as float64 ``(n, 1)``; 2-D input must have one column."""
    array, one_d = columns(values, name)
    if not one_d and array.shape[1] != 1:
        msg = f"{name} must be one column (n,), got shape {np.shape(values)}"
        raise InputError(msg)
    same_rows(array, n_rows, name)
    return array


def same_rows(array: np.ndarray, n_rows: int, name: str) -> None:
    if len(array) != n_rows:
        msg = f"{name} has {len(array)} rows but the predictions have {n_rows}; pass arrays of the same rows"
        raise InputError(msg)


def era_offsets(offsets, n_rows: int) -> np.ndarray:
    """Validated era offsets as C-contiguous int64: 0 = o[0] <= o[1] <= … <= o[-1] = n_rows."""
    array = np.asarray(offsets)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        msg = f"offsets must be a 1-D integer array of length n_eras + 1, got shape {array.shape} dtype {array.dtype}"
        raise InputError(msg)
    if array[0] != 0 or array[-1] != n_rows:
        msg = f"offsets must run from 0 to the number of rows ({n_rows}), got {array[0]} … {array[-1]}"
        raise InputError(msg)
    if np.any(np.diff(array) < 0):
        msg = "offsets must be non-decreasing; sort rows by era and rebuild the offsets"
        raise InputError(msg)
    return np.ascontiguousarray(array, dtype=np.int64)


def feature_matrix(features, n_rows: int, name: str = "features") -> np.ndarray:
    """Features ``(n, k)``: int8 EraStore codes kept as they are (no copy), anything else as finite float64.

    Float features must be finite: unlike store codes they have no missing convention.
    """
    array = np.asarray(features)
    if array.ndim == 2 and array.dtype == np.int8:
        same_rows(array, n_rows, name)
        return array
    return finite_matrix(array, name, n_rows,
                         fix="fill them (e.g. with the middle value) or pass the store's int8 codes")


def finite_matrix(values, name: str, n_rows: int, fix: str = "fill them or drop those rows") -> np.ndarray:
    """A 2-D numeric array ``(n, k)`` of finite values as C-contiguous float64; ``fix`` ends the NaN/inf message."""
    array = np.asarray(values)
    if array.ndim != 2:
        msg = f"{name} must be 2-D (n, k), got shape {array.shape}"
        raise InputError(msg)
    same_rows(array, n_rows, name)
    array, _ = columns(array, name)
    if not np.isfinite(array).all():
        msg = f"{name} contain NaN or inf; {fix}"
        raise InputError(msg)
    return array


def rank_method(method: str) -> bool:
    """True for ``"first"`` (ties broken by row order), False for ``"average"``."""
    if method not in RANK_METHODS:
        msg = f"unknown rank method {method!r}; use 'average' or 'first'"
        raise InputError(msg)
    return method == "first"


def finite_number(value, name: str) -> float:
    """``value`` as a finite float: a real number (bool, int, float or a NumPy scalar of one), not a
    string, None or an array."""
    msg = f"{name} must be a finite number, got {shown(value)}"
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # e.g. a ragged list
        raise InputError(msg) from None
    if array.ndim != 0 or array.dtype.kind not in "iufb" or not np.isfinite(array):
        raise InputError(msg)
    return float(array)


def shown(value) -> str:
    """``repr(value)`` on one line (an array's repr spans several), for error messages."""
    return " ".join(repr(value).split())


def shaped(result: np.ndarray, one_d: bool, dtype=np.float64) -> np.ndarray:
    """Drop the column axis of a result computed for 1-D input, and cast to ``dtype``."""
    result = result[:, 0] if one_d else result
    return result.astype(dtype, copy=False)
