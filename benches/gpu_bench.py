"""The Python half of benches/gpu_check.sh: what the machine offers, and training CPU vs GPU.

    python benches/gpu_bench.py env                  # GPU, CUDA, OpenCL devices, versions of the packages that matter
    python benches/gpu_bench.py train --work /tmp/gpu-train --rows 150000 --features 2376 --trees 200 --budget 240
    python benches/gpu_bench.py repack WHEEL... --out DIR   # wheels re-zipped uncompressed, so that xz packs them

``train`` writes one synthetic store (``eraflow synth`` + ``eraflow ingest``, timed), then trains each RUN
(``kind:device``; default lgbm:cpu lgbm:gpu xgb:cpu xgb:cuda mlp:cpu mlp:cuda, plus lgbm:cuda with
``--lightgbm-cuda``) in a fresh ``eraflow train`` process on the first three quarters of the eras with a
fixed size (``--trees`` trees, no early stopping; networks ``--epochs``), predicts the last quarter
(``eraflow predict``) and compares every device's predictions with the CPU's of the same kind: Pearson
corr and max |difference|. Trees must agree (corr ≥ 0.99: features take 5 values, so every learner bins
them alike; they differ in float summation order, and LightGBM's OpenCL learner sums histograms in single
precision); networks are
reported, not judged (bfloat16 autocast on CUDA, float32 on the CPU). A device that this machine lacks
(``eraflow train`` exits 2 with its one-line error) is reported unavailable, not failed. Every run gets
what is left of ``--budget`` seconds, so a slow one is cut off (``timeout``) and the table still comes out.
Exit status 1 when a run crashed or a parity check failed (a timeout is shown, not counted).
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
import zipfile
from pathlib import Path

import numpy as np

SCRIPT = Path(sys.executable).with_name("eraflow")
ERAFLOW = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", "from eraflow.cli import main; main()"]
DEFAULT_RUNS = ("lgbm:cpu", "lgbm:gpu", "xgb:cpu", "xgb:cuda", "mlp:cpu", "mlp:cuda")
PARITY = {"lgbm": 0.99, "xgb": 0.99, "rf": 0.99}  # least corr(device, cpu) of the held-out predictions
NOTABLE = ("error", "warning", "Fatal Python error", "terminate called")  # log lines a results row quotes
PACKAGES = ("numpy", "numba", "scipy", "pandas", "pyarrow", "polars", "duckdb", "lightgbm", "xgboost", "torch",
            "cupy", "numerai_tools", "sklearn")


# --------------------------------------------------------------------------------------------------- env


def versions() -> dict[str, str]:
    """``{module: version}`` of :data:`PACKAGES`; ``missing`` for those that do not import."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = getattr(__import__(name), "__version__", "?")
        except Exception as exc:  # a broken install is as good as none here: say why
            found[name] = f"missing ({type(exc).__name__})"
    return found


