"""The network kinds (gtruda, mlp): validity, loader throughput, memory and step cost, with baselines in the same run.

Parts (results merged into benches/results/nn_kinds.json, benches/results/nn_kinds.md rewritten each time):

``validity``: planted-signal data (engine.data.synth, 240 eras × 1000 rows × 310 features by default: gtruda
needs ≥ 149; oracle.parquet holds the planted score) → ``eraflow train --model KIND --train-eras :LAST`` on
the first 75 % of eras (the networks stop early on their own held-out eras: the latest ``holdout`` share of
the training eras, after the embargo) → ``eraflow predict`` of the last 25 % → per-era numerai_corr of the
model and of the oracle on the same eras (as benches/model_kinds.py, whose shallow lgbm is the baseline).

``ensemble``: ``eraflow ensemble LGBM NET`` (rank mean, equal weights) of the validity models, predicted on
the same held-out eras; per-era difference ensemble − lgbm alone, its mean and standard error.

``throughput``: in this process, the kind's own step on one net, fed (a) by nn/loop.py ``run_epoch`` (the
store loader, nn/data.py ``batch_loader``) and (b) by shuffled batches of an in-RAM float32 tensor of the same
rows, same batch sizes; the two alternate, and their ratio is taken per repeat (the machine is shared). The
loader alone (no step) gives the data rate, warm and after evicting the store file from the page cache.

``memory``: ``eraflow train --model KIND`` for one epoch (params ``epochs = 1``) on a big store (1M rows ×
2376 features; built by `eraflow synth` + `eraflow ingest` when DATA/store is missing) in a child process
from a cold page cache of the store: wall and fit time, the child's ru_maxrss and its RssAnon sampled every
20 ms (pread pages are page cache, not the child's RSS). ``--subset-eras`` trains on a range of eras.

``steps``: one training step's time per row and peak memory by batch and feature count, in fresh children,
with glibc's default allocator and with mmap turned off.

    python benches/nn_kinds.py validity --data /tmp/nn-validity                 # lgbm, gtruda, mlp and variants
    python benches/nn_kinds.py ensemble --data /tmp/nn-validity --kinds gtruda,mlp
    python benches/nn_kinds.py throughput --data /tmp/nn-validity --repeats 5   # 310 features
    python benches/nn_kinds.py throughput --data /tmp/nn-big --kinds gtruda --rows 32768 --repeats 3
    python benches/nn_kinds.py memory --data /tmp/nn-big --kinds mlp,gtruda
    python benches/nn_kinds.py memory --data /tmp/nn-big --kinds gtruda --subset-eras 0001:0040
    python benches/nn_kinds.py steps
    python benches/nn_kinds.py table                                            # rewrite the markdown
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from model_kinds import SHALLOW, failure, held_out_corr, last_json, measure, toml_text  # noqa: E402

from eraflow.engine import SynthSpec, ingest_files, open_store, write_synthetic  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ERAFLOW = str(Path(sys.executable).with_name("eraflow"))
NETS = ("gtruda", "mlp")
SEED = 0

# The validity part's models: name → (kind, --params). lgbm as benches/model_kinds.py; the networks with their
# defaults; mlp-p10 waits 10 epochs instead of 5 (the per-epoch validation corr of 36 eras is noisy: se ≈ 0.005
# against a signal ≈ 0.03); gtruda-seed and mlp-mse take the seed's GTRUDA batch and head rate (the kind's first
# defaults) and the dense net's first defaults (batch 4096, MSE).
VALIDITY = {"lgbm": ("lgbm", {**SHALLOW, "num_leaves": 4}), "gtruda": ("gtruda", {}), "mlp": ("mlp", {}),
            "mlp-p10": ("mlp", {"patience": 10}), "gtruda-seed": ("gtruda", {"batch_size": 32768, "head_lr": 1e-2}),
            "mlp-mse": ("mlp", {"batch_size": 4096, "loss": "mse"})}
# rows of the throughput part: whole eras from the first, at least this many (--rows; the in-RAM float32
# tensor of 131072 × 2376 is 1.2 GiB)
THROUGHPUT_ROWS = 131072


# ---- shared ------------------------------------------------------------------------------------

def train_command(kind: str, store: Path, model_dir: Path, params: Path, ledger: Path, extra: list[str]) -> list[str]:
    return [ERAFLOW, "train", str(store), "-o", str(model_dir), "--model", kind, "--params", str(params),
            *extra, "--seed", str(SEED), "--ledger", str(ledger), "--quiet", "--json", "--threads", "2"]


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (only this file's), so the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fitted(model_dir: Path) -> dict:
    """model.json's ``fitted`` record of the target model (``describe()``), or {}."""
    meta = json.loads((model_dir / "model.json").read_text())
    entry = meta.get("fitted", {})
    return entry.get("target", next(iter(entry.values()), {})) if isinstance(entry, dict) else {}


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error ``sd / √n`` over the finite values."""
    v = values[np.isfinite(values)]
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


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


def effective_settings(kind: str, params: dict) -> dict:
    """The kind's settings for ``params`` (its defaults filled in) as the trainer sees them today."""
    from eraflow.engine.models.kind import get_kind
    return get_kind(kind).check_settings(params) if kind != "lgbm" else params


