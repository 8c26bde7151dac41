"""The command line of the network kinds (gtruda, mlp): ``--epochs`` and ``--batch-size`` (refused for
other kinds and below 1, on one line, before anything is written), ``[train] epochs``/``batch_size`` in
pipelines, and progress in epochs with the batches of the current epoch: the status stream of
:class:`~eraflow.engine.models.train.RoundCounter`, the log lines off a terminal and the bars on one.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from eraflow.cli import cli, progress
from eraflow.engine import SynthSpec
from eraflow.engine.errors import InputError
from eraflow.engine.models.kind import TRAINABLE
from eraflow.engine.models.params import NETWORK_KINDS, check_network_option
from eraflow.engine.models.train import RoundCounter
from eraflow.engine.numerai.pipeline import run_pipeline, train_params

from .conftest import synthetic_store

EPOCHS, BATCHES = 3, 4
CORRS = (0.02, 0.05, 0.03)  # validation corr after each epoch of the fake network: best at epoch 2
networks_ready = pytest.mark.skipif(not set(NETWORK_KINDS) <= set(TRAINABLE), reason="gtruda/mlp kinds not written yet")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("nn_cli"),
                           SynthSpec(eras=20, rows_per_era=60, features=20, unlabeled_eras=0, seed=5))


def invoke(*argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def assert_refused(result, *words: str) -> None:
    """Exit 2 with one line on stderr naming ``words``."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.count("\n") == 1 and all(w in result.stderr for w in words), result.stderr


# --- --epochs and --batch-size ------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
@pytest.mark.parametrize("kind", ["lgbm", "linear"])
def test_network_options_are_refused_for_other_kinds(option, kind, store, tmp_path):
    """Guards against --epochs reaching a boosting kind's parameters (LightGBM would reject or ignore it)."""
    result = invoke("train", store.path, "-o", tmp_path / "m", "--quiet", "--model", kind, option, "5")
    assert_refused(result, option, "gtruda, mlp", repr(kind))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", [0, -3, True, 2.5, "5"])
def test_network_options_take_whole_numbers_of_at_least_one(value):
    with pytest.raises(InputError, match="--epochs must be a whole number ≥ 1"):
        check_network_option("--epochs", value, "mlp")
    check_network_option("--epochs", 1, "gtruda")
    check_network_option("--epochs", None, "lgbm")  # not given: nothing to refuse


@networks_ready
@pytest.mark.parametrize("option,value", [("--epochs", "0"), ("--batch-size", "-64")])
def test_zero_or_negative_counts_are_refused_on_one_line(option, value, store, tmp_path):
    result = invoke("train", store.path, "-o", tmp_path / "m", "--quiet", "--model", "mlp", option, value)
    assert_refused(result, option, value)
    assert not (tmp_path / "m").exists()


# --- pipelines ----------------------------------------------------------------------------------------------

PIPELINE = """workdir = "work"
[data]
source = "synthetic"
eras = 12
rows_per_era = 40
features = 20
[train]
model = "{model}"
{extra}
"""


def write_pipeline(tmp_path, model: str, extra: str):
    path = tmp_path / "pipeline.toml"
    path.write_text(PIPELINE.format(model=model, extra=extra))
    return path


@pytest.mark.parametrize("model,extra,message", [
    ("lgbm", "epochs = 5", "pipeline.toml [train] epochs applies to the network kinds (gtruda, mlp)"),
    ("xgb", "batch_size = 64", "[train] batch_size applies to the network kinds"),
    ("lgbm", 'epochs = "ten"', "[train] epochs must be a whole number"),
])
def test_bad_network_keys_in_a_pipeline_fail_before_any_work(tmp_path, model, extra, message):
    path = write_pipeline(tmp_path, model, extra)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run_pipeline(path)
    result = invoke("run", path)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "work").exists()


def test_pipeline_epochs_and_batch_size_join_the_kind_params(tmp_path):
    (tmp_path / "nn.toml").write_text("epochs = 9\ndropout = 0.2\n")
    train = {"model": "mlp", "params": str(tmp_path / "nn.toml"), "epochs": 2, "batch_size": 64}
    assert train_params(train, tmp_path / "p.toml") == {"epochs": 2, "dropout": 0.2, "batch_size": 64}
    with pytest.raises(InputError, match=r"p.toml \[train\] batch_size must be a whole number ≥ 1, got 0"):
        train_params({"model": "gtruda", "batch_size": 0}, tmp_path / "p.toml")


# --- the status stream in epochs ----------------------------------------------------------------------------


