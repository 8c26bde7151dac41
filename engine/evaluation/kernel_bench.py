"""Speed of the per-era kernels against the usual per-era baselines, measured in one run.

- numerai_corr: eraflow (numba) vs numerai-tools ``numerai_corr`` applied era by era   (goal ≥ 30×)
- neutralize:   eraflow (numba) vs numerai-tools ``neutralize`` applied era by era     (goal ≥ 10×),
                plus (numba) its rate in GFLOP/s counting ``2·n·(k+1)²`` per era (the Gram ``F1ᵀF1``) next to
                a float32 GEMM of the same shape measured here (all BLAS threads; exact for codes,
                the fastest dense way to form that Gram)
- rank:         eraflow (numba) vs ``pandas groupby(era).rank``, normalized as eraflow does  (goal ≥ 5×)

With ``backend="cupy"`` the GPU is timed instead (goals: numerai_corr ≥ 300× numerai-tools,
neutralize ≥ 50× the numba backend, which is then timed too).

The numerai-tools baselines get their per-era pandas objects built outside the timing (the
cheapest way to call them) and run on ``baseline_eras`` eras; their per-era time is scaled to all
eras. Baselines run first: numerai-tools' multithreaded BLAS slows down badly when another
process takes a core, so run this on an otherwise idle machine. Every eraflow result is checked
against its baseline on those eras. Data are synthetic: int8 feature codes 0..4, float32
predictions, targets in {0, .25, .5, .75, 1} with 5 % missing. Times are medians over ``repeats``.
Needs the dev extra (pandas, numerai-tools).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numerai_tools import scoring

from eraflow import kernels

KERNELS = ("numerai_corr", "neutralize", "rank")
# Per backend and kernel: (goal against the baseline, goal against the numba backend or None)
GOALS = {"numba": {"numerai_corr": (30, None), "neutralize": (10, None), "rank": (5, None)},
         "cupy": {"numerai_corr": (300, None), "neutralize": (10, 50), "rank": (5, None)}}


@dataclass(frozen=True)
class BenchSize:
    eras: int = 600
    rows: int = 5000
    features: int = 500
    cols: int = 1
    repeats: int = 3
    baseline_eras: int = 40
    backend: str = "numba"  # the eraflow backend timed; any other is also timed against numba


def synthetic(eras: int, rows: int, features: int, cols: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = eras * rows
    offsets = np.arange(eras + 1, dtype=np.int64) * rows
    codes = rng.integers(0, 5, (n, features), dtype=np.int8)
    predictions = (codes[:, :cols].astype(np.float32) * 0.05 + rng.normal(size=(n, cols))).astype(np.float32)
    target = rng.choice(np.array([0, .25, .5, .75, 1]), n)
    target[rng.random(n) < 0.05] = np.nan
    return offsets, codes, predictions, target


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: numba compilation or cache load, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def eraflow_seconds(call, args: BenchSize) -> dict:
    """Median seconds of ``call(backend)`` on the benchmarked backend, and on numba when that differs.
    Results come back to host memory, so a GPU's transfers are part of its time."""
    times = {"eraflow_s": median_seconds(lambda: call(args.backend), args.repeats)}
    if args.backend != "numba":
        times["numba_s"] = median_seconds(lambda: call("numba"), args.repeats)
    return times


def era_frames(offsets, era, predictions, target, codes=None):
    rows = slice(offsets[era], offsets[era + 1])
    index = pd.Index([f"id{i:08d}" for i in range(rows.start, rows.stop)])
    preds = pd.DataFrame(predictions[rows].astype(np.float64), index=index,
                         columns=[f"p{j}" for j in range(predictions.shape[1])])
    tgt = pd.Series(target[rows], index=index, name="target")
    feats = None if codes is None else pd.DataFrame(codes[rows].astype(np.float64), index=index)
    return preds, tgt, feats


