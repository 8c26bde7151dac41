"""Churn of a submission against earlier ones: how much it changed, and the payout Numerai keeps.

Files are classic (``id``, ``prediction``/``probability``) or Signals (a ticker column of
:data:`~eraflow.engine.signals.keys.TICKER_COLUMNS`, ``signal``/``prediction``, an optional
``friday_date``/``date`` column holding one date). Each earlier file is aligned to the new one by
id or ticker; every pair of files is one "era" of the churn kernels, so all pairs are one call.

For each earlier submission (numerai-tools 0.7.2, :mod:`numerai_tools.signals`):

- churn ``1 − Spearman(new, old)`` over the rows both predict (``churn``); with ``top_bottom = n``
  instead ``1 − (|top_n(new) ∩ top_n(old)| + |bottom_n(new) ∩ bottom_n(old)|) / 2n``, each side
  ranked over its own rows.
- neutral churn (with neutralizers): each submission is cleaned on its universe — the neutralizer
  rows of its date — as ``clean_submission(rank_and_fill=True)`` does: values of the universe's
  tickers tie-kept ranked ``(rank − 0.5) / count``, tickers without a value 0.5, tickers outside the
  universe dropped; then ``neutral_churn``: each side gaussianized and neutralized against its own
  neutralizers (least squares with a constant), ``1 − Spearman`` of the two residuals. A submission
  with fewer than numerai-tools' 100 tickers (or, when it has fewer, all of its keys) in its universe is
  an error, not a comparison of 0.5s: its keys are not the universe's (another ticker column, sedols
  that lost their leading zeros).

As in numerai-tools, a comparison is skipped (NaN, with the reason) when fewer than
:data:`MIN_OVERLAP` of either side's rows are common (``filter_sort_index``), or when a side is
constant there. ``calculate_mean_neutral_churn``: the mean over the comparisons not skipped, 1.0
when none is left; the payout retained is ``neutral_churn_penalty`` of that mean,
``min(1, 2 / (1 + exp(10 (c − 0.1))))``.

Files are not checked as submissions (``eraflow submit --dry-run`` does that): any numbers churn.
A value that is NaN counts as not predicted. One departure: numerai-tools raises when the new
submission is constant after neutralization; here its comparisons are skipped (mean 1.0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

import numpy as np
import pandas as pd
import polars as pl

from eraflow.kernels import rank
from eraflow.kernels.churn_scores import churn as churn_per_era
from eraflow.kernels.churn_scores import churn_penalty
from eraflow.kernels.churn_scores import neutral_churn as neutral_churn_per_era

from ..errors import InputError
from ..numerai.submission import ID_COLUMN, read_submission
from ..signals.keys import ERA_COLUMNS, TICKER_COLUMNS, era_labels
from ..signals.submission import MIN_TICKERS

VALUE_COLUMNS = ("prediction", "signal", "probability")  # numerai-tools' Signals and classic prediction columns
IGNORED_COLUMNS = ("data_type", "era")  # never neutralizers (numerai-tools drops data_type)
MIN_OVERLAP = 0.8  # numerai-tools DEFAULT_MAX_FILTERED_INDEX_RATIO = 0.2: at most 20 % of a side's rows dropped
RECENT = 5  # numerai-tools: a live submission's churn is taken against the five most recent ones
NO_COMPARISON_CHURN = 1.0  # calculate_mean_neutral_churn when nothing could be compared


@dataclass(frozen=True)
class Submission:
    """One submission file: unique keys (ids or tickers, str) and their values (NaN: not predicted)."""

    name: str
    key_column: str
    keys: np.ndarray  # object (n,) of str
    values: np.ndarray  # float64 (n,)
    date: str | None = None  # ISO date of a Signals file's date column


@dataclass(frozen=True)
class Neutralizers:
    """A neutralizer file: rows keyed by id or ticker (and by date when it has a date column)."""

    name: str
    key_column: str
    columns: list[str]
    keys: np.ndarray  # object (n,) of str
    dates: np.ndarray | None  # object (n,) of ISO dates, or None: one set for every submission
    values: np.ndarray  # float64 (n, k), finite


@dataclass(frozen=True)
class PairChurn:
    """The new submission against one earlier one (NaN where the comparison was skipped)."""

    previous: str
    common: int  # rows both predict
    churn: float
    neutral_churn: float | None = None  # None: no neutralizers given
    neutral_common: int | None = None  # tickers common to both universes
    skipped: str = ""  # why a value is NaN


@dataclass(frozen=True)
class ChurnReport:
    """Churn of ``new`` against each earlier submission, their means and the payout retained."""

    new: str
    rows: int
    pairs: list[PairChurn] = field(default_factory=list)
    top_bottom: int | None = None
    mean_churn: float | None = None  # over the pairs compared; None when none
    max_churn: float | None = None
    mean_neutral_churn: float | None = None  # with neutralizers: calculate_mean_neutral_churn
    payout_retained: float | None = None  # neutral_churn_penalty(mean_neutral_churn)

    def as_dict(self) -> dict:
        """JSON-ready: NaN as None."""
        def clean(value):
            return None if isinstance(value, float) and math.isnan(value) else value
        out = asdict(self)
        out["pairs"] = [{k: clean(v) for k, v in pair.items()} for pair in out["pairs"]]
        return out


# ---------------------------------------------------------------- reading


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def _key_column(names: list[str], where: str) -> str:
    column = _pick(names, (ID_COLUMN, *TICKER_COLUMNS))
    if column is None:
        raise InputError(f"{where} has no id or ticker column: expected one of {ID_COLUMN}, "
                         f"{', '.join(TICKER_COLUMNS)} (columns: {', '.join(names[:8])})")
    return column


def _keys(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """The key column as str; NaN keys are an error."""
    keys = frame[column]
    if keys.isna().any():
        raise InputError(f"{where}: {int(keys.isna().sum())} row(s) have no {column} (NaN)")
    return keys.astype(str).to_numpy(dtype=object)


def _numbers(values: pd.Series, where: str) -> np.ndarray:
    """A column as float64; non-numbers and ±inf are errors, NaN stays NaN."""
    try:
        array = pd.to_numeric(values).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise InputError(f"{where}: column {values.name} must hold numbers (got {values.dtype})") from None
    if np.isinf(array).any():
        raise InputError(f"{where}: column {values.name} holds infinite values")
    return array


def _dates(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """ISO dates of a date column (date, datetime, YYYY-MM-DD or YYYYMMDD); missing dates are an error."""
    labels = era_labels(pl.from_pandas(frame[column].reset_index(drop=True)).alias(column), where)
    if labels.null_count():
        raise InputError(f"{where}: {labels.null_count()} row(s) have no {column}")
    return labels.to_numpy().astype(object)


def read_churn_submission(path: str | Path) -> Submission:
    """A submission file (parquet or CSV) as keys and values; one-line InputError for what cannot be aligned.

    The key is ``id``, else the first ticker column of ``TICKER_COLUMNS``; the value ``prediction``,
    ``signal`` or ``probability``. A date column (``friday_date``/``date``) must hold one date.
    Duplicate or missing keys are errors.
    """
    where = str(path)
    frame = read_submission(path)
    names = [str(c) for c in frame.columns]
    if frame.empty:
        raise InputError(f"{where} has no rows")
    key = _key_column(names, where)
    value = _pick(names, VALUE_COLUMNS)
    if value is None:
        raise InputError(f"{where} has no prediction column: expected one of {', '.join(VALUE_COLUMNS)} "
                         f"(columns: {', '.join(names[:8])})")
    keys = _keys(frame, key, where)
    duplicated = pd.Index(keys).duplicated()
    if duplicated.any():
        raise InputError(f"{where}: {key} {keys[duplicated][0]!r} appears more than once; one row per {key}")
    date = None
    date_column = _pick(names, ERA_COLUMNS)
    if date_column is not None:
        dates = sorted(set(_dates(frame, date_column, where)))
        if len(dates) > 1:
            raise InputError(f"{where} holds {len(dates)} dates ({dates[0]} … {dates[-1]}); churn compares one "
                             "submission (one date) per file")
        date = dates[0]
    return Submission(where, key, keys, _numbers(frame[value], where), date)


def read_neutralizers(path: str | Path) -> Neutralizers:
    """A parquet of neutralizers keyed by ``id`` or a ticker column, optionally by date too.

    Neutralizers are every numeric column except keys, dates, ``era`` and ``data_type``; they must
    be finite. (date, key) pairs (or keys, without a date column) must be unique.
    """
    where = str(path)
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{where}: no such neutralizer file") from None
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{where} is not a readable parquet neutralizer file ({first})") from None
    if frame.index.name is not None:
        frame = frame.reset_index()
    names = [str(c) for c in frame.columns]
    key = _key_column(names, where)
    date_column = _pick(names, ERA_COLUMNS)
    skip = {key, date_column, *IGNORED_COLUMNS, *TICKER_COLUMNS}
    columns = [c for c in names if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    if not columns:
        raise InputError(f"{where} has no numeric neutralizer columns (columns: {', '.join(names[:8])})")
    values = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{where}: {int(bad.any(axis=1).sum())} row(s) hold NaN or infinite neutralizers "
                         f"(e.g. {columns[col]} of row {row}); neutralizers must be finite")
    keys = _keys(frame, key, where)
    dates = _dates(frame, date_column, where) if date_column else None
    pairs = pd.MultiIndex.from_arrays([dates, keys]) if dates is not None else pd.Index(keys)
    duplicated = pairs.duplicated()
    if duplicated.any():
        first = pairs[duplicated][0]
        shown = "|".join(first) if isinstance(first, tuple) else first
        raise InputError(f"{where}: {shown!r} appears more than once; one row per "
                         f"{f'({date_column}, {key})' if dates is not None else key}")
    return Neutralizers(where, key, columns, keys, dates, values)


# ---------------------------------------------------------------- aligning


def check_same_keys(new: Submission, other_name: str, other_key: str) -> None:
    """Error unless both are keyed by the same kind of id (``id``, or the same ticker column)."""
    if new.key_column != other_key:
        raise InputError(f"{other_name} is keyed by {other_key} but {new.name} by {new.key_column}; "
                         "churn aligns rows by the same id or ticker column")


def universe_of(neutralizers: Neutralizers, sub: Submission) -> tuple[np.ndarray, np.ndarray]:
    """(keys, neutralizer rows) of the universe of ``sub``: the rows of its date, or the whole file when undated."""
    if neutralizers.dates is None:
        return neutralizers.keys, neutralizers.values
    if sub.date is None:
        raise InputError(f"{sub.name} has no date column, but {neutralizers.name} is keyed by date: add a "
                         f"{'/'.join(ERA_COLUMNS)} column, or give neutralizers without dates")
    rows = neutralizers.dates == sub.date
    if not rows.any():
        known = sorted(set(neutralizers.dates))
        raise InputError(f"{neutralizers.name} has no rows of {sub.date} (the date of {sub.name}); it holds "
                         f"{known[0]} … {known[-1]}")
    return neutralizers.keys[rows], neutralizers.values[rows]


def check_in_universe(sub: Submission, universe: np.ndarray, neutralizers: Neutralizers) -> None:
    """InputError unless ``min(MIN_TICKERS, n)`` of the ``n`` keys ``sub`` predicts (and at least one) are in its
    universe — numerai-tools' ``validate_submission_signals`` rule, which ``clean_submission`` follows.

    Otherwise its values would all be filled with 0.5 and its comparisons skipped: a wrong payout, silently.
    """
    keys = sub.keys[~np.isnan(sub.values)]
    inside = int(pd.Index(keys).isin(universe).sum())
    needed = max(1, min(MIN_TICKERS, len(keys)))
    if inside < needed:
        where = f"{neutralizers.name}{f' on {sub.date}' if sub.date else ''}"
        example = f" (e.g. {keys[0]!r} vs {universe[0]!r})" if len(keys) and len(universe) else ""
        raise InputError(f"{sub.name}: {inside} of its {len(keys)} {sub.key_column} values are in the universe of "
                         f"{where}{example}, at least {needed} needed; give neutralizers keyed by the "
                         f"same {sub.key_column}s")


def ranked_on_universe(sub: Submission, universe: np.ndarray, backend: str = "auto") -> np.ndarray:
    """numerai-tools ``clean_submission(rank_and_fill=True)``: ``sub`` on the universe's keys (float64 (u,)).

    1. values of the universe's keys (keys outside the universe dropped; absent or NaN → NaN);
    2. tie-kept rank ``(rank − 0.5) / count`` over the present values;
    3. NaN → 0.5.
    """
    positions = pd.Index(sub.keys).get_indexer(universe)
    values = np.where(positions >= 0, sub.values[np.maximum(positions, 0)], np.nan)
    ranked = rank(values, np.array([0, len(values)]), backend=backend)
    return np.where(np.isnan(ranked), 0.5, ranked)


def paired(keys_a: np.ndarray, values_a: np.ndarray, keys_b: np.ndarray,
           values_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the union of two key sets: ``(a, b, rows_a, rows_b)``.

    ``a``/``b`` hold each side's value (NaN where it has none); ``rows_a``/``rows_b`` the row of
    that side for each union row (-1 where absent). Rows are sorted by key, as Numerai's cleaned
    submissions are: top/bottom churn breaks ties in that order.
    """
    union = pd.Index(keys_a).union(pd.Index(keys_b)).sort_values()  # sorted even when both are equal
    rows_a, rows_b = pd.Index(keys_a).get_indexer(union), pd.Index(keys_b).get_indexer(union)
    a = np.where(rows_a >= 0, values_a[np.maximum(rows_a, 0)], np.nan)
    b = np.where(rows_b >= 0, values_b[np.maximum(rows_b, 0)], np.nan)
    return a, b, rows_a, rows_b


