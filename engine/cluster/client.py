"""A Dask client for a command: none (serial, in this process), a LocalCluster, or a running scheduler.

Tasks open the store (and any input file) BY PATH on the worker, so a real cluster needs storage that
every worker sees at the same absolute path; ``check_store_visible`` refuses to start otherwise.
dask and distributed are imported only when a cluster is asked for (``pip install 'eraflow[dask]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, first_line
from ..version import eraflow_version

if TYPE_CHECKING:
    from distributed import Client

INSTALL = "install it with `pip install 'eraflow[dask]'` (on the client and on every worker)"
SCHEDULER_TIMEOUT = 10.0  # seconds to wait for a scheduler to answer (and for its first worker)


def _distributed():
    """The ``distributed`` module, or InputError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"--workers/--scheduler need Dask's distributed scheduler; {INSTALL}") from None
    return distributed


def _local_cluster(distributed, workers: int):
    """A LocalCluster of ``workers`` processes, one thread each, no dashboard, logs at ERROR and above only.

    The scheduler's HTTP endpoints (health, metrics) listen on a free local port, not on 8787: a second
    cluster on the machine would otherwise fight over 8787 and leak a socket while it falls back.
    """
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR,
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def _scheduler_client(distributed, address: str, timeout: float):
    """A Client of the scheduler at ``address`` with at least one worker; InputError within ~``timeout`` s."""
    try:
        client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"no Dask scheduler answered at {address} within {timeout:g} s ({first_line(exc)}); "
                         "start one with `dask scheduler` and pass its address, e.g. tcp://HOST:8786") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise InputError(f"the Dask scheduler at {address} has no workers after {timeout:g} s; "
                         f"start some with `dask worker {address}`") from None
    return client


@contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None,
                timeout: float = SCHEDULER_TIMEOUT) -> Iterator[Client | None]:
    """None for a local serial run (neither given); a LocalCluster of ``workers`` processes
    (threads_per_worker=1, dashboard off, closed on exit); or a Client of the scheduler at ``scheduler``
    (InputError within ``timeout`` s when it does not answer). Both given → InputError. dask missing →
    InputError naming ``pip install 'eraflow[dask]'``. While open, the client is Dask's default (dask
    collections computed inside run on the cluster).

    Example::

        with open_client(workers=2) as client:
            results = dict(run_tasks(client, score_eras, tasks))
    """
    if workers is not None and scheduler is not None:
        raise InputError("give --workers N (a local cluster) or --scheduler ADDRESS (a running one), not both")
    if workers is None and scheduler is None:
        yield None
        return
    distributed = _distributed()
    if scheduler is not None:
        client = _scheduler_client(distributed, scheduler, timeout)
        try:
            yield client
        finally:
            client.close()
        return
    with _local_cluster(distributed, workers) as cluster, distributed.Client(cluster) as client:
        yield client


def _worker_view(path: str) -> tuple[str, str]:
    """On a worker: (its eraflow version, the fingerprint of the store at ``path`` or ``"error: <why>"``)."""
    from ..data.store import open_store

    try:
        with open_store(path) as store:
            return eraflow_version(), store.fingerprint
    except Exception as exc:  # every failure is reported back by name, per worker
        return eraflow_version(), f"error: {first_line(exc)}"


def _worker_problem(view: tuple[str, str] | BaseException, path: str, fingerprint: str) -> str | None:
    """What keeps a worker from running tasks on the store at ``path`` (None: nothing)."""
    if isinstance(view, BaseException):
        return (f"cannot run eraflow's tasks ({type(view).__name__}: {first_line(view)}); install the same eraflow "
                "on every worker: `pip install 'eraflow[dask]'` plus the model extras you use")
    version, found = view
    if version != eraflow_version():
        return (f"runs eraflow {version}, not {eraflow_version()} as here; install the same version on every "
                "worker and the client")
    if found.startswith("error: "):
        return (f"cannot open the store at {path}: {found[7:]}; put the store on storage every worker sees at the "
                "same path")
    if found != fingerprint:
        return (f"opens another store at {path} (fingerprint {found}, not {fingerprint}); every worker must see "
                "the same store at the same path")
    return None


def check_store_visible(client: Client | None, store_path: Path, fingerprint: str) -> None:
    """InputError naming the worker when a worker cannot open the store at this path, or opens another store.

    Every worker connected now opens ``store_path`` (resolved to an absolute path) and reports its
    fingerprint and eraflow version (a worker without eraflow, or with another version, is refused
    too); nothing is checked for a serial run (``client`` None).
    """
    if client is None:
        return
    path = str(Path(store_path).resolve())
    views = client.run(_worker_view, path, on_error="return")
    if not views:
        raise InputError("the Dask cluster has no workers; start some with `dask worker SCHEDULER_ADDRESS`")
    problems = {worker: problem for worker, view in sorted(views.items())
                if (problem := _worker_problem(view, path, fingerprint))}
    if problems:
        worker, problem = next(iter(problems.items()))
        more = f" (and {len(problems) - 1} more of {len(views)} workers)" if len(problems) > 1 else ""
        raise InputError(f"Dask worker {worker}{more} {problem}")

