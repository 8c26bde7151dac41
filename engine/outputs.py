"""Output paths: eraflow replaces only its own output of the same kind.

Every writer calls :func:`check_output_dir` or :func:`check_output_file` before its work; the
atomic writers of :mod:`eraflow.engine.atomic` check the target again right before the final
rename. An existing path is replaced only when it is eraflow's own output of that kind:

================  ==============================================================================
kind              what eraflow recognises as its own
================  ==============================================================================
store             a directory whose ``meta.json`` has ``"format": "eraflow-store"``
model             a directory with ``model.json`` (an object with ``features`` and ``targets``)
report            a directory with ``metrics.json`` (an object with ``summary`` and ``per_era``)
predictions       a parquet file whose footer metadata has ``eraflow: predictions`` (or, written
                  before the marker, exactly ``id``, ``era`` and float32 columns, no pandas metadata)
per_era           a parquet file whose footer metadata has ``eraflow: per_era``
signals_features  a parquet file whose footer metadata has ``eraflow: signals_features``
submission        parquet with ``eraflow: submission``; CSV whose first line is ``id,prediction``
export            a pickle holding the string constant :data:`EXPORT_MARK` (opcodes read, never loaded)
plot              a PNG with the text chunk ``eraflow: plot``
================  ==============================================================================

An empty directory is taken for a directory output. Always refused, with nothing touched: a
symbolic link, the current directory or one above it, an output that is (or holds) one of the
command's inputs, an output inside an eraflow store, model or report directory (it would go when
that one is rebuilt), a directory where a file goes and the reverse, a file output whose folder
is missing, and a folder eraflow cannot write. Each guard first deletes temporaries of the path left
by writers that have exited (:func:`eraflow.engine.atomic.remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import pickletools
import re
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import TMP_MARK, atomic_writer_path, fsync_path, remove_stale_temporaries
from .errors import OutputError

MARK_KEY = b"eraflow"  # parquet footer key-value metadata: the kind of file eraflow wrote
EXPORT_MARK = "eraflow-output:export"  # string constant in every exported pickle (an attribute of predict)
PNG_MARK = {"eraflow": "plot"}  # PNG tEXt chunk (matplotlib savefig metadata)
SUBMISSION_CSV_HEADER = "id,prediction"
STORE_FORMAT = "eraflow-store"  # store.FORMAT, kept here so this module stays light to import
LIGHTGBM_WRITE_ERROR = re.compile(r"Cannot write .* to (?P<file>.+), wrote \d+ of \d+ bytes")
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}

DIR_KINDS = {  # kind → what marks it as eraflow's own
    "store": f"meta.json of format {STORE_FORMAT!r}",
    "model": "model.json",
    "report": "metrics.json",
}
FILE_KINDS = {
    "predictions": "eraflow's predictions marker",
    "per_era": "eraflow's per-era scores marker",
    "signals_features": "eraflow's Signals features marker",
    "submission": "eraflow's submission marker (a CSV: the header id,prediction)",
    "export": "eraflow's export marker",
    "plot": "eraflow's plot marker",
}
LABELS = {"per_era": "per-era scores file", "export": "model pickle", "predictions": "predictions file",
          "submission": "submission file", "signals_features": "Signals features file"}


def _label(kind: str) -> str:
    return LABELS.get(kind, kind)


# -- signatures ----------------------------------------------------------------------------------

def _is_store(path: Path) -> bool:
    try:
        return json.loads((path / "meta.json").read_text()).get("format") == STORE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _parquet_kind(path: Path) -> str | None:
    """The kind in a parquet footer's eraflow marker (read from the footer only); ``predictions``
    also for a file of eraflow's earlier predictions writer (see :func:`_is_legacy_predictions`)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # noqa: BLE001 — not parquet, damaged: not ours
        return None
    marked = (schema.metadata or {}).get(MARK_KEY, b"").decode(errors="replace")
    return marked or ("predictions" if _is_legacy_predictions(schema) else None)


def _is_legacy_predictions(schema) -> bool:
    """A file of eraflow's predictions writer before markers: exactly ``id`` and ``era`` strings then
    float32 columns, written by pyarrow without pandas metadata (``DataFrame.to_parquet`` adds it)."""
    import pyarrow as pa

    if schema.metadata or schema.names[:2] != ["id", "era"] or len(schema) < 3:
        return False
    return (all(pa.types.is_string(schema.field(n).type) for n in ("id", "era"))
            and all(schema.field(n).type == pa.float32() for n in schema.names[2:]))


