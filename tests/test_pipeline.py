"""eraflow run PIPELINE.toml: every step, skipping unchanged ones, and config errors before any work."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.errors import InputError
from eraflow.engine.evaluation.ledger import list_runs
from eraflow.engine.numerai.pipeline import load_pipeline, run_pipeline

PIPELINE = """
workdir = "work"

[data]
source = "synthetic"
eras = 30
rows_per_era = 120
features = 24
seed = 3

[ingest]
targets = ["target*"]

[train]
targets = ["target", "target_*_20"]
params = "fast.toml"
cv = 2
valid_eras = "0024:"

[postprocess]
column = "ensemble"
neutralize = {neutralize}
feature_set = "medium"

[evaluate]
meta_model = true
benchmark = "oracle.parquet"

[live]
"""
FAST_PARAMS = 'preset = "starter"\nn_estimators = 40\nlearning_rate = 0.1\nnum_threads = 2\n'
ALL_STEPS = ["data", "ingest", "train", "postprocess", "validate", "evaluate", "live"]


def write_pipeline(tmp_path, neutralize=0.5, text=PIPELINE):
    (tmp_path / "fast.toml").write_text(FAST_PARAMS)
    path = tmp_path / "pipeline.toml"
    path.write_text(text.replace("{neutralize}", str(neutralize)))
    return path


def statuses(result) -> dict[str, str]:
    return {name: status for name, status, _ in result.steps}


def test_pipeline_runs_every_step_then_skips_what_did_not_change(tmp_path, private_ledger):
    path = write_pipeline(tmp_path)
    first = run_pipeline(path)
    assert statuses(first) == dict.fromkeys(ALL_STEPS, "ran")
    work = tmp_path / "work"
    metrics = json.loads((work / "report" / "metrics.json").read_text())
    assert [r["prediction"] for r in metrics["summary"]] == [
        "pred_target", "pred_target_ender_20", "pred_target_cyrus_20", "ensemble", "prediction"]
    assert {"mmc_mean", "bmc_mean", "feature_neutral_mean"} <= set(metrics["summary"][0])
    assert metrics["eras"][0] == "0024"
    live = pd.read_parquet(work / "live_predictions.parquet")
    assert list(live.columns) == ["id", "prediction"] and live.prediction.between(0, 1).all()
    assert list(live.id) == list(pd.read_parquet(work / "data" / "live.parquet").id)
    assert [r["kind"] for r in list_runs(private_ledger)] == ["evaluate", "train"]
    model_json = json.loads((work / "model" / "model.json").read_text())
    assert model_json["postprocess"]["proportion"] == 0.5
    assert model_json["postprocess"]["features"] == open_store(work / "store").feature_sets["medium"]

    again = run_pipeline(path)
    assert statuses(again) == dict.fromkeys(ALL_STEPS, "skipped")
    assert again.summary == first.summary

    trained = (work / "model" / "model_target.txt").stat().st_mtime_ns
    edited = run_pipeline(write_pipeline(tmp_path, neutralize=1.0))
    assert statuses(edited) == {**dict.fromkeys(ALL_STEPS[:3], "skipped"), **dict.fromkeys(ALL_STEPS[3:], "ran")}
    assert (work / "model" / "model_target.txt").stat().st_mtime_ns == trained
    changed = {r["prediction"]: r["mean"] for r in edited.summary}
    assert changed["ensemble"] == pytest.approx({r["prediction"]: r["mean"] for r in first.summary}["ensemble"])
    assert changed["prediction"] != pytest.approx({r["prediction"]: r["mean"] for r in first.summary}["prediction"])


def test_editing_the_parameter_file_retrains(tmp_path):
    path = write_pipeline(tmp_path)
    run_pipeline(path)
    (tmp_path / "fast.toml").write_text(FAST_PARAMS.replace("n_estimators = 40", "n_estimators = 30"))
    assert statuses(run_pipeline(path)) == {**dict.fromkeys(ALL_STEPS[:2], "skipped"),
                                            **dict.fromkeys(ALL_STEPS[2:], "ran")}


def test_a_lost_output_or_state_is_rebuilt(tmp_path):
    path = write_pipeline(tmp_path)
    run_pipeline(path)
    (tmp_path / "work" / "live_predictions.parquet").unlink()
    assert statuses(run_pipeline(path))["live"] == "ran"
    (tmp_path / "work" / "pipeline.json").write_text("{not json")
    assert set(statuses(run_pipeline(path)).values()) == {"ran"}, "an unreadable state re-runs every step"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t + "\n[tuning]\nx = 1\n", "unknown section [tuning]"),
    (lambda t: t.replace("cv = 2", "cv = 2\nlr = 0.1"), "unknown key 'lr'"),
    (lambda t: t.replace("cv = 2", 'cv = "two"'), "cv must be a whole number"),
    (lambda t: t.replace('source = "synthetic"', 'source = "kaggle"'), "choose one of synthetic, numerai"),
    (lambda t: t.replace('source = "synthetic"', 'source = "numerai"'), "needs version"),
    (lambda t: t.replace('source = "synthetic"\n', ""), "[data] needs source"),
    (lambda t: t.replace("{neutralize}", "2.0"), "neutralize must lie in [0, 1]"),
    (lambda t: t.replace('valid_eras = "0024:"', ""), "[evaluate] needs eras"),
    (lambda t: t.replace('params = "fast.toml"', 'params = "nope.toml"'), "neither a preset"),
    (lambda t: t.replace('targets = ["target*"]', 'targets = "target*"'), "non-empty list of strings"),
    (lambda t: t + "\n[submit]\ndry_run = true\n", "[submit] needs model"),
    (lambda t: t.replace("[live]", "[live\n"), "is not valid TOML"),
])
def test_bad_pipeline_files_fail_before_any_work(tmp_path, edit, message):
    path = write_pipeline(tmp_path, text=edit(PIPELINE))
    with pytest.raises(InputError) as info:
        run_pipeline(path)
    assert message in str(info.value)
    assert not (tmp_path / "work").exists()
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_cli_prints_steps_report_and_headline_metrics(tmp_path):
    path = write_pipeline(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:len(ALL_STEPS)]] == ALL_STEPS
    assert f"report: {tmp_path / 'work' / 'report' / 'report.html'}" in result.stdout
    assert any(line.split()[0] == "prediction" and "sharpe" in line for line in lines)
    assert load_pipeline(path).workdir == tmp_path / "work"
    assert any(line.startswith("train target fold 1/2:") and "done at round" in line
               for line in result.stderr.splitlines()), result.stderr


def test_era_step_reaches_training(tmp_path):
    path = write_pipeline(tmp_path, text=PIPELINE.replace("cv = 2", "cv = 2\nera_step = 2"))
    run_pipeline(path)
    meta = json.loads((tmp_path / "work" / "model" / "model.json").read_text())
    assert meta["config"]["era_step"] == 2


@pytest.mark.parametrize("name", ["demo.toml", "numerai_weekly.toml"])
def test_example_pipelines_are_valid(name):
    pipe = load_pipeline(Path(__file__).parent.parent / "examples" / name)
    assert pipe.section("data")["source"] in ("synthetic", "numerai")


NUMERAI_PIPELINE = """
[data]
source = "numerai"
version = "v5.2"
directory = "numerai-data"

