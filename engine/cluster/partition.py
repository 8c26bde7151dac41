"""Eras split into contiguous parts of about equal rows: one Dask task each (evaluate, score), or one shard
each (``train --data-parallel``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .executor import run_tasks

if TYPE_CHECKING:
    from distributed import Client

# Parts per worker: more than one so a slow worker or a large era does not leave the others idle, few
# enough that each task's fixed cost stays small: a task opens the store and reads the predictions file
# (only its eras' rows when the file has an ``era`` column, else every row).
PARTS_PER_WORKER = 2


def worker_count(client: Client) -> int:
    """Workers connected to the scheduler now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


def era_parts(era_sizes: np.ndarray, n_parts: int) -> list[tuple[int, int]]:
    """Consecutive ``[k0, k1)`` ranges of eras covering them all, about equal in rows, at most ``n_parts``.

    Era k goes to part ``⌊n_parts · (R_k + r_k / 2) / R⌋`` where ``r_k`` is its rows, ``R_k`` the rows
    of the eras before it and ``R`` all rows (the part its middle row falls in); empty parts are dropped.
    """
    sizes = np.asarray(era_sizes, dtype=np.float64)
    if sizes.size == 0:
        return []
    total = sizes.sum()
    middle = np.cumsum(sizes) - sizes / 2
    part = np.minimum((n_parts * middle / total).astype(np.int64), n_parts - 1) if total else np.zeros(sizes.size, int)
    starts = np.flatnonzero(np.diff(part, prepend=-1))
    return list(zip(starts.tolist(), [*starts[1:].tolist(), sizes.size]))


def map_era_parts(client: Client, fn: Callable, era_index: np.ndarray, era_sizes: np.ndarray,
                  *args) -> Iterator[tuple[int, int, Any]]:
    """``(k0, k1, fn(*args, era_index[k0:k1], era_sizes[k0:k1]))`` as each Dask task finishes, for the parts
    ``[k0, k1)`` of :func:`era_parts` (``PARTS_PER_WORKER`` per worker connected) of the eras whose rows are
    ``era_sizes``."""
    parts = {f"eras-{k0:06d}": (k0, k1) for k0, k1 in era_parts(era_sizes, PARTS_PER_WORKER * worker_count(client))}
    tasks = {key: (*args, era_index[k0:k1], era_sizes[k0:k1]) for key, (k0, k1) in parts.items()}
    for key, result in run_tasks(client, fn, tasks):
        yield (*parts[key], result)
