"""Runs of eras as padded blocks, the layout the NumPy/CuPy array code works on.

A block holds B consecutive eras as an array ``(B, L, m)``: era b's rows at ``[b, :size_b]``,
padded to the longest era L with a fill value (NaN for values, 0 for features). Reductions
over axis 1 are then per-era, and one batched call (sort, matmul, Cholesky) handles every era
of the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .backend import ArrayNamespace


def era_runs(offsets: np.ndarray, row_width: int, max_cells: int) -> Iterator[tuple[int, int]]:
    """Consecutive era ranges ``[e0, e1)`` whose padded block ``(e1-e0) × longest × row_width``
    stays under ``max_cells`` (a run always holds at least one era). Runs without rows are
    skipped: their results stay NaN."""
    sizes = np.diff(offsets)
    start, longest = 0, 0
    for era, size in enumerate(sizes):
        longest_with = max(longest, int(size))
        if era > start and (era + 1 - start) * longest_with * row_width > max_cells:
            if longest:
                yield start, era
            start, longest_with = era, int(size)
        longest = longest_with
    if longest:
        yield start, len(sizes)


def padded(ns: ArrayNamespace, rows: np.ndarray, offsets: np.ndarray, fill) -> object:
    """Device array ``(B, L, m)`` of the host ``rows (n, m)`` split at ``offsets`` (B + 1, from 0);
    L is the longest era, at least 1 so that reductions over rows are always defined."""
    sizes = np.diff(offsets)
    position = np.arange(max(int(sizes.max(initial=0)), 1))
    valid = position < sizes[:, None]
    index = np.where(valid, offsets[:-1, None] + position, 0)
    return ns.xp.where(ns.to_device(valid)[..., None], ns.to_device(rows)[ns.to_device(index)], fill)


def unpadded(ns: ArrayNamespace, block, offsets: np.ndarray) -> np.ndarray:
    """Host rows ``(n, m)`` of a device block ``(B, L, m)``: the inverse of :func:`padded`."""
    sizes = np.diff(offsets)
    valid = np.arange(block.shape[1]) < sizes[:, None]
    return ns.to_host(block[ns.to_device(valid)])


def map_rows(ns: ArrayNamespace, block_fn: Callable, arrays: list[np.ndarray], offsets: np.ndarray,
             fills: list, width: int, n_out: int) -> np.ndarray:
    """Row-shaped result ``(n, n_out)`` of ``block_fn(*padded blocks) -> (B, L, n_out)`` over runs of eras."""
    out = np.full((len(arrays[0]), n_out), np.nan)
    for e0, e1 in era_runs(offsets, width, ns.block_cells):
        local, rows = _local(offsets, e0, e1)
        out[rows] = unpadded(ns, block_fn(*(padded(ns, a[rows], local, f) for a, f in zip(arrays, fills))), local)
    return out


def map_eras(ns: ArrayNamespace, block_fn: Callable, arrays: list[np.ndarray], offsets: np.ndarray,
             fills: list, width: int, n_out: int) -> np.ndarray:
    """Per-era result ``(n_eras, n_out)`` of ``block_fn(*padded blocks) -> (B, n_out)``."""
    out = np.full((len(offsets) - 1, n_out), np.nan)
    for e0, e1 in era_runs(offsets, width, ns.block_cells):
        local, rows = _local(offsets, e0, e1)
        out[e0:e1] = ns.to_host(block_fn(*(padded(ns, a[rows], local, f) for a, f in zip(arrays, fills))))
    return out


def _local(offsets: np.ndarray, e0: int, e1: int) -> tuple[np.ndarray, slice]:
    """Offsets of eras e0..e1 counted from their first row, and the slice of their rows."""
    return offsets[e0:e1 + 1] - offsets[e0], slice(int(offsets[e0]), int(offsets[e1]))
