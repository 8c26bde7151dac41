"""Ingest memory and throughput on v5-shaped synthetic files, against baselines in the same run.

For each size it measures, each in a fresh process sampled every 5 ms:
  - peak anonymous memory (RssAnon: not file-backed) and wall time of `eraflow ingest`
    (polars engine, and duckdb);
  - pyarrow `ParquetFile.iter_batches` decoding the same columns (throughput baseline);
  - pandas.read_parquet of the smallest file (memory reference).
Then it checks read-back: random rows and columns of the store equal what pyarrow reads.

    python benches/ingest_memory.py                       # 250k and 1M rows × 2376 features
    python benches/ingest_memory.py --sizes 20000 --features 500   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from eraflow.engine import SynthSpec, open_store, write_synthetic

ROWS_PER_ERA = 2500

DECODE = """
import sys, pyarrow.parquet as pq
pf = pq.ParquetFile(sys.argv[1])
cols = [c for c in pf.schema_arrow.names if c.startswith(("feature", "target")) or c in ("id", "era")]
for batch in pf.iter_batches(columns=cols):
    pass
"""
PANDAS = "import sys, pandas as pd; pd.read_parquet(sys.argv[1])"


def rss_anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` after flushing dirty pages (so earlier writes do not slow it); return wall seconds
    and peak RssAnon (MiB) sampled every 5 ms."""
    os.sync()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_anon_kib(proc.pid))
        time.sleep(0.005)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    return {"seconds": time.perf_counter() - started, "peak_anon_mib": peak / 1024}


def ensure_data(root: Path, rows: int, features: int) -> Path:
    """Train-only synthetic file of about ``rows`` rows (cached by size)."""
    out = root / f"v5_{rows}x{features}"
    if not (out / "synth.json").exists():
        eras = max(2, round(rows / ROWS_PER_ERA / 0.98))  # 1 validation era of 50 is split off
        spec = SynthSpec(eras=eras + 1, rows_per_era=ROWS_PER_ERA, features=features, validation_eras=1, seed=11)
        print(f"generating {out} ...", flush=True)
        write_synthetic(out, spec)
    return out / "train.parquet"


def check_read_back(store_path: Path, source: Path, rng: np.random.Generator) -> int:
    """Compare 200 random rows × 64 random features of the store with pyarrow; return cells checked."""
    store = open_store(store_path)
    cols = sorted(rng.choice(len(store.feature_names), 64, replace=False).tolist())
    names = [store.feature_names[j] for j in cols]
    table = pq.read_table(source, columns=["id", *names])
    rows = np.sort(rng.choice(store.n_rows, 200, replace=False))
    position = {v: i for i, v in enumerate(table.column("id").to_pylist())}
    src_rows = [position[v] for v in store.ids[rows]]
    want = np.column_stack([table.column(n).to_numpy()[src_rows] for n in names])
    np.testing.assert_array_equal(store.features[rows][:, cols], want)
    return want.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--features", type=int, default=2376)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "eraflow-bench")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    results = []
    for rows in sizes:
        src = ensure_data(args.data, rows, args.features)
        n = pq.ParquetFile(src).metadata.num_rows
        size_mib = src.stat().st_size / 2**20
        row = {"rows": n, "features": args.features, "file_mib": round(size_mib, 1)}
        row["pyarrow_iter_batches"] = measure([sys.executable, "-c", DECODE, str(src)])
        for engine in ("polars", "duckdb"):
            store = args.data / f"store_{rows}_{engine}"
            row[f"eraflow_{engine}"] = measure([sys.executable, "-m", "eraflow.cli", "ingest", "--quiet",
                                                "--force", "--engine", engine, str(src), str(store)])
            row[f"read_back_cells_{engine}"] = check_read_back(store, src, rng)
        if rows == sizes[0]:
            row["pandas_read_parquet"] = measure([sys.executable, "-c", PANDAS, str(src)])
        results.append(row)
        print(json.dumps(row), flush=True)
    report(results)
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                                        "results": results}, indent=1) + "\n")


def report(results: list[dict]) -> None:
    print(f"\n{'rows':>9} {'what':<22} {'seconds':>8} {'peak anon MiB':>14} {'rows/s':>10} {'vs pyarrow':>10}")
    for r in results:
        base = r["pyarrow_iter_batches"]["seconds"]
        for key in ("pyarrow_iter_batches", "eraflow_polars", "eraflow_duckdb", "pandas_read_parquet"):
            if key in r:
                m = r[key]
                print(f"{r['rows']:>9,} {key:<22} {m['seconds']:>8.2f} {m['peak_anon_mib']:>14.0f} "
                      f"{r['rows'] / m['seconds']:>10,.0f} {base / m['seconds']:>9.2f}×")
    if len(results) > 1:
        for engine in ("polars", "duckdb"):
            small, large = (r[f"eraflow_{engine}"]["peak_anon_mib"] for r in (results[0], results[-1]))
            print(f"{engine}: peak anon {small:.0f} → {large:.0f} MiB ({(large / small - 1):+.1%}) "
                  f"from {results[0]['rows']:,} to {results[-1]['rows']:,} rows")


if __name__ == "__main__":
    main()
