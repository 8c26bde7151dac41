"""Feature selection: each method against an independent oracle (pandas, lightgbm, scipy), training eras only
(no leakage from validation eras), bounded reads, errors."""

from __future__ import annotations

import json
import shutil
import tracemalloc

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from eraflow.engine import InputError, SynthSpec, open_store
from eraflow.engine.data.store import MISSING
from eraflow.engine.experiments import selection
from eraflow.engine.experiments.selection import (
    cluster_representatives,
    cluster_sample_rows,
    corr_with_target,
    era_feature_corr,
    feature_clusters,
    sample_corr,
    select_features,
    top_indices,
    training_eras,
)
from eraflow.engine.models.params import BASE

from .conftest import synthetic_store

SPEC = SynthSpec(eras=30, rows_per_era=80, features=24, targets=1, validation_eras=8, unlabeled_eras=2, seed=5)
VALID = "0023:"  # validation eras 0023..0030 (0029, 0030 unlabeled); embargo 4 drops 0019..0022
EXPECTED_ERAS = [f"{k:04d}" for k in range(1, 19)]  # the training eras with VALID and the default embargo (4)
FAST = {**BASE, "n_estimators": 25, "learning_rate": 0.1, "max_depth": 3, "num_leaves": 7, "colsample_bytree": 0.5,
        "deterministic": True, "num_threads": 1}


def _scatter_missing(path, seed: int = 0) -> None:
    """Scattered missing feature codes (3 % of cells) and missing targets (5 % of rows) written into the store
    files: pairwise deletion must be exercised, not only the generator's whole missing columns."""
    store = open_store(path)
    n, f = store.features.shape
    rng = np.random.default_rng(seed)
    codes = np.memmap(path / "features.i8", dtype=np.int8, mode="r+", shape=(n, f))
    codes[rng.random((n, f)) < 0.03] = MISSING
    codes.flush()
    targets = np.memmap(path / "targets.f32", dtype=np.float32, mode="r+", shape=store.targets.shape)
    targets[rng.random(n) < 0.05, 0] = np.nan
    targets.flush()
    del codes, targets
    store.close()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("selection")
    synthetic_store(out, SPEC).close()
    _scatter_missing(out / "store")
    return out / "store"


@pytest.fixture
def store(store_dir):
    with open_store(store_dir) as s:
        yield s


def _frame(store, eras) -> pd.DataFrame:
    """The rows of ``eras`` as a pandas frame: float features (NaN missing), target, era."""
    rows = np.concatenate([np.arange(store.offsets[k], store.offsets[k + 1]) for k in eras])
    x = np.asarray(store.features[rows]).astype(np.float64)
    x[x < 0] = np.nan
    frame = pd.DataFrame(x, columns=store.feature_names)
    frame["target"] = store.targets[rows, 0]
    frame["era"] = np.repeat([store.eras[k] for k in eras], np.diff(store.offsets)[eras])
    return frame


def _pandas_sharpe(store, eras) -> pd.Series:
    """Oracle: per-era Pearson corr (pandas, pairwise complete), mean / population std over eras."""
    frame = _frame(store, eras)
    per_era = pd.DataFrame({era: g[store.feature_names].corrwith(g["target"]) for era, g in frame.groupby("era")}).T
    return per_era.mean() / per_era.std(ddof=0)


def test_training_eras_drop_validation_embargo_and_unlabeled(store):
    """Guards against selecting on validation eras, on the embargo before them, or on eras without targets."""
    eras = training_eras(store, "target", None, VALID, 4)
    assert [store.eras[k] for k in eras] == EXPECTED_ERAS
    no_valid = training_eras(store, "target", "0005:", None, 4)
    assert [store.eras[k] for k in no_valid] == [f"{k:04d}" for k in range(5, 29)]  # 0029, 0030 unlabeled
    around = training_eras(store, "target", None, "0010:0012", 2)
    assert [store.eras[k] for k in around] == [f"{k:04d}" for k in (*range(1, 8), *range(15, 29))]


def test_era_sharpe_matches_pandas_groupby_corr(store):
    sel = select_features(store, "era-sharpe", 6, valid_eras=VALID)
    oracle = _pandas_sharpe(store, training_eras(store, "target", None, VALID, 4))
    assert sel.eras == EXPECTED_ERAS
    assert_allclose([sel.scores[f] for f in store.feature_names], oracle.to_numpy(), rtol=1e-9, atol=1e-12)
    assert sel.features == list(oracle.abs().sort_values(ascending=False, kind="stable").index[:6])  # best first