def overlap_problem(common: int, n_a: int, n_b: int) -> str:
    """Why numerai-tools' ``filter_sort_index`` would refuse: fewer than MIN_OVERLAP of either side common."""
    if common == 0:
        return "no common rows"
    share = min(common / n_a, common / n_b)
    return "" if share >= MIN_OVERLAP else f"only {share:.0%} of rows common (< {MIN_OVERLAP:.0%})"


# ---------------------------------------------------------------- computing


def _stacked(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Parts (at least one) concatenated as eras: (values, offsets)."""
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return np.concatenate(parts), offsets


def _with_reasons(values, notes: list[str], undefined: str) -> list[tuple[float, str]]:
    """(value, why skipped): NaN where a note says why; a NaN the kernel gave is ``undefined``."""
    out = []
    for value, note in zip(values, notes):
        value = math.nan if note else float(value)
        out.append((value, note or (undefined if math.isnan(value) else "")))
    return out


def plain_churns(new: Submission, previous: list[Submission], top_bottom: int | None,
                 backend: str) -> list[tuple[int, float, str]]:
    """(common rows, churn, why skipped) of ``new`` against each earlier submission, one kernel call.

    Top/bottom churn ranks each side over its own rows: numerai-tools applies no overlap rule there.
    """
    pairs = [paired(new.keys, new.values, old.keys, old.values)[:2] for old in previous]
    commons = [int((~np.isnan(a) & ~np.isnan(b)).sum()) for a, b in pairs]
    notes = ["" if top_bottom else overlap_problem(common, len(new.keys), len(old.keys))
             for common, old in zip(commons, previous)]
    if not previous:
        return []
    (a, offsets), (b, _) = _stacked([a for a, _ in pairs]), _stacked([b for _, b in pairs])
    values = churn_per_era(a, b, offsets, top_bottom=top_bottom, backend=backend)
    undefined = "a side has no values" if top_bottom else "a side is constant on the common rows"
    return [(common, *rest) for common, rest in zip(commons, _with_reasons(values, notes, undefined))]


def neutral_churns(new: Submission, previous: list[Submission], neutralizers: Neutralizers,
                   backend: str) -> list[tuple[int, float, str]]:
    """(common universe rows, neutral churn, why skipped) of ``new`` against each earlier submission.

    Each pair is the union of the two universes; a side's neutralizer rows outside its universe
    are zeros, never read (its value there is NaN). Each submission must have enough of its keys in its
    universe (:func:`check_in_universe`).
    """
    if not previous:
        return []
    for sub in (new, *previous):
        check_in_universe(sub, universe_of(neutralizers, sub)[0], neutralizers)
    new_keys, new_n = universe_of(neutralizers, new)
    new_clean = ranked_on_universe(new, new_keys, backend)
    a_parts, b_parts, na_parts, nb_parts, notes, commons = [], [], [], [], [], []
    for old in previous:
        old_keys, old_n = universe_of(neutralizers, old)
        a, b, rows_a, rows_b = paired(new_keys, new_clean, old_keys, ranked_on_universe(old, old_keys, backend))
        a_parts.append(a)
        b_parts.append(b)
        na_parts.append(np.where(rows_a[:, None] >= 0, new_n[np.maximum(rows_a, 0)], 0.0))
        nb_parts.append(np.where(rows_b[:, None] >= 0, old_n[np.maximum(rows_b, 0)], 0.0))
        commons.append(int(((rows_a >= 0) & (rows_b >= 0)).sum()))
        notes.append(overlap_problem(commons[-1], len(new_keys), len(old_keys)))
    (a, offsets), (b, _) = _stacked(a_parts), _stacked(b_parts)
    values = neutral_churn_per_era(a, b, np.concatenate(na_parts), np.concatenate(nb_parts), offsets,
                                   backend=backend)
    undefined = "a side is constant after neutralization"
    return [(common, *rest) for common, rest in zip(commons, _with_reasons(values, notes, undefined))]


def _mean(values: list[float]) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return fmean(kept) if kept else None


def churn_report(new: Submission, previous: list[Submission], neutralizers: Neutralizers | None = None,
                 top_bottom: int | None = None, backend: str = "auto") -> ChurnReport:
    """Churn (and with ``neutralizers`` neutral churn) of ``new`` against each of ``previous``.

    1. each earlier submission aligned to ``new`` by key (the same id or ticker column);
    2. churn per pair (see the module doc); skipped pairs are NaN with the reason;
    3. with neutralizers: neutral churn per pair, their mean (1.0 when every pair was skipped)
       and the payout retained, ``churn_penalty(mean)``.
    """
    if top_bottom is not None and top_bottom <= 0:
        raise InputError(f"top_bottom must be a whole number ≥ 1, got {top_bottom}")
    for old in previous:
        check_same_keys(new, old.name, old.key_column)
    plain = plain_churns(new, previous, top_bottom, backend)
    churns = [value for _, value, _ in plain]
    mean_churn = _mean(churns)
    max_churn = max((v for v in churns if not math.isnan(v)), default=None)
    if neutralizers is None:
        pairs = [PairChurn(old.name, common, value, skipped=note)
                 for old, (common, value, note) in zip(previous, plain)]
        return ChurnReport(new.name, len(new.keys), pairs, top_bottom, mean_churn, max_churn)

    check_same_keys(new, neutralizers.name, neutralizers.key_column)
    neutral = neutral_churns(new, previous, neutralizers, backend)
    pairs = [PairChurn(old.name, common, value, n_value, n_common,
                       "; ".join(f"{what}: {why}" for what, why in (("churn", note), ("neutral churn", n_note)) if why))
             for old, (common, value, note), (n_common, n_value, n_note) in zip(previous, plain, neutral)]
    mean_neutral = _mean([value for _, value, _ in neutral])
    mean_neutral = NO_COMPARISON_CHURN if mean_neutral is None else mean_neutral
    retained = float(churn_penalty(mean_neutral))
    return ChurnReport(new.name, len(new.keys), pairs, top_bottom, mean_churn, max_churn, mean_neutral, retained)


def churn_of_files(new: str | Path, previous: list[str | Path], neutralizers: str | Path | None = None,
                   top_bottom: int | None = None, backend: str = "auto") -> ChurnReport:
    """:func:`churn_report` of files: the new submission, earlier ones, an optional neutralizer parquet."""
    if not previous:
        raise InputError("give at least one earlier submission to compare with")
    return churn_report(read_churn_submission(new), [read_churn_submission(p) for p in previous],
                        read_neutralizers(neutralizers) if neutralizers is not None else None, top_bottom, backend)
