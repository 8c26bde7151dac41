"""eraflow live and eraflow export: the submission for the live era, and the model for Numerai's upload."""

from __future__ import annotations

import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from numerai_tools import scoring as nt
from scipy.stats import rankdata

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.errors import InputError
from eraflow.engine.models.predict import load_model
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.engine.numerai.export import export_model
from eraflow.engine.numerai.live import Postprocess, live_predictions, set_postprocess
from tests.test_train import FAST


@pytest.fixture(scope="module")
def model_dir(store_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "model"
    train_models(open_store(store_path), out, TrainConfig(targets=("target", "target_*_20"), params=FAST))
    return out


@pytest.fixture
def neutralized_model(model_dir, store_path):
    medium = tuple(open_store(store_path).feature_sets["medium"])
    set_postprocess(model_dir, Postprocess("ensemble", 0.5, medium))
    return load_model(model_dir)


def _ranks(values) -> np.ndarray:
    return (rankdata(values) - 0.5) / len(values)


def test_live_predictions_equal_an_independent_pandas_computation(neutralized_model, synth_dir):
    got = live_predictions(neutralized_model, synth_dir / "live.parquet")
    live = pd.read_parquet(synth_dir / "live.parquet").set_index("id")
    x = live[neutralized_model.features].to_numpy(np.float32)
    ensemble = np.mean([_ranks(neutralized_model.fitted[t].booster.predict(x)) for t in neutralized_model.targets], axis=0)
    medium = neutralized_model.meta["postprocess"]["features"]
    neutral = nt.neutralize(pd.DataFrame({"p": ensemble}, index=live.index), live[medium], proportion=0.5)
    assert list(got.id) == list(live.index)
    np.testing.assert_allclose(got.prediction, _ranks(neutral.p), atol=1e-9)
    assert 0 < got.prediction.min() and got.prediction.max() < 1


def test_live_without_postprocess_submits_the_ensemble_ranked(model_dir, synth_dir):
    set_postprocess(model_dir, Postprocess("pred_target"))
    model = load_model(model_dir)
    got = live_predictions(model, synth_dir / "live.parquet")
    live = pd.read_parquet(synth_dir / "live.parquet")
    want = _ranks(model.fitted["target"].booster.predict(live[model.features].to_numpy(np.float32)))
    np.testing.assert_allclose(got.prediction, want, atol=1e-12)


def test_postprocess_is_checked_against_the_model(model_dir):
    with pytest.raises(InputError, match="no output 'pred_nope'"):
        set_postprocess(model_dir, Postprocess("pred_nope"))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        set_postprocess(model_dir, Postprocess("ensemble", 1.5))


EXPORTED_RUN = """
import sys, cloudpickle, pandas as pd
sys.modules["eraflow"] = None  # the exported function must not need eraflow
with open(sys.argv[1], "rb") as fh:
    predict = cloudpickle.load(fh)
live = pd.read_parquet(sys.argv[2])
out = predict(live.set_index("id"), None)
assert list(out.columns) == ["prediction"], out.columns
out.reset_index(names="id").to_parquet(sys.argv[3])
"""


def test_exported_model_runs_without_eraflow_and_matches_eraflow_live(neutralized_model, model_dir, synth_dir,
                                                                       tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(model_dir), "-o", str(tmp_path / "model.pkl")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["live", str(model_dir), "--data", str(synth_dir), "-o",
                                 str(tmp_path / "live.parquet")])
    assert result.exit_code == 0, result.output
    subprocess.run([sys.executable, "-c", EXPORTED_RUN, str(tmp_path / "model.pkl"), str(synth_dir / "live.parquet"),
                    str(tmp_path / "exported.parquet")], check=True, cwd=tmp_path)
    live = pd.read_parquet(tmp_path / "live.parquet")
    exported = pd.read_parquet(tmp_path / "exported.parquet")
    assert list(exported.id) == list(live.id)
    np.testing.assert_allclose(exported.prediction, live.prediction, atol=1e-9)


def test_exported_booster_text_is_the_trained_model(model_dir, tmp_path):
    import cloudpickle

    export_model(load_model(model_dir), tmp_path / "m.pkl")
    predict = cloudpickle.loads((tmp_path / "m.pkl").read_bytes())
    models = predict.__closure__[0].cell_contents.models
    assert models["target"].text == lgb.Booster(model_file=str(model_dir / "model_target.txt")).model_to_string()


@pytest.mark.parametrize("argv, message", [
    (["live", "{model}", "-o", "{tmp}/x.parquet"], "give --data DIR"),
    (["live", "{tmp}/nothing", "--data", "{tmp}", "-o", "{tmp}/x.parquet"], "is not a model directory"),
    (["live", "{model}", "--live", "{tmp}/missing.parquet", "-o", "{tmp}/x.parquet"], "missing.parquet"),
    (["export", "{tmp}/nothing", "-o", "{tmp}/m.pkl"], "is not a model directory"),
    (["export", "{model}", "-o", "{tmp}/nodir/m.pkl"], "there is no directory"),
    (["live", "{model}", "--data", "{data}", "-o", "{tmp}/nodir/x.parquet"], "there is no directory"),
])
def test_bad_live_and_export_input_is_a_one_line_error(model_dir, synth_dir, tmp_path, argv, message):
    args = [a.format(model=model_dir, tmp=tmp_path, data=synth_dir) for a in argv]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "m.pkl").exists()
