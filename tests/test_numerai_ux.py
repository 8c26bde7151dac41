"""Everyday Numerai use: pipelines on local files and offline, steps that check their own outputs,
live post-processing flags, export checks, float-quarter features, the secret key, download checks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.data.synth import SynthSpec, write_synthetic
from eraflow.engine.errors import EraflowError, InputError
from eraflow.engine.models.predict import load_model
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.engine.numerai import pipeline
from eraflow.engine.numerai.export import export_model
from eraflow.engine.numerai.live import Postprocess, live_predictions, set_postprocess
from eraflow.engine.numerai.numerai import (
    MANIFEST,
    Credentials,
    NumeraiError,
    download_datasets,
    load_credentials,
    numerai_client,
    resolve_model,
)
from eraflow.engine.numerai.pipeline import run_pipeline
from tests.test_numerai import SECRET, VERSION, FakeNumerAPI, parquet_bytes, served_files
from tests.test_train import FAST

PARAMS = 'preset = "starter"\nn_estimators = 15\nlearning_rate = 0.1\nnum_threads = 1\n'
SMALL = SynthSpec(eras=16, rows_per_era=60, features=12, targets=2, seed=11)
POSTPROCESS = """
[train]
targets = ["target"]
params = "fast.toml"

[postprocess]
neutralize = 0.5
feature_set = "medium"

[live]
"""
FILES_PIPELINE = """
workdir = "work"

[data]
source = "files"
train = "mydata/train.parquet"
validation = "mydata/validation.parquet"
live = "mydata/live.parquet"
features_json = "mydata/features.json"
""" + POSTPROCESS
NUMERAI_PIPELINE = """
workdir = "work"

[data]
source = "numerai"
version = "v5.2"
directory = "numerai-data"
""" + POSTPROCESS
SYNTHETIC_PIPELINE = """
workdir = "work"

