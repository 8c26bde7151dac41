"""Scoring and neutralizing prediction files against a store; numerai-tools is the oracle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from numerai_tools import scoring as nt

from eraflow.cli import cli
from eraflow.engine import InputError, open_store
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.evaluation.scoring import era_batches, meta_model_values, neutralize_aligned, score_aligned


@pytest.fixture(scope="module")
def frames(synth_dir):
    """Train + validation as pandas (the oracle's view) and a shuffled prediction file."""
    df = pd.concat([pd.read_parquet(synth_dir / "train.parquet"), pd.read_parquet(synth_dir / "validation.parquet")])
    return df.set_index("id")


@pytest.fixture
def preds_file(frames, tmp_path):
    rng = np.random.default_rng(3)
    f = [c for c in frames.columns if c.startswith("feature")]
    preds = pd.DataFrame({"id": frames.index,
                          "prediction": frames[f[0]] + frames[f[5]] + rng.normal(0, 1, len(frames)),
                          "noise": rng.random(len(frames))}).sample(frac=1.0, random_state=4)
    path = tmp_path / "preds.parquet"
    preds.to_parquet(path, index=False)
    return path


def test_alignment_puts_rows_in_store_order(store_path, preds_file):
    store = open_store(store_path)
    aligned = align_predictions(store, preds_file)
    assert aligned.columns == ["prediction", "noise"]
    np.testing.assert_array_equal(aligned.rows, np.arange(store.n_rows))
    assert list(aligned.ids) == list(store.ids)
    truth = pd.read_parquet(preds_file).set_index("id").loc[store.ids]
    np.testing.assert_array_equal(aligned.values, truth[["prediction", "noise"]].to_numpy())


def test_scores_equal_numerai_tools_per_era(store_path, preds_file, frames):
    store = open_store(store_path)
    aligned = align_predictions(store, preds_file)
    scores = score_aligned(store, aligned, "target_ender_60")
    preds = pd.read_parquet(preds_file).set_index("id")
    data = frames.join(preds)
    for k, era in enumerate(scores.eras):
        part = data[data.era == era].sort_index()
        part = part[part.target_ender_60.notna()]
        if part.empty:
            assert np.isnan(scores.corr[k]).all()
            continue
        want = nt.numerai_corr(part[["prediction", "noise"]], part.target_ender_60)
        np.testing.assert_allclose(scores.corr[k], want.to_numpy(), atol=1e-6, err_msg=f"era {era}")
        f = [c for c in part.columns if c.startswith("feature")]
        want_exposure = [nt.max_feature_correlation(part[c], part[f], False)[1] for c in ("prediction", "noise")]
        np.testing.assert_allclose(scores.exposure_max[k], want_exposure, atol=1e-6, err_msg=f"era {era}")


def test_mmc_equals_numerai_tools_on_validation(store_path, synth_dir, tmp_path):
    store = open_store(store_path)
    valid = pd.read_parquet(synth_dir / "validation.parquet").set_index("id")
    meta = pd.read_parquet(synth_dir / "meta_model.parquet").set_index("id")["numerai_meta_model"]
    preds = pd.DataFrame({"prediction": valid.filter(like="feature").iloc[:, :3].sum(axis=1).astype(float)})
    path = tmp_path / "p.parquet"
    preds.reset_index().to_parquet(path, index=False)
    aligned = align_predictions(store, path)
    scores = score_aligned(store, aligned, "target", meta_model_values(store, aligned, synth_dir / "meta_model.parquet",
                                                                       None))
    for k, era in enumerate(scores.eras):
        part = valid[valid.era == era].sort_index()
        part = part[part.target.notna()]
        if part.empty:
            continue
        want = nt.correlation_contribution(preds.loc[part.index], meta.loc[part.index], part.target)
        np.testing.assert_allclose(scores.mmc[k], want.to_numpy(), atol=1e-6, err_msg=f"era {era}")
    summary = scores.summary()[0]
    assert summary["eras"] == int(np.isfinite(scores.corr[:, 0]).sum())
    assert summary["mmc_mean"] == pytest.approx(np.nanmean(scores.mmc))


def test_neutralized_file_is_orthogonal_to_the_feature_set(store_path, preds_file, tmp_path):
    out = tmp_path / "neutral.parquet"
    result = CliRunner().invoke(cli, ["neutralize", str(preds_file), "--store", str(store_path), "--feature-set",
                                      "small", "--proportion", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    store = open_store(store_path)
    got = pq.read_table(out).to_pandas().set_index("id").loc[store.ids]
    assert list(got.era) == list(np.repeat(store.eras, np.diff(store.offsets)))
    cols = [store.feature_names.index(f) for f in store.feature_sets["small"]]
    for k in range(store.n_eras):
        rows = slice(store.offsets[k], store.offsets[k + 1])
        f1 = np.column_stack([store.features[rows][:, cols].astype(float), np.ones(rows.stop - rows.start)])
        residual = got[["prediction", "noise"]].to_numpy()[rows]
        np.testing.assert_allclose(f1.T @ residual, 0, atol=1e-6 * len(residual), err_msg=f"era {k}")


def test_neutralize_at_zero_proportion_changes_nothing(store_path, preds_file):
    store = open_store(store_path)
    aligned = align_predictions(store, preds_file)
    np.testing.assert_allclose(neutralize_aligned(store, aligned, None, 0.0), aligned.values)


def test_era_batches_respect_the_budget():
    offsets = np.array([0, 10, 30, 35, 80, 81])
    assert list(era_batches(offsets, 1, budget=30)) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert list(era_batches(offsets, 1, budget=50)) == [(0, 3), (3, 5)]
    assert list(era_batches(offsets, 1, budget=5)) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_score_cli_json_and_per_era_table(store_path, preds_file, synth_dir, tmp_path):
    per_era = tmp_path / "per_era.parquet"
    result = CliRunner().invoke(cli, ["score", str(preds_file), "--store", str(store_path), "--target", "target",
                                      "--target", "target_ender_20", "--per-era", str(per_era), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["prediction"], r["target"]) for r in rows] == [
        ("prediction", "target"), ("noise", "target"), ("prediction", "target_ender_20"), ("noise", "target_ender_20")]
    assert rows[0]["corr_mean"] == pytest.approx(rows[2]["corr_mean"]), "target is target_ender_20"
    table = pl.read_parquet(per_era)
    store = open_store(store_path)
    assert len(table) == 2 * 2 * store.n_eras
    noise = table.filter((pl.col("prediction") == "noise") & (pl.col("target") == "target"))
    mean = np.nanmean(noise["numerai_corr"].to_numpy())
    assert mean == pytest.approx(rows[1]["corr_mean"])


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.assign(id=d.id.where(d.index != 0, "nope")), "ids of preds.parquet are not in the store"),
    (lambda d: d.iloc[: len(d) // 3], "at least 99% needed"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate id"),
    (lambda d: d.drop(columns="id"), "has no `id` column"),
    (lambda d: d[["id"]], "has no prediction columns"),
])
def test_bad_prediction_files_are_one_line_errors(store_path, preds_file, edit, message):
    edit(pd.read_parquet(preds_file)).to_parquet(preds_file, index=False)
    result = CliRunner().invoke(cli, ["score", str(preds_file), "--store", str(store_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_unknown_target_is_refused(store_path, preds_file):
    with pytest.raises(InputError, match="unknown target"):
        score_aligned(open_store(store_path), align_predictions(open_store(store_path), preds_file), "target_x")
