"""LightGBM's OpenCL learner (``--device gpu``) run for real on an OpenCL CPU runtime (PoCL, which
``.ci/run`` installs), and ``--device auto``, which must never pick a CPU OpenCL device.

Tests marked ``opencl`` skip without an OpenCL device; the device choice itself is also tested with
the discovery and the probes replaced, so it is checked on every machine."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import InputError, SynthSpec
from eraflow.engine.models import lgbm, opencl
from eraflow.engine.models.opencl import OpenCLDevice, boost_default_device, lightgbm_opencl_device, type_name
from eraflow.engine.models.params import DeviceChoice
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, train_models

from .conftest import synthetic_store

DEVICES = opencl.opencl_devices()
opencl_only = pytest.mark.skipif(not DEVICES, reason="no OpenCL device (apt-get install pocl-opencl-icd)")
cpu_opencl_only = pytest.mark.skipif(not DEVICES or any(d.is_gpu for d in DEVICES),
                                     reason="needs OpenCL devices that are all CPUs (PoCL)")
PARAMS = 'n_estimators = 20\nlearning_rate = 0.1\nnum_leaves = 7\ncolsample_bytree = 1.0\n'
CPU = OpenCLDevice(0, 0, "Portable Computing Language", "pthread-cpu", "AuthenticAMD", "cpu")
GPU = OpenCLDevice(1, 0, "NVIDIA CUDA", "NVIDIA H200", "NVIDIA Corporation", "gpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny store (620 rows × 20 features) trained by the CLI on cpu, gpu and auto (20 trees each):
    ``{device: (CLI result, model directory)}`` and the store. The first OpenCL compile costs seconds."""
    if not DEVICES:
        pytest.skip("no OpenCL device (apt-get install pocl-opencl-icd)")
    root = tmp_path_factory.mktemp("opencl")
    store = synthetic_store(root, SynthSpec(eras=20, rows_per_era=30, features=20, targets=1, seed=3))
    (root / "params.toml").write_text(PARAMS)
    runs = {}
    for device in ("cpu", "gpu", "auto"):
        out = root / f"m_{device}"
        runs[device] = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(out), "--params",
                                                str(root / "params.toml"), "--device", device, "-q"]), out
        assert runs[device][0].exit_code == 0, runs[device][0].output
    return runs, store


def model_json(out) -> dict:
    return json.loads((out / "model.json").read_text())


def predictions(out, store) -> np.ndarray:
    return np.asarray(predict_table(load_model(out), store).columns["pred_target"])


# --- the OpenCL learner, for real ---------------------------------------------------------------------


@opencl_only
def test_gpu_learner_predicts_as_the_cpu_learner(trained):
    """Guards against --device gpu training something else than the CPU learner (or not on OpenCL at all).

    The OpenCL learner sums histograms in float32 (``gpu_use_dp`` false), the CPU learner in float64:
    on 620 rows the sums agree to ~1e-7 relative, so every split is the same and leaf values differ by
    ~1e-9 (measured 4e-9 against a prediction std of 0.023). A split chosen differently moves
    predictions by ~1e-3, so 1e-5 tells the two apart; not bit-identical shows OpenCL computed it."""
    runs, store = trained
    cpu, gpu = predictions(runs["cpu"][1], store), predictions(runs["gpu"][1], store)
    assert "[device_type: gpu]" in (runs["gpu"][1] / "model_target.txt").read_text()
    assert np.corrcoef(cpu, gpu)[0, 1] >= 0.999
    assert 0 < np.abs(cpu - gpu).max() <= 1e-5, np.abs(cpu - gpu).max()


@opencl_only
def test_gpu_names_the_opencl_device_in_the_output_and_model_json(trained):
    runs, _ = trained
    result, out = runs["gpu"]
    chosen = lightgbm_opencl_device({})
    assert model_json(out)["device"] == "gpu"
    assert model_json(out)["device_choice"] == {"requested": "gpu", "device": "gpu", "name": chosen.describe()}
    assert f"on gpu ({chosen.describe()}) in " in result.stdout


@cpu_opencl_only
def test_gpu_on_a_cpu_opencl_device_trains_but_warns_once(trained):
    """Guards against --device gpu on PoCL running several times slower than the CPU learner unannounced."""
    result = trained[0]["gpu"][0]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: --device gpu")]
    assert len(warnings) == 1, result.stderr
    assert "not a GPU" in warnings[0] and "--device cpu" in warnings[0] and DEVICES[0].name in warnings[0]
    assert "--device gpu" not in trained[0]["cpu"][0].stderr + trained[0]["auto"][0].stderr


