"""Output paths: eraflow replaces only its own output of the same kind, checks before the work, and
cleans the temporaries of writers that died (engine/outputs.py)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.models.train import TrainConfig, train_models
from eraflow.engine.outputs import EXPORT_MARK, is_own_output

from .conftest import tiny_frame, write_parquet

FAST = {"objective": "regression", "metric": "None", "verbosity": -1, "n_estimators": 15, "learning_rate": 0.1,
        "max_depth": 3, "num_leaves": 7, "colsample_bytree": 0.5, "num_threads": 1, "deterministic": True}
FAST_TOML = "n_estimators = 15\nlearning_rate = 0.1\nmax_depth = 3\nnum_leaves = 7\nnum_threads = 1\n"
ERAFLOW = [sys.executable, "-m", "eraflow.cli"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (or the file itself) with its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def model_dir(store_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "model"
    train_models(open_store(store_path), out, TrainConfig(params=FAST))
    return out


@pytest.fixture(scope="module")
def preds_file(model_dir, store_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "preds.parquet"
    assert run("predict", model_dir, store_path, "-o", out).exit_code == 0
    return out


@pytest.fixture
def params_toml(tmp_path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST_TOML)
    return path


@pytest.fixture
def notes_dir(tmp_path) -> Path:
    """A user's folder: notes and a file of their own."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("three weeks of notes\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.bin").write_bytes(os.urandom(64))
    return folder


# -- data loss -----------------------------------------------------------------------------------

def test_ingest_into_the_folder_holding_its_source_keeps_the_folder(tmp_path, synth_dir):
    mydir = tmp_path / "mydir"
    mydir.mkdir()
    shutil.copy(synth_dir / "train.parquet", mydir / "train.parquet")
    (mydir / "notes.txt").write_text("my notes\n")
    before = snapshot(mydir)
    assert_refused(run("ingest", mydir / "train.parquet", mydir), "holds the input")
    assert snapshot(mydir) == before
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("command", ["ingest", "train", "evaluate"])
def test_an_existing_folder_of_the_user_is_never_replaced(command, notes_dir, synth_dir, store_path, preds_file,
                                                          params_toml):
    argv = {"ingest": ["ingest", synth_dir / "train.parquet", notes_dir],
            "train": ["train", store_path, "-o", notes_dir, "--params", params_toml],
            "evaluate": ["evaluate", preds_file, "--store", store_path, "-o", notes_dir]}[command]
    before = snapshot(notes_dir)
    assert_refused(run(*argv), "is not an eraflow")
    assert snapshot(notes_dir) == before
    assert temporaries(notes_dir.parent) == []


def test_evaluate_onto_an_existing_file_keeps_it(tmp_path, store_path, preds_file):
    mine = tmp_path / "mine.parquet"
    shutil.copy(preds_file, mine)
    assert_refused(run("evaluate", preds_file, "--store", store_path, "-o", mine), "is an existing file")
    assert mine.read_bytes() == preds_file.read_bytes()
    assert temporaries(tmp_path) == []


def test_an_output_that_is_an_input_is_refused(tmp_path, store_path, preds_file, model_dir):
    copy = tmp_path / "p.parquet"
    shutil.copy(preds_file, copy)
    assert_refused(run("neutralize", copy, "--store", store_path, "-o", copy), "is an input")
    assert_refused(run("train", store_path, "-o", store_path), "is an input")
    assert_refused(run("predict", model_dir, store_path, "-o", model_dir), "is an input")
    assert copy.read_bytes() == preds_file.read_bytes()


def test_a_users_parquet_is_not_overwritten_by_predict(tmp_path, model_dir, store_path):
    mine = write_parquet(tmp_path / "mine.parquet", tiny_frame())
    before = mine.read_bytes()
    assert_refused(run("predict", model_dir, store_path, "-o", mine), "is not a predictions file eraflow wrote")
    assert mine.read_bytes() == before


def test_an_output_inside_another_eraflow_output_is_refused(tmp_path, store_path, model_dir, preds_file,
                                                              params_toml):
    store = tmp_path / "store"
    shutil.copytree(store_path, store)
    assert_refused(run("train", store, "-o", store / "model", "--params", params_toml), "is inside the eraflow store")
    assert_refused(run("predict", model_dir, store, "-o", model_dir / "p.parquet"), "is inside the eraflow model")
    assert not (store / "model").exists() and not (model_dir / "p.parquet").exists()


