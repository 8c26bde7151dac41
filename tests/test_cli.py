"""The eraflow CLI: commands, bad input (one line, exit 2, nothing left behind), kill -9 safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import SynthSpec, open_store, write_synthetic

from .conftest import tiny_frame, write_parquet


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def test_every_command_documents_an_example():
    for name, command in cli.commands.items():
        assert "Example:" in (command.help or ""), name
        assert run(name, "--help").exit_code == 0


def test_synth_ingest_info_round_trip(tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    out = run("synth", data, "--eras", 12, "--rows-per-era", 50, "--features", 20, "--json")
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["rows"]["train"] + record["rows"]["validation"] > 500
    out = run("ingest", data / "train.parquet", data / "validation.parquet", store,
              "--features-json", data / "features.json", "--feature-set", "medium", "--json")
    assert out.exit_code == 0, out.output
    built = json.loads(out.stdout)
    assert built["status"] == "built" and built["rows"] == record["rows"]["train"] + record["rows"]["validation"]
    out = run("ingest", data / "train.parquet", data / "validation.parquet", store,
              "--features-json", data / "features.json", "--feature-set", "medium")
    assert "up to date" in out.stdout
    info = json.loads(run("info", store, "--json").stdout)
    assert info["rows"] == built["rows"] and info["eras"]["count"] == 12
    assert info["features"] == len(json.loads((data / "features.json").read_text())["feature_sets"]["medium"])
    text = run("info", store).stdout
    assert f"{built['rows']:,}" in text and "target_ender_20" in text


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    src = write_parquet(tmp_path / "x.parquet", tiny_frame())
    out = run("ingest", src, tmp_path / "s", "--dry-run", "--json")
    assert out.exit_code == 0
    assert json.loads(out.stdout)["features"] == 3
    assert not (tmp_path / "s").exists()


def _cases(tmp_path):
    """(name, argv) for each kind of bad input; sources are written on demand."""
    good = tiny_frame()
    ok = write_parquet(tmp_path / "ok.parquet", good)
    full = ok.read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(full[: len(full) // 2])
    (tmp_path / "text.parquet").write_text("id,era\n1,2\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "features.json").write_text("{not json")
    (tmp_path / "file_store").write_text("precious")
    write_parquet(tmp_path / "no_era.parquet", {k: v for k, v in good.items() if k != "era"})
    write_parquet(tmp_path / "no_features.parquet", {k: v for k, v in good.items() if not k.startswith("feature")})
    write_parquet(tmp_path / "seven.parquet", {**good, "feature_1": pa.array(np.r_[np.ones(11), 7].astype(np.int8))})
    write_parquet(tmp_path / "minus3.parquet", {**good, "feature_0": pa.array(np.r_[-3, np.ones(11)].astype(np.int64))})
    write_parquet(tmp_path / "point3.parquet", {**good, "feature_2": pa.array(np.r_[0.3, np.full(11, 0.5)])})
    write_parquet(tmp_path / "dup.parquet", {**good, "id": good["id"][:-1] + [good["id"][0]]})
    write_parquet(tmp_path / "other_cols.parquet", {**{k: v for k, v in good.items() if k != "feature_2"},
                                                    "feature_9": good["feature_2"]})
    (tmp_path / "fj.json").write_text(json.dumps({"feature_sets": {"small": ["feature_0"]}}))
    store = tmp_path / "store"
    return {
        "missing file": (["ingest", tmp_path / "nope.parquet", store], "no such file"),
        "not parquet": (["ingest", tmp_path / "text.parquet", store], "not a parquet file"),
        "truncated parquet": (["ingest", tmp_path / "truncated.parquet", store], "truncated or damaged"),
        "no era column": (["ingest", tmp_path / "no_era.parquet", store], "no era column"),
        "no feature columns": (["ingest", tmp_path / "no_features.parquet", store], "no feature columns"),
        "feature value 7": (["ingest", tmp_path / "seven.parquet", store], "feature_1 has value 7"),
        "feature value -3": (["ingest", tmp_path / "minus3.parquet", store], "feature_0 has value -3"),
        "float feature 0.3": (["ingest", tmp_path / "point3.parquet", store], "feature_2 has value 0.3"),
        "duplicate ids": (["ingest", tmp_path / "dup.parquet", store], "duplicate id 'id00000'"),
        "empty file": (["ingest", tmp_path / "empty.parquet", store], "is empty"),
        "unknown feature set": (["ingest", ok, store, "--features-json", tmp_path / "fj.json",
                                 "--feature-set", "huge"], "unknown feature set 'huge'"),
        "features.json not JSON": (["ingest", ok, store, "--features-json", tmp_path / "features.json",
                                    "--feature-set", "small"], "not valid JSON"),
        "store path is a file": (["ingest", ok, tmp_path / "file_store"], "is an existing file"),
        "mismatched columns": (["ingest", ok, tmp_path / "other_cols.parquet", store], "lacks 1 feature column"),
        "bad era range": (["ingest", ok, store, "--eras", "0001-0002"], "must look like FIRST:LAST"),
        "unknown option": (["ingest", ok, store, "--bogus"], "No such option"),
        "info on no store": (["info", tmp_path / "nothing"], "no store at"),
    }


@pytest.mark.parametrize("case", [
    "missing file", "not parquet", "truncated parquet", "no era column", "no feature columns",
    "feature value 7", "feature value -3", "float feature 0.3", "duplicate ids", "empty file",
    "unknown feature set", "features.json not JSON", "store path is a file", "mismatched columns",
    "bad era range", "unknown option", "info on no store",
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, case):
    argv, message = _cases(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    out = run(*argv)
    assert out.exit_code == 2, (case, out.output)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (case, out.stderr)
    after = sorted(p.name for p in tmp_path.iterdir() if p.name != "store.lock")
    assert after == before, f"{case}: left {set(after) - set(before)}"
    assert (tmp_path / "file_store").read_text() == "precious"


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eraflow.cli", "ingest", tmp_path / "nope.parquet", tmp_path / "s"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope.parquet'}: no such file"
    assert "Traceback" not in proc.stderr


def _store_state(path):
    """None when absent, else (fingerprint, features digest) of the complete store there."""
    if not path.exists():
        return None
    store = open_store(path)
    return store.fingerprint, hash(store.features.tobytes()), list(store.ids[:3])


def test_kill_9_leaves_no_store_or_a_complete_one(tmp_path):
    data = tmp_path / "data"
    write_synthetic(data, SynthSpec(eras=30, rows_per_era=600, features=120, seed=5))
    store = tmp_path / "store"
    train, valid = data / "train.parquet", data / "validation.parquet"
    cmd = [sys.executable, "-m", "eraflow.cli", "ingest", "--quiet", "--force", "--batch-rows", "300"]
    started = time.perf_counter()
    subprocess.run([*cmd, train, store], check=True)
    duration = time.perf_counter() - started
    previous = _store_state(store)
    subprocess.run([*cmd, train, valid, tmp_path / "reference"], check=True)
    complete_new = _store_state(tmp_path / "reference")[1:]
    outcomes = set()
    for delay in np.linspace(0.05, 1.2, 8) * duration:
        proc = subprocess.Popen([*cmd, train, valid, store])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = _store_state(store)
        assert state == previous or state[1:] == complete_new, f"store damaged after kill at {delay:.2f}s"
        outcomes.add("previous" if state == previous else "new")
        if state != previous:
            subprocess.run([*cmd, train, store], check=True)
            previous = _store_state(store)
    assert "previous" in outcomes, "at least one kill landed mid-build"
    subprocess.run([*cmd, train, valid, store], check=True)
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == [], "a later ingest removes what killed ones left"
    assert _store_state(store)[1:] == complete_new


def test_kill_9_during_first_build_leaves_no_store(tmp_path):
    data = tmp_path / "data"
    write_synthetic(data, SynthSpec(eras=20, rows_per_era=600, features=120, seed=6))
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "eraflow.cli", "ingest", "--quiet", "--batch-rows", "200",
                             data / "train.parquet", store])
    deadline = time.time() + 30
    while not list(tmp_path.glob("store.tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the build was still running when killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("store.tmp-*")), "killed mid-build: its temporary directory is left"
    assert not store.exists(), "killed while building: no store at the path"
