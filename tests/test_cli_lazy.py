"""The command line loads only what a command needs; shared options and error handling of the group."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from eraflow.cli.main import COMMANDS, COMPUTE, cli

HEAVY = ("lightgbm", "sklearn", "matplotlib", "xgboost", "torch", "duckdb")


def _modules_after(args: list[str], cwd) -> set[str]:
    """Top-level modules imported by a fresh interpreter running ``eraflow ARGS``."""
    code = ("import sys, json\nfrom eraflow.cli.main import cli\ncli.main(%r)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))" % (args,))
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_imports_no_engine_library(tmp_path):
    loaded = _modules_after(["--help"], tmp_path)
    assert not loaded & {*HEAVY, "polars", "numba", "pyarrow", "numpy"}, loaded & {*HEAVY, "polars", "numba"}


def test_ingest_imports_no_model_library(synth_dir, tmp_path):
    loaded = _modules_after(["ingest", str(synth_dir / "live.parquet"), str(tmp_path / "s"), "-q"], tmp_path)
    assert (tmp_path / "s" / "meta.json").exists()
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_short_help_is_the_commands_own(name):
    command = cli.get_command(click.Context(cli), name)
    assert command.get_short_help_str(limit=1000) == COMMANDS[name][2]


def test_help_lists_every_command_in_journey_order():
    out = CliRunner().invoke(cli, ["--help"]).output
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMPUTE))
def test_compute_commands_take_threads(name):
    out = CliRunner().invoke(cli, [name, "--help"]).output
    assert "--threads" in out


def test_threads_reach_the_process_settings(synth_dir, tmp_path):
    code = ("import os\nfrom eraflow.cli.main import cli\nfrom eraflow.engine.threads import configured_threads\n"
            f"cli.main(['ingest', {str(synth_dir / 'live.parquet')!r}, {str(tmp_path / 's')!r}, '-q', '--threads', '1'])\n"
            "import numba\nprint(configured_threads(), os.environ['OMP_NUM_THREADS'], numba.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1].split() == ["1", "1", "1"]


def test_negative_threads_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["info", str(tmp_path), "--threads", "-1"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["predict", "m", "s", "-o", "p.parquet", "--threads", "-1"])
    assert result.exit_code == 2 and "--threads" in result.stderr and len(result.stderr.splitlines()) == 1


class PanicException(BaseException):
    """Stands in for pyo3's PanicException, which polars raises on a Rust panic."""


def test_reader_panic_is_one_line_exit_2(monkeypatch, synth_dir, tmp_path):
    import eraflow.cli.data as data

    def panic(*_args, **_kwargs):
        raise PanicException("called `Result::unwrap()` on an `Err` value: OutOfSpec\nframe 1\nframe 2")

    monkeypatch.setattr(data, "plan_ingest", panic)
    result = CliRunner().invoke(cli, ["ingest", str(synth_dir / "live.parquet"), str(tmp_path / "s")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: a reader failed on the data (called `Result::unwrap()` on an `Err` value: OutOfSpec); "
        "the input file may be damaged"]


def test_library_error_is_one_line_exit_2(monkeypatch, synth_dir, tmp_path):
    import polars as pl

    import eraflow.cli.data as data

    def fail(*_args, **_kwargs):
        raise pl.exceptions.ComputeError("parquet: bad page header\ndetails")

    monkeypatch.setattr(data, "plan_ingest", fail)
    result = CliRunner().invoke(cli, ["ingest", str(synth_dir / "live.parquet"), str(tmp_path / "s")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: ComputeError: parquet: bad page header "
                                          "(a damaged or unexpected input?)"]


def test_library_warnings_print_as_warning_lines(monkeypatch, store_path):
    import eraflow.cli.data as data
    from eraflow.engine.notices import warn

    real = data.store_info

    def noisy(store):
        warn("the cache was rebuilt")
        return real(store)

    monkeypatch.setattr(data, "store_info", noisy)
    result = CliRunner().invoke(cli, ["info", str(store_path)])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == ["warning: the cache was rebuilt"]


def test_compiled_kernels_are_reused_by_the_next_process(tmp_path):
    """numba writes compiled kernels to a cache (NUMBA_CACHE_DIR here; in-tree or ~/.cache/numba
    otherwise): a second process loads them instead of compiling."""
    code = ("import numpy as np\nfrom eraflow.engine.data import codes\ncodes.to_codes(np.zeros((2, 2)))\n"
            "s = codes._codes_from_numbers.stats\nprint(sum(s.cache_hits.values()), sum(s.cache_misses.values()))")
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    first, second = (tuple(map(int, r.stdout.split())) for r in runs)
    assert first == (0, 1) and second == (1, 0)