def held_out(store, n_valid: int) -> tuple[str, list[str]]:
    """The last training era and the held-out eras (the last ``n_valid``)."""
    return store.eras[store.n_eras - n_valid - 1], store.eras[store.n_eras - n_valid:]


def predict_held_out(model_dir: Path, store_dir: Path, first: str, work: Path) -> tuple[Path | None, dict]:
    preds = work / "preds.parquet"
    run = measure([ERAFLOW, "predict", str(model_dir), str(store_dir), "-o", str(preds), "--eras", f"{first}:",
                   "--threads", "2"], work / "predict.log")
    return (None if run["rc"] else preds), run


def submitted(preds: Path) -> list[str]:
    """The prediction column a model submits: ``ensemble`` when present, else ``pred_target``."""
    import pyarrow.parquet as pq
    names = pq.read_schema(preds).names
    return ["ensemble" if "ensemble" in names else "pred_target"]


def validity(name: str, root: Path, args) -> dict:
    store_dir, n_valid = validity_data(root, args)
    store = open_store(store_dir)
    last_train, held = held_out(store, n_valid)
    work = fresh_dir(root / name)
    params = work / "params.toml"
    kind, settings = VALIDITY[name]
    params.write_text(toml_text(settings))
    cmd = train_command(kind, store_dir, work / "model", params, work / "ledger.duckdb",
                        ["--train-eras", f":{last_train}"])
    run = measure(cmd, work / "train.log")
    row = {"kind": name, "model_kind": kind, "command": " ".join(cmd[1:]).replace(str(root), "DATA"),
           "params": settings, "settings": effective_settings(kind, settings), "train_seconds": run["seconds"],
           "train_load": run["load"], "train_peak_rss_mib": run["peak_rss_mib"]}
    if run["rc"]:
        return row | {"error": f"train exit {run['rc']}: {failure(work / 'train.log')}"}
    preds, pred = predict_held_out(work / "model", store_dir, held[0], work)
    if preds is None:
        return row | {"error": f"predict exit {pred['rc']}: {failure(work / 'predict.log')}"}
    model = held_out_corr(store, preds, held, submitted(preds))
    oracle = held_out_corr(store, root / "oracle.parquet", held, None)
    mean, se = mean_se(model)
    oracle_mean = float(np.nanmean(oracle))
    return row | {"rows": store.n_rows, "features": len(store.feature_names),
                  "held_out_eras": int(np.isfinite(model).sum()), "model_corr": mean, "se": se,
                  "oracle_corr": oracle_mean, "ratio": mean / oracle_mean,
                  "per_era": [float(c) for c in model], "fitted": fitted(work / "model")}


# ---- ensemble ----------------------------------------------------------------------------------

def ensemble(net: str, root: Path, args) -> dict:
    """lgbm + ``net`` (rank mean) on the held-out eras vs lgbm alone: paired per-era difference."""
    store_dir, n_valid = validity_data(root, args)
    store = open_store(store_dir)
    _, held = held_out(store, n_valid)
    work = fresh_dir(root / f"lgbm+{net}")
    cmd = [ERAFLOW, "ensemble", str(root / "lgbm" / "model"), str(root / net / "model"), "-o", str(work / "model"),
           "--ledger", str(work / "ledger.duckdb"), "--threads", "2"]
    run = measure(cmd, work / "ensemble.log")
    row = {"pair": f"lgbm+{net}", "command": " ".join(cmd[1:]).replace(str(root), "DATA")}
    if run["rc"]:
        return row | {"error": f"ensemble exit {run['rc']}: {failure(work / 'ensemble.log')}"}
    preds, pred = predict_held_out(work / "model", store_dir, held[0], work)
    if preds is None:
        return row | {"error": f"predict exit {pred['rc']}: {failure(work / 'predict.log')}"}
    both = held_out_corr(store, preds, held, submitted(preds))
    alone = {k: held_out_corr(store, root / k / "preds.parquet", held, ["pred_target"]) for k in ("lgbm", net)}
    oracle = float(np.nanmean(held_out_corr(store, root / "oracle.parquet", held, None)))
    stats = {name: mean_se(v) for name, v in (("ensemble", both), ("lgbm", alone["lgbm"]), (net, alone[net]),
                                              ("difference", both - alone["lgbm"]))}
    diff, diff_se = stats["difference"]
    return row | {"held_out_eras": int(np.isfinite(both).sum()), "oracle_corr": oracle,
                  **{f"{k}_corr": m for k, (m, _) in stats.items()}, **{f"{k}_se": s for k, (_, s) in stats.items()},
                  "eras_better": int(np.nansum(both > alone["lgbm"])),
                  "verdict": ("helps" if diff > 2 * diff_se else "hurts" if diff < -2 * diff_se
                              else "no difference beyond 2 se")}


