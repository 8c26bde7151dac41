"""Engineered features computed from feature codes: per-group row statistics, quantized per era (NumPy only).

The store (``eraflow features --add group-stats``), ``eraflow live`` and the exported predictor
all call these functions, so a model sees the same codes in training and in Numerai's runtime.

For each row and feature group (the group's columns, codes 0..4, missing ignored) with ``n``
present codes and integer power sums ``S_k = Σ x^k``:

1. ``mean = S1 / n`` (NaN when n = 0);
2. ``std = sqrt(M2 / (n (n − 1)))`` with ``M2 = n S2 − S1²`` (ddof 1; NaN when n < 2);
3. ``skew = sqrt(n (n − 1)) / (n − 2) · M3 / M2^1.5`` with ``M3 = n² S3 − 3 n S1 S2 + 2 S1³``
   (pandas' bias-corrected G1; NaN when n < 3; 0 when M2 = 0, a constant row, as pandas 2.x, the
   version Numerai's runtime pins, gives: pandas ≥ 3 gives NaN there).

``M2`` and ``M3`` are exact integers, so rows with the same codes in any order get bit-identical
statistics and tie exactly in the per-era ranks. Each statistic is then quantized per era into
``BINS`` codes: ``code = min(BINS − 1, floor(BINS · (rank − 0.5) / n))`` with ``rank`` the
average rank among the era's non-missing values (1-based) and ``n`` their count; NaN → -1.
"""

from __future__ import annotations

import numpy as np

STATS = ("mean", "std", "skew")  # the seed's three row statistics per group
BINS = 5  # quantile bins per era: codes 0..4, like Numerai's own features
MISSING = -1  # code of a missing value (store convention)
MAX_CODE = 4


def derived_name(group: str, stat: str) -> str:
    """``feature_{group}_{stat}``: the seed's names for the group statistics."""
    return f"feature_{group}_{stat}"


