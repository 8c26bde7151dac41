"""Options and small helpers shared by the commands; light to import (of the engine only light modules)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable

import click

from eraflow.engine.cluster.client import SCHEDULER_TIMEOUT

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def cluster_options(f: Callable) -> Callable:
    """Click options ``--workers N``, ``--scheduler ADDRESS`` and ``--scheduler-timeout SECONDS``
    (parameters ``workers``, ``scheduler``, ``scheduler_timeout``); pass them to
    :func:`~eraflow.engine.cluster.client.open_client`."""
    options = [
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Run on a local Dask cluster of N worker processes (needs eraflow[dask])."),
        click.option("--scheduler", metavar="ADDRESS", default=None,
                     help="Run on the Dask cluster whose scheduler is at ADDRESS, e.g. tcp://10.0.0.5:8786; every "
                          "worker must see the store at the same path."),
        click.option("--scheduler-timeout", type=click.FloatRange(min=0, min_open=True), default=SCHEDULER_TIMEOUT,
                     show_default=True, metavar="SECONDS", help="Seconds to wait for the scheduler and a worker."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


era_boost_option = click.option(
    "--era-boost", "era_boost", metavar="SPEC",
    help="lgbm/xgb: after the first fit, add trees fit on only the training eras it fits worst, e.g. "
         "proportion=0.5,steps=10[,trees=N]: STEPS times, TREES trees on the PROPORTION of eras of lowest per-era "
         "corr [trees: n_estimators/10].")


def csv_list(value: str | None) -> list[str] | None:
    """``"a, b,"`` → ``["a", "b"]``; None stays None."""
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def command_line() -> str:
    """The command as typed, for the ledger."""
    return shlex.join(["eraflow", *sys.argv[1:]])


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=1))


def human_size(n: float) -> str:
    """Bytes as ``512 B``, ``1.5 KiB`` … ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""