# ---- throughput --------------------------------------------------------------------------------

def make_step(kind: str, n_features: int):
    """A fresh net of ``kind`` with its default settings and the kind's own training step
    (gtruda.gtruda_step, mlp.dense_step), float32 (no autocast, as on the CPU by default)."""
    import torch

    from eraflow.engine.models import gtruda, mlp
    from eraflow.engine.models.nn.loop import autocast
    from eraflow.engine.models.nn.nets import DenseNet, GtrudaNet
    torch.manual_seed(SEED)
    cast = autocast("cpu", False)
    if kind == "gtruda":
        s = gtruda.KIND.check_settings({})
        net = GtrudaNet(n_features, tuple(s["head"]))
        return net, gtruda.gtruda_step(net, cast, s["ae_lr"], s["head_lr"], s["per_era"]), s
    s = mlp.KIND.check_settings({})
    net = DenseNet(n_features, tuple(s["widths"]), s["dropout"])
    return net, mlp.dense_step(net, cast, s), s


def first_eras(store, rows: int) -> np.ndarray:
    """Store indices of the first eras holding at least ``rows`` rows."""
    return np.arange(min(max(1, int(np.searchsorted(store.offsets, rows))), store.n_eras))


def ram_rows(store, eras: np.ndarray, y: np.ndarray):
    """The eras' rows with a target (``y``: their target, store order) as in-RAM float32 tensors (x, y),
    read with pread (a memmap read would keep the pages mapped, and eviction could not drop them)."""
    import torch

    from eraflow.engine.models.nn.data import inputs_from_int8
    lo, hi = int(store.offsets[eras[0]]), int(store.offsets[eras[-1] + 1])
    width = len(store.feature_names)
    codes = np.frombuffer(os.pread(store.features_fd, (hi - lo) * width, lo * width), np.int8).reshape(hi - lo, width)
    keep = np.flatnonzero(np.isfinite(y))
    return torch.from_numpy(inputs_from_int8(codes[keep])), torch.from_numpy(y[keep].astype(np.float32))


def epoch_loader(data, settings: dict, y: np.ndarray, epoch: int):
    from eraflow.engine.models.nn.data import batch_loader
    return batch_loader(data.store, data.cols, y, data.train_eras, settings["batch_size"], False,
                        settings["workers"], data.seed, epoch, False, settings["chunk_rows"])


def batch_sizes(data, settings: dict, y: np.ndarray, epoch: int) -> list[int]:
    """The batch sizes of epoch ``epoch``'s plan (nothing read)."""
    return [int(b) for c in epoch_loader(data, settings, y, epoch).loader.dataset.chunks for b in np.diff(c.bounds)]


def timed_loader(net, step, data, settings: dict, y: np.ndarray, epoch: int) -> float:
    """Seconds of one epoch of nn/loop.py's ``run_epoch`` (batch_loader → the step on each batch);
    ``step`` None: the loader's batches alone (no step)."""
    from eraflow.engine.models.nn.data import iter_batches
    from eraflow.engine.models.nn.loop import run_epoch
    t0 = time.perf_counter()
    if step is None:
        for _ in iter_batches(epoch_loader(data, settings, y, epoch).loader):
            pass
    else:
        run_epoch(net, step, data, settings, data.train_eras, y, epoch, None)
    return time.perf_counter() - t0


def timed_ram(net, step, x, y, sizes: list[int], epoch: int) -> float:
    """Seconds of ``step`` over shuffled batches gathered from the in-RAM rows, with the given batch sizes."""
    import torch

    from eraflow.engine.models.nn.data import Batch
    net.train()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
    t0, pos = time.perf_counter(), 0
    for b in sizes:
        idx = perm[pos:pos + b]
        pos += b
        step(Batch(x[idx], y[idx], torch.zeros(b, dtype=torch.int64)))
    return time.perf_counter() - t0


