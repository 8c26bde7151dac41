"""Training batches for the networks, read from the int8 store one chunk of whole eras at a time.

An **epoch** is one pass over the training rows that have a target (rows whose target is NaN are
skipped and counted). :func:`epoch_plan` decides it from a seeded rng alone: the training eras in a
random order, grouped into **chunks** of whole eras of about ``max(batch_size, chunk_rows)`` rows;
inside a chunk the rows are shuffled and cut into batches (or, with ``whole_eras``, grouped into
batches of whole eras for a per-era loss). :class:`TrainBatches` reads chunk ``i`` with ``os.pread``
on the store's features file (the pages read are page cache, not this process's resident memory;
the memmap would count them), converts it with :func:`inputs_from_int8` and returns its batches.
:func:`batch_loader` wraps it in a ``DataLoader`` whose workers read the next chunks while the
network trains. In memory as float32: the chunk being trained on, the next one (received when the
last batch of a chunk is still in use) and one per worker (``prefetch_factor`` 1): ``workers + 2``
chunks at most.

Example (one epoch)::

    epoch = batch_loader(store, cols, data.target_values(eras), eras, 4096, seed=0, epoch=3)
    for batch in iter_batches(epoch.loader):
        loss = loss_fn(net(batch.x), batch.y)
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ...data.store import EraStore, era_subset_offsets
from ...errors import InputError
from ..portable.nets import MISSING_INPUT

CHUNK_ROWS = 65536  # rows of a chunk (shuffled together): 623 MB of float32 at 2376 features
READ_BYTES = 16 << 20  # int8 bytes of one pread: the transient copy beside the chunk stays small
MIN_BATCH_ROWS = 2  # BatchNorm (and a Pearson loss) need two rows
INPUT_STEP = np.float32(0.25)  # input of code c ∈ 0..4: c · 0.25 = c / 4, exact in float32


def inputs_from_int8(block: np.ndarray) -> np.ndarray:
    """Network inputs of int8 feature codes: ``c / 4`` for ``c ∈ 0..4``, :data:`MISSING_INPUT` for −1.

    ``block`` int8 (rows × features) → float32 (rows × features): ``c · 0.25``, then the missing
    codes set to 0.5; the same floats as :func:`~eraflow.engine.models.portable.nets.inputs_from_codes`
    on the codes as float with NaN (a lookup table indexed by ``c + 1`` gives them too, 2.5× slower).

    >>> inputs_from_int8(np.array([[-1, 0, 4]], dtype=np.int8))
    array([[0.5, 0. , 1. ]], dtype=float32)
    """
    x = np.multiply(block, INPUT_STEP, dtype=np.float32)
    x[block < 0] = MISSING_INPUT
    return x


# -- the plan of an epoch --------------------------------------------------------------------

class Chunk(NamedTuple):
    """Whole eras read together and their batches.

    ``eras``: store era indices (increasing, the order they are read); ``rows``: int64, the chunk's
    rows with a target in batch order, as positions among the training rows (indices into the
    target array of the training eras); batch ``b`` is ``rows[bounds[b]:bounds[b + 1]]``;
    ``codes``: int64 per row of ``rows``, its era numbered ``0..k−1`` within its batch (in store order).
    """

    eras: np.ndarray
    rows: np.ndarray
    bounds: np.ndarray
    codes: np.ndarray

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1


def group_until(counts: np.ndarray, size: int) -> list[list[int]]:
    """Consecutive groups of the indices of ``counts`` (rows per era), each closed once its rows
    reach ``size``; a last group of fewer than :data:`MIN_BATCH_ROWS` rows joins the one before it.
    A group holds at most ``size + max(counts)`` rows."""
    groups, current, total = [], [], 0
    for i, c in enumerate(counts):
        current.append(i)
        total += c
        if total >= size:
            groups.append(current)
            current, total = [], 0
    return close_last(groups, current, total)


def pack_eras(counts: np.ndarray, size: int) -> list[list[int]]:
    """Consecutive groups of the indices of ``counts`` (rows per era) of at most ``size`` rows: an era
    that would overflow the group starts the next one (a group of fewer than :data:`MIN_BATCH_ROWS`
    rows keeps it, as does an empty group: an era above ``size`` is a group of its own); a last group
    of fewer than :data:`MIN_BATCH_ROWS` rows joins the one before it."""
    groups, current, total = [], [], 0
    for i, c in enumerate(counts):
        if total + c > size and total >= MIN_BATCH_ROWS:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += c
    return close_last(groups, current, total)


def close_last(groups: list[list[int]], current: list[int], total: int) -> list[list[int]]:
    """``groups`` with the open group ``current`` (of ``total`` rows) added, or joined to the last
    group when it has fewer than :data:`MIN_BATCH_ROWS` rows."""
    if current and total < MIN_BATCH_ROWS and groups:
        groups[-1] += current
    elif current:
        groups.append(current)
    return groups


def cut_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of the batches cutting ``n ≥ 2`` shuffled rows: full batches of ``batch_size``, then the rest.

    A rest of one row takes a row from the batch before it (``batch_size − 1, 2``); at
    ``batch_size`` 2 that would leave one there, so the two join (a last batch of 3).
    """
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] - 1, 2] if sizes[-2] > MIN_BATCH_ROWS else [sizes[-2] + 1]
    return sizes


