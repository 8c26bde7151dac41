"""Neutralizing against every feature of a large store holds one batch of eras, not the store, as float.

Writes a random prediction file for every row of STORE, runs ``eraflow neutralize`` against all
its features in a fresh process sampled every 5 ms, and prints wall time and peak anonymous
memory next to the size of the features as float32 (what a pandas/numpy pipeline materialises).

    python benches/neutralize_memory.py STORE      # e.g. the 254k × 2376 store from ingest_memory.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eraflow.engine import open_store
from eraflow.engine.evaluation.scoring import BATCH_BYTES

sys.path.insert(0, str(Path(__file__).parent))
from ingest_memory import measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    args = parser.parse_args()
    store = open_store(args.store)
    with tempfile.TemporaryDirectory() as tmp:
        preds, out = Path(tmp) / "preds.parquet", Path(tmp) / "neutral.parquet"
        values = np.random.default_rng(0).random(store.n_rows).astype(np.float32)
        pq.write_table(pa.table({"id": store.ids, "prediction": values}), preds)
        m = measure([sys.executable, "-m", "eraflow.cli", "neutralize", str(preds), "--store", str(args.store),
                     "-o", str(out)])
        neutral = pq.read_table(out).column("prediction").to_numpy()
    as_float = store.n_rows * len(store.feature_names) * 4 / 2**20
    print(f"{store.n_rows:,} rows × {len(store.feature_names)} features, {store.n_eras} eras: "
          f"{m['seconds']:.1f} s, peak anonymous memory {m['peak_anon_mib']:,.0f} MiB; "
          f"the features as float32 would take {as_float:,.0f} MiB; one batch of int8 ≤ {BATCH_BYTES >> 20} MiB; "
          f"finite outputs {np.isfinite(neutral).mean():.1%}")


if __name__ == "__main__":
    main()