[train]
targets = ["target"]
params = "fast.toml"

[postprocess]
neutralize = 0.5

[submit]
model = "my_model"
"""


def _served(synth: Path) -> dict[str, bytes]:
    names = ["train.parquet", "validation.parquet", "live.parquet", "features.json", "meta_model.parquet"]
    return {f"v5.2/{name}": (synth / name).read_bytes() for name in names}


def test_numerai_round_trip_downloads_trains_once_and_submits_each_round(tmp_path):
    from eraflow.engine.data.synth import SynthSpec, write_synthetic
    from tests.test_numerai import FakeNumerAPI

    spec = {"eras": 24, "rows_per_era": 80, "features": 16, "seed": 5}
    write_synthetic(tmp_path / "round1", SynthSpec(**spec))
    write_synthetic(tmp_path / "round2", SynthSpec(**{**spec, "seed": 6}))
    api = FakeNumerAPI(_served(tmp_path / "round1"), round_num=100)
    path = write_pipeline(tmp_path, text=NUMERAI_PIPELINE)

    first = run_pipeline(path, client_factory=lambda auth: api)
    assert statuses(first) == dict.fromkeys(["data", "ingest", "train", "postprocess", "live", "submit"], "ran")
    served = (tmp_path / "round1" / "train.parquet").read_bytes()
    assert (tmp_path / "numerai-data" / "train.parquet").read_bytes() == served
    (_, model_id, uploaded), = api.uploads
    assert model_id == "model-uuid-1"
    sent = pd.read_csv(io.BytesIO(uploaded))
    assert list(sent.columns) == ["id", "prediction"]
    assert sorted(sent.id) == sorted(pd.read_parquet(tmp_path / "round1" / "live.parquet").id)

    same_round = run_pipeline(path, client_factory=lambda auth: api)
    assert statuses(same_round) == {"data": "ran", **dict.fromkeys(
        ["ingest", "train", "postprocess", "live", "submit"], "skipped")}
    assert len(api.uploads) == 1

    api.round = 101
    api.files["v5.2/live.parquet"] = (tmp_path / "round2" / "live.parquet").read_bytes()
    next_round = run_pipeline(path, client_factory=lambda auth: api)
    assert statuses(next_round) == {"data": "ran", "ingest": "skipped", "train": "skipped",
                                    "postprocess": "skipped", "live": "ran", "submit": "ran"}
    assert sorted(pd.read_csv(io.BytesIO(api.uploads[-1][2])).id) == sorted(
        pd.read_parquet(tmp_path / "round2" / "live.parquet").id)


def test_a_workdir_of_the_earlier_state_format_runs_again_whole(tmp_path):
    """Its fixed files predate eraflow's output marker: they are removed and every step re-runs."""
    path = write_pipeline(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "pipeline.json").write_text(json.dumps({"data": "0f3a", "train": "9b1c"}))
    pd.DataFrame({"id": ["a"], "prediction": [0.5]}).to_parquet(work / "live_predictions.parquet")
    result = run_pipeline(path)
    assert statuses(result) == dict.fromkeys(ALL_STEPS, "ran")
    assert len(pd.read_parquet(work / "live_predictions.parquet")) > 1