def fake_network(counter: RoundCounter, model: str, epochs: int = EPOCHS, stop_eras: int = 3):
    """What a network kind reports over one fit: each epoch's batches, then its validation corr."""
    tracker = counter.start("target", model, epochs, 9, stop_eras)
    for epoch in range(1, epochs + 1):
        for done in range(1, BATCHES + 1):
            tracker.batch(done, BATCHES)
        tracker.step(epoch, CORRS[epoch - 1])
    counter.end(tracker, type("Fit", (), {"rounds": 2})())


@pytest.fixture
def stream():
    """The statuses of a fake two-model network training (a fold and the final model)."""
    seen = []
    counter = RoundCounter(2, EPOCHS, status=seen.append, unit="epoch")
    fake_network(counter, "fold 1/1")
    fake_network(counter, "final")
    return seen


def test_batch_events_count_the_batches_of_each_epoch_without_advancing_epochs(stream):
    """Guards against batches counted as rounds (the ETA and the bar would run ahead by a factor BATCHES)."""
    batches = [s for s in stream if s.event == "batch"]
    assert len(batches) == 2 * EPOCHS * BATCHES
    assert [(s.round, s.batch, s.batches) for s in batches[:BATCHES + 1]] == \
        [(0, b, BATCHES) for b in range(1, BATCHES + 1)] + [(1, 1, BATCHES)]
    assert [s.done for s in stream if s.event == "round"] == list(range(1, 2 * EPOCHS + 1))
    assert {s.unit for s in stream} == {"epoch"} and stream[-1].total == 2 * EPOCHS
    assert all(s.done == s.round + (EPOCHS if s.model == "final" else 0) for s in batches)


def test_log_lines_say_epoch_for_networks_and_round_for_boosting(stream):
    lines = [progress.train_line(s) for s in stream]
    assert lines[0] == "train target fold 1/1: up to 3 epochs on 9 eras, early stopping on 3 eras"
    assert lines[2].startswith("train target fold 1/1: epoch 1/3, batch 2/4, ") and "(0/6 epochs in all)" in lines[2]
    second = next(line for line, s in zip(lines, stream) if s.event == "round" and s.round == 2)
    assert second.startswith("train target fold 1/1: epoch 2/3, corr +0.0500 (best +0.0500 at epoch 2), ")
    assert lines[-1].startswith("train target final: done at epoch 3, best corr +0.0500 at epoch 2, ")
    assert not any(" round" in line for line in lines)
    boosting = []
    counter = RoundCounter(1, 5, status=boosting.append)
    tracker = counter.start("target", "final", 5, 9, 0)
    tracker.step(1, None)
    assert progress.train_line(boosting[-1]).startswith("train target final: round 1/5, ")


