"""engine.cluster: open_client (serial, LocalCluster, scheduler timeout), check_store_visible, run_tasks."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from dataclasses import replace

import click
import numpy as np
import pytest
from click.testing import CliRunner

from eraflow.cli.options import cluster_options
from eraflow.engine import SynthSpec, open_store
from eraflow.engine.cluster.client import check_store_visible, open_client
from eraflow.engine.cluster.executor import run_tasks
from eraflow.engine.errors import EraflowError, InputError, StoreError
from tests.conftest import synthetic_store

TINY = SynthSpec(eras=6, rows_per_era=20, features=8, targets=1, signal_features=2, seed=3)


# -- task functions: module level, so workers import them by reference -----------------------------

def era_target_sum(store_path: str, era: int) -> tuple[int, float]:
    """(pid, sum of era ``era``'s target) read from the store by path where the task runs."""
    store = open_store(store_path)
    lo, hi = store.offsets[era], store.offsets[era + 1]
    return os.getpid(), float(np.nansum(store.targets[lo:hi, 0], dtype=np.float64))


def fail_on(key: str, bad: str) -> str:
    if key == bad:
        raise InputError(f"task {key} refuses: bad value")
    return key


def no_eraflow_here(path: str) -> tuple[str, str]:
    """Stands in for the worker probe on a worker where eraflow is not installed."""
    raise ModuleNotFoundError("No module named 'eraflow'")


def die_once(marker: str, value: int) -> int:
    """Kills its worker the first time it runs (``marker`` absent), returns ``value`` when rerun."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return value


def die_in_worker() -> None:
    os._exit(1)  # the worker process dies: the scheduler reruns the task until allowed-failures


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("cluster"), TINY)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- open_client ------------------------------------------------------------------------------------

def test_serial_when_neither_given():
    with open_client() as c:
        assert c is None


def test_workers_and_scheduler_together_refused():
    """Guards against silently ignoring one of two contradicting options."""
    with pytest.raises(InputError, match="not both"), open_client(workers=2, scheduler="tcp://127.0.0.1:1"):
        pass


def test_local_cluster_has_the_workers_asked_for(client):
    info = client.scheduler_info()["workers"]
    assert len(info) == 2
    assert all(w["nthreads"] == 1 for w in info.values())


def test_scheduler_that_does_not_answer_is_one_line_error_within_timeout():
    """Guards against hanging (or a traceback) when --scheduler names nothing."""
    address = f"tcp://127.0.0.1:{_unused_port()}"
    start = time.monotonic()
    with pytest.raises(InputError) as err, open_client(scheduler=address, timeout=2):
        pass
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert "\n" not in message
    assert address in message and "dask scheduler" in message
    assert elapsed < 15, f"gave up after {elapsed:.1f} s, timeout was 2 s"


def test_scheduler_client_reaches_a_running_scheduler(client):
    """--scheduler ADDRESS of a live cluster: a working client, closed on exit (the cluster stays up)."""
    with open_client(scheduler=client.scheduler.address, timeout=10) as remote:
        assert remote.submit(sum, [1, 2], pure=False).result() == 3
    assert remote.status == "closed"
    assert client.submit(sum, [3, 4], pure=False).result() == 7


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    with pytest.raises(InputError, match=r"pip install 'eraflow\[dask\]'"), open_client(workers=1):
        pass


def test_local_cluster_closed_on_exit():
    """Guards against leaking worker processes when the command ends (or fails)."""
    with pytest.raises(RuntimeError), open_client(workers=1) as c:
        cluster = c.cluster
        raise RuntimeError("the command failed")
    assert c.status == "closed"
    assert cluster.status.name == "closed"


# -- check_store_visible -------------------------------------------------------------------------

def test_store_visible_to_every_worker_passes(client, tiny_store):
    check_store_visible(client, tiny_store.path, tiny_store.fingerprint)
    check_store_visible(None, tiny_store.path / "nothing-here", "anything")  # serial: nothing to check


def test_store_not_visible_to_a_worker_names_the_worker(client, tmp_path):
    """The client opened the store, but the path is not there for the workers (moved away after opening)."""
    store = synthetic_store(tmp_path, TINY)
    shutil.move(store.path, tmp_path / "elsewhere")
    with pytest.raises(InputError) as err:
        check_store_visible(client, store.path, store.fingerprint)
    message = str(err.value)
    assert "\n" not in message
    assert "cannot open the store" in message and str(store.path) in message
    assert any(worker in message for worker in client.scheduler_info()["workers"])


def test_another_store_at_the_same_path_is_refused(client, tmp_path):
    """A worker that sees a different store at the path (e.g. an older copy on its disk) is refused."""
    store = synthetic_store(tmp_path / "a", TINY)
    other = synthetic_store(tmp_path / "b", replace(TINY, seed=4))
    assert other.fingerprint != store.fingerprint
    shutil.rmtree(store.path)
    shutil.copytree(other.path, store.path)
    with pytest.raises(InputError, match=f"another store .*{other.fingerprint}.*not {store.fingerprint}"):
        check_store_visible(client, store.path, store.fingerprint)


def test_worker_with_another_eraflow_version_is_refused(client, tiny_store, monkeypatch):
    """Guards against mixing versions whose tasks could compute different numbers."""
    from eraflow.engine.cluster import client as client_module

    monkeypatch.setattr(client_module, "eraflow_version", lambda: "0.0.0-client")
    with pytest.raises(InputError, match=r"\(and 1 more of 2 workers\) runs eraflow .*, not 0.0.0-client"):
        check_store_visible(client, tiny_store.path, tiny_store.fingerprint)


def test_worker_without_eraflow_is_refused_in_one_line(client, tiny_store, monkeypatch):
    from eraflow.engine.cluster import client as client_module

    monkeypatch.setattr(client_module, "_worker_view", no_eraflow_here)
    with pytest.raises(InputError, match=r"cannot run eraflow's tasks \(ModuleNotFoundError: .*pip install") as err:
        check_store_visible(client, tiny_store.path, tiny_store.fingerprint)
    assert "\n" not in str(err.value)


# -- run_tasks ----------------------------------------------------------------------------------

def _era_tasks(store) -> dict[str, tuple]:
    return {f"era-{k:03d}": (str(store.path), k) for k in range(store.n_eras)}


def test_dask_results_equal_serial_and_run_in_workers(client, tiny_store):
    """Each key's result is fn(*args) whatever process ran it; the oracle is NumPy on the memmap here."""
    tasks = _era_tasks(tiny_store)
    on_dask = dict(run_tasks(client, era_target_sum, tasks))
    serial = list(run_tasks(None, era_target_sum, tasks))
    assert [key for key, _ in serial] == sorted(tasks)  # serial: key order
    assert sorted(on_dask) == sorted(tasks)  # every key exactly once
    for key, (_, value) in serial:
        assert on_dask[key][1] == value
        k = tasks[key][1]
        lo, hi = tiny_store.offsets[k], tiny_store.offsets[k + 1]
        assert value == float(np.nansum(tiny_store.targets[lo:hi, 0], dtype=np.float64))
    assert {pid for _, (pid, _) in serial} == {os.getpid()}
    assert os.getpid() not in {pid for pid, _ in on_dask.values()}


def test_repeated_tasks_are_rerun_not_cached(client, tiny_store):
    """pure=False: the same (fn, args) submitted twice runs twice (a rerun after a data change must not reuse)."""
    tasks = _era_tasks(tiny_store)
    assert dict(run_tasks(client, era_target_sum, tasks)).keys() == dict(run_tasks(client, era_target_sum,
                                                                                   tasks)).keys()


def test_eraflow_error_in_task_reaches_caller_as_itself(client):
    """Guards against wrapping task errors: the CLI maps EraflowError to one line and exit 2."""
    tasks = {k: (k, "b") for k in ("a", "b", "c")}
    with pytest.raises(InputError, match="^task b refuses: bad value$") as err:
        dict(run_tasks(client, fail_on, tasks))
    assert type(err.value) is InputError and isinstance(err.value, EraflowError)
    with pytest.raises(InputError, match="^task b refuses: bad value$"):
        dict(run_tasks(None, fail_on, tasks))


def test_store_error_in_task_keeps_its_class(client, tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        dict(run_tasks(client, era_target_sum, {"x": (str(tmp_path / "missing"), 0)}))


def test_task_whose_worker_dies_is_rerun_and_yielded_once(client, tmp_path):
    """A worker lost mid-task (OOM, preempted node): the task is rerun elsewhere, no result lost or doubled."""
    tasks = {f"t{i}": (str(tmp_path / f"died-{i}"), i) if i == 2 else (str(tmp_path), i) for i in range(4)}
    results = list(run_tasks(client, die_once, tasks))
    assert sorted(results) == [(f"t{i}", i) for i in range(4)]
    assert (tmp_path / "died-2").exists()  # it did die once


def test_task_that_keeps_killing_workers_is_one_line_input_error(monkeypatch):
    """A task whose every run kills its worker ends as InputError (not a hang, not a KilledWorker traceback)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), open_client(workers=1) as c:
        with pytest.raises(InputError, match="task boom was running on Dask workers that died") as err:
            dict(run_tasks(c, die_in_worker, {"boom": ()}))
    assert "\n" not in str(err.value)


# -- cluster_options ----------------------------------------------------------------------------

def test_cluster_options_parse():
    @click.command()
    @cluster_options
    def cmd(workers, scheduler, scheduler_timeout):
        click.echo(f"{workers} {scheduler} {scheduler_timeout}")

    runner = CliRunner()
    assert runner.invoke(cmd, []).output == "None None 10.0\n"
    assert runner.invoke(cmd, ["--workers", "2"]).output == "2 None 10.0\n"
    result = runner.invoke(cmd, ["--scheduler", "tcp://h:8786", "--scheduler-timeout", "2"])
    assert result.output == "None tcp://h:8786 2.0\n"
    assert runner.invoke(cmd, ["--workers", "0"]).exit_code == 2
