"""Numerai Signals submission checks: the rules of numerai-tools 0.7.2 ``validate_submission_signals``.

Numerai rejects a Signals upload that fails these rules, so eraflow applies them before uploading
and reports each failure as one line (``invalid submission: …``). The rules, in numerai-tools' order:

1. a ``data_type`` column is dropped (deprecated); then the first ``friday_date`` or ``date``
   column (in column order) is dropped: the date is optional;
2. the remaining headers are exactly ``[ticker column, signal column]``, the ticker column one of
   ``ticker``, ``sedol``, ``bloomberg_ticker``, ``composite_figi``, ``numerai_ticker`` and the
   signal column ``prediction`` or ``signal``;
3. no NaN ticker; tickers compared as ``str`` with the universe's column of the same name; rows of
   other tickers are dropped (returned as invalid tickers); no duplicate among the live rows, and
   at least 100 live rows (not every universe ticker is needed);
4. on the live rows, the values rule of the classic tournament: no NaN, values in [0, 1] (a
   minimum ``np.isclose`` to 0 or a maximum ``np.isclose`` to 1 allowed just outside), standard
   deviation not ``np.isclose`` to 0.

An eraflow predictions file of a keyed (Signals) store (``id`` = ``"<era>|<ticker>"``) is turned
into a submission by :func:`latest_era_signals`: the newest era's rows, ranked to (0, 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from eraflow.kernels import rank

from ..errors import InputError
from ..evaluation.predictions import NOT_PREDICTIONS, pandas_numeric_columns, prediction_columns
from ..numerai.submission import check_values, read_submission
from .keys import ERA_COLUMNS, split_keys
from .keys import TICKER_COLUMNS as UNIVERSE_PREFERENCE  # numerai_ticker first: the ticker a conversion names

TICKER_COLUMNS = ("ticker", "sedol", "bloomberg_ticker", "composite_figi", "numerai_ticker")  # numerai-tools order
SIGNAL_COLUMNS = ("prediction", "signal")  # numerai-tools SIGNALS_ALLOWED_PRED_COLS
DATE_COLUMNS = ERA_COLUMNS  # friday_date, date: optional, dropped before the header check
DEPRECATED_COLUMN = "data_type"  # dropped by numerai-tools (with a warning)
MIN_TICKERS = 100  # numerai-tools SIGNALS_MIN_TICKERS: live rows needed
EXAMPLES = 3  # tickers quoted in a message


class SignalsValidation(NamedTuple):
    """What numerai-tools' ``validate_submission_signals`` returns, in its order."""

    ticker_column: str
    signal_column: str
    date_column: str | None
    filtered: pd.DataFrame  # live rows: [ticker (str), signal], sorted by ticker
    invalid_tickers: list[str]  # distinct submitted tickers not in the universe, sorted


def _invalid(problem: str) -> InputError:
    return InputError(f"invalid submission: {problem}")


def _examples(values) -> str:
    shown = sorted(map(str, values))[:EXAMPLES]
    return ", ".join(shown) + (", …" if len(shown) == EXAMPLES else "")


def drop_optional_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """``frame`` without ``data_type`` and without its first date column (column order), and that column's name."""
    frame = frame.drop(columns=[DEPRECATED_COLUMN], errors="ignore")
    date_column = next((c for c in frame.columns if c in DATE_COLUMNS), None)
    if date_column is not None:
        frame = frame.drop(columns=date_column)
    return frame, date_column


def check_signals_headers(frame: pd.DataFrame) -> tuple[str, str]:
    """``(ticker column, signal column)`` when the columns are exactly one of each, ticker first."""
    allowed = [[t, s] for t in TICKER_COLUMNS for s in SIGNAL_COLUMNS]
    if list(frame.columns) not in allowed:
        got = ", ".join(map(str, frame.columns)) or "none"
        raise _invalid(f"columns must be a ticker column ({', '.join(TICKER_COLUMNS)}) then a signal column "
                       f"({', '.join(SIGNAL_COLUMNS)}), with an optional {' or '.join(DATE_COLUMNS)} column "
                       f"(got {got})")
    return frame.columns[0], frame.columns[1]


