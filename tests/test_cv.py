"""Era CV: embargo, coverage, non-empty folds (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eraflow.engine import InputError
from eraflow.engine.models.cv import default_embargo, era_splits

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
