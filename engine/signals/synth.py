"""Synthetic Numerai Signals data: a daily price panel with a planted weekly momentum, and the weekly
files Signals scoring needs (targets, neutralizers, sample weights, a meta model, the live universe).

Calendar: business days of ``weeks`` weeks from :data:`START` (a Monday); a few Fridays and Mondays are
market holidays (no ticker trades), so those Fridays are sampled on Thursday. Ticker i lives on trading days
``[first_i, last_i]``: most the whole span, some start late (one in the last weeks, too new for lags) or end
early. Daily log returns, days d of week w:

    r_{i,d} = β_i m_d + L_i·f_d + e_{i,d},   e_{i,d} = σ_i (ε_{i,d} + κ_w z_{i,w} / √5)

with market returns m_d, style factor returns f_d (loadings L_i fixed), and the planted momentum: z_{i,w} the
cross-sectional z-score of e/σ summed over the :data:`MOMENTUM_WEEKS` weeks before week w (days ≤ the previous
Friday; the panel is simulated whole, then masked outside each ticker's life), κ_w = momentum × U(0.5, 1.5);
corr(z, next week's e) ≈ momentum. Close = exp(log price) rounded to 4 decimals; volume a lognormal integer.

Weekly files, one row per (Friday t, ticker listed at t), where a ticker's sample day at t is its last trading
day of that week up to the Friday (its Friday row, else Thursday, …; as ``eraflow signals features`` samples;
never a later day), and it is listed when one exists:

- sample weights ``w = √(mean close·volume over its last ≤ 20 trading days to the sample day)``, / mean per Friday;
- neutralizers: per Friday the columns X = [1, β, L] orthonormalized under the weights (Cholesky C Cᵀ = XᵀWX,
  ``N = X C⁻ᵀ``), so ``NᵀWN = I`` and numerai-tools' ``s − N(Nᵀ(w∘s))`` is a W-orthogonal projection;
- target at t: the return from the sample close at t to the sample close :data:`HORIZON_WEEKS` Fridays later
  (prices strictly after t move it), residualized on the neutralizers by weighted least squares over the
  tickers listed at both Fridays, binned per Friday into {0, .25, .5, .75, 1} with shares 5/20/50/20/5 %;
  the newest :data:`HORIZON_WEEKS` Fridays have no target (future unknown) and rows are absent, not NaN;
- meta model: per-Friday percentile rank of the trailing 20-day return (to the sample day) plus noise.

All from prices ≤ the sample day except the target. The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..atomic import atomic_write_json, atomic_write_parquet
from ..data.synth import TARGET_SHARES, TARGET_VALUES, bin_by_shares
from ..errors import InputError, OutputError

START = date(2019, 1, 7)  # a Monday: the first trading day before holidays
MOMENTUM_WEEKS = 4  # weeks of trailing idiosyncratic return the planted drift follows
HORIZON_WEEKS = 4  # the target's forward return: 4 weeks (~20 trading days) after the Friday
TRAILING_DAYS = 20  # days of the meta model's trailing return and of the weights' dollar volume
LATE_SHARE, EARLY_SHARE = 0.12, 0.08  # tickers that start late / end early
HOLIDAY_EVERY = 40  # one holiday Friday and one holiday Monday per this many weeks (at least one each)
MARKET_VOL, STYLE_VOL = 0.010, 0.004  # daily factor return volatilities
FILES = ("prices.parquet", "targets.parquet", "neutralizers.parquet", "sample_weights.parquet",
         "meta_model.parquet", "universe.parquet")
KIND = "eraflow-synth-signals"  # synth.json "kind": marks a directory this module wrote
PANEL_BYTES_PER_CELL = 120  # peak memory per (trading day, ticker): ~15 float64 (D, n) panels (117 B measured)
MAX_PANEL_BYTES = 8 << 30  # refuse sizes whose panels need more than 8 GiB (a MemoryError half-way otherwise)


@dataclass(frozen=True)
class SignalsSynthSpec:
    """Sizes and knobs of a synthetic Signals data set."""

    tickers: int = 300
    weeks: int = 160
    neutralizers: int = 8  # columns: constant, beta, neutralizers − 2 style loadings
    momentum: float = 0.05  # corr of the trailing-return z-score with the next week's idiosyncratic return
    seed: int = 0


def validate_spec(spec: SignalsSynthSpec) -> None:
    """Raise InputError for sizes the generator cannot honour."""
    checks = [
        (spec.tickers >= 20, f"--tickers must be at least 20, got {spec.tickers}"),
        (spec.weeks >= 2 * (MOMENTUM_WEEKS + HORIZON_WEEKS),
         f"--weeks must be at least {2 * (MOMENTUM_WEEKS + HORIZON_WEEKS)} (momentum and target horizons), "
         f"got {spec.weeks}"),
        (2 <= spec.neutralizers <= spec.tickers // 4,
         f"--neutralizers must be 2..{spec.tickers // 4} (a quarter of --tickers), got {spec.neutralizers}"),
        (0 <= spec.momentum < 1, f"momentum must be in [0, 1), got {spec.momentum}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise InputError(msg)
    need = panel_bytes(spec)
    if need > MAX_PANEL_BYTES:
        raise InputError(f"--tickers {spec.tickers} × --weeks {spec.weeks} needs about {need / 2**30:.0f} GiB of "
                         f"memory (at most {MAX_PANEL_BYTES >> 30} GiB); give fewer tickers or weeks")


def panel_bytes(spec: SignalsSynthSpec) -> int:
    """Estimated peak memory: PANEL_BYTES_PER_CELL × tickers × business days (5 per week)."""
    return PANEL_BYTES_PER_CELL * spec.tickers * 5 * spec.weeks


def ticker_names(n: int) -> list[str]:
    """``T0001 US``, ``T0002 US``, … (Bloomberg-style: symbol, space, exchange code)."""
    return [f"T{i + 1:04d} US" for i in range(n)]


@dataclass(frozen=True)
class Calendar:
    """Trading days and Fridays: ``fridays[w]`` is week w's Friday; ``friday_day[w]`` / ``thursday_day[w]`` its
    trading-day index (−1 on a holiday)."""

    days: np.ndarray  # datetime64[D] (D,)
    fridays: np.ndarray  # datetime64[D] (W,)
    week_of_day: np.ndarray  # int64 (D,)
    friday_day: np.ndarray  # int64 (W,)
    thursday_day: np.ndarray  # int64 (W,)
    holidays: np.ndarray  # datetime64[D]


def make_calendar(weeks: int, rng: np.random.Generator) -> Calendar:
    """Business days of ``weeks`` weeks from START minus holidays: Fridays and Mondays of weeks 1..W−2 (never the
    first or the live week), ``max(1, weeks // HOLIDAY_EVERY)`` of each."""
    start = np.datetime64(START, "D")
    business = start + np.array([7 * w + d for w in range(weeks) for d in range(5)])
    n_each = max(1, weeks // HOLIDAY_EVERY)
    holiday_weeks = [np.sort(rng.choice(np.arange(1, weeks - 1), n_each, replace=False)) for _ in range(2)]
    holidays = np.sort(np.concatenate([start + 7 * holiday_weeks[0] + 4, start + 7 * holiday_weeks[1]]))
    days = business[~np.isin(business, holidays)]
    fridays = start + 7 * np.arange(weeks) + 4
    index = {d: k for k, d in enumerate(days.tolist())}
    return Calendar(days=days, fridays=fridays,
                    week_of_day=((days - start).astype(np.int64) // 7),
                    friday_day=np.array([index.get(f, -1) for f in fridays.tolist()], dtype=np.int64),
                    thursday_day=np.array([index[f - timedelta(days=1)] for f in fridays.tolist()], dtype=np.int64),
                    holidays=holidays)


def listing_days(n_tickers: int, n_days: int, cal: Calendar, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(first, last) trading-day index per ticker: LATE_SHARE start late (the first of them on the Friday two weeks
    before the live one, too new for weekly lags), EARLY_SHARE others end early, the rest live the whole span."""
    first = np.zeros(n_tickers, dtype=np.int64)
    last = np.full(n_tickers, n_days - 1, dtype=np.int64)
    n_late = max(1, round(LATE_SHARE * n_tickers))
    n_early = max(1, round(EARLY_SHARE * n_tickers))
    chosen = rng.choice(n_tickers, n_late + n_early, replace=False)
    late, early = np.sort(chosen[:n_late]), np.sort(chosen[n_late:])
    first[late] = rng.integers(1, n_days - 5, n_late)
    first[late[0]] = cal.friday_day[-3] if cal.friday_day[-3] >= 0 else cal.thursday_day[-3]
    last[early] = rng.integers(5, n_days - 6, n_early)
    return first, last


def simulate_log_prices(spec: SignalsSynthSpec, cal: Calendar, beta: np.ndarray, loadings: np.ndarray,
                        rng: np.random.Generator, progress: Callable[[int], None] | None) -> np.ndarray:
    """Log prices (D, n) of the factor model with the planted weekly momentum (module doc)."""
    n_days, n = len(cal.days), spec.tickers
    sigma = rng.uniform(0.012, 0.03, n)
    market = rng.normal(0.0003, MARKET_VOL, n_days)
    styles = rng.normal(0.0, STYLE_VOL, (n_days, loadings.shape[1]))
    kappa = spec.momentum * rng.uniform(0.5, 1.5, spec.weeks)
    noise = rng.standard_normal((n_days, n))
    idio = np.empty((n_days, n))
    weekly = np.zeros((spec.weeks, n))  # Σ of e over each week, in units of σ_i
    for w in range(spec.weeks):
        rows = cal.week_of_day == w
        trailing = weekly[max(0, w - MOMENTUM_WEEKS):w].sum(axis=0)
        z = standardized(trailing) if w else np.zeros(n)
        idio[rows] = noise[rows] + kappa[w] * z / math.sqrt(5)
        weekly[w] = idio[rows].sum(axis=0)
        if progress:
            progress(n)
    returns = market[:, None] * beta + styles @ loadings.T + idio * sigma
    start = rng.normal(math.log(30.0), 0.8, n)
    return start + np.cumsum(returns, axis=0)


def standardized(x: np.ndarray) -> np.ndarray:
    """(x − mean)/std (0 when constant)."""
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def sample_days(cal: Calendar, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """(W, n) trading-day index of each ticker's sample at each Friday: its last trading day of that week,
    s = min(last_i, last day of week w), when s ≥ max(first_i, first day of week w); else −1 (not listed)."""
    weeks = np.arange(len(cal.fridays))
    week_first = np.searchsorted(cal.week_of_day, weeks)
    week_last = np.searchsorted(cal.week_of_day, weeks, side="right") - 1
    day = np.minimum(last, week_last[:, None])
    return np.where(day >= np.maximum(first, week_first[:, None]), day, -1)


def trailing_mean(csum: np.ndarray, first: np.ndarray, day: np.ndarray, ticker: np.ndarray) -> np.ndarray:
    """Mean of values[d, ticker] over d in [max(first, day − TRAILING_DAYS + 1), day] (days ≤ ``day`` only), from
    ``csum`` = the cumulative sums of values over days with a zero row in front."""
    lo = np.maximum(first[ticker], day - TRAILING_DAYS + 1)
    return (csum[day + 1, ticker] - csum[lo, ticker]) / (day + 1 - lo)


def orthonormal_neutralizers(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """N (n, k) spanning the columns of ``x`` with NᵀWN = I: N = x C⁻ᵀ where C Cᵀ = xᵀWx (Cholesky), so
    NᵀWN = C⁻¹(xᵀWx)C⁻ᵀ = I (the Q/√w of a QR of √w·x with diag R > 0)."""
    chol = np.linalg.cholesky(x.T @ (w[:, None] * x))
    return np.linalg.solve(chol, x.T).T


def weighted_residual(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y − x b with b = (xᵀWx)⁻¹ xᵀWy minimizing Σ w (y − x b)² (weighted least squares)."""
    return y - x @ np.linalg.solve(x.T @ (w[:, None] * x), x.T @ (w * y))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the average ranks."""
    from .submission import percentile_ranks  # here, not at the top: that module imports pandas

    return float(np.corrcoef(percentile_ranks(a), percentile_ranks(b))[0, 1])


def weekly_rows(spec: SignalsSynthSpec, cal: Calendar, close: np.ndarray, volume: np.ndarray, first: np.ndarray,
                last: np.ndarray, exposures: np.ndarray, rng: np.random.Generator) -> dict[str, dict]:
    """Columns of the weekly files (module doc), sorted by (Friday, ticker), and per Friday the Spearman of the
    trailing return with the target (how strong the planted momentum is)."""
    from .submission import percentile_ranks

    sample = sample_days(cal, first, last)
    dollar = np.nan_to_num(close * volume)
    dollar_csum = np.vstack([np.zeros(spec.tickers), np.cumsum(dollar, axis=0)])
    out = {name: [] for name in ("week", "ticker", "weight", "neutralizers", "meta",
                                 "t_week", "t_ticker", "target")}
    momentum = {}
    for w in range(spec.weeks):
        ticker = np.flatnonzero(sample[w] >= 0)
        day = sample[w, ticker]
        weight = np.sqrt(trailing_mean(dollar_csum, first, day, ticker))
        weight /= weight.mean()
        neutral = orthonormal_neutralizers(exposures[ticker], weight)
        past = np.maximum(first[ticker], day - TRAILING_DAYS)
        trailing = np.log(close[day, ticker] / close[past, ticker])
        meta = percentile_ranks(standardized(trailing) + 2.0 * rng.standard_normal(len(ticker)))
        out["week"].append(np.full(len(ticker), w))
        out["ticker"].append(ticker)
        out["weight"].append(weight)
        out["neutralizers"].append(neutral)
        out["meta"].append(meta)
        if w + HORIZON_WEEKS < spec.weeks:
            end = sample[w + HORIZON_WEEKS, ticker]
            keep = end >= 0
            forward = close[end[keep], ticker[keep]] / close[day[keep], ticker[keep]] - 1.0
            resid = weighted_residual(forward, neutral[keep], weight[keep])
            target = TARGET_VALUES[bin_by_shares(resid, TARGET_SHARES)]
            out["t_week"].append(np.full(keep.sum(), w))
            out["t_ticker"].append(ticker[keep])
            out["target"].append(target)
            momentum[str(cal.fridays[w])] = spearman(trailing[keep], target)
    return {"rows": {k: np.concatenate(v) for k, v in out.items()}, "momentum": momentum}


def check_out_dir(out: Path) -> None:
    """OutputError unless ``out`` is absent, an empty directory, or one this module wrote (synth.json kind)."""
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; give the real path, eraflow does not write through links")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out} is an existing file; give a directory for the synthetic Signals data")
    try:
        own = json.loads((out / "synth.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        own = False
    if not own and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not eraflow's synthetic Signals data (no synth.json of kind {KIND}); "
                          "give a new directory: eraflow replaces only its own output")


def write_signals_synthetic(out_dir: str | Path, spec: SignalsSynthSpec,
                            progress: Callable[[int], None] | None = None) -> dict:
    """Write prices, targets, neutralizers, sample_weights, meta_model and universe parquet files and synth.json.

    Returns the synth.json record: spec, files, row counts, calendar facts (Fridays, holidays, tickers starting
    late / ending early) and the planted momentum's per-Friday Spearman of the trailing 20-day return with the
    target (``momentum_spearman``, its mean and positive share). ``progress(rows)`` is called per simulated week.
    """
    validate_spec(spec)
    out = Path(out_dir)
    check_out_dir(out)
    rng = np.random.default_rng([spec.seed, 15])
    cal = make_calendar(spec.weeks, rng)
    first, last = listing_days(spec.tickers, len(cal.days), cal, rng)
    beta = rng.normal(1.0, 0.3, spec.tickers)
    loadings = rng.standard_normal((spec.tickers, spec.neutralizers - 2))
    log_price = simulate_log_prices(spec, cal, beta, loadings, rng, progress)
    d = np.arange(len(cal.days))[:, None]
    alive = (first <= d) & (d <= last)
    close = np.where(alive, np.round(np.exp(log_price), 4), np.nan)
    base_volume = np.exp(rng.normal(math.log(1e6), 1.0, spec.tickers))
    volume = np.where(alive, np.round(base_volume * np.exp(rng.normal(0.0, 0.4, close.shape))), 0).astype(np.int64)
    exposures = np.column_stack([np.ones(spec.tickers), beta, loadings])
    weekly = weekly_rows(spec, cal, close, volume, first, last, exposures, rng)
    tables = build_tables(spec, cal, close, volume, alive, weekly["rows"])
    out.mkdir(parents=True, exist_ok=True)  # only now: a failure above leaves no empty directory behind
    for name, table in tables.items():
        atomic_write_parquet(out / name, table)
    values = np.array(list(weekly["momentum"].values()))
    record = {
        "kind": KIND,
        "spec": asdict(spec),
        "files": [*FILES, "synth.json"],
        "rows": {name.removesuffix(".parquet"): table.num_rows for name, table in tables.items()},
        "tickers_starting_late": int((first > 0).sum()),
        "tickers_ending_early": int((last < len(cal.days) - 1).sum()),
        "fridays": {"first": str(cal.fridays[0]), "last": str(cal.fridays[-1]), "count": spec.weeks,
                    "with_target": len(values)},
        "holidays": [str(h) for h in cal.holidays],
        "horizon_weeks": HORIZON_WEEKS,
        "momentum_spearman_mean": float(values.mean()),
        "momentum_spearman_positive_share": float((values > 0).mean()),
        "momentum_spearman": weekly["momentum"],
    }
    atomic_write_json(out / "synth.json", record)
    return record


def build_tables(spec: SignalsSynthSpec, cal: Calendar, close: np.ndarray, volume: np.ndarray, alive: np.ndarray,
                 rows: dict) -> dict[str, pa.Table]:
    """The six parquet tables: prices sorted by (ticker, date), weekly files by (date, ticker)."""
    names = pa.array(ticker_names(spec.tickers), pa.string())
    ticker_of, day_of = np.nonzero(alive.T)  # ticker-major: each ticker's days in order
    prices = pa.table({"numerai_ticker": names.take(ticker_of),
                       "date": pa.array(cal.days[day_of], pa.date32()),
                       "close": pa.array(close[day_of, ticker_of], pa.float64()),
                       "volume": pa.array(volume[day_of, ticker_of], pa.int64())})

    def keyed(week: np.ndarray, ticker: np.ndarray, columns: dict) -> pa.Table:
        return pa.table({"date": pa.array(cal.fridays[week], pa.date32()),
                         "numerai_ticker": names.take(ticker), **columns})

    week, ticker = rows["week"], rows["ticker"]
    neutral = {f"neutralizer_{j}": pa.array(rows["neutralizers"][:, j], pa.float64())
               for j in range(spec.neutralizers)}
    live = rows["week"] == spec.weeks - 1
    return {
        "prices.parquet": prices,
        "targets.parquet": keyed(rows["t_week"], rows["t_ticker"],
                                 {"target": pa.array(rows["target"], pa.float64())}),
        "neutralizers.parquet": keyed(week, ticker, neutral),
        "sample_weights.parquet": keyed(week, ticker, {"sample_weight": pa.array(rows["weight"], pa.float64())}),
        "meta_model.parquet": keyed(week, ticker, {"prediction": pa.array(rows["meta"], pa.float64())}),
        "universe.parquet": pa.table({"numerai_ticker": names.take(ticker[live])}),
    }