def universe_tickers(universe: pd.DataFrame, ticker_column: str) -> pd.Series:
    """The universe's ``ticker_column`` (numerai-tools reads the universe column named as the submission's)."""
    if ticker_column not in universe.columns:
        have = ", ".join(c for c in universe.columns if c in TICKER_COLUMNS) or "none"
        raise _invalid(f"the universe has no `{ticker_column}` column (its ticker columns: {have}); "
                       "name the submission's ticker column as the universe does")
    return universe[ticker_column]


def live_signal_rows(frame: pd.DataFrame, ticker_column: str, live: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    """Rows of ``frame`` whose ticker (as str) is live, sorted by ticker, and the other tickers.

    1. a NaN ticker rejects the file;
    2. tickers and the universe compared as ``str``; other rows dropped;
    3. a live ticker twice, or fewer than ``MIN_TICKERS`` live rows, rejects.
    """
    tickers = frame[ticker_column]
    if tickers.isna().any():
        raise _invalid(f"{int(tickers.isna().sum())} row(s) have no ticker (NaN in `{ticker_column}`)")
    sub = frame.assign(**{ticker_column: tickers.astype(str)})
    kept = sub[sub[ticker_column].isin(live.astype(str))].sort_values(ticker_column)
    dup = kept[ticker_column][kept[ticker_column].duplicated()]
    if len(dup):
        raise _invalid(f"{dup.nunique()} live ticker(s) appear more than once (e.g. {_examples(dup.unique())})")
    if len(kept) < MIN_TICKERS:
        raise _invalid(f"{len(kept)} rows have a ticker of the universe, at least {MIN_TICKERS} needed; "
                       "use this round's live universe and its ticker column")
    invalid = sorted(set(sub[ticker_column]).difference(kept[ticker_column]))
    return kept, invalid


def validate_signals_submission(frame: pd.DataFrame, universe: pd.DataFrame | pd.Series) -> SignalsValidation:
    """numerai-tools 0.7.2 ``validate_submission_signals(universe, frame)`` with one-line InputErrors.

    ``universe`` is a DataFrame holding the live universe's ticker column(s) (or one named Series);
    the submission's ticker column is looked up in it by name. ``frame`` is not modified. Raises InputError naming
    the first rule broken (module docstring); returns the ticker, signal and date column names, the
    live rows and the tickers outside the universe.

    Example:
        >>> universe = pd.DataFrame({"numerai_ticker": [f"T{i:03d} US" for i in range(150)]})
        >>> sub = pd.DataFrame({"date": "2024-01-12", "numerai_ticker": universe["numerai_ticker"][::-1],
        ...                     "signal": np.linspace(0, 1, 150)})
        >>> result = validate_signals_submission(sub, universe)
        >>> result.ticker_column, result.signal_column, result.date_column, result.filtered.shape
        ('numerai_ticker', 'signal', 'date', (150, 2))
    """
    universe = universe.to_frame() if isinstance(universe, pd.Series) else universe
    rest, date_column = drop_optional_columns(frame)
    ticker_column, signal_column = check_signals_headers(rest)
    live, invalid = live_signal_rows(rest, ticker_column, universe_tickers(universe, ticker_column))
    check_values(live[signal_column], signal_column)
    return SignalsValidation(ticker_column, signal_column, date_column, live, invalid)


# ---------------------------------------------------------------- files


def read_universe(path: str | Path) -> pd.DataFrame:
    """The ticker columns (as str) of a live universe file (parquet or CSV), e.g. Numerai's Signals live.parquet."""
    frame = read_submission(path, "universe")
    columns = [c for c in frame.columns if c in TICKER_COLUMNS]
    if not columns:
        raise InputError(f"{path} has no ticker column: expected one of {', '.join(TICKER_COLUMNS)} "
                         f"(columns: {', '.join(map(str, frame.columns[:8])) or 'none'})")
    if frame.empty:
        raise InputError(f"{path} has no rows: no live tickers to check the submission against")
    return pd.DataFrame({c: frame[c].astype(str).where(frame[c].notna()) for c in columns})


def _prediction_column(frame: pd.DataFrame, column: str | None, where: str) -> str:
    """``column``, else the only numeric column that is not an id, era, target or feature
    (:func:`~eraflow.engine.evaluation.predictions.prediction_columns`)."""
    chosen = prediction_columns(where, pandas_numeric_columns(frame, NOT_PREDICTIONS), [column] if column else None)
    if len(chosen) != 1:
        raise InputError(f"{where} has {len(chosen)} prediction columns ({', '.join(chosen)}); "
                         "choose one with --column")
    return chosen[0]


def percentile_ranks(values) -> np.ndarray:
    """:func:`eraflow.kernels.rank` of one era: ``(rank − 0.5) / count`` over the non-NaN values, tied values given
    their average rank; NaN stays NaN.

    The ranks lie in (0, 1). Any array-like (ndarray, Series); float64 result.

    Example:
        >>> percentile_ranks(pd.Series([3.0, 1.0, 1.0, np.nan]))
        array([0.83333333, 0.33333333, 0.33333333,        nan])
    """
    x = np.asarray(values, dtype=np.float64)
    return rank(x, np.array([0, len(x)]), backend="numpy")  # one era: NumPy, no numba start


class LatestEra(NamedTuple):
    """A submission made from an eraflow predictions file: the frame, its era and the source column."""

    frame: pd.DataFrame  # [ticker column, "signal"]
    era: str
    column: str


def latest_era_signals(frame: pd.DataFrame, ticker_column: str, column: str | None = None,
                       where: str = "predictions") -> LatestEra:
    """The newest era of an eraflow predictions frame (``id`` = ``"<era>|<ticker>"``) as ``[ticker_column, signal]``.

    1. eras and tickers from the ids (:func:`~eraflow.engine.signals.keys.split_keys`); eras are ISO
       dates, so the newest is the largest;
    2. the chosen prediction column of that era's rows, ranked to ``(rank − 0.5) / n`` (ties
       averaged): Signals scores ranks, and ranks always lie in (0, 1) as Numerai requires.
    """
    name = _prediction_column(frame, column, where)
    if frame.empty:
        raise InputError(f"{where} has no rows")
    if frame["id"].isna().any():
        raise InputError(f"{where}: {int(frame['id'].isna().sum())} row(s) have no id")
    try:
        eras, tickers = split_keys(frame["id"].to_numpy())
    except InputError as exc:
        raise InputError(f"{where}: {exc}; Signals predictions come from a store ingested from Signals files "
                         "(or give a submission file: ticker, signal)") from None
    newest = eras == eras.max()
    era_values = frame[name].to_numpy(np.float64)[newest]
    signal = percentile_ranks(era_values)
    return LatestEra(pd.DataFrame({ticker_column: tickers[newest], "signal": signal}), str(eras.max()), name)


def submission_frame(path: str | Path, universe: pd.DataFrame | pd.Series,
                     column: str | None = None) -> tuple[pd.DataFrame, LatestEra | None]:
    """A Signals submission from ``path``: the file itself, or (when it has ``id``) its newest era as ranks.

    The converted frame's ticker column is the universe's (``numerai_ticker`` first when it has several).
    """
    frame = read_submission(path)
    if "id" not in frame.columns:
        if column is not None:
            raise InputError(f"--column applies to eraflow predictions files (id, era, …); {path} has no `id` "
                             "column, so it is read as a submission (ticker, signal)")
        return frame, None
    universe = universe.to_frame() if isinstance(universe, pd.Series) else universe
    ticker_column = next((c for c in UNIVERSE_PREFERENCE if c in universe.columns), None)
    if ticker_column is None:
        raise InputError(f"the universe has no ticker column (expected one of {', '.join(UNIVERSE_PREFERENCE)}); "
                         f"{path}'s tickers cannot be named")
    latest = latest_era_signals(frame, ticker_column, column, where=str(path))
    return latest.frame, latest
