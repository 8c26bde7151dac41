"""The ``eraflow`` click group and its error handling: one line on stderr, exit status 2."""

from __future__ import annotations

import os
import sys

import click

from eraflow.engine.errors import EraflowError
from eraflow.engine.version import eraflow_version

from .bench import bench
from .data import info, ingest, synth
from .live import export, live
from .models import predict, train
from .numerai import download, submit
from .pipeline import run
from .runs import runs
from .scores import evaluate, neutralize, score


def _fail(message: str, status: int):
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


class EraflowGroup(click.Group):
    """A group whose errors are one line on stderr: exit 2 for bad input, never a traceback."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            return super().main(args=args, prog_name=prog_name or "eraflow", standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _fail("aborted", 130)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _fail(exc.format_message().replace("\n", " ") + hint, 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (EraflowError, OSError) as exc:
            _fail(str(exc).replace("\n", " "), 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # a bug: still one line; the traceback on request
            if os.environ.get("ERAFLOW_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set ERAFLOW_DEBUG=1 for the traceback)", 1)


@click.group(cls=EraflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(eraflow_version(), prog_name="eraflow")
def cli():
    """eraflow: Numerai-style era data, streamed into memory-mapped int8 stores.

    \b
    Example:
      eraflow synth data/ --eras 120 --rows-per-era 400 --features 300
      eraflow ingest data/train.parquet data/validation.parquet store/ --features-json data/features.json
      eraflow info store/
    """


for command in (synth, ingest, info, score, evaluate, neutralize, train, predict, live, export, run, runs, bench, download,
                submit):
    cli.add_command(command)


def main() -> None:
    """Console entry point."""
    cli.main()