def test_a_folder_with_a_foreign_metrics_or_model_json_is_not_taken_for_eraflows(tmp_path, store_path, preds_file,
                                                                                 params_toml):
    for name, command in (("metrics.json", ["evaluate", preds_file, "--store", store_path]),
                          ("model.json", ["train", store_path, "--params", params_toml])):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text('{"accuracy": 0.9}')
        assert_refused(run(*command, "-o", folder), "is not an eraflow")
        assert (folder / name).read_text() == '{"accuracy": 0.9}'


def test_predictions_written_before_the_marker_are_still_eraflows(tmp_path, model_dir, store_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"id": pa.array(["a"], pa.string()), "era": pa.array(["0001"], pa.string()),
               "pred_target": pa.array([0.5], pa.float32())}
    earlier = tmp_path / "earlier.parquet"
    pq.write_table(pa.table(columns), earlier)  # what write_predictions wrote before markers
    assert run("predict", model_dir, store_path, "-o", earlier).exit_code == 0
    assert is_own_output(earlier, "predictions") and pq.read_metadata(earlier).num_rows > 1
    mine = tmp_path / "mine.parquet"
    pd.DataFrame({"id": ["a"], "era": ["0001"], "pred_target": [0.5]}).astype({"pred_target": "float32"}).to_parquet(
        mine, index=False)
    assert_refused(run("predict", model_dir, store_path, "-o", mine), "is not a predictions file eraflow wrote")


# -- eraflow replaces its own output -------------------------------------------------------------

def test_rerunning_over_its_own_output_works(tmp_path, synth_dir, store_path, model_dir, params_toml):
    store, model, report = tmp_path / "store", tmp_path / "model", tmp_path / "report"
    preds, neutral, per_era = tmp_path / "preds.parquet", tmp_path / "neutral.parquet", tmp_path / "per_era.parquet"
    src = synth_dir / "train.parquet"
    for _ in range(2):
        assert run("ingest", src, store, "--force", "--quiet").exit_code == 0
        assert run("train", store_path, "-o", model, "--params", params_toml, "--quiet").exit_code == 0
        assert run("predict", model, store_path, "-o", preds).exit_code == 0
        assert run("neutralize", preds, "--store", store_path, "--proportion", "0.5", "-o", neutral).exit_code == 0
        assert run("score", preds, "--store", store_path, "--per-era", per_era).exit_code == 0
        assert run("export", model_dir, "-o", tmp_path / "model.pkl").exit_code == 0
        for name in ("live.parquet", "live.csv"):
            assert run("live", model_dir, "--data", synth_dir, "-o", tmp_path / name).exit_code == 0
    runs = [json.loads(run("evaluate", preds, "--store", store_path, "-o", report, "--json").stdout)["run_id"]
            for _ in range(2)]
    for _ in range(2):
        assert run("runs", "compare", *runs, "--plot", tmp_path / "compare.png").exit_code == 0
    kinds = {store: "store", model: "model", report: "report", preds: "predictions", neutral: "predictions",
             per_era: "per_era", tmp_path / "model.pkl": "export", tmp_path / "live.parquet": "submission",
             tmp_path / "live.csv": "submission", tmp_path / "compare.png": "plot"}
    for path, kind in kinds.items():
        assert is_own_output(path, kind), (path, kind)
    assert not is_own_output(preds, "submission") and not is_own_output(store, "model")
    assert temporaries(tmp_path) == []


def test_the_exported_pickle_is_recognised_without_loading_it(tmp_path, model_dir):
    import cloudpickle

    out = tmp_path / "model.pkl"
    assert run("export", model_dir, "-o", out).exit_code == 0
    assert EXPORT_MARK.encode() in out.read_bytes()
    assert cloudpickle.loads(out.read_bytes()).eraflow_output == EXPORT_MARK
    other = tmp_path / "other.pkl"
    other.write_bytes(cloudpickle.dumps({"a": 1}))
    assert_refused(run("export", model_dir, "-o", other), "is not a model pickle eraflow wrote")


