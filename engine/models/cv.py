"""Era-aware cross-validation splits with an embargo.

Targets look ahead: a ``_20`` target spans 20 trading days (4 weekly eras), a ``_60`` target 12.
Training eras that close to a test era overlap its target window and leak, so they are dropped.

- ``expanding``: eras are cut into ``n_splits + 1`` contiguous blocks; fold i tests block i + 1
  and trains on every earlier era except the last ``embargo`` before the test block.
- ``blocked``: eras are cut into ``n_splits`` blocks; fold i tests block i and trains on every
  other era except ``embargo`` eras on each side of it (purged on both sides).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MODES = ("expanding", "blocked")
ERAS_PER_HORIZON_DAYS = 5  # one era is a week of 5 trading days
DEFAULT_HORIZON_DAYS = 20


@dataclass(frozen=True)
class EraSplit:
    """Era indices (into the era list) of one fold."""

    train: np.ndarray
    test: np.ndarray


def default_embargo(target: str) -> int:
    """Eras a target looks ahead: ``target_x_20`` → 4, ``target_x_60`` → 12, otherwise 4."""
    match = re.search(r"_(\d+)$", target)
    days = int(match.group(1)) if match else DEFAULT_HORIZON_DAYS
    return max(1, days // ERAS_PER_HORIZON_DAYS)


def _blocks(n: int, k: int) -> list[np.ndarray]:
    """``k`` contiguous blocks of 0..n−1 whose sizes differ by at most one."""
    return list(np.array_split(np.arange(n), k))


def era_splits(eras: Sequence[str], n_splits: int, embargo: int, mode: str = "expanding") -> list[EraSplit]:
    """Folds over ``eras`` (in time order); InputError when a fold would be empty.

    Guarantees: test folds are contiguous and disjoint and cover every eligible era once
    (all eras in blocked mode; all but the first block in expanding mode), and no training era
    lies within ``embargo`` eras of any era of its fold's test block.
    """
    if mode not in MODES:
        raise InputError(f"unknown cv mode {mode!r}; choose one of {', '.join(MODES)}")
    minimum = 2 if mode == "blocked" else 1
    if n_splits < minimum:
        raise InputError(f"--cv must be at least {minimum} in {mode} mode")
    if embargo < 0:
        raise InputError("--embargo must not be negative")
    n = len(eras)
    n_blocks = n_splits + 1 if mode == "expanding" else n_splits
    if n < n_blocks:
        raise InputError(f"{n} eras cannot make {n_splits} {mode} folds; use fewer folds or more eras")
    blocks = _blocks(n, n_blocks)
    tests = blocks[1:] if mode == "expanding" else blocks
    splits = []
    for test in tests:
        lo, hi = test[0] - embargo, test[-1] + embargo
        before = np.arange(0, max(lo, 0))
        after = np.arange(hi + 1, n) if mode == "blocked" else np.arange(0)
        train = np.concatenate([before, after]).astype(np.int64)
        if train.size == 0:
            raise InputError(f"fold testing eras {eras[test[0]]}..{eras[test[-1]]} has no training eras left "
                             f"after an embargo of {embargo}; use fewer folds, a smaller embargo or more eras")
        splits.append(EraSplit(train, test.astype(np.int64)))
    return splits
