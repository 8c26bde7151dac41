"""Numerai's model-upload runtime on this machine: a venv with the image's pins, and an export run in it.

Numerai runs an uploaded pickle in its numerai-predict image, which has no eraflow, older pins
(:data:`PINS`), 1 CPU, 4 GB of memory, 10 minutes and no GPU or network. ``eraflow export
--check`` reproduces that:

1. :func:`runtime_venv` builds, once, a venv from a Python of the image's minor version with the
   image's pins, under ``$XDG_CACHE_HOME/eraflow/runtime-<minor>-<hash of the pins>`` (built in a
   temporary directory beside it and renamed in; a lock file makes a second process wait for the
   first build instead of building again);
2. :func:`check_pickle` runs :mod:`.runtime_child` with that venv's Python on the pickle, one
   thread pinned to one CPU, with a 600 s timeout, on ``--live`` data or a synthetic one-era
   frame of :data:`LIVE_ROWS` rows of the model's features;
3. the child saves its predictions; eraflow loads the same pickle in its own process, predicts the
   same frame era by era and compares (:func:`agree_check`): every value within
   :data:`AGREE_TOLERANCE` of eraflow's, else the largest difference and its row's id;
4. the result (:class:`RuntimeCheck`) lists each check (load, predict, answer, agree, time, memory)
   with its measurement: wall time of the runtime process, and its own peak RSS (``VmHWM``).

Optional libraries: torch (2.8.0 in the images) is installed only when asked (``needs=("torch",)``)
or when the pickle names it (:func:`pickle_needs`), because PyPI's torch wheel pulls several GB of
CUDA libraries. No eraflow export names torch: the network kinds (``gtruda``, ``mlp``) export their
weights as NumPy arrays with a NumPy forward pass (:mod:`eraflow.engine.models.portable.nets`), so
their exports are checked in a runtime without torch. pyarrow is pinned because Numerai's runtime
reads live.parquet with ``pd.read_parquet``.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import pickletools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import EraflowError, InputError
from ..models.predict import TrainedModel
from ..outputs import check_output_file
from . import runtime_child
from .export import DEFAULT_RUNTIME, RUNTIMES, check_python, pickled_predict

COMMON_PINS = {  # numerai-predict's Python 3.11 image
    "numpy": "2.1.3", "pandas": "2.3.2", "lightgbm": "4.6.0", "scikit-learn": "1.6.1", "scipy": "1.16.2",
    "cloudpickle": "3.1.1",
    "xgboost-cpu": "3.0.5",  # the image's xgboost 3.0.5: the same `xgboost` module without the 200 MB NCCL wheel
}
PINS: dict[str, dict[str, str]] = {
    "3.11": {**COMMON_PINS, "pyarrow": "21.0.0"},  # pyarrow: numerai-predict's py3.11/requirements.txt
    "3.12": {**COMMON_PINS, "lightgbm": "4.5.0", "pyarrow": "18.1.0"},  # py3.12/requirements.txt
}
OPTIONAL_PINS = {"torch": "2.8.0"}  # installed only when needed: PyPI's wheel is a multi-GB CUDA build
LIMIT_SECONDS = 600  # Numerai's limits for one model's run
LIMIT_BYTES = 4 * 2**30
LIVE_ROWS = 7_000  # rows of the synthetic live era: about one live era of Numerai's
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "NUMEXPR_NUM_THREADS")}
CHILD = Path(runtime_child.__file__)
# eraflow's answers are per-era ranks (r − 0.5)/n: two rankings differ by ≥ 0.5/n (> 1e-9 for any era under
# 5e8 rows) when one row moves, and not at all otherwise; 1e-9 also forgives a raw answer's float noise
# across NumPy/BLAS versions (~1e-16 relative) while catching a library that reads the model otherwise.
AGREE_TOLERANCE = 1e-9


class RuntimeBuildError(EraflowError):
    """The runtime venv could not be built (no Python of that minor, or pip failed)."""


# ---------------------------------------------------------------- the venv


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)} (Numerai's images)")
    return runtime


def runtime_pins(runtime: str, needs: Iterable[str] = ()) -> list[str]:
    """``name==version`` of the image's pins, plus the optional libraries in ``needs`` (sorted)."""
    unknown = sorted(set(needs) - set(OPTIONAL_PINS))
    if unknown:
        raise InputError(f"unknown optional runtime library {unknown[0]!r}; choose from {', '.join(OPTIONAL_PINS)}")
    pins = {**PINS[check_runtime(runtime)], **{n: OPTIONAL_PINS[n] for n in needs}}
    return sorted(f"{name}=={version}" for name, version in pins.items())


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/eraflow`` (``~/.cache/eraflow`` when unset or relative)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "eraflow"


