"""Time of ``evaluate_predictions`` (no plots) for 10 random prediction columns over every row of STORE.

    python benches/evaluate_speed.py STORE [--feature-set medium] [--columns 10]

A validation-scale store (600 eras × 5000 rows × 2376 features, with Numerai's feature sets):
    eraflow synth data/ --eras 601 --validation-eras 1 --rows-per-era 5000 --features 2376
    eraflow ingest data/train.parquet store/ --features-json data/features.json
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
        ev = evaluate_predictions(store, path, EvaluateOptions(feature_set=args.feature_set))
        seconds = time.perf_counter() - started
    widths = {role: len(store.feature_sets.get(name, store.feature_names)) for role, name in ev.feature_sets.items()}
    print(f"{store.n_rows:,} rows, {store.n_eras} eras, {args.columns} columns; exposure against "
          f"{ev.feature_sets['exposure']} ({widths['exposure']} features), FNC and neutral corr against "
          f"{ev.feature_sets['neutral']} ({widths['neutral']}): evaluate took {seconds:.1f} s (plots excluded)")

if __name__ == "__main__":
    main()
