"""A DuckDB ledger of runs: what was trained or evaluated, on which data, and how it scored.

Schema (plain SQL works on the file: ``duckdb ~/.eraflow/ledger.duckdb``)::

    runs(run_id VARCHAR PRIMARY KEY, kind VARCHAR, created TIMESTAMP, command VARCHAR,
         params JSON, store_fingerprint VARCHAR, targets VARCHAR[], features VARCHAR[],
         metrics JSON, artifacts JSON, eraflow_version VARCHAR)
    run_eras(run_id VARCHAR, prediction VARCHAR, target VARCHAR, era VARCHAR, corr DOUBLE)

DuckDB lets one process write a file at a time: a writer that finds it locked retries for
``timeout`` seconds, then fails with a clear message. A ledger that cannot be opened for any
other reason (damaged, not DuckDB) never stops the run: the record goes to a fallback file
beside it and the caller gets a warning naming it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from .errors import EraflowError, InputError
from .version import eraflow_version

ENV = "ERAFLOW_LEDGER"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR, created TIMESTAMP, command VARCHAR, params JSON,
    store_fingerprint VARCHAR, targets VARCHAR[], features VARCHAR[], metrics JSON, artifacts JSON,
    eraflow_version VARCHAR);
CREATE TABLE IF NOT EXISTS run_eras (run_id VARCHAR, prediction VARCHAR, target VARCHAR, era VARCHAR, corr DOUBLE);
"""
LOCK_WAIT = 10.0  # seconds a writer waits for another one


class LedgerBusyError(EraflowError):
    """Another process kept the ledger locked for longer than the wait."""


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


def ledger_path(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$ERAFLOW_LEDGER``, else ``~/.eraflow/ledger.duckdb``."""
    return Path(explicit or os.environ.get(ENV) or Path.home() / ".eraflow" / "ledger.duckdb")


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def _connect(path: Path, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            if not read_only:
                con.execute(SCHEMA)
            return con
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() > deadline:
                raise LedgerBusyError(f"ledger {path} is held by another process for over {timeout:.0f} s; "
                                      "try again when it finishes") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _insert(con: duckdb.DuckDBPyConnection, run: Run) -> None:
    con.execute("BEGIN")
    con.execute("INSERT INTO runs VALUES (?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?)",
                [run.run_id, run.kind, run.command, json.dumps(run.params, default=str), run.store_fingerprint,
                 run.targets, run.features, json.dumps(run.metrics, default=float),
                 json.dumps(run.artifacts, default=str), eraflow_version()])
    if run.per_era:
        con.executemany("INSERT INTO run_eras VALUES (?, ?, ?, ?, ?)",
                        [(run.run_id, p, t, e, None if c != c else float(c)) for p, t, e, c in run.per_era])
    con.execute("COMMIT")


def append_run(run: Run, path: str | Path | None = None, timeout: float = LOCK_WAIT) -> tuple[Path, str | None]:
    """Append ``run``; returns (the file written, a warning or None).

    A busy ledger raises LedgerBusyError after ``timeout``; a damaged one is left alone and the run
    goes to ``<name>.fallback-<time>.duckdb`` beside it, with a warning.
    """
    path = ledger_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = _connect(path, False, timeout)
    except duckdb.Error as exc:  # not a lock: _connect turned those into LedgerBusyError
        fallback = path.with_name(f"{path.stem}.fallback-{time.strftime('%Y%m%d-%H%M%S')}.duckdb")
        con = _connect(fallback, False, timeout)
        warning = f"ledger {path} cannot be opened ({str(exc).splitlines()[0][:100]}); run {run.run_id} recorded in {fallback}"
        path = fallback
    else:
        warning = None
    try:
        _insert(con, run)
    finally:
        con.close()
    return path, warning


def _open_for_reading(path: str | Path | None) -> duckdb.DuckDBPyConnection:
    path = ledger_path(path)
    if not path.exists():
        raise InputError(f"no ledger at {path}; train or evaluate something first, or pass --ledger")
    try:
        return _connect(path, True, LOCK_WAIT)
    except duckdb.Error as exc:
        raise InputError(f"ledger {path} cannot be read ({str(exc).splitlines()[0][:100]})") from None


def list_runs(path: str | Path | None = None) -> list[dict]:
    """Every run, newest first: id, kind, created, targets, headline metrics."""
    con = _open_for_reading(path)
    try:
        rows = con.execute("SELECT run_id, kind, created, targets, metrics, command FROM runs "
                           "ORDER BY created DESC, run_id DESC").fetchall()
    finally:
        con.close()
    return [{"run_id": r[0], "kind": r[1], "created": str(r[2]), "targets": list(r[3]),
             "metrics": json.loads(r[4]), "command": r[5]} for r in rows]


def show_run(run_id: str, path: str | Path | None = None) -> dict:
    """One run with its parameters, artifacts and per-era scores."""
    con = _open_for_reading(path)
    try:
        row = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise InputError(f"no run {run_id!r} in the ledger; `eraflow runs list` shows the ids")
        names = [d[0] for d in con.description]
        eras = con.execute("SELECT prediction, target, era, corr FROM run_eras WHERE run_id = ? "
                           "ORDER BY prediction, target, era", [run_id]).fetchall()
    finally:
        con.close()
    run = dict(zip(names, row))
    for key in ("params", "metrics", "artifacts"):
        run[key] = json.loads(run[key])
    run["created"] = str(run["created"])
    run["targets"], run["features"] = list(run["targets"]), list(run["features"])
    run["per_era"] = [{"prediction": p, "target": t, "era": e, "corr": c} for p, t, e, c in eras]
    return run


def compare_runs(run_ids: list[str], path: str | Path | None = None) -> list[dict]:
    """The runs side by side: each with its metrics and per-era corr series ``{(prediction, target): {era: corr}}``."""
    if len(run_ids) < 2:
        raise InputError("give at least two run ids to compare")
    runs = [show_run(run_id, path) for run_id in run_ids]
    for run in runs:
        series: dict[str, dict[str, float]] = {}
        for row in run.pop("per_era"):
            series.setdefault(f"{run['run_id']} {row['prediction']} ({row['target']})", {})[row["era"]] = row["corr"]
        run["series"] = series
    return runs
