"""score and evaluate with --workers/--scheduler: eras in parts on a Dask cluster, numbers equal to a local run."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.cluster.client import open_client
from eraflow.engine.cluster.partition import PARTS_PER_WORKER, era_parts
from eraflow.engine.data.store import open_store_checked
from eraflow.engine.errors import InputError
from eraflow.engine.evaluation import predictions
from eraflow.engine.evaluation.evaluate import EvaluateOptions, evaluate_predictions
from eraflow.engine.evaluation.predictions import align_eras, align_predictions, keep_eras
from eraflow.engine.evaluation.scoring import ScoreOptions, reference_values, score_predictions


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def files(store_path, synth_dir, tmp_path_factory):
    """Predictions of every store row (24 eras, several parts on 2 workers), meta model and two benchmark columns."""
    out = tmp_path_factory.mktemp("dask-preds")
    store = open_store(store_path)
    rng = np.random.default_rng(5)
    n = len(store.ids)
    signal = store.features[:, 0] + store.features[:, 7] + rng.normal(0, 1, n)
    pd.DataFrame({"id": store.ids, "a": signal, "b": rng.random(n)}).to_parquet(out / "preds.parquet", index=False)
    pd.DataFrame({"id": store.ids, "m": signal + rng.normal(0, 1, n)}).to_parquet(out / "meta.parquet", index=False)
    pd.DataFrame({"id": store.ids, "v1": rng.random(n), "v2": signal + rng.normal(0, 2, n)}).to_parquet(
        out / "bench.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def files_with_era(store_path, tmp_path_factory):
    """The files of ``files`` with an ``era`` column, rows shuffled, several row groups: parts read their eras only."""
    out = tmp_path_factory.mktemp("dask-preds-era")
    store = open_store(store_path)
    rng = np.random.default_rng(6)
    n = len(store.ids)
    era = np.repeat(store.eras, np.diff(store.offsets))
    signal = store.features[:, 0] + store.features[:, 7] + rng.normal(0, 1, n)
    frames = {"preds": {"a": signal, "b": rng.random(n)}, "meta": {"m": signal + rng.normal(0, 1, n)},
              "bench": {"v1": rng.random(n), "v2": signal + rng.normal(0, 2, n)}}
    for name, columns in frames.items():
        order = rng.permutation(n)
        frame = pd.DataFrame({"id": store.ids, "era": era, **columns}).iloc[order]
        frame.to_parquet(out / f"{name}.parquet", index=False, row_group_size=200)
    return out


def _rows_read(monkeypatch) -> list[int]:
    """Rows each read of a prediction file returned (a spy on the reader)."""
    heights, read = [], predictions._read_ids_and_values

    def spy(*args, **kwargs):
        frame, chosen = read(*args, **kwargs)
        heights.append(frame.height)
        return frame, chosen

    monkeypatch.setattr(predictions, "_read_ids_and_values", spy)
    return heights


def _assert_same(got, want):
    assert got.columns == want.columns
    for key in ("values", "rows", "era_index", "offsets", "ids"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)


def _part(store, path, era_index):
    whole = align_predictions(store, path)
    return keep_eras(whole, np.isin(whole.era_index, era_index))


def test_part_reads_only_its_eras_rows_when_the_file_has_an_era_column(store_path, files_with_era, monkeypatch):
    """Guards against a part reading and aligning the whole file (the cost this saves) or losing/adding rows."""
    store = open_store(store_path)
    era_index = np.arange(5, 11)
    want = _part(store, files_with_era / "preds.parquet", era_index)
    heights = _rows_read(monkeypatch)
    got = align_eras(store, files_with_era / "preds.parquet", None, era_index, len(want.rows))
    _assert_same(got, want)
    assert heights == [store.offsets[11] - store.offsets[5]] and heights[0] < len(store.ids) / 3


def test_part_without_an_era_column_reads_every_row_with_the_same_result(store_path, files, monkeypatch):
    """The fallback: no era column (or CSV): every row is read, the part keeps its eras' rows."""
    store = open_store(store_path)
    era_index = np.arange(5, 11)
    want = _part(store, files / "preds.parquet", era_index)
    heights = _rows_read(monkeypatch)
    _assert_same(align_eras(store, files / "preds.parquet", None, era_index, len(want.rows)), want)
    assert heights == [len(store.ids)]


