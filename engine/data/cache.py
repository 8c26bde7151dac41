"""The LightGBM Dataset cache of a store: checksummed entries, a size budget, list and clean.

An entry is two files with the same stem::

    lgb-<key>.bin    a LightGBM binary: the binned features of some rows (no labels: every use
                     sets the store's labels and weights after loading)
    lgb-<key>.json   its record: bytes, sha256, rows, features, eras, created, last used, command

The record is written (atomically) after the binary is renamed into place, and an entry is used
only when its binary has the record's size and sha256: anything else (a damaged or replaced
binary, a binary without a record) is removed and rebuilt, with a warning.

Entries live in ``STORE/cache/``; when the store cannot be written (a read-only mount) they go to
``$XDG_CACHE_HOME/eraflow/datasets/<store fingerprint>/`` (default ``~/.cache/eraflow/…``).
After each new entry, the least recently used entries of that directory are removed until it
holds at most :func:`budget_bytes` (the new entry is always kept).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..atomic import atomic_write_json, atomic_writer_path, process_alive, writer_pid
from ..notices import warn
from .store import EraStore

CACHE_DIR = "cache"  # inside the store directory; a rebuilt store starts with none
PREFIX, BINARY, RECORD = "lgb-", ".bin", ".json"
RECORD_FORMAT = "eraflow-dataset-cache"
# Budget per cache directory: a training set of every row of the store is about 0.5-1× the size
# of features.i8 as a LightGBM binary (4-bit bins for features with ≤ 15 values), so 2× keeps the
# final set and the CV folds of a `train --cv 4` run; the floor keeps small stores from evicting
# sets a run is about to reuse.
BUDGET_FACTOR = 2
BUDGET_FLOOR = 64 << 20
READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
RECORD_GRACE_SECONDS = 60  # a record is written just before its binary: younger lone records are in use
_fallback_warned: set[Path] = set()


@dataclass(frozen=True)
class CacheEntry:
    """A cached binary and its record (``None`` when it has none: an older eraflow's file)."""

    path: Path
    bytes: int
    mtime: float
    record: dict | None

    @property
    def last_used(self) -> datetime:
        """From the record; the file's modification time without one."""
        return _parse_time((self.record or {}).get("last_used")) or datetime.fromtimestamp(self.mtime, timezone.utc)

    def summary(self) -> dict:
        """The entry for people and scripts (``eraflow cache list --json``)."""
        record = self.record or {}
        return {"path": str(self.path), "bytes": self.bytes, "rows": record.get("rows"),
                "features": record.get("features"), "eras": record.get("eras"), "n_eras": record.get("n_eras"),
                "created": record.get("created"), "last_used": self.last_used.isoformat(timespec="seconds"),
                "command": record.get("command")}


@dataclass(frozen=True)
class Slot:
    """Where a new entry is being written: ``tmp`` (reserved, empty) is renamed to ``path``."""

    tmp: Path
    path: Path


# -- locations ----------------------------------------------------------------------------
def user_cache_dir(store: EraStore) -> Path:
    """``$XDG_CACHE_HOME/eraflow/datasets/<fingerprint>`` (``~/.cache`` when unset or relative)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "eraflow" / "datasets" / store.fingerprint


def cache_dirs(store: EraStore) -> list[Path]:
    """The store's own cache directory, then the user cache directory used when it is read-only."""
    return [store.path / CACHE_DIR, user_cache_dir(store)]


def budget_bytes(store: EraStore) -> int:
    """Most bytes one cache directory keeps: max(BUDGET_FACTOR × features.i8 bytes, BUDGET_FLOOR)."""
    return max(BUDGET_FACTOR * store.n_rows * len(store.feature_names), BUDGET_FLOOR)


def entry_path(directory: Path, key: str) -> Path:
    return directory / f"{PREFIX}{key}{BINARY}"


# -- reading ------------------------------------------------------------------------------
RECORD_TYPES = {"format": str, "bytes": int, "sha256": str, "rows": int, "features": int, "eras": list,
                "n_eras": int, "created": str, "last_used": str, "command": str}


def _read_record(path: Path) -> dict | None:
    """The record at ``path``; None when missing, unreadable, or not of :data:`RECORD_TYPES`."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    if not all(isinstance(record.get(k), t) for k, t in RECORD_TYPES.items()):
        return None
    return record if all(isinstance(e, str) for e in record["eras"]) else None


def directory_entries(directory: Path) -> list[CacheEntry]:
    """The entries of one cache directory (none when it does not exist), by file name."""
    entries = []
    for path in sorted(directory.glob(f"{PREFIX}*{BINARY}")):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        entries.append(CacheEntry(path, st.st_size, st.st_mtime, _read_record(path.with_suffix(RECORD))))
    return entries


def store_entries(store: EraStore) -> list[CacheEntry]:
    """Every entry of the store's cache, in the store's directory and the user cache directory."""
    return [e for d in cache_dirs(store) for e in directory_entries(d)]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _mismatch(path: Path) -> str | None:
    """Why the binary at ``path`` is not the one its record describes; None when it is."""
    size = path.stat().st_size
    record = _read_record(path.with_suffix(RECORD))
    if record is None:
        return "it has no valid record beside it"
    if size != record.get("bytes"):
        return f"it has {size} bytes, its record says {record.get('bytes')}"
    if file_sha256(path) != record.get("sha256"):
        return "its sha256 differs from the one recorded when it was written"
    return None


def find_entry(store: EraStore, key: str) -> Path | None:
    """The verified binary cached under ``key``, or None.

    A binary that fails the check is removed (with a warning) so that the caller rebuilds it.
    """
    for directory in cache_dirs(store):
        path = entry_path(directory, key)
        try:
            reason = _mismatch(path)
        except FileNotFoundError:
            continue
        if reason is None:
            return path
        discard(path, f"cached dataset {path} is damaged ({reason}); rebuilding it")
    return None


def discard(path: Path, message: str) -> None:
    """Warn with ``message`` and remove the entry at ``path`` (where it can be removed)."""
    warn(message)
    remove_entry(path)


def remove_entry(path: Path) -> str | None:
    """Remove a binary and its record; returns why a file could not be removed (None when both are gone)."""
    for p in (path, path.with_suffix(RECORD)):
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            return exc.strerror
    return None


def mark_used(path: Path) -> None:
    """Set the entry's last-used time to now (skipped where the cache cannot be written)."""
    record = _read_record(path.with_suffix(RECORD))
    if record is None:
        return
    try:
        atomic_write_json(path.with_suffix(RECORD), {**record, "last_used": _now()})
    except OSError:
        pass


# -- writing ------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat()  # microseconds: runs a moment apart still order


def _parse_time(value) -> datetime | None:
    """An ISO time with its zone from a record; None when absent or not one."""
    try:
        stamp = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo is not None else None


def process_command() -> str:
    """This process's command line, as recorded with each entry (``what made it``)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"


def _reserve_in(directory: Path, key: str) -> Slot:
    """A slot in ``directory``, after creating (and removing) its temporary to prove the directory writable."""
    directory.mkdir(parents=True, exist_ok=True)
    path = entry_path(directory, key)
    tmp = atomic_writer_path(path)
    with open(tmp, "xb"):
        pass
    tmp.unlink()  # LightGBM's save_binary will not write over an existing file
    return Slot(tmp, path)


def reserve(store: EraStore, key: str) -> Slot | None:
    """A writable place for a new entry: the store's cache, else the user cache directory.

    Falling back says so once per store; None (with a warning) when neither can be written.
    """
    store_dir, user_dir = cache_dirs(store)
    try:
        return _reserve_in(store_dir, key)
    except OSError as exc:
        if exc.errno not in READ_ONLY:
            warn(f"cannot write the dataset cache in {store_dir} ({exc.strerror}); training without it")
            return None
        if store.path not in _fallback_warned:
            _fallback_warned.add(store.path)
            warn(f"store {store.path} cannot be written ({exc.strerror}): caching LightGBM datasets in {user_dir}")
    try:
        return _reserve_in(user_dir, key)
    except OSError as exc:
        warn(f"cannot write the dataset cache in {user_dir} ({exc.strerror}); training without it")
        return None


def commit(slot: Slot, store: EraStore, record: dict) -> None:
    """Write the binary's record, put the binary in place, then prune the directory to budget."""
    if not slot.tmp.is_file() or slot.tmp.stat().st_size == 0:
        raise OSError(errno.EIO, f"LightGBM wrote no binary at {slot.tmp}")
    now = _now()
    full = {"format": RECORD_FORMAT, "file": slot.path.name, "bytes": slot.tmp.stat().st_size,
            "sha256": file_sha256(slot.tmp), **record, "created": now, "last_used": now,
            "command": process_command()}
    atomic_write_json(slot.path.with_suffix(RECORD), full)  # the record first: a binary without one is damaged
    try:
        slot.tmp.replace(slot.path)
    except BaseException:
        remove_entry(slot.path)
        raise
    prune(slot.path.parent, budget_bytes(store), keep=slot.path)


def abandon(slot: Slot, reason: str) -> None:
    """Drop a slot whose binary could not be written, saying why."""
    slot.tmp.unlink(missing_ok=True)
    warn(f"could not write the dataset cache {slot.path} ({reason}); training without it")


# -- pruning and cleaning -----------------------------------------------------------------

def leftovers(directory: Path) -> list[Path]:
    """Temporaries of writers that have ended (killed mid-write) and records without a binary."""
    found = []
    for p in sorted(directory.glob(f"{PREFIX}*")):
        pid = writer_pid(p.name)
        if pid is not None and not process_alive(pid):
            found.append(p)
        elif (pid is None and p.suffix == RECORD and not p.with_suffix(BINARY).exists()
              and time.time() - p.stat().st_mtime > RECORD_GRACE_SECONDS):
            found.append(p)
    return found


def file_bytes(paths: list[Path]) -> int:
    """Total size of the files (one removed meanwhile counts 0)."""
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _unlink_all(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


def least_recently_used_beyond(entries: list[CacheEntry], budget: int, keep: Path | None = None) -> list[CacheEntry]:
    """The entries to remove, oldest use first, so that the rest total at most ``budget`` bytes."""
    total = sum(e.bytes for e in entries)
    chosen = []
    for e in sorted(entries, key=lambda e: e.last_used):
        if total <= budget:
            break
        if e.path != keep:
            chosen.append(e)
            total -= e.bytes
    return chosen


def prune(directory: Path, budget: int, keep: Path | None = None) -> list[CacheEntry]:
    """Remove leftovers, then least recently used entries beyond ``budget``; returns those removed."""
    _unlink_all(leftovers(directory))
    removed = least_recently_used_beyond(directory_entries(directory), budget, keep)
    for e in removed:
        remove_entry(e.path)
    return removed


def plan_clean(entries: list[CacheEntry], older_than_days: float | None = None,
               keep: int | None = None, now: datetime | None = None) -> list[CacheEntry]:
    """Entries ``eraflow cache clean`` removes: all, or those last used more than ``older_than_days``
    ago and/or beyond the ``keep`` most recently used."""
    chosen = sorted(entries, key=lambda e: e.last_used, reverse=True)
    if keep is not None:
        chosen = chosen[keep:]
    if older_than_days is not None:
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=older_than_days)
        chosen = [e for e in chosen if e.last_used < cutoff]
    return chosen


@dataclass(frozen=True)
class CleanResult:
    removed: list[CacheEntry]
    failed: list[tuple[CacheEntry, str]]  # entry, why it could not be removed
    freed: int  # bytes, leftovers included


def clean(store: EraStore, entries: list[CacheEntry], dry_run: bool = False) -> CleanResult:
    """Remove ``entries`` and the leftovers of both cache directories (nothing with ``dry_run``:
    the result says what would be removed and freed)."""
    left = [p for d in cache_dirs(store) for p in leftovers(d)]
    if dry_run:
        return CleanResult(entries, [], file_bytes(left) + sum(e.bytes for e in entries))
    freed = file_bytes(left)
    _unlink_all(left)
    removed, failed = [], []
    for e in entries:
        reason = remove_entry(e.path)
        if reason is None:
            removed.append(e)
            freed += e.bytes
        else:
            failed.append((e, reason))
    return CleanResult(removed, failed, freed)