def gpu_facts() -> dict[str, object]:
    """What answers: torch's CUDA device, CuPy (eraflow's ``gpu_available``), the driver's CUDA device
    name, and every OpenCL device (the ones LightGBM's ``--device gpu`` may use)."""
    facts: dict[str, object] = {}
    try:
        import torch

        facts["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        facts["torch_cuda_build"] = torch.version.cuda or "cpu build"
    except ImportError:
        facts["torch_cuda"] = "torch missing"
    from eraflow.kernels import gpu_available

    facts["cupy_gpu_available"] = gpu_available()
    try:
        from eraflow.engine.models.opencl import cuda_device_name, opencl_devices

        facts["cuda_driver_device"] = cuda_device_name() or "none"
        facts["opencl_devices"] = [d.describe() for d in opencl_devices()] or ["none"]
    except ImportError as exc:  # lightgbm missing: the OpenCL discovery goes through its library
        facts["opencl_devices"] = [f"unknown ({exc})"]
    return facts


def env_main(args) -> int:
    print(f"python {platform.python_version()} at {sys.executable}; {os.cpu_count()} CPUs; {platform.platform()}")
    for name, version in versions().items():
        print(f"  {name:<14} {version}")
    for key, value in gpu_facts().items():
        print(f"{key}: {value}")
    return 0


# ------------------------------------------------------------------------------------------------- train


def toml_text(params: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in params.items())


def kind_params(kind: str, trees: int) -> dict:
    """A fixed-size model of each kind: starter-like trees (depth 5, 10 % of the features per tree)."""
    if kind in ("lgbm", "rf"):
        return {"n_estimators": trees, "learning_rate": 0.05, "max_depth": 5, "num_leaves": 31,
                "colsample_bytree": 0.1}
    if kind == "xgb":
        return {"n_estimators": trees, "learning_rate": 0.05, "max_depth": 5, "colsample_bytree": 0.1}
    return {}


def run_timed(cmd: list[str], log: Path, timeout: float) -> dict:
    """Run ``cmd`` with its output in ``log``: ``{"seconds", "status"}``, status ``ok``, ``unavailable``
    (exit 2: eraflow's one-line refusal, e.g. no such device here), ``timeout`` or ``failed (exit N)``."""
    if timeout <= 1:
        return {"seconds": 0.0, "status": "timeout", "why": "no budget left"}
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, "PYTHONFAULTHANDLER": "1"}).returncode  # tracebacks of a crash
        except subprocess.TimeoutExpired:
            return {"seconds": time.perf_counter() - start, "status": "timeout", "why": f"over {timeout:.0f} s"}
    seconds = time.perf_counter() - start
    status = {0: "ok", 2: "unavailable"}.get(code, f"failed (exit {code})")
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    why = [line for line in lines if line.startswith(NOTABLE)] or (lines[-3:] if code not in (0, 2) else [])
    return {"seconds": seconds, "status": status, "why": " | ".join(why)[:300], "log": str(log)}


