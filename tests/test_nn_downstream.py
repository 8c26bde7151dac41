"""Network models downstream: ensembles with LightGBM, exports without torch, damaged weights, missing torch.

One LightGBM and one GTRUDA model (and a small dense net) are trained with ``--cv 2`` on a tiny
store of 160 features (GTRUDA needs ≥ 149), so each has out-of-fold predictions for stacking.
Guarded bugs: an ensemble member that is a network predicting otherwise inside the ensemble than
alone; stacking weights fitted on anything but the members' out-of-fold eras; an exported network
that needs torch (Numerai's runtime may lack it: ``export --check`` runs without it) or predicts
otherwise than eraflow (missing feature values included); damaged weight files reaching NumPy's
or torch's loaders as tracebacks; a missing torch surfacing as a traceback instead of the extra
that installs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.optimize import nnls
from scipy.stats import rankdata

from eraflow.cli import cli
from eraflow.engine import SynthSpec
from eraflow.engine.models.predict import load_model, predict_model
from eraflow.engine.numerai.runtime import pickle_needs, runtime_venv

from .conftest import RUNNING_PYTHON, synthetic_store
from .test_train import FAST

pytest.importorskip("eraflow.engine.models.gtruda", reason="engine/models/gtruda.py not written yet")

SPEC = SynthSpec(eras=20, rows_per_era=100, features=160, validation_eras=4, unlabeled_eras=1, seed=13)
PARAMS = {  # small: the networks take one batch per epoch, two epochs, small layers
    "lgbm": {**FAST, "n_estimators": 8},
    "gtruda": {"epochs": 2, "batch_size": 1024, "head": [16, 8], "patience": 2},
    "mlp": {"epochs": 2, "batch_size": 1024, "widths": [16, 8], "patience": 2},
}
EMBARGO = "1"
LIVE_ERA = 17  # store era whose rows make the live frame
FLOAT32 = 1e-5  # torch's float32 forward pass vs the exported NumPy one (sigmoid outputs)
# `import torch` fails as where torch is not installed (sys.modules["torch"] = None would also break SciPy, whose
# array_api_compat reads sys.modules["torch"].Tensor when the key exists)
NO_TORCH = """import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""


def invoke(*argv: str, env: dict | None = None):
    return CliRunner(env=env).invoke(cli, [str(a) for a in argv])


def assert_refused(result, *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words``."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.count("\n") == 1 and all(w in result.stderr for w in words), result.stderr


def run_python(code: str, *args) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``)."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("nn_downstream"), SPEC)