def venv_dir(runtime: str, pins: list[str], root: Path) -> Path:
    """``root/runtime-<minor>-<first 12 hex of sha256 of the pins>``: new pins, new venv."""
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    return root / f"runtime-{runtime}-{digest}"


def python_minor(python: str) -> str | None:
    """``"3.11"`` for an interpreter of Python 3.11; None when it does not run."""
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(runtime: str) -> str:
    """This interpreter when it is Python ``runtime``, else ``python<runtime>`` on PATH; RuntimeBuildError if none."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == runtime:
        return sys.executable
    found = shutil.which(f"python{runtime}")
    if found and python_minor(found) == runtime:
        return found
    raise RuntimeBuildError(f"no Python {runtime} found (python{runtime} on PATH) to build Numerai's {runtime} "
                            f"runtime; install it (e.g. `uv python install {runtime}`) or check --runtime")


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting for another holder to finish; released on exit or death."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_step(command: list[str], what: str, runtime: str) -> None:
    """Run a build step; RuntimeBuildError with the last line of its output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeBuildError(f"building Numerai's {runtime} runtime failed while {what} "
                                f"({last_line(done.stderr or done.stdout)}); "
                                "check the connection to PyPI and run again")


def build_venv(python: str, pins: list[str], dest: Path, runtime: str) -> None:
    """``python -m venv`` and ``pip install pins`` in a temporary directory, then rename it to ``dest``."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        run_step([python, "-m", "venv", str(tmp)], "creating the venv", runtime)
        run_step([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input",
                  "--disable-pip-version-check", "--only-binary=:all:", *pins], "installing " + " ".join(pins), runtime)
        (tmp / "eraflow-pins.txt").write_text("\n".join(pins) + "\n")
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def runtime_venv(runtime: str = DEFAULT_RUNTIME, needs: Iterable[str] = (), root: Path | None = None,
                 progress: Callable[[str], None] | None = None) -> Path:
    """The venv with the runtime's pins (built on first use: 0.5–2 minutes, 555 MB); returns its directory.

    ``progress(message)`` is called before a build. A build left unfinished by a killed process is
    removed by the next one (under the lock).
    """
    pins = runtime_pins(runtime, needs)
    root = Path(root) if root is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = venv_dir(runtime, pins, root)
    with waiting_lock(root / f"{dest.name}.lock"):
        if not (dest / "eraflow-pins.txt").is_file():
            for stale in root.glob(f".{dest.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
            if progress is not None:
                progress(f"building Numerai's Python {runtime} runtime in {dest} (once; about a minute)")
            build_venv(find_python(runtime), pins, dest, runtime)
    return dest


def pickle_needs(path: str | Path) -> set[str]:
    """The optional libraries (:data:`OPTIONAL_PINS`) a pickle names: a module global, or a name in pickled code
    (``import torch`` inside a function pickled by value); the pickle is scanned, never loaded."""
    names: set[str] = set()
    with open(path, "rb") as fh:
        for _, arg, _ in pickletools.genops(fh):
            if isinstance(arg, str):
                names.update(n for n in OPTIONAL_PINS if arg == n or arg.startswith(n + "."))
    return names


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class Check:
    """One check: its name, passed (None: not reached) and what was measured or went wrong."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class RuntimeCheck:
    """The pickle run in Numerai's runtime: the checks in order and the measurements."""

    runtime: str
    checks: tuple[Check, ...]
    seconds: float
    peak_bytes: int | None
    rows: int | None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str | None:
        """``"<check>: <detail>"`` of the first failed check; None when all passed."""
        failed = next((c for c in self.checks if c.passed is False), None)
        return None if failed is None else f"{failed.name}: {failed.detail}"


def human_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