def throughput_config(kind: str, store_dir: Path, workers: int, args) -> dict:
    """Seconds and rows/s of one epoch of the step fed by the loader and from RAM, alternating, and of the
    loader alone (warm, cold); their ratios per repeat."""
    from eraflow.engine.models.kind import FitData
    store = open_store(store_dir)
    n_features = len(store.feature_names)
    eras = first_eras(store, args.rows)
    data = FitData(store, eras, np.arange(n_features), "target", seed=SEED)
    y = data.target_values(eras)
    x_ram, y_ram = ram_rows(store, eras, y)
    net, step, settings = make_step(kind, n_features)
    settings = settings | {"workers": workers, "batch_size": args.batch_size or settings["batch_size"]}
    timed_ram(net, step, x_ram, y_ram, batch_sizes(data, settings, y, 0)[:2], 0)  # warm-up: torch's first calls
    sizes = [batch_sizes(data, settings, y, rep) for rep in range(args.repeats)]
    passes = {"loader": lambda rep: timed_loader(net, step, data, settings, y, rep),
              "ram": lambda rep: timed_ram(net, step, x_ram, y_ram, sizes[rep], rep)}
    times: dict[str, list[float]] = {"loader": [], "ram": [], "data_cold": [], "data_warm": []}
    cpu: dict[str, list[float]] = {"loader": [], "ram": []}  # this process's CPU seconds (all its threads)
    for rep in range(args.repeats):
        for name in (("loader", "ram") if rep % 2 == 0 else ("ram", "loader")):  # alternate: drifting load
            c0 = time.process_time()
            times[name].append(passes[name](rep))
            cpu[name].append(time.process_time() - c0)
        evict(store_dir / "features.i8")
        times["data_cold"].append(timed_loader(net, None, data, settings, y, rep))
        times["data_warm"].append(timed_loader(net, None, data, settings, y, rep))
    rows = int(np.isfinite(y).sum())
    rate = {k: rows / statistics.median(v) for k, v in times.items()}
    # with workers 0 the reads are serial: a cold epoch adds the cold reading time over the warm one
    cold = rows / (statistics.median(times["loader"]) + statistics.median(times["data_cold"])
                   - statistics.median(times["data_warm"]))
    return {"kind": kind, "features": n_features, "rows": rows, "eras": len(eras), "batches": len(sizes[0]),
            "batch_size": settings["batch_size"], "workers": workers, "repeats": args.repeats, "seconds": times,
            "cpu_seconds": cpu, "torch_threads": args.torch_threads,
            "cpu_ratio": statistics.median(r / lo for r, lo in zip(cpu["ram"], cpu["loader"])),
            **{f"{k}_rows_s": r for k, r in rate.items()}, "ratio": rate["loader"] / rate["ram"],
            "paired_ratio": statistics.median(r / lo for r, lo in zip(times["ram"], times["loader"])),
            "best_ratio": min(times["ram"]) / min(times["loader"]),
            "cold_rows_s": cold, "ratio_cold": cold / rate["ram"],
            "data_share": statistics.median(times["data_warm"]) / statistics.median(times["loader"]),
            "load": os.getloadavg()[0]}


def throughput(args) -> Iterator[dict]:
    import torch
    torch.set_num_threads(args.torch_threads)
    for store_dir in [args.data / "store", *([args.big] if args.big else [])]:
        for kind in args.kinds.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                row = throughput_config(kind, store_dir, workers, args)
                print(json.dumps(row, default=float), flush=True)
                yield row


# ---- steps: one training step's memory and time -----------------------------------------------------

STEP_CHILD = r"""
import json, os, sys, time, torch
from eraflow.engine.models import gtruda, mlp
from eraflow.engine.models.nn.data import Batch
from eraflow.engine.models.nn.loop import autocast
from eraflow.engine.models.nn.nets import DenseNet, GtrudaNet
kind, n, b, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
torch.manual_seed(0)
cast = autocast("cpu", False)
if kind == "gtruda":
    net, s = GtrudaNet(n), gtruda.KIND.check_settings({})
    step = gtruda.gtruda_step(net, cast, s["ae_lr"], s["head_lr"], False)
else:
    net = DenseNet(n)
    step = mlp.dense_step(net, cast, mlp.KIND.check_settings({}))
batch = Batch(torch.rand(b, n), torch.rand(b), torch.zeros(b, dtype=torch.int64))
hwm = lambda: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
before = hwm()
step(batch)  # the first step allocates Adam's state
t0, c0 = time.perf_counter(), os.times()
for _ in range(steps):
    step(batch)
seconds, c1 = time.perf_counter() - t0, os.times()
print(json.dumps({"us_per_row": seconds / steps / b * 1e6, "peak_mib": hwm(), "before_mib": before,
                  "wall_s": seconds, "user_s": c1.user - c0.user, "sys_s": c1.system - c0.system}))
"""
# (kind, features, batch, glibc's allocator also without mmap): gtruda's activations grow with batch × features
STEP_CASES = (("gtruda", 310, 2048, True), ("gtruda", 310, 32768, True), ("gtruda", 2376, 1024, False),
              ("gtruda", 2376, 2048, True), ("gtruda", 2376, 4096, True), ("gtruda", 2376, 8192, False),
              ("mlp", 2376, 512, True), ("mlp", 2376, 4096, False))
