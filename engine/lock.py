"""An exclusive, non-blocking lock on a path, held through a sibling ``<name>.lock`` file.

The lock is an ``flock`` on an open file: the kernel releases it when the holder exits or is
killed, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, LockedError


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _open_lock_file(lp: Path) -> int:
    """Open (or create) the lock file itself: never through a symlink, never a file with other names.

    The holder's pid is written into it after truncation, so a lock path that led to another file
    would destroy that file's contents.
    """
    try:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"lock file {lp} is a symbolic link; remove it (eraflow creates its own)") from None
        raise InputError(f"cannot open lock file {lp}: {exc.strerror}; check that {lp.parent} is a writable "
                         "directory") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else "a hard link to another file"
        raise InputError(f"lock file {lp} is {what}; remove it (eraflow creates its own)")
    return fd


@contextmanager
def exclusive_lock(path: Path):
    """Hold the lock for ``path`` inside the block; LockedError at once if another process has it."""
    fd = _open_lock_file(lock_path(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockedError(f"{path} is being written by another process (pid {holder}); "
                              "wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
