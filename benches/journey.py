"""eraflow's whole journey vs Numerai's example-scripts recipe, step by step, on the same data.

eraflow (each step a fresh ``eraflow`` process, as a user runs it)::

    eraflow ingest train.parquet validation.parquet STORE
    eraflow train STORE -o MODEL --params P.toml --train-eras :LAST_TRAIN_ERA
    eraflow predict MODEL STORE -o PREDS --eras FIRST_VALIDATION_ERA:
    eraflow score PREDS --store STORE --json

The recipe (one fresh Python process, as the example scripts run): pandas ``read_parquet`` of the
feature and target columns of train.parquet → ``lgb.LGBMRegressor(**same params).fit`` → the same
of validation.parquet → ``predict`` → numerai-tools ``numerai_corr`` per era (``groupby("era")``).

Both sides: the same LightGBM parameters (n_estimators, learning_rate, max_depth, num_leaves,
colsample_bytree, seed 0), the same threads (``--threads N`` / ``n_jobs=N``), the same rows.
Per size, per repeat (interleaved, so a busy spell of the machine hits both sides): the recipe as
copied (libgomp's default spinning waits), the same recipe with ``OMP_WAIT_POLICY=passive`` (what
eraflow's CLI sets on a busy machine; anyone can set it, so the ratio against it is eraflow's own gain), eraflow's
first run (no store, no dataset cache) and its re-run (store and LightGBM binary cached: ingest
finds its sources unchanged, train reloads the binary). Each process's wall time and peak
RSS (``ru_maxrss`` from ``wait4``, taken by a small launcher so that the bench's own size does not count)
is recorded; a side's peak RSS is the largest of its processes.
The result prints medians, the ratios eraflow ÷ recipe, the held-out mean per-era corr of both
(equal to ~1e-6: eraflow writes its predictions as float32, which ties a few of them) and the
machine's 1-minute load average meanwhile; benches/results/journey.{md,json} hold every run.

    python benches/journey.py --data /tmp/journey --sizes 60000,240000 --features 1000 --trees 300 --repeat 3,2
    python benches/journey.py --data /tmp/journey --sizes 60000 --repeat 1 --out ''     # quick, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ERAFLOW = str(Path(sys.executable).with_name("eraflow"))
ROWS_PER_ERA = 500
# Numerai's starter model (example scripts: LGBMRegressor), rounds cut to --trees.
MODEL = {"learning_rate": 0.01, "max_depth": 5, "num_leaves": 31, "colsample_bytree": 0.1}
SEED = 0

RECIPE = r"""
import json, sys, time
t0 = time.perf_counter()
import lightgbm as lgb
import pandas as pd
from numerai_tools.scoring import numerai_corr
args = json.loads(sys.argv[1])
steps = {"import": time.perf_counter() - t0}

def step(name, t):
    steps[name] = time.perf_counter() - t
    return time.perf_counter()

t = time.perf_counter()
features = json.load(open(args["features_json"]))["feature_sets"]["all"]
train = pd.read_parquet(args["train"], columns=["era", *features, "target"])
t = step("read_train", t)
model = lgb.LGBMRegressor(n_estimators=args["trees"], n_jobs=args["threads"], random_state=args["seed"], verbose=-1,
                          **args["model"])
model.fit(train[features], train["target"])
del train
t = step("fit", t)
valid = pd.read_parquet(args["validation"], columns=["era", "data_type", *features, "target"])
valid = valid[valid["data_type"] == "validation"]
t = step("read_validation", t)
valid["prediction"] = model.predict(valid[features])
t = step("predict", t)
scored = valid.dropna(subset=["target"])
per_era = scored.groupby("era").apply(lambda d: numerai_corr(d[["prediction"]], d["target"])["prediction"],
                                      include_groups=False)
t = step("score", t)
print(json.dumps({"steps": steps, "corr": float(per_era.mean()), "eras": int(per_era.size),
                  "rows_predicted": int(len(valid))}))
