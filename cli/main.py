"""The ``eraflow`` click group and its error handling: one line on stderr, exit status 2."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import click

from eraflow.engine.errors import EraflowError

from .data import info, ingest, synth


def _version() -> str:
    try:
        return version("eraflow")
    except PackageNotFoundError:
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), prog_name="eraflow")
def cli():
    """eraflow: Numerai-style era data, streamed into memory-mapped int8 stores.

    \b
    Example:
      eraflow synth data/ --eras 120 --rows-per-era 400 --features 300
      eraflow ingest data/train.parquet data/validation.parquet store/ --features-json data/features.json
      eraflow info store/
    """


for command in (synth, ingest, info):
    cli.add_command(command)


def fail(message: str, status: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: eraflow errors and usage errors → one line and exit 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="eraflow", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        fail(exc.format_message().replace("\n", " ") + hint, 2)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except (EraflowError, OSError) as exc:
        fail(str(exc).replace("\n", " "), 2)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # a bug: still one line, traceback on request
        if os.environ.get("ERAFLOW_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set ERAFLOW_DEBUG=1 for the traceback)", 1)