def test_part_whose_era_labels_disagree_with_the_store_reads_the_whole_file(store_path, tmp_path, monkeypatch):
    """Guards against trusting the file's era labels: rows labeled with another era would be lost."""
    store = open_store(store_path)
    n = len(store.ids)
    era = np.repeat(store.eras, np.diff(store.offsets))
    era[store.offsets[6]] = store.eras[0]  # one row of era 6 labeled era 0
    path = tmp_path / "mislabeled.parquet"
    pd.DataFrame({"id": store.ids, "era": era, "a": np.arange(n, dtype=np.float64)}).to_parquet(path, index=False)
    era_index = np.arange(5, 11)
    want = _part(store, path, era_index)
    heights = _rows_read(monkeypatch)
    _assert_same(align_eras(store, path, None, era_index, len(want.rows)), want)
    assert heights == [store.offsets[11] - store.offsets[5] - 1, n]  # the filtered read came up one short


def test_part_reference_whose_era_labels_disagree_is_read_whole(store_path, files_with_era, tmp_path, monkeypatch):
    """A meta model/benchmark file mislabeling a predicted row: the part rereads it whole (same values, no error)."""
    store = open_store(store_path)
    era_index = np.arange(5, 11)
    preds = _part(store, files_with_era / "preds.parquet", era_index)
    n = len(store.ids)
    era = np.repeat(store.eras, np.diff(store.offsets))
    era[store.offsets[7] + 3] = store.eras[20]
    path = tmp_path / "meta.parquet"
    pd.DataFrame({"id": store.ids, "era": era, "m": np.arange(n, dtype=np.float64)}).to_parquet(path, index=False)
    heights = _rows_read(monkeypatch)
    names, values = reference_values(store, preds, path, part=True)
    assert names == ["m"] and heights == [len(preds.rows) - 1, n]
    np.testing.assert_array_equal(values[:, 0], preds.rows.astype(np.float64))  # m is the row number


def test_evaluate_and_score_on_dask_equal_local_runs_with_era_columns(client, store_path, files_with_era):
    """The filtered reads of every part (predictions, meta model, benchmarks) give the local numbers bit for bit."""
    store = open_store(store_path)
    preds = files_with_era / "preds.parquet"
    options = EvaluateOptions(meta_model=files_with_era / "meta.parquet", benchmark=files_with_era / "bench.parquet")
    local = evaluate_predictions(store, preds, options)
    on_dask = evaluate_predictions(store, preds, options, client=client)
    assert on_dask.per_era.keys() == local.per_era.keys() and {"mmc", "bmc_v2"} <= set(local.per_era)
    for key, values in local.per_era.items():
        np.testing.assert_array_equal(on_dask.per_era[key], values, err_msg=key)
    score_options = ScoreOptions(("target",), files_with_era / "meta.parquet")
    [want], [got] = score_predictions(store, preds, score_options), score_predictions(store, preds, score_options,
                                                                                       client=client)
    assert got.eras == want.eras
    for key in ("corr", "mmc", "exposure_max", "exposure_rms"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)


# -- era_parts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, n_parts", [([10] * 24, 8), ([1, 1, 1, 100, 1, 1], 3), ([5, 7], 8), ([3], 4),
                                            ([0, 4, 0, 4], 2)])
def test_era_parts_cover_every_era_once_in_order(sizes, n_parts):
    """Guards against an era lost, scored twice, or split across tasks (its per-era score would change)."""
    parts = era_parts(np.array(sizes), n_parts)
    assert parts[0][0] == 0 and parts[-1][1] == len(sizes)
    assert all(k1 > k0 for k0, k1 in parts)
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert len(parts) <= min(n_parts, len(sizes))


def test_era_parts_balance_rows():
    assert era_parts(np.full(24, 10), 8) == [(3 * i, 3 * i + 3) for i in range(8)]
    assert era_parts(np.array([1, 1, 1, 100, 1, 1]), 3) == [(0, 3), (3, 4), (4, 6)]
    assert era_parts(np.array([]), 4) == []


# -- engine: per-era arrays equal a local run ------------------------------------------------------

