"""Era-aware cross-validation splits with an embargo.

Targets look ahead: a ``_20`` target spans 20 trading days (4 weekly eras), a ``_60`` target 12.
Training eras that close to a test era overlap its target window and leak, so they are dropped.

One rule chooses the eras every command trains or selects on (:func:`training_eras`, used by
``train``, ``search`` and ``features --select``): the eras of ``--train-eras`` (default: all; every
``era_step``-th), minus the validation window — every era from the first ``--valid-eras`` era minus
the embargo to the last plus the embargo — and only then those with a target value, so validation
targets are never read to choose them. An explicit ``--train-eras`` overlapping ``--valid-eras`` is
refused.

- ``expanding``: eras are cut into ``n_splits + 1`` contiguous blocks; fold i tests block i + 1
  and trains on every earlier era except the last ``embargo`` before the test block.
- ``blocked``: eras are cut into ``n_splits`` blocks; fold i tests block i and trains on every
  other era except ``embargo`` eras on each side of it (purged on both sides).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..data.eras import eras_in_range
from ..errors import InputError

if TYPE_CHECKING:
    from ..data.store import EraStore

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


def era_indices(store: EraStore, spec: str | None) -> np.ndarray:
    """Store indices of the eras in the range ``spec`` (None: every era), in store order."""
    if spec is None:
        return np.arange(store.n_eras, dtype=np.int64)
    wanted = set(eras_in_range(store.eras, spec))
    return np.array([k for k, e in enumerate(store.eras) if e in wanted], dtype=np.int64)


def labeled_eras(store: EraStore, eras: np.ndarray, t_col: int) -> np.ndarray:
    """The eras of ``eras`` with at least one value in target column ``t_col``."""
    return np.array([k for k in eras if np.isfinite(store.targets[store.offsets[k]:store.offsets[k + 1], t_col]).any()],
                    dtype=np.int64)


def training_eras(store: EraStore, target: str, train_eras: str | None, valid_eras: str | None, embargo: int,
                  era_step: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """(training eras, validation eras or None), as store era indices.

    training = the labeled eras of ``range(train_eras)[::era_step]`` outside the validation window
    ``[min(valid) − embargo, max(valid) + embargo]``; the window is cut before the labeled check, so
    no validation target is read. The validation eras are those of ``valid_eras`` as given (labeled
    or not: a caller that scores them filters). InputError when an explicit ``train_eras`` overlaps
    ``valid_eras``, or when no training era is left.
    """
    span = era_indices(store, train_eras)
    chosen = span[::era_step]
    valid = None if valid_eras is None else era_indices(store, valid_eras)
    if valid is not None:
        if train_eras is not None and np.isin(span, valid).any():
            raise InputError(f"--train-eras {train_eras} overlaps --valid-eras {valid_eras}; validation eras never "
                             "train or choose: give disjoint ranges")
        chosen = chosen[(chosen < valid.min() - embargo) | (chosen > valid.max() + embargo)]
    chosen = labeled_eras(store, chosen, store.target_names.index(target))
    if chosen.size == 0:
        raise InputError(f"no training eras with {target} values left after --valid-eras and an embargo of {embargo}; "
                         "check --train-eras/--valid-eras/--embargo")
    return chosen, valid
