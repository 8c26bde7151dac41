"""A DuckDB ledger of runs: what was trained or evaluated, on which data, and how it scored.

Schema (plain SQL works on the file: ``duckdb ~/.eraflow/ledger.duckdb``)::

    runs(run_id VARCHAR PRIMARY KEY, kind VARCHAR, created TIMESTAMP, command VARCHAR,
         params JSON, store_fingerprint VARCHAR, targets VARCHAR[], features VARCHAR[],
         metrics JSON, artifacts JSON, eraflow_version VARCHAR)
    run_eras(run_id VARCHAR, prediction VARCHAR, target VARCHAR, era VARCHAR, corr DOUBLE)

Recording a run never fails the command and never loses the run:

- Writers take turns through an ``flock`` of the sibling ``<ledger>.lock``: each waits in the
  kernel's queue, so none starves however many there are. Readers take it shared, so
  ``runs list`` waits for a writer instead of failing.
- A ledger that cannot take a run (damaged, truncated, not DuckDB, a directory, read-only, full,
  held by another program, or the queue not reached in time) is left as it is; the run goes to
  the first of :func:`fallback_paths` that takes it, and the caller gets a warning naming it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import EraflowError, InputError, first_line
from ..lock import lock_path
from ..notices import warn
from ..version import eraflow_version

ENV = "ERAFLOW_LEDGER"
STATE_ENV = "XDG_STATE_HOME"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR, created TIMESTAMP, command VARCHAR, params JSON,
    store_fingerprint VARCHAR, targets VARCHAR[], features VARCHAR[], metrics JSON, artifacts JSON,
    eraflow_version VARCHAR);
CREATE TABLE IF NOT EXISTS run_eras (run_id VARCHAR, prediction VARCHAR, target VARCHAR, era VARCHAR, corr DOUBLE);
"""
WRITE_WAIT = 300.0  # seconds a writer queues behind other writers before its run goes to a fallback file
READ_WAIT = 60.0  # seconds a reader queues behind writers
FOREIGN_WAIT = 10.0  # seconds to retry DuckDB's own file lock, held by another program (a duckdb shell)
REASON_CHARS = 160  # of an error quoted in a one-line warning


class LedgerBusyError(EraflowError):
    """A reader found the ledger locked by other processes for longer than the wait."""


@dataclass
class Run:
    kind: str  # "train" or "evaluate"
    command: str
    params: dict
    store_fingerprint: str
    targets: list[str]
    features: list[str]
    metrics: dict
    artifacts: dict
    per_era: list[tuple[str, str, str, float]] = field(default_factory=list)  # prediction, target, era, corr
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3))

    def record(self, created: str) -> dict:
        """The run as :func:`show_run` returns it (and a JSON lines fallback holds it); NaN corr → None."""
        return {"run_id": self.run_id, "kind": self.kind, "created": created, "command": self.command,
                "params": self.params, "store_fingerprint": self.store_fingerprint, "targets": list(self.targets),
                "features": list(self.features), "metrics": self.metrics, "artifacts": self.artifacts,
                "eraflow_version": eraflow_version(),
                "per_era": [{"prediction": p, "target": t, "era": e, "corr": None if c != c else float(c)}
                            for p, t, e, c in self.per_era]}


