"""Every model kind on the same planted-signal data, each step a fresh ``eraflow`` process.

Two parts, results merged into one JSON per part (so kinds can be run one at a time) and one
markdown table (``--md``):

``validity``: synthetic data with a known signal (engine.data.synth; its oracle.parquet holds the
planted score) → ``eraflow train --model KIND --params FILE --cv N --train-eras :LAST`` on the first
75 % of eras → ``eraflow predict`` of the held-out last 25 % → per-era numerai_corr of the model and
of the oracle on the same eras (as benches/train_validity.py). Reports the ratio model / oracle and
whether the CV estimate lies within 2 standard errors of the held-out mean.

``scale``: on a big store (e.g. 1M rows × 2376 features), per kind, from a cold dataset cache:
``eraflow train`` (wall time, peak RSS = the child's ru_maxrss, and peak anonymous RSS sampled
every 20 ms: the memory-mapped store counts in RSS but not in RssAnon), ``eraflow export``
(pickle size), then a fresh process that unpickles the export and predicts a 7k-row live frame
(live.parquet's rows, repeated) twice, as Numerai's runtime would.

    python benches/model_kinds.py validity --data /tmp/kinds-validity --kinds lgbm,xgb,linear,logistic,rf,v3x
    python benches/model_kinds.py scale --data /tmp/kinds-big --kinds lgbm   # `eraflow synth` + `eraflow ingest`
    python benches/model_kinds.py table                                      # rewrite the markdown from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eraflow.engine import SynthSpec, ingest_files, open_store, write_synthetic
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.evaluation.scoring import score_aligned

RESULTS = Path(__file__).parent / "results"
ERAFLOW = str(Path(sys.executable).with_name("eraflow"))
KINDS = ("lgbm", "xgb", "linear", "logistic", "rf", "v3x")
LIVE_ROWS = 7000

# --params of each kind: the model the validity part trains (full size) …
# lgbm as benches/train_validity.py, xgb the same trees; the others their defaults (v3x: --blocks 3).
SHALLOW = {"n_estimators": 1000, "learning_rate": 0.02, "max_depth": 2, "colsample_bytree": 0.5}
VALIDITY_PARAMS = {"lgbm": {**SHALLOW, "num_leaves": 4}, "xgb": SHALLOW}
# … and the reduced one the scale part trains (rounds, trees and iterations cut to fit 2 cores).
STARTER = {"n_estimators": 100, "learning_rate": 0.01, "max_depth": 5, "colsample_bytree": 0.1}  # lgbm's starter preset
SCALE_PARAMS = {"lgbm": {**STARTER, "num_leaves": 31}, "xgb": STARTER, "logistic": {"max_iter": 20},
                "rf": {"n_estimators": 20}, "v3x": {"n_estimators": 30}}
EXTRA_ARGS = {"v3x": ["--blocks", "3"]}  # command-line options of a kind besides --params

LIVE_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import cloudpickle, numpy as np, pandas as pd
live = pd.read_parquet(sys.argv[2])
frame = pd.concat([live] * (-(-int(sys.argv[3]) // len(live))), ignore_index=True).iloc[: int(sys.argv[3])]
frame.index = pd.Index([f"live{i:06d}" for i in range(len(frame))], name="id")
frame = frame.drop(columns=[c for c in frame.columns if not c.startswith("feature") and c != "era"])
t1 = time.perf_counter()
with open(sys.argv[1], "rb") as fh:
    predict = cloudpickle.load(fh)
t2 = time.perf_counter()
out = predict(frame, None)
t3 = time.perf_counter()
predict(frame, None)
t4 = time.perf_counter()
assert len(out) == len(frame) and out["prediction"].between(0, 1).all()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"rows": len(frame), "unpickle_s": t2 - t1, "predict_first_s": t3 - t2, "predict_again_s": t4 - t3,
                  "peak_rss_mib": hwm / 1024}))
"""


def toml_text(params: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in params.items())


