"""eraflow export --check: the pickle run in Numerai's model-upload runtime (its Python and pins, no eraflow).

The runtime venv is built once (about 40 s, network to PyPI) under pytest's temporary root, shared
by later runs of the suite; :func:`check_exported` runs the check for any model directory (tests
of other kinds call it with the :func:`runtime_root` fixture).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.errors import InputError
from eraflow.engine.models.predict import load_model
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.engine.numerai import runtime
from eraflow.engine.numerai.export import export_model
from eraflow.engine.numerai.runtime import (
    LIMIT_BYTES,
    PINS,
    RuntimeBuildError,
    check_pickle,
    compare_predictions,
    limit_checks,
    pickle_needs,
    runtime_venv,
)
from tests.test_train import FAST

from .conftest import RUNNING_PYTHON as RUNNING
from .conftest import check_exported

OTHER = "3.12" if RUNNING == "3.11" else "3.11"
FEATURES = ["feature_a", "feature_b"]
CHECKS = ["load", "predict", "answer", "agree", "time", "memory"]


@pytest.fixture(scope="module")
def model_dir(store_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("runtime") / "model"
    train_models(open_store(store_path), out, TrainConfig(targets=("target", "target_*_20"), params=FAST))
    return out


def venv_python(root: Path) -> str:
    return str(runtime_venv(RUNNING, root=root) / "bin" / "python")


def test_runtime_venv_has_the_images_pins_and_no_eraflow(runtime_root):
    code = ("import importlib.metadata as m, json, sys; import xgboost, lightgbm, numpy;"
            "print(json.dumps({'versions': {d: m.version(d) for d in sys.argv[1:]}, 'xgboost': xgboost.__version__,"
            "'eraflow': __import__('importlib.util').util.find_spec('eraflow') is not None}))")
    done = subprocess.run([venv_python(runtime_root), "-I", "-c", code, *PINS[RUNNING]], capture_output=True,
                          text=True, check=True, cwd="/")
    got = json.loads(done.stdout)
    assert got["versions"] == PINS[RUNNING]
    assert got["xgboost"] == PINS[RUNNING]["xgboost-cpu"]  # xgboost-cpu is the `xgboost` module
    assert got["eraflow"] is False


def test_lgbm_export_passes_in_numerais_runtime_on_live_data(model_dir, synth_dir, runtime_root, tmp_path):
    result = check_exported(model_dir, tmp_path / "model.pkl", runtime_root, live=synth_dir / "live.parquet")
    assert result.passed, result.reason
    live_rows = len(pd.read_parquet(synth_dir / "live.parquet", columns=["era"]))
    assert result.rows == live_rows
    assert [c.name for c in result.checks] == CHECKS
    assert re.fullmatch(r"predictions equal eraflow's to 1e-9 \(max \|diff\| (0|\de-\d+)\)", result.checks[3].detail)
    assert 0 < result.seconds < 600 and 50 * 2**20 < result.peak_bytes < LIMIT_BYTES
    assert " s on 1 CPU (limit 600 s)" in result.checks[4].detail
    assert result.checks[0].detail.startswith(f"pd.read_pickle under Python {RUNNING}.")
    assert (tmp_path / "model.pkl").is_file()


def test_group_stats_model_passes_in_numerais_runtime(store_path, synth_dir, runtime_root, tmp_path):
    """The statistics are computed in the runtime's pins (its pandas and NumPy) from live data that lacks them."""
    import shutil

    from eraflow.engine.data.derived import GROUP_STATS, add_group_stats

    store = shutil.copytree(store_path, tmp_path / "store")
    add_group_stats(store)
    out = tmp_path / "model"
    train_models(open_store(store), out, TrainConfig(feature_set=f"small+{GROUP_STATS}", params=FAST))
    assert load_model(out).meta["derived"][GROUP_STATS]["features"]
    result = check_exported(out, tmp_path / "model.pkl", runtime_root, live=synth_dir / "live.parquet")
    assert result.passed, result.reason
    assert [c.name for c in result.checks] == CHECKS


def test_era_boosted_lgbm_passes_in_numerais_runtime(store_path, synth_dir, runtime_root, tmp_path):
    """An era-boosted model is one booster of all its trees: the runtime's LightGBM predicts it as eraflow does."""
    out = tmp_path / "model"
    boost = {"era_boost_steps": 2, "era_boost_proportion": 0.5, "era_boost_trees": 5}
    train_models(open_store(store_path), out, TrainConfig(params={**FAST, "n_estimators": 20, **boost}))
    assert len(load_model(out).meta["fitted"]["target"]["era_boost"]["per_step"]) == 2
    result = check_exported(out, tmp_path / "model.pkl", runtime_root, live=synth_dir / "live.parquet")
    assert result.passed, result.reason
    assert [c.name for c in result.checks] == CHECKS