def ledger_path(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$ERAFLOW_LEDGER``, else ``~/.eraflow/ledger.duckdb``."""
    return Path(explicit or os.environ.get(ENV) or Path.home() / ".eraflow" / "ledger.duckdb")


def user_state_dir() -> Path:
    """eraflow's per-user directory: ``$XDG_STATE_HOME/eraflow``, else ``~/.eraflow``."""
    state = os.environ.get(STATE_ENV)
    return Path(state) / "eraflow" if state else Path.home() / ".eraflow"


def fallback_paths(path: Path) -> list[Path]:
    """Where a run goes when the ledger at ``path`` cannot take it, in order: a DuckDB file beside it,
    one in :func:`user_state_dir`, then a JSON lines file beside it, there, or in the temp directory."""
    home = user_state_dir()
    candidates = [path.with_name(f"{path.stem}.fallback.duckdb"), home / "ledger.fallback.duckdb",
                  path.with_name(f"{path.stem}.fallback.jsonl"), home / "ledger.fallback.jsonl",
                  Path(tempfile.gettempdir()) / f"eraflow-{os.getuid()}-ledger.fallback.jsonl"]
    return [p for p in dict.fromkeys(candidates) if p != path]


def append_run(run: Run, path: str | Path | None = None, timeout: float = WRITE_WAIT) -> tuple[Path, str | None]:
    """Append ``run``; returns (the file that holds it, a warning naming that file, or None).

    Never raises. A ledger that cannot take the run — damaged, not DuckDB, a directory, read-only,
    full, held by another program, or still locked by other writers after ``timeout`` seconds — is
    left as it is, and the run goes to the first of :func:`fallback_paths` that takes it. Only if
    none does is the run lost, and the warning says so.
    """
    path = ledger_path(path)
    record = run.record(str(datetime.now()))
    failures: dict[Path, str] = {}
    for target in [path, *fallback_paths(path)]:
        try:
            _write(target, record, timeout)
        except Exception as exc:  # noqa: BLE001 - whatever stops this file, the next one is tried
            failures[target] = _reason(exc)
            continue
        if target == path:
            return path, None
        return target, (f"ledger {path} cannot take runs ({failures[path]}); run {run.run_id} is recorded in "
                        f"{target} (`eraflow runs show {run.run_id} --ledger {target}`)")
    tried = "; ".join(f"{target}: {reason}" for target, reason in failures.items())
    return path, f"run {run.run_id} could not be recorded anywhere: {tried}"


def record_run(run: Run, path: str | Path | None = None) -> Path:
    """:func:`append_run`, the warning (where the run went instead) told to the user; returns the file."""
    file, warning = append_run(run, path)
    if warning:
        warn(warning)
    return file


def _reason(exc: BaseException) -> str:
    """The first line of an error, short enough for a one-line warning."""
    return first_line(exc)[:REASON_CHARS]


def _json(value) -> str:
    return json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))  # numpy scalars, paths


def _write(path: Path, record: dict, timeout: float) -> None:
    """Append ``record`` to the DuckDB (or, named ``*.jsonl``, JSON lines) file ``path``, in turn with other writers."""
    deadline = time.monotonic() + timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    with _flock(path, fcntl.LOCK_EX, timeout):
        if path.suffix == ".jsonl":
            _append_line(path, record)
        else:
            _insert(path, record, min(deadline, time.monotonic() + FOREIGN_WAIT))


@contextmanager
def _flock(path: Path, operation: int, wait: float, required: bool = True):
    """Hold an flock of ``<path>.lock``, queueing for ``wait`` seconds at most (then LedgerBusyError).

    The lock file is opened with O_NOFOLLOW: a symlink planted there is refused, never followed.
    When it cannot be opened and the lock is not ``required`` (a reader of a read-only directory),
    the block runs without it: DuckDB's own lock still keeps a writer out.
    """
    try:
        fd = os.open(lock_path(path), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        if required:
            raise
        fd = None
    try:
        if fd is not None and not _wait_for_flock(fd, operation, wait):
            raise LedgerBusyError(f"ledger {path} stayed locked by other eraflow processes for over {wait:g} s; "
                                  "try again when they finish")
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _wait_for_flock(fd: int, operation: int, timeout: float) -> bool:
    """Take the flock, waiting in the kernel's queue for at most ``timeout`` s; False if it did not come.

    The blocking call runs in a daemon thread on a duplicate of ``fd`` so that it can be abandoned:
    the caller closes ``fd``, and a lock granted later is released when the thread closes its copy.
    """
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if timeout <= 0:
            return False
    copy = os.dup(fd)
    outcome: list[OSError | None] = []

    def take() -> None:
        try:
            fcntl.flock(copy, operation)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)
        finally:
            os.close(copy)

    waiter = threading.Thread(target=take, name="eraflow-ledger-lock", daemon=True)
    waiter.start()
    waiter.join(timeout)
    if outcome and outcome[0] is not None:
        raise outcome[0]
    return bool(outcome)