def era_codes(era_of_row: np.ndarray) -> np.ndarray:
    """Each row's era numbered ``0..k−1`` among the ``k`` eras of the batch (in era order)."""
    return np.unique(era_of_row, return_inverse=True)[1].astype(np.int64)


def epoch_plan(offsets: np.ndarray, eras: np.ndarray, has_target: np.ndarray, batch_size: int,
               rng: np.random.Generator, whole_eras: bool = False, chunk_rows: int = CHUNK_ROWS) -> list[Chunk]:
    """The chunks and batches of one epoch over the rows with a target of ``eras``.

    ``offsets``: the store's era offsets; ``eras``: store era indices (increasing); ``has_target``:
    bool per row of ``eras`` in store order (``np.isfinite`` of their targets); ``rng``: seeded
    ``(seed, epoch)``. Steps:

    1. count each era's rows with a target (eras with none are never read);
    2. shuffle the eras and group them in that order into chunks of at least
       ``max(batch_size, chunk_rows)`` rows (the last one may hold fewer), so a chunk holds at most
       that plus one era;
    3. per chunk: shuffle its rows and cut them into batches of ``batch_size`` (:func:`cut_sizes`);
       with ``whole_eras``, group its eras (in their shuffled order) into batches of about
       ``batch_size`` rows (an era is never split; an era larger than ``batch_size`` is a batch of its
       own) and shuffle the rows inside each batch;
    4. number each batch's eras ``0..k−1`` (:func:`era_codes`).

    No batch has fewer than :data:`MIN_BATCH_ROWS` rows. The plan depends only on the arguments and
    the rng, never on how many workers read it.
    """
    if batch_size < MIN_BATCH_ROWS:
        raise InputError(f"batch_size must be at least {MIN_BATCH_ROWS} (BatchNorm needs two rows), got {batch_size}")
    starts = era_subset_offsets(offsets, eras)  # era j is positions starts[j]:starts[j+1] of the training rows
    targeted = np.flatnonzero(has_target)  # positions with a target, increasing
    bounds = np.searchsorted(targeted, starts)  # era j's positions with a target: targeted[bounds[j]:bounds[j+1]]
    counts = np.diff(bounds)
    if counts.sum() < MIN_BATCH_ROWS:
        raise InputError(f"the training eras have {counts.sum()} rows with a target; training needs at least "
                         f"{MIN_BATCH_ROWS}: give more eras or another target")
    order = rng.permutation(np.flatnonzero(counts))  # local era numbers j, shuffled
    chunks = []
    for group in group_until(counts[order], max(batch_size, chunk_rows)):
        members = order[group]
        rows = [targeted[bounds[j]:bounds[j + 1]] for j in members]
        if whole_eras:
            batches = [rng.permutation(np.concatenate([rows[i] for i in g]))
                       for g in pack_eras(counts[members], batch_size)]
        else:
            shuffled = rng.permutation(np.concatenate(rows))
            batches = np.split(shuffled, np.cumsum(cut_sizes(len(shuffled), batch_size))[:-1])
        codes = [era_codes(np.searchsorted(starts, b, side="right")) for b in batches]
        chunks.append(Chunk(np.sort(eras[members]), np.concatenate(batches),
                            np.cumsum([0] + [len(b) for b in batches]), np.concatenate(codes)))
    return chunks


# -- reading a chunk ---------------------------------------------------------------------------

class Batch(NamedTuple):
    """Training rows: inputs ``x`` float32 (b, N), targets ``y`` float32 (b,), ``era`` int64 (b,)
    numbering the batch's eras ``0..k−1`` (for a per-era loss)."""

    x: torch.Tensor
    y: torch.Tensor
    era: torch.Tensor


def read_inputs(store: EraStore, cols: np.ndarray | None, lo: int, hi: int, rows: np.ndarray) -> np.ndarray:
    """Inputs (float32, len(rows) × columns) of store rows ``lo + rows`` (``rows`` within ``0..hi−lo``),
    columns ``cols`` (None: all), read with ``pread`` from rows ``lo:hi`` of the features file."""
    width = len(store.feature_names)
    data = os.pread(store.features_fd, (hi - lo) * width, lo * width)
    codes = np.take(np.frombuffer(data, dtype=np.int8).reshape(hi - lo, width), rows, axis=0)
    return inputs_from_int8(codes if cols is None else np.take(codes, cols, axis=1))


def chunk_tensor(rows: int, width: int) -> torch.Tensor:
    """An empty float32 (rows, width) tensor; inside a loader worker it is made in shared memory, as
    torch's ``default_collate`` makes its batches (``share_memory_()`` afterwards would copy it)."""
    if get_worker_info() is None:
        return torch.empty((rows, width), dtype=torch.float32)
    storage = torch.empty(0)._typed_storage()._new_shared(rows * width)
    return torch.empty(0).new(storage).view(rows, width)


