"""Does a model trained by eraflow find the planted signal, and does CV predict held-out eras?

For each seed: synthetic data with a known signal → store → ``train_models`` with era CV on the
first 75 % of eras → predictions on the held-out last 25 % → per-era numerai_corr of the model
and of the oracle (the planted score, synth's oracle.parquet) on the same eras. Prints the ratio
model/oracle (goal ≥ 0.7) and whether the CV estimate lies within 2 standard errors of the
held-out mean.

    python benches/train_validity.py --eras 300 --rows-per-era 2000 --features 200 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eraflow.engine import SynthSpec, ingest_files, open_store, write_synthetic
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.evaluation.scoring import score_aligned
from eraflow.engine.models.params import load_params
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, train_models

PARAMS = {**load_params("starter"), "n_estimators": 1000, "learning_rate": 0.02, "max_depth": 2, "num_leaves": 4,
          "colsample_bytree": 0.5}


def held_out_corr(store, path: Path, eras: list[str]) -> np.ndarray:
    scores = score_aligned(store, align_predictions(store, path, min_coverage=0.0), "target")
    return scores.corr[np.isin(scores.eras, eras), 0]


def one_seed(root: Path, args, seed: int) -> dict:
    data = root / f"seed{seed}"
    n_valid = args.eras // 4
    write_synthetic(data, SynthSpec(eras=args.eras, rows_per_era=args.rows_per_era, features=args.features,
                                    validation_eras=n_valid, seed=seed))
    store = open_store(ingest_files([data / "train.parquet", data / "validation.parquet"], data / "store").store)
    last_train = store.eras[args.eras - n_valid - 1]
    started = time.perf_counter()
    config = TrainConfig(params=PARAMS, cv=args.cv, cv_mode=args.cv_mode, train_eras=f":{last_train}")
    result = train_models(store, data / "model", config)
    seconds = time.perf_counter() - started
    held_out = store.eras[args.eras - n_valid:]
    table = predict_table(load_model(data / "model"), store, f"{held_out[0]}:")
    preds = data / "preds.parquet"
    pq.write_table(pa.table({"id": table.ids, "pred": table.columns["pred_target"]}), preds)
    model, oracle = held_out_corr(store, preds, held_out), held_out_corr(store, data / "oracle.parquet", held_out)
    mean, se = np.nanmean(model), np.nanstd(model) / np.sqrt(np.isfinite(model).sum())
    cv = result.cv["target"]["overall"]["mean"]
    return {"seed": seed, "rows": store.n_rows, "train_seconds": round(seconds, 1), "held_out_eras": int(np.isfinite(model).sum()),
            "model_corr": mean, "oracle_corr": float(np.nanmean(oracle)), "ratio": mean / np.nanmean(oracle),
            "cv_corr": cv, "se": se, "cv_within_2se": bool(abs(cv - mean) <= 2 * se)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, default=300)
    parser.add_argument("--rows-per-era", type=int, default=2000)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--cv-mode", default="expanding", choices=["expanding", "blocked"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_seed(Path(tmp), args, int(s)) for s in args.seeds.split(",")]
    print(f"{'seed':>4} {'rows':>9} {'train s':>8} {'model':>8} {'oracle':>8} {'ratio':>6} {'cv':>8} {'2 se':>7} {'cv ok':>6}")
    for r in rows:
        print(f"{r['seed']:>4} {r['rows']:>9,} {r['train_seconds']:>8.1f} {r['model_corr']:>8.4f} {r['oracle_corr']:>8.4f} "
              f"{r['ratio']:>6.2f} {r['cv_corr']:>8.4f} {2 * r['se']:>7.4f} {str(r['cv_within_2se']):>6}")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": None}, "results": rows}, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
