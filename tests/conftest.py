"""Shared fixtures: small synthetic Numerai data and a store built from it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eraflow.engine import IngestOptions, SynthSpec, ingest_files, write_synthetic

SMALL = SynthSpec(eras=24, rows_per_era=60, features=40, targets=4, seed=7)


@pytest.fixture(autouse=True)
def private_ledger(tmp_path, monkeypatch) -> Path:
    """Runs recorded by tests go to a ledger of their own, never the user's."""
    path = tmp_path / "ledger.duckdb"
    monkeypatch.setenv("ERAFLOW_LEDGER", str(path))
    return path


@pytest.fixture(autouse=True)
def no_real_credentials(tmp_path, monkeypatch):
    """Tests never see the user's keys or config file."""
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)
    monkeypatch.setenv("ERAFLOW_NUMERAI_CONFIG", str(tmp_path / "no-such-config.toml"))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, SMALL)
    return out


@pytest.fixture(scope="session")
def store_path(synth_dir, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("stores") / "store"
    ingest_files([synth_dir / "train.parquet", synth_dir / "validation.parquet"], store,
           IngestOptions(features_json=synth_dir / "features.json", feature_set="all"))
    return store


def synthetic_store(out: Path, spec: SynthSpec):
    """Synthetic train + validation files written into ``out`` and ingested into ``out/store``."""
    from eraflow.engine import open_store

    write_synthetic(out, spec)
    return open_store(ingest_files([out / "train.parquet", out / "validation.parquet"], out / "store",
                                   IngestOptions(features_json=out / "features.json", feature_set="all")).store)


def write_parquet(path: Path, columns: dict, row_group_size: int | None = None) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def tiny_frame(n_eras: int = 3, rows: int = 4, n_features: int = 3, seed: int = 0) -> dict:
    """A small era-sorted table as columns: id, era, feature_0.., target."""
    rng = np.random.default_rng(seed)
    n = n_eras * rows
    cols = {"id": [f"id{i:05d}" for i in range(n)],
            "era": [f"{1 + i // rows:04d}" for i in range(n)]}
    for j in range(n_features):
        cols[f"feature_{j}"] = pa.array(rng.integers(0, 5, n).astype(np.int8))
    cols["target"] = pa.array(rng.choice([0, .25, .5, .75, 1], n).astype(np.float32))
    return cols


RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="session")
def runtime_root(tmp_path_factory) -> Path:
    """Cache root holding Numerai's runtime venv for eraflow's Python, built once and kept across test runs."""
    from eraflow.engine.numerai.runtime import runtime_venv

    root = tmp_path_factory.getbasetemp().parent / "eraflow-runtime-cache" / "eraflow"
    runtime_venv(RUNNING_PYTHON, root=root)
    return root


def check_exported(model_dir: Path, out: Path, runtime_root: Path, live: Path | None = None):
    """Export ``model_dir`` to ``out`` and run it in Numerai's runtime for eraflow's Python (written if it
    passes); the :class:`~eraflow.engine.numerai.runtime.RuntimeCheck`."""
    from eraflow.engine.models.predict import load_model
    from eraflow.engine.numerai.runtime import export_checked

    return export_checked(load_model(model_dir), out, RUNNING_PYTHON, live, runtime_root)[1]