NO_MMAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}  # glibc: reuse freed memory


def step_case(kind: str, n: int, b: int, allocator: str, args) -> dict:
    """Peak memory (VmHWM) and seconds per row of ``args.steps`` steps on one random batch in a fresh child
    (``allocator`` "no-mmap": glibc told to keep freed blocks instead of unmapping them)."""
    env = {**os.environ, **(NO_MMAP if allocator == "no-mmap" else {})}
    out = subprocess.run([sys.executable, "-c", STEP_CHILD, kind, str(n), str(b), str(args.steps)], env=env,
                         capture_output=True, text=True, check=True)
    return {"kind": kind, "features": n, "batch": b, "allocator": allocator, "steps": args.steps,
            **json.loads(out.stdout.strip().splitlines()[-1]), "load": os.getloadavg()[0]}


def steps(args) -> Iterator[dict]:
    for kind, n, b, no_mmap in STEP_CASES:
        for allocator in ("glibc default", *(["no-mmap"] if no_mmap else [])):
            row = step_case(kind, n, b, allocator, args)
            print(json.dumps(row), flush=True)
            yield row


# ---- memory ------------------------------------------------------------------------------------

def big_store(root: Path) -> Path:
    """DATA/store: 1M rows × 2376 features from `eraflow synth` + `eraflow ingest` (built once)."""
    store_dir = root / "store"
    if not (store_dir / "meta.json").exists():
        write_synthetic(root, SynthSpec(eras=410, rows_per_era=2500, features=2376, seed=SEED))
        ingest_files([root / "train.parquet", root / "validation.parquet"], store_dir)
    return store_dir


def memory(kind: str, root: Path, args) -> dict:
    store_dir = big_store(root)
    name = " ".join([kind, *([args.device] if args.device != "cpu" else []),
                     *([f"batch {args.batch_size}"] if args.batch_size else []),
                     *([f"eras {args.subset_eras}"] if args.subset_eras else [])])
    work = fresh_dir(root / name.replace(" ", "_").replace(":", "-"))
    params = work / "params.toml"
    settings = {"epochs": 1, **({"batch_size": args.batch_size} if args.batch_size else {})}
    params.write_text(toml_text(settings))
    extra = ["--device", args.device, *([] if args.subset_eras is None else ["--train-eras", args.subset_eras])]
    evict(store_dir / "features.i8")
    cmd = train_command(kind, store_dir, work / "model", params, work / "ledger.duckdb", extra)
    run = measure(cmd, work / "train.log")
    store = open_store(store_dir)
    row = {"kind": name, "command": " ".join(cmd[1:]).replace(str(root), "DATA"), "params": settings,
           "store_rows": store.n_rows, "features": len(store.feature_names), "train_seconds": run["seconds"],
           "train_load": run["load"], "peak_rss_mib": run["peak_rss_mib"], "peak_anon_mib": run["peak_anon_mib"]}
    if run["rc"]:
        return row | {"error": f"train exit {run['rc']}: {failure(work / 'train.log')}"}
    info, report = fitted(work / "model"), last_json(work / "train.log")
    rows = info.get("rows", 0)
    return row | {"fitted": info, "report": report, "rows": rows, "rows_s": rows / run["seconds"],
                  "fit_seconds": report["seconds"], "fit_rows_s": rows / report["seconds"]}


# ---- tables ------------------------------------------------------------------------------------

def load_text(r: dict) -> str:
    return f"load {r['train_load']:.1f}" if "train_load" in r else "load not recorded"