def make_store(work: Path, args, deadline: float) -> tuple[Path, dict]:
    """``eraflow synth`` + ``eraflow ingest`` of ``--rows`` × ``--features`` into ``work/store`` (kept when
    it exists, so a re-run skips it); the store's rows, features and era labels."""
    store = work / "store"
    if (store / "meta.json").exists():
        return store, {"synth_s": 0.0, "ingest_s": 0.0, "reused": True, **store_shape(store)}
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    synth = run_timed([*ERAFLOW, "synth", str(work / "data"), "--eras", str(args.eras), "--rows-per-era",
                       str(args.rows // args.eras), "--features", str(args.features), "--targets", "1", "-q"],
                      work / "synth.log", deadline - time.time())
    if synth["status"] != "ok":
        raise SystemExit(f"error: eraflow synth {synth['status']}: {synth['why'] or work / 'synth.log'}")
    ingest = run_timed([*ERAFLOW, "ingest", str(work / "data/train.parquet"), str(work / "data/validation.parquet"),
                        str(store), "--features-json", str(work / "data/features.json"), "-q"],
                       work / "ingest.log", deadline - time.time())
    if ingest["status"] != "ok":
        raise SystemExit(f"error: eraflow ingest {ingest['status']}: {ingest['why'] or work / 'ingest.log'}")
    return store, {"synth_s": synth["seconds"], "ingest_s": ingest["seconds"], "reused": False, **store_shape(store)}


def store_shape(store: Path) -> dict:
    meta = json.loads((store / "meta.json").read_text())
    return {"rows": meta["n_rows"], "features": len(meta["feature_names"]), "era_labels": meta["eras"]}


def era_split(labels: list[str]) -> tuple[str, str]:
    """``(--train-eras, --eras to predict)``: the first three quarters of the eras and the rest."""
    last_train = len(labels) - len(labels) // 4
    return f":{labels[last_train - 1]}", f"{labels[last_train]}:"


def train_run(run: str, store: Path, labels: list[str], work: Path, args, deadline: float) -> dict:
    """Train and predict one ``kind:device`` run; the row of the results table (``train_s``, ``predict_s``: the
    wall time of the whole ``eraflow train`` / ``eraflow predict`` process, start and Dataset build included)."""
    kind, device = run.split(":")
    name = f"{kind}-{device}"
    (work / f"{name}.toml").write_text(toml_text(kind_params(kind, args.trees)))
    shutil.rmtree(work / name, ignore_errors=True)
    (work / f"{name}.parquet").unlink(missing_ok=True)
    train_eras, predict_eras = era_split(labels)
    cmd = [*ERAFLOW, "train", str(store), "-o", str(work / name), "--model", kind, "--device", device,
           "--params", str(work / f"{name}.toml"), "--train-eras", train_eras, "--ledger", str(work / "ledger.duckdb"),
           "-q", "--json"]
    if kind in ("mlp", "gtruda"):
        cmd += ["--epochs", str(args.epochs)]
    row = {"run": run, "kind": kind, "device": device, **run_timed(cmd, work / f"{name}.log", deadline - time.time())}
    if row["status"] != "ok":
        return row
    row["train_s"] = row.pop("seconds")
    row["device_name"] = chosen_device(work / name)
    predicted = run_timed([*ERAFLOW, "predict", str(work / name), str(store), "-o", str(work / f"{name}.parquet"),
                           "--eras", predict_eras], work / f"{name}-predict.log", deadline - time.time())
    row["predict_s"] = predicted["seconds"]
    if predicted["status"] != "ok":
        row.update(status=f"predict {predicted['status']}", why=predicted["why"], log=predicted.get("log", ""))
    return row


def chosen_device(model_dir: Path) -> str:
    """The device model.json records (``device_choice.name`` where the kind says which one), else its ``device``."""
    try:
        meta = json.loads((model_dir / "model.json").read_text())
    except (OSError, ValueError):
        return "?"
    return (meta.get("device_choice") or {}).get("name") or str(meta.get("device", "?"))


def predictions(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["pred_target"]).column(0).to_numpy().astype(np.float64)


def compare_with_cpu(rows: list[dict], work: Path) -> None:
    """Add ``corr_vs_cpu``, ``max_abs_diff`` and ``parity`` (ok / LOW / reported) to each device row whose
    predictions and its kind's CPU predictions were written (also when a process then failed at exit)."""
    done = [r for r in rows if "train_s" in r and (work / f"{r['kind']}-{r['device']}.parquet").exists()]
    cpu = {r["kind"]: r for r in done if r["device"] == "cpu"}
    for r in done:
        if r["device"] == "cpu" or r["kind"] not in cpu:
            continue
        mine, base = (predictions(work / f"{x['kind']}-{x['device']}.parquet") for x in (r, cpu[r["kind"]]))
        r["corr_vs_cpu"] = float(np.corrcoef(mine, base)[0, 1])
        r["max_abs_diff"] = float(np.abs(mine - base).max())
        r["speedup_vs_cpu"] = cpu[r["kind"]]["train_s"] / r["train_s"]
        least = PARITY.get(r["kind"])
        r["parity"] = "reported" if least is None else ("ok" if r["corr_vs_cpu"] >= least else f"LOW (< {least})")


def cell(row: dict, key: str, spec: str) -> str:
    """``row[key]`` formatted by ``spec`` (e.g. ``8.1f``), or a dash as wide."""
    width = int(spec.split(".")[0])
    return format(row[key], spec) if key in row else "-".rjust(width)


def table(rows: list[dict]) -> list[str]:
    lines = [f"{'run':<10} {'status':<16} {'train s':>8} {'predict s':>9} {'vs cpu':>7} {'corr':>8} "
             f"{'max|diff|':>9}  {'parity':<9} device"]
    for r in rows:
        lines.append(f"{r['run']:<10} {r['status']:<16} {cell(r, 'train_s', '8.1f')} {cell(r, 'predict_s', '9.1f')} "
                     f"{cell(r, 'speedup_vs_cpu', '6.2f')}{'×' if 'speedup_vs_cpu' in r else ' '} "
                     f"{cell(r, 'corr_vs_cpu', '8.5f')} {cell(r, 'max_abs_diff', '9.2e')}  "
                     f"{r.get('parity', '-'):<9} {r.get('device_name', '')}")
        if r["status"] != "ok" and r.get("why"):
            lines.append(f"{'':<10} {r['why']}")
    return lines


def train_main(args) -> int:
    deadline = time.time() + args.budget
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = list(args.runs or DEFAULT_RUNS) + (["lgbm:cuda"] if args.lightgbm_cuda else [])
    store, data = make_store(work, args, deadline)
    labels = data.pop("era_labels")
    print(f"training CPU vs GPU: {data['rows']:,} rows × {data['features']} features, {len(labels)} eras "
          f"(train the first 3/4, predict the rest), {args.trees} trees / {args.epochs} epochs, "
          f"budget {args.budget:.0f} s", flush=True)
    print(f"store: synth {data['synth_s']:.1f} s, ingest {data['ingest_s']:.1f} s"
          f"{' (reused)' if data['reused'] else ''}", flush=True)
    rows = []
    for run in runs:
        rows.append(train_run(run, store, labels, work, args, deadline))
        print(f"  {run}: {rows[-1]['status']}", flush=True)
    compare_with_cpu(rows, work)
    print("\n".join(table(rows)))
    for r in rows:  # the logs stay on the machine: the end of each failed one goes into the results
        if r["status"].startswith(("failed", "predict failed")) and Path(r.get("log", "")).is_file():
            print(f"--- end of {r['log']}", *Path(r["log"]).read_text(errors="replace").splitlines()[-15:], sep="\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"eras": len(labels), "trees": args.trees, "epochs": args.epochs,
                                               **data, "runs": rows}, indent=1))
    bad = [r["run"] for r in rows
           if r["status"].startswith(("failed", "predict failed")) or str(r.get("parity", "")).startswith("LOW")]
    if bad:
        print(f"error: failed or out of parity: {', '.join(bad)}")
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------ repack


