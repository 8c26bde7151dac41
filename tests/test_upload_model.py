"""eraflow upload-model: an exported pickle sent through numerapi's model upload (a fake client here)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine.errors import InputError
from eraflow.engine.numerai.numerai import NumeraiError, upload_model
from eraflow.engine.outputs import EXPORT_MARK

MODELS = {"alpha": "id-alpha", "beta": "id-beta"}


class FakeModelUpload:
    """numerapi's ``get_models`` and ``model_upload``; records what each upload received."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.uploads: list[dict] = []

    def get_models(self) -> dict:
        return dict(MODELS)

    def model_upload(self, file_path: str, tournament=None, model_id=None, data_version=None, docker_image=None):
        if self.fail is not None:
            raise self.fail
        self.uploads.append({"name": Path(file_path).name, "bytes": Path(file_path).read_bytes(),
                             "model_id": model_id, "docker_image": docker_image})
        return "upload-1"


def export_like(path: Path) -> Path:
    """A pickle carrying eraflow's export mark, as `eraflow export` writes (the upload never unpickles it)."""
    path.write_bytes(pickle.dumps({"eraflow_output": EXPORT_MARK, "payload": list(range(100))}))
    return path


@pytest.fixture
def fake(monkeypatch) -> FakeModelUpload:
    client = FakeModelUpload()
    made = []

    def factory(*, auth, progress_bars=False):
        made.append(auth)
        return client

    monkeypatch.setattr("eraflow.cli.numerai.client_factory", factory)
    client.made = made
    return client


def test_upload_sends_the_file_for_the_models_id(tmp_path):
    path = export_like(tmp_path / "model.pkl")
    client = FakeModelUpload()
    result = upload_model(client, path, "beta", docker_image="Python 3.12")
    assert client.uploads == [{"name": "model.pkl", "bytes": path.read_bytes(), "model_id": "id-beta",
                               "docker_image": "Python 3.12"}]
    assert (result.model_name, result.model_id, result.upload_id, result.bytes) == (
        "beta", "id-beta", "upload-1", path.stat().st_size)


def test_cli_upload_model_uses_submits_credentials_and_prints_the_upload(fake, tmp_path):
    path = export_like(tmp_path / "model.pkl")
    result = CliRunner().invoke(cli, ["upload-model", str(path), "--model", "alpha"])
    assert result.exit_code == 0, result.output
    assert fake.made == [True]  # credentials required, as for submit
    assert fake.uploads[0]["model_id"] == "id-alpha" and fake.uploads[0]["docker_image"] is None
    assert result.output.strip().startswith(f"uploaded {path} (") and result.output.strip().endswith(": upload-1")
    result = CliRunner().invoke(cli, ["upload-model", str(path), "--model", "alpha", "--json"])
    assert '"upload_id": "upload-1"' in result.output


def missing(d: Path) -> Path:
    return d / "missing.pkl"


def plain_pickle(d: Path) -> Path:
    (d / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    return d / "plain.pkl"


def text_file(d: Path) -> Path:
    (d / "text.pkl").write_text("not a pickle")
    return d / "text.pkl"


def wrong_suffix(d: Path) -> Path:
    return export_like(d / "model.bin")


@pytest.mark.parametrize("make, message", [
    (missing, "is not a file; give the pickle written by `eraflow export`"),
    (plain_pickle, "is not a pickle written by `eraflow export`; export the model first"),
    (text_file, "is not a pickle written by"),
    (wrong_suffix, "must end in .pkl for Numerai's model upload; rename it"),
])
def test_a_file_that_is_not_an_export_is_refused_before_any_client_is_made(make, message, fake, tmp_path):
    path = make(tmp_path)
    result = CliRunner().invoke(cli, ["upload-model", str(path), "--model", "alpha"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert fake.made == [] and fake.uploads == []


def test_an_unknown_model_name_lists_the_accounts_models(tmp_path):
    client = FakeModelUpload()
    with pytest.raises(InputError, match=r"no model named 'gamma' in this Numerai account \(models: alpha, beta\)"):
        upload_model(client, export_like(tmp_path / "model.pkl"), "gamma")
    assert client.uploads == []


@pytest.mark.parametrize("fail, error, message", [
    (ValueError("'docker_image' needs to be one of['Python 3.11']"), InputError, "Numerai refused uploading model.pkl"),
    (KeyError("data"), NumeraiError, "no answer from Numerai's API while uploading model.pkl for 'alpha'"),
])
def test_api_failures_are_one_line_errors(fail, error, message, tmp_path):
    with pytest.raises(error, match=message):
        upload_model(FakeModelUpload(fail), export_like(tmp_path / "model.pkl"), "alpha", docker_image="Python 9")