@cpu_opencl_only
def test_auto_on_a_cpu_only_opencl_machine_picks_cpu_and_says_why(trained):
    """The bug of issue 16: auto chose PoCL's CPU device (LightGBM's own probe cannot tell its type)."""
    runs, store = trained
    result, out = runs["auto"]
    choice = model_json(out)["device_choice"]
    assert model_json(out)["device"] == "cpu" and choice["requested"] == "auto" and choice["device"] == "cpu"
    assert "no GPU" in choice["why"] and DEVICES[0].name in choice["why"]
    assert "on cpu (no GPU: " in result.stdout
    assert "[device_type: cpu]" in (out / "model_target.txt").read_text()
    np.testing.assert_array_equal(predictions(out, store), predictions(runs["cpu"][1], store))


@opencl_only
def test_auto_trains_on_an_opencl_device_of_gpu_type(trained, tmp_path, monkeypatch):
    """Discovery says LightGBM's device is a GPU: auto trains with the OpenCL learner (here on PoCL) and
    records the device's name."""
    runs, store = trained
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: GPU)
    result = train_models(store, tmp_path / "m", TrainConfig(params={**lgbm.KIND.check_settings(None),
                                                                     "n_estimators": 20, "learning_rate": 0.1,
                                                                     "num_leaves": 7, "colsample_bytree": 1.0},
                                                             device="auto"))
    assert result.device == "gpu" and result.device_choice == DeviceChoice("gpu", "auto", GPU.describe())
    assert model_json(tmp_path / "m")["device_choice"]["name"] == "NVIDIA H200 (OpenCL gpu, NVIDIA CUDA)"
    assert "[device_type: gpu]" in (tmp_path / "m" / "model_target.txt").read_text()
    np.testing.assert_allclose(predictions(tmp_path / "m", store), predictions(runs["gpu"][1], store), atol=1e-5)


@opencl_only
@pytest.mark.skipif(shutil.which("clinfo") is None, reason="clinfo is not installed")
def test_discovery_finds_the_devices_clinfo_lists():
    """Independent oracle: ``clinfo -l`` lists the devices' names (through the system's ICD loader, whose
    platform order may differ from the one LightGBM links in: compared as sorted lists)."""
    listing = subprocess.run(["clinfo", "-l"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":", 1)[1].strip() for line in listing.splitlines() if "Device #" in line]
    assert sorted(d.name for d in DEVICES) == sorted(names)
    assert all(d.type in ("gpu", "cpu", "accelerator", "other") for d in DEVICES)


# --- the choice of device, discovery and probes replaced -----------------------------------------------


def fake_probes(monkeypatch, works: set[str]) -> list[str]:
    """Probes that pass for the devices in ``works`` and fail as LightGBM does for the others; the
    devices probed, in order."""
    probed = []

    def probe(params):
        probed.append(params["device_type"])
        if params["device_type"] not in works:
            raise InputError(f"--device {params['device_type']}: not here")

    monkeypatch.setattr(lgbm, "probe_params", probe)
    return probed


def test_auto_picks_an_opencl_gpu_and_names_it(monkeypatch):
    probed = fake_probes(monkeypatch, {"cpu", "gpu"})
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: GPU)
    assert lgbm.choose_lightgbm_device("auto", {}) == DeviceChoice("gpu", "auto", GPU.describe())
    assert probed == ["cuda", "gpu"]


def test_auto_never_picks_a_cpu_opencl_device_even_when_its_learner_runs(monkeypatch):
    probed = fake_probes(monkeypatch, {"cpu", "gpu"})
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: CPU)
    choice = lgbm.choose_lightgbm_device("auto", {})
    assert choice.device == "cpu" and "no GPU" in choice.why and "pthread-cpu (OpenCL cpu" in choice.why
    assert probed == ["cuda", "cpu"], "the slow OpenCL learner is not even probed"


