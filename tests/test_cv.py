"""Era CV: embargo, coverage, non-empty folds (property tests); the one rule for training eras."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eraflow.engine import InputError, SynthSpec, open_store
from eraflow.engine.experiments.search import SearchConfig, plan_search
from eraflow.engine.experiments.selection import training_eras as selection_training_eras
from eraflow.engine.experiments.space import parse_space
from eraflow.engine.models.cv import default_embargo, era_splits, training_eras
from eraflow.engine.models.train import TrainConfig, _split_eras
from tests.conftest import synthetic_store

ERAS = [f"{k:04d}" for k in range(1, 121)]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 150), k=st.integers(1, 12), embargo=st.integers(0, 15),
       mode=st.sampled_from(["expanding", "blocked"]))
def test_folds_are_leak_free_and_cover_each_era_once(n, k, embargo, mode):
    eras = ERAS[:n] if n <= 120 else [f"{i:04d}" for i in range(n)]
    try:
        splits = era_splits(eras, k, embargo, mode)
    except InputError:
        return  # too few eras for the request: refused, never an empty fold
    tested = np.concatenate([s.test for s in splits])
    first_block = n // (k + 1) + (1 if n % (k + 1) else 0) if mode == "expanding" else 0
    np.testing.assert_array_equal(np.sort(tested), np.arange(first_block, n))
    for s in splits:
        assert s.train.size and s.test.size
        assert np.all(np.diff(s.test) == 1), "test folds are contiguous"
        distance = np.abs(s.train[:, None] - s.test[None, :]).min()
        assert distance > embargo, "no training era within the embargo of a test era"
        if mode == "expanding":
            assert s.train.max() < s.test.min()


def test_expanding_folds_by_hand():
    splits = era_splits(ERAS[:12], 3, 1, "expanding")
    assert [s.test.tolist() for s in splits] == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert [s.train.tolist() for s in splits] == [[0, 1], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6, 7]]


def test_blocked_folds_purge_both_sides():
    splits = era_splits(ERAS[:9], 3, 1, "blocked")
    assert [s.train.tolist() for s in splits] == [[4, 5, 6, 7, 8], [0, 1, 7, 8], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("args,message", [
    ((ERAS[:3], 5, 0, "expanding"), "cannot make 5 expanding folds"),
    ((ERAS[:10], 2, 8, "blocked"), "no training eras left"),
    ((ERAS, 3, 4, "random"), "unknown cv mode"),
    ((ERAS, 1, 4, "blocked"), "at least 2"),
    ((ERAS, 3, -1, "blocked"), "must not be negative"),
])
def test_impossible_requests_are_clear_errors(args, message):
    with pytest.raises(InputError, match=message):
        era_splits(*args)


@pytest.mark.parametrize("target,eras", [("target", 4), ("target_ender_20", 4), ("target_cyrus_60", 12)])
def test_default_embargo_follows_the_target_horizon(target, eras):
    assert default_embargo(target) == eras


# -- training eras: one rule for train, search and features --select ----------------------------

STORE_SPEC = SynthSpec(eras=30, rows_per_era=20, features=12, targets=1, seed=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("cv-store"), STORE_SPEC)


def oracle_training_eras(store, span: tuple[int, int], valid: tuple[int, int] | None, embargo: int,
                         step: int = 1) -> list[int]:
    """Plain Python: every step-th era of span (0-based, inclusive), outside valid ± embargo, with a target value."""
    eras = list(range(span[0], span[1] + 1))[::step]
    if valid is not None:
        eras = [k for k in eras if k < valid[0] - embargo or k > valid[1] + embargo]
    return [k for k in eras if np.isfinite(store.targets[store.offsets[k]:store.offsets[k + 1], 0]).any()]


@pytest.mark.parametrize("train, valid, embargo, step, span, window", [
    (None, "0010:0012", 2, 1, (0, 29), (9, 11)),
    ("0002:0025", "0027:", 3, 3, (1, 24), (26, 29)),
    (None, None, 4, 2, (0, 29), None),
    ("0014:", "0003:0008", 1, 1, (13, 29), (2, 7)),
])
def test_training_eras_follow_the_rule(store, train, valid, embargo, step, span, window):
    """Guards against a window cut on one side only, or the era step applied after the cut (which shifts it)."""
    got, valid_eras = training_eras(store, "target", train, valid, embargo, step)
    assert got.tolist() == oracle_training_eras(store, span, window, embargo, step)
    assert (valid_eras is None) == (valid is None)


def test_validation_targets_are_never_read_to_choose_training_eras(store, tmp_path):
    """Leakage guard: the window comes from the validation eras as given, not from those with targets, so
    blanking validation targets (here the window's edges, 0010 and 0014) changes no training era."""
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy, ignore=shutil.ignore_patterns("cache"))
    targets = np.memmap(copy / "targets.f32", np.float32, "r+", shape=store.targets.shape)
    for k in (9, 13):
        targets[store.offsets[k]:store.offsets[k + 1]] = np.nan
    targets.flush()
    del targets
    blanked = open_store(copy)
    expected = oracle_training_eras(store, (0, 29), (9, 13), 2)
    assert 6 in expected and 16 in expected and not {7, 15} & set(expected)
    for s in (store, blanked):
        assert training_eras(s, "target", None, "0010:0014", 2)[0].tolist() == expected


def test_overlap_and_nothing_left_are_refused(store):
    with pytest.raises(InputError, match="--train-eras 0001:0012 overlaps --valid-eras 0012:0015"):
        training_eras(store, "target", "0001:0012", "0012:0015", 0)
    with pytest.raises(InputError, match="no training eras with target values left"):
        training_eras(store, "target", None, "0001:", 0)


def test_train_search_and_selection_share_the_rule(store):
    """Guards against the three commands drifting apart again (they once differed on the window and overlap)."""
    expected, _ = training_eras(store, "target", "0002:0024", "0026:", 2)
    plan = plan_search(store, SearchConfig(parse_space({"n_estimators": 5}), 1, cv=2, train_eras="0002:0024",
                                           valid_eras="0026:", embargo=2))
    assert plan.train_eras.tolist() == expected.tolist()
    assert selection_training_eras(store, "target", "0002:0024", "0026:", 2).tolist() == expected.tolist()
    train, valid = _split_eras(store, TrainConfig(train_eras="0002:0024", valid_eras="0026:"), "target", 2)
    labeled = [k for k in range(25, 30) if np.isfinite(store.targets[store.offsets[k]:store.offsets[k + 1], 0]).any()]
    assert train.tolist() == expected.tolist() and valid.tolist() == labeled  # train scores labeled ones only
    stepped, _ = _split_eras(store, TrainConfig(valid_eras="0026:", era_step=4), "target", 2)
    assert stepped.tolist() == training_eras(store, "target", None, "0026:", 2, 4)[0].tolist()
    with pytest.raises(InputError, match="overlaps --valid-eras"):
        _split_eras(store, TrainConfig(train_eras="0002:0027", valid_eras="0026:"), "target", 2)
