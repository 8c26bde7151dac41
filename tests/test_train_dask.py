"""Training on Dask: targets as tasks (the serial model directory, byte for byte) and one LightGBM model
across workers (``--data-parallel``, within tolerance of a local model), on a real LocalCluster of 2."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import InputError, SynthSpec
from eraflow.engine.cluster import lgbm_dask
from eraflow.engine.cluster.client import open_client
from eraflow.engine.data.store import era_rows
from eraflow.engine.models.kind import FitData
from eraflow.engine.models.params import load_params
from eraflow.engine.models.predict import load_model, predict_table
from eraflow.engine.models.train import TrainConfig, train_models, train_target_task

from .conftest import synthetic_store

FAST = {**load_params("starter"), "n_estimators": 30, "learning_rate": 0.1, "colsample_bytree": 0.5,
        "deterministic": True, "num_threads": 1}
TARGETS = ("target", "target_*_20")  # target, target_ender_20 (an alias of target), target_cyrus_20


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("train_dask"),
                           SynthSpec(eras=30, rows_per_era=100, features=20, validation_eras=8, seed=5))


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2) as client:
        yield client


def _files(model_dir):
    """Every file of a model directory but model.json, by name → bytes."""
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.name != "model.json"}


def _meta(model_dir):
    meta = json.loads((model_dir / "model.json").read_text())
    return {k: v for k, v in meta.items() if k != "created"}


def test_targets_as_dask_tasks_make_the_serial_model_directory(store, client, tmp_path):
    """Guards against a worker training another model than this process would (threads, device, eras)."""
    config = TrainConfig(targets=TARGETS, params=FAST, cv=2, valid_eras="0025:")
    serial = train_models(store, tmp_path / "serial", config)
    statuses = []
    dask = train_models(store, tmp_path / "dask", config, client=client, status=statuses.append)
    ended = [s for s in statuses if s.event == "end"]
    assert _files(tmp_path / "dask") == _files(tmp_path / "serial"), "boosters and oof.parquet byte-equal"
    assert {"model_target.txt", "model_target_cyrus_20.txt", "oof.parquet"} <= set(_files(tmp_path / "dask"))
    assert _meta(tmp_path / "dask") == _meta(tmp_path / "serial")
    same = [json.dumps(getattr(r, k)) for k in ("cv", "valid", "ensemble", "rounds") for r in (dask, serial)]
    assert same[::2] == same[1::2], "the same scores (NaN-safe: compared as JSON)"
    assert "valid" in dask.ensemble, "each task predicted the ensemble's validation eras"
    assert sorted((s.target, s.model) for s in ended) == sorted(
        (t, m) for t in ("target", "target_cyrus_20") for m in ("fold 1/2", "fold 2/2", "final"))
    assert ended[-1].done == ended[-1].total, "the bar ends full"
    starts = [s for s in statuses if s.event == "start"]
    for target in ("target", "target_cyrus_20"):
        events = [s.event for s in statuses if s.target == target and s.event in ("start", "end")]
        assert events == ["start"] * 3 + ["end"] * 3, (
            "each model is shown as it starts on the worker (all 3 before its target's task ends and its models' "
            f"ends are shown): a long Dask training is not silent; {target}: {events}")
    assert len(starts) == len(ended) and all(0 <= s.done <= s.total for s in starts), "counts of this training"


@pytest.mark.parametrize("kind,params", [("lgbm", FAST), ("v3x", {"blocks": 2, "n_estimators": 8, "meta": "simplex"})])
def test_rerun_target_task_replaces_what_an_earlier_attempt_saved(store, tmp_path, kind, params):
    """A target task rerun by Dask after its worker died mid-save must succeed (v3x's save made a folder that a
    second save refused) and leave exactly the files of one attempt."""
    config = TrainConfig(kind=kind, params=params, train_eras=":0022")
    args = (str(store.path), store.fingerprint, config, "target")
    once, twice = tmp_path / "once", tmp_path / "twice"
    once.mkdir(), twice.mkdir()
    train_target_task(*args, str(once), None, 1)
    train_target_task(*args, str(twice), None, 1)
    (twice / ".saving-target").mkdir()
    (twice / ".saving-target" / "half_written").write_text("x")  # a save the worker died in
    train_target_task(*args, str(twice), None, 1)
    tree = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert tree(twice) == tree(once) and tree(once), "no leftover scratch folder, no stale files"
    assert all((twice / name).read_bytes() == (once / name).read_bytes()
               for name in tree(once) if (once / name).is_file())


def test_error_in_a_target_task_reaches_the_caller_and_leaves_nothing(store, client, tmp_path):
    config = TrainConfig(params=FAST, cv=3, embargo=40)
    with pytest.raises(InputError, match="no training eras left after an embargo of 40"):
        train_models(store, tmp_path / "m", config, client=client)
    assert list(tmp_path.iterdir()) == [], "the model directory built aside is removed"


def test_target_task_refuses_another_store_and_an_unseen_model_dir(store, tmp_path):
    args = (str(store.path), store.fingerprint, TrainConfig(params=FAST), "target")
    with pytest.raises(InputError, match="is not visible on worker host"):
        train_target_task(*args, str(tmp_path / "nowhere"), None, 0)
    with pytest.raises(InputError, match="is another store"):
        train_target_task(str(store.path), "0" * 16, TrainConfig(params=FAST), "target", str(tmp_path), None, 0)


def test_era_shards_cover_the_eras_in_order_with_balanced_rows():
    offsets = np.concatenate([[0], np.cumsum(np.random.default_rng(0).integers(50, 150, 40))])
    eras = np.arange(3, 37)
    shards = lgbm_dask.era_shards(offsets, eras, 4)
    assert len(shards) == 4 and np.array_equal(np.concatenate(shards), eras), "every era once, in order"
    rows = [int(np.diff(offsets)[s].sum()) for s in shards]
    assert max(rows) - min(rows) <= 2 * 150, rows
    assert [s.tolist() for s in lgbm_dask.era_shards(offsets, eras[:2], 4)] == [[3], [4]], "never an empty shard"


def test_shards_are_read_on_every_worker_and_hold_the_store_rows(store, client):
    """Oracle: the store's rows read directly (int8 → float32, −1 → NaN; label 0.5, weight 0 without a target)."""
    from distributed import Future

    data = FitData(store, np.arange(14, 30), np.array([0, 3, 5]), "target_cyrus_20")  # 0027:0030 unlabeled
    x, y, w = lgbm_dask.shard_arrays(client, data)
    rows = era_rows(store.offsets, data.train_eras)
    codes = store.features[rows][:, data.cols].astype(np.float32)
    np.testing.assert_array_equal(x.compute(), np.where(codes < 0, np.nan, codes))
    target = store.targets[rows, store.target_names.index("target_cyrus_20")]
    assert np.isnan(target).any(), "the oracle covers rows without a target"
    np.testing.assert_array_equal(y.compute(), np.where(np.isnan(target), 0.5, target))
    np.testing.assert_array_equal(w.compute(), np.isfinite(target).astype(float))
    futures = [v for v in x.__dask_graph__().values() if isinstance(v, Future)]
    holders = {addr for held in client.who_has(futures).values() for addr in held}
    assert len(futures) == 2 and holders == set(client.scheduler_info()["workers"]), "one shard on each worker"