[data]
source = "synthetic"
eras = 16
rows_per_era = 60
features = 12
seed = 11
""" + POSTPROCESS


@pytest.fixture(autouse=True)
def no_real_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)
    monkeypatch.setenv("ERAFLOW_NUMERAI_CONFIG", str(tmp_path / "no-such-config.toml"))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    write_synthetic(out, SMALL)
    return out


def write_pipeline(tmp_path: Path, text: str) -> Path:
    (tmp_path / "fast.toml").write_text(PARAMS)
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def statuses(result) -> dict[str, str]:
    return {name: status for name, status, _ in result.steps}


def no_network(monkeypatch) -> None:
    """The real numerapi client, with every request failing as on a machine without network."""
    def unreachable(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr("numerapi.utils.requests.post", unreachable)
    monkeypatch.setattr("numerapi.utils.requests.get", unreachable)


def offline_client(auth: bool):
    return numerai_client(None)


# ---------------------------------------------------------------- [data] source = "files", and offline


def test_files_source_runs_on_local_files_and_never_asks_numerai(tmp_path, small_data):
    shutil.copytree(small_data, tmp_path / "mydata")
    path = write_pipeline(tmp_path, FILES_PIPELINE)
    asked = []
    first = run_pipeline(path, client_factory=lambda auth: asked.append(auth))
    assert statuses(first) == dict.fromkeys(["data", "ingest", "train", "postprocess", "live"], "ran")
    assert asked == []
    live = pd.read_parquet(tmp_path / "work" / "live_predictions.parquet")
    assert list(live.id) == list(pd.read_parquet(tmp_path / "mydata" / "live.parquet").id)
    assert statuses(run_pipeline(path)) == dict.fromkeys(["data", "ingest", "train", "postprocess", "live"], "skipped")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('train = "mydata/train.parquet"\n', ""), "source = 'files' needs train"),
    (lambda t: t.replace('live = "mydata/live.parquet"\n', ""), "source = 'files' needs live"),
    (lambda t: t.replace('features_json = "mydata/features.json"\n', ""), "needs features_json"),
    (lambda t: t.replace("mydata/validation.parquet", "mydata/valid.parquet"),
     "[data] validation = 'mydata/valid.parquet': no such file"),
    (lambda t: t.replace('source = "files"', 'source = "files"\neras = 10'), "eras does not apply to source = 'files'"),
    (lambda t: t.replace('source = "files"', 'source = "files"\nversion = "v5.2"'), "version does not apply"),
])
def test_files_source_is_checked_before_any_work(tmp_path, small_data, edit, message):
    shutil.copytree(small_data, tmp_path / "mydata")
    path = write_pipeline(tmp_path, edit(FILES_PIPELINE))
    with pytest.raises(InputError) as info:
        run_pipeline(path)
    assert message in str(info.value)
    assert not (tmp_path / "work").exists()


def test_numerai_source_uses_the_files_on_disk_when_numerai_cannot_be_reached(tmp_path, small_data, monkeypatch,
                                                                               caplog):
    no_network(monkeypatch)
    shutil.copytree(small_data, tmp_path / "numerai-data")
    path = write_pipeline(tmp_path, NUMERAI_PIPELINE)
    with caplog.at_level(logging.WARNING, logger="eraflow"):
        result = run_pipeline(path, client_factory=offline_client)
    assert statuses(result) == dict.fromkeys(["data", "ingest", "train", "postprocess", "live"], "ran")
    warnings = [r.getMessage() for r in caplog.records if r.name == "eraflow"]
    assert len(warnings) == 1 and "could not check Numerai's current round, using the files already in" in warnings[0]
    assert str(tmp_path / "numerai-data") in warnings[0]
    assert (tmp_path / "work" / "live_predictions.parquet").is_file()

    submitting = write_pipeline(tmp_path, NUMERAI_PIPELINE + '\n[submit]\nmodel = "mine"\n')
    with pytest.raises(NumeraiError, match="not submitting: Numerai's current round could not be checked"):
        run_pipeline(submitting, client_factory=offline_client)

    (tmp_path / "numerai-data" / "live.parquet").unlink()
    with pytest.raises(NumeraiError, match="numerai-data lacks live.parquet, and Numerai could not be reached: "
                                           "no answer from Numerai's API"):
        run_pipeline(path, client_factory=offline_client)


def test_cli_run_offline_warns_then_fails_in_one_line_when_a_file_is_missing(tmp_path, small_data, monkeypatch):
    no_network(monkeypatch)
    shutil.copytree(small_data, tmp_path / "numerai-data")
    path = write_pipeline(tmp_path, NUMERAI_PIPELINE)
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 0, result.output
    warning, = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warning.startswith("warning: could not check Numerai's current round, using the files already in ")

    for name in ("features.json", "live.parquet"):
        (tmp_path / "numerai-data" / name).unlink()
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "numerai-data lacks features.json, live.parquet, and Numerai could not be reached: " in result.stderr


# ---------------------------------------------------------------- a step checks its own output


def _postprocess_of(work: Path) -> dict | None:
    return json.loads((work / "model" / "model.json").read_text()).get("postprocess")


def test_a_lost_model_is_retrained_and_postprocessed_again(tmp_path):
    """The fault sweep's case: model dir lost → train re-ran, [postprocess] was skipped, live not neutralized."""
    path = write_pipeline(tmp_path, SYNTHETIC_PIPELINE)
    run_pipeline(path)
    work = tmp_path / "work"
    configured = _postprocess_of(work)
    assert configured["proportion"] == 0.5
    shutil.rmtree(work / "model")

    again = run_pipeline(path)
    assert statuses(again) == {"data": "skipped", "ingest": "skipped", "train": "ran", "postprocess": "ran",
                               "live": "ran"}
    assert _postprocess_of(work) == configured
    live = pd.read_parquet(work / "live_predictions.parquet")
    model = load_model(work / "model")
    neutral = live_predictions(model, work / "data" / "live.parquet")
    plain = live_predictions(model, work / "data" / "live.parquet", Postprocess("pred_target"))
    np.testing.assert_array_equal(live.prediction, neutral.prediction)
    assert not np.allclose(live.prediction, plain.prediction)


