"""Ingest memory and throughput on v5-shaped synthetic files, against baselines in the same run.

For each size it measures, each in a fresh process sampled every 5 ms:
  - peak anonymous memory (RssAnon: not file-backed) and wall time of `eraflow ingest`
    (polars engine, and duckdb);
  - pyarrow `ParquetFile.iter_batches` decoding the same columns (throughput baseline);
  - pandas.read_parquet of the smallest file (memory reference).
Then it checks read-back: random rows and columns of the store equal what pyarrow reads.

For each of ``--shuffled-sizes`` it also writes the same rows in random order as a user's pandas
frame would be (``sample(frac=1)``, ``id`` as the index, pandas' row groups: one up to 1Mi rows) and
measures the ingest engine itself (``ingest_files`` in a fresh process) on the era-sorted and the
shuffled file, against pyarrow's decode of the shuffled file; throughput compares the work of each
process, imports excluded. Both stores must hold the same rows. Each measured process starts with its source file out of
the page cache (Polars reads a row group whole into memory when it is not cached).

    python benches/ingest_memory.py                       # 250k and 1M rows × 2376 features
    python benches/ingest_memory.py --sizes 20000 --features 500 --shuffled-sizes 20000   # quick look
    python benches/ingest_memory.py --sizes '' --repeat 2  # shuffled files only, median of 2 runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
import json, sys, time, pyarrow.parquet as pq
started = time.perf_counter()
pf = pq.ParquetFile(sys.argv[1])
cols = [c for c in pf.schema_arrow.names if c.startswith(("feature", "target")) or c in ("id", "era")]
for batch in pf.iter_batches(columns=cols):
    pass
print(json.dumps({"work_seconds": time.perf_counter() - started}))
"""
PANDAS = "import sys, pandas as pd; pd.read_parquet(sys.argv[1])"
ENGINE = """
import json, sys
from eraflow.engine import ingest_files
print(json.dumps({"work_seconds": ingest_files([sys.argv[1]], sys.argv[2], force=True).seconds}))
"""


def rss_anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (after the sync that makes them clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(cmd: list[str], cold: Path | None = None) -> dict:
    """Run ``cmd`` after flushing dirty pages (so earlier writes do not slow it) and, with ``cold``,
    evicting that file from the page cache; return wall seconds, CPU seconds (user + system: less
    sensitive to a busy machine), peak RssAnon (MiB) sampled every 5 ms, and the JSON object a
    command prints last on stdout, if any."""
    os.sync()
    if cold is not None:
        evict(cold)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_anon_kib(proc.pid))
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    if proc.returncode:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    lines = proc.stdout.read().splitlines()
    printed = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_anon_mib": peak / 1024, **printed}


def measure_runs(cmd: list[str], cold: Path, repeat: int) -> dict:
    """``measure`` ``repeat`` times: median of each timing, highest peak, every run kept."""
    runs = [measure(cmd, cold) for _ in range(repeat)]
    out = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != "peak_anon_mib"}
    return {**out, "peak_anon_mib": max(r["peak_anon_mib"] for r in runs), "runs": runs}


def ensure_data(root: Path, rows: int, features: int) -> Path:
    """Train-only synthetic file of about ``rows`` rows (cached by size)."""
    out = root / f"v5_{rows}x{features}"
    if not (out / "synth.json").exists():
        eras = max(2, round(rows / ROWS_PER_ERA / 0.98))  # 1 validation era of 50 is split off
        spec = SynthSpec(eras=eras + 1, rows_per_era=ROWS_PER_ERA, features=features, validation_eras=1, seed=11)
        print(f"generating {out} ...", flush=True)
        write_synthetic(out, spec)
    return out / "train.parquet"


def ensure_shuffled(sorted_src: Path) -> Path:
    """The rows of ``sorted_src`` in random order, written as a pandas user would (cached)."""
    import pandas as pd

    out = sorted_src.with_name("shuffled.parquet")
    if not out.exists():
        print(f"writing {out} ...", flush=True)
        frame = pd.read_parquet(sorted_src).set_index("id").sample(frac=1.0, random_state=0)
        frame.to_parquet(out.with_suffix(".tmp"))
        del frame
        out.with_suffix(".tmp").replace(out)
    return out


