"""Recording a run never fails the command and never loses the run; the runs commands show it all."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine.evaluation import ledger
from eraflow.engine.evaluation.ledger import LedgerBusyError, Run, append_run, compare_runs, list_runs, show_run
from eraflow.kernels import era_summary

ERAFLOW = Path(sys.executable).with_name("eraflow")


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch) -> Path:
    """The user's fallback directory ($XDG_STATE_HOME/eraflow), private to the test."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "eraflow"


def a_run(eras: int = 3, **kw) -> Run:
    base = dict(kind="evaluate", command="eraflow evaluate p.parquet", params={"b": 2, "a": "x"},
                store_fingerprint="f" * 32, targets=["target"], features=["feature_a"],
                metrics={"prediction": {"mean": 0.02, "sharpe": 1.1}}, artifacts={"report": "/r/report.html"},
                per_era=[("prediction", "target", f"{k:04d}", 0.01 * (k % 5) - 0.01) for k in range(eras)])
    return Run(**{**base, **kw})


def corrupt_blocks(path: Path) -> None:
    """Flip the payload of every DuckDB block, so that reading any of them fails its checksum."""
    data = bytearray(path.read_bytes())
    for start in range(12288, len(data), 262144):
        data[start + 8:start + 4096] = bytes(b ^ 0xFF for b in data[start + 8:start + 4096])
    path.write_bytes(bytes(data))


# -- a damaged ledger is not a busy one ---------------------------------------------------------------


def test_a_checksum_error_is_not_mistaken_for_a_lock(private_ledger):
    append_run(a_run())
    corrupt_blocks(private_ledger)
    run = a_run()
    start = time.monotonic()
    path, warning = append_run(run, timeout=30)
    assert time.monotonic() - start < 5, "a damaged block ('… in block at …') was retried as a lock"
    assert path == private_ledger.with_name("ledger.fallback.duckdb")
    assert "checksum" in warning and str(path) in warning and run.run_id in warning
    assert show_run(run.run_id, path)["per_era"][0]["era"] == "0000"


HOLDER = """
import fcntl, os, sys, time, duckdb
fd = os.open(sys.argv[1] + ".lock", os.O_RDONLY | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX if sys.argv[2] == "queue" else fcntl.LOCK_SH)
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold(path: Path, queue: bool, seconds: float) -> subprocess.Popen:
    """Another process holding DuckDB's lock on ``path`` (and, with ``queue``, the writers' flock)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "queue" if queue else "-", str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "holding\n"
    return proc


def test_lock_conflicts_are_told_from_other_duckdb_errors(private_ledger):
    append_run(a_run())
    holder = hold(private_ledger, False, 30)
    try:
        with pytest.raises(duckdb.Error) as conflict:
            duckdb.connect(str(private_ledger))
    finally:
        holder.kill()
        holder.communicate()
    assert ledger._is_lock_conflict(conflict.value)
    assert not ledger._is_lock_conflict(duckdb.Error("Corrupt database file: computed checksum 1 does not match "
                                                     "stored checksum 2 in block at location 12288"))
    assert not ledger._is_lock_conflict(duckdb.IOException('IO Error: Could not read from file "x": Is a directory'))