def test_era_sharpe_is_the_same_in_tiny_blocks_and_tiles(store, monkeypatch):
    """Guards against era/column boundary bugs in blocked reading: one era per block, 7-cell tiles."""
    eras = training_eras(store, "target", None, VALID, 4)
    cols = np.arange(len(store.feature_names))
    whole = era_feature_corr(store, eras, cols, 0)
    reads = []
    real_read = selection.read_codes

    def recording_read(s, lo, hi, c):
        reads.append((hi - lo) * len(c))
        return real_read(s, lo, hi, c)

    monkeypatch.setattr(selection, "BLOCK_BYTES", 1)
    monkeypatch.setattr(selection, "TILE_CELLS", 7)
    monkeypatch.setattr(selection, "read_codes", recording_read)
    assert_allclose(era_feature_corr(store, eras, cols, 0), whole, rtol=1e-12, atol=1e-15)
    assert max(reads) == int(np.diff(store.offsets)[eras].max()) * cols.size  # one era at a time, never more


def test_corr_with_target_hand_case_drops_missing_rows_and_constant_features():
    """Era 1 (rows 0..4): row 4 has no target, so no feature uses it; row 3 lacks feature 0's code, so
    feature 0 is x = (0, 2, 4) against y = (0, .5, 1): corr 1; feature 1 keeps row 3: x = (0, 4, 4, 1),
    y = (0, .5, 1, .25), corr (4·6.25 − 9·1.75)/√((4·33 − 9²)(4·1.3125 − 1.75²)) = 9.25/√(51·2.1875).
    Era 2 (rows 5..7): feature 0 is constant (no corr); feature 1 = (2, 3, 1): corr −1.5/√(6·1.5) = −0.5."""
    codes = np.array([[0, 0], [2, 4], [4, 4], [-1, 1], [3, 1], [1, 2], [1, 3], [1, 1]], dtype=np.int8)
    y = np.array([0.0, 0.5, 1.0, 0.25, np.nan, 0.0, 0.5, 1.0])
    assert_allclose(corr_with_target(codes[:5], y[:5]), [1.0, 9.25 / np.sqrt(51 * 2.1875)], rtol=1e-15)
    second = corr_with_target(codes[5:], y[5:])  # no code missing: the scalar sums
    assert np.isnan(second[0])
    assert_allclose(second[1], -0.5, rtol=1e-15)


def test_reading_never_holds_the_float_matrix(store, monkeypatch):
    """Guards against converting every training row to float at once: peak numpy allocations of era-sharpe
    (one era per block, small tiles) and of the sample corr (64-row chunks) stay under a quarter of the
    float64 matrix of the rows they read."""
    eras = training_eras(store, "target", None, VALID, 4)
    cols = np.arange(len(store.feature_names))
    matrix_bytes = int(np.diff(store.offsets)[eras].sum()) * cols.size * 8
    monkeypatch.setattr(selection, "BLOCK_BYTES", 1)
    monkeypatch.setattr(selection, "TILE_CELLS", 256)
    monkeypatch.setattr(selection, "SAMPLE_CHUNK_ROWS", 64)
    rows = cluster_sample_rows(store, eras, seed=0)
    for compute in (lambda: era_feature_corr(store, eras, cols, 0), lambda: sample_corr(store, rows, cols)):
        tracemalloc.start()
        try:
            compute()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < matrix_bytes / 4, (peak, matrix_bytes)


def test_importance_matches_lightgbm_on_each_fold(store):
    """Oracle: LightGBM on float arrays of each expanding fold's training eras (fold cut by hand)."""
    sel = select_features(store, "importance", 5, valid_eras=VALID, cv=3, embargo=2, seed=3, params=FAST)
    eras = training_eras(store, "target", None, VALID, 2)
    assert [store.eras[k] for k in eras] == [f"{k:04d}" for k in range(1, 21)]
    blocks = np.array_split(eras, 4)
    params = {k: v for k, v in FAST.items() if k != "n_estimators"} | {"device_type": "cpu", "seed": 3}
    gain = np.zeros(len(store.feature_names))
    for test in blocks[1:]:
        frame = _frame(store, eras[eras < test[0] - 2])
        y = frame["target"].to_numpy()
        data = lgb.Dataset(frame[store.feature_names].to_numpy(np.float32), np.nan_to_num(y, nan=0.5),
                           weight=np.isfinite(y).astype(np.float64), params={"verbose": -1})
        gain += lgb.train(params, data, FAST["n_estimators"]).feature_importance("gain")
    assert_allclose([sel.scores[f] for f in store.feature_names], gain, rtol=1e-6)
    assert sel.features == [store.feature_names[i] for i in np.argsort(-gain, kind="stable")[:5]]
    assert sel.eras == [f"{k:04d}" for k in range(1, 21)]