def test_data_parallel_model_is_within_tolerance_of_a_local_model(store, client, tmp_path):
    """One model across 2 workers vs LightGBM in this process on the same rows, all rounds.

    LightGBM's data-parallel learner sums the workers' histograms (doubles) in another order, so a near-tie
    between two splits may go the other way; the store's integer codes give every worker the same bins, so
    nothing else differs. Tolerance: predictions correlate ≥ 0.999 with the local model's and differ by at
    most 1 % of their std on average (measured: equal to the last bit here and at 30k rows × 60 features ×
    300 rounds). A dropped or duplicated shard, misaligned labels or ignored weights break both by far.
    """
    params = {**FAST, "n_estimators": 40}
    config = TrainConfig(params=params, train_eras=":0022", data_parallel=True)
    train_models(store, tmp_path / "dp", config, client=client)
    train_models(store, tmp_path / "local", TrainConfig(params=params, train_eras=":0022"))
    meta = json.loads((tmp_path / "dp" / "model.json").read_text())
    assert meta["kind"] == "lgbm" and meta["rounds"] == {"target": 40} and meta["stopping_eras"] == {"target": []}
    dp = predict_table(load_model(tmp_path / "dp"), store, "0023:").columns["pred_target"]
    local = predict_table(load_model(tmp_path / "local"), store, "0023:").columns["pred_target"]
    assert np.corrcoef(dp, local)[0, 1] >= 0.999 and np.abs(dp - local).mean() <= 0.01 * local.std()
    assert lgb.Booster(model_file=str(tmp_path / "dp" / "model_target.txt")).num_trees() == 40


