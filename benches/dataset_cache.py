"""What the dataset cache's check costs: sha256 of a cached LightGBM binary vs a rebuild and a reload.

Builds the training set of every era of STORE (starter binning), then reloads it through the
cache (sha256 check + LightGBM load + store labels), and times the sha256 alone.

Usage: python benches/dataset_cache.py STORE [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import shutil
import time

import lightgbm as lgb
import numpy as np

from eraflow.engine import open_store
from eraflow.engine.data import cache
from eraflow.engine.models.lgb_data import store_dataset
from eraflow.engine.models.params import load_params


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    store = open_store(args.store)
    for d in cache.cache_dirs(store):
        shutil.rmtree(d, ignore_errors=True)
    params = {**load_params("starter"), "num_threads": args.threads}
    eras = np.arange(store.n_eras)
    label = np.zeros(store.n_rows)

    def build():
        for d in cache.cache_dirs(store):
            shutil.rmtree(d, ignore_errors=True)
        store_dataset(store, eras, None, label, params)

    first = best_of(args.repeat, build)
    (entry,) = cache.store_entries(store)
    sha = best_of(args.repeat, lambda: cache.file_sha256(entry.path))
    reload = best_of(args.repeat, lambda: store_dataset(store, eras, None, label, params))
    load = best_of(args.repeat, lambda: lgb.Dataset(str(entry.path), params={**params, "verbose": -1}).construct())
    print(f"store {store.n_rows:,} rows × {len(store.feature_names)} features; features.i8 "
          f"{store.n_rows * len(store.feature_names) / 2**20:.1f} MiB; cached binary {entry.bytes / 2**20:.1f} MiB "
          f"({entry.bytes / (store.n_rows * len(store.feature_names)):.2f}× features.i8)")
    print(f"build + save (no cache)  {first:7.3f} s")
    print(f"reload through the cache {reload:7.3f} s  ({reload / first:.1%} of a build)")
    print(f"  of which sha256 check  {sha:7.3f} s  ({sha / first:.1%} of a build, {sha / reload:.0%} of the reload)")
    print(f"  LightGBM load alone    {load:7.3f} s")


if __name__ == "__main__":
    main()
