"""What a participant meets around `score`, `evaluate` and `neutralize` (issue 11): the terminal
summary, Numerai's benchmark files, the report (eras without target, decile plot, provenance, units,
escaping), non-finite and huge predictions, zero-row and CSV files, neutralize's options."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from numerai_tools import scoring as nt

from eraflow.cli import cli
from eraflow.engine import IngestOptions, InputError, ingest_files, open_store
from eraflow.engine.evaluation.evaluate import DECILES, EvaluateOptions, evaluate_predictions
from eraflow.engine.evaluation.predictions import align_predictions
from eraflow.engine.evaluation.report import decile_means
from eraflow.engine.evaluation.scoring import neutralize_aligned
from eraflow.engine.version import eraflow_version
from eraflow.kernels import feature_exposure, pearson
from tests.conftest import tiny_frame, write_parquet
from tests.test_kernels_cases import BACKENDS

BENCHMARKS = ["v52_lgbm_ender20", "v52_lgbm_cyrusd20"]


@pytest.fixture
def preds(synth_dir, tmp_path) -> Path:
    """Validation predictions: `a` follows two features, `b` is noise."""
    valid = pd.read_parquet(synth_dir / "validation.parquet")
    f = [c for c in valid.columns if c.startswith("feature")]
    rng = np.random.default_rng(11)
    path = tmp_path / "preds.parquet"
    pd.DataFrame({"id": valid.id, "a": valid[f[0]] + valid[f[3]] + rng.normal(0, 1, len(valid)),
                  "b": rng.random(len(valid))}).to_parquet(path, index=False)
    return path


@pytest.fixture
def benchmark_file(synth_dir, tmp_path) -> Path:
    """Shaped like Numerai's validation_benchmark_models.parquet: `id` index, `era`, `data_type` and
    several model columns; plus rows of ids the store does not have."""
    valid = pd.read_parquet(synth_dir / "validation.parquet")
    oracle = pd.read_parquet(synth_dir / "oracle.parquet").set_index("id").loc[valid.id, "oracle"].to_numpy()
    rng = np.random.default_rng(12)
    n = len(valid) + 3
    frame = pd.DataFrame({"era": [*valid.era, "9999", "9999", "9999"], "data_type": "validation",
                          BENCHMARKS[0]: np.r_[oracle + rng.normal(0, 0.5, len(valid)), 0.1, 0.2, 0.3],
                          BENCHMARKS[1]: rng.random(n)},
                         index=pd.Index([*valid.id, "extra0", "extra1", "extra2"], name="id"))
    path = tmp_path / "validation_benchmark_models.parquet"
    frame.to_parquet(path)
    return path


def _header(stdout: str) -> list[str]:
    return re.split(r"\s{2,}", stdout.splitlines()[0].strip())


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# 1. the terminal summary

def test_score_and_evaluate_print_corr_mean_std_sharpe_and_drawdown(store_path, synth_dir, preds, tmp_path):
    meta = str(synth_dir / "meta_model.parquet")
    score = CliRunner().invoke(cli, ["score", str(preds), "--store", str(store_path), "--meta-model", meta])
    evaluate = CliRunner().invoke(cli, ["evaluate", str(preds), "--store", str(store_path), "-o", str(tmp_path / "r"),
                                        "--meta-model", meta, "--benchmark", str(synth_dir / "oracle.parquet")])
    assert score.exit_code == 0 and evaluate.exit_code == 0, score.output + evaluate.output
    corr = ["prediction", "target", "eras", "corr", "std", "sharpe", "max dd", "mmc", "mmc std", "mmc sharpe"]
    assert _header(score.stdout) == [*corr, "max exposure"]
    assert _header(evaluate.stdout) == [*corr, "neutral mmc", "neutral mmc sharpe", "bmc", "bmc std", "bmc sharpe",
                                        "max exposure"]
    score_rows = [line.split() for line in score.stdout.splitlines()[1:]]
    evaluate_rows = [line.split() for line in evaluate.stdout.splitlines()[1:3]]
    assert [r[:10] for r in evaluate_rows] == [r[:10] for r in score_rows], "the same numbers in both"
    assert [r[-1] for r in evaluate_rows] == [r[-1] for r in score_rows]
    summary = evaluate_predictions(open_store(store_path), preds).summary()
    assert evaluate_rows[0][3:7] == [f"{summary[0][k]:.4f}" for k in ("mean", "std", "sharpe", "max_drawdown")]
    with_meta = evaluate_predictions(open_store(store_path), preds, EvaluateOptions(meta_model=meta)).summary()
    assert evaluate_rows[0][10:12] == [f"{with_meta[0][k]:.4f}" for k in ("neutral_mmc_mean", "neutral_mmc_sharpe")]


# 2. benchmark files with several columns; --benchmark-column, --meta-column

def test_bmc_against_each_benchmark_column(store_path, synth_dir, preds, benchmark_file, tmp_path):
    store = open_store(store_path)
    ev = evaluate_predictions(store, preds, EvaluateOptions(benchmark=benchmark_file))
    assert ev.benchmarks == BENCHMARKS
    row = ev.summary()[0]
    for name in BENCHMARKS:
        single = tmp_path / f"{name}.parquet"
        pd.read_parquet(benchmark_file)[[name]].reset_index().to_parquet(single, index=False)
        one = evaluate_predictions(store, preds, EvaluateOptions(benchmark=single))
        np.testing.assert_array_equal(ev.per_era[f"bmc_{name}"], one.per_era["bmc"])
        assert row[f"bmc_{name}_mean"] == one.summary()[0]["bmc_mean"]
        assert row[f"corr_with_{name}"] == one.summary()[0]["corr_with_benchmark"]
    valid = pd.read_parquet(synth_dir / "validation.parquet").set_index("id")
    bench = pd.read_parquet(benchmark_file)[BENCHMARKS[0]]
    p = pd.read_parquet(preds).set_index("id")
    checked = 0
    for k, era in enumerate(ev.eras):
        part = valid[(valid.era == era) & valid.target.notna()].sort_index()
        if len(part):
            want = nt.correlation_contribution(p.loc[part.index], bench.loc[part.index], part.target)
            np.testing.assert_allclose(ev.per_era[f"bmc_{BENCHMARKS[0]}"][k], want.to_numpy(), atol=1e-6, err_msg=era)
            checked += 1
    assert checked >= 2


def test_benchmark_and_meta_column_options(store_path, preds, benchmark_file, tmp_path):
    base = ["evaluate", str(preds), "--store", str(store_path), "--json"]
    chosen = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r1"), "--benchmark", str(benchmark_file),
                                      "--benchmark-column", BENCHMARKS[1]])
    assert chosen.exit_code == 0, chosen.output
    row = json.loads(chosen.stdout)["summary"][0]
    assert "bmc_mean" in row and "corr_with_benchmark" in row and not any(k.startswith("bmc_v52") for k in row)
    metrics = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert metrics["provenance"]["benchmark_columns"] == [BENCHMARKS[1]]
    both = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r2"), "--benchmark", str(benchmark_file),
                                    "--benchmark-column", ",".join(BENCHMARKS)])
    assert {f"bmc_{n}_sharpe" for n in BENCHMARKS} <= set(json.loads(both.stdout)["summary"][0])
    unknown = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r3"), "--benchmark", str(benchmark_file),
                                       "--benchmark-column", "v9_nope"])
    _one_line_error(unknown, "v9_nope", BENCHMARKS[0])
    several = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r4"), "--meta-model", str(benchmark_file)])
    _one_line_error(several, "--meta-column")
    meta = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r5"), "--meta-model", str(benchmark_file),
                                    "--meta-column", BENCHMARKS[0]])
    assert meta.exit_code == 0, meta.output
    assert "mmc_mean" in json.loads(meta.stdout)["summary"][0]


# 3. the report

def test_report_says_which_eras_have_no_target_and_where_inputs_came_from(store_path, synth_dir, preds,
                                                                          benchmark_file, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["evaluate", str(preds), "--store", str(store_path), "-o", str(out),
                                      "--meta-model", str(synth_dir / "meta_model.parquet"),
                                      "--benchmark", str(benchmark_file)])
    assert result.exit_code == 0, result.output
    store = open_store(store_path)
    metrics = json.loads((out / "metrics.json").read_text())
    t = store.target_names.index("target")
    no_target = [era for k, era in enumerate(store.eras) if era in metrics["eras"]
                 and np.isnan(store.targets[store.offsets[k]:store.offsets[k + 1], t]).all()]
    assert metrics["eras_without_target"] == no_target and no_target
    page = (out / "report.html").read_text(encoding="utf-8")
    scored = len(metrics["eras"]) - len(no_target)
    assert (f"{len(metrics['eras'])} eras evaluated" in page and f"{scored} eras have target values" in page
            and f"{len(no_target)} have no target value and get no score: {', '.join(no_target)}" in page)
    assert metrics["summary"][0]["eras"] == scored
    sources = metrics["provenance"]
    assert sources["predictions"] == str(preds.resolve()) and sources["store"] == str(store_path.resolve())
    assert sources["store_fingerprint"] == store.fingerprint and sources["eraflow_version"] == eraflow_version()
    assert sources["meta_model"] == str((synth_dir / "meta_model.parquet").resolve())
    assert sources["benchmark"] == str(benchmark_file.resolve()) and sources["benchmark_columns"] == BENCHMARKS
    assert abs(datetime.fromisoformat(sources["created"]) - datetime.now(timezone.utc)) < timedelta(minutes=5)
    for value in (sources["predictions"], sources["benchmark"], store.fingerprint, ", ".join(BENCHMARKS)):
        assert f"<td>{value}</td>" in page
    apy = metrics["summary"][0]["apy"]
    assert "apy <small>(% per year: per-era corr compounded over 52 eras)</small>" in page
    assert f"<td>{100 * apy:.2f} %</td>" in page and "calmar_ratio <small>(ratio" in page


def test_mean_target_per_prediction_decile_matches_pandas(store_path, synth_dir, preds):
    store = open_store(store_path)
    ev = evaluate_predictions(store, preds)
    valid = pd.read_parquet(synth_dir / "validation.parquet").set_index("id")
    p = pd.read_parquet(preds).set_index("id")
    checked = 0
    for k, era in enumerate(ev.eras):
        part = valid[valid.era == era]
        if part.target.isna().all():
            assert np.isnan(ev.per_era["target_by_decile"][k]).all()
            continue
        centered = part.target - part.target.mean()
        for j, column in enumerate(ev.columns):
            x = p.loc[part.index, column][part.target.notna()]
            decile = np.floor(DECILES * (x.rank(method="average") - 0.5) / len(x)).astype(int)
            want = centered[x.index].groupby(decile).mean().reindex(range(DECILES))
            np.testing.assert_allclose(ev.per_era["target_by_decile"][k, j], want.to_numpy(), atol=1e-12,
                                       err_msg=f"era {era} column {column}")
            checked += 1
    assert checked >= 4
    oracle = evaluate_predictions(store, synth_dir / "oracle.parquet", EvaluateOptions(eras=f"{ev.eras[0]}:"))
    means = decile_means(oracle)[0]
    assert means[-1] > 0 > means[0], "a good model's top decile beats its bottom decile"


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)


def test_report_escapes_era_labels_column_and_feature_set_names(tmp_path):
    cols = tiny_frame(n_eras=3, rows=40, n_features=4, seed=3)
    cols["era"] = [{"0002": "<script>alert(1)</script>"}.get(e, e) for e in cols["era"]]
    source = write_parquet(tmp_path / "data.parquet", cols)
    (tmp_path / "features.json").write_text(json.dumps({"feature_sets": {"<i>set</i>": ["feature_0", "feature_1"]},
                                                        "targets": ["target"]}))
    store = tmp_path / "store"
    ingest_files([source], store, IngestOptions(features_json=tmp_path / "features.json"))
    rng = np.random.default_rng(4)
    preds = tmp_path / "<em onmouseover=alert(3)>.parquet"
    pd.DataFrame({"id": cols["id"], "<img src=x onerror=alert(2)>": rng.random(120),
                  r"$\bad$": rng.random(120)}).to_parquet(preds, index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["evaluate", str(preds), "--store", str(store), "-o", str(out),
                                      "--feature-set", "<i>set</i>"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    assert parser.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "table", "tr",
                           "th", "td", "small", "figure", "img", "figcaption"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "&lt;i&gt;set&lt;/i&gt;" in page
    assert "&lt;em onmouseover=alert(3)&gt;.parquet" in page


# 4. non-finite and huge predictions; exposure and Pearson for any finite magnitude

def test_infinite_predictions_are_refused_before_any_work(store_path, preds, tmp_path):
    frame = pd.read_parquet(preds)
    frame.loc[7, "b"] = -np.inf
    frame.loc[3, "a"] = np.nan  # a missing prediction is fine
    frame.to_parquet(preds, index=False)
    with pytest.raises(InputError, match=f"prediction column b is -inf for id '{frame.id[7]}'"):
        align_predictions(open_store(store_path), preds)
    result = CliRunner().invoke(cli, ["evaluate", str(preds), "--store", str(store_path), "-o", str(tmp_path / "r")])
    _one_line_error(result, "prediction column b is -inf", frame.id[7])
    assert not (tmp_path / "r").exists()
    frame.loc[7, "b"] = 0.5
    frame.to_parquet(preds, index=False)
    ok = CliRunner().invoke(cli, ["evaluate", str(preds), "--store", str(store_path), "-o", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("scale", [1e-200, 1e200, 1e300])
def test_huge_and_tiny_predictions_evaluate_like_ordinary_ones(store_path, synth_dir, preds, tmp_path, scale):
    store = open_store(store_path)
    options = EvaluateOptions(meta_model=synth_dir / "meta_model.parquet")
    scaled = tmp_path / "scaled.parquet"
    frame = pd.read_parquet(preds)
    frame.assign(a=frame.a * scale, b=frame.b * scale).to_parquet(scaled, index=False)
    want, got = evaluate_predictions(store, preds, options), evaluate_predictions(store, scaled, options)
    for key in ("corr", "exposure_max", "exposure_rms", "corr_with_meta_model", "mmc", "fnc"):
        np.testing.assert_allclose(got.per_era[key], want.per_era[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert CliRunner().invoke(cli, ["evaluate", str(scaled), "--store", str(store_path), "-o",
                                    str(tmp_path / "r")]).exit_code == 0


def _pandas_exposure(x: np.ndarray, features: np.ndarray) -> np.ndarray:
    """max over features of |pandas corr| per column of x (one era): numerai-tools' max_feature_correlation."""
    f = pd.DataFrame(features.astype(float))
    return np.array([f.corrwith(pd.Series(x[:, j])).abs().max() for j in range(x.shape[1])])


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(x_exp=st.integers(-290, 290), f_exp=st.integers(-290, 290), seed=st.integers(0, 2**16),
       codes=st.booleans())