def validity_table(rows: dict) -> list[str]:
    lines = ["| model | settings | held-out corr ± se | oracle corr | share of oracle | epochs (best / run) "
             "| train s |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | | failed: {r['error']} | | | | |")
            continue
        f, st = r.get("fitted", {}), r.get("settings", {})
        epochs = f"{f.get('best_epoch', '?')} / {f.get('epochs_run', '?')}" if r.get("model_kind") in NETS else "—"
        lines.append(f"| {name} | {settings_text(r.get('model_kind'), st)} | {r['model_corr']:.4f} ± {r['se']:.4f} | "
                     f"{r['oracle_corr']:.4f} | "
                     f"**{r['ratio']:.2f}** | {epochs} | {r['train_seconds']:.0f} ({load_text(r)}) |")
    return lines


def settings_text(kind: str | None, s: dict) -> str:
    """The settings that tell the network rows apart (batch, rates, loss, patience)."""
    if kind == "gtruda":
        return f"batch {s['batch_size']}, ae_lr {s['ae_lr']:g}, head_lr {s['head_lr']:g}, patience {s['patience']}"
    if kind == "mlp":
        return f"batch {s['batch_size']}, {s['loss']}, lr {s['lr']:g}, patience {s['patience']}"
    return "1000 trees, depth 2" if kind == "lgbm" else ""


def ensemble_table(rows: dict) -> list[str]:
    lines = ["| members | ensemble corr ± se | lgbm alone | net alone | ensemble − lgbm ± se (paired per era) "
             "| eras better | verdict |", "|---|---|---|---|---|---|---|"]
    for pair, r in rows.items():
        if "error" in r:
            lines.append(f"| {pair} | failed: {r['error']} | | | | | |")
            continue
        net = pair.split("+", 1)[1]
        lines.append(f"| {pair} | {r['ensemble_corr']:.4f} ± {r['ensemble_se']:.4f} | {r['lgbm_corr']:.4f} | "
                     f"{r[f'{net}_corr']:.4f} | {r['difference_corr']:+.4f} ± {r['difference_se']:.4f} | "
                     f"{r['eras_better']} of {r['held_out_eras']} | {r['verdict']} |")
    return lines


