"""Options and small helpers shared by the commands; light to import (no engine code)."""

from __future__ import annotations

import json
import shlex
import sys

import click

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


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
