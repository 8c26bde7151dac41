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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _file_writer_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
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


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporary siblings of ``path`` left by killed writers; call only while holding its lock."""
    removed = []
    for p in path.parent.glob(f"{path.name}{TMP_MARK}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def atomic_write_parquet(path: Path, table) -> None:
    """Write a pyarrow table to ``path`` under a temporary name, then rename."""
    import pyarrow.parquet as pq

    tmp = _file_writer_path(path)
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
