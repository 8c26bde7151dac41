"""The whole Numerai Signals journey offline, through the CLI: synthetic prices → features → keyed store → train →
predict → alpha / MPC scores → a validated live submission (dry run)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from eraflow.cli.main import cli
from eraflow.engine import open_store


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    """Every step of the journey once; returns the folder holding its outputs."""
    out = tmp_path_factory.mktemp("journey")
    ledger = out / "ledger.duckdb"
    invoke("synth", "--signals", out / "sig", "--tickers", 160, "--weeks", 90, "--momentum", 0.3, "--seed", 3, "-q")
    invoke("signals", "features", out / "sig" / "prices.parquet", "-o", out / "features.parquet",
           "--targets", out / "sig" / "targets.parquet", "-q")
    invoke("ingest", out / "features.parquet", out / "store", "-q")
    eras = open_store(out / "store").eras
    (out / "params.toml").write_text("n_estimators = 60\nnum_leaves = 8\nlearning_rate = 0.05\n")
    valid = eras[-24]
    invoke("train", out / "store", "-o", out / "model", "--params", out / "params.toml", "--valid-eras", f"{valid}:",
           "--ledger", ledger, "-q")
    invoke("predict", out / "model", out / "store", "-o", out / "preds.parquet", "--eras", f"{valid}:")
    return out, valid


def test_the_store_is_keyed_by_friday_and_ticker(journey):
    out, _ = journey
    store = open_store(out / "store")
    features = pl.read_parquet(out / "features.parquet")
    assert store.n_rows == features.height
    assert store.eras == sorted(features["date"].dt.strftime("%Y-%m-%d").unique().to_list())
    keys = (features["date"].dt.strftime("%Y-%m-%d") + "|" + features["numerai_ticker"]).sort().to_list()
    assert sorted(store.ids.astype(str)) == keys


def test_held_out_eras_score_positive_with_alpha_and_mpc(journey):
    """The planted momentum is found on eras the model never saw; alpha and MPC come with the usual summaries."""
    out, valid = journey
    sig = out / "sig"
    result = invoke("score", out / "preds.parquet", "--store", out / "store", "--neutralizers",
                    sig / "neutralizers.parquet", "--sample-weights", sig / "sample_weights.parquet", "--meta-model",
                    sig / "meta_model.parquet", "--json")
    (row,) = json.loads(result.stdout)
    assert row["eras"] >= 15  # the newest Fridays have no target yet
    assert row["corr_mean"] > 0
    for name in ("alpha", "mpc"):
        assert np.isfinite([row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_sharpe"]]).all()
    assert row["alpha_mean"] > 0


def test_the_live_friday_is_submitted_as_numerai_tools_validates_it(journey):
    out, _ = journey
    result = invoke("submit", "--signals", out / "preds.parquet", "--model", "m", "--live",
                    out / "sig" / "universe.parquet", "--dry-run", "--json")
    record = json.loads(result.stdout)
    store = open_store(out / "store")
    live = pl.read_parquet(out / "sig" / "universe.parquet")["numerai_ticker"]
    newest = [i.split("|", 1)[1] for i in store.ids.astype(str) if i.startswith(store.eras[-1])]
    assert record["dry_run"] is True
    assert record["rows"] == len(set(newest) & set(live.to_list())) >= 100
