"""Time of ``evaluate_predictions`` (no plots) for 10 random prediction columns over every row of STORE.

    python benches/evaluate_speed.py STORE [--feature-set medium] [--columns 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eraflow.engine import open_store
from eraflow.engine.evaluate import EvaluateOptions, evaluate_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--feature-set")
    parser.add_argument("--columns", type=int, default=10)
    args = parser.parse_args()
    store = open_store(args.store)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.parquet"
        pq.write_table(pa.table({"id": store.ids, **{f"p{j}": rng.random(store.n_rows) for j in range(args.columns)}}),
                       path)
        started = time.perf_counter()
        evaluate_predictions(store, path, EvaluateOptions(feature_set=args.feature_set))
        seconds = time.perf_counter() - started
    width = len(store.select(feature_set=args.feature_set).feature_names) if args.feature_set else len(store.feature_names)
    print(f"{store.n_rows:,} rows, {store.n_eras} eras, {width} features, {args.columns} columns: "
          f"evaluate took {seconds:.1f} s (plots excluded)")


if __name__ == "__main__":
    main()