def test_feature_exposure_and_pearson_hold_for_any_finite_magnitude(backend, x_exp, f_exp, seed, codes):
    rng = np.random.default_rng(seed)
    n, k = 25, 3
    offsets = np.array([0, n, 2 * n])
    base_f = rng.integers(0, 5, (2 * n, k)).astype(np.int8) if codes else rng.normal(size=(2 * n, k))
    base_x = np.column_stack([rng.normal(size=2 * n), base_f[:, 0].astype(float)])  # column 1 is a feature
    features = base_f if codes else base_f * 10.0 ** f_exp
    got = feature_exposure(base_x * 10.0 ** x_exp, features, offsets, backend=backend)
    want = np.array([_pandas_exposure(base_x[s:s + n], base_f[s:s + n]) for s in (0, n)])
    np.testing.assert_allclose(got.max_abs, want, rtol=1e-9)
    assert (got.max_abs <= 1).all() and (got.rms <= 1).all() and (got.rms > 0).all()
    r = pearson(base_x[:, 0] * 10.0 ** x_exp, base_x[:, 1] * 10.0 ** f_exp, offsets, backend=backend)
    want_r = [pd.Series(base_x[s:s + n, 0]).corr(pd.Series(base_x[s:s + n, 1])) for s in (0, n)]
    np.testing.assert_allclose(r, want_r, rtol=1e-9)