def repack(wheels: list[str], out: Path) -> list[Path]:
    """Copies of ``wheels`` in ``out`` with every member stored uncompressed: still valid wheels (their
    RECORD hashes are of the files, not of the zip), and xz then compresses the whole far better than
    the deflated originals (lightgbm, polars, duckdb, numerai-tools: 83 MB of wheels → a 50 MB pack)."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for wheel in map(Path, wheels):
        dest = out / wheel.name
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info)  # read with the member's own compression before changing it
                info.compress_type = zipfile.ZIP_STORED
                dst.writestr(info, data)
        made.append(dest)
    return made


def repack_main(args) -> int:
    for path in repack(args.wheels, Path(args.out)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    sub.add_parser("env", help="devices and package versions")
    train = sub.add_parser("train", help="training CPU vs GPU, with parity of the predictions")
    train.add_argument("--work", required=True, help="folder for the store, models and logs (the store is reused)")
    train.add_argument("--rows", type=int, default=150_000)
    train.add_argument("--features", type=int, default=2376)
    train.add_argument("--eras", type=int, default=100)
    train.add_argument("--trees", type=int, default=200)
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--runs", nargs="*", help=f"kind:device runs [default: {' '.join(DEFAULT_RUNS)}]")
    train.add_argument("--lightgbm-cuda", action="store_true", help="also lgbm:cuda (after make lightgbm-cuda)")
    train.add_argument("--budget", type=float, default=300, help="seconds for the whole part")
    train.add_argument("--json", help="write the results here too")
    pack = sub.add_parser("repack", help="wheels re-zipped uncompressed")
    pack.add_argument("wheels", nargs="+")
    pack.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return {"env": env_main, "train": train_main, "repack": repack_main}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