def _json_has(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` is a JSON object with every key of ``keys`` (what eraflow writes there)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in keys)


def _is_submission_csv(path: Path) -> bool:
    with open(path, "rb") as fh:
        first = fh.readline(256)
    return first.rstrip(b"\r\n").decode(errors="replace") == SUBMISSION_CSV_HEADER


def _is_export_pickle(path: Path) -> bool:
    """True when the pickle's opcodes hold :data:`EXPORT_MARK`; the file is scanned, never unpickled."""
    try:
        with open(path, "rb") as fh:
            return any(arg == EXPORT_MARK for _, arg, _ in pickletools.genops(fh))
    except Exception:  # not a pickle
        return False


def _png_text_chunks(path: Path) -> Iterator[tuple[str, str]]:
    """(keyword, text) of each tEXt chunk of a PNG; nothing for other files."""
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return
        while header := fh.read(8):
            if len(header) < 8:
                return
            size, name = struct.unpack(">I4s", header)
            if name == b"tEXt":
                key, _, text = fh.read(size).partition(b"\0")
                yield key.decode("latin-1"), text.decode("latin-1")
                fh.seek(4, os.SEEK_CUR)
            elif name == b"IEND":
                return
            else:
                fh.seek(size + 4, os.SEEK_CUR)


def is_own_output(path: Path, kind: str) -> bool:
    """Whether the existing ``path`` is eraflow's own output of ``kind`` (see the module doc)."""
    if kind == "store":
        return _is_store(path)
    if kind == "model":
        return _json_has(path / "model.json", ("features", "targets"))
    if kind == "report":
        return _json_has(path / "metrics.json", ("summary", "per_era"))
    if kind == "submission" and path.suffix.lower() == ".csv":
        return _is_submission_csv(path)
    if kind == "export":
        return _is_export_pickle(path)
    if kind == "plot":
        return dict(_png_text_chunks(path)).items() >= PNG_MARK.items()
    return _parquet_kind(path) == kind


def built_dir_kind(path: Path) -> str | None:
    """The kind of a directory eraflow just built aside (store, model, report), from its files."""
    for kind in DIR_KINDS:
        if is_own_output(path, kind):
            return kind
    return None


# -- guards --------------------------------------------------------------------------------------

def check_replaceable(path: Path, kind: str) -> None:
    """OutputError unless ``path`` is absent or eraflow's own ``kind`` output (an empty directory for a directory kind).

    The atomic writers call this again right before their final rename.
    """
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link (to {os.readlink(path)}); give the real path, eraflow "
                          "does not write through links")
    if not path.exists():
        return
    if kind in DIR_KINDS:
        if not path.is_dir():
            raise OutputError(f"{path} is an existing file; give a directory path for the {_label(kind)}")
        if not is_own_output(path, kind) and any(path.iterdir()):
            raise OutputError(f"{path} exists and is not an eraflow {_label(kind)} (no {DIR_KINDS[kind]}); give a "
                              "new directory: eraflow replaces only its own output")
    else:
        if path.is_dir():
            raise OutputError(f"{path} is a directory; give a file path for the {_label(kind)}")
        if not is_own_output(path, kind):
            raise OutputError(f"{path} exists and is not a {_label(kind)} eraflow wrote (no {FILE_KINDS[kind]}); "
                              "give a new file name or delete it: eraflow replaces only its own output")


def _check_not_inside_output(path: Path, kind: str) -> None:
    """An output inside an eraflow store, model or report directory would be deleted with it when
    that directory is rebuilt: refused."""
    for parent in path.resolve().parents:
        for outer in DIR_KINDS:
            if is_own_output(parent, outer):
                raise OutputError(f"{path} is inside the eraflow {_label(outer)} {parent}, which is replaced whole "
                                  f"when it is rebuilt; write the {_label(kind)} elsewhere")


def _check_inputs(path: Path, kind: str, inputs: Iterable) -> None:
    """An output that is one of the command's inputs, or a directory holding one, is refused."""
    out = path.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source == out:
            raise OutputError(f"{path} is an input of this command; write the {_label(kind)} to another path")
        if out in source.parents:
            raise OutputError(f"{path} holds the input {given}; write the {_label(kind)} to another directory")


def _check_folder(path: Path, create: bool) -> None:
    """The folder the output goes in exists (or, with ``create``, can be made) and can be written."""
    folder = path.parent
    if not create and not folder.is_dir():
        raise OutputError(f"cannot write {path}: there is no directory {folder}; create it first")
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is a file, not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: the directory {folder} is not writable")


def check_output_dir(path: str | Path, kind: str, inputs: Iterable = ()) -> Path:
    """Check that the directory output ``path`` of ``kind`` may be written; run before any work.

    Deletes temporaries of ``path`` left by exited writers. Missing parent folders are allowed
    (the writer creates them). Returns ``path`` as a Path; OutputError says why it may not.

    Example: ``check_output_dir("models/m", "model", inputs=[store_path])``
    """
    path = Path(path)
    out = path.resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise OutputError(f"{path} is the current directory or one above it; write the {_label(kind)} to a new "
                          f"directory such as {path / kind}")
    return _checked(path, kind, inputs, create_folder=True)


def check_output_file(path: str | Path, kind: str, inputs: Iterable = ()) -> Path:
    """Check that the file output ``path`` of ``kind`` may be written; run before any work.

    Its folder must exist. Deletes temporaries of ``path`` left by exited writers. Returns
    ``path`` as a Path; OutputError says why it may not.

    Example: ``check_output_file("preds.parquet", "predictions", inputs=[model_dir, store_path])``
    """
    return _checked(Path(path), kind, inputs, create_folder=False)


def _checked(path: Path, kind: str, inputs: Iterable, create_folder: bool) -> Path:
    """The checks every output gets, then its dead writers' temporaries removed; returns ``path``."""
    _check_inputs(path, kind, inputs)
    _check_not_inside_output(path, kind)
    check_replaceable(path, kind)
    _check_folder(path, create=create_folder)
    remove_stale_temporaries(path)
    return path


def _is_output_file(filename, path: Path) -> bool:
    """Whether an error's file name is ``path``, one of its temporaries, or inside them (None: unknown, so yes)."""
    if filename is None:
        return True
    name = Path(os.fsdecode(filename)).absolute()
    out = path.absolute()
    return any(p.parent == out.parent and (p.name == out.name or p.name.startswith(out.name + TMP_MARK))
               for p in (name, *name.parents))


class FailedWriteError(OutputError):
    """Writing an output failed (disk full, read-only…); the message names the output, not its temporary."""

    def __init__(self, message: str, path: Path, reason: str):
        super().__init__(message)
        self.path, self.reason = path, reason


def _failed_write_reason(exc: BaseException, path: Path) -> str | None:
    """Why writing ``path`` failed, when ``exc`` is a failed write of it (disk full, read-only…); else None."""
    if isinstance(exc, FailedWriteError) and _is_output_file(exc.path, path):
        return exc.reason  # a file written inside the output's temporary directory
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS and _is_output_file(exc.filename, path):
        return os.strerror(exc.errno).lower()
    written = LIGHTGBM_WRITE_ERROR.match(str(exc)) if type(exc).__name__ == "LightGBMError" else None
    if written and _is_output_file(written["file"], path):
        return f"LightGBM could not write all of {Path(written['file']).name} (is the disk full?)"
    return None


@contextmanager
def write_errors(path: str | Path, kind: str):
    """Turn a failed write of ``path`` inside the block (disk full, quota, read-only…) into one OutputError line."""
    try:
        yield
    except Exception as exc:
        reason = _failed_write_reason(exc, Path(path))
        if reason is None:
            raise
        raise FailedWriteError(f"cannot write the {_label(kind)} {path}: {reason}; an existing one is left "
                               "as it was", Path(path), reason) from None


def translates_write_errors(kind: str, path_arg: str):
    """Decorator: failed writes of the output named by argument ``path_arg`` become one OutputError line."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def writer(*args, **kwargs):
            with write_errors(signature.bind(*args, **kwargs).arguments[path_arg], kind):
                return fn(*args, **kwargs)
        return writer
    return decorate


# -- markers -------------------------------------------------------------------------------------

def mark_table(table, kind: str):
    """A pyarrow table whose schema metadata names ``kind`` as eraflow's output (kept in the parquet footer)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), MARK_KEY: kind.encode()})


def save_plot(fig, path: str | Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG carrying eraflow's plot marker, under a temporary name, then rename."""
    path = Path(path)
    tmp = atomic_writer_path(path)
    try:
        fig.savefig(tmp, dpi=dpi, format="png", metadata=PNG_MARK)
        check_replaceable(path, "plot")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