# 5. zero-row files

def test_zero_row_prediction_file_is_one_clean_line(store_path, tmp_path):
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"id": pd.Series([], dtype=str), "prediction": pd.Series([], dtype=float)}).to_parquet(empty)
    eraflow = Path(sys.executable).with_name("eraflow")
    proc = subprocess.run([eraflow, "evaluate", empty, "--store", store_path, "-o", tmp_path / "r"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and not (tmp_path / "r").exists()
    assert proc.stderr.splitlines() == [f"error: {empty} has no rows; it needs one row per id with its predictions"]
    header_only = tmp_path / "empty.csv"
    header_only.write_text("id,prediction\n")
    result = CliRunner().invoke(cli, ["score", str(header_only), "--store", str(store_path)])
    _one_line_error(result, f"{header_only} has no rows")


# 6. CSV predictions everywhere

def test_csv_predictions_are_read_by_score_evaluate_and_neutralize(store_path, preds, tmp_path):
    csv = tmp_path / "preds.csv"
    pd.read_parquet(preds).to_csv(csv, index=False)
    store = ["--store", str(store_path)]
    from_parquet = CliRunner().invoke(cli, ["score", str(preds), *store, "--json"])
    from_csv = CliRunner().invoke(cli, ["score", str(csv), *store, "--json"])
    assert from_csv.exit_code == 0, from_csv.output
    assert json.loads(from_csv.stdout) == json.loads(from_parquet.stdout)
    assert CliRunner().invoke(cli, ["evaluate", str(csv), *store, "-o", str(tmp_path / "r")]).exit_code == 0
    neutral = CliRunner().invoke(cli, ["neutralize", str(csv), *store, "-o", str(tmp_path / "n.parquet")])
    assert neutral.exit_code == 0, neutral.output
    aligned = align_predictions(open_store(store_path), csv)
    np.testing.assert_array_equal(aligned.values, align_predictions(open_store(store_path), preds).values)


def test_csv_without_numeric_columns_names_what_it_has(store_path, tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("id,prediction\nx,high\n")
    result = CliRunner().invoke(cli, ["score", str(csv), "--store", str(store_path)])
    _one_line_error(result, "has no prediction columns")


# 7. neutralize: proportion range, --rank

@pytest.mark.parametrize("proportion", ["1.5", "-0.1"])
def test_neutralize_refuses_a_proportion_outside_0_1(store_path, preds, tmp_path, proportion):
    out = tmp_path / "n.parquet"
    result = CliRunner().invoke(cli, ["neutralize", str(preds), "--store", str(store_path), "--proportion",
                                      proportion, "-o", str(out)])
    _one_line_error(result, "--proportion", "0<=x<=1")
    assert not out.exists()
    store = open_store(store_path)
    with pytest.raises(InputError, match=r"proportion must lie in \[0, 1\]"):
        neutralize_aligned(store, align_predictions(store, preds), None, float(proportion))


def test_neutralize_rank_gives_per_era_ranks(store_path, preds, tmp_path):
    out = tmp_path / "n.parquet"
    result = CliRunner().invoke(cli, ["neutralize", str(preds), "--store", str(store_path), "--proportion", "0.5",
                                      "--rank", "-o", str(out)])
    assert result.exit_code == 0, result.output
    store = open_store(store_path)
    aligned = align_predictions(store, preds)
    neutral = pd.DataFrame(neutralize_aligned(store, aligned, None, 0.5), columns=aligned.columns)
    neutral["era"] = np.repeat(aligned.era_labels(store), np.diff(aligned.offsets))
    want = neutral.groupby("era")[aligned.columns].transform(lambda c: (c.rank() - 0.5) / c.count())
    got = pd.read_parquet(out)
    assert list(got.id) == list(aligned.ids)
    np.testing.assert_allclose(got[aligned.columns].to_numpy(), want.to_numpy(), atol=1e-6)
    assert got[aligned.columns].gt(0).all().all() and got[aligned.columns].lt(1).all().all()


def test_reference_files_may_hold_ids_the_store_lacks(store_path, preds, benchmark_file):
    with pytest.raises(InputError, match="are not in the store"):
        align_predictions(open_store(store_path), benchmark_file)
    ref = align_predictions(open_store(store_path), benchmark_file, min_coverage=0.0, reference=True)
    assert ref.columns == BENCHMARKS and "extra0" not in set(ref.ids)


def test_evaluating_eras_the_model_saw_is_said(store_path, tmp_path):
    """model.json records the eras each target trained on and stopped early on; evaluate --model
    warns when the evaluated eras include them, and the report's provenance says so."""
    from eraflow.engine.evaluation.prediction_writer import write_predictions
    from eraflow.engine.models.predict import load_model, predict_table
    from eraflow.engine.models.train import TrainConfig, train_models

    fast = {"objective": "regression", "metric": "None", "verbosity": -1, "n_estimators": 10,
            "learning_rate": 0.1, "num_leaves": 7, "num_threads": 1}
    store = open_store(store_path)
    train_models(store, tmp_path / "m", TrainConfig(params=fast, train_eras="0001:0012", valid_eras="0017:0018"))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["train_eras"]["target"][-1] <= "0012" and meta["stopping_eras"]["target"] == ["0017", "0018"]
    table = predict_table(load_model(tmp_path / "m"), store)
    write_predictions(tmp_path / "p.parquet", table.ids, table.eras, table.columns)
    base = ["evaluate", str(tmp_path / "p.parquet"), "--store", str(store_path), "--model", str(tmp_path / "m")]
    late = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r1"), "--eras", "0017:0018"])
    assert late.exit_code == 0, late.output
    assert late.stderr.splitlines() == ["warning: the model chose its number of rounds on 2 of the evaluated eras "
                                        "(0017…0018): scores there are optimistic"]
    unseen = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r2"), "--eras", "0014:0015"])
    assert unseen.exit_code == 0 and unseen.stderr == ""
    whole = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "r3")])
    assert "warning: the model trained on" in whole.stderr and "scores there are in-sample" in whole.stderr
    provenance = json.loads((tmp_path / "r3" / "metrics.json").read_text())["provenance"]
    assert any("in-sample" in note for note in provenance["model_era_overlap"])