def test_a_killed_train_then_a_reverted_config_postprocesses_the_new_model(tmp_path, monkeypatch):
    path = write_pipeline(tmp_path, SYNTHETIC_PIPELINE)
    run_pipeline(path)
    work = tmp_path / "work"
    configured = _postprocess_of(work)

    (tmp_path / "fast.toml").write_text(PARAMS.replace("n_estimators = 15", "n_estimators = 12"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "train_models", killed)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(path)
    (tmp_path / "fast.toml").write_text(PARAMS)

    again = run_pipeline(path)
    assert statuses(again)["train"] == "ran" and statuses(again)["postprocess"] == "ran"
    assert _postprocess_of(work) == configured


def test_a_hand_edited_postprocess_is_restored(tmp_path):
    path = write_pipeline(tmp_path, SYNTHETIC_PIPELINE)
    run_pipeline(path)
    work = tmp_path / "work"
    configured = _postprocess_of(work)
    set_postprocess(work / "model", Postprocess("pred_target"))
    again = run_pipeline(path)
    # live was made with the configured post-processing, which model.json holds again: it is kept
    assert statuses(again) == {"data": "skipped", "ingest": "skipped", "train": "skipped", "postprocess": "ran",
                               "live": "skipped"}
    assert _postprocess_of(work) == configured


# ---------------------------------------------------------------- models for live and export


@pytest.fixture(scope="module")
def model_dir(store_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ux") / "model"
    train_models(open_store(store_path), out, TrainConfig(targets=("target", "target_*_20"), params=FAST))
    return out


@pytest.fixture
def fresh_model(model_dir, tmp_path) -> Path:
    """A copy of the trained model that a test may edit."""
    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    return out


def medium(store_path) -> tuple[str, ...]:
    return tuple(open_store(store_path).feature_sets["medium"])


# ---------------------------------------------------------------- eraflow live --column/--neutralize/--feature-set


def test_live_flags_override_model_json_for_one_run(fresh_model, store_path, synth_dir, tmp_path):
    model_json = (fresh_model / "model.json").read_bytes()
    out = tmp_path / "live.parquet"
    result = CliRunner().invoke(cli, ["live", str(fresh_model), "--data", str(synth_dir), "-o", str(out),
                                      "--column", "pred_target", "--neutralize", "0.5", "--feature-set", "medium"])
    assert result.exit_code == 0, result.output
    assert "neutralized 0.5 per era against" in result.stdout and "model.json unchanged" in result.stdout
    assert (fresh_model / "model.json").read_bytes() == model_json
    model = load_model(fresh_model)
    want = live_predictions(model, synth_dir / "live.parquet", Postprocess("pred_target", 0.5, medium(store_path)))
    np.testing.assert_array_equal(pd.read_parquet(out).prediction, want.prediction)
    plain = live_predictions(model, synth_dir / "live.parquet")
    assert not np.allclose(want.prediction, plain.prediction)


def test_live_neutralize_alone_uses_the_models_features(fresh_model, synth_dir, tmp_path):
    out = tmp_path / "live.parquet"
    result = CliRunner().invoke(cli, ["live", str(fresh_model), "--live", str(synth_dir / "live.parquet"),
                                      "-o", str(out), "--neutralize", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["postprocess_overridden"] is True
    model = load_model(fresh_model)
    want = live_predictions(model, synth_dir / "live.parquet", Postprocess("ensemble", 1.0, tuple(model.features)))
    np.testing.assert_array_equal(pd.read_parquet(out).prediction, want.prediction)


@pytest.mark.parametrize("flags, message", [
    (["--neutralize", "1.5"], "1.5 is not in the range 0<=x<=1"),
    (["--neutralize", "-0.1"], "is not in the range"),
    (["--column", "pred_nope"], "the model has no output 'pred_nope'"),
    (["--neutralize", "0.5", "--feature-set", "tiny"], "unknown feature set 'tiny'"),
    (["--feature-set", "medium"], "no proportion"),
    (["--features-json", "{data}/features.json"], "--features-json is read only for --feature-set"),
])
def test_bad_live_flags_are_one_line_and_write_nothing(model_dir, synth_dir, tmp_path, flags, message):
    out = tmp_path / "live.parquet"
    flags = [f.format(data=synth_dir) for f in flags]
    result = CliRunner().invoke(cli, ["live", str(model_dir), "--data", str(synth_dir), "-o", str(out), *flags])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------- exported predict(): float quarters


def _predictor(model_path: Path, tmp_path: Path):
    import cloudpickle

    export_model(load_model(model_path), tmp_path / "model.pkl")
    return cloudpickle.loads((tmp_path / "model.pkl").read_bytes())


def test_exported_predict_reads_float_quarters_as_ingest_does(fresh_model, store_path, synth_dir, tmp_path):
    set_postprocess(fresh_model, Postprocess("ensemble", 0.5, medium(store_path)))
    predict = _predictor(fresh_model, tmp_path)
    codes = pd.read_parquet(synth_dir / "live.parquet").set_index("id")
    features = [c for c in codes.columns if c.startswith("feature")]
    codes = codes.astype(dict.fromkeys(features, np.float64))
    codes.loc[codes.index[::7], features[3]] = np.nan  # missing values stay missing
    quarters = codes.copy()
    quarters[features] = codes[features] / 4
    assert quarters[features].max().max() == 1
    np.testing.assert_array_equal(predict(quarters, None).prediction.to_numpy(),
                                  predict(codes, None).prediction.to_numpy())


def test_exported_predict_refuses_values_that_are_not_codes(model_dir, synth_dir, tmp_path):
    predict = _predictor(model_dir, tmp_path)
    frame = pd.read_parquet(synth_dir / "live.parquet").set_index("id")
    feature = load_model(model_dir).features[0]
    frame[feature] = frame[feature].astype(np.float64)
    frame.iloc[5, frame.columns.get_loc(feature)] = 2.5
    with pytest.raises(ValueError, match=f"feature {feature} has value 2.5 .row 5.; features must be integers 0..4"):
        predict(frame, None)


# ---------------------------------------------------------------- eraflow export checks the model first


def _edit_model_json(model: Path, **changes) -> None:
    meta = json.loads((model / "model.json").read_text())
    meta.update(changes)
    (model / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, message", [
    (lambda m: {"features": m["features"][:10]}, "was trained on 40 features but model.json lists 10"),
    (lambda m: {"postprocess": {"column": "pred_nope", "proportion": None, "features": None}},
     "the model has no output 'pred_nope'"),
    (lambda m: {"postprocess": {"column": "ensemble", "proportion": 0.5, "features": ["feature_bogus"]}},
     "1 feature(s) the model's store lacks"),
])
def test_export_refuses_an_inconsistent_model_and_writes_nothing(fresh_model, tmp_path, edit, message):
    _edit_model_json(fresh_model, **edit(json.loads((fresh_model / "model.json").read_text())))
    with pytest.raises(InputError) as info:
        export_model(load_model(fresh_model), tmp_path / "model.pkl")
    assert message in str(info.value)
    assert not (tmp_path / "model.pkl").exists()
    result = CliRunner().invoke(cli, ["export", str(fresh_model), "-o", str(tmp_path / "model.pkl")])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model.pkl").exists()


def test_export_checks_named_boosters_against_model_json(fresh_model, tmp_path):
    import lightgbm as lgb

    meta = json.loads((fresh_model / "model.json").read_text())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (200, len(meta["features"]))).astype(np.float64)
    names = [f"other_{i}" for i in range(x.shape[1])]
    booster = lgb.train({"verbose": -1, "num_threads": 1}, lgb.Dataset(x, x[:, 0], feature_name=names), 3)
    booster.save_model(str(fresh_model / "model_target.txt"))
    with pytest.raises(InputError, match=r"model_target.txt was trained on other features than model.json lists "
                                         r"\(other_0 ≠ feature_"):
        export_model(load_model(fresh_model), tmp_path / "model.pkl")


@pytest.mark.parametrize("answer, message", [
    (lambda frame: frame[["era"]], "it returned columns ['era'], not ['prediction']"),
    (lambda frame: frame.iloc[:3, :0].assign(prediction=0.5), "it returned 3 rows indexed otherwise"),
    (lambda frame: frame.iloc[:, :0].assign(prediction=1.0), "its predictions are not all in (0, 1)"),
    (lambda frame: frame["no_such_column"], "KeyError: 'no_such_column'"),
])
def test_export_runs_the_pickled_predictor_once_and_refuses_a_broken_one(model_dir, tmp_path, monkeypatch, answer,
                                                                         message):
    from eraflow.engine.numerai import live_model

    monkeypatch.setattr(live_model.LivePredictor, "__call__", lambda self, frame, benchmarks=None: answer(frame))
    with pytest.raises(InputError) as info:
        export_model(load_model(model_dir), tmp_path / "model.pkl")
    assert str(info.value).startswith("the exported predictor fails on a synthetic frame of the model's features")
    assert message in str(info.value) and str(info.value).endswith("nothing was written")
    assert not (tmp_path / "model.pkl").exists()


# ---------------------------------------------------------------- the secret key never reaches stderr or logs


@pytest.fixture
def fresh_numerapi_logger():
    """numerapi's logger as in a fresh process (the CLI silences it for the rest of a test session)."""
    logger = logging.getLogger("numerapi")
    saved = logger.level
    logger.setLevel(logging.NOTSET)
    yield
    logger.setLevel(saved)


def test_a_key_with_a_trailing_newline_is_stripped(monkeypatch):
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "PUBLICID\n")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET + "\n")
    credentials = load_credentials()
    assert (credentials.public_id, credentials.secret_key) == ("PUBLICID", SECRET)


