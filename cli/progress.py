"""Progress on stderr: rich bars on a terminal; for training, plain lines elsewhere (cron, CI, notebooks)."""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _RowsPerSecond(TextColumn):
    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return super().render(task) if speed is None else f"{speed:,.0f} rows/s"


@contextmanager
def row_progress(quiet: bool):
    """Yield a callback ``(stage, advance, total)``; a bar per stage on a TTY unless ``quiet``."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               _RowsPerSecond(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        tasks: dict[str, int] = {}

        def advance(stage: str, rows: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], total=total, advance=rows)

        yield advance


LOG_EVERY_SECONDS = 20.0  # off a terminal: a line per model start and end (and epoch), others at most this often


def _duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``1h05m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _corr(status) -> str:
    """The corr after the last round and the best; during a round (batch events) only the best so far."""
    if status.corr is None:
        return ""
    best = f"{status.best_corr:+.4f} at {status.unit} {status.best_round}"
    return f"best corr {best}" if status.event == "batch" else f"corr {status.corr:+.4f} (best {best})"


def _rounds_done(status) -> float:
    """Rounds the whole training has run, counting the current round's share of batches."""
    share = status.batch / status.batches if status.event == "batch" and status.batches else 0.0
    return status.done + share


def train_line(status) -> str:
    """One log line for a :class:`~eraflow.engine.models.train.TrainStatus`; a round is called
    ``status.unit`` (``round`` for boosting kinds, ``epoch`` for networks)."""
    head, unit = f"train {status.target} {status.model}:", status.unit
    if status.event == "start":
        stopping = f", early stopping on {status.stop_eras} eras" if status.stop_eras else ""
        return f"{head} up to {status.rounds} {unit}s on {status.train_eras} eras{stopping}"
    elapsed = f"{_duration(status.elapsed)} elapsed"
    if status.event == "end":
        if status.best_corr is None:
            return f"{head} done, {status.round} {unit}s, {elapsed}"
        return (f"{head} done at {unit} {status.round}, best corr {status.best_corr:+.4f} at {unit} "
                f"{status.best_round}, {elapsed}")
    done = _rounds_done(status)
    eta = status.elapsed / done * (status.total - done) if done else math.nan
    where = (f"{unit} {status.round + 1}/{status.rounds}, batch {status.batch}/{status.batches}"
             if status.event == "batch" else f"{unit} {status.round}/{status.rounds}")
    parts = [where, _corr(status), elapsed,
             f"ETA {_duration(eta)} ({status.done}/{status.total} {unit}s in all)" if math.isfinite(eta) else ""]
    return f"{head} " + ", ".join(p for p in parts if p)


class _TrainLog:
    """Training progress as plain lines on stderr: every start and end, every epoch of a network
    (with its validation corr), and other rounds and batches at most every ``every`` seconds."""

    def __init__(self, every: float):
        self.every, self.last = every, -math.inf

    def __call__(self, status) -> None:
        now = time.monotonic()
        throttled = status.event == "batch" or (status.event == "round" and status.unit == "round")
        if throttled and now - self.last < self.every:
            return
        self.last = now
        click.echo(train_line(status), err=True)


class _TrainBars:
    """On a terminal: a bar of the whole training's rounds with the early-stopping corr, and for
    kinds that report batches a second bar of the current round's batches (reset each round)."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.rounds = bar.add_task("training", total=None, corr="", unit="rounds")
        self.batches = bar.add_task("", total=None, corr="", unit="batches", visible=False)
        self.current: tuple | None = None  # (target, model, round) the batch bar shows

    def __call__(self, status) -> None:
        corr = "" if status.corr is None else f"corr {status.corr:+.4f} (best {status.best_corr:+.4f})"
        self.bar.update(self.rounds, completed=status.done, total=status.total, corr=corr, unit=f"{status.unit}s",
                        description=f"{status.target} {status.model}")
        if status.event == "batch":
            self.show_batches(status)
        elif status.event == "end":
            self.bar.update(self.batches, visible=False)
            self.bar.console.print(train_line(status), highlight=False)

    def show_batches(self, status) -> None:
        key = (status.target, status.model, status.round)
        if key != self.current:
            self.current = key
            self.bar.reset(self.batches, total=status.batches, visible=True,
                           description=f"  {status.unit} {status.round + 1}")
        self.bar.update(self.batches, completed=status.batch, total=status.batches)


@contextmanager
def train_progress(quiet: bool):
    """Yield a listener of training status (None when ``quiet``): on a terminal bars of the rounds
    (epochs) with the early-stopping corr and an ETA, and of the current epoch's batches; otherwise
    log lines (:data:`LOG_EVERY_SECONDS`)."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield _TrainLog(LOG_EVERY_SECONDS)
        return
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[corr]}"), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        yield _TrainBars(bar)


@contextmanager
def training_log(quiet: bool):
    """Training lines off a terminal (as ``train_progress``); None on a terminal, where the row bars
    of :func:`row_progress` already show (two live bars cannot share a terminal) or when ``quiet``."""
    yield None if quiet or sys.stderr.isatty() else _TrainLog(LOG_EVERY_SECONDS)