def throughput_table(rows: dict) -> list[str]:
    lines = ["| kind | features | rows × batches (batch) | in-RAM rows/s | loader rows/s | ratio (paired) "
             "| ratio of medians, best-of, CPU s | loader alone rows/s (warm, cold) | loader share | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.values():
        workers = (f", workers {r['workers']}" if r["workers"] else "") + \
            (f", {r['torch_threads']} thread" if r.get("torch_threads", 2) != 2 else "")
        best = min(r["seconds"]["ram"]) / min(r["seconds"]["loader"])
        cpu_ratio = f"{r['cpu_ratio']:.2f}" if "cpu_ratio" in r else "—"
        lines.append(f"| {r['kind']}{workers} | {r['features']} | {r['rows']:,} × {r['batches']} ({r['batch_size']}) "
                     f"| {r['ram_rows_s']:,.0f} | {r['loader_rows_s']:,.0f} | **{r['paired_ratio']:.2f}** | "
                     f"{r['ratio']:.2f}, {best:.2f}, {cpu_ratio} | {r['data_warm_rows_s']:,.0f}, "
                     f"{r['data_cold_rows_s']:,.0f} | {100 * r['data_share']:.1f} % | {r['load']:.1f} |")
    return lines


def memory_table(rows: dict) -> list[str]:
    lines = ["| run | rows trained (epochs) | wall s | fit s | rows/s (fit) | peak RSS GiB | peak anon GiB |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mem = f"{r['peak_rss_mib'] / 1024:.2f} | {r['peak_anon_mib'] / 1024:.2f}"
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | {r['train_seconds']:.0f} | | | {mem} |")
            continue
        lines.append(f"| {name} | {r['rows']:,} ({r['fitted'].get('epochs_run', '?')}) | {r['train_seconds']:.0f} "
                     f"({load_text(r)}) | {r['fit_seconds']:.0f} | {r['fit_rows_s']:,.0f} | {mem} |")
    whole = rows.get("mlp") or next((r for r in rows.values() if " eras " not in r["kind"] and "error" not in r), None)
    for name, r in rows.items():
        if " eras " in name and "error" not in r and whole:
            lines += ["", f"{name}: a full epoch ({whole['rows']:,} rows, as {whole['kind']} trained) at its "
                      f"{r['fit_rows_s']:,.0f} rows/s would take about {whole['rows'] / r['fit_rows_s'] / 60:.0f} min "
                      "(linear extrapolation of the fit time; memory does not grow with the rows: the loader holds "
                      "a chunk at a time)."]
    return lines


def steps_table(rows: dict) -> list[str]:
    lines = ["| kind | features | batch | allocator | µs per row | of which system (kernel) | peak RSS MiB (before "
             "the first step) |", "|---|---|---|---|---|---|---|"]
    for r in rows.values():
        sys_share = r["sys_s"] / max(1e-9, r["user_s"] + r["sys_s"])
        lines.append(f"| {r['kind']} | {r['features']} | {r['batch']:,} | {r['allocator']} | {r['us_per_row']:,.0f} | "
                     f"{100 * sys_share:.0f} % | {r['peak_mib']:,.0f} ({r['before_mib']:,.0f}) |")
    return lines


NOTES = {
    "validity": ("No CV: each model trains once on the first 75 % of eras; the networks stop early on their own "
                 "held-out eras (the latest `holdout` share, 0.2, of the training eras, after the embargo) and keep "
                 "the best epoch; lgbm trains all its rounds. se: standard error of the held-out per-era mean. "
                 "gtruda, mlp: the kinds' defaults; mlp-p10: patience 10; gtruda-seed: the seed's batch and head "
                 "rate; mlp-mse: the dense net's first defaults (the VALIDITY table in the script says why each)."),
    "ensemble": ("`eraflow ensemble` rank mean (equal weights) of the validity models, predicted on the same held-out "
                 "eras. Difference: per era, ensemble corr − lgbm corr; its mean ± standard error. Verdict: helps or "
                 "hurts when the mean difference is beyond 2 se."),
    "throughput": ("In one process, torch with 2 threads, the kind's own step (gtruda.gtruda_step, "
                   "mlp.dense_step; default settings unless the batch says otherwise, float32) on the same net: one "
                   "epoch of nn/loop.py `run_epoch` (nn/data.py `batch_loader`, workers 0: pread of the store, int8 → "
                   "float32 per chunk of whole eras), or the step over shuffled batches gathered from an in-RAM "
                   "float32 tensor of the same rows, with the same batch sizes; the two alternate in order from "
                   "repeat to repeat. ratio (paired): the median over repeats of in-RAM seconds ÷ loader seconds of "
                   "the same repeat (goal ≥ 0.8); ratio of medians: median loader rows/s ÷ median in-RAM rows/s; "
                   "best-of: fastest in-RAM epoch ÷ fastest loader epoch; CPU s: the paired ratio of this "
                   "process's CPU seconds (all its threads). Other helpers' tests (torch, numba) ran on "
                   "the 2 cores meanwhile and slowed single repeats up to 6× (seconds per repeat in the JSON), so the "
                   "paired ratio is the figure to read. rows/s columns: medians. Loader alone: the epoch's batches "
                   "without a step (the data rate), from the page cache (warm) or after evicting the store file's "
                   "pages (cold; posix_fadvise DONTNEED). Loader share: loader alone (warm) ÷ the loader epoch. "
                   "load: the 1-minute load average at the end."),
    "memory": ("One epoch (`epochs = 1`) from a cold page cache of the store (the features file evicted first), "
               "default settings otherwise (holdout 0.2 of the training eras for validation). peak RSS: the "
               "child's ru_maxrss; peak anon: its RssAnon sampled every 20 ms. wall: the whole command; fit: the "
               "trainer's own seconds (`--json`: the epoch, validation on the holdout eras, saving); rows/s = rows "
               "trained ÷ fit s."),
    "steps": ("A fresh child per row: the kind's step (default learning rates, float32, torch 2 threads) on one "
              "random batch, one step untimed (Adam's state), then `--steps` steps timed. Peak RSS: the child's "
              "VmHWM (torch itself ≈ 0.5 GiB). System share: the steps' kernel CPU time ÷ their CPU time. no-mmap: "
              "`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2^34`, so glibc keeps freed blocks for the next step "
              "instead of unmapping them (by default every block above its mmap threshold, at most 32 MiB, is a "
              "fresh mapping, zero-filled page by page at first touch, in every step)."),
}
TABLES = {"validity": validity_table, "ensemble": ensemble_table, "throughput": throughput_table,
          "memory": memory_table, "steps": steps_table}
GPU = ("No GPU was lent to this session: the CPU-vs-CUDA epoch time on 1M × 2376 awaits a device "
       "(`python benches/nn_kinds.py memory --data DATA --kinds mlp,gtruda --device cuda`, beside the CPU rows).")


def cpu_name() -> str:
    with open("/proc/cpuinfo") as fh:
        return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "CPU")


def markdown(results: dict) -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.machine()}, "
               f"torch {results.get('torch', '?')}")
    out = [f"# Network kinds (gtruda, mlp) ({machine})", ""]
    if results.get("findings"):  # written by hand into the JSON after reading the tables
        out += ["## Findings", "", *[f"- {f}" for f in results["findings"]], ""]
    for part, table in TABLES.items():
        data = results.get(part)
        if not data:
            continue
        out += [f"## {part}: {data['about']}", "", *table(data["rows"]), "", NOTES[part], "",
                "Run by (DATA: the data directory):", "", *[f"`{c}`" for c in data["commands"]], ""]
        commands = [f"- {k}: `eraflow {r['command']}`" + (f", params.toml: `{toml_text(r['params']).strip()}`"
                                                          .replace("\n", "; ") if r.get("params") else "")
                    for k, r in data["rows"].items() if "command" in r]
        out += (["Each command:", "", *commands, ""] if commands else [])
    out += ["## GPU", "", GPU, ""]
    return "\n".join(out)


