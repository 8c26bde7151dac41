"""Weekly technical features of a daily price table for Numerai Signals, strictly causal.

The seed's recipe (Numerai's 2021 example pipeline, SEED-NOTEBOOKS §4.3), in steps:

1. Read the daily table (ticker, ``date``, ``close`` > 0, optional ``volume``); within each ticker
   the dates must increase, without duplicates or gaps longer than ``max_gap_days``.
2. Per ticker, daily indicators from rows at dates ≤ t only (windows count trading rows):
   ``rsi``: RSI(n) with simple rolling means of gains and losses, RSI = 100·ḡ/(ḡ + l̄) (= 100 − 100/(1 + RS));
   ``ret_4w``, ``ret_12w``: log(close_t / close_{t−k}) for k = 20 and 60 rows;
   ``vol_20d``: sample std of the last 20 daily log returns;
   ``volume_ratio`` (when there is a volume column): mean volume of 5 rows / mean volume of 20 rows.
3. Sample on Fridays: a ticker's Friday row, else its last row of that week before it (Thursday, …,
   Monday; never a weekend or a later day); the era is the Friday.
4. Per Friday, quintile codes 0..4 of each indicator over the tickers that have it:
   code = min(4, ⌊5(rank − ½)/n⌋) with average ranks.
5. Per ticker, weekly lags 0..L−1 of each code and diffs lag_d − lag_{d+1} (d = 0..L−1, so lag L is
   read for the last diff), their absolute values, and the diffs re-coded per Friday as quintiles.
6. Keep rows whose L + 1 lags are all present: the L + 1 weeks up to the Friday are consecutive
   Fridays with every indicator (an indicator is NaN in its warm-up, over flat prices for RSI, over
   zero volume for the volume ratio). Other rows, and tickers left without a row, are dropped and
   counted by reason.

Departures from the seed, and why:

- RSI(14) by default (``rsi_window``), as the issue asks; the seed used 10 (the formula is the same).
- Several indicators, not RSI alone; each gets the seed's 3L columns (lags, diffs, abs diffs).
- Lags are by calendar week, not by row: lag d is the code of the Friday d weeks earlier, and a
  missing week leaves it missing (the seed's per-ticker ``shift(d)`` reads an older week there).
- Every column is an int8 code 0..4 so the file ingests into a store as is: the diffs (−4..4 in the
  seed) are re-coded per Friday as quintiles; the abs diffs are 0..4 already.
- Quintiles by the rank formula above, not ``qcut`` with dropped duplicate edges (ties share a code,
  and the bins do not depend on how many distinct values a Friday has).
- A week without a Friday row samples the ticker's last Monday–Thursday row (the seed kept Fridays only,
  the issue's rule is Friday else Thursday): a week whose Thursday and Friday are both market holidays
  would otherwise lose that Friday and break every ticker's L + 1 week run, dropping L + 1 rows each.
- No minimum of tickers per Friday (the seed kept dates with more than 50 rows); filter eras later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError
from .keys import ERA_COLUMNS, TICKER_COLUMNS, era_dates, find_column

KIND = "signals_features"  # parquet footer marker (engine.outputs): eraflow replaces only files it wrote
MAX_GAP_DAYS = 10  # calendar days between two rows of a ticker; a longer gap is a broken history (two weeks off)
RSI_WINDOW = 14
LAGS = 5
RETURN_ROWS = {"ret_4w": 20, "ret_12w": 60}  # trading rows ≈ 4 and 12 weeks
VOLATILITY_ROWS = 20
VOLUME_ROWS = (5, 20)  # short and long mean of the volume ratio
FRIDAY = 4  # weekday number, Monday = 0
EPOCH_WEEKDAY = 3  # 1970-01-01 (day 0 of pl.Date) was a Thursday

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FeatureOptions:
    """Settings of :func:`signals_features`; ``ticker_column`` None: the first of keys.TICKER_COLUMNS present."""

    rsi_window: int = RSI_WINDOW
    lags: int = LAGS
    max_gap_days: int = MAX_GAP_DAYS
    ticker_column: str | None = None

    def check(self) -> None:
        if self.rsi_window < 2:
            raise InputError(f"--rsi-window {self.rsi_window}: give at least 2 days")
        if self.lags < 1:
            raise InputError(f"--lags {self.lags}: give at least 1 weekly lag")
        if self.max_gap_days < 1:
            raise InputError(f"--max-gap-days {self.max_gap_days}: give at least 1 day")


@dataclass(frozen=True)
class Prices:
    """A daily price table sorted by ticker then date; row arrays of length n."""

    ticker_column: str
    tickers: np.ndarray  # (n_tickers,) str, in row order of their first row
    tick: np.ndarray  # (n,) int32 index into tickers
    day: np.ndarray  # (n,) int32 days since 1970-01-01
    close: np.ndarray  # (n,) float64 > 0
    volume: np.ndarray | None  # (n,) float64 ≥ 0 or NaN

    @property
    def position(self) -> np.ndarray:
        """(n,) int64: each row's index within its ticker's history (0 for its first day)."""
        first = np.flatnonzero(np.r_[True, self.tick[1:] != self.tick[:-1]])
        return np.arange(len(self.tick)) - np.repeat(first, np.diff(np.r_[first, len(self.tick)]))


@dataclass
class FeatureResult:
    """The weekly feature table and what was kept and dropped."""

    frame: pl.DataFrame  # ticker column, date (the Friday), feature_* int8, target* floats
    ticker_column: str
    indicators: list[str]
    features: list[str]
    targets: list[str]
    price_rows: int
    tickers_dropped: dict[str, int]  # reason → tickers without any output row
    rows_dropped: dict[str, int]  # reason → Friday samples left out: ``indicators`` (one is NaN: warm-up, flat
    # prices, zero volume) or ``lags`` (fewer than L + 1 consecutive complete Fridays up to it)
    seconds: float = 0.0
    options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        eras = self.frame["date"]
        return {"rows": self.frame.height, "fridays": eras.n_unique(),
                "first_friday": str(eras.min()) if self.frame.height else None,
                "last_friday": str(eras.max()) if self.frame.height else None,
                "tickers_kept": self.frame[self.ticker_column].n_unique(), "tickers_dropped": self.tickers_dropped,
                "rows_dropped": self.rows_dropped, "price_rows": self.price_rows, "indicators": self.indicators,
                "features": len(self.features), "targets": self.targets, "options": self.options,
                "seconds": round(self.seconds, 3)}


# -- reading -------------------------------------------------------------------------------------

def _column_names(path: Path, what: str) -> list[str]:
    """The columns of the parquet file at ``path`` (from its footer); InputError when there is no such file."""
    if not path.is_file():
        raise InputError(f"the {what} {path} does not exist (give a parquet file)")
    return list(pl.read_parquet_schema(path))


def _first(mask: pl.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def read_prices(path: str | Path, ticker_column: str | None = None, max_gap_days: int = MAX_GAP_DAYS) -> Prices:
    """The daily table at ``path`` sorted by ticker (rows of a ticker keep their file order), checked.

    One-line InputErrors: no rows; missing columns; close NaN, null, infinite or ≤ 0; volume infinite or
    negative; within a ticker (in file order) a repeated date, a date before the previous one, or a gap of
    more than ``max_gap_days`` calendar days.
    """
    where = Path(path).name
    names = _column_names(Path(path), "price table")
    ticker = find_column(names, ticker_column, TICKER_COLUMNS, "ticker", where)
    for needed in ("date", "close"):
        if needed not in names:
            raise InputError(f"{where} has no {needed} column (a price table has a ticker column, date, close "
                             "and optionally volume)")
    columns = [ticker, "date", "close"] + (["volume"] if "volume" in names else [])
    frame = pl.read_parquet(path, columns=columns)
    if frame.height == 0:
        raise InputError(f"{where} has no rows; give a daily price table")
    if frame[ticker].null_count():
        raise InputError(f"{where}: {ticker} is missing on row {_first(frame[ticker].is_null())}; every row needs a "
                         "ticker")
    frame = frame.with_columns(era_dates(frame["date"], where).alias("date"))
    if frame["date"].null_count():
        raise InputError(f"{where}: date is missing on row {_first(frame['date'].is_null())}")
    frame = frame.sort(ticker, maintain_order=True)  # stable: a ticker's rows keep the file's order
    close = _numbers(frame, "close", where)
    bad = ~(np.isfinite(close) & (close > 0))
    if bad.any():
        i = _first(bad)
        raise InputError(f"{where}: close {close[i]} for {frame[ticker][i]} on {frame['date'][i]}; every close "
                         "must be a finite number > 0")
    volume = _numbers(frame, "volume", where) if "volume" in frame.columns else None
    if volume is not None and (bad := np.isinf(volume) | (volume < 0)).any():  # NaN (missing) volume is allowed
        i = _first(bad)
        raise InputError(f"{where}: volume {volume[i]} for {frame[ticker][i]} on {frame['date'][i]}; volumes "
                         "must be finite and ≥ 0")
    labels = frame[ticker].cast(pl.String)
    new = np.asarray(labels.ne_missing(labels.shift(1)).fill_null(True))
    tick = (np.cumsum(new) - 1).astype(np.int32)
    day = frame["date"].to_physical().to_numpy().astype(np.int32)
    _check_history(day, new, labels, max_gap_days, where)
    return Prices(ticker, labels.filter(pl.Series(new)).to_numpy().astype(object), tick, day, close, volume)


def _numbers(frame: pl.DataFrame, name: str, where: str) -> np.ndarray:
    """A numeric column as float64 (nulls as NaN); InputError for text or other types."""
    column = frame[name]
    if not column.dtype.is_numeric():
        raise InputError(f"{where}: column {name} has type {column.dtype}; expected numbers")
    return column.cast(pl.Float64).fill_null(np.nan).to_numpy()


def _check_history(day: np.ndarray, new: np.ndarray, labels: pl.Series, max_gap_days: int, where: str) -> None:
    """Within each ticker: dates strictly increasing, steps ≤ ``max_gap_days`` (one-line InputError)."""
    step = np.diff(day)
    same = ~new[1:]

    def at(i: int) -> tuple[str, str, str]:
        iso = pl.Series([day[i], day[i + 1]]).cast(pl.Date).dt.strftime("%Y-%m-%d")
        return labels[i + 1], iso[0], iso[1]

    for mask, message in (
            (same & (step == 0), "{0} has two rows on {2}; give one row per ticker and date"),
            (same & (step < 0), "{0}: date {2} comes after {1}; sort the rows of each ticker by date"),
            (same & (step > max_gap_days),
             "{0} has no price from {1} to {2}, a gap longer than --max-gap-days " + f"{max_gap_days}; "
             "fill it or split the ticker")):
        if mask.any():
            raise InputError(f"{where}: " + message.format(*at(_first(mask))))


# -- daily indicators ----------------------------------------------------------------------------

def windowed_mean(x: np.ndarray, n: int, valid: np.ndarray) -> np.ndarray:
    """(n_rows,) mean of x over the window of ``n`` rows ending at each row; NaN where ``valid`` is False.

    m_i = (1/n) Σ_{k<n} x_{i−k} (summed window by window, no running sums: a flat window is exactly 0);
    the caller's ``valid`` says where the window stays inside the ticker.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1:] = sliding_window_view(x, n).sum(axis=1) / n
    out[~valid] = np.nan
    return out