def test_cluster_sample_is_seeded_bounded_and_from_training_eras_only(store, monkeypatch):
    eras = training_eras(store, "target", None, VALID, 4)
    monkeypatch.setattr(selection, "CLUSTER_SAMPLE_ROWS", 18 * 30)
    rows = cluster_sample_rows(store, eras, seed=1)
    era_of_row = np.searchsorted(store.offsets, rows, side="right") - 1
    assert_array_equal(np.bincount(era_of_row, minlength=store.n_eras)[eras], 30)
    assert set(era_of_row) == set(eras.tolist())
    assert np.all(np.diff(rows) > 0)
    assert_array_equal(cluster_sample_rows(store, eras, seed=1), rows)
    assert not np.array_equal(cluster_sample_rows(store, eras, seed=2), rows)


def test_sample_corr_matches_pandas_pairwise_corr(store, monkeypatch):
    """Both paths of the chunked sums (chunks with and without missing codes) against DataFrame.corr."""
    monkeypatch.setattr(selection, "SAMPLE_CHUNK_ROWS", 64)
    rows = np.arange(0, store.n_rows, 3)
    cols = np.array([0, 2, 3, 5, 8, 13, 21])
    x = np.asarray(store.features[rows][:, cols]).astype(np.float64)
    x[x < 0] = np.nan
    x[:64] = np.nan_to_num(x[:64], nan=2.0)  # a first chunk without missing codes: the fast path
    codes = np.asarray(store.features).copy()
    codes[rows[:64]] = np.where(codes[rows[:64]] < 0, 2, codes[rows[:64]])
    monkeypatch.setattr(store, "features", codes)
    assert_allclose(sample_corr(store, rows, cols), pd.DataFrame(x).corr().to_numpy(), rtol=1e-10, atol=1e-12)


def test_cluster_matches_scipy_on_the_same_sample(store):
    keep = 6
    sel = select_features(store, "cluster", keep, valid_eras=VALID, seed=4)
    eras = training_eras(store, "target", None, VALID, 4)
    rows = cluster_sample_rows(store, eras, seed=4)
    x = np.asarray(store.features[rows]).astype(np.float64)
    x[x < 0] = np.nan
    corr = pd.DataFrame(x).corr().to_numpy()
    distance = 1 - np.abs(corr)
    np.fill_diagonal(distance, 0)
    labels = fcluster(linkage(squareform(distance, checks=False), "average"), keep, "maxclust")
    assert len(set(labels)) == keep
    sharpe = _pandas_sharpe(store, eras).abs().to_numpy()
    names = np.array(store.feature_names)
    expected = [names[labels == c][np.argmax(sharpe[labels == c])] for c in set(labels)]
    assert sel.features == sorted(expected, key=lambda f: -sharpe[store.feature_names.index(f)])
    partition = {frozenset(names[labels == c]) for c in set(labels)}
    assert {frozenset(f for f, c in sel.clusters.items() if c == k) for k in range(keep)} == partition
    assert sel.eras == EXPECTED_ERAS


def test_every_method_finds_the_planted_signal(tmp_path):
    """Validity: with 3 planted signal features of 24 (strong signal), each method's 3 picks include at least 2
    of them (chance: 3 % of draws of 3)."""
    spec = SynthSpec(eras=30, rows_per_era=200, features=24, targets=1, signal_features=3, signal_strength=0.3,
                     seed=1)
    with synthetic_store(tmp_path, spec) as s:
        signal = set(json.loads((tmp_path / "synth.json").read_text())["signal_features"])
        for method in ("era-sharpe", "cluster", "importance"):
            sel = select_features(s, method, 3, valid_eras="0023:", params=FAST)
            assert len(signal & set(sel.features)) >= 2, (method, sel.features, signal)


@pytest.mark.parametrize("method", ["era-sharpe", "cluster", "importance"])
def test_validation_eras_cannot_change_a_selection(store_dir, tmp_path, method):
    """Leakage: new targets AND features in the validation eras change nothing; new training targets do."""
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    kwargs = dict(valid_eras=VALID, seed=1, params=FAST if method == "importance" else None)
    with open_store(store_dir) as s:
        before = select_features(s, method, 5, **kwargs)
        lo, first, n = int(s.offsets[s.eras.index("0023")]), int(s.offsets[s.eras.index("0004")]), s.n_rows
        shape, t_shape = s.features.shape, s.targets.shape
    rng = np.random.default_rng(9)
    codes = np.memmap(copy / "features.i8", dtype=np.int8, mode="r+", shape=shape)
    codes[lo:] = rng.integers(0, 5, codes[lo:].shape)
    targets = np.memmap(copy / "targets.f32", dtype=np.float32, mode="r+", shape=t_shape)
    targets[lo:, 0] = rng.choice([0, 0.25, 0.5, 0.75, 1], n - lo)
    codes.flush(), targets.flush()
    with open_store(copy) as s:
        assert select_features(s, method, 5, **kwargs) == before
    targets[:first, 0] = rng.choice([0, 0.25, 0.5, 0.75, 1], first)  # 0001..0003: trained on by every fold
    targets.flush()
    with open_store(copy) as s:
        after = select_features(s, method, 5, **kwargs)
    assert after.scores != before.scores  # the check above could see a change had there been one
    del codes, targets


