"""``eraflow bench``: speed of eraflow against the usual baselines, measured in the same run."""

from __future__ import annotations

import click

from eraflow.engine.errors import InputError
from eraflow.kernels.backend import resolve_backend

from .options import json_option, print_json


@click.group()
def bench():
    """Benchmarks that print ratios against baselines measured in the same run.

    \b
    Example:
      eraflow bench kernels --eras 600 --rows 5000 --features 500
    """


@bench.command()
@click.option("--eras", type=int, default=600, show_default=True)
@click.option("--rows", type=int, default=5000, show_default=True, help="Rows per era.")
@click.option("--features", type=int, default=500, show_default=True)
@click.option("--cols", type=int, default=1, show_default=True, help="Prediction columns.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs; medians are reported.")
@click.option("--baseline-eras", type=int, default=40, show_default=True,
              help="Eras the numerai-tools baselines run on (their time is scaled to all eras).")
@click.option("--only", type=click.Choice(["numerai_corr", "neutralize", "rank"]), multiple=True)
@click.option("--backend", type=click.Choice(["numba", "cupy"]), default="numba", show_default=True,
              help="Backend timed; cupy (a GPU) is also timed against numba.")
@json_option
def kernels(eras, rows, features, cols, repeats, baseline_eras, only, backend, as_json):
    """numerai_corr, neutralize and rank against numerai-tools per era and pandas groupby.

    Checks every result against its baseline, then prints medians and ratios. Needs the dev
    extra (pandas, numerai-tools). Run it on an otherwise idle machine. With --backend cupy,
    times include copying to and from the GPU.

    \b
    Example:
      eraflow bench kernels --eras 100 --rows 2000 --features 200 --only neutralize
      eraflow bench kernels --backend cupy --cols 10
    """
    try:
        from eraflow.engine.evaluation.kernel_bench import KERNELS, BenchSize, run_kernel_bench
    except ImportError as exc:
        raise InputError(f"eraflow bench needs the dev extra ({exc.name} is missing): pip install 'eraflow[dev]'") from None
    if min(eras, rows, features, cols, repeats, baseline_eras) < 1:
        raise InputError("sizes must be positive")
    if backend == "cupy":
        resolve_backend("cupy")  # a one-line error when no GPU answers
    size = BenchSize(eras, rows, features, cols, repeats, baseline_eras, backend)
    results = run_kernel_bench(size, only or KERNELS)
    if as_json:
        print_json(results)
        return
    click.echo(f"{eras} eras × {rows} rows, {features} features, {cols} prediction column(s), {backend}; "
               f"numerai-tools timed on {min(eras, baseline_eras)} eras and scaled")
    click.echo(f"{'kernel':<14}{'eraflow s':>11}{'baseline s':>12}{'ratio':>9}{'goal':>7}  baseline")
    for r in results:
        click.echo(f"{r['kernel']:<14}{r['eraflow_s']:>11.3f}{r['baseline_s']:>12.3f}{r['ratio']:>8.1f}×"
                   f"{str(r['goal']) + '×':>7}  {r['baseline']}")
        if "numba_s" in r:
            goal = f" (goal {r['numba_goal']}×)" if r["numba_goal"] else ""
            click.echo(f"{'':<14}{r['backend']} vs numba ({r['numba_s']:.3f} s): {r['numba_ratio']:.1f}×{goal}")
        if "gflops" in r:
            click.echo(f"{'':<14}neutralize runs at {r['gflops']:.0f} GFLOP/s (2·n·(k+1)² per era); float32 GEMM "
                       f"F1ᵀF1 of one era: {r['gemm_gflops']:.0f} GFLOP/s ({r['gflops'] / r['gemm_gflops']:.2f}×)")
