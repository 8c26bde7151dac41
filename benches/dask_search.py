"""The Dask path of `eraflow search` against a serial run of the same search, measured in the same run.

One synthetic store; one search (8 trials × 3 CV folds = 24 (trial, fold) tasks, LightGBM, 1 thread per
task) run serially in this process, on a LocalCluster of 1 worker (the same work, one task at a time:
the pure overhead of the Dask path) and of 2 workers. Every mode runs ``--repeats`` times into fresh
output directories, in turn; medians are quoted. Cluster start-up is timed apart from the search, and
so is each worker's warm-up (importing LightGBM and loading numba's cached kernels, once per worker
process; the serial run paid it before the clock started). Each task's own time and the bytes it reads
come from the trial files, for the scaling model:

    T(W workers) ≈ start-up + ceil(tasks / W) · t_task + tasks · t_schedule

Also checked: every mode writes the same leaderboard (a trial's numbers do not depend on where it ran).

    python benches/dask_search.py --data /tmp/dask-bench --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

from eraflow.engine import SynthSpec, ingest_files, open_store, write_synthetic
from eraflow.engine.cluster.client import open_client
from eraflow.engine.data.ingest import IngestOptions
from eraflow.engine.experiments.search import SearchConfig, load_trials, plan_search, run_search
from eraflow.engine.experiments.space import parse_space

SPACE = {"n_estimators": 150, "learning_rate": {"low": 0.02, "high": 0.2, "log": True},
         "num_leaves": [7, 15, 31], "colsample_bytree": [0.3, 0.6]}
MODES = ("serial", "dask-1", "dask-2")


def build_store(root: Path, args) -> Path:
    store = root / "store"
    if not (store / "meta.json").exists():
        write_synthetic(root, SynthSpec(eras=args.eras, rows_per_era=args.rows_per_era, features=args.features,
                                        seed=1))
        ingest_files([root / "train.parquet", root / "validation.parquet"], store,
                     IngestOptions(features_json=root / "features.json", feature_set="all"))
    return store


def warm_up() -> None:
    """What a worker process does once before its first task: import LightGBM, load the numba kernels."""
    import lightgbm  # noqa: F401
    import numpy as np

    from eraflow.engine.experiments import trials  # noqa: F401
    from eraflow.kernels import numerai_corr

    numerai_corr(np.arange(4.0), np.arange(4.0), np.array([0, 4]))


def run_mode(mode: str, plan, out: Path) -> dict:
    """Seconds to start the cluster, warm its workers and run the search in ``mode``; the sum of the tasks'
    own seconds; the leaderboard's score columns."""
    shutil.rmtree(out, ignore_errors=True)
    workers = None if mode == "serial" else int(mode.split("-")[1])
    started = time.perf_counter()
    with open_client(workers=workers) as client:
        ready = time.perf_counter()
        if client is not None:
            client.run(warm_up)
        warm = time.perf_counter()
        run_search(plan, out, client)
        done = time.perf_counter()
    board = pq.read_table(out / "leaderboard.parquet").sort_by("trial")
    scores = {c: board.column(c).to_pylist() for c in ("trial", "cv_mean", "cv_std", "cv_sharpe")}
    tasks = sum(f["seconds"] for record in load_trials(out, plan).values() for f in record["folds"])
    return {"startup": ready - started, "warm_up": warm - ready, "search": done - warm, "task_seconds": tasks,
            "scores": scores}


def task_profile(plan, out: Path) -> dict:
    """Per-task seconds and bytes read, from the trial files of a run."""
    folds = [f for record in load_trials(out, plan).values() for f in record["folds"]]
    return {"tasks": len(folds), "task_seconds_median": statistics.median(f["seconds"] for f in folds),
            "task_seconds_sum": sum(f["seconds"] for f in folds),
            "task_mib_read_median": statistics.median(f["bytes_read"] for f in folds) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/dask-bench"))
    parser.add_argument("--eras", type=int, default=120)
    parser.add_argument("--rows-per-era", type=int, default=1000)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dask_search.json")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    store = open_store(build_store(args.data, args))
    config = SearchConfig(space=parse_space(SPACE), trials=args.trials, cv=3, seed=0, threads=1)
    plan = plan_search(store, config)
    warm_up()  # the serial runs' warm-up, before their clock starts
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(args.repeats):
        for mode in MODES:
            runs[mode].append(run_mode(mode, plan, args.data / f"search-{mode}"))
            run = runs[mode][-1]
            print(f"repeat {r + 1} {mode:7} start-up {run['startup']:6.2f} s  warm-up {run['warm_up']:5.2f} s  "
                  f"search {run['search']:6.2f} s  tasks {run['task_seconds']:6.2f} s", flush=True)
    same = all(run["scores"] == runs["serial"][0]["scores"] for m in MODES for run in runs[m])
    keys = ("startup", "warm_up", "search", "task_seconds")
    median = {m: {k: statistics.median(run[k] for run in runs[m]) for k in keys} for m in MODES}
    serial = median["serial"]["search"]
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "store": {
                  "rows": store.n_rows, "eras": store.n_eras, "features": len(store.feature_names)},
              "trials": args.trials, "folds": 3, "repeats": args.repeats, "space": SPACE,
              "median_seconds": median, "same_leaderboard": same,
              "overhead_1_worker": median["dask-1"]["search"] / serial - 1,
              "overhead_1_worker_with_startup": sum(median["dask-1"][k] for k in ("startup", "warm_up", "search"))
              / serial - 1,
              "speedup_2_workers": serial / median["dask-2"]["search"],
              # wall time not spent inside tasks, per task: scheduling, transfers, the client's writes
              "coordination_ms_per_task": {m: 1000 * (median[m]["search"] - median[m]["task_seconds"])
                                           / (args.trials * 3) for m in ("serial", "dask-1")},
              "profile": task_profile(plan, args.data / "search-serial"), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