STAGES = {"start": 0, "load": 0, "read": 1, "predict": 1, "answer": 2, "done": 3}  # child's stage → check


def stage_checks(result: dict, died: str | None) -> list[Check]:
    """load / predict / answer from the child's RESULT.json: the stage it reached fails with its problem.

    ``died`` says why the process ended without finishing (timeout, crash), or is None.
    """
    reached, problem = STAGES[result.get("stage", "start")], result.get("problem")
    if problem is None and reached < STAGES["done"]:
        problem = died or "the runtime process ended early"
    details = (f"pd.read_pickle under Python {result.get('python')} with the image's pins",
               f"{result.get('args')} argument(s), {result.get('rows') or 0:,} rows, {result.get('eras') or 0} era(s)",
               "exactly a DataFrame, indexed like the live rows, no NaN, in [0, 1]")
    return [Check(name, True, details[i]) if i < reached or problem is None
            else Check(name, False, problem) if i == reached else Check(name, None, "not reached")
            for i, name in enumerate(("load", "predict", "answer"))]


def limit_checks(seconds: float, peak: int | None, timeout: float, cpus: int | None = 1) -> list[Check]:
    """time (≤ ``timeout`` s, on ``cpus`` CPUs) and memory (peak RSS ≤ 4 GiB) checks."""
    memory = (Check("memory", None, "not measured") if peak is None
              else Check("memory", peak <= LIMIT_BYTES, f"peak {human_bytes(peak)} (limit {human_bytes(LIMIT_BYTES)})"))
    on = f" on {cpus} CPU" if cpus else ""
    return [Check("time", seconds <= timeout, f"{seconds:.1f} s{on} (limit {timeout:g} s)"), memory]


def eraflow_values(path: str | Path, spec: dict) -> tuple[np.ndarray, list]:
    """The pickle at ``path`` loaded and run in eraflow's own process on the child's frame, era by era as the
    child calls it (:func:`.runtime_child.predict_eras`): its values (rows × columns) and the rows' ids."""
    model = cloudpickle.loads(Path(path).read_bytes())
    live = runtime_child.live_frame(spec)
    answers = runtime_child.predict_eras(model, live, len(inspect.signature(model).parameters))
    return runtime_child.answer_values(answers), [i for _, era in answers for i in era.index]


def short(x: float) -> str:
    """``x`` to one significant digit, exponent unpadded: ``1e-9``, ``3e-16``, ``0``."""
    return f"{x:.1g}".replace("e-0", "e-").replace("e+0", "e+")


def compare_predictions(theirs: np.ndarray, ours: np.ndarray, ids: list) -> Check:
    """agree: ``max |theirs − ours| ≤ AGREE_TOLERANCE`` (the runtime's and eraflow's values), else how many rows
    differ and the id of the row that differs most (NaN in ``ours`` differs by ∞)."""
    if theirs.shape != ours.shape:
        return Check("agree", False, f"the runtime answered {theirs.shape} values (rows, columns), "
                                     f"eraflow's Python {ours.shape}")
    diff = np.nan_to_num(np.abs(theirs - ours), nan=np.inf)
    row, col = np.unravel_index(np.argmax(diff), diff.shape) if diff.size else (0, 0)
    largest = float(diff[row, col]) if diff.size else 0.0
    if largest <= AGREE_TOLERANCE:
        return Check("agree", True,
                     f"predictions equal eraflow's to {short(AGREE_TOLERANCE)} (max |diff| {short(largest)})")
    differ = int((diff > AGREE_TOLERANCE).any(axis=1).sum())
    return Check("agree", False, f"{differ:,} of {len(diff):,} predictions differ from eraflow's by more than "
                                 f"{short(AGREE_TOLERANCE)}; most at id {ids[row]}: {theirs[row, col]:.6g} in the "
                                 f"runtime, {ours[row, col]:.6g} in eraflow's Python")


def agree_check(path: str | Path, spec: dict, answered: bool, predictions: Path) -> Check:
    """agree: the runtime's saved ``predictions`` against the pickle run by eraflow (:func:`eraflow_values`);
    not reached unless the runtime ``answered`` acceptably."""
    if not answered:
        return Check("agree", None, "not reached")
    try:
        ours, ids = eraflow_values(path, spec)
    except Exception as exc:  # whatever the pickle raises in eraflow's process
        return Check("agree", False, f"in eraflow's Python the pickle raised {runtime_child.error_line(exc)}")
    return compare_predictions(np.load(predictions, allow_pickle=False), ours, ids)