def test_evaluate_on_dask_equals_local_run(client, store_path, files):
    """Every per-era metric, with MMC and BMC against two benchmark columns, bit for bit."""
    store = open_store(store_path)
    options = EvaluateOptions(feature_set="small", meta_model=files / "meta.parquet", benchmark=files / "bench.parquet")
    local = evaluate_predictions(store, files / "preds.parquet", options)
    calls = []
    on_dask = evaluate_predictions(store, files / "preds.parquet", options, progress=lambda *c: calls.append(c),
                                   client=client)
    assert on_dask.eras == local.eras and on_dask.columns == local.columns and on_dask.benchmarks == ["v1", "v2"]
    assert on_dask.per_era.keys() == local.per_era.keys() and {"mmc", "bmc_v2", "fnc"} <= set(local.per_era)
    for key, values in local.per_era.items():
        np.testing.assert_array_equal(on_dask.per_era[key], values, err_msg=key)
    assert json.dumps(on_dask.summary()) == json.dumps(local.summary())
    assert len(calls) == 2 * PARTS_PER_WORKER and sum(rows for _, rows, _ in calls) == len(store.ids)  # per part


def test_evaluate_on_dask_keeps_the_era_range(client, store_path, files):
    store = open_store(store_path)
    options = EvaluateOptions(eras=f"{store.eras[20]}:")
    on_dask = evaluate_predictions(store, files / "preds.parquet", options, client=client)
    assert on_dask.eras == store.eras[20:]
    np.testing.assert_array_equal(on_dask.per_era["corr"],
                                  evaluate_predictions(store, files / "preds.parquet", options).per_era["corr"])


def test_score_on_dask_equals_local_run(client, store_path, files):
    store = open_store(store_path)
    options = ScoreOptions(("target", store.target_names[1]), files / "meta.parquet", None, "small")
    local = score_predictions(store, files / "preds.parquet", options)
    on_dask = score_predictions(store, files / "preds.parquet", options, client=client)
    assert [s.target for s in on_dask] == ["target", store.target_names[1]]
    for want, got in zip(local, on_dask):
        assert got.eras == want.eras == store.eras
        for key in ("corr", "mmc", "exposure_max", "exposure_rms"):
            np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)


def test_bad_input_refused_before_any_task(client, store_path, files):
    """Unknown target: the same one-line InputError as a local run, raised on the client."""
    store = open_store(store_path)
    with pytest.raises(InputError, match="unknown target 'target_x'"):
        score_predictions(store, files / "preds.parquet", ScoreOptions(("target_x",)), client=client)
    with pytest.raises(InputError, match="unknown target 'target_x'"):
        evaluate_predictions(store, files / "preds.parquet", EvaluateOptions(target="target_x"), client=client)


def test_task_refuses_a_changed_store(store_path):
    """A worker that opens another store at the path (re-ingested mid-run) fails its task, one line."""
    with pytest.raises(InputError, match="is another store than the one this run began with"):
        open_store_checked(store_path, "not-the-fingerprint")


# -- CLI --------------------------------------------------------------------------------------

def test_cli_score_with_scheduler_prints_the_local_numbers(client, store_path, files):
    args = ["score", str(files / "preds.parquet"), "--store", str(store_path), "--meta-model",
            str(files / "meta.parquet"), "--json"]
    local = CliRunner().invoke(cli, args)
    remote = CliRunner().invoke(cli, [*args, "--scheduler", client.scheduler.address])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert remote.output == local.output
    assert json.loads(remote.output)[0]["eras"] > 0


def test_cli_evaluate_with_two_workers_writes_the_local_metrics(store_path, files, tmp_path, monkeypatch):
    """--workers 2 from a relative path: same metrics.json numbers as the local run (paths sent absolute)."""
    monkeypatch.chdir(files)
    args = ["evaluate", "preds.parquet", "--store", str(store_path), "--benchmark", "bench.parquet", "--json"]
    local = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "local")])
    on_dask = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "dask"), "--workers", "2"])
    assert local.exit_code == 0 and on_dask.exit_code == 0, on_dask.output
    assert json.dumps(json.loads(on_dask.output)["summary"]) == json.dumps(json.loads(local.output)["summary"])
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("local", "dask")]
    for key in ("eras", "summary", "per_era"):
        assert json.dumps(metrics[1][key]) == json.dumps(metrics[0][key]), key


def test_cli_scheduler_that_does_not_answer_exits_2_in_one_line(store_path, files):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["score", str(files / "preds.parquet"), "--store", str(store_path),
                                      "--scheduler", address, "--scheduler-timeout", "2"])
    assert result.exit_code == 2
    assert f"no Dask scheduler answered at {address} within 2 s" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_workers_and_scheduler_together_exit_2(store_path, files):
    result = CliRunner().invoke(cli, ["score", str(files / "preds.parquet"), "--store", str(store_path),
                                      "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "not both" in result.output