def power_sums(block: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(n, S1, S2, S3)`` per row (int64) over the codes 0..4 of ``block`` (rows × columns).

    ``block`` is int8 codes (-1 missing) or float codes (NaN missing); other values are ignored.
    """
    n = np.zeros(len(block), dtype=np.int64)
    sums = [np.zeros(len(block), dtype=np.int64) for _ in range(3)]
    for v in range(1, MAX_CODE + 1):
        count = np.count_nonzero(block == v, axis=1).astype(np.int64)
        n += count
        for k, s in enumerate(sums, start=1):
            s += count * v ** k
    n += np.count_nonzero(block == 0, axis=1)
    return (n, *sums)


def row_stats(block: np.ndarray) -> dict[str, np.ndarray]:
    """``{"mean", "std", "skew"}`` per row of ``block`` (rows × a group's columns), float64, NaN undefined
    (skew of a constant row of ≥ 3 codes is 0)."""
    n, s1, s2, s3 = power_sums(block)
    m2 = n * s2 - s1 * s1  # n² · (biased variance), exact
    m3 = n * n * s3 - 3 * n * s1 * s2 + 2 * s1 ** 3  # n³ · (third central moment), exact
    nf, m2f = n.astype(np.float64), m2.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s1 / nf, np.nan)
        std = np.where(n > 1, np.sqrt(m2f / (nf * (nf - 1))), np.nan)
        skew = np.where(n > 2, np.where(m2 > 0, np.sqrt(nf * (nf - 1)) / (nf - 2) * m3 / m2f ** 1.5, 0.0), np.nan)
    return {"mean": mean, "std": std, "skew": skew}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (1-D), ties averaged; NaN stays NaN."""
    out = np.full(values.shape, np.nan)
    present = ~np.isnan(values)
    _, inverse, counts = np.unique(values[present], return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # ranks before each distinct value
    out[present] = (first + (counts + 1) / 2.0)[inverse]
    return out


def quantize(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """One era's values as int8 codes ``min(bins − 1, floor(bins · (rank − 0.5) / n))``; NaN → -1."""
    ranks = average_ranks(values)
    n = np.count_nonzero(~np.isnan(values))
    codes = np.full(values.shape, MISSING, dtype=np.int8)
    present = ~np.isnan(ranks)
    codes[present] = np.minimum(bins - 1, np.floor(bins * (ranks[present] - 0.5) / max(n, 1))).astype(np.int8)
    return codes


def quantize_per_era(values: np.ndarray, offsets: np.ndarray, bins: int = BINS) -> np.ndarray:
    """:func:`quantize` of each era ``offsets[k]:offsets[k+1]`` of ``values`` (rows,)."""
    codes = np.empty(values.shape, dtype=np.int8)
    for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        codes[lo:hi] = quantize(values[lo:hi], bins)
    return codes


def group_stat_codes(block: np.ndarray, columns: dict[str, list[int]], names: list[str],
                     offsets: np.ndarray, bins: int = BINS) -> np.ndarray:
    """int8 codes (rows × len(names)) of the derived features ``names`` for whole eras of ``block``.

    ``block``: feature codes (rows × columns, -1 or NaN missing); ``columns``: group → its columns
    in ``block``; ``names``: derived features ``feature_{group}_{stat}`` of those groups;
    ``offsets``: era offsets of ``block``'s rows.
    """
    out = np.empty((len(block), len(names)), dtype=np.int8)
    parsed = [split_name(name, columns) for name in names]
    for group in dict.fromkeys(g for g, _ in parsed):
        stats = row_stats(block[:, columns[group]])
        for j, (g, stat) in enumerate(parsed):
            if g == group:
                out[:, j] = quantize_per_era(stats[stat], offsets, bins)
    return out


def split_name(name: str, groups) -> tuple[str, str]:
    """``feature_{group}_{stat}`` → ``(group, stat)`` for a group in ``groups``; ValueError otherwise."""
    for stat in STATS:
        group = name[len("feature_"):-len(stat) - 1]
        if name == derived_name(group, stat) and group in groups:
            return group, stat
    raise ValueError(f"{name} is not a group statistic of groups {sorted(groups)}")


class WithGroupStats:
    """A live predictor whose frame first gets the derived group statistics it was trained with.

    ``predictor(frame, benchmarks)`` is the model's predictor; ``groups`` maps each group to its
    raw feature names; ``names`` are the derived features to add; ``to_codes(frame, columns)``
    reads raw columns as float codes (NaN missing), as the predictor itself reads them.
    """

    def __init__(self, predictor, groups: dict[str, list[str]], names: list[str], to_codes, bins: int = BINS):
        self.predictor, self.groups, self.names, self.to_codes, self.bins = predictor, groups, names, to_codes, bins

    @property
    def raw_features(self) -> list[str]:
        """The raw columns the statistics read."""
        return list(dict.fromkeys(f for members in self.groups.values() for f in members))

    def __call__(self, live_features, live_benchmark_models=None):
        frame = live_features.set_index("id") if "id" in live_features.columns else live_features
        raw = self.raw_features
        codes = self.to_codes(frame, raw)
        position = {f: i for i, f in enumerate(raw)}
        columns = {g: [position[f] for f in members] for g, members in self.groups.items()}
        eras = frame["era"].to_numpy() if "era" in frame.columns else np.zeros(len(frame))
        order = np.argsort(eras, kind="stable")  # rows of an era together
        _, starts = np.unique(eras[order], return_index=True)
        offsets = np.append(np.sort(starts), len(order))
        derived = np.empty((len(frame), len(self.names)), dtype=np.int8)
        derived[order] = group_stat_codes(codes[order], columns, self.names, offsets, self.bins)
        frame = frame.assign(**{name: _nullable_codes(derived[:, j]) for j, name in enumerate(self.names)})
        return self.predictor(frame, live_benchmark_models)


def _nullable_codes(codes: np.ndarray):
    """int8 codes as pandas' nullable Int8 (-1 → NA): integer columns are never read as float quarters."""
    import pandas as pd

    return pd.array(np.where(codes < 0, None, codes), dtype="Int8")
