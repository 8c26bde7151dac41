"""benches/gpu_check.sh and benches/gpu_bench.py, checked where no GPU is: they run for real only on the
day a GPU is lent (a few minutes, once), so every part that can run without one runs here: the plan
(--dry-run), the list of GPU tests against the skip markers in tests/, the venv that must see its parent's
packages, offline installs from split xz packs of uncompressed wheels, the results file, and the training
bench's CPU-vs-device parity (LightGBM's OpenCL learner on PoCL stands in for a GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from eraflow.engine import SynthSpec
from tests.conftest import synthetic_store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benches" / "gpu_check.sh"
BENCH = ROOT / "benches" / "gpu_bench.py"
HAS_GPU = shutil.which("nvidia-smi") is not None
# A test file has a GPU-only path when it skips without CuPy/CUDA/OpenCL or parametrizes over the
# kernel backends (whose "cupy" case skips without a GPU).
GPU_ONLY = re.compile(r"skipif\(not (gpu_available|torch\.cuda\.is_available|DEVICES)|"
                      r"from tests\.test_kernels_cases import \(?[^)]*?\b(FAST_)?BACKENDS\b")


def check(*args: str, timeout: float = 120, tmp: Path | None = None) -> subprocess.CompletedProcess:
    """Run the script; with ``tmp``, its default work, stage and venv folders are made there ($TMPDIR)."""
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def dry_run() -> dict[str, str]:
    """The --dry-run plan as ``{first word: rest of the line}`` (steps keyed ``step NAME``)."""
    out = check("--dry-run")
    assert out.returncode == 0, out.stderr
    plan = {}
    for line in out.stdout.splitlines():
        key, _, rest = line.partition(": ")
        plan[" ".join(key.split()[:2]) if key.startswith("step") else key] = rest
    return plan


def gpu_tests(plan: dict[str, str]) -> tuple[str, list[str]]:
    """The -k expression and the files of the plan's ``tests:`` line."""
    match = re.fullmatch(r'-k "([^"]+)" (.+)', plan["tests"])
    assert match, plan["tests"]
    return match[1], match[2].split()


def test_the_script_is_valid_bash():
    """Guards against a syntax error that would only show on the GPU day."""
    out = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_dry_run_plans_every_step_and_names_the_results_file():
    plan = dry_run()
    assert re.fullmatch(r"benches/results/gpu-(<device>|[a-z0-9-]+)\.txt", plan["results"]), plan["results"]
    steps = [k.split()[1] for k in plan if k.startswith("step")]
    assert steps == ["device", "venv", "install", "env", "tests", "bench-kernels", "bench-train"]
    assert "--backend cupy" in plan["step bench-kernels"] and "gpu_bench.py train" in plan["step bench-train"]


def test_dry_run_with_lightgbm_cuda_adds_the_build_before_the_benchmarks():
    out = check("--dry-run", "--lightgbm-cuda")
    steps = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("step")]
    assert steps[-3:] == ["lightgbm-cuda", "bench-kernels", "bench-train"]


def test_every_gpu_test_file_exists_and_is_listed():
    """A new test with a GPU-only path must be in the script's list, or the GPU day never runs it."""
    _, files = gpu_tests(dry_run())
    assert all((ROOT / f).is_file() for f in files), files
    gpu_only = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")
                if p.name != "test_kernels_cases.py" and GPU_ONLY.search(p.read_text())}
    assert {"tests/test_kernels_backends.py", "tests/test_kind_nn.py", "tests/test_lightgbm_opencl.py"} <= gpu_only
    assert gpu_only <= set(files), f"not in GPU_TESTS of benches/gpu_check.sh: {sorted(gpu_only - set(files))}"


def test_the_k_expression_selects_the_gpu_cases_of_every_listed_file():
    expression, files = gpu_tests(dry_run())
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-k", expression, *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert {i.split("::")[0] for i in ids} == set(files)  # each file contributes tests
    assert "tests/test_kind_nn.py::test_cuda_trains_in_bfloat16_and_the_saved_model_predicts_alike_on_the_cpu[mlp]" \
        in ids
    assert any("[cupy" in i or "-cupy" in i for i in ids if i.startswith("tests/test_kernels_backends.py"))
    assert not any("[numba" in i for i in ids)  # the CPU cases are not re-run on the GPU day


