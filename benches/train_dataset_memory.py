"""Building a LightGBM training set from a store: eraflow's row-block Sequence (and its cached
binary) against the float32-array path everyone uses, each in a fresh process, same run.

Prints wall time and peak RSS (VmHWM) of: the float32 path (``np.asarray(features, float32)``
then ``lgb.Dataset(...).construct()``), the first eraflow build (Sequence + save_binary), and
the reload of the cached binary. Same LightGBM binning parameters for all.

    python benches/train_dataset_memory.py STORE        # e.g. a 1M × 2376 store from ingest_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, numpy as np, lightgbm as lgb
from eraflow.engine import open_store
from eraflow.engine.models.lgb_data import store_dataset
from eraflow.engine.models.params import BASE
store = open_store(sys.argv[2])
y = np.nan_to_num(store.targets[:, 0], nan=0.5)
params = {**BASE, "num_threads": 2}
t = time.perf_counter()
if sys.argv[1] == "float32":
    ds = lgb.Dataset(np.asarray(store.features, dtype=np.float32), label=y, params=params).construct()
else:
    ds = store_dataset(store, np.arange(store.n_eras), None, y, params)
seconds = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_mib": hwm / 1024, "rows": ds.num_data(), "features": ds.num_feature()}))
"""


def run(kind: str, store: Path) -> dict:
    os.sync()
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(store)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    shutil.rmtree(args.store / "cache", ignore_errors=True)
    results = {"float32_array": run("float32", args.store), "eraflow_first_build": run("store", args.store),
               "eraflow_cached_reload": run("store", args.store)}
    base = results["float32_array"]
    print(f"{'path':<24} {'seconds':>8} {'peak RSS MiB':>13} {'RSS vs float32':>15}")
    for name, r in results.items():
        print(f"{name:<24} {r['seconds']:>8.1f} {r['peak_rss_mib']:>13,.0f} {r['peak_rss_mib'] / base['peak_rss_mib']:>14.2f}×")
    first, reload = results["eraflow_first_build"]["seconds"], results["eraflow_cached_reload"]["seconds"]
    print(f"cached reload takes {reload / first:.1%} of the first build ({results['float32_array']['rows']:,} rows "
          f"× {results['float32_array']['features']} features)")
    if args.out:
        args.out.write_text(json.dumps({"time": time.strftime("%Y-%m-%d"), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