def test_a_ledger_held_by_another_program_sends_the_run_to_a_fallback(private_ledger):
    append_run(a_run())
    holder = duckdb.connect(str(private_ledger))  # DuckDB's file lock is per process: hold it in another
    code = ("import json\nfrom eraflow.engine.evaluation import ledger\nfrom eraflow.engine.evaluation.ledger import Run, append_run\n"
            "ledger.FOREIGN_WAIT = 0.5\n"
            "path, warning = append_run(Run('train', 'c', {}, 'f', ['target'], [], {}, {}, run_id='held'))\n"
            "try:\n    ledger.list_runs()\nexcept ledger.LedgerBusyError as e:\n    busy = str(e)\n"
            "print(json.dumps([str(path), warning, busy]))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert proc.returncode == 0, proc.stderr
    path, warning, busy = json.loads(proc.stdout)
    assert Path(path) == private_ledger.with_name("ledger.fallback.duckdb")
    assert "Could not set lock" in warning and path in warning
    assert "held by another program" in busy
    assert [r["run_id"] for r in list_runs(path)] == ["held"] and len(list_runs()) == 1


# -- the commands exit 0 and the run is found where the warning says ------------------------------------


@pytest.fixture
def preds_file(synth_dir, tmp_path) -> Path:
    valid = pd.read_parquet(synth_dir / "validation.parquet")
    rng = np.random.default_rng(3)
    path = tmp_path / "preds.parquet"
    pd.DataFrame({"id": valid.id, "a": rng.random(len(valid))}).to_parquet(path, index=False)
    return path


class FullDisk:
    """A DuckDB connection on a full disk: reading works, writing fails as DuckDB reports ENOSPC."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        if not sql.lstrip().upper().startswith("SELECT"):
            raise duckdb.IOException('IO Error: Could not write file "ledger.duckdb.wal": No space left on device')
        return self.con.execute(sql, *args)

    def close(self):
        self.con.close()


def fill_disk(monkeypatch, directory: Path) -> None:
    """DuckDB files in ``directory`` behave as on a full disk: new ones cannot be made, old ones not written."""
    real = duckdb.connect

    def connect(database, read_only=False):
        if Path(database).parent != directory:
            return real(database, read_only=read_only)
        if not Path(database).exists():
            raise duckdb.IOException(f'IO Error: Could not write file "{database}": No space left on device')
        return FullDisk(real(database, read_only=read_only))

    monkeypatch.setattr(duckdb, "connect", connect)


def evaluate_args(store_path, preds_file, tmp_path, led: Path) -> list[str]:
    return ["evaluate", str(preds_file), "--store", str(store_path), "-o", str(tmp_path / "report"),
            "--ledger", str(led), "--json"]


@pytest.mark.parametrize("damage", ["truncated", "directory", "disk full"])
def test_evaluate_exits_0_and_the_run_is_where_the_warning_says(damage, store_path, preds_file, tmp_path,
                                                                 state_dir, monkeypatch):
    led = tmp_path / "ledgers" / "ledger.duckdb"
    led.parent.mkdir()
    earlier = a_run()
    append_run(earlier, led)
    if damage == "truncated":
        led.write_bytes(led.read_bytes()[:20000])
    elif damage == "directory":
        led.unlink()
        led.mkdir()
    else:
        fill_disk(monkeypatch, led.parent)
    result = CliRunner().invoke(cli, evaluate_args(store_path, preds_file, tmp_path, led))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    where = Path(out["ledger"])
    beside = led.with_name("ledger.fallback.duckdb")
    assert where == (state_dir / "ledger.fallback.duckdb" if damage == "disk full" else beside)
    assert f"warning: ledger {led} cannot take runs" in result.stderr and f"recorded in {where}" in result.stderr
    assert (tmp_path / "report" / "metrics.json").exists()
    run = show_run(out["run_id"], where)
    assert run["kind"] == "evaluate" and run["artifacts"]["predictions"] == str(preds_file.resolve())
    if damage == "disk full":
        assert [r["run_id"] for r in list_runs(led)] == [earlier.run_id], "the full ledger is left as it was"


def read_only(directory: Path) -> list[str]:
    """Make ``directory`` read-only for a command; returns the prefix that runs the command so.

    Permission bits do not stop root: there the command runs in a user namespace that mounts the
    directory read-only (EROFS), as a read-only mount would.
    """
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return []
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    prefix = ["unshare", "-rm", "sh", "-c", script, str(directory)]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("running as root, and no user namespace to mount a directory read-only")
    return prefix


def test_evaluate_with_a_read_only_ledger_directory(store_path, preds_file, tmp_path, state_dir):
    led = tmp_path / "ledgers" / "ledger.duckdb"
    led.parent.mkdir()
    append_run(a_run(), led)
    prefix = read_only(led.parent)
    env = {**os.environ, "XDG_STATE_HOME": str(state_dir.parent)}
    try:
        proc = subprocess.run([*prefix, str(ERAFLOW), *evaluate_args(store_path, preds_file, tmp_path, led)],
                              capture_output=True, text=True, env=env, timeout=300)
    finally:
        led.parent.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["ledger"]) == state_dir / "ledger.fallback.duckdb"
    assert f"warning: ledger {led} cannot take runs" in proc.stderr and f"recorded in {out['ledger']}" in proc.stderr
    assert show_run(out["run_id"], out["ledger"])["kind"] == "evaluate"
    assert len(list_runs(led)) == 1


def test_without_duckdb_the_run_goes_to_json_lines_and_a_failed_write_leaves_no_half_line(
        private_ledger, state_dir, monkeypatch):
    def no_duckdb(database, read_only=False):
        raise duckdb.IOException(f'IO Error: Could not write file "{database}": No space left on device')

    real_write = os.write

    def full_beside(fd, data):  # the ledger's directory takes half a line, then is full
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == private_ledger.parent:
            real_write(fd, bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(duckdb, "connect", no_duckdb)
    run = a_run()
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", full_beside)
        path, warning = append_run(run)
    beside = private_ledger.with_name("ledger.fallback.jsonl")
    assert path == state_dir / "ledger.fallback.jsonl" and f"recorded in {path}" in warning
    assert beside.read_bytes() == b"", "the half-written line was cut back"
    second = a_run()
    assert append_run(second)[0] == beside
    assert [r["run_id"] for r in list_runs(beside)] == [second.run_id]
    shown = CliRunner().invoke(cli, ["runs", "show", run.run_id, "--ledger", str(path)])
    assert shown.exit_code == 0 and "a = x" in shown.stdout


def test_a_run_that_fits_nowhere_is_a_warning_not_an_error(private_ledger, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger.tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(duckdb, "connect", lambda *args, **kwargs: full())
    monkeypatch.setattr(os, "fsync", full)
    run = a_run()
    path, warning = append_run(run)
    assert path == private_ledger and warning.startswith(f"run {run.run_id} could not be recorded anywhere")
    assert warning.count("No space left") == 6 and str(tmp_path / "tmp") in warning


def test_a_symlinked_lock_file_is_not_followed(private_ledger, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    private_ledger.with_name("ledger.duckdb.lock").symlink_to(victim)
    path, warning = append_run(a_run())
    assert victim.read_text() == "keep me" and path == private_ledger.with_name("ledger.fallback.duckdb")
    assert "Too many levels of symbolic links" in warning


# -- writers take turns; readers wait for them ------------------------------------------------------------

WRITER = """
import sys
from eraflow.engine.evaluation.ledger import Run, append_run
rows = [("prediction", "target", f"{e:04d}", 0.001 * (e % 17)) for e in range(5000)]
for k in range(25):
    path, warning = append_run(Run("evaluate", "c", {"writer": sys.argv[1], "k": k}, "f", ["target"], [], {}, {}, rows))
    if warning:
        print(warning)
"""
READER = """
import sys
from eraflow.engine.evaluation.ledger import list_runs
counts = []
while not counts or counts[-1] < 100:
    counts.append(len(list_runs()))
print(len(counts), counts[0])
"""


def test_four_writers_of_5000_era_runs_lose_nothing_and_a_reader_keeps_reading(private_ledger):
    append_run(a_run())
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(i)], stdout=subprocess.PIPE, text=True)
               for i in range(4)]
    reader = subprocess.Popen([sys.executable, "-c", READER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    outputs = [w.communicate(timeout=600)[0] for w in writers]
    assert [w.returncode for w in writers] == [0] * 4 and outputs == [""] * 4, outputs
    reads, stderr = reader.communicate(timeout=120)
    assert reader.returncode == 0, stderr
    assert int(reads.split()[0]) >= 2, "the reader read while the writers wrote"
    con = duckdb.connect(str(private_ledger), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs WHERE kind = 'evaluate' AND command = 'c'").fetchone() == (100,)
        assert con.execute("SELECT count(*) FROM run_eras").fetchone() == (100 * 5000 + 3,)
    finally:
        con.close()
    assert not list(private_ledger.parent.glob("*fallback*"))


def test_runs_list_waits_in_the_queue_for_a_writer(private_ledger, monkeypatch):
    run = a_run()
    append_run(run)
    monkeypatch.setattr(ledger, "FOREIGN_WAIT", 0.2)  # the queue, not DuckDB's retry, does the waiting
    writer = hold(private_ledger, True, 2)
    start = time.monotonic()
    runs = list_runs()
    writer.communicate()
    assert time.monotonic() - start > 1 and [r["run_id"] for r in runs] == [run.run_id]


def test_a_writer_gives_up_on_a_stuck_queue_and_says_where_the_run_went(private_ledger, monkeypatch):
    monkeypatch.setattr(ledger, "READ_WAIT", 0.3)
    append_run(a_run())
    fd = os.open(private_ledger.with_name("ledger.duckdb.lock"), os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        path, warning = append_run(a_run(), timeout=0.3)
        with pytest.raises(LedgerBusyError, match="locked by other eraflow processes for over 0.3 s"):
            list_runs()
    finally:
        os.close(fd)
    assert path == private_ledger.with_name("ledger.fallback.duckdb") and "locked by other eraflow" in warning
    assert len(list_runs(path)) == 1


# -- what the runs commands show ---------------------------------------------------------------------------


def test_runs_show_prints_params_metrics_per_prediction_and_artifacts(private_ledger):
    run = a_run(metrics={"a": {"mean": 0.02, "sharpe": 1.1, "std": 0.5}, "b": {"mean": -0.01, "sharpe": -0.3}},
                artifacts={"report": "/r/report.html", "images": ["/r/x.png", "/r/y.png"]})
    append_run(run)
    out = CliRunner().invoke(cli, ["runs", "show", run.run_id])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    params = lines.index("params")
    assert lines[params + 1:params + 3] == ["  a = x", "  b = 2"]
    metrics = lines.index("metrics")
    assert lines[metrics + 1:metrics + 9] == ["  a", "    mean = 0.02", "    sharpe = 1.1", "    std = 0.5",
                                              "  b", "    mean = -0.01", "    sharpe = -0.3", "artifacts"]
    assert lines[-3:] == ["  images = /r/x.png", "  images = /r/y.png", "  report = /r/report.html"]


def test_runs_list_shows_what_each_run_read_and_wrote(store_path, preds_file, tmp_path, private_ledger):
    evaluated = CliRunner().invoke(cli, evaluate_args(store_path, preds_file, tmp_path, private_ledger))
    assert evaluated.exit_code == 0, evaluated.output
    append_run(a_run(kind="train", artifacts={"model_dir": "/models/m1"}))
    listed = CliRunner().invoke(cli, ["runs", "list"])
    assert listed.exit_code == 0, listed.output
    assert re.search(r"\btrain\b.*/models/m1", listed.stdout)
    assert re.search(rf"\bevaluate\b.*{re.escape(str(preds_file))} → {re.escape(str(tmp_path / 'report'))}",
                     listed.stdout)


def test_compare_scores_runs_over_their_common_eras_and_target(private_ledger, tmp_path):
    import matplotlib.image

    first = a_run(per_era=[("a", "target", f"{e:04d}", 0.01 * e) for e in range(1, 11)]
                  + [("a", "target_x", f"{e:04d}", 0.5) for e in range(1, 11)])
    second = a_run(per_era=[("b", "target", f"{e:04d}", 0.02 - 0.003 * e) for e in range(5, 21)]
                   + [("b", "target", "0021", float("nan"))])
    for run in (first, second):
        append_run(run)
    comparison = compare_runs([first.run_id, second.run_id])
    assert comparison["targets"] == ["target"] and comparison["eras"] == {first.run_id: 10, second.run_id: 16}
    assert comparison["common_eras"] == [f"{e:04d}" for e in range(5, 11)]
    expected = era_summary(np.array([0.02 - 0.003 * e for e in range(5, 11)]))
    row = comparison["rows"][1]
    assert (row["run_id"], row["prediction"], row["eras"]) == (second.run_id, "b", 6)
    np.testing.assert_allclose([row["mean"], row["std"], row["sharpe"], row["max_drawdown"]],
                               [expected.mean, expected.std, expected.sharpe, expected.max_drawdown])
    plot = tmp_path / "cmp.png"
    out = CliRunner().invoke(cli, ["runs", "compare", first.run_id, second.run_id, "--plot", str(plot)])
    assert out.exit_code == 0, out.output
    assert f"eras scored: {first.run_id} 10, {second.run_id} 16; common: 6 (0005–0010)" in out.stdout
    assert re.search(rf"{second.run_id}\s+evaluate\s+b\s+target\s+6\s+{expected.mean:+.4f}", out.stdout)
    assert matplotlib.image.imread(plot).shape[0] > 200
    apart = a_run(per_era=[("c", "target_y", "0001", 0.1)])
    append_run(apart)
    refused = CliRunner().invoke(cli, ["runs", "compare", first.run_id, apart.run_id])
    assert refused.exit_code == 2 and "share no target" in refused.stderr