"""


# Runs a command as its child and writes the child's wall seconds and ru_maxrss (KiB) to argv[1]. Linux counts
# in a process's ru_maxrss the RSS of the process it was spawned from (the pre-exec high-water mark): measured as
# a child of this bench, which holds the synthetic data it wrote (~270-340 MiB), a small command showed this
# bench's size. Timed in the launcher, so its own start (~30 ms) is not counted.
LAUNCHER = ("import os, sys, time\n"
            "t = time.perf_counter()\n"
            "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
            "_, status, usage = os.wait4(pid, 0)\n"
            "open(sys.argv[1], 'w').write(f'{time.perf_counter() - t} {usage.ru_maxrss}')\n"
            "sys.exit(os.waitstatus_to_exitcode(status))")


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (output into ``log``): wall seconds, exit code, peak RSS (its ru_maxrss, MiB)."""
    report = log.with_suffix(".usage")
    report.unlink(missing_ok=True)
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(report), *cmd], stdout=out,
                            stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        print(f"  ! {Path(cmd[0]).name} {cmd[1]} exited {rc}: {tail[0][:300]}", flush=True)
    seconds, kib = map(float, report.read_text().split()) if report.exists() else (float("nan"), float("nan"))
    return {"seconds": seconds, "peak_rss_mib": kib / 1024, "rc": rc}


def last_json(log: Path):
    """The JSON document a command printed last (after any other output lines)."""
    text = log.read_text()
    start = min(i for i in (text.find("{"), text.find("[")) if i >= 0)
    return json.loads(text[start:])


def make_data(root: Path, rows: int, features: int) -> Path:
    """Synthetic Numerai-shaped files of about ``rows`` train + validation rows (built once)."""
    from eraflow.engine import SynthSpec, write_synthetic

    data = root / f"data-{rows}x{features}"
    if not (data / "synth.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        write_synthetic(data, SynthSpec(eras=max(rows // ROWS_PER_ERA, 8), rows_per_era=ROWS_PER_ERA,
                                        features=features, targets=1, seed=SEED))
    return data


def era_split(data: Path) -> tuple[str, str]:
    """The last train era and the first validation era of the files."""
    import pyarrow.parquet as pq

    train = pq.read_table(data / "train.parquet", columns=["era"]).column("era")
    valid = pq.read_table(data / "validation.parquet", columns=["era"]).column("era")
    return max(train.to_pylist()), min(valid.to_pylist())