def test_auto_prefers_the_cuda_learner_when_it_trains(monkeypatch):
    fake_probes(monkeypatch, {"cpu", "gpu", "cuda"})
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: GPU)
    monkeypatch.setattr(lgbm, "cuda_device_name", lambda ordinal: f"NVIDIA H200 #{ordinal}")
    assert lgbm.choose_lightgbm_device("auto", {"gpu_device_id": 1}) == \
        DeviceChoice("cuda", "auto", "NVIDIA H200 #1 (CUDA)")


@pytest.mark.parametrize("found,why", [(None, "no OpenCL or CUDA device found"),
                                       (GPU, "LightGBM's OpenCL learner failed on NVIDIA H200")])
def test_auto_falls_back_to_cpu_and_says_why(monkeypatch, found, why):
    fake_probes(monkeypatch, {"cpu"})
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: found)
    choice = lgbm.choose_lightgbm_device("auto", {})
    assert choice.device == "cpu" and choice.why.startswith(why)
    assert choice.record() == {"requested": "auto", "device": "cpu", "why": choice.why}


def test_gpu_on_a_gpu_device_does_not_warn(monkeypatch, caplog):
    fake_probes(monkeypatch, {"gpu"})
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: GPU)
    assert lgbm.choose_lightgbm_device("gpu", {}) == DeviceChoice("gpu", "gpu", GPU.describe())
    assert not caplog.records
    monkeypatch.setattr(lgbm, "lightgbm_opencl_device", lambda params: CPU)
    assert lgbm.choose_lightgbm_device("gpu", {}).device == "gpu"
    assert [r.getMessage() for r in caplog.records] == [
        "--device gpu: LightGBM's OpenCL device is pthread-cpu (OpenCL cpu, Portable Computing Language), not a GPU: "
        "it trains slower than --device cpu (LightGBM's CPU learner)"]


def test_bad_parameters_fail_on_the_device_chosen(monkeypatch):
    """auto still checks the parameters: a bad one is refused, not hidden by the fallback to cpu."""
    with pytest.raises(InputError, match="LightGBM refused the parameters"):
        lgbm.choose_lightgbm_device("auto", {"num_leaves": -3, "verbosity": -1})


# --- LightGBM's rule for its OpenCL device (Boost.Compute's default device) ----------------------------


def test_lightgbm_takes_the_first_gpu_then_the_first_cpu(monkeypatch):
    for name in opencl.BOOST_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    accel = OpenCLDevice(2, 0, "FPGA", "fpga", "X", "accelerator")
    assert lightgbm_opencl_device({}, (CPU, GPU)) == GPU
    assert lightgbm_opencl_device({}, (accel, CPU)) == CPU
    assert lightgbm_opencl_device({}, (accel,)) == accel
    assert lightgbm_opencl_device({}, ()) is None


def test_lightgbm_takes_the_platform_and_device_asked_when_they_exist(monkeypatch):
    for name in opencl.BOOST_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    assert lightgbm_opencl_device({"gpu_platform_id": 0, "gpu_device_id": 0}, (CPU, GPU)) == CPU
    assert lightgbm_opencl_device({"gpu_platform_id": 0}, (CPU, GPU)) == GPU, "both ids or neither"
    assert lightgbm_opencl_device({"gpu_platform_id": 5, "gpu_device_id": 0}, (CPU, GPU)) == GPU, "out of range"


@pytest.mark.parametrize("env,expected", [
    ({"BOOST_COMPUTE_DEFAULT_DEVICE_TYPE": "CPU"}, CPU),
    ({"BOOST_COMPUTE_DEFAULT_PLATFORM": "Portable"}, CPU),
    ({"BOOST_COMPUTE_DEFAULT_VENDOR": "NVIDIA"}, GPU),
    ({"BOOST_COMPUTE_DEFAULT_DEVICE": "no such device"}, GPU),  # no match: the usual rule
])
def test_boost_compute_environment_variables_choose_the_device(env, expected):
    assert boost_default_device((CPU, GPU), env) == expected


@pytest.mark.parametrize("bits,name", [(4, "gpu"), (2, "cpu"), (8, "accelerator"), (4 | 1, "gpu"), (1, "other"),
                                       (16, "other")])
def test_device_type_bits(bits, name):
    assert type_name(bits) == name


def test_no_opencl_loader_means_no_devices(monkeypatch):
    monkeypatch.setattr(opencl, "library_names", lambda: ["/nonexistent/libOpenCL.so.1"])
    assert opencl.opencl_devices.__wrapped__() == ()