def test_cli_export_check_prints_each_check_and_writes_the_pickle(model_dir, runtime_root, tmp_path):
    out = tmp_path / "model.pkl"
    result = CliRunner(env={"XDG_CACHE_HOME": str(runtime_root.parent)}).invoke(
        cli, ["export", str(model_dir), "-o", str(out), "--check", "--runtime", RUNNING])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[:2] for line in lines[:6]] == [[n, "pass"] for n in CHECKS]
    assert "7,000 rows, 1 era(s)" in lines[1] and "predictions equal eraflow's to 1e-9 (max |diff| " in lines[3]
    assert lines[-1].startswith(f"wrote {out}") and out.is_file()


def test_cli_export_check_failing_in_the_runtime_exits_2_and_writes_nothing(model_dir, runtime_root, tmp_path):
    live = tmp_path / "live.parquet"
    pd.DataFrame({"id": ["a", "b"], "era": ["X", "X"], "feature_zzz": [1, 2]}).to_parquet(live)
    out = tmp_path / "model.pkl"
    result = CliRunner(env={"XDG_CACHE_HOME": str(runtime_root.parent)}).invoke(
        cli, ["export", str(model_dir), "-o", str(out), "--live", str(live)])
    assert result.exit_code == 2
    assert "predict FAIL  predict raised KeyError" in " ".join(result.output.split("\n")[1].split(" ", 1))
    assert "fails in Numerai's Python" in result.output and "nothing written" in result.output
    assert not out.exists()


def test_export_is_refused_under_another_python_than_the_runtimes(model_dir, tmp_path):
    with pytest.raises(InputError, match=rf"runs under Python {RUNNING} .* run eraflow under Python {OTHER}, "
                                         rf"or pass --runtime {RUNNING}"):
        export_model(load_model(model_dir), tmp_path / "model.pkl", runtime=OTHER)
    result = CliRunner().invoke(cli, ["export", str(model_dir), "-o", str(tmp_path / "m.pkl"), "--runtime", OTHER])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.pkl").exists() and not (tmp_path / "model.pkl").exists()
    result = CliRunner().invoke(cli, ["export", str(model_dir), "-o", str(tmp_path / "m.pkl"), "--runtime", "3.9"])
    assert result.exit_code == 2 and "'3.9' is not one of" in result.output


# -- predictors Numerai would reject ---------------------------------------------------------


def ranked(live_features):
    return pd.DataFrame({"prediction": np.linspace(0.1, 0.9, len(live_features))}, index=live_features.index)


def returns_series(live_features, live_benchmark_models):
    return ranked(live_features)["prediction"]


class Frame(pd.DataFrame):
    pass


def returns_subclass(live_features, live_benchmark_models):
    return Frame(ranked(live_features))


def returns_nan(live_features, live_benchmark_models):
    out = ranked(live_features)
    out.iloc[3, 0] = np.nan
    return out


def returns_outside(live_features, live_benchmark_models):
    return ranked(live_features) * 2


def returns_other_index(live_features, live_benchmark_models):
    return ranked(live_features).reset_index(drop=True)


def raises(live_features, live_benchmark_models):
    return 1 / 0


def kills_itself(live_features, live_benchmark_models):
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would


def allocates_800_mib(live_features):
    np.ones(100 * 2**20).sum()  # 800 MiB of float64, every page touched
    return ranked(live_features)


def three_arguments(live_features, live_benchmark_models, extra):
    return ranked(live_features)


def sleeps(live_features):
    time.sleep(30)


def one_argument(live_features):
    return ranked(live_features)


def two_arguments(live_features, live_benchmark_models):
    if not live_benchmark_models.index.equals(live_features.index):  # no assert: pytest rewrites it
        raise ValueError("the benchmarks are not indexed like the live features")
    return ranked(live_features)


ERAFLOWS_NUMPY = np.__version__  # pickled by value: the version of the process that made the pickle


def reversed_under_another_numpy(live_features):
    """Ranks reversed where NumPy is not eraflow's: a library difference that reorders predictions."""
    out = ranked(live_features)
    return out if np.__version__ == ERAFLOWS_NUMPY else out.iloc[::-1].set_axis(out.index)