def _is_lock_conflict(exc: BaseException) -> bool:
    """DuckDB's ``IO Error: Could not set lock on file "…": Conflicting lock is held in … (PID n)``:
    another process has the file open. Not a damaged file ("… checksum … in block at …")."""
    import duckdb

    return isinstance(exc, duckdb.IOException) and "could not set lock on file" in str(exc).lower()


def _connect(path: Path, read_only: bool, deadline: float):
    """A DuckDB connection; DuckDB's own lock, held by another program, is retried until ``deadline``."""
    import duckdb

    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _insert(path: Path, record: dict, deadline: float) -> None:
    """One transaction: the run's row, then its per-era rows in one statement (unnest of four lists)."""
    con = _connect(path, False, deadline)
    try:
        con.execute(SCHEMA)
        con.execute("BEGIN")
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [record["run_id"], record["kind"], record["created"], record["command"], _json(record["params"]),
                     record["store_fingerprint"], record["targets"], record["features"], _json(record["metrics"]),
                     _json(record["artifacts"]), record["eraflow_version"]])
        columns = [[row[key] for row in record["per_era"]] for key in ("prediction", "target", "era", "corr")]
        con.execute("INSERT INTO run_eras SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                    "unnest(?::DOUBLE[])", [record["run_id"], *columns])
        con.execute("COMMIT")
    finally:
        con.close()


def _append_line(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line and sync it; a failed write is cut back, leaving no half line."""
    line = memoryview((_json(record) + "\n").encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise PermissionError(f"{path} belongs to another user")
        try:
            while line:
                line = line[os.write(fd, line):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, info.st_size)
            raise
    finally:
        os.close(fd)


def _existing(path: str | Path | None) -> Path:
    path = ledger_path(path)
    if not path.exists():
        raise InputError(f"no ledger at {path}; train or evaluate something first, or pass --ledger")
    return path


@contextmanager
def _reading(path: Path):
    """A read-only connection to the ledger, taken after the writers queued before it."""
    import duckdb

    with _flock(path, fcntl.LOCK_SH, READ_WAIT, required=False):
        try:
            con = _connect(path, True, time.monotonic() + FOREIGN_WAIT)
        except duckdb.Error as exc:
            if _is_lock_conflict(exc):
                raise LedgerBusyError(f"ledger {path} is held by another program ({_reason(exc)}); "
                                      "close it and try again") from None
            raise InputError(f"ledger {path} cannot be read ({_reason(exc)})") from None
        try:
            yield con
        finally:
            con.close()


def _jsonl_records(path: Path) -> list[dict]:
    """The runs of a JSON lines fallback file, in the order they were recorded."""
    with _flock(path, fcntl.LOCK_SH, READ_WAIT, required=False):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def list_runs(path: str | Path | None = None) -> list[dict]:
    """Every run, newest first: id, kind, created, targets, metrics, command, artifacts.

    Fallback files holding runs the ledger could not take are named in a warning.
    """
    path = _existing(path)
    held = [str(p) for p in fallback_paths(path) if p.is_file()]
    if held:
        warn(f"some runs are in fallback files, where they went when a ledger could not take them: {', '.join(held)} "
             "(`eraflow runs list --ledger FILE`)")
    keys = ("run_id", "kind", "created", "targets", "metrics", "command", "artifacts")
    if path.suffix == ".jsonl":
        runs = sorted(_jsonl_records(path), key=lambda r: (r["created"], r["run_id"]), reverse=True)
        return [{key: run[key] for key in keys} for run in runs]
    with _reading(path) as con:
        rows = con.execute(f"SELECT {', '.join(keys)} FROM runs ORDER BY created DESC, run_id DESC").fetchall()
    return [{"run_id": r[0], "kind": r[1], "created": str(r[2]), "targets": list(r[3]), "metrics": json.loads(r[4]),
             "command": r[5], "artifacts": json.loads(r[6])} for r in rows]


def _no_run(run_id: str) -> InputError:
    return InputError(f"no run {run_id!r} in the ledger; `eraflow runs list` shows the ids")


def show_run(run_id: str, path: str | Path | None = None) -> dict:
    """One run with its parameters, artifacts and per-era scores."""
    path = _existing(path)
    if path.suffix == ".jsonl":
        found = [run for run in _jsonl_records(path) if run["run_id"] == run_id]
        if not found:
            raise _no_run(run_id)
        return found[-1]
    with _reading(path) as con:
        row = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise _no_run(run_id)
        names = [d[0] for d in con.description]
        eras = con.execute("SELECT prediction, target, era, corr FROM run_eras WHERE run_id = ? "
                           "ORDER BY prediction, target, era", [run_id]).fetchall()
    run = dict(zip(names, row))
    for key in ("params", "metrics", "artifacts"):
        run[key] = json.loads(run[key])
    run["created"] = str(run["created"])
    run["targets"], run["features"] = list(run["targets"]), list(run["features"])
    run["per_era"] = [{"prediction": p, "target": t, "era": e, "corr": c} for p, t, e, c in eras]
    return run


def compare_runs(run_ids: list[str], path: str | Path | None = None) -> dict:
    """The runs scored over the eras and targets they all have.

    1. targets: those every run has per-era corr for;
    2. each run's eras: those with a scored corr for one of these targets; common: in every run;
    3. per run × prediction × target: mean, std, sharpe, max drawdown over the common eras.

    Returns ``{"targets", "eras": {run_id: its eras}, "common_eras": [...], "rows": [...],
    "series": {"<run_id> <prediction> (<target>)": corr per common era}}``.
    """
    import numpy as np

    from eraflow.kernels import era_summary

    if len(set(run_ids)) < 2:
        raise InputError("give at least two run ids to compare")
    runs = [show_run(run_id, path) for run_id in dict.fromkeys(run_ids)]
    have = {run["run_id"]: sorted({row["target"] for row in run["per_era"]}) for run in runs}
    targets = sorted(set.intersection(*map(set, have.values())))
    if not targets:
        listed = "; ".join(f"{run_id}: {', '.join(t) or 'none'}" for run_id, t in have.items())
        raise InputError(f"the runs share no target with per-era scores ({listed}); compare runs of one target")
    scored = {run["run_id"]: {row["era"] for row in run["per_era"]
                              if row["target"] in targets and row["corr"] is not None} for run in runs}
    common = sorted(set.intersection(*scored.values()))
    if not common:
        raise InputError("the runs share no scored era; compare runs over overlapping eras")
    rows, series = [], {}
    for run in runs:
        corr: dict[tuple[str, str], dict[str, float | None]] = {}
        for row in run["per_era"]:
            if row["target"] in targets:
                corr.setdefault((row["prediction"], row["target"]), {})[row["era"]] = row["corr"]
        for (prediction, target), by_era in corr.items():
            values = np.array([np.nan if by_era.get(era) is None else by_era[era] for era in common])
            s = era_summary(values)
            rows.append({"run_id": run["run_id"], "kind": run["kind"], "prediction": prediction, "target": target,
                         "eras": int(s.n_eras), "mean": float(s.mean), "std": float(s.std), "sharpe": float(s.sharpe),
                         "max_drawdown": float(s.max_drawdown)})
            series[f"{run['run_id']} {prediction} ({target})"] = values.tolist()
    return {"targets": targets, "eras": {run_id: len(eras) for run_id, eras in scored.items()},
            "common_eras": common, "rows": rows, "series": series}
