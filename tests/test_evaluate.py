"""eraflow evaluate: per-era metrics against numerai-tools, the report files, the ledger record."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from numerai_tools import scoring as nt

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.evaluation.evaluate import EvaluateOptions, evaluate_predictions
from eraflow.engine.evaluation.ledger import show_run
from eraflow.engine.evaluation.metrics import score_summary
from eraflow.engine.evaluation.report import PLOTS


@pytest.fixture
def preds_file(synth_dir, tmp_path):
    valid = pd.read_parquet(synth_dir / "validation.parquet")
    f = [c for c in valid.columns if c.startswith("feature")]
    rng = np.random.default_rng(9)
    preds = pd.DataFrame({"id": valid.id, "a": valid[f[0]] + valid[f[7]] + rng.normal(0, 1, len(valid)),
                          "b": rng.random(len(valid))})
    path = tmp_path / "preds.parquet"
    preds.to_parquet(path, index=False)
    return path


def test_per_era_metrics_match_numerai_tools(store_path, synth_dir, preds_file):
    store = open_store(store_path)
    options = EvaluateOptions(feature_set="small", meta_model=synth_dir / "meta_model.parquet")
    ev = evaluate_predictions(store, preds_file, options)
    valid = pd.read_parquet(synth_dir / "validation.parquet").set_index("id")
    preds = pd.read_parquet(preds_file).set_index("id")
    small = store.feature_sets["small"]
    checked = 0
    for k, era in enumerate(ev.eras):
        part = valid[valid.era == era].sort_index()
        part = part[part.target.notna()]
        if part.empty:
            assert np.isnan(ev.per_era["corr"][k]).all()
            continue
        p = preds.loc[part.index]
        np.testing.assert_allclose(ev.per_era["corr"][k], nt.numerai_corr(p, part.target), atol=1e-6, err_msg=era)
        np.testing.assert_allclose(ev.per_era["fnc"][k], nt.feature_neutral_corr(p, part[small], part.target),
                                   atol=1e-6, err_msg=era)
        np.testing.assert_allclose(ev.per_era["tb200"][k], nt.numerai_corr(p, part.target, top_bottom=200)
                                   if len(part) > 400 else ev.per_era["tb200"][k], atol=1e-6, err_msg=era)
        np.testing.assert_allclose(ev.per_era["target_mean"][k, 0], part.target.mean(), rtol=1e-6)
        checked += 1
    assert checked >= 2
    row = ev.summary()[0]
    assert {k: row[k] for k in score_summary(ev.per_era["corr"][:, 0])} == score_summary(ev.per_era["corr"][:, 0])
    assert row["max_feature_exposure"] == pytest.approx(np.nanmean(ev.per_era["exposure_max"][:, 0]))
    assert {"mmc_mean", "corr_with_meta_model", "apy", "smart_sharpe", "tb200_sharpe"} <= set(row)


def test_fnc_defaults_to_numerais_fncv3_set_and_exposure_to_all_features(store_path, preds_file):
    store = open_store(store_path)
    calls = []
    default = evaluate_predictions(store, preds_file, progress=lambda *call: calls.append(call))
    assert {stage for stage, _, _ in calls} == {"evaluate"} and sum(rows for _, rows, _ in calls) == calls[0][2]
    fncv3 = evaluate_predictions(store, preds_file, EvaluateOptions(feature_set="fncv3_features"))
    every = evaluate_predictions(store, preds_file, EvaluateOptions(feature_set="all"))
    assert default.feature_sets == {"exposure": "all", "neutral": "fncv3_features"}
    assert 2 <= len(store.feature_sets["fncv3_features"]) < len(store.feature_names)
    for key in ("fnc", "neutral_corr"):
        np.testing.assert_array_equal(default.per_era[key], fncv3.per_era[key])
        assert not np.allclose(default.per_era[key], every.per_era[key], equal_nan=True)
    np.testing.assert_array_equal(default.per_era["exposure_max"], every.per_era["exposure_max"])


def test_report_files_decode_and_the_run_is_recorded(store_path, synth_dir, preds_file, tmp_path, private_ledger):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["evaluate", str(preds_file), "--store", str(store_path), "-o", str(out),
                                      "--meta-model", str(synth_dir / "meta_model.parquet"), "--benchmark",
                                      str(synth_dir / "oracle.parquet"), "--feature-set", "small", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for name in PLOTS:
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0, name
    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(PLOTS)
    assert base64.b64decode(embedded[0]) == (out / "corr_bars.png").read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"][0]["mean"] == pytest.approx(report["summary"][0]["mean"])
    assert report["summary"][0]["bmc_mean"] is not None and "corr_with_benchmark" in report["summary"][1]
    run = show_run(report["run_id"])
    assert run["kind"] == "evaluate" and set(run["metrics"]) == {"a", "b"}
    assert len(run["per_era"]) == 2 * len(metrics["eras"])


def test_model_plots_and_era_range(store_path, preds_file, tmp_path):
    from eraflow.engine.models.params import load_params
    from eraflow.engine.models.train import TrainConfig, train_models

    store = open_store(store_path)
    train_models(store, tmp_path / "m", TrainConfig(params={**load_params("starter"), "n_estimators": 20}))
    out = tmp_path / "report"
    last = store.eras[-3]
    result = CliRunner().invoke(cli, ["evaluate", str(preds_file), "--store", str(store_path), "-o", str(out),
                                      "--model", str(tmp_path / "m"), "--eras", f"{last}:"])
    assert result.exit_code == 0, result.output
    assert matplotlib.image.imread(out / "shap_summary.png").shape[0] > 200
    assert matplotlib.image.imread(out / "feature_gain.png").shape[0] > 200
    assert json.loads((out / "metrics.json").read_text())["eras"] == store.eras[-3:]


def test_evaluate_bad_input(store_path, preds_file, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(preds_file), "--store", str(store_path), "-o",
                                      str(tmp_path / "r"), "--eras", "0001:0002"])
    assert result.exit_code == 2 and "predicts no era in 0001:0002" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(store_path, preds_file, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    out = tmp_path / "report"
    assert CliRunner().invoke(cli, ["evaluate", str(preds_file), "--store", str(store_path), "-o", str(out)]).exit_code == 0
    shot = tmp_path / "page.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1100,3000", (out / "report.html").as_uri()], check=True, timeout=60,
                   capture_output=True)
    assert matplotlib.image.imread(shot).std() > 0