def test_a_submission_csv_is_replaced_only_when_it_is_one(tmp_path, model_dir, synth_dir):
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("id,prediction,comment\nx,0.5,mine\n")
    assert_refused(run("live", model_dir, "--data", synth_dir, "-o", theirs), "is not a submission file")
    assert theirs.read_text() == "id,prediction,comment\nx,0.5,mine\n"
    ours = tmp_path / "ours.csv"
    ours.write_text("id,prediction\nx,0.5\n")
    assert run("live", model_dir, "--data", synth_dir, "-o", ours).exit_code == 0
    assert ours.read_text().startswith("id,prediction\n") and len(ours.read_text().splitlines()) > 2


# -- paths that are not outputs ------------------------------------------------------------------

def test_the_current_directory_is_refused(tmp_path, monkeypatch, store_path, model_dir, preds_file, params_toml):
    (tmp_path / "notes.txt").write_text("notes\n")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(run("train", store_path, "-o", ".", "--params", params_toml), "is the current directory")
    assert_refused(run("evaluate", preds_file, "--store", store_path, "-o", "."), "is the current directory")
    assert_refused(run("predict", model_dir, store_path, "-o", "."), "is a directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["predict", "neutralize", "score", "export", "live", "compare"])
def test_a_file_output_that_is_a_directory_is_refused(command, notes_dir, model_dir, store_path, preds_file,
                                                      synth_dir):
    argv = {"predict": ["predict", model_dir, store_path, "-o", notes_dir],
            "neutralize": ["neutralize", preds_file, "--store", store_path, "-o", notes_dir],
            "score": ["score", preds_file, "--store", store_path, "--per-era", notes_dir],
            "export": ["export", model_dir, "-o", notes_dir],
            "live": ["live", model_dir, "--data", synth_dir, "-o", notes_dir],
            "compare": ["runs", "compare", "run-a", "run-b", "--plot", notes_dir]}[command]
    before = snapshot(notes_dir)
    assert_refused(run(*argv), "is a directory; give a file path")
    assert snapshot(notes_dir) == before


@pytest.mark.parametrize("command, work", [
    ("predict", "eraflow.cli.models.predict_table"),
    ("export", "eraflow.cli.live.load_model"),
    ("live", "eraflow.cli.live.load_model"),
    ("neutralize", "eraflow.cli.scores.align_predictions"),
    ("score", "eraflow.cli.scores.align_predictions"),
])
def test_a_missing_output_folder_is_found_before_the_work(command, work, monkeypatch, tmp_path, model_dir,
                                                          store_path, preds_file, synth_dir):
    def no_work(*args, **kwargs):
        raise AssertionError("the work ran before the output path was checked")

    monkeypatch.setattr(work, no_work)
    out = tmp_path / "nodir" / "out.parquet"
    argv = {"predict": ["predict", model_dir, store_path, "-o", out],
            "export": ["export", model_dir, "-o", out],
            "live": ["live", model_dir, "--data", synth_dir, "-o", out],
            "neutralize": ["neutralize", preds_file, "--store", store_path, "-o", out],
            "score": ["score", preds_file, "--store", store_path, "--per-era", out]}[command]
    assert_refused(run(*argv), "there is no directory")
    assert not (tmp_path / "nodir").exists()


def test_a_symbolic_link_output_is_refused_and_kept(tmp_path, store_path, model_dir, preds_file, params_toml):
    src = write_parquet(tmp_path / "x.parquet", tiny_frame())
    real_store = tmp_path / "real_store"
    assert run("ingest", src, real_store, "--quiet").exit_code == 0
    links = {"store": tmp_path / "store_link", "model": tmp_path / "model_link", "preds": tmp_path / "preds_link"}
    links["store"].symlink_to(real_store, target_is_directory=True)
    links["model"].symlink_to(model_dir, target_is_directory=True)
    shutil.copy(preds_file, tmp_path / "preds.parquet")
    links["preds"].symlink_to(tmp_path / "preds.parquet")
    before = {name: snapshot(link.resolve()) for name, link in links.items()}
    assert_refused(run("ingest", src, links["store"], "--force"), "is a symbolic link")
    assert_refused(run("train", store_path, "-o", links["model"], "--params", params_toml), "is a symbolic link")
    assert_refused(run("predict", model_dir, store_path, "-o", links["preds"]), "is a symbolic link")
    assert all(link.is_symlink() for link in links.values())
    assert {name: snapshot(link.resolve()) for name, link in links.items()} == before


# -- temporaries of dead writers -----------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_go_and_those_of_live_ones_stay(tmp_path, model_dir, store_path):
    out = tmp_path / "preds.parquet"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead_file = tmp_path / f"preds.parquet.tmp-{_dead_pid()}-0badc0de"
        dead_file.write_bytes(b"half a parquet")
        live_file = tmp_path / f"preds.parquet.tmp-{alive.pid}-0badc0de"
        live_file.write_bytes(b"being written")
        assert run("predict", model_dir, store_path, "-o", out).exit_code == 0
        assert not dead_file.exists(), "a dead writer's temporary is removed by the next run"
        assert live_file.read_bytes() == b"being written", "a live writer's temporary is kept"
    finally:
        alive.kill()
        alive.wait()


def test_a_killed_train_leaves_no_temporary_after_the_next_run(tmp_path, store_path, params_toml):
    slow = tmp_path / "slow.toml"
    slow.write_text("n_estimators = 100000\nlearning_rate = 0.0001\nnum_threads = 1\n")
    model = tmp_path / "model"
    proc = subprocess.Popen([*ERAFLOW, "train", store_path, "-o", model, "--params", slow, "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob("model.tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "train was still running when killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("model.tmp-*")), "the killed train left its temporary"
    assert run("train", store_path, "-o", model, "--params", params_toml, "--quiet").exit_code == 0
    assert temporaries(tmp_path) == []
    assert (model / "model.json").is_file()


# -- failed writes -------------------------------------------------------------------------------

def _limit_file_size(limit: int) -> None:
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (the hard limit is kept, so it can be undone)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _run_on_a_full_disk(argv: list, in_process: bool) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``eraflow argv`` when files cannot grow past 4 KiB."""
    if not in_process:
        proc = subprocess.run([*ERAFLOW, *map(str, argv)], preexec_fn=lambda: _limit_file_size(4096),
                              capture_output=True, text=True)
        return proc.returncode, proc.stderr.strip().splitlines()
    # pyarrow can abort a process that exits right after a failed write (apache/arrow#34314): run it here
    handler, limits = signal.getsignal(signal.SIGXFSZ), resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        _limit_file_size(4096)
        result = run(*argv)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    return result.exit_code, result.stderr.strip().splitlines()


@pytest.mark.parametrize("kind", ["model", "predictions file", "report"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_output(kind, tmp_path, model_dir, store_path, preds_file,
                                                               params_toml):
    out = tmp_path / {"model": "model", "predictions file": "preds.parquet", "report": "report"}[kind]
    argv = {"model": ["train", store_path, "-o", out, "--params", params_toml, "--quiet"],
            "predictions file": ["predict", model_dir, store_path, "-o", out],
            "report": ["evaluate", preds_file, "--store", store_path, "-o", out]}[kind]
    assert run(*argv).exit_code == 0
    before = snapshot(out)
    status, stderr = _run_on_a_full_disk(argv, in_process=kind == "predictions file")
    assert status == 2, stderr
    *library, error = stderr
    assert all(line.startswith("[LightGBM] [Fatal]") for line in library), stderr  # LightGBM's own C++ line
    reason = ("LightGBM could not write all of model_target.txt (is the disk full?)" if kind == "model"
              else "file too large")
    assert error == f"error: cannot write the {kind} {out}: {reason}; an existing one is left as it was"
    assert snapshot(out) == before
    assert temporaries(tmp_path) == []


@pytest.fixture
def read_only(tmp_path):
    """Make a folder unwritable: chmod for a user; root writes anywhere, so the immutable flag (chattr +i)."""
    made = []

    def make(folder: Path) -> None:
        if os.geteuid() != 0:
            folder.chmod(0o555)
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root where chattr +i is not available: no folder is read-only")
        made.append(folder)

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_folder_is_one_line_and_keeps_the_previous_output(tmp_path, model_dir, read_only):
    out = tmp_path / "out"
    out.mkdir()
    assert run("export", model_dir, "-o", out / "model.pkl").exit_code == 0
    before = snapshot(out)
    read_only(out)
    proc = subprocess.run([*ERAFLOW, "export", str(model_dir), "-o", str(out / "model.pkl")], capture_output=True,
                          text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: cannot write {out / 'model.pkl'}: the directory {out} "
                                                "is not writable"]
    assert snapshot(out) == before