def test_feature_set_limits_candidates_and_keep_all_keeps_the_set(store):
    group = store.feature_sets["wisdom"]
    for method in ("era-sharpe", "cluster"):
        sel = select_features(store, method, len(group), feature_set="wisdom", valid_eras=VALID)
        assert sel.features == sorted(group, key=lambda f: -abs(sel.scores[f]))
        assert list(sel.scores) == group
    one = select_features(store, "cluster", 1, feature_set="small", valid_eras=VALID)
    small = store.feature_sets["small"]
    assert one.features == [max(small, key=lambda f: (abs(one.scores[f]), -small.index(f)))]


def test_progress_reports_every_row_and_round(store):
    calls = []
    select_features(store, "cluster", 3, valid_eras=VALID, progress=lambda *a: calls.append(a))
    select_features(store, "importance", 3, valid_eras=VALID, cv=2, params=FAST, progress=lambda *a: calls.append(a))
    totals = {}
    for stage, advance, total in calls:
        done, _ = totals.get(stage, (0, total))
        totals[stage] = (done + advance, total)
    assert totals["feature-target corr"] == (store.offsets[18],) * 2  # the rows of eras 0001..0018
    assert totals["importance models (rounds)"] == (2 * FAST["n_estimators"],) * 2
    sampled = totals["feature-feature corr (sampled rows)"]
    assert sampled[0] == sampled[1] == store.offsets[18]  # eras 0001..0018 have fewer rows than 50000 // 18


def test_top_and_representatives_are_best_first_nan_last_ties_in_store_order():
    scores = np.array([np.nan, 1.0, 3.0, 3.0, 0.0])
    assert_array_equal(top_indices(scores, 1), [2])
    assert_array_equal(top_indices(scores, 3), [2, 3, 1])
    assert_array_equal(top_indices(scores, 5), [2, 3, 1, 4, 0])
    assert_array_equal(cluster_representatives(np.array([0, 0, 1, 1, 2]), scores), [2, 1, 4])
    assert_array_equal(cluster_representatives(np.array([0, 1, 1, 1, 0]), scores), [2, 4])


def test_clusters_are_exactly_keep_even_with_tied_distances():
    """Guards against a cut that yields fewer clusters than --keep when distances tie (fcluster's maxclust
    does): uncorrelated or constant features are all at distance 1."""
    corr = np.eye(6)
    corr[0, 1] = corr[1, 0] = 0.9
    corr[2, 3], corr[3, 4], corr[2, 4] = -0.8, 0.7, -0.6
    corr = np.triu(corr) + np.triu(corr, 1).T
    labels = feature_clusters(corr, 3)
    assert {frozenset(np.flatnonzero(labels == c)) for c in range(3)} == {frozenset({0, 1}), frozenset({2, 3, 4}),
                                                                          frozenset({5})}
    for keep in range(1, 6):
        assert len(set(feature_clusters(np.eye(5), keep))) == keep
        assert len(set(feature_clusters(np.full((5, 5), np.nan), keep))) == keep


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(method="lasso"), "unknown selection method 'lasso'; choose one of importance, cluster, era-sharpe"),
    (dict(keep=0), "--keep must be 1..24"),
    (dict(keep=25), "--keep must be 1..24"),
    (dict(keep=3, feature_set="small"), "--keep must be 1..2"),
    (dict(target="target_x"), "unknown target 'target_x'"),
    (dict(valid_eras="0001:"), "no training eras with target values left"),
    (dict(train_eras="0001:0001"), "needs at least 2 training eras"),
    (dict(embargo=-1), "--embargo must not be negative"),
    (dict(method="importance", cv=0), "--cv must be at least 1"),
    (dict(feature_set="nope"), "unknown feature set 'nope'"),
])
def test_bad_input_is_one_line_input_error(store, kwargs, message):
    args = {"method": "era-sharpe", "keep": 3, **kwargs}
    with pytest.raises(InputError) as err:
        select_features(store, args.pop("method"), args.pop("keep"), **args)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
