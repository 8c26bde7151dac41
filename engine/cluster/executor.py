"""Run independent tasks ``fn(*args)`` in this process or on a Dask cluster, yielding results as they finish.

A task's arguments and result are small (paths, era index arrays, dicts of per-era scores): each
task opens the store and its inputs by path where it runs. ``fn`` must be a module-level function,
importable on the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InputError, first_line

if TYPE_CHECKING:
    from distributed import Client


def run_serial(fn: Callable, tasks: Mapping[str, tuple]) -> Iterator[tuple[str, Any]]:
    """``(key, fn(*args))`` in this process, in key order."""
    for key in sorted(tasks):
        yield key, fn(*tasks[key])


def run_on_dask(client: Client, fn: Callable, tasks: Mapping[str, tuple]) -> Iterator[tuple[str, Any]]:
    """``(key, fn(*args))`` as each Dask task finishes; the tasks left are cancelled when the caller stops
    early or a task fails.

    Each key is one task (``pure=False``: run even if an equal task ran before). A task whose worker
    dies is rerun on another worker by the scheduler, up to its ``distributed.scheduler.allowed-failures``
    (default 3) deaths; past that the task's ``KilledWorker`` becomes an InputError. An exception raised
    in a task is re-raised here as itself (an EraflowError keeps its class and message).
    """
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    futures = {client.submit(fn, *tasks[key], pure=False): key for key in sorted(tasks)}
    try:
        for future in as_completed(futures, loop=client.loop):
            key = futures.pop(future)
            try:
                result = future.result()
            except KilledWorker as exc:
                raise InputError(f"task {key} was running on Dask workers that died ({first_line(exc)}); "
                                 "check the workers' memory and logs, then run again") from None
            except FutureCancelledError:
                raise InputError(f"task {key} was cancelled on the Dask cluster; run again") from None
            yield key, result
    finally:
        if futures:
            client.cancel(list(futures))


def run_tasks(client: Client | None, fn: Callable, tasks: Mapping[str, tuple]) -> Iterator[tuple[str, Any]]:
    """Yield (key, fn(*args)) as each task completes. client None: in this process, in key order. On Dask: one
    task per key (pure=False), a task whose worker dies is rerun elsewhere (scheduler's allowed-failures); an
    EraflowError raised in a task reaches the caller as itself; KilledWorker → InputError (one line).

    Example::

        tasks = {f"{k:05d}": (store_path, k) for k in range(n_eras)}
        scores = dict(run_tasks(client, score_era, tasks))
    """
    return run_serial(fn, tasks) if client is None else run_on_dask(client, fn, tasks)