@pytest.mark.parametrize("make_client", [
    lambda: numerai_client(Credentials("PUBLICID", SECRET + "\n")),
    lambda: __import__("numerapi").NumerAPI("PUBLICID", SECRET + "\n", verbosity="warning"),
], ids=["numerai_client", "numerapi.NumerAPI"])
def test_numerapi_never_logs_the_secret_through_the_library(monkeypatch, capfd, caplog, fresh_numerapi_logger,
                                                            make_client):
    """requests refuses a header value ending in a newline and quotes it; numerapi logs that text."""
    def post(url, json=None, headers=None, timeout=None):
        requests.Request("POST", url, json=json, headers=headers).prepare()  # the real header check
        raise requests.exceptions.ConnectionError(f"refused; sent {headers}")

    monkeypatch.setattr("numerapi.utils.requests.post", post)
    client = make_client()
    with caplog.at_level(logging.DEBUG), pytest.raises(EraflowError) as info:
        resolve_model(client, "my_model")
    assert "no answer from Numerai's API while listing your models" in str(info.value)
    captured = capfd.readouterr()
    assert SECRET not in captured.err + captured.out + str(info.value)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_key_file_with_whitespace_is_stripped(tmp_path):
    path = tmp_path / "numerai.toml"
    path.write_text(f'public_id = " PUBLICID "\nsecret_key = "{SECRET}\\n"\n')
    path.chmod(0o600)
    credentials = load_credentials(path)
    assert (credentials.public_id, credentials.secret_key) == ("PUBLICID", SECRET)


