"""Speed of the per-era kernels against the usual per-era baselines, measured in one run.

- numerai_corr: eraflow (numba) vs numerai-tools ``numerai_corr`` applied era by era   (goal ≥ 30×)
- neutralize:   eraflow (numba) vs numerai-tools ``neutralize`` applied era by era     (goal ≥ 10×),
                plus its rate in GFLOP/s counting ``2·n·(k+1)²`` per era (the Gram ``F1ᵀF1``) next to
                a float32 GEMM of the same shape measured here (all BLAS threads; exact for codes,
                the fastest dense way to form that Gram)
- rank:         eraflow (numba) vs ``pandas groupby(era).rank``, normalized as eraflow does  (goal ≥ 5×)

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


@dataclass(frozen=True)
class BenchSize:
    eras: int = 600
    rows: int = 5000
    features: int = 500
    cols: int = 1
    repeats: int = 3
    baseline_eras: int = 40


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
    ours = median_seconds(lambda: kernels.numerai_corr(predictions, target, offsets, backend="numba"), args.repeats)
    expected = np.array([scoring.numerai_corr(p, t).to_numpy() for p, t, _ in frames])
    got = kernels.numerai_corr(predictions, target, offsets, backend="numba").reshape(args.eras, -1)[:baseline_eras]
    np.testing.assert_allclose(got, expected, atol=1e-6, err_msg="numerai_corr differs from numerai-tools")
    return ours, per_era * args.eras


def bench_neutralize(args: BenchSize, data, baseline_eras: int):
    offsets, codes, predictions, target = data
    per_era_times, expected = [], []
    for era in range(baseline_eras):
        preds, _, feats = era_frames(offsets, era, predictions, target, codes)
        per_era_times.append(median_seconds(lambda: scoring.neutralize(preds, feats), args.repeats))
        expected.append(scoring.neutralize(preds, feats).to_numpy())
    f1 = np.hstack([codes[:args.rows], np.ones((args.rows, 1), np.int8)]).astype(np.float32)
    gemm = median_seconds(lambda: f1.T @ f1, args.repeats)
    ours = median_seconds(lambda: kernels.neutralize(predictions, codes, offsets, backend="numba"), args.repeats)
    got = kernels.neutralize(predictions, codes, offsets, backend="numba").reshape(len(codes), -1)
    np.testing.assert_allclose(got[:offsets[baseline_eras]], np.concatenate(expected), atol=1e-5,
                               err_msg="neutralize differs from numerai-tools")
    flops_per_era = 2.0 * args.rows * (args.features + 1) ** 2
    rates = (flops_per_era * args.eras / ours / 1e9, flops_per_era / gemm / 1e9)
    return ours, float(np.median(per_era_times)) * args.eras, rates


def bench_rank(args: BenchSize, data):
    offsets, _, predictions, _ = data
    frame = pd.DataFrame(predictions.astype(np.float64), columns=[f"p{j}" for j in range(predictions.shape[1])])
    frame["era"] = np.repeat(np.arange(args.eras), args.rows)
    cols = [c for c in frame.columns if c != "era"]

    def pandas_rank():
        groups = frame.groupby("era")[cols]
        return (groups.rank() - 0.5) / groups.transform("count")

    baseline = median_seconds(pandas_rank, args.repeats)
    ours = median_seconds(lambda: kernels.rank(predictions, offsets, backend="numba"), args.repeats)
    np.testing.assert_allclose(kernels.rank(predictions, offsets, backend="numba").reshape(len(frame), -1),
                               pandas_rank().to_numpy(), atol=1e-6, err_msg="rank differs from pandas")
    return ours, baseline


def run_kernel_bench(size: BenchSize, only=KERNELS) -> list[dict]:
    """One row per kernel: eraflow and baseline medians (s), their ratio, the goal, the baseline's name."""
    baseline_eras = min(size.eras, size.baseline_eras)
    data = synthetic(size.eras, size.rows, size.features, size.cols)
    rows = []
    if "numerai_corr" in only:
        ours, base = bench_numerai_corr(size, data, baseline_eras)
        rows.append({"kernel": "numerai_corr", "eraflow_s": ours, "baseline_s": base, "goal": 30,
                     "baseline": "numerai-tools per era"})
    if "neutralize" in only:
        ours, base, (rate, gemm_rate) = bench_neutralize(size, data, baseline_eras)
        rows.append({"kernel": "neutralize", "eraflow_s": ours, "baseline_s": base, "goal": 10,
                     "baseline": "numerai-tools per era", "gflops": rate, "gemm_gflops": gemm_rate})
    if "rank" in only:
        ours, base = bench_rank(size, data)
        rows.append({"kernel": "rank", "eraflow_s": ours, "baseline_s": base, "goal": 5,
                     "baseline": "pandas groupby(era).rank"})
    for row in rows:
        row["ratio"] = row["baseline_s"] / row["eraflow_s"]
    return rows
