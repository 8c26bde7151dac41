"""The DuckDB ledger: records, concurrent writers, damaged files, the runs commands."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import InputError
from eraflow.engine.evaluation.ledger import Run, append_run, list_runs, show_run


def a_run(**kw) -> Run:
    base = dict(kind="evaluate", command="eraflow evaluate p.parquet", params={"a": 1}, store_fingerprint="f" * 32,
                targets=["target"], features=["feature_a", "feature_b"],
                metrics={"prediction": {"mean": 0.02, "sharpe": 1.1}}, artifacts={"report": "/tmp/r"},
                per_era=[("prediction", "target", "0001", 0.03), ("prediction", "target", "0002", float("nan"))])
    return Run(**{**base, **kw})


def test_a_run_round_trips_and_plain_sql_reads_it(private_ledger):
    run = a_run()
    path, warning = append_run(run)
    assert path == private_ledger and warning is None
    shown = show_run(run.run_id)
    assert shown["metrics"] == run.metrics and shown["features"] == run.features and shown["kind"] == "evaluate"
    assert [(r["era"], r["corr"]) for r in shown["per_era"]] == [("0001", 0.03), ("0002", None)]
    con = duckdb.connect(str(private_ledger), read_only=True)
    assert con.execute("SELECT count(*), max(eraflow_version) FROM runs").fetchone() == (1, "0.1.0")
    con.close()


def test_two_processes_writing_at_once_both_land(private_ledger):
    code = ("import sys; from eraflow.engine.evaluation.ledger import Run, append_run\n"
            "for i in range(15):\n"
            "    append_run(Run('train', 'c', {}, 'f', ['target'], [], {}, {}, [('p', 'target', '0001', 0.1)] * 50))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(list_runs()) == 30


def test_busy_ledger_waits_then_records_the_run_beside_it(private_ledger):
    append_run(a_run())
    holder = duckdb.connect(str(private_ledger))  # DuckDB's file lock is per process: hold it in another
    code = ("from eraflow.engine.evaluation.ledger import append_run, Run\n"
            "print(append_run(Run('train', 'c', {}, 'f', [], [], {}, {}), timeout=0.5)[1])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    holder.close()
    fallback = private_ledger.with_name("ledger.fallback.duckdb")
    assert proc.returncode == 0 and "Could not set lock" in proc.stdout and f"recorded in {fallback}" in proc.stdout
    assert len(list_runs(fallback)) == 1


def test_damaged_ledger_never_stops_a_run(private_ledger):
    private_ledger.write_bytes(b"this is not a duckdb file" * 100)
    path, warning = append_run(a_run())
    assert path != private_ledger and path.exists() and "cannot take runs" in warning and str(path) in warning
    assert private_ledger.read_bytes().startswith(b"this is not"), "the damaged file is left alone"
    assert len(list_runs(path)) == 1


def test_runs_commands(private_ledger):
    run = a_run()
    append_run(run)
    listed = CliRunner().invoke(cli, ["runs", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["run_id"] == run.run_id
    shown = CliRunner().invoke(cli, ["runs", "show", run.run_id])
    assert shown.exit_code == 0 and "corr +0.0200 sharpe +1.10" in shown.stdout
    missing = CliRunner().invoke(cli, ["runs", "show", "nope"])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.stderr


def test_reading_without_a_ledger_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no ledger at"):
        list_runs(tmp_path / "none.duckdb")


def test_train_command_appends_a_run(store_path, tmp_path, private_ledger):
    (tmp_path / "p.toml").write_text("n_estimators = 20\nlearning_rate = 0.1\n")
    out = CliRunner().invoke(cli, ["train", str(store_path), "-o", str(tmp_path / "m"), "--cv", "2",
                                   "--params", str(tmp_path / "p.toml"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    run = show_run(report["run_id"])
    assert run["kind"] == "train" and run["artifacts"]["model_dir"] == str((tmp_path / "m").resolve())
    assert run["metrics"]["cv_target"]["mean"] == pytest.approx(report["cv"]["target"]["mean"])
    assert len(run["per_era"]) == report["cv"]["target"]["eras"]


def test_compare_runs_table_and_plot(private_ledger, tmp_path):
    import matplotlib.image

    first = a_run()
    second = a_run(per_era=[("prediction", "target", "0001", 0.05), ("prediction", "target", "0003", -0.01)])
    for run in (first, second):
        append_run(run)
    plot = tmp_path / "cmp.png"
    result = CliRunner().invoke(cli, ["runs", "compare", first.run_id, second.run_id, "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    compared = json.loads(result.stdout)
    assert [r["run_id"] for r in compared["rows"]] == [first.run_id, second.run_id]
    assert compared["common_eras"] == ["0001"] and compared["plot"] == str(plot)
    assert matplotlib.image.imread(plot).shape[0] > 200
    alone = CliRunner().invoke(cli, ["runs", "compare", first.run_id])
    assert alone.exit_code == 2 and "at least two run ids" in alone.stderr