def bench_numerai_corr(args: BenchSize, data, baseline_eras: int):
    offsets, codes, predictions, target = data
    frames = [era_frames(offsets, e, predictions, target) for e in range(baseline_eras)]
    per_era = median_seconds(lambda: [scoring.numerai_corr(p, t) for p, t, _ in frames], args.repeats) / baseline_eras

    def call(backend):
        return kernels.numerai_corr(predictions, target, offsets, backend=backend)

    expected = np.array([scoring.numerai_corr(p, t).to_numpy() for p, t, _ in frames])
    got = call(args.backend).reshape(args.eras, -1)[:baseline_eras]
    np.testing.assert_allclose(got, expected, atol=1e-6, err_msg="numerai_corr differs from numerai-tools")
    return eraflow_seconds(call, args), per_era * args.eras


def bench_neutralize(args: BenchSize, data, baseline_eras: int):
    offsets, codes, predictions, target = data
    per_era_times, expected = [], []
    for era in range(baseline_eras):
        preds, _, feats = era_frames(offsets, era, predictions, target, codes)
        per_era_times.append(median_seconds(lambda: scoring.neutralize(preds, feats), args.repeats))
        expected.append(scoring.neutralize(preds, feats).to_numpy())

    def call(backend):
        return kernels.neutralize(predictions, codes, offsets, backend=backend)

    got = call(args.backend).reshape(len(codes), -1)
    np.testing.assert_allclose(got[:offsets[baseline_eras]], np.concatenate(expected), atol=1e-5,
                               err_msg="neutralize differs from numerai-tools")
    times = eraflow_seconds(call, args)
    if args.backend == "numba":
        f1 = np.hstack([codes[:args.rows], np.ones((args.rows, 1), np.int8)]).astype(np.float32)
        flops_per_era = 2.0 * args.rows * (args.features + 1) ** 2
        times["gflops"] = flops_per_era * args.eras / times["eraflow_s"] / 1e9
        times["gemm_gflops"] = flops_per_era / median_seconds(lambda: f1.T @ f1, args.repeats) / 1e9
    return times, float(np.median(per_era_times)) * args.eras


def bench_rank(args: BenchSize, data):
    offsets, _, predictions, _ = data
    frame = pd.DataFrame(predictions.astype(np.float64), columns=[f"p{j}" for j in range(predictions.shape[1])])
    frame["era"] = np.repeat(np.arange(args.eras), args.rows)
    cols = [c for c in frame.columns if c != "era"]

    def pandas_rank():
        groups = frame.groupby("era")[cols]
        return (groups.rank() - 0.5) / groups.transform("count")

    def call(backend):
        return kernels.rank(predictions, offsets, backend=backend)

    baseline = median_seconds(pandas_rank, args.repeats)
    np.testing.assert_allclose(call(args.backend).reshape(len(frame), -1), pandas_rank().to_numpy(), atol=1e-6,
                               err_msg="rank differs from pandas")
    return eraflow_seconds(call, args), baseline


def run_kernel_bench(size: BenchSize, only=KERNELS) -> list[dict]:
    """One row per kernel: eraflow (and, for another backend, numba) medians in seconds, the
    baseline's, their ratios, the goals, the baseline's name."""
    baseline_eras = min(size.eras, size.baseline_eras)
    data = synthetic(size.eras, size.rows, size.features, size.cols)
    benches = {"numerai_corr": (lambda: bench_numerai_corr(size, data, baseline_eras), "numerai-tools per era"),
               "neutralize": (lambda: bench_neutralize(size, data, baseline_eras), "numerai-tools per era"),
               "rank": (lambda: bench_rank(size, data), "pandas groupby(era).rank")}
    rows = []
    for kernel in (k for k in KERNELS if k in only):
        run, baseline_name = benches[kernel]
        times, baseline_s = run()
        goal, numba_goal = GOALS.get(size.backend, GOALS["numba"])[kernel]
        row = {"kernel": kernel, "backend": size.backend, **times, "baseline_s": baseline_s,
               "ratio": baseline_s / times["eraflow_s"], "goal": goal, "baseline": baseline_name}
        if "numba_s" in times:
            row.update(numba_ratio=times["numba_s"] / times["eraflow_s"], numba_goal=numba_goal)
        rows.append(row)
    return rows
