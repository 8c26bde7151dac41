"""Building a LightGBM training set from a store: eraflow's row-block Sequence (and its cached
binary) against the float32-array path everyone uses, each in a fresh process, same run.

Prints wall time and peak RSS (VmHWM) of: the float32 path (``np.asarray(features, float32)``
then ``lgb.Dataset(...).construct()``), eraflow's Dataset built in one piece (Sequence +
save_binary) and the reload of its cached binary, then the same binned in column blocks (the
default: ``lgb_data.BLOCK_CELLS``) and reloaded. Same LightGBM binning parameters for all.

    python benches/train_dataset_memory.py STORE        # e.g. a 1M × 2376 store from ingest_memory.py
    python benches/train_dataset_memory.py STORE --eras 210 --no-float32   # the first 210 eras only
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
from eraflow.engine.models import lgb_data
from eraflow.engine.models.params import BASE
store = open_store(sys.argv[2])
n_eras = int(sys.argv[3]) or store.n_eras
n_rows = int(store.offsets[n_eras])
y = np.nan_to_num(store.targets[:n_rows, 0], nan=0.5)
params = {**BASE, "num_threads": 2}
t = time.perf_counter()
if sys.argv[1] == "float32":
    ds = lgb.Dataset(np.asarray(store.features[:n_rows], dtype=np.float32), label=y, params=params).construct()
else:
    if sys.argv[1] == "whole":
        lgb_data.BLOCK_CELLS = 1 << 62
    ds = lgb_data.store_dataset(store, np.arange(n_eras), None, y, params)
seconds = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_mib": hwm / 1024, "rows": ds.num_data(), "features": ds.num_feature()}))
"""


def run(kind: str, store: Path, n_eras: int) -> dict:
    os.sync()
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(store), str(n_eras)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--eras", type=int, default=0, help="build from the first ERAS eras only (default: all)")
    parser.add_argument("--no-float32", action="store_true", help="skip the float32 path (4 bytes a cell in memory)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    shutil.rmtree(args.store / "cache", ignore_errors=True)
    results = {} if args.no_float32 else {"float32_array": run("float32", args.store, args.eras)}
    for kind, label in (("whole", "eraflow_one_piece"), ("blocks", "eraflow_column_blocks")):
        results[f"{label}_first_build"] = run(kind, args.store, args.eras)
        results[f"{label}_cached_reload"] = run(kind, args.store, args.eras)
    base = results["eraflow_one_piece_first_build" if args.no_float32 else "float32_array"]
    print(f"{'path':<40} {'seconds':>8} {'peak RSS MiB':>13} {'RSS ratio':>10}")
    for name, r in results.items():
        print(f"{name:<40} {r['seconds']:>8.1f} {r['peak_rss_mib']:>13,.0f} {r['peak_rss_mib'] / base['peak_rss_mib']:>9.2f}×")
    print(f"RSS ratio: to {'the one-piece first build' if args.no_float32 else 'the float32 path'}; "
          f"{base['rows']:,} rows × {base['features']} features")
    if args.out:
        args.out.write_text(json.dumps({"time": time.strftime("%Y-%m-%d"), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