def test_the_eta_counts_the_share_of_the_current_epoch(stream):
    """Half of epoch 1 done after t seconds leaves 2.5 epochs of the fold and 3 of the final model."""
    half = next(s for s in stream if s.event == "batch" and s.batch == BATCHES // 2)
    assert progress._rounds_done(half) == 0.5
    assert progress._rounds_done(next(s for s in stream if s.event == "round")) == 1


def test_off_a_terminal_every_epoch_logs_and_batches_wait(stream, capsys):
    """A line per epoch (its validation corr) whatever the interval; batch lines at most every interval."""
    log = progress._TrainLog(every=3600.0)
    for status in stream:
        log(status)
    lines = capsys.readouterr().err.splitlines()
    assert sum(", corr " in line and "batch" not in line for line in lines) == 2 * EPOCHS
    assert not any(", batch " in line for line in lines)
    log = progress._TrainLog(every=0.0)
    for status in stream:
        log(status)
    assert sum(", batch " in line for line in capsys.readouterr().err.splitlines()) == 2 * EPOCHS * BATCHES


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_of_epochs_and_one_of_the_current_epochs_batches(monkeypatch):
    screen = _Terminal()
    monkeypatch.setattr(progress.sys, "stderr", screen)
    terminal = Console(file=screen, force_terminal=True, color_system=None, width=160)
    monkeypatch.setattr(progress, "Console", lambda **_: terminal)
    with progress.train_progress(quiet=False) as show:
        counter = RoundCounter(1, EPOCHS, status=show, unit="epoch")
        tracker = counter.start("target", "final", EPOCHS, 9, 3)
        for done in range(1, BATCHES + 1):
            tracker.batch(done, BATCHES)
        tracker.step(1, CORRS[0])
        tracker.batch(3, BATCHES)
        rounds, batches = show.bar.tasks
        assert (rounds.completed, rounds.total, rounds.fields["unit"]) == (1, EPOCHS, "epochs")
        assert rounds.fields["corr"] == "corr +0.0200 (best +0.0200)"
        assert (batches.visible, batches.description.strip(), batches.completed, batches.total) == \
            (True, "epoch 2", 3, BATCHES)
        show.bar.refresh()
        assert "epoch 2" in screen.getvalue() and "3/4 batches" in screen.getvalue()
        tracker.step(2, CORRS[1])
        counter.end(tracker, type("Fit", (), {"rounds": 2})())
        assert not show.bar.tasks[1].visible
    assert "train target final: done at epoch 2, best corr +0.0500 at epoch 2" in screen.getvalue()


# --- through the trainer: the kind names its unit -----------------------------------------------------------


class _EpochFit:
    rounds = 2

    def predict(self, x, offsets):
        return x[:, 0].astype(np.float64) + np.arange(len(x)) * 1e-6

    def save(self, model_dir, target):
        (model_dir / f"model_{target}.txt").write_text("fake")

    def describe(self):
        return {}


class _EpochKind:
    """A kind that reports like a network (unit "epoch", batches) without training one."""

    name, stops_early, unit = "linear", True, "epoch"

    def check_settings(self, params):
        return {"epochs": EPOCHS, **(params or {})}

    def resolve_device(self, device, settings):
        return "cpu"

    def max_rounds(self, settings):
        return settings["epochs"]

    def fit(self, data, settings, rounds, tracker):
        for epoch in range(1, (rounds or settings["epochs"]) + 1):
            for done in range(1, BATCHES + 1):
                tracker.batch(done, BATCHES)
            tracker.step(epoch, CORRS[epoch - 1])
        return _EpochFit()


def test_the_trainer_reports_in_the_kinds_unit(store, tmp_path, monkeypatch):
    """Guards against the unit lost between the kind and the log (a network's log saying "round")."""
    monkeypatch.setattr("eraflow.engine.models.train.get_kind", lambda name: _EpochKind())
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    result = invoke("train", store.path, "-o", tmp_path / "m", "--model", "linear", "--valid-eras", "0017:")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("train target")]
    assert lines[0] == "train target final: up to 3 epochs on 12 eras, early stopping on 4 eras"  # embargo 4
    assert "train target final: epoch 3/3, batch 4/4, best corr +0.0500 at epoch 2, " in "\n".join(lines)
    assert lines[-1].startswith("train target final: done at epoch 3, best corr +0.0500 at epoch 2, ")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["rounds"] == {"target": 2}


# --- end to end with the real kinds (torch) -----------------------------------------------------------------

EPOCH_LINE = re.compile(r"^train target final: epoch (\d+)/2, corr ([+-]\d\.\d{4}) \(best ")
BATCH_LINE = re.compile(r"^train target final: epoch (\d+)/2, batch (\d+)/(\d+)")


@networks_ready
def test_mlp_trains_with_the_epochs_and_batch_size_given_and_logs_each_epochs_validation_corr(store, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    (tmp_path / "small.toml").write_text("widths = [16]\nepochs = 9\n")  # --epochs wins over the file
    result = invoke("train", store.path, "-o", tmp_path / "m", "--model", "mlp", "--params", tmp_path / "small.toml",
                    "--epochs", "2", "--batch-size", "64", "--valid-eras", "0017:")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (meta["params"]["epochs"], meta["params"]["batch_size"], meta["params"]["widths"]) == (2, 64, [16])
    fitted = meta["fitted"]["target"]
    lines = result.stderr.splitlines()
    epochs = [m.groups() for m in map(EPOCH_LINE.match, lines) if m]
    assert [int(e) for e, _ in epochs] == list(range(1, fitted["epochs_run"] + 1)), lines
    assert [float(c) for _, c in epochs] == pytest.approx(fitted["valid_corr"], abs=5e-5), \
        "the log shows each epoch's validation corr, the one model.json records"
    batches = [tuple(map(int, m.groups())) for m in map(BATCH_LINE.match, lines) if m]
    per_epoch = {total for _, _, total in batches}
    assert len(per_epoch) == 1 and abs(per_epoch.pop() - fitted["rows"] / 64) <= 1, batches
    assert [b for epoch, b, _ in batches if epoch == 1] == list(range(1, batches[0][2] + 1))


@networks_ready
def test_a_pipeline_passes_epochs_and_batch_size_to_a_network(tmp_path):
    (tmp_path / "small.toml").write_text("widths = [16]\n")
    path = write_pipeline(tmp_path, "mlp", 'params = "small.toml"\nepochs = 1\nbatch_size = 32\nvalid_eras = "0010:"')
    result = invoke("run", path)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "work" / "model" / "model.json").read_text())
    assert (meta["kind"], meta["params"]["epochs"], meta["params"]["batch_size"]) == ("mlp", 1, 32)
    assert any(line.startswith("train target final: done at epoch 1") for line in result.stderr.splitlines())