@pytest.fixture(scope="module")
def models(store, tmp_path_factory):
    """Model directory per kind, each trained with ``--cv 2`` (out-of-fold predictions)."""
    root = tmp_path_factory.mktemp("models")  # and the ledger: module fixtures run before the private one
    dirs = {}
    for kind, params in PARAMS.items():
        (root / f"{kind}.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in params.items()))
        result = invoke("train", store.path, "-o", root / kind, "--model", kind, "--params", root / f"{kind}.toml",
                        "--cv", "2", "--embargo", EMBARGO, "--quiet", "--ledger", root / "ledger.duckdb")
        assert result.exit_code == 0, result.output
        dirs[kind] = root / kind
    return dirs


@pytest.fixture(scope="module")
def live_frame(store):
    """Numerai's live frame (index id, era "X", float features) of one store era, some values missing (NaN)."""
    lo, hi = store.offsets[LIVE_ERA], store.offsets[LIVE_ERA + 1]
    codes = np.asarray(store.features[lo:hi]).astype(np.float64)
    codes[np.random.default_rng(0).random(codes.shape) < 0.05] = np.nan
    frame = pd.DataFrame(codes, columns=store.feature_names, index=pd.Index(store.ids[lo:hi], name="id"))
    return frame.assign(era="X")


def era_ranks(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(rank − 0.5) / n`` within each era (ties averaged)."""
    return np.concatenate([(rankdata(values[lo:hi]) - 0.5) / (hi - lo) for lo, hi in zip(offsets, offsets[1:])])


def store_predictions(model_dir, store) -> np.ndarray:
    """eraflow's predictions of every store row by the model (its only target)."""
    model = load_model(model_dir)
    return predict_model(model, store)[f"pred_{model.targets[0]}"]


# --- ensembles of LightGBM and GTRUDA -------------------------------------------------------------------------


def test_a_rank_mean_of_lightgbm_and_gtruda_predicts_the_mean_of_their_per_era_ranks(models, store, tmp_path):
    result = invoke("ensemble", models["lgbm"], models["gtruda"], "-o", tmp_path / "ens", "--weights", "3,1")
    assert result.exit_code == 0, result.output
    members = [store_predictions(models[k], store) for k in ("lgbm", "gtruda")]
    expected = 0.75 * era_ranks(members[0], store.offsets) + 0.25 * era_ranks(members[1], store.offsets)
    np.testing.assert_allclose(store_predictions(tmp_path / "ens", store), expected, atol=1e-12)


def oof_ranks_and_target(model_dirs, store, eras: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Members' out-of-fold predictions of ``eras`` as per-era ranks less 0.5, and the era-centred target."""
    frames = [pd.read_parquet(d / "oof.parquet").set_index("id") for d in model_dirs]
    index = np.array([store.eras.index(e) for e in eras])
    rows = np.concatenate([np.arange(store.offsets[k], store.offsets[k + 1]) for k in index])
    offsets = np.concatenate([[0], np.cumsum(np.diff(store.offsets)[index])])
    ids = store.ids[rows]
    ranks = np.column_stack([era_ranks(f.pred_target.reindex(ids).to_numpy(), offsets) - 0.5 for f in frames])
    y = pd.Series(np.asarray(store.targets[rows, store.target_names.index("target")], np.float64))
    centred = y - y.groupby(np.repeat(np.arange(len(index)), np.diff(offsets))).transform("mean")
    return ranks, centred.to_numpy()


def test_a_stack_of_lightgbm_and_gtruda_is_fitted_on_out_of_fold_eras_only(models, store, tmp_path):
    """The stacked weights are NNLS on the eras both members' CV held out (an in-sample fit would favour
    whichever member overfits), and equal that fit done here with SciPy on their oof.parquet files."""
    dirs = [models["lgbm"], models["gtruda"]]
    result = invoke("ensemble", *dirs, "-o", tmp_path / "stack", "--method", "stack", "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "stack" / "model.json").read_text())
    held_out = [set(json.loads((d / "model.json").read_text())["cv"]["target"]["per_era"]) for d in dirs]
    oof_eras = [set(pd.read_parquet(d / "oof.parquet").era) for d in dirs]
    assert oof_eras == held_out and meta["fit_eras"] and set(meta["fit_eras"]) <= held_out[0] & held_out[1]
    ranks, y = oof_ranks_and_target(dirs, store, meta["fit_eras"])
    labeled = np.isfinite(y)
    w = nnls(ranks[labeled], y[labeled])[0]
    np.testing.assert_allclose(meta["weights"], w / w.sum(), atol=1e-9)
    members = [era_ranks(store_predictions(d, store), store.offsets) for d in dirs]
    np.testing.assert_allclose(store_predictions(tmp_path / "stack", store),
                               np.column_stack(members) @ np.asarray(meta["weights"]), atol=1e-12)


@pytest.mark.parametrize("method", ["rank-mean", "stack"])
def test_an_ensemble_with_gtruda_exports_and_passes_the_check_in_a_runtime_without_torch(method, models,
                                                                                         runtime_root, tmp_path):
    assert invoke("ensemble", models["lgbm"], models["gtruda"], "-o", tmp_path / "ens",
                  "--method", method).exit_code == 0
    out = tmp_path / "model.pkl"
    result = invoke("export", tmp_path / "ens", "-o", out, "--check", "--runtime", RUNNING_PYTHON,
                    env={"XDG_CACHE_HOME": str(runtime_root.parent)})
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines()[:6]] == ["pass"] * 6, result.output
    assert pickle_needs(out) == set(), "the pickle names torch: the runtime would install it"
    venv_python = runtime_venv(RUNNING_PYTHON, root=runtime_root) / "bin" / "python"
    no_torch = subprocess.run([venv_python, "-c", "import torch"], capture_output=True).returncode != 0
    assert no_torch, "the runtime the check ran in has torch"


# --- an exported network without torch ----------------------------------------------------------------------

PREDICT_WITHOUT_TORCH = NO_TORCH + """
import cloudpickle, inspect, numpy as np, pandas as pd
predict = cloudpickle.loads(open(sys.argv[1], "rb").read())
live = pd.read_parquet(sys.argv[2])
predictor = inspect.getclosurevars(predict).nonlocals["predictor"]
codes = live[predictor.features].to_numpy(np.float64)
raw = predictor.models["target"].predict(codes, np.zeros(len(live), dtype=np.int64))
np.savez(sys.argv[3], raw=raw, answer=predict(live, None)["prediction"].to_numpy(), torch="torch" in sys.modules)
"""


@pytest.mark.parametrize("kind", ["gtruda", "mlp"])
def test_an_exported_network_predicts_like_eraflow_where_torch_cannot_be_imported(kind, models, live_frame,
                                                                                  tmp_path):
    """The pickle's NumPy forward pass equals eraflow's torch one (missing values read the same), and its
    answer is the per-era ranks of eraflow's predictions: nothing in the pickle reaches for torch."""
    assert invoke("export", models[kind], "-o", tmp_path / "model.pkl").exit_code == 0
    live_frame.to_parquet(tmp_path / "live.parquet")
    done = run_python(PREDICT_WITHOUT_TORCH, tmp_path / "model.pkl", tmp_path / "live.parquet", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    out = np.load(tmp_path / "out.npz")
    assert not out["torch"], "torch got imported"
    model = load_model(models[kind])
    block = np.nan_to_num(live_frame[model.features].to_numpy(), nan=-1).astype(np.int8)  # missing: −1 as in stores
    ours = model.fitted["target"].predict(block, np.array([0, len(block)]))
    np.testing.assert_allclose(out["raw"], ours, atol=FLOAT32, rtol=0)
    # ranks are comparable only where no two predictions lie within the float32 noise of each other
    assert np.diff(np.sort(ours)).min() > np.abs(out["raw"] - ours).max(), "near-ties: use other rows or seeds"
    np.testing.assert_allclose(out["answer"], (rankdata(ours) - 0.5) / len(ours), atol=1e-12)


# --- damaged weights, missing torch --------------------------------------------------------------------------


def rewritten(file, change) -> None:
    """``file`` (an .npz) saved again with its arrays passed through ``change``."""
    np.savez(file, **change(dict(np.load(file, allow_pickle=False))))


def first_reshaped(arrays: dict) -> dict:
    name, array = next(iter(arrays.items()))
    return {**arrays, name: np.zeros(array.size + 1, array.dtype)}


def flip_middle_byte(data: bytes) -> bytes:
    """The byte in the middle (inside an array's data: the zip member's CRC no longer matches) inverted."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


DAMAGES = {  # how a weights file gets damaged → the change made to it
    "empty": lambda file: file.write_bytes(b""),
    "truncated": lambda file: file.write_bytes(file.read_bytes()[: file.stat().st_size // 2]),
    "a byte changed": lambda file: file.write_bytes(flip_middle_byte(file.read_bytes())),
    "an array missing": lambda file: rewritten(file, lambda arrays: dict(list(arrays.items())[1:])),
    "an array of another shape": lambda file: rewritten(file, first_reshaped),
    "deleted": lambda file: file.unlink(),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", ["gtruda", "mlp"])
def test_damaged_weights_are_one_line_and_nothing_is_written(kind, damage, models, store, tmp_path):
    copy = shutil.copytree(models[kind], tmp_path / "model")
    file = copy / "model_target.npz"
    assert zipfile.is_zipfile(file)
    DAMAGES[damage](file)
    result = invoke("predict", copy, store.path, "-o", tmp_path / "p.parquet")
    assert_refused(result, "model_target.npz")
    assert not (tmp_path / "p.parquet").exists()


COMMAND_WITHOUT_TORCH = NO_TORCH + """
from eraflow.cli.main import main
sys.argv = ["eraflow", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("member", ["gtruda", "ensemble"])
def test_a_network_model_without_torch_names_the_extra(member, models, store, tmp_path):
    model_dir = models["gtruda"]
    if member == "ensemble":
        model_dir = tmp_path / "ens"
        assert invoke("ensemble", models["lgbm"], models["gtruda"], "-o", model_dir).exit_code == 0
    done = run_python(COMMAND_WITHOUT_TORCH, "predict", model_dir, store.path, "-o", tmp_path / "p.parquet")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "pip install 'eraflow[nn]'" in done.stderr, done.stderr
    assert not (tmp_path / "p.parquet").exists()
