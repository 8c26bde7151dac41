"""Synthetic data: Numerai v5 shape, planted signal, determinism."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from eraflow.engine import InputError, SynthSpec, write_synthetic
from eraflow.engine.data.synth import TARGET_SHARES, TARGET_VALUES

from .conftest import SMALL


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_files(tmp_path, synth_dir):
    write_synthetic(tmp_path, SMALL)
    for name in ("train.parquet", "validation.parquet", "live.parquet", "meta_model.parquet", "features.json"):
        assert digest(tmp_path / name) == digest(synth_dir / name), name


def test_other_seed_gives_other_data(tmp_path, synth_dir):
    write_synthetic(tmp_path, SynthSpec(**{**SMALL.__dict__, "seed": 8}))
    assert digest(tmp_path / "train.parquet") != digest(synth_dir / "train.parquet")


def test_files_have_numerai_v5_layout(synth_dir):
    train = pq.read_table(synth_dir / "train.parquet")
    valid = pq.read_table(synth_dir / "validation.parquet")
    live = pq.read_table(synth_dir / "live.parquet")
    doc = json.loads((synth_dir / "features.json").read_text())
    features = doc["feature_sets"]["all"]
    assert len(features) == SMALL.features
    assert {"small", "medium", "all", "intelligence"} <= set(doc["feature_sets"])
    assert set(doc["feature_sets"]["small"]) < set(doc["feature_sets"]["medium"]) < set(features)
    assert doc["targets"][0] == "target" and "target_ender_20" in doc["targets"]
    assert train.schema.field(features[0]).type == "int8"
    assert "data_type" not in train.column_names
    assert set(valid.column("data_type").unique().to_pylist()) == {"validation"}
    assert set(live.column("data_type").unique().to_pylist()) == {"live"}
    assert live.column("era").unique().to_pylist() == [f"{SMALL.eras + 1:04d}"]
    assert train.column("era").to_pylist() == sorted(train.column("era").to_pylist())
    ids = train.column("id").to_pylist() + valid.column("id").to_pylist() + live.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert pq.ParquetFile(synth_dir / "train.parquet").metadata.row_group(0).column(2).physical_type == "INT32"


def test_features_are_codes_with_missing_cells_as_all_two(synth_dir):
    table = pq.read_table(synth_dir / "train.parquet")
    features = [c for c in table.column_names if c.startswith("feature")]
    values = np.column_stack([table.column(f).to_numpy() for f in features])
    assert values.min() == 0 and values.max() == 4
    shares = np.bincount(values.ravel(), minlength=5) / values.size
    np.testing.assert_allclose(shares, 0.2, atol=0.03, err_msg="feature bins are quintiles")
    eras = table.column("era").to_numpy()
    all_two = [(e, j) for e in np.unique(eras) for j in range(len(features))
               if np.all(values[eras == e, j] == 2)]
    assert all_two, "some (era, feature) cells are missing (all 2)"


def test_features_of_one_group_correlate(synth_dir):
    table = pq.read_table(synth_dir / "train.parquet")
    x = np.column_stack([table.column(f"feature_{g}_{i:04d}").to_numpy().astype(float)
                         for g, i in [("intelligence", 0), ("intelligence", 1), ("rain", 39)]])
    c = np.corrcoef(x.T)
    assert c[0, 1] > 0.15 > abs(c[0, 2])


def test_targets_follow_numerai_bins_and_nan_rules(synth_dir):
    train = pq.read_table(synth_dir / "train.parquet")
    valid = pq.read_table(synth_dir / "validation.parquet")
    t = train.column("target").to_numpy()
    assert set(np.unique(t)) <= set(TARGET_VALUES.tolist())
    shares = np.array([(t == v).mean() for v in TARGET_VALUES])
    np.testing.assert_allclose(shares, TARGET_SHARES, atol=0.01)
    np.testing.assert_array_equal(t, train.column("target_ender_20").to_numpy())
    assert np.isnan(train.column("target_ender_60").to_numpy()).any(), "60-day targets have a NaN tail"
    v_eras = valid.column("era").to_numpy()
    v_target = valid.column("target").to_numpy()
    newest = sorted(set(v_eras))[-SMALL.unlabeled_eras:]
    assert np.isnan(v_target[np.isin(v_eras, newest)]).all()
    assert not np.isnan(v_target[~np.isin(v_eras, newest)]).any()


def test_planted_signal_is_weak_with_negative_regimes(tmp_path):
    record = write_synthetic(tmp_path, SynthSpec(eras=60, rows_per_era=2000, features=20, seed=3))
    corr = np.array(list(record["oracle_corr"].values()))
    assert 0.015 < corr.mean() < 0.06, "per-era corr of the planted signal around 0.02-0.05"
    assert 0.05 < (corr < 0).mean() < 0.5, "some eras negative"
    assert record["oracle_corr_mean"] == pytest.approx(corr.mean())
    assert set(record["signal_features"]) <= set(pq.read_schema(tmp_path / "train.parquet").names)


def test_meta_model_covers_validation_ids(synth_dir):
    meta = pq.read_table(synth_dir / "meta_model.parquet")
    valid = pq.read_table(synth_dir / "validation.parquet")
    assert meta.column("id").to_pylist() == valid.column("id").to_pylist()
    m = meta.column("numerai_meta_model").to_numpy()
    assert 0 < m.min() and m.max() < 1


@pytest.mark.parametrize("field,value", [("eras", 1), ("rows_per_era", 3), ("features", 2), ("targets", 99)])
def test_bad_sizes_are_refused(tmp_path, field, value):
    with pytest.raises(InputError):
        write_synthetic(tmp_path, SynthSpec(**{field: value}))