def test_data_parallel_cv_trains_folds_on_their_training_eras_only(store, client, tmp_path, monkeypatch):
    """Leakage guard: every fold's shards hold only its training eras, the embargo away from its test eras."""
    fits = []
    shard_arrays = lgbm_dask.shard_arrays
    monkeypatch.setattr(lgbm_dask, "shard_arrays",
                        lambda client, data: fits.append(data.train_eras) or shard_arrays(client, data))
    config = TrainConfig(params=FAST, cv=2, embargo=2, valid_eras="0025:", data_parallel=True)
    result = train_models(store, tmp_path / "m", config, client=client)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    folds = meta["cv"]["target"]["folds"]
    assert len(fits) == 3 and [f["best_round"] for f in folds] == [30, 30], "no early stopping: all rounds"
    for eras, fold in zip(fits, folds):
        lo, hi = (store.eras.index(e) for e in fold["test_eras"])
        assert ((eras < lo - 2) | (eras > hi + 2)).all(), (eras, fold)
    assert fits[2].max() < store.eras.index("0025") - 2, "the final model never trains on validation eras"
    assert result.valid["target"]["eras"] == 2 and pq.read_table(tmp_path / "m" / "oof.parquet").num_rows > 0


@pytest.mark.parametrize("change,message", [
    ({"kind": "xgb"}, "lgbm models only"),
    ({"device": "gpu"}, "drop --device gpu"),
    ({"params": {**FAST, "era_boost_steps": 3}}, "drop --era-boost"),
])
def test_data_parallel_refuses_what_it_does_not_do(change, message):
    with pytest.raises(InputError, match=message):
        lgbm_dask.check_data_parallel(TrainConfig(**{"params": FAST, "data_parallel": True, **change}), object())


def test_cli_trains_on_a_running_scheduler_and_refuses_data_parallel_without_a_cluster(store, client, tmp_path):
    params = tmp_path / "params.toml"
    params.write_text('n_estimators = 20\nlearning_rate = 0.1\nnum_leaves = 7\n')
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "m"), "--params", str(params),
                                      "--scheduler", client.scheduler.address, "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["targets"] == ["target"] and (tmp_path / "m" / "model_target.txt").exists()
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "dp"), "--params", str(params),
                                      "--scheduler", client.scheduler.address, "--data-parallel", "--json", "-q"])
    assert result.exit_code == 0 and json.loads(result.stdout)["data_parallel"] is True, result.output
    assert predict_table(load_model(tmp_path / "dp"), store).columns["pred_target"].std() > 0
    result = CliRunner().invoke(cli, ["train", str(store.path), "-o", str(tmp_path / "n"), "--data-parallel"])
    assert result.exit_code == 2 and "give --workers N or --scheduler ADDRESS" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "n").exists()
