"""``eraflow bench kernels`` on tiny sizes: its rows, ratios and goals, and another backend's
comparison with numba (the numpy backend stands in for a GPU here)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine.evaluation.kernel_bench import GOALS, KERNELS, BenchSize, run_kernel_bench
from eraflow.kernels.backend import gpu_available

TINY = ["--eras", "4", "--rows", "60", "--features", "8", "--cols", "2", "--repeats", "1", "--baseline-eras", "2"]


def test_rows_carry_medians_ratios_and_the_numba_goals():
    out = CliRunner().invoke(cli, ["bench", "kernels", *TINY, "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["kernel"] for r in rows] == list(KERNELS)
    for r in rows:
        assert r["backend"] == "numba" and "numba_s" not in r
        assert r["eraflow_s"] > 0 and r["baseline_s"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_s"] / r["eraflow_s"])
        assert r["goal"] == GOALS["numba"][r["kernel"]][0]
    assert rows[1]["gflops"] > 0 and rows[1]["gemm_gflops"] > 0


def test_another_backend_is_timed_against_numba_too():
    (row,) = run_kernel_bench(BenchSize(4, 60, 8, 2, 1, 2, backend="numpy"), ["neutralize"])
    assert row["backend"] == "numpy" and row["numba_s"] > 0
    assert row["numba_ratio"] == pytest.approx(row["numba_s"] / row["eraflow_s"])
    assert "gflops" not in row  # the CPU GEMM rate is a numba comparison only


@pytest.mark.skipif(gpu_available(), reason="a GPU answered")
def test_cupy_without_a_gpu_is_a_one_line_error():
    out = CliRunner().invoke(cli, ["bench", "kernels", *TINY, "--backend", "cupy"])
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.startswith("error: backend 'cupy' needs CuPy") and len(out.stderr.splitlines()) == 1