class TrainBatches(Dataset):
    """An epoch's chunks (map-style): item ``i`` is the list of :class:`Batch` of ``chunks[i]``.

    ``y``: the target (NaN kept) of the rows of ``eras`` (store era indices, increasing) in store
    order; ``cols``: the feature columns the network reads. Features are read with ``os.pread`` on
    ``store.features_fd``, at most :data:`READ_BYTES` at a time, straight into the chunk's rows in
    batch order; the batches are views of one float32 array (in shared memory inside a worker, so
    handing it to the training process copies nothing).
    """

    def __init__(self, store: EraStore, cols: np.ndarray, y: np.ndarray, eras: np.ndarray, chunks: list[Chunk]):
        self.store, self.cols, self.y, self.eras, self.chunks = store, np.asarray(cols, np.int64), y, eras, chunks
        self.starts = era_subset_offsets(store.offsets, eras)
        all_cols = np.array_equal(self.cols, np.arange(len(store.feature_names)))
        self.take_cols = None if all_cols else self.cols  # None: no column copy

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list[Batch]:
        chunk = self.chunks[i]
        x = chunk_tensor(len(chunk.rows), len(self.cols))
        self.fill(x.numpy(), chunk)
        y = torch.from_numpy(self.y[chunk.rows].astype(np.float32, copy=False))
        era = torch.from_numpy(chunk.codes)
        return [Batch(x[a:b], y[a:b], era[a:b]) for a, b in zip(chunk.bounds[:-1], chunk.bounds[1:])]

    def fill(self, x: np.ndarray, chunk: Chunk) -> None:
        """Write the inputs of ``chunk.rows`` into ``x`` (same order), reading each era in blocks."""
        dest = np.argsort(chunk.rows)  # x[dest[m]] is the m-th row of the chunk in store order
        wanted = chunk.rows[dest]  # positions, increasing
        block = max(1, READ_BYTES // max(1, len(self.store.feature_names)))
        for k in chunk.eras:
            j = np.searchsorted(self.eras, k)
            era_lo = int(self.store.offsets[k])
            for p0 in range(self.starts[j], self.starts[j + 1], block):
                p1 = min(p0 + block, self.starts[j + 1])
                m0, m1 = np.searchsorted(wanted, [p0, p1])
                if m1 > m0:
                    lo = era_lo + p0 - self.starts[j]
                    x[dest[m0:m1]] = read_inputs(self.store, self.take_cols, lo, lo + p1 - p0, wanted[m0:m1] - p0)


# -- the loader ------------------------------------------------------------------------------

class Epoch(NamedTuple):
    """One epoch's loader (yielding each chunk's list of batches) and its size."""

    loader: DataLoader
    n_batches: int
    rows: int  # rows with a target (trained on)
    skipped: int  # rows whose target is NaN


def batch_loader(store: EraStore, cols: np.ndarray, y: np.ndarray, eras: np.ndarray, batch_size: int,
                 whole_eras: bool = False, workers: int = 0, seed: int = 0, epoch: int = 0,
                 pin_memory: bool = False, chunk_rows: int = CHUNK_ROWS) -> Epoch:
    """The training batches of epoch ``epoch`` over the rows of ``eras`` (store era indices, increasing).

    ``y``: the target of those rows in store order, NaN kept (``FitData.target_values(eras)``);
    ``cols``: feature columns. The plan is :func:`epoch_plan` with ``rng = default_rng((seed, epoch))``;
    the loader is ``DataLoader(TrainBatches(...), batch_size=None, shuffle=False, num_workers=workers,
    pin_memory=pin_memory)`` (workers forked, each reading one chunk ahead: ``prefetch_factor`` 1);
    iterate it with :func:`iter_batches`.
    """
    has_target = np.isfinite(y)
    chunks = epoch_plan(store.offsets, eras, has_target, batch_size, np.random.default_rng((seed, epoch)),
                        whole_eras, chunk_rows)
    extra = {"prefetch_factor": 1, "multiprocessing_context": fork_context()} if workers > 0 else {}
    loader = DataLoader(TrainBatches(store, cols, y, eras, chunks), batch_size=None, shuffle=False,
                        num_workers=workers, pin_memory=pin_memory, persistent_workers=False, **extra)
    rows = int(has_target.sum())
    return Epoch(loader, sum(c.n_batches for c in chunks), rows, len(y) - rows)


def fork_context():
    """The ``fork`` start method: workers inherit the store's open features file (its descriptor cannot
    be pickled to a spawned process); InputError where there is none."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise InputError("workers > 0 needs the fork start method, which this system lacks; use workers 0")
    return multiprocessing.get_context("fork")


def iter_batches(loader: DataLoader) -> Iterator[Batch]:
    """The batches of each chunk the loader yields, in order."""
    for chunk in loader:
        yield from chunk
