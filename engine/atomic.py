"""Atomic writes: build aside under a temporary sibling name, fsync, then rename into place."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from .errors import InputError

TMP_MARK = ".tmp-"  # sibling temporaries are named <name>.tmp-<pid>-<random>
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux ≥ 3.15)
_AT_FDCWD = -100


def atomic_writer_path(path: Path) -> Path:
    """A fresh temporary sibling of ``path`` in the same directory (same filesystem)."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def fsync_path(path: Path) -> None:
    """Flush a file or directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_writer_path(path: Path) -> Path:
    """The temporary sibling of a file about to be written; InputError if its directory is missing."""
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: there is no directory {path.parent}")
    return atomic_writer_path(path)


def _check_target(path: Path, kind: str | None) -> None:
    """Right before the rename: ``path`` must still be absent or eraflow's own ``kind`` output."""
    if kind is not None:
        from .outputs import check_replaceable

        check_replaceable(path, kind)


def _write_errors(path: Path, kind: str | None):
    from .outputs import write_errors

    return write_errors(path, kind or "file")


def atomic_write_bytes(path: Path, data: bytes, kind: str | None = None) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename; ``kind``: check the target first."""
    tmp = _file_writer_path(path)
    try:
        with _write_errors(path, kind), open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _check_target(path, kind)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def replace_dir(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; an existing target is replaced atomically and removed.

    On Linux the two directories are exchanged in one step, so ``target`` always names a complete
    directory. Elsewhere the old one is renamed aside first (a crash in between leaves no target).
    """
    from .outputs import built_dir_kind, check_replaceable

    kind = built_dir_kind(new)
    if kind is not None:
        check_replaceable(target, kind)
    if not target.exists():
        new.rename(target)
    elif _exchange(new, target):
        shutil.rmtree(new)
    else:
        old = atomic_writer_path(target)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
    fsync_path(target.parent)


def writer_pid(tmp_name: str) -> int | None:
    """The pid in a temporary's name ``<name>.tmp-<pid>-<hex>``; None when it has no such form."""
    _, mark, rest = tmp_name.rpartition(TMP_MARK)
    pid, _, token = rest.partition("-")
    return int(pid) if mark and pid.isdigit() and int(pid) > 0 and token else None


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporary siblings of ``path`` whose writer process has exited (or is this one).

    A process writes one output path at a time, so its own leftovers are stale too; those of
    another live process are kept, and so are names without a pid.
    """
    prefix = f"{path.name}{TMP_MARK}"
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in names:
        pid = writer_pid(name)
        if pid is None or (pid != os.getpid() and process_alive(pid)):
            continue
        p = path.parent / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def atomic_write_parquet(path: Path, table, kind: str | None = None) -> None:
    """Write a pyarrow table to ``path`` under a temporary name, then rename.

    ``kind`` (predictions, per_era, submission): the footer records it as eraflow's output, and
    the target is checked to be absent or eraflow's own output of that kind before the rename.
    """
    import pyarrow.parquet as pq

    tmp = _file_writer_path(path)
    try:
        if kind is not None:
            from .outputs import mark_table

            table = mark_table(table, kind)
        with _write_errors(path, kind):
            pq.write_table(table, tmp)
        _check_target(path, kind)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