def check_same_rows(store_a: Path, store_b: Path) -> int:
    """Both stores hold the same rows (ids, features, targets) in the same eras; return rows checked."""
    a, b = open_store(store_a), open_store(store_b)
    assert a.eras == b.eras and np.array_equal(a.offsets, b.offsets), "eras or era sizes differ"
    era = np.repeat(np.arange(len(a.eras)), np.diff(a.offsets))
    order_a, order_b = (np.lexsort((s.ids.astype(str), era)) for s in (a, b))
    assert np.array_equal(a.ids[order_a], b.ids[order_b]), "ids differ"
    for lo in range(0, a.n_rows, 50_000):
        np.testing.assert_array_equal(a.features[order_a[lo:lo + 50_000]], b.features[order_b[lo:lo + 50_000]])
    np.testing.assert_array_equal(a.targets[order_a], b.targets[order_b])
    return a.n_rows


def shuffled_row(root: Path, rows: int, features: int, repeat: int, rng: np.random.Generator) -> dict:
    """Engine on the era-sorted file and on its shuffled copy, against pyarrow's decode of the copy."""
    sorted_src = ensure_data(root, rows, features)
    shuffled = ensure_shuffled(sorted_src)
    meta = pq.ParquetFile(shuffled).metadata
    row = {"rows": meta.num_rows, "features": features, "row_groups": meta.num_row_groups,
           "file_mib": round(shuffled.stat().st_size / 2**20, 1)}
    row["pyarrow_iter_batches"] = measure_runs([sys.executable, "-c", DECODE, str(shuffled)], shuffled, repeat)
    stores = {}
    for name, src in (("sorted", sorted_src), ("shuffled", shuffled)):
        stores[name] = root / f"store_{rows}_{name}"
        row[f"engine_{name}"] = measure_runs([sys.executable, "-c", ENGINE, str(src), str(stores[name])], src, repeat)
    row["read_back_cells"] = check_read_back(stores["shuffled"], shuffled, rng)
    row["same_rows_as_sorted"] = check_same_rows(stores["sorted"], stores["shuffled"])
    return row


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
    parser.add_argument("--shuffled-sizes", default="100000,400000",
                        help="rows of era-shuffled pandas files to measure ('' for none)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each shuffled-file measurement (median)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rng = np.random.default_rng(0)
    shuffled = []
    for rows in (int(s) for s in args.shuffled_sizes.split(",") if s):
        shuffled.append(shuffled_row(args.data, rows, args.features, args.repeat, rng))
        print(json.dumps(shuffled[-1]), flush=True)
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
    report_shuffled(shuffled)
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                                        "results": results, "shuffled": shuffled}, indent=1) + "\n")


def report(results: list[dict]) -> None:
    if not results:
        return
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


def report_shuffled(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\n{'rows':>9} {'shuffled file (pandas)':<24} {'process s':>9} {'cpu s':>6} {'work s':>7} "
          f"{'peak anon MiB':>14} {'rows/s':>10} {'vs pyarrow':>10}")
    for r in rows:
        base = r["pyarrow_iter_batches"]["work_seconds"]
        for key in ("pyarrow_iter_batches", "engine_sorted", "engine_shuffled"):
            m = r[key]
            work = m["work_seconds"]
            print(f"{r['rows']:>9,} {key:<24} {m['seconds']:>9.2f} {m['cpu_seconds']:>6.1f} {work:>7.2f} "
                  f"{m['peak_anon_mib']:>14.0f} {r['rows'] / work:>10,.0f} {base / work:>9.2f}×")
    if len(rows) > 1:
        for key in ("engine_sorted", "engine_shuffled"):
            small, large = (r[key]["peak_anon_mib"] for r in (rows[0], rows[-1]))
            print(f"{key}: peak anon {small:.0f} → {large:.0f} MiB ({large / small - 1:+.1%}) "
                  f"from {rows[0]['rows']:,} to {rows[-1]['rows']:,} rows")


if __name__ == "__main__":
    main()
