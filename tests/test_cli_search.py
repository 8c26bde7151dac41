"""`eraflow search`: outputs, ledger runs, resume, `train --params best_params.toml`, bad input (exit 2, one line)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import SynthSpec
from eraflow.engine.evaluation.ledger import list_runs, show_run
from tests.conftest import synthetic_store

SPEC = SynthSpec(eras=24, rows_per_era=60, features=16, targets=2, seed=5)  # validation eras 0019..0024
SPACE = "n_estimators = 12\nnum_leaves = [4, 8]\nlearning_rate = {low = 0.02, high = 0.2, log = true}\n"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("cli-search"), SPEC).path


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def search(store_dir, space, out, *extra):
    return run("search", store_dir, "--space", space, "--cv", 2, "--embargo", 1, "--valid-eras", "0019:", "-o", out,
               *extra)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


def test_search_writes_its_outputs_and_one_ledger_run_per_trial(store_dir, space, tmp_path, private_ledger):
    out = tmp_path / "s"
    result = search(store_dir, space, out, "--trials", 3, "--neutralize", "0,0.5,1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ran"], report["skipped"], report["trials"]) == ([0, 1, 2], [], 3)
    assert sorted(p.name for p in out.iterdir()) == ["best_params.toml", "fold_spread.png", "leaderboard.parquet",
                                                     "metric_vs_params.png", "neutralization.png", "report.html",
                                                     "search.json", "search.lock", "trials"]
    assert pq.read_table(out / "leaderboard.parquet").column("trial").to_pylist() == [0, 1, 2]
    runs = [show_run(r["run_id"]) for r in list_runs() if r["kind"] == "search"]
    assert sorted(r["params"]["trial"] for r in runs) == [0, 1, 2]
    assert {r["params"]["search"] for r in runs} == {report["search"]}
    trial = json.loads((out / "trials" / "trial-0001.json").read_text())
    run1 = next(r for r in runs if r["params"]["trial"] == 1)
    oof = [e["corr"] for e in run1["per_era"] if e["prediction"] == "oof"]
    assert oof == pytest.approx([c for f in trial["folds"] for c in f["corr"]])
    assert {e["prediction"] for e in run1["per_era"]} == {"oof", "oof_n0", "oof_n0.5", "oof_n1"}


def test_rerun_skips_finished_trials_and_extends(store_dir, space, tmp_path, private_ledger):
    out = tmp_path / "s"
    assert search(store_dir, space, out, "--trials", 2).exit_code == 0
    result = search(store_dir, space, out, "--trials", 3)
    assert result.exit_code == 0, result.output
    assert "1 trials run, 2 already done, 3 in" in result.stdout
    assert "trial 2 (3/3 done) " in result.stderr and "trial 0 " not in result.stderr
    assert len([r for r in list_runs() if r["kind"] == "search"]) == 3


def test_rerun_records_finished_trials_missing_from_the_ledger(store_dir, space, tmp_path):
    """A trial file without its ledger run (the process died in between; here: the runs went to another
    ledger) gets its run on the next re-run, under the same run id, and only once."""
    first, second = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    assert search(store_dir, space, tmp_path / "s", "--trials", 2, "--ledger", first).exit_code == 0
    again = [search(store_dir, space, tmp_path / "s", "--trials", 2, "--ledger", second) for _ in range(2)]
    assert all(r.exit_code == 0 for r in again), again[0].output + again[1].output
    assert "recorded 2 finished trial(s) missing from the ledger" in again[0].stdout
    assert "missing from the ledger" not in again[1].stdout
    ids = sorted(r["run_id"] for r in list_runs(first))
    assert sorted(r["run_id"] for r in list_runs(second)) == ids and len(ids) == 2


def test_best_params_train_a_model(store_dir, space, tmp_path):
    out = tmp_path / "s"
    assert search(store_dir, space, out, "--trials", 2).exit_code == 0
    result = run("train", store_dir, "-o", tmp_path / "model", "--params", out / "best_params.toml", "--train-eras",
                 ":0017")
    assert result.exit_code == 0, result.output
    best = json.loads(search(store_dir, space, out, "--trials", 2, "--json").stdout)["best"]
    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert model["params"]["num_leaves"] == best["params"]["num_leaves"]
    assert model["params"]["learning_rate"] == best["params"]["learning_rate"]


@pytest.mark.parametrize("text, message", [
    ("num_leaves = [15, 31\n", "not valid TOML"),
    ("learning_rate = {low = 0.1, high = 0.01}\n", "not below high"),
    ("num_leafs = [15, 31]\n", "takes no parameter 'num_leafs'"),
])
def test_bad_space_is_one_line_and_writes_nothing(store_dir, tmp_path, text, message):
    space = tmp_path / "space.toml"
    space.write_text(text)
    line = one_line_error(search(store_dir, space, tmp_path / "s", "--trials", 2))
    assert message in line
    assert not (tmp_path / "s").exists()


def test_bad_options_are_one_line_errors(store_dir, space, tmp_path):
    assert "overlaps --valid-eras" in one_line_error(
        search(store_dir, space, tmp_path / "a", "--trials", 1, "--train-eras", "0001:0020"))
    assert "--neutralize takes proportions" in one_line_error(
        search(store_dir, space, tmp_path / "b", "--trials", 1, "--neutralize", "0,half"))
    assert "must lie in [0, 1]" in one_line_error(
        search(store_dir, space, tmp_path / "c", "--trials", 1, "--neutralize", "0,1.5"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("keep")
    assert "not an eraflow search" in one_line_error(search(store_dir, space, foreign, "--trials", 1))
    assert [p.name for p in foreign.iterdir()] == ["data.csv"]
    assert not any((tmp_path / d).exists() for d in "abc")


def test_changed_search_in_same_directory_is_refused(store_dir, space, tmp_path):
    out = tmp_path / "s"
    assert search(store_dir, space, out, "--trials", 1).exit_code == 0
    assert "another seed" in one_line_error(search(store_dir, space, out, "--trials", 1, "--seed", 3))


def test_era_boost_search_varies_steps(store_dir, space, tmp_path):
    """`search --era-boost proportion=0.5,steps=2` with a space varying era_boost_steps: a trial drawing 0 steps
    scores as the same trial of the plain search (each parameter has its own generator, so adding a key keeps
    the others' draws), one drawing 2 steps differs, and best_params.toml keeps the boost settings."""
    assert search(store_dir, space, tmp_path / "plain", "--trials", 4).exit_code == 0
    boosted_space = tmp_path / "boosted.toml"
    boosted_space.write_text(SPACE + "era_boost_steps = [0, 2]\n")
    result = search(store_dir, boosted_space, tmp_path / "boost", "--trials", 4,
                    "--era-boost", "proportion=0.5,steps=2")
    assert result.exit_code == 0, result.output
    plain = pq.read_table(tmp_path / "plain" / "leaderboard.parquet").to_pydict()
    boosted = pq.read_table(tmp_path / "boost" / "leaderboard.parquet").to_pydict()
    assert boosted["num_leaves"] == plain["num_leaves"] and boosted["learning_rate"] == plain["learning_rate"]
    steps = boosted["era_boost_steps"]
    assert set(steps) == {0, 2}, "4 trials drew both values (seed 0)"
    for i, s in enumerate(steps):
        same = boosted["cv_mean"][i] == pytest.approx(plain["cv_mean"][i], rel=1e-9)
        assert same == (s == 0), f"trial {i} with {s} steps"
    assert "era_boost_proportion = 0.5" in (tmp_path / "boost" / "best_params.toml").read_text()


def test_neutralize_features_without_neutralize_is_one_line(store_dir, space, tmp_path):
    line = one_line_error(search(store_dir, space, tmp_path / "s", "--trials", 1, "--neutralize-features", "small"))
    assert "--neutralize-features small needs --neutralize" in line
    assert not (tmp_path / "s").exists()


def test_help_names_threads_and_cluster_options():
    out = run("search", "--help").output
    assert all(option in out for option in ("--threads", "--workers", "--scheduler", "--sampler", "--metric"))