def moved_without_a_gpu(live_features):
    """One prediction moved by 1e-6 where CUDA_VISIBLE_DEVICES is "" (the runtime process only)."""
    out = ranked(live_features)
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        out.iloc[17, 0] += 1e-6
    return out


def noise_under_another_numpy(live_features):
    """Float noise of 1e-12 where NumPy is not eraflow's: under the tolerance."""
    return ranked(live_features) + (0.0 if np.__version__ == ERAFLOWS_NUMPY else 1e-12)


def raises_in_eraflows_process(live_features):
    if np.__version__ == ERAFLOWS_NUMPY:
        raise RuntimeError("only here")
    return ranked(live_features)


def pickled(function, path: Path) -> Path:
    """``function`` cloudpickled by value (the runtime has neither eraflow nor this test module)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        path.write_bytes(cloudpickle.dumps(function))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return path


@pytest.mark.parametrize("function, check, reason", [
    (returns_series, "answer", "it returned pandas.core.series.Series, not exactly a pandas DataFrame"),
    (returns_subclass, "answer", "Frame, not exactly a pandas DataFrame"),
    (returns_nan, "answer", "it returned NaN predictions"),
    (returns_outside, "answer", r"not all in \[0, 1\] \(min 0.2, max 1.8\)"),
    (returns_other_index, "answer", "not indexed like the 7000 live rows"),
    (raises, "predict", "predict raised ZeroDivisionError: division by zero"),
    (three_arguments, "predict", "predict takes 3 arguments; Numerai passes 1 or 2"),
    (kills_itself, "predict", "the runtime process was killed by signal 9"),
])
def test_a_predictor_numerai_would_reject_fails_the_check_with_the_reason(function, check, reason, runtime_root,
                                                                          tmp_path):
    result = check_pickle(pickled(function, tmp_path / "m.pkl"), RUNNING, FEATURES, root=runtime_root)
    assert not result.passed
    failed = [c for c in result.checks if c.passed is False]
    assert [c.name for c in failed] == [check]
    assert result.reason.startswith(f"{check}: ")
    assert re.search(reason, failed[0].detail), failed[0].detail


@pytest.mark.parametrize("function, reason", [
    (reversed_under_another_numpy, r"7,000 of 7,000 predictions differ from eraflow's by more than 1e-9; most at "
                                   r"id n0000000: 0\.9 in the runtime, 0\.1 in eraflow's Python"),
    (moved_without_a_gpu, r"1 of 7,000 predictions differ from eraflow's by more than 1e-9; most at id n0000017: "
                          r"0\.10194\d* in the runtime, 0\.10194\d* in eraflow's Python"),
    (raises_in_eraflows_process, "in eraflow's Python the pickle raised RuntimeError: only here"),
])
def test_predictions_differing_from_eraflows_fail_the_agree_check(function, reason, runtime_root, tmp_path,
                                                                  monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert np.__version__ != PINS[RUNNING]["numpy"]  # else the NumPy-dependent predictors agree
    result = check_pickle(pickled(function, tmp_path / "m.pkl"), RUNNING, FEATURES, root=runtime_root)
    assert [c.passed for c in result.checks] == [True, True, True, False, True, True], result.reason
    assert result.reason.startswith("agree: ")
    assert re.fullmatch(reason, result.checks[3].detail), result.checks[3].detail


def test_float_noise_under_the_tolerance_agrees_and_is_reported(runtime_root, tmp_path):
    result = check_pickle(pickled(noise_under_another_numpy, tmp_path / "m.pkl"), RUNNING, FEATURES, root=runtime_root)
    assert result.passed, result.reason
    assert result.checks[3].detail == "predictions equal eraflow's to 1e-9 (max |diff| 1e-12)"


def test_compare_predictions_names_the_row_that_differs_most():
    ours = np.array([[0.1], [0.5], [0.9]])
    assert compare_predictions(ours.copy(), ours, ["a", "b", "c"]).detail.endswith("(max |diff| 0)")
    moved = ours + np.array([[0.0], [2e-9], [-3e-9]])
    got = compare_predictions(moved, ours, ["a", "b", "c"])
    assert not got.passed and got.detail.startswith("2 of 3 predictions differ") and "most at id c: 0.9 " in got.detail
    assert "most at id b: 0.5 in the runtime, nan in" in compare_predictions(ours, np.array([[.1], [np.nan], [.9]]),
                                                                              ["a", "b", "c"]).detail
    assert compare_predictions(ours, ours[:2], ["a", "b"]).detail == ("the runtime answered (3, 1) values (rows, "
                                                                       "columns), eraflow's Python (2, 1)")


@pytest.mark.parametrize("function", [one_argument, two_arguments])
def test_predict_is_called_with_one_or_two_arguments_by_its_signature(function, runtime_root, tmp_path):
    result = check_pickle(pickled(function, tmp_path / "m.pkl"), RUNNING, FEATURES, root=runtime_root)
    assert result.passed, result.reason
    assert result.checks[1].detail.startswith(f"{function.__code__.co_argcount} argument(s), 7,000 rows")


def test_peak_memory_is_the_runtime_process_own(runtime_root, tmp_path):
    small = check_pickle(pickled(one_argument, tmp_path / "s.pkl"), RUNNING, FEATURES, root=runtime_root)
    large = check_pickle(pickled(allocates_800_mib, tmp_path / "l.pkl"), RUNNING, FEATURES, root=runtime_root)
    assert large.passed, large.reason
    assert small.peak_bytes < 400 * 2**20 and 800 * 2**20 < large.peak_bytes < 1200 * 2**20


def test_a_pickle_needing_eraflow_fails_to_load(runtime_root, tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(cloudpickle.dumps(load_model))  # by reference: the runtime has no eraflow
    result = check_pickle(path, RUNNING, FEATURES, root=runtime_root)
    assert result.reason == "load: loading the pickle raised ModuleNotFoundError: No module named 'eraflow'"
    assert [c.passed for c in result.checks[:4]] == [False, None, None, None]


def test_a_predictor_past_the_time_limit_is_killed_and_fails(runtime_root, tmp_path):
    result = check_pickle(pickled(sleeps, tmp_path / "m.pkl"), RUNNING, FEATURES, root=runtime_root, timeout=3)
    assert result.seconds < 20
    assert result.reason == "predict: killed after the 3 s limit"
    assert [c.passed for c in result.checks] == [True, False, None, None, False, True]


def test_limits_compare_time_and_peak_memory_with_numerais():
    assert [c.passed for c in limit_checks(599.0, LIMIT_BYTES, 600)] == [True, True]
    assert [c.passed for c in limit_checks(601.0, LIMIT_BYTES + 1, 600)] == [False, False]
    assert limit_checks(1.0, LIMIT_BYTES + 2**20, 600)[1].detail == "peak 4.00 GiB (limit 4.00 GiB)"
    assert limit_checks(1.0, None, 600)[1].passed is None


# -- the venv: found Python, optional libraries, one build at a time --------------------------


def test_a_missing_python_for_the_runtime_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeBuildError, match=rf"no Python {OTHER} found \(python{OTHER} on PATH\)"):
        runtime_venv(OTHER, root=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_torch_is_needed_only_when_the_pickle_names_it(tmp_path):
    def uses_torch(live_features):
        import torch
        return torch

    assert pickle_needs(pickled(uses_torch, tmp_path / "t.pkl")) == {"torch"}
    assert pickle_needs(pickled(one_argument, tmp_path / "o.pkl")) == set()
    assert runtime.runtime_pins("3.11", {"torch"}) == sorted([*runtime.runtime_pins("3.11"), "torch==2.8.0"])
    with pytest.raises(InputError, match="unknown optional runtime library 'tensorflow'"):
        runtime.runtime_pins("3.11", {"tensorflow"})


def test_two_processes_asking_for_the_venv_build_it_once(monkeypatch, tmp_path):
    builds = []

    def fake_build(python, pins, dest, runtime_name):
        builds.append(dest)
        time.sleep(0.3)
        dest.mkdir()
        (dest / "eraflow-pins.txt").write_text("\n".join(pins))

    monkeypatch.setattr(runtime, "build_venv", fake_build)
    stale = tmp_path / f".{runtime.venv_dir(RUNNING, runtime.runtime_pins(RUNNING), tmp_path).name}.tmp-1"
    stale.mkdir()
    got, told = [], []
    threads = [threading.Thread(target=lambda: got.append(runtime_venv(RUNNING, root=tmp_path, progress=told.append)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and got == [builds[0]] * 2
    assert told == [f"building Numerai's Python {RUNNING} runtime in {builds[0]} (once; about a minute)"]
    assert not stale.exists()



def test_a_missing_live_file_is_a_one_line_error_and_nothing_is_written(model_dir, tmp_path):
    out = tmp_path / "model.pkl"
    result = CliRunner().invoke(cli, ["export", str(model_dir), "-o", str(out), "--live", str(tmp_path / "no.parquet")])
    assert result.exit_code == 2 and "no.parquet is not a file; give the live parquet file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