def recipe_env(passive: bool) -> dict:
    """This environment without OMP_WAIT_POLICY (libgomp's default: spinning waits), or with it passive."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return {**env, "OMP_WAIT_POLICY": "passive"} if passive else env


def run_recipe(data: Path, work: Path, args, passive: bool = False) -> dict:
    spec = {"features_json": str(data / "features.json"), "train": str(data / "train.parquet"),
            "validation": str(data / "validation.parquet"), "trees": args.trees, "threads": args.threads,
            "seed": SEED, "model": MODEL}
    run = measure([sys.executable, "-c", RECIPE, json.dumps(spec)], work / "recipe.log", recipe_env(passive))
    out = last_json(work / "recipe.log")
    return {"seconds": run["seconds"], "peak_rss_mib": run["peak_rss_mib"], "corr": out["corr"],
            "steps": {k: round(v, 3) for k, v in out["steps"].items()}}


def run_eraflow(data: Path, work: Path, args, fresh: bool) -> dict:
    """The four eraflow commands; ``fresh``: from no store (and so no dataset cache)."""
    store, model, preds = work / "store", work / "model", work / "preds.parquet"
    if fresh:
        shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(model, ignore_errors=True)
    preds.unlink(missing_ok=True)
    last_train, first_valid = era_split(data)
    params = work / "params.toml"
    params.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {"n_estimators": args.trees, **MODEL}.items()))
    threads = ["--threads", str(args.threads)]
    commands = {
        "ingest": [ERAFLOW, "ingest", str(data / "train.parquet"), str(data / "validation.parquet"), str(store),
                   "--targets", "target", "--quiet", *threads],
        "train": [ERAFLOW, "train", str(store), "-o", str(model), "--params", str(params), "--train-eras",
                  f":{last_train}", "--seed", str(SEED), "--ledger", str(work / "ledger.duckdb"), "--quiet", *threads],
        "predict": [ERAFLOW, "predict", str(model), str(store), "-o", str(preds), "--eras", f"{first_valid}:",
                    *threads],
        "score": [ERAFLOW, "score", str(preds), "--store", str(store), "--json", *threads],
    }
    steps, peaks, failed = {}, {}, {}
    for name, cmd in commands.items():
        run = measure(cmd, work / f"{name}.log")
        steps[name], peaks[name] = round(run["seconds"], 3), round(run["peak_rss_mib"], 1)
        if run["rc"]:
            failed[name] = run["rc"]
    score = last_json(work / "score.log")
    return {"seconds": sum(steps.values()), "peak_rss_mib": max(peaks.values()), "corr": score_corr(score),
            "steps": steps, "step_peak_rss_mib": peaks, "failed": failed}


def score_corr(report: list[dict]) -> float:
    """The mean per-era numerai_corr of ``pred_target`` from ``eraflow score --json``."""
    return float(next(r["corr_mean"] for r in report if r["prediction"] == "pred_target"))


def bench_size(root: Path, rows: int, repeat: int, args) -> dict:
    data = make_data(root, rows, args.features)
    work = root / f"work-{rows}x{args.features}"
    work.mkdir(parents=True, exist_ok=True)
    recipes = ["recipe", "recipe_passive"] if args.passive_recipe else ["recipe"]
    runs = {name: [] for name in [*recipes, "first", "rerun"]}
    loads = []
    for r in range(repeat):
        order = [*recipes, "first", "rerun"] if r % 2 == 0 else ["first", "rerun", *recipes]
        for name in order:
            loads.append(os.getloadavg()[0])
            if name.startswith("recipe"):
                result = run_recipe(data, work, args, passive=name == "recipe_passive")
            else:
                result = run_eraflow(data, work, args, fresh=name == "first")
            runs[name].append(result)
            print(f"  {rows:,} rows, repeat {r + 1}: {name:6s} {result['seconds']:7.2f} s  "
                  f"peak RSS {result['peak_rss_mib']:7.0f} MiB  corr {result['corr']:.6f}  {result['steps']}",
                  flush=True)
    loads.append(os.getloadavg()[0])
    import pyarrow.parquet as pq

    n_rows = sum(pq.ParquetFile(data / f).metadata.num_rows for f in ("train.parquet", "validation.parquet"))
    return {"rows": n_rows, "features": args.features, "repeat": repeat, "runs": runs, "load": loads,
            "summary": summarize(runs)}


def med(values) -> float:
    return float(statistics.median(values))


def summarize(runs: dict) -> dict:
    out = {}
    for name, rs in runs.items():
        out[name] = {"seconds": med(r["seconds"] for r in rs), "peak_rss_mib": med(r["peak_rss_mib"] for r in rs),
                     "corr": rs[0]["corr"], "steps": {k: med(r["steps"][k] for r in rs) for k in rs[0]["steps"]}}
        if "step_peak_rss_mib" in rs[0]:
            out[name]["step_peak_rss_mib"] = {k: med(r["step_peak_rss_mib"][k] for r in rs)
                                              for k in rs[0]["step_peak_rss_mib"]}
    recipe = out["recipe"]
    for name in ("first", "rerun"):
        out[name]["wall_ratio"] = out[name]["seconds"] / recipe["seconds"]
        out[name]["rss_ratio"] = out[name]["peak_rss_mib"] / recipe["peak_rss_mib"]
        out[name]["corr_diff"] = out[name]["corr"] - recipe["corr"]
        if "recipe_passive" in out:
            out[name]["wall_ratio_passive_recipe"] = out[name]["seconds"] / out["recipe_passive"]["seconds"]
    return out


LABELS = {"recipe": "recipe", "recipe_passive": "recipe, passive waits", "first": "eraflow, first run",
          "rerun": "eraflow, re-run"}


def step_peaks(peaks: dict | None) -> str:
    """Each eraflow step's peak RSS, the largest (the side's peak) in bold; empty for the recipe (one process)."""
    if not peaks:
        return ""
    top = max(peaks, key=peaks.get)
    return ", ".join(f"**{k} {v:,.0f}**" if k == top else f"{k} {v:,.0f}" for k, v in peaks.items())


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [f"# The whole journey: eraflow vs the example-scripts recipe ({result['machine']})", "",
             f"`{result['command']}` ({result['date']}); LightGBM {a['trees']} trees, "
             f"{json.dumps(MODEL)}, seed {SEED}, {a['threads']} threads both sides; medians of the "
             "interleaved repeats of each size.", "",
             "| rows × features | side | wall s | peak RSS MiB | wall ÷ recipe | RSS ÷ recipe | held-out corr "
             "| steps (s) | steps' peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in result["sizes"]:
        s = size["summary"]
        for name, label in LABELS.items():
            if name not in s:
                continue
            row = s[name]
            ratio = ""
            if not name.startswith("recipe"):
                passive = row.get("wall_ratio_passive_recipe")
                ratio = f"**{row['wall_ratio']:.2f}×**" + (f" ({passive:.2f}× the passive recipe)" if passive else "")
                ratio += f" | **{row['rss_ratio']:.2f}×**"
            lines.append(f"| {size['rows']:,} × {size['features']} ({size['repeat']}×) | {label} | "
                         f"{row['seconds']:.1f} | {row['peak_rss_mib']:,.0f} | {ratio or ' | '} | {row['corr']:.6f} | "
                         + ", ".join(f"{k} {v:.2f}" for k, v in row["steps"].items()) + " | "
                         + step_peaks(row.get("step_peak_rss_mib")) + " |")
        lo, hi = min(size["load"]), max(size["load"])
        lines.append(f"| | load average (1 min) during this size | {lo:.1f}–{hi:.1f} | | | | | | |")
    lines += ["", "eraflow steps are separate `eraflow` processes (imports included); its peak RSS is the largest "
              "of its processes (the bold step; medians per step, so a side's peak can differ from the bold one's "
              "median). The recipe's steps are timed inside its one process (import: lightgbm, pandas, "
              "numerai-tools). First run: no store, no dataset cache; re-run: store and LightGBM binary cached. "
              "eraflow's CLI sets `OMP_WAIT_POLICY=passive` when the load average is ≥ the cores; the recipe runs "
              "with libgomp's default (spinning waits), as copied; `recipe, passive waits` is the same recipe with "
              "`OMP_WAIT_POLICY=passive`, which anyone can set: the ratio against it is eraflow's own gain. "
              "Held-out corr: mean per-era numerai_corr of the validation eras with targets; eraflow's differs "
              "from the recipe's by ~1e-6 because it writes predictions as float32 (the same model's float64 "
              "predictions score the recipe's value)."]
    lines += ["", *result.get("notes", [])]  # what changed since, added by hand to the JSON
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="working directory (data files are kept for reuse)")
    ap.add_argument("--sizes", default="60000,240000", help="comma-separated train + validation rows")
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", default="3", help="repeats per size: one number, or one per size (3,1)")
    ap.add_argument("--no-passive-recipe", dest="passive_recipe", action="store_false",
                    help="skip the recipe run with OMP_WAIT_POLICY=passive")
    ap.add_argument("--out", default="journey", help="results/<out>.json and .md ('' to write none)")
    ap.add_argument("--table", action="store_true", help="only rewrite results/<out>.md from results/<out>.json")
    args = ap.parse_args()
    if args.table:
        (RESULTS / f"{args.out}.md").write_text(markdown(json.loads((RESULTS / f"{args.out}.json").read_text())))
        return
    rows_list = [int(s) for s in args.sizes.split(",") if s]
    repeats = [int(r) for r in args.repeat.split(",")]
    repeats = repeats * len(rows_list) if len(repeats) == 1 else repeats
    if len(repeats) != len(rows_list):
        raise SystemExit("--repeat: one number, or one per size")
    sizes = []
    for rows, repeat in zip(rows_list, repeats):
        print(f"{rows:,} rows × {args.features} features, {repeat} repeats", flush=True)
        sizes.append(bench_size(args.data, rows, repeat, args))
    result = {"command": "python benches/journey.py " + " ".join(sys.argv[1:]).replace(str(args.data), "DATA"),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{os.cpu_count()} cores, {platform.machine()}", "args": {**vars(args), "data": "DATA"},
              "sizes": sizes}
    text = markdown(result)
    print(text)
    if args.out:
        (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / f"{args.out}.md").write_text(text)


if __name__ == "__main__":
    main()