def lagged(x: np.ndarray, k: int, position: np.ndarray) -> np.ndarray:
    """x_{i−k} of the same ticker (NaN where the ticker has fewer than k earlier rows)."""
    out = np.full(len(x), np.nan)
    out[k:] = x[:len(x) - k]
    out[position < k] = np.nan
    return out


def rsi(close: np.ndarray, position: np.ndarray, n: int) -> np.ndarray:
    """RSI(n) with simple means (the seed): Δ_i = c_i − c_{i−1}; ḡ, l̄ the n-row means of max(Δ, 0) and
    max(−Δ, 0); RSI = 100·ḡ/(ḡ + l̄) (= 100 − 100/(1 + ḡ/l̄)). NaN for the first n rows of a ticker and
    for a flat window (0/0); 100 after n rises, 0 after n falls."""
    change = close - lagged(close, 1, position)
    gain = windowed_mean(np.maximum(change, 0.0), n, position >= n)
    loss = windowed_mean(np.maximum(-change, 0.0), n, position >= n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * gain / (gain + loss)


def log_return(close: np.ndarray, position: np.ndarray, k: int) -> np.ndarray:
    """log(c_i / c_{i−k}) within a ticker."""
    return np.log(close / lagged(close, k, position))


def volatility(close: np.ndarray, position: np.ndarray, n: int) -> np.ndarray:
    """Sample std of the last n daily log returns r: √((Σr² − (Σr)²/n)/(n − 1))."""
    r = log_return(close, position, 1)
    valid = position >= n
    mean = windowed_mean(r, n, valid)
    mean_square = windowed_mean(r * r, n, valid)
    return np.sqrt(np.maximum(mean_square - mean * mean, 0.0) * n / (n - 1))


def volume_ratio(volume: np.ndarray, position: np.ndarray, short: int, long: int) -> np.ndarray:
    """Mean volume of the last ``short`` rows over that of the last ``long`` rows (NaN when the latter is 0)."""
    numerator = windowed_mean(volume, short, position >= short - 1)
    denominator = windowed_mean(volume, long, position >= long - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def daily_indicators(prices: Prices, options: FeatureOptions) -> dict[str, Callable[[], np.ndarray]]:
    """Indicator name → a function computing its (n_rows,) float64 values (computed one at a time)."""
    pos, close = prices.position, prices.close
    indicators = {"rsi": lambda: rsi(close, pos, options.rsi_window)}
    for name, k in RETURN_ROWS.items():
        indicators[name] = lambda k=k: log_return(close, pos, k)
    indicators[f"vol_{VOLATILITY_ROWS}d"] = lambda: volatility(close, pos, VOLATILITY_ROWS)
    if prices.volume is not None:
        indicators["volume_ratio"] = lambda: volume_ratio(prices.volume, pos, *VOLUME_ROWS)
    return indicators


# -- weekly sampling and codes -------------------------------------------------------------------

def friday_rows(tick: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, Friday day numbers) of each ticker's weekly sample: its last row from Monday to
    Friday of that week (its Friday row, else Thursday, …, else Monday; never a weekend or a later day).
    Rows sorted by ticker then date in, out too; empty arrays when no row falls on a weekday."""
    weekday = (day + EPOCH_WEEKDAY) % 7
    rows = np.flatnonzero(weekday <= FRIDAY)
    if not len(rows):
        return rows, day[rows]
    friday = day[rows] + (FRIDAY - weekday[rows])
    last = np.r_[(tick[rows[1:]] != tick[rows[:-1]]) | (friday[1:] != friday[:-1]), True]
    return rows[last], friday[last]


def quintile_codes(values: np.ndarray, eras: np.ndarray) -> np.ndarray:
    """(n,) int8 per-era quintile codes min(4, ⌊5(r − ½)/m⌋), r the average rank among the era's m
    finite values; −1 where the value is NaN. Computed in integers: ⌊5(2r − 1)/(2m)⌋."""
    return quintile_code_columns({"v": values}, eras)["v"]


def quintile_code_columns(columns: dict[str, np.ndarray], eras: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`quintile_codes` of several (n,) columns over the same eras, in one parallel polars pass."""
    frame = pl.DataFrame({"era": eras, **columns}).with_columns(pl.col(*columns).fill_nan(None))

    def code(name: str) -> pl.Expr:
        twice_rank = (pl.col(name).rank("average") * 2).over("era").cast(pl.Int64)
        count = pl.col(name).count().over("era").cast(pl.Int64)
        return ((5 * (twice_rank - 1)) // (2 * count)).clip(upper_bound=4).fill_null(-1).cast(pl.Int8).alias(name)

    coded = frame.select(code(name) for name in columns)
    return {name: coded[name].to_numpy() for name in columns}


def week_position(tick: np.ndarray, friday: np.ndarray) -> np.ndarray:
    """(n,) int64: how many consecutive Fridays of the same ticker come right before each sample."""
    follows = np.r_[False, (tick[1:] == tick[:-1]) & (friday[1:] - friday[:-1] == 7)]
    index = np.arange(len(tick))
    run_start = np.maximum.accumulate(np.where(follows, 0, index)) if len(tick) else index
    return index - run_start


def shifted_codes(codes: np.ndarray, d: int, weeks: np.ndarray) -> np.ndarray:
    """int8 code of the same ticker d consecutive weeks earlier; −1 where that week is missing."""
    out = np.full(len(codes), -1, dtype=np.int8)
    out[d:] = codes[:len(codes) - d]
    out[weeks < d] = -1
    return out


def integer_quintile_codes(values: np.ndarray, era_index: np.ndarray, n_eras: int) -> np.ndarray:
    """:func:`quintile_codes` of small integers (the lag diffs −4..4) by counting instead of sorting.

    Per era, a value v with ``less`` smaller values and ``c`` copies has average rank r = less + (c + 1)/2,
    so 2r − 1 = 2·less + c and the code is ⌊5(2·less + c)/(2m)⌋, m the era's count.
    """
    low = int(values.min()) if len(values) else 0
    span = int(values.max()) - low + 1 if len(values) else 1
    key = era_index.astype(np.int64) * span + (values.astype(np.int64) - low)
    counts = np.bincount(key, minlength=n_eras * span).reshape(n_eras, span)
    less = np.cumsum(counts, axis=1) - counts
    m = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    table = np.minimum(4, 5 * (2 * less + counts) // (2 * m)).astype(np.int8)
    return table.ravel()[key]


def lag_features(name: str, codes: np.ndarray, weeks: np.ndarray, keep: np.ndarray, era_index: np.ndarray,
                 lags: int) -> dict[str, np.ndarray]:
    """feature_<name>_lag_d, _diff_d (re-coded per Friday) and _abs_diff_d for d < lags, on the kept rows.

    ``era_index``: (kept rows,) index of each kept row's Friday among the kept Fridays.
    """
    lag = [shifted_codes(codes, d, weeks)[keep] for d in range(lags + 1)]
    diffs = [(lag[d] - lag[d + 1]).astype(np.int8) for d in range(lags)]
    n_eras = int(era_index.max()) + 1 if len(era_index) else 0
    out = {f"feature_{name}_lag_{d}": lag[d] for d in range(lags)}
    out |= {f"feature_{name}_diff_{d}": integer_quintile_codes(diffs[d], era_index, n_eras) for d in range(lags)}
    out |= {f"feature_{name}_abs_diff_{d}": np.abs(diffs[d]).astype(np.int8) for d in range(lags)}
    return out


# -- the table -----------------------------------------------------------------------------------

def signals_features(prices_path: str | Path, options: FeatureOptions = FeatureOptions(),
                     targets_path: str | Path | None = None, progress: Progress | None = None) -> FeatureResult:
    """Weekly int8 feature codes of the daily price table at ``prices_path`` (see the module doc).

    ``targets_path``: a parquet of (date or friday_date, ticker, target*) joined on (ticker, Friday);
    rows without a target keep NaN. ``progress(stage, rows, total)`` is called as stages advance.

    Example: ``signals_features("prices.parquet", FeatureOptions(rsi_window=14, lags=5))``
    """
    started = time.perf_counter()
    options.check()
    report = progress or (lambda *_: None)
    prices = read_prices(prices_path, options.ticker_column, options.max_gap_days)
    rows, fridays = friday_rows(prices.tick, prices.day)
    weeks = week_position(prices.tick[rows], fridays)
    indicators = daily_indicators(prices, options)
    n, k = len(prices.tick), len(indicators)
    weekly = {}
    for name, compute in indicators.items():
        weekly[name] = compute()[rows]
        report("daily indicators", n, n * k)
    codes = quintile_code_columns(weekly, fridays)
    complete = np.logical_and.reduce([c >= 0 for c in codes.values()])
    keep = weeks >= options.lags
    for d in range(options.lags + 1):
        keep &= shifted_codes(complete.astype(np.int8), d, weeks) == 1
    if not keep.any():
        raise InputError(f"{Path(prices_path).name}: no ticker has {options.lags + 1} consecutive Fridays with every "
                         f"indicator (the longest window is {max(RETURN_ROWS.values())} trading days); give longer "
                         "histories or fewer --lags")
    columns = {}
    era_index = np.unique(fridays[keep], return_inverse=True)[1]
    for name, c in codes.items():
        columns |= lag_features(name, c, weeks, keep, era_index, options.lags)
        report("weekly lags", len(rows), len(rows) * k)
    ticker_of = prices.tick[rows]
    frame = pl.DataFrame({prices.ticker_column: pl.Series(prices.tickers, dtype=pl.String).gather(ticker_of[keep]),
                          "date": pl.Series(fridays[keep], dtype=pl.Int32).cast(pl.Date), **columns})
    targets = []
    if targets_path is not None:
        frame, targets = join_targets(frame, prices.ticker_column, targets_path)
    frame = frame.sort("date", prices.ticker_column)
    return FeatureResult(
        frame=frame, ticker_column=prices.ticker_column, indicators=list(indicators),
        features=list(columns), targets=targets, price_rows=n,
        tickers_dropped=_dropped_tickers(len(prices.tickers), ticker_of, complete, keep),
        rows_dropped={"indicators": int((~complete).sum()), "lags": int((complete & ~keep).sum())},
        seconds=time.perf_counter() - started,
        options={"ticker_column": prices.ticker_column, "rsi_window": options.rsi_window, "lags": options.lags,
                 "max_gap_days": options.max_gap_days})


def _dropped_tickers(n_tickers: int, ticker_of: np.ndarray, complete: np.ndarray, keep: np.ndarray) -> dict[str, int]:
    """Tickers without an output row: ``indicators`` (no Friday with every indicator: too short a
    history or no Monday–Friday rows) or ``lags`` (never L + 1 consecutive such Fridays)."""
    has_complete = np.zeros(n_tickers, bool)
    has_complete[ticker_of[complete]] = True
    kept = np.zeros(n_tickers, bool)
    kept[ticker_of[keep]] = True
    return {"indicators": int((~has_complete).sum()), "lags": int((has_complete & ~kept).sum())}


def join_targets(frame: pl.DataFrame, ticker: str, path: str | Path) -> tuple[pl.DataFrame, list[str]]:
    """``frame`` left-joined with the target* columns of the parquet at ``path`` on (ticker, Friday)."""
    where = Path(path).name
    names = _column_names(Path(path), "targets file")
    date = _targets_column(names, ERA_COLUMNS, "date", where)
    their_ticker = _targets_column(names, (ticker, *TICKER_COLUMNS), "ticker", where)
    targets = [c for c in names if c.startswith("target") and c not in (date, their_ticker)]
    if not targets:
        raise InputError(f"{where} has no target columns (names starting with 'target')")
    table = pl.read_parquet(path, columns=[their_ticker, date, *targets])
    for name in targets:
        _numbers(table, name, where)  # InputError for a target that is not numeric
    table = table.select(pl.col(their_ticker).cast(pl.String).alias(ticker),
                         era_dates(table[date], where).alias("date"),
                         *(pl.col(t).cast(pl.Float64) if table[t].dtype.is_integer() else pl.col(t) for t in targets))
    twice = table.select(ticker, "date").is_duplicated()
    if twice.any():
        i = _first(twice)
        raise InputError(f"{where} has two rows for {table[ticker][i]} on {table['date'][i]}; give one target row "
                         "per ticker and date")
    return frame.join(table, on=[ticker, "date"], how="left"), targets


def _targets_column(names: list[str], candidates: tuple[str, ...], kind: str, where: str) -> str:
    """The first of ``candidates`` in the targets file's ``names`` (no option names it: the hint is to rename)."""
    found = next((c for c in candidates if c in names), None)
    if found is None:
        expected = ", ".join(dict.fromkeys(candidates))
        raise InputError(f"{where} has no {kind} column: expected one of {expected}; rename its {kind} column to one "
                         "of these")
    return found


def write_features(result: FeatureResult, path: str | Path) -> None:
    """Write the table atomically as parquet marked as eraflow's ``signals_features`` output."""
    from ..atomic import atomic_write_parquet

    atomic_write_parquet(Path(path), result.frame.to_arrow(), kind=KIND)