# ---------------------------------------------------------------- downloads decode every page


def _damaged_in_the_middle(table: pa.Table, **write_options) -> bytes:
    """A parquet file whose footer is intact but whose first data page of `feature_a` is overwritten in its middle."""
    import io

    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=250, **write_options)
    data = bytearray(sink.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(2)
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[middle:middle + 16] = b"\xff" * 16
    return bytes(data)


@pytest.mark.parametrize("write_options", [{"compression": "snappy"},
                                           {"compression": "none", "write_page_checksum": True}])
def test_a_download_with_damaged_pages_and_an_intact_footer_is_refused(tmp_path, write_options):
    from tests.test_numerai import era_table

    files = served_files()
    files[f"{VERSION}/train.parquet"] = _damaged_in_the_middle(era_table(1000, seed=3), **write_options)
    pq.read_metadata(pa.BufferReader(files[f"{VERSION}/train.parquet"]))  # the footer reads
    with pytest.raises(InputError, match=f"downloaded {VERSION}/train.parquet is not valid parquet"):
        download_datasets(FakeNumerAPI(files), tmp_path, VERSION, ["train"])
    assert not (tmp_path / "train.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, MANIFEST + ".lock"]
    assert json.loads((tmp_path / MANIFEST).read_text())["pending"] == {}


def test_an_intact_download_still_lands(tmp_path):
    from tests.test_numerai import era_table

    files = served_files()
    files[f"{VERSION}/train.parquet"] = parquet_bytes(era_table(1000, seed=3))
    (got,) = download_datasets(FakeNumerAPI(files), tmp_path, VERSION, ["train"])
    assert got.path.read_bytes() == files[f"{VERSION}/train.parquet"]


def test_a_symlinked_manifest_lock_does_not_touch_its_target(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    out = tmp_path / "data"
    out.mkdir()
    (out / (MANIFEST + ".lock")).symlink_to(target)
    with pytest.raises(EraflowError, match="symbolic link"):
        download_datasets(FakeNumerAPI(served_files()), out, VERSION, ["train"])
    assert target.read_text() == "keep me\n"
    assert not (out / "train.parquet").exists()


def test_an_alias_target_can_be_submitted_live_and_exported(fresh_model, synth_dir, tmp_path):
    """`target` is target_ender_20 in the data: trained once, and pred_target_ender_20 is its copy."""
    model = load_model(fresh_model)
    assert model.aliases == {"target_ender_20": "target"}
    set_postprocess(fresh_model, Postprocess("pred_target_ender_20", 0.5))
    live = pd.read_parquet(synth_dir / "live.parquet").set_index("id")
    exported = _predictor(fresh_model, tmp_path)(live, None)
    want = live_predictions(load_model(fresh_model), synth_dir / "live.parquet")
    same = live_predictions(load_model(fresh_model), synth_dir / "live.parquet", Postprocess("pred_target", 0.5))
    np.testing.assert_array_equal(want.prediction, same.prediction)
    np.testing.assert_allclose(exported.prediction.to_numpy(), want.prediction.to_numpy(), atol=1e-9)


def test_live_feature_set_without_features_json_comes_from_the_models_store(model_dir, store_path, synth_dir,
                                                                            tmp_path):
    shutil.copy(synth_dir / "live.parquet", tmp_path / "live_only.parquet")
    out = tmp_path / "live.parquet"
    result = CliRunner().invoke(cli, ["live", str(model_dir), "--live", str(tmp_path / "live_only.parquet"), "-o",
                                      str(out), "--neutralize", "0.5", "--feature-set", "medium"])
    assert result.exit_code == 0, result.output
    want = live_predictions(load_model(model_dir), synth_dir / "live.parquet",
                            Postprocess("ensemble", 0.5, medium(store_path)))
    np.testing.assert_array_equal(pd.read_parquet(out).prediction, want.prediction)


def test_feature_sets_of_a_rebuilt_store_are_not_taken_for_the_models(fresh_model, synth_dir, tmp_path):
    """model.json names its store; a store rebuilt at that path since (another fingerprint) may hold
    other feature sets, so --feature-set needs features.json then."""
    meta = json.loads((fresh_model / "model.json").read_text())
    meta["store_fingerprint"] = "rebuilt-since"
    (fresh_model / "model.json").write_text(json.dumps(meta))
    shutil.copy(synth_dir / "live.parquet", tmp_path / "live_only.parquet")
    result = CliRunner().invoke(cli, ["live", str(fresh_model), "--live", str(tmp_path / "live_only.parquet"), "-o",
                                      str(tmp_path / "live.parquet"), "--neutralize", "0.5", "--feature-set", "medium"])
    assert result.exit_code == 2
    assert "the model's store is gone or was rebuilt" in result.stderr