def last_line(text: str) -> str:
    return ((text or "").strip().splitlines() or ["no output"])[-1][:200]


def ended(returncode: int, stderr: str) -> str:
    """Why the runtime process ended early: a signal (the kernel's OOM killer sends 9) or an exit status."""
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return f"the runtime process {how} ({last_line(stderr)})"


def child_env() -> dict[str, str]:
    """The runtime process's environment: one thread per library and no GPU (it runs with ``python -I``)."""
    return {**os.environ, **ONE_THREAD, "CUDA_VISIBLE_DEVICES": ""}


def check_pickle(path: str | Path, runtime: str = DEFAULT_RUNTIME, features: list[str] | None = None,
                 live: str | Path | None = None, root: Path | None = None, needs: Iterable[str] = (),
                 timeout: float = LIMIT_SECONDS, progress: Callable[[str], None] | None = None) -> RuntimeCheck:
    """Run the pickle at ``path`` in Numerai's ``runtime`` as its model upload does (module docstring).

    ``live`` is a live parquet file; without it ``features`` (the columns the model reads) make a
    synthetic era of :data:`LIVE_ROWS` rows. ``needs`` adds optional libraries to those the pickle
    names; ``progress`` is told when the runtime is built. When the runtime's answer passes, the pickle is
    also run in eraflow's process and the predictions compared (:func:`agree_check`). Returns the checks;
    raises only when the runtime cannot be built (RuntimeBuildError).

    Example:
        >>> check_pickle("model.pkl", features=["feature_a", "feature_b"]).passed
        True
    """
    if live is None and features is None:
        raise InputError("give the live parquet file or the model's features to check the export on")
    if live is not None and not Path(live).is_file():
        raise InputError(f"{live} is not a file; give the live parquet file (e.g. data/live.parquet)")
    venv = runtime_venv(runtime, set(needs) | pickle_needs(path), root, progress)
    with tempfile.TemporaryDirectory(prefix="eraflow-runtime-") as tmp:
        spec_path, result_path, predictions = Path(tmp) / "spec.json", Path(tmp) / "result.json", Path(tmp) / "p.npy"
        spec = {"live": None if live is None else str(Path(live).resolve()), "features": features, "rows": LIVE_ROWS,
                "predictions": str(predictions)}
        spec_path.write_text(json.dumps(spec))
        command = [str(venv / "bin" / "python"), "-I", str(CHILD), str(Path(path).resolve()), str(spec_path),
                   str(result_path)]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=child_env(), timeout=timeout)
            died = None if done.returncode == 0 else ended(done.returncode, done.stderr)
        except subprocess.TimeoutExpired:
            died = f"killed after the {timeout:g} s limit"
        seconds = time.perf_counter() - start
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
        agree = agree_check(path, spec, result.get("stage") == "done", predictions)  # saved before "done"
    peak = result["peak_kib"] * 1024 if "peak_kib" in result else None
    checks = stage_checks(result, died) + [agree] + limit_checks(seconds, peak, timeout, result.get("cpus"))
    return RuntimeCheck(runtime, tuple(checks), seconds, peak, result.get("rows"))


def export_checked(model: TrainedModel, path: str | Path, runtime: str = DEFAULT_RUNTIME,
                   live: str | Path | None = None, root: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> tuple[int, RuntimeCheck]:
    """Export ``model`` as ``export_model`` does, but check the pickle in the runtime before writing it.

    The pickle is written to ``path`` only when every check passes; returns its size and the checks.
    """
    check_python(runtime)
    path = check_output_file(path, "export")
    data, features = pickled_predict(model)
    with tempfile.TemporaryDirectory(prefix="eraflow-export-") as tmp:
        candidate = Path(tmp) / "model.pkl"
        candidate.write_bytes(data)
        result = check_pickle(candidate, runtime, features, live, root, progress=progress)
    if result.passed:
        atomic_write_bytes(path, data, "export")
    return len(data), result