def about(part: str, args) -> str:
    if part == "throughput":
        return "training rows/s, store loader vs in-RAM tensor, same step, same batches"
    if part == "steps":
        return "memory and time of one training step, by batch and feature count"
    store = open_store((args.data / "store"))
    size = f"{store.n_rows:,} rows × {len(store.feature_names)} features, {len(store.eras)} eras"
    return {"validity": f"{size}, seed {args.seed}, trained on the first 75 % of eras, scored on the last 25 %",
            "ensemble": f"{size}, held-out last 25 % of eras",
            "memory": f"{size}, one epoch"}[part]


def record(args, key: str, row: dict) -> str:
    """Merge ``row`` (under ``key``) into the results file as it is now (other runs may have written it),
    rewrite the markdown; returns it."""
    import torch
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    part = results.setdefault(args.part, {"rows": {}, "commands": []})
    part["rows"][key] = row | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    command = "python " + " ".join(sys.argv).replace(str(args.data), "DATA")
    part |= {"about": about(args.part, args), "commands": list(dict.fromkeys([*part["commands"], command]))}
    results["torch"] = torch.__version__
    args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    text = markdown(results)
    args.md.write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=[*TABLES, "table"], help="table: rewrite --md from --json")
    parser.add_argument("--data", type=Path, help="validity/ensemble/throughput: the planted-signal data, built "
                        "here once; memory: the big data, DATA/store")
    parser.add_argument("--big", type=Path, help="throughput: a second, wide store (e.g. 1M × 2376)")
    parser.add_argument("--kinds", default=None, help="kinds (validity: lgbm,gtruda,mlp; else gtruda,mlp)")
    parser.add_argument("--eras", type=int, default=240)
    parser.add_argument("--rows-per-era", type=int, default=1000)
    parser.add_argument("--features", type=int, default=310)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=THROUGHPUT_ROWS, help="throughput: rows per epoch")
    parser.add_argument("--batch-size", type=int, help="throughput, memory: rows per batch [default: the kind's]")
    parser.add_argument("--torch-threads", type=int, default=2, help="throughput: torch's threads")
    parser.add_argument("--workers", default="0", help="throughput: DataLoader workers, comma-separated")
    parser.add_argument("--steps", type=int, default=3, help="steps: timed steps per case")
    parser.add_argument("--device", default="cpu", help="memory: --device of `eraflow train`")
    parser.add_argument("--subset-eras", help="memory: train on this era range only (e.g. 0001:0040)")
    parser.add_argument("--json", type=Path, default=RESULTS / "nn_kinds.json", help="results, merged per part")
    parser.add_argument("--md", type=Path, default=RESULTS / "nn_kinds.md")
    args = parser.parse_args()
    if args.part == "table":
        text = markdown(json.loads(args.json.read_text()))
        args.md.write_text(text + "\n")
        print(text)
        return
    if args.part == "steps":
        args.data = args.data or RESULTS
    if args.data is None:
        parser.error(f"{args.part} needs --data")
    args.data.mkdir(parents=True, exist_ok=True)
    args.kinds = args.kinds or ",".join(VALIDITY if args.part == "validity" else NETS)
    if args.part == "steps":
        for row in steps(args):
            text = record(args, f"{row['kind']} {row['features']} batch {row['batch']} {row['allocator']}", row)
        print(text)
        return
    if args.part == "throughput":
        for row in throughput(args):
            key = (f"{row['kind']} {row['features']} batch {row['batch_size']} workers {row['workers']}"
                   f" threads {row['torch_threads']}")
            text = record(args, key, row)
        print(text)
        return
    run = {"validity": validity, "ensemble": ensemble, "memory": memory}[args.part]
    for kind in args.kinds.split(","):
        row = run(kind, args.data, args)
        print(json.dumps({k: v for k, v in row.items() if k != "per_era"}, default=float), flush=True)
        text = record(args, row.get("kind", row.get("pair")), row)
    print(text)


if __name__ == "__main__":
    main()