def test_make_gpu_check_runs_the_script():
    out = subprocess.run(["make", "-n", "gpu-check", "GPU_CHECK_ARGS=--dry-run"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and "bash benches/gpu_check.sh --budget 480 --dry-run" in out.stdout, out.stderr


@pytest.mark.skipif(HAS_GPU, reason="a GPU answers here")
def test_without_a_gpu_the_check_refuses_in_one_line():
    out = check()
    assert out.returncode == 2 and out.stderr.startswith("error: no NVIDIA GPU answered") and \
        out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("args, words", [(["--frobnicate"], "unknown option '--frobnicate'"),
                                         (["--steps", "device,warp"], "unknown step 'warp'"),
                                         (["--budget", "8m"], "--budget must be whole seconds")])
def test_bad_usage_is_one_line(args, words):
    out = check("--dry-run", *args)
    assert out.returncode == 2 and words in out.stderr and out.stderr.count("\n") == 1, out.stderr


# --- the venv, offline installs, the results file -------------------------------------------------------------


def tiny_wheel(folder: Path) -> Path:
    """A real (deflated) wheel of a one-module package ``gpucheckprobe``."""
    import base64
    import hashlib

    files = {"gpucheckprobe.py": "VALUE = 42\n",
             "gpucheckprobe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 0.1\n",
             "gpucheckprobe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n"}
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()}"
              f",{len(text.encode())}" for name, text in files.items()]
    files["gpucheckprobe-0.1.dist-info/RECORD"] = "\n".join([*record, "gpucheckprobe-0.1.dist-info/RECORD,,"]) + "\n"
    path = folder / "gpucheckprobe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_repack_stores_every_member_uncompressed_and_unchanged(tmp_path):
    wheel = tiny_wheel(tmp_path)
    out = subprocess.run([sys.executable, str(BENCH), "repack", str(wheel), "--out", str(tmp_path / "stored")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with zipfile.ZipFile(wheel) as before, zipfile.ZipFile(tmp_path / "stored" / wheel.name) as after:
        assert [i.filename for i in after.infolist()] == [i.filename for i in before.infolist()]
        assert {i.compress_type for i in after.infolist()} == {zipfile.ZIP_STORED}
        assert all(after.read(n) == before.read(n) for n in before.namelist())  # the bug: reading as stored


@pytest.mark.skipif(shutil.which("xz") is None, reason="needs xz")
def test_a_fresh_venv_sees_its_parent_and_installs_split_packs_offline(tmp_path):
    """The GPU day's path: a venv made from this (venv) python sees this venv's packages (the image keeps
    torch and CuPy in one), a pack split in parts is joined and installed with no index, eraflow is
    installed from this tree, and the results file gets one section per step and a summary."""
    stored = tmp_path / "stored"
    subprocess.run([sys.executable, str(BENCH), "repack", str(tiny_wheel(tmp_path)), "--out", str(stored)], check=True)
    packs = tmp_path / "packs"
    packs.mkdir()
    xz = subprocess.run(f"tar -cf - -C {stored} . | xz -1 | split -b 300 -d - {packs}/probe.tar.xz.part",
                        shell=True, capture_output=True)
    assert xz.returncode == 0 and len(list(packs.glob("probe.tar.xz.part*"))) >= 2, xz.stderr
    venv, result = tmp_path / "venv", tmp_path / "results" / "gpu-test.txt"
    out = check("--allow-no-gpu", "--python", sys.executable, "--venv", str(venv), "--wheels", str(packs),
                "--steps", "device,venv,install", "--out", str(result), timeout=240, tmp=tmp_path)
    text = result.read_text()
    assert out.returncode == 0, text
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import gpucheckprobe, numpy, eraflow.engine as e; "
                                          "print(gpucheckprobe.VALUE, e.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    value, where = probe.stdout.split()
    assert value == "42" and where.startswith(str(ROOT))
    assert importlib.util.find_spec("gpucheckprobe") is None  # installed in the new venv only
    command = subprocess.run([str(venv / "bin" / "eraflow"), "--version"], capture_output=True, text=True, timeout=60)
    assert command.returncode == 0 and "0.1" in command.stdout, command.stderr  # the benches call `eraflow`
    for section in ("== device", "== venv", "== install", "installing 1 carried wheels (offline)", "== summary"):
        assert section in text
    assert re.search(r"^install +ok ", text, re.M) and "results: " + str(result) in text


# --- the training bench ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory):
    """gpu_bench.py train on a tiny store (made here: the bench reuses work/store) with lgbm on the CPU and
    on OpenCL (PoCL here), xgb on CUDA."""
    work = tmp_path_factory.mktemp("gpu_bench")
    synthetic_store(work, SynthSpec(eras=12, rows_per_era=60, features=12, targets=1, seed=5))
    out = subprocess.run([sys.executable, str(BENCH), "train", "--work", str(work), "--trees", "5",
                          "--runs", "lgbm:cpu", "lgbm:gpu", "xgb:cuda",
                          "--budget", "200", "--json", str(work / "r.json")],
                         capture_output=True, text=True, timeout=260)
    return out, {r["run"]: r for r in json.loads((work / "r.json").read_text())["runs"]}


def test_bench_table_and_json_have_every_run(bench_rows):
    out, rows = bench_rows
    assert list(rows) == ["lgbm:cpu", "lgbm:gpu", "xgb:cuda"]
    assert rows["lgbm:cpu"]["train_s"] > 0 and rows["lgbm:cpu"]["device_name"] == "cpu"
    table = out.stdout[out.stdout.index("run "):]
    assert all(run in table for run in rows)


@pytest.mark.skipif(HAS_GPU, reason="a GPU answers here")
def test_bench_reports_a_missing_device_as_unavailable_not_failed(bench_rows):
    out, rows = bench_rows
    assert rows["xgb:cuda"]["status"] == "unavailable"
    assert rows["xgb:cuda"]["why"].startswith("error: --device cuda")
    assert "xgb:cuda" not in out.stdout.partition("failed or out of parity")[2]


def test_bench_compares_the_opencl_learner_with_the_cpu(bench_rows):
    out, rows = bench_rows
    gpu = rows["lgbm:gpu"]
    if gpu["status"] == "unavailable":
        pytest.skip(f"no OpenCL device: {gpu['why']}")
    assert "OpenCL" in gpu["device_name"]
    assert gpu["parity"] == "ok" and gpu["corr_vs_cpu"] >= 0.99, gpu
    assert gpu["speedup_vs_cpu"] == pytest.approx(rows["lgbm:cpu"]["train_s"] / gpu["train_s"])
