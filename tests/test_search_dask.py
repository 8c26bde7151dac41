"""A search on a Dask LocalCluster (2 worker processes) gives the serial leaderboard, even when a worker is
killed while trials run."""

from __future__ import annotations

import json
import os
import signal

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import SynthSpec
from eraflow.engine.cluster.client import open_client
from eraflow.engine.experiments.search import LEADERBOARD, SearchConfig, plan_search, run_search
from eraflow.engine.experiments.space import parse_space
from tests.conftest import synthetic_store

pytest.importorskip("distributed")

SPEC = SynthSpec(eras=24, rows_per_era=60, features=16, targets=1, seed=11)  # validation eras 0019..0024
SPACE_TOML = ("n_estimators = 12\nnum_leaves = [4, 8, 16]\nlearning_rate = {low = 0.02, high = 0.2, log = true}\n"
              "min_data_in_leaf = {low = 5, high = 30}\n")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("search-dask"), SPEC)


def config(trials: int) -> SearchConfig:
    return SearchConfig(parse_space({"n_estimators": 12, "num_leaves": [4, 8, 16],
                                     "learning_rate": {"low": 0.02, "high": 0.2, "log": True},
                                     "min_data_in_leaf": {"low": 5, "high": 30}}),
                        trials=trials, cv=2, embargo=1, valid_eras="0019:", neutralize=(0.0, 0.5), threads=1)


def board(path) -> dict:
    return {k: v for k, v in pq.read_table(path / LEADERBOARD).to_pydict().items() if k != "time"}


@pytest.fixture(scope="module")
def serial(store, tmp_path_factory):
    """The leaderboard of 6 trials run in this process (its first 4 rows are a 4-trial search's)."""
    out = tmp_path_factory.mktemp("serial") / "s"
    run_search(plan_search(store, config(6)), out)
    return board(out)


def test_workers_give_the_serial_leaderboard(store, serial, tmp_path):
    """Guards against a result that depends on where a trial ran (threads, task order, per-worker state)."""
    space = tmp_path / "space.toml"
    space.write_text(SPACE_TOML)
    result = CliRunner().invoke(cli, ["search", str(store.path), "--space", str(space), "--trials", "4", "--cv", "2",
                                      "--embargo", "1", "--valid-eras", "0019:", "--neutralize", "0,0.5",
                                      "-o", str(tmp_path / "dask"), "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ran"] == [0, 1, 2, 3]
    assert board(tmp_path / "dask") == {k: v[:4] for k, v in serial.items()}


def test_scheduler_address_gives_the_serial_leaderboard(store, serial, tmp_path):
    """`search --scheduler ADDRESS` (a LocalCluster standing for a real cluster) equals the serial run."""
    from distributed import LocalCluster

    space = tmp_path / "space.toml"
    space.write_text(SPACE_TOML)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = CliRunner().invoke(cli, ["search", str(store.path), "--space", str(space), "--trials", "4", "--cv",
                                          "2", "--embargo", "1", "--valid-eras", "0019:", "--neutralize", "0,0.5",
                                          "-o", str(tmp_path / "sched"), "--scheduler", cluster.scheduler_address,
                                          "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ran"] == [0, 1, 2, 3]
    assert board(tmp_path / "sched") == {k: v[:4] for k, v in serial.items()}


def test_killed_worker_loses_no_trial_and_writes_none_twice(store, serial, tmp_path):
    """SIGKILL one worker while it holds tasks: its tasks rerun elsewhere, every trial ends up in the
    leaderboard exactly once, with the serial numbers."""
    plan = plan_search(store, config(6))
    killed, finished = [], []
    with open_client(workers=2) as client:
        first_pids = set(client.run(os.getpid).values())

        def kill_a_busy_worker(done: int, total: int) -> None:
            if done < 1 or killed:
                return
            busy = [worker for worker, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        result = run_search(plan, tmp_path / "dask", client, on_task=kill_a_busy_worker,
                            on_trial=lambda record, done: finished.append(record["trial"]))
        client.wait_for_workers(2, timeout=30)
        after_pids = set(client.run(os.getpid).values())
    assert killed and killed[0] in first_pids and killed[0] not in after_pids
    assert sorted(finished) == list(range(6)) and len(finished) == 6
    assert sorted(p.name for p in (tmp_path / "dask" / "trials").iterdir()) == [f"trial-{i:04d}.json" for i in range(6)]
    assert sorted(result.ran) == list(range(6))
    assert board(tmp_path / "dask") == serial
