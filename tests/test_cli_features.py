"""``eraflow features``: --add group-stats and --select through the command line, and the commands that use them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.cli import features as features_cli
from eraflow.engine import SynthSpec, open_store
from eraflow.engine.data.derived import GROUP_STATS, derived_recipe
from eraflow.engine.experiments import selection
from eraflow.engine.experiments.selection import select_features
from tests.conftest import synthetic_store

SPEC = SynthSpec(eras=12, rows_per_era=60, features=40, targets=1, seed=5)  # eras 0011-0012 unlabeled
SELECT = ["--valid-eras", "0009:0010", "--embargo", "1"]  # training eras 0001..0007


def invoke(*argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def assert_refused(result, *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words``."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.count("\n") == 1 and all(w in result.stderr for w in words), result.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_features")
    synthetic_store(out, SPEC).close()
    return out


@pytest.fixture
def store(base, tmp_path):
    return shutil.copytree(base / "store", tmp_path / "store")


def test_add_train_on_a_composed_set_then_predict_where_they_are_absent(base, store, tmp_path):
    result = invoke("features", store, "--add", GROUP_STATS, "--json", "-q")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["features"]) == 30
    (tmp_path / "p.toml").write_text("n_estimators = 8\nnum_leaves = 4\n")
    result = invoke("train", store, "-o", tmp_path / "m", "--feature-set", "medium+group-stats",
                    "--params", tmp_path / "p.toml", "-q")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["features"][-30:] == open_store(store).feature_sets[GROUP_STATS]
    if "derived" not in meta:  # until train.py records it (the integrator adds the line)
        (tmp_path / "m" / "model.json").write_text(json.dumps({**meta, "derived": derived_recipe(
            open_store(store), meta["features"])}))
    result = invoke("predict", tmp_path / "m", store, "-o", tmp_path / "ok.parquet")
    assert result.exit_code == 0, result.output
    result = invoke("predict", tmp_path / "m", base / "store", "-o", tmp_path / "no.parquet")
    assert_refused(result, f"eraflow features {base / 'store'} --add group-stats --groups")
    assert not (tmp_path / "no.parquet").exists()
    result = invoke("live", tmp_path / "m", "--data", base, "-o", tmp_path / "live.parquet")
    assert result.exit_code == 0, result.output


def test_dry_run_prints_the_plan_and_changes_nothing(store):
    meta = (store / "meta.json").read_bytes()
    result = invoke("features", store, "--add", GROUP_STATS, "--groups", "rain,medium", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would add 6 features" in result.stdout and "medium: mean, std, skew of" in result.stdout
    assert (store / "meta.json").read_bytes() == meta


@pytest.mark.parametrize("args, words", [
    ([], ["give one of --add group-stats or --select"]),
    (["--add", GROUP_STATS, "--select", "era-sharpe"], ["give one of"]),
    (["--select", "era-sharpe", "--keep", "3"], ["--select needs --keep N and --name SET"]),
    (["--select", "era-sharpe", "--keep", "3", "--name", "x", "--dry-run"], ["go with --add"]),
    (["--add", GROUP_STATS, "--groups", "rain,nope"], ["'nope' is not a feature set"]),
    (["--select", "era-sharpe", "--keep", "3", "--name", "medium"], ["'medium' came from features.json"]),
    (["--select", "era-sharpe", "--keep", "3", "--name", "a+b"], ["no '+'"]),
    (["--select", "era-sharpe", "--keep", "0", "--name", "x"], ["--keep must be"]),
    (["--select", "era-sharpe", "--keep", "3", "--name", GROUP_STATS], ["'group-stats' is reserved", "--add"]),
    (["--add", GROUP_STATS, "--keep", "3"], ["--keep go with --select"]),
    (["--add", GROUP_STATS, "--seed", "1", "--cv", "3"], ["--cv, --seed go with --select"]),  # even at the default
])
def test_bad_input_is_one_line_and_leaves_the_store_alone(store, args, words):
    meta = (store / "meta.json").read_bytes()
    assert_refused(invoke("features", store, *args), *words)
    assert (store / "meta.json").read_bytes() == meta


def test_the_cli_offers_exactly_the_selection_methods():
    """The CLI lists them without importing the selection module (LightGBM) at lookup; they must agree."""
    assert features_cli.METHODS == selection.METHODS


def test_missing_store_is_one_line(tmp_path):
    assert_refused(invoke("features", tmp_path / "none", "--add", GROUP_STATS), "no store at")


@pytest.mark.parametrize("method", ["era-sharpe", "importance"])
def test_select_saves_the_selection_as_a_named_set(store, method):
    args = ["features", store, "--select", method, "--keep", "4", "--name", "top4", *SELECT, "--cv", "2", "--json",
            "-q"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    expected = select_features(open_store(store), method, 4, valid_eras="0009:0010", embargo=1, cv=2)
    saved = open_store(store)
    assert saved.feature_sets["top4"] == expected.features == json.loads(result.stdout)["features"]
    recipe = saved.meta["made_sets"]["top4"]
    assert recipe["method"] == method and recipe["eras"] == expected.eras
    assert not set(recipe["eras"]) & {"0008", "0009", "0010", "0011", "0012"}
    assert invoke(*args).exit_code == 0  # replacing a set eraflow made is allowed


def test_select_never_reads_validation_targets(store, tmp_path):
    """Guards against the CLI dropping --valid-eras: scrambled validation targets change nothing saved."""
    other = shutil.copytree(store, tmp_path / "other")
    s = open_store(other)
    lo, hi = int(s.offsets[s.eras.index("0009")]), int(s.offsets[s.eras.index("0010") + 1])
    targets = np.memmap(other / "targets.f32", dtype=np.float32, mode="r+", shape=s.targets.shape)
    targets[lo:hi] = np.random.default_rng(0).permutation(targets[lo:hi])
    targets.flush()
    del targets
    runs = {}
    for path in (store, other):
        for label, extra in (("held", SELECT), ("every", [])):
            result = invoke("features", path, "--select", "era-sharpe", "--keep", "40", "--name", label, *extra,
                            "--json", "-q")
            assert result.exit_code == 0, result.output
            runs[path.name, label] = json.loads(result.stdout)["scores"]
    assert runs["store", "held"] == runs["other", "held"]
    assert runs["store", "every"] != runs["other", "every"]  # the scramble is visible when validation eras are read