def status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(key)), 0)
    except (FileNotFoundError, ProcessLookupError):
        return 0


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (stdout+stderr into ``log``): wall seconds, exit code, peak RSS (ru_maxrss) and
    peak anonymous RSS (RssAnon sampled every 20 ms), in MiB, and the machine's mean 1-minute load
    average meanwhile (other processes' work slows the wall time)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        anon, loads = 0, [os.getloadavg()[0]]
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            anon = max(anon, status_kib(proc.pid, "RssAnon:"))
            loads.append(os.getloadavg()[0])
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - started, "rc": proc.returncode, "peak_rss_mib": usage.ru_maxrss / 1024,
            "peak_anon_mib": anon / 1024, "load": float(np.mean(loads))}


def failure(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def train_command(kind: str, store: Path, model_dir: Path, params: Path, ledger: Path, extra: list[str]) -> list[str]:
    return [ERAFLOW, "train", str(store), "-o", str(model_dir), "--model", kind, "--params", str(params),
            *EXTRA_ARGS.get(kind, []), *extra, "--ledger", str(ledger), "--quiet", "--json", "--threads", "2"]


def last_json(log: Path) -> dict:
    text = log.read_text()
    return json.loads(text[text.index("{"):])


# ---- validity ----------------------------------------------------------------------------------

def validity_data(root: Path, args) -> tuple[Path, int]:
    """The synthetic files and store under ``root`` (built once); returns the store and held-out eras."""
    n_valid = args.eras // 4
    store_dir = root / "store"
    if not (store_dir / "meta.json").exists():
        write_synthetic(root, SynthSpec(eras=args.eras, rows_per_era=args.rows_per_era, features=args.features,
                                        validation_eras=n_valid, seed=args.seed))
        ingest_files([root / "train.parquet", root / "validation.parquet"], store_dir)
    return store_dir, n_valid


def held_out_corr(store, path: Path, eras: list[str], columns: list[str] | None) -> np.ndarray:
    scores = score_aligned(store, align_predictions(store, path, columns, min_coverage=0.0), "target")
    return scores.corr[np.isin(scores.eras, eras), 0]


def validity(kind: str, root: Path, args) -> dict:
    store_dir, n_valid = validity_data(root, args)
    store = open_store(store_dir)
    last_train, held = store.eras[args.eras - n_valid - 1], store.eras[args.eras - n_valid:]
    work = root / kind
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    params = work / "params.toml"
    settings = VALIDITY_PARAMS.get(kind, {})
    params.write_text(toml_text(settings))
    cmd = train_command(kind, store_dir, work / "model", params, work / "ledger.duckdb",
                        ["--cv", str(args.cv), "--train-eras", f":{last_train}", "--seed", str(args.seed)])
    run = measure(cmd, work / "train.log")
    row = {"kind": kind, "command": " ".join(cmd[1:]).replace(str(root), "DATA"), "params": settings,
           "train_seconds": run["seconds"], "train_load": run["load"]}
    if run["rc"]:
        return row | {"error": f"train exit {run['rc']}: {failure(work / 'train.log')}"}
    report = last_json(work / "train.log")
    preds = work / "preds.parquet"
    pred = measure([ERAFLOW, "predict", str(work / "model"), str(store_dir), "-o", str(preds), "--eras",
                    f"{held[0]}:", "--threads", "2"], work / "predict.log")
    if pred["rc"]:
        return row | {"error": f"predict exit {pred['rc']}: {failure(work / 'predict.log')}"}
    model = held_out_corr(store, preds, held, ["pred_target"])
    oracle = held_out_corr(store, root / "oracle.parquet", held, None)
    mean, se = float(np.nanmean(model)), float(np.nanstd(model) / np.sqrt(np.isfinite(model).sum()))
    cv = report["cv"]["target"]["mean"]
    return row | {"rows": store.n_rows, "held_out_eras": int(np.isfinite(model).sum()), "model_corr": mean,
                  "oracle_corr": float(np.nanmean(oracle)), "ratio": mean / float(np.nanmean(oracle)), "cv_corr": cv,
                  "se": se, "cv_within_2se": bool(abs(cv - mean) <= 2 * se), "rounds": report.get("rounds")}


# ---- scale -------------------------------------------------------------------------------------

def scale(kind: str, root: Path, args) -> dict:
    store_dir = root / "store"
    work = root / kind
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    params = work / "params.toml"
    settings = SCALE_PARAMS.get(kind, {})
    params.write_text(toml_text(settings))
    shutil.rmtree(store_dir / "cache", ignore_errors=True)  # every kind builds its training data from scratch
    os.sync()
    cmd = train_command(kind, store_dir, work / "model", params, work / "ledger.duckdb", ["--seed", str(args.seed)])
    run = measure(cmd, work / "train.log")
    store = open_store(store_dir)
    row = {"kind": kind, "command": " ".join(cmd[1:]).replace(str(root), "DATA"),
           "params": settings, "rows": store.n_rows, "features": len(store.feature_names),
           "train_seconds": run["seconds"], "train_load": run["load"], "train_peak_rss_mib": run["peak_rss_mib"],
           "train_peak_anon_mib": run["peak_anon_mib"]}
    if run["rc"]:
        return row | {"error": f"train exit {run['rc']}: {failure(work / 'train.log')}"}
    pkl = work / "model.pkl"
    export = measure([ERAFLOW, "export", str(work / "model"), "-o", str(pkl)], work / "export.log")
    if export["rc"]:
        return row | {"error": f"export exit {export['rc']}: {failure(work / 'export.log')}"}
    row |= {"export_seconds": export["seconds"], "pickle_mib": pkl.stat().st_size / 2**20}
    live = subprocess.run([sys.executable, "-c", LIVE_CHILD, str(pkl), str(root / "live.parquet"), str(LIVE_ROWS)],
                          capture_output=True, text=True, check=False)
    if live.returncode:
        return row | {"error": f"live predict failed: {(live.stderr.strip().splitlines() or [''])[-1][:300]}"}
    return row | {"live": json.loads(live.stdout.strip().splitlines()[-1])}


# ---- tables ------------------------------------------------------------------------------------

def seconds(r: dict) -> str:
    """Training wall time and the machine's mean load meanwhile (2 cores: above 2, other work slowed it)."""
    load = f"load {r['train_load']:.1f}" if "train_load" in r else "load not recorded, shared machine"
    return f"{r['train_seconds']:.0f} ({load})"


def validity_table(rows: dict) -> list[str]:
    lines = [("| kind | held-out corr | oracle corr | share of oracle | CV corr (train --cv) | held-out 2 se "
              "| CV within 2 se | train + CV s |"), "|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        r = rows.get(kind)
        if r is None:
            lines.append(f"| {kind} | not run | | | | | | |")
        elif "error" in r:
            lines.append(f"| {kind} | failed: {r['error']} | | | | | | |")
        else:
            lines.append(f"| {kind} | {r['model_corr']:.4f} | {r['oracle_corr']:.4f} | **{r['ratio']:.2f}** | "
                         f"{r['cv_corr']:.4f} | {2 * r['se']:.4f} | {'yes' if r['cv_within_2se'] else 'no'} | "
                         f"{seconds(r)} |")
    return lines


def scale_table(rows: dict) -> list[str]:
    lines = [("| kind | train s | peak RSS GiB | peak anon GiB | pickle MiB | unpickle s "
              "| predict 7k rows s (first, again) | live peak RSS MiB |"), "|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        r = rows.get(kind)
        if r is None:
            lines.append(f"| {kind} | not run | | | | | | |")
            continue
        mem = f"{r['train_peak_rss_mib'] / 1024:.2f} | {r['train_peak_anon_mib'] / 1024:.2f}"
        if "error" in r:
            lines.append(f"| {kind} | {seconds(r)} | {mem} | failed: {r['error']} | | | |")
            continue
        live = r["live"]
        lines.append(f"| {kind} | {seconds(r)} | {mem} | {r['pickle_mib']:.2f} | "
                     f"{live['unpickle_s']:.2f} | {live['predict_first_s']:.2f}, {live['predict_again_s']:.2f} | "
                     f"{live['peak_rss_mib']:.0f} |")
    return lines


def params_text(params: dict) -> str:
    return f"`{toml_text(params).strip().replace(chr(10), '; ')}`" if params else "empty (the kind's defaults)"


def settings_lines(rows: dict) -> list[str]:
    return [f"- {k} ({r.get('date', '?')}): `eraflow {r['command']}`, params.toml: {params_text(r['params'])}"
            for k in KINDS if (r := rows.get(k))]


NOTES = {
    "validity": ("CV: `train --cv 3` (expanding folds, whose early folds train on fewer eras, so it tends to "
                 "underestimate; see benches/train_validity.py). 2 se: two standard errors of the held-out mean."),
    "scale": ("peak RSS: the training process's ru_maxrss, which counts the pages of the memory-mapped store "
              "(features.i8, 2.3 GiB) it has read; peak anon: its RssAnon sampled every 20 ms, the memory it "
              "allocated. The float32 training matrix alone would be 9.1 GiB. Rounds/trees/iterations are cut "
              "(params below), so train s is not a full model's time; memory does not grow with them. Live: a "
              "fresh process unpickles the `eraflow export` file and calls predict on 7,000 rows of live.parquet "
              "(repeated) twice; the first call imports the model library. load: the machine's mean 1-minute "
              "load average during training (2 cores; above 2, other work slowed it)."),
}


def markdown(results: dict) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    machine = f"{os.cpu_count()} cores, {memory:.0f} GiB, {platform.machine()}"
    out = [f"# Model kinds on planted-signal data ({machine})", ""]
    for part, table in (("validity", validity_table), ("scale", scale_table)):
        data = results.get(part)
        if not data:
            continue
        runs = [f"`{c}`" for c in data["commands"]]
        out += [f"## {part}: {data['about']}", "", *table(data["kinds"]), "", NOTES[part], "",
                "Run by (DATA: the data directory):", "", *runs, "",
                "Each kind's training command and params.toml:", "",
                *settings_lines(data["kinds"]), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["validity", "scale", "table"], help="table: rewrite --md from --json")
    parser.add_argument("--data", type=Path, help="validity: built here once; scale: "
                        "`eraflow synth` output with the store ingested into DATA/store")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--eras", type=int, default=300)
    parser.add_argument("--rows-per-era", type=int, default=2000)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "model_kinds.json", help="results, merged per kind")
    parser.add_argument("--md", type=Path, default=RESULTS / "model_kinds.md")
    args = parser.parse_args()
    if args.part == "table":
        text = markdown(json.loads(args.json.read_text()))
        args.md.write_text(text + "\n")
        print(text)
        return
    if args.data is None:
        parser.error(f"{args.part} needs --data")
    args.data.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds.split(","):
        row = (validity if args.part == "validity" else scale)(kind, args.data, args)
        print(json.dumps(row, default=float), flush=True)
        text = record(args, kind, row)
    print(text)


def record(args, kind: str, row: dict) -> str:
    """Merge ``row`` into the results file as it is now (other runs may have written it), rewrite
    the markdown; returns it."""
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    part = results.setdefault(args.part, {"kinds": {}, "commands": []})
    store = open_store(args.data / "store")
    about = f"{store.n_rows:,} rows × {len(store.feature_names)} features, {len(store.eras)} eras, seed {args.seed}"
    about += (f", CV {args.cv} folds on the first 75 % of eras, scored on the last 25 %" if args.part == "validity"
              else ", no CV, dataset cache cleared before each kind")
    command = "python " + " ".join(sys.argv).replace(str(args.data), "DATA")
    part["kinds"][kind] = row | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    part |= {"about": about, "commands": list(dict.fromkeys([*part.get("commands", []), command]))}
    args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    text = markdown(results)
    args.md.write_text(text + "\n")
    return text

if __name__ == "__main__":
    main()
