"""Time of ``evaluate_predictions`` (no plots) for 10 random prediction columns over every row of STORE,
against numerai-tools applied per era to the same metrics (timed on --baseline-eras eras, scaled).

    python benches/evaluate_speed.py STORE [--feature-set medium] [--columns 10] [--baseline-eras 20]

The baseline per era: numerai_corr of the 10-column frame, numerai_corr(top_bottom=200),
feature_neutral_corr and neutral_correlation against the same neutral features, and per column
pandas ``corrwith`` over the exposure features (max |corr| and RMS; numerai-tools'
``max_feature_correlation`` gives the same max but takes ~2.5 s per column and era, so it is left
out). Both sides' corr, TB200, FNC, neutral corr and max exposure must agree to 1e-6 on those eras.

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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numerai_tools import scoring as nt

from eraflow.engine import open_store
from eraflow.engine.evaluation.evaluate import EvaluateOptions, evaluate_predictions


def numerai_tools_era(x: np.ndarray, t: np.ndarray, features: pd.DataFrame, neutral: list[str],
                      seconds: dict) -> dict:
    """The evaluation metrics of one era with numerai-tools and pandas (rows with a target only);
    adds each metric's time to ``seconds``."""
    keep = ~np.isnan(t)
    index = features.index[keep]
    preds = pd.DataFrame(x[keep], index=index, columns=[f"p{j}" for j in range(x.shape[1])])
    target, feats = pd.Series(t[keep], index=index, name="target"), features[keep]
    steps = {"corr": lambda: nt.numerai_corr(preds, target).to_numpy(),
             "tb200": lambda: nt.numerai_corr(preds, target, top_bottom=200).to_numpy(),
             "fnc": lambda: nt.feature_neutral_corr(preds, feats[neutral], target).to_numpy(),
             "neutral_corr": lambda: nt.neutral_correlation(preds, feats[neutral], target).to_numpy(),
             "exposure": lambda: np.array([feats.corrwith(preds[c]) for c in preds])}
    out = {}
    for key, step in steps.items():
        started = time.perf_counter()
        out[key] = step()
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
    out["exposure_max"] = np.nanmax(np.abs(out["exposure"]), axis=1)
    return out


def baseline(store, values: np.ndarray, eras: int, neutral: list[str]) -> tuple[dict, list[dict]]:
    """numerai-tools seconds per metric for the first ``eras`` eras, and its per-era results."""
    results, seconds = [], {}
    for k in range(eras):
        lo, hi = store.offsets[k], store.offsets[k + 1]
        index = pd.Index([f"id{i:06d}" for i in range(hi - lo)])
        features = pd.DataFrame(store.features[lo:hi].astype(np.float64), index=index, columns=store.feature_names)
        results.append(numerai_tools_era(values[lo:hi], store.targets[lo:hi, 0].astype(np.float64), features,
                                         neutral, seconds))
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--feature-set")
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--baseline-eras", type=int, default=20)
    args = parser.parse_args()
    store = open_store(args.store)
    values = np.random.default_rng(0).random((store.n_rows, args.columns))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.parquet"
        pq.write_table(pa.table({"id": store.ids, **{f"p{j}": values[:, j] for j in range(args.columns)}}), path)
        started = time.perf_counter()
        ev = evaluate_predictions(store, path, EvaluateOptions(feature_set=args.feature_set))
        seconds = time.perf_counter() - started
    names = {role: store.feature_sets.get(name, store.feature_names) for role, name in ev.feature_sets.items()}
    base_seconds, base = baseline(store, values, args.baseline_eras, names["neutral"])
    for key in ("corr", "tb200", "fnc", "neutral_corr", "exposure_max"):
        np.testing.assert_allclose(ev.per_era[key][:args.baseline_eras], np.array([b[key] for b in base]),
                                   atol=1e-6, err_msg=key)
    scale = store.n_eras / args.baseline_eras
    print(f"{store.n_rows:,} rows, {store.n_eras} eras, {args.columns} columns; exposure against "
          f"{ev.feature_sets['exposure']} ({len(names['exposure'])} features), FNC and neutral corr against "
          f"{ev.feature_sets['neutral']} ({len(names['neutral'])}):")
    print(f"  eraflow evaluate             {seconds:9.1f} s (plots excluded)")
    total = sum(base_seconds.values()) * scale
    print(f"  numerai-tools/pandas per era {total:9.1f} s (timed on {args.baseline_eras} eras, scaled)  "
          f"ratio {total / seconds:.1f}×")
    for key, value in base_seconds.items():
        print(f"    {key:14} {value * scale:9.1f} s")

if __name__ == "__main__":
    main()
