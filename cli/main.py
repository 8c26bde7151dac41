"""The ``eraflow`` click group: commands loaded only when they run, errors on one line (exit 2).

``eraflow --help`` and ``eraflow ingest`` must not pay for LightGBM, scikit-learn, matplotlib or
DuckDB: each command's module is imported when that command is looked up, and ``--help`` lists
the short help kept in :data:`COMMANDS` (a test checks it equals each command's own).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from eraflow.engine.errors import EraflowError, first_line

# name → (module, attribute, short help shown by `eraflow --help`), in the order of the journey
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("eraflow.cli.data", "synth", "Write Numerai v5-shaped synthetic data with a planted signal into OUT_DIR."),
    "download": ("eraflow.cli.numerai", "download", "Download Numerai dataset files into OUT_DIR, resuming interrupted downloads."),
    "signals": ("eraflow.cli.signals", "signals", "Numerai Signals: technical features from a daily price table."),
    "ingest": ("eraflow.cli.data", "ingest", "Stream parquet SRC files into an era-sorted store at STORE (a directory)."),
    "info": ("eraflow.cli.data", "info", "Summarise a store: rows, eras, features, feature sets, targets with NaN share, size."),
    "cache": ("eraflow.cli.cache", "cache", "The LightGBM Dataset cache of a store: list or clean it."),
    "features": ("eraflow.cli.features", "features", "Engineer and select features of a store: per-group row statistics, named feature sets."),
    "search": ("eraflow.cli.search", "search", "Search a model's parameters by era CV, locally or on a Dask cluster."),
    "train": ("eraflow.cli.models", "train", "Train models from a store: one per target (of kind --model), plus a rank ensemble."),
    "ensemble": ("eraflow.cli.ensemble", "ensemble", "Combine trained model directories of any kinds into one model, per era: rank mean or stacked weights."),
    "predict": ("eraflow.cli.models", "predict", "Predict every row of a store (or some eras) with a trained model."),
    "score": ("eraflow.cli.scores", "score", "Score prediction columns era by era: numerai_corr, MMC, feature exposure."),
    "evaluate": ("eraflow.cli.scores", "evaluate", "Evaluate prediction columns era by era and write a report with plots."),
    "neutralize": ("eraflow.cli.scores", "neutralize", "Neutralize prediction columns era by era against the store's features."),
    "live": ("eraflow.cli.live", "live", "Predict Numerai's live era with a trained model, ready to submit."),
    "export": ("eraflow.cli.live", "export", "Export a model as a cloudpickled predict(live_features, live_benchmark_models) for Numerai's model upload."),
    "submit": ("eraflow.cli.numerai", "submit", "Validate PREDS (parquet or CSV: id, prediction) as Numerai does, then upload it for --model."),
    "churn": ("eraflow.cli.churn", "churn", "Churn and neutral churn of a submission against previous ones, and the payout penalty."),
    "upload-model": ("eraflow.cli.numerai", "upload_model", "Upload a pickle from `eraflow export` to Numerai's model upload for --model."),
    "run": ("eraflow.cli.pipeline", "run", "Run a pipeline file: data, ingest, train, post-process, evaluate, live, submit."),
    "runs": ("eraflow.cli.runs", "runs", "The ledger of runs (a DuckDB file; plain SQL works on it too)."),
    "bench": ("eraflow.cli.bench", "bench", "Benchmarks that print ratios against baselines measured in the same run."),
}
# commands whose work is LightGBM or numba: they take --threads N
COMPUTE = frozenset({"ingest", "features", "search", "train", "ensemble", "predict", "score", "evaluate", "neutralize",
                     "churn", "live", "export", "run"})
# errors of these libraries are about the data or parameters given: one line, exit 2
LIBRARY_ERRORS = ("polars", "pyarrow", "lightgbm", "duckdb")


def _fail(message: str, status: int):
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def _set_threads(_ctx, _param, value):
    if value is not None:
        if value < 0:
            raise click.BadParameter("must be ≥ 0 (0: each library's default)")
        from eraflow.engine.threads import set_threads

        set_threads(value)
    return value


def threads_option() -> click.Option:
    return click.Option(["--threads"], type=int, expose_value=False, callback=_set_threads, is_eager=True,
                        help="Threads for LightGBM, numba and BLAS [default: all cores]. On a busy machine "
                             "fewer threads are often faster.")


class _WarningEcho(logging.Handler):
    """Library warnings (eraflow.engine.notices) as ``warning: …`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


class EraflowGroup(click.Group):
    """Loads a command's module only when it runs; errors are one line on stderr, never a traceback."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        import importlib

        command = getattr(importlib.import_module(module), attr)
        if name in COMPUTE and not any(p.name == "threads" for p in command.params):
            command.params.append(threads_option())
        return command

    def format_commands(self, ctx, formatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        limit = formatter.width - 6 - max(len(n) for n, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(n, click.Command(n, help=h).get_short_help_str(limit)) for n, h in rows])

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        logger = logging.getLogger("eraflow")
        handler = _WarningEcho(logging.WARNING)
        logger.addHandler(handler)
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
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in LIBRARY_ERRORS and not os.environ.get("ERAFLOW_DEBUG"):
                _fail(f"{type(exc).__name__}: {first_line(exc)} (a damaged or unexpected input?)", 2)
            if os.environ.get("ERAFLOW_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {first_line(exc)} (set ERAFLOW_DEBUG=1 for the traceback)", 1)
        except BaseException as exc:  # Rust panics from polars (pyo3 PanicException) derive from BaseException
            if type(exc).__name__ != "PanicException" or os.environ.get("ERAFLOW_DEBUG"):
                raise
            _fail(f"a reader failed on the data ({first_line(exc)}); the input file may be damaged", 2)
        finally:
            logger.removeHandler(handler)


def _print_version(ctx, _param, value):
    """``--version``: the installed version, looked up only then (importlib.metadata: ~0.1 s of every command)."""
    if value and not ctx.resilient_parsing:
        from eraflow.engine.version import eraflow_version

        click.echo(f"eraflow, version {eraflow_version()}")
        ctx.exit()


@click.group(cls=EraflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def cli():
    """eraflow: Numerai-style era data, streamed into memory-mapped int8 stores.

    \b
    Example:
      eraflow synth data/ --eras 120 --rows-per-era 400 --features 300
      eraflow ingest data/train.parquet data/validation.parquet store/ --features-json data/features.json
      eraflow info store/
    """


def main() -> None:
    """Console entry point."""
    from eraflow.engine.threads import choose_openmp_waits

    choose_openmp_waits()
    cli.main()
