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


LOG_EVERY_SECONDS = 20.0  # off a terminal: a line per model start and end, and a round line at most this often


def _duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``1h05m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _corr(status) -> str:
    if status.corr is None:
        return ""
    return f"corr {status.corr:+.4f} (best {status.best_corr:+.4f} at round {status.best_round})"


def train_line(status) -> str:
    """One log line for a :class:`~eraflow.engine.models.train.TrainStatus`."""
    head = f"train {status.target} {status.model}:"
    if status.event == "start":
        stopping = f", early stopping on {status.stop_eras} eras" if status.stop_eras else ""
        return f"{head} up to {status.rounds} rounds on {status.train_eras} eras{stopping}"
    elapsed = f"{_duration(status.elapsed)} elapsed"
    if status.event == "end":
        if status.best_corr is None:
            return f"{head} done, {status.round} rounds, {elapsed}"
        return (f"{head} done at round {status.round}, best corr {status.best_corr:+.4f} at round "
                f"{status.best_round}, {elapsed}")
    eta = status.elapsed / status.done * (status.total - status.done) if status.done else math.nan
    parts = [f"round {status.round}/{status.rounds}", _corr(status), elapsed,
             f"ETA {_duration(eta)} ({status.done}/{status.total} rounds in all)" if math.isfinite(eta) else ""]
    return f"{head} " + ", ".join(p for p in parts if p)


class _TrainLog:
    """Training progress as plain lines on stderr, a round line at most every ``every`` seconds."""

    def __init__(self, every: float):
        self.every, self.last = every, -math.inf

    def __call__(self, status) -> None:
        now = time.monotonic()
        if status.event == "round" and now - self.last < self.every:
            return
        self.last = now
        click.echo(train_line(status), err=True)


@contextmanager
def train_progress(quiet: bool):
    """Yield a listener of training status (None when ``quiet``): on a terminal a bar of boosting
    rounds with the early-stopping corr and an ETA, otherwise log lines (:data:`LOG_EVERY_SECONDS`)."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield _TrainLog(LOG_EVERY_SECONDS)
        return
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("rounds"),
               TextColumn("{task.fields[corr]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("training", total=None, corr="")

        def show(status) -> None:
            corr = "" if status.corr is None else f"corr {status.corr:+.4f} (best {status.best_corr:+.4f})"
            bar.update(task, completed=status.done, total=status.total, corr=corr,
                       description=f"{status.target} {status.model}")
            if status.event == "end":
                bar.console.print(train_line(status), highlight=False)

        yield show


@contextmanager
def training_log(quiet: bool):
    """Training lines off a terminal (as ``train_progress``); None on a terminal, where the row bars
    of :func:`row_progress` already show (two live bars cannot share a terminal) or when ``quiet``."""
    yield None if quiet or sys.stderr.isatty() else _TrainLog(LOG_EVERY_SECONDS)
