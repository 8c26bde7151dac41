"""Numerai API layer without network: a fake numerapi client serving real parquet and JSON files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine.errors import InputError, LockedError
from eraflow.engine.lock import exclusive_lock
from eraflow.engine.numerai.numerai import (
    MANIFEST,
    Credentials,
    NumeraiError,
    download_datasets,
    load_credentials,
    numerai_client,
    part_paths,
    submit_predictions,
)

VERSION = "v5.2"
CHUNK = 512  # the fake's write size (numerapi writes 1 MiB chunks)
SECRET = "S3CR3T-KEY-0123456789"
LIVE_IDS = [f"n{i:04d}" for i in range(30)]


class FakeNumerAPI:
    """The numerapi methods eraflow calls, over in-memory files; ``download_dataset`` acts as numerapi's.

    numerapi writes ``dest_path + ".temp"`` in chunks, resumes an existing ``.temp`` from its size
    (an HTTP Range request) and renames it to ``dest_path``; ``fail_after[name] = n`` makes the
    next download of ``name`` raise once it has written at least ``n`` bytes.
    """

    def __init__(self, files: dict[str, bytes], round_num: int = 1000):
        self.files = dict(files)
        self.round = round_num
        self.models = {"my_model": "model-uuid-1", "other": "model-uuid-2"}
        self.token = ("PUBLICID", SECRET)
        self.fail_after: dict[str, int] = {}
        self.sent: dict[str, list[int]] = {}  # bytes sent per download call
        self.calls: list[str] = []
        self.uploads: list[tuple[str, str, bytes]] = []
        self.error: Exception | None = None  # raised by every API call when set

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.error is not None:
            raise self.error

    def list_datasets(self, round_num=None):
        self._call("list_datasets")
        return sorted(self.files)

    def get_current_round(self, tournament=None):
        self._call("get_current_round")
        return self.round

    def download_dataset(self, filename, dest_path=None, round_num=None):
        self._call(f"download_dataset {filename}")
        data, dest = self.files[filename], dest_path or filename
        temp = dest + ".temp"
        if os.path.exists(dest) and os.path.getsize(dest) == len(data):
            return dest
        pos = os.path.getsize(temp) if os.path.exists(temp) else 0
        if pos >= len(data):
            os.remove(temp)
            pos = 0
        sent = self.sent.setdefault(filename, [])
        sent.append(0)
        with open(temp, "ab") as fh:
            while pos < len(data):
                if filename in self.fail_after and pos >= self.fail_after[filename]:
                    del self.fail_after[filename]
                    raise requests.exceptions.ChunkedEncodingError("connection broken")
                chunk = data[pos:pos + CHUNK]
                fh.write(chunk)
                pos += len(chunk)
                sent[-1] += len(chunk)
        os.replace(temp, dest)
        return dest

    def get_models(self, tournament=None):
        self._call("get_models")
        return dict(self.models)

    def upload_predictions(self, file_path="predictions.csv", model_id=None, **_):
        self._call("upload_predictions")
        self.uploads.append((os.path.basename(file_path), model_id, Path(file_path).read_bytes()))
        return "submission-uuid-42"


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def era_table(n: int, seed: int, first_era: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": [f"r{seed}_{i:05d}" for i in range(n)],
                     "era": [f"{first_era + i // 100:04d}" for i in range(n)],
                     "feature_a": pa.array(rng.integers(0, 5, n).astype(np.int8)),
                     "feature_b": pa.array(rng.integers(0, 5, n).astype(np.int8)),
                     "target": pa.array(rng.uniform(0, 1, n).astype(np.float32))})


def live_bytes(ids: list[str], seed: int = 0) -> bytes:
    """Numerai's live.parquet keeps ids as the pandas index."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"id": ids, "era": "X", "feature_a": rng.integers(0, 5, len(ids)).astype(np.int8)})
    sink = io.BytesIO()
    frame.set_index("id").to_parquet(sink)
    return sink.getvalue()


def served_files() -> dict[str, bytes]:
    files = {
        "train.parquet": parquet_bytes(era_table(2000, 1)),
        "validation.parquet": parquet_bytes(era_table(800, 2, first_era=21)),
        "live.parquet": live_bytes(LIVE_IDS),
        "features.json": json.dumps({"feature_sets": {"small": ["feature_a"], "all": ["feature_a", "feature_b"]},
                                     "targets": ["target"]}).encode(),
        "meta_model.parquet": parquet_bytes(pa.table({"id": ["a", "b"], "numerai_meta_model": [0.1, 0.2]})),
        "validation_benchmark_models.parquet": parquet_bytes(pa.table({"id": ["a"], "v5_lgbm": [0.5]})),
        "live_benchmark_models.parquet": parquet_bytes(pa.table({"id": ["a"], "v5_lgbm": [0.6]})),
    }
    listing = {f"{VERSION}/{name}": data for name, data in files.items()}
    listing["v5.0/train.parquet"] = files["train.parquet"]
    listing["v4.3/train.parquet"] = files["train.parquet"]
    return listing


@pytest.fixture
def fake() -> FakeNumerAPI:
    return FakeNumerAPI(served_files())


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MANIFEST
                  and not p.name.endswith(".lock"))


# ---------------------------------------------------------------- downloads


def test_downloads_land_with_the_served_bytes(fake, tmp_path):
    out = tmp_path / "data"
    got = download_datasets(fake, out, VERSION, ["train", "validation", "live", "features", "meta_model"])
    assert [d.name for d in got] == [f"{VERSION}/{f}" for f in ("train.parquet", "validation.parquet",
                                                                 "live.parquet", "features.json",
                                                                 "meta_model.parquet")]
    for d in got:
        assert not d.skipped and d.path.read_bytes() == fake.files[d.name], d.name
        assert d.bytes == len(fake.files[d.name])
    assert leftovers(out) == []
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"]["live.parquet"]["round"] == 1000 and manifest["pending"] == {}
    assert manifest["files"]["train.parquet"] == {"dataset": "v5.2/train.parquet", "round": None,
                                                  "bytes": len(fake.files["v5.2/train.parquet"])}


def test_a_second_run_skips_present_files(fake, tmp_path):
    download_datasets(fake, tmp_path, VERSION, ["train", "features", "live"])
    fake.calls.clear()
    again = download_datasets(fake, tmp_path, VERSION, ["train", "features", "live"])
    assert all(d.skipped for d in again)
    assert not [c for c in fake.calls if c.startswith("download_dataset")]


def test_a_file_placed_by_hand_counts_as_present(fake, tmp_path):
    (tmp_path / "train.parquet").write_bytes(fake.files["v5.2/train.parquet"])
    (got,) = download_datasets(fake, tmp_path, VERSION, ["train"])
    assert got.skipped and "download_dataset v5.2/train.parquet" not in fake.calls


def test_an_interrupted_download_leaves_no_final_file_and_resumes(fake, tmp_path):
    name = "v5.2/train.parquet"
    size = len(fake.files[name])
    fake.fail_after[name] = size // 2
    with pytest.raises(NumeraiError, match="network error while downloading v5.2/train.parquet"):
        download_datasets(fake, tmp_path, VERSION, ["train"])
    part, temp = part_paths(tmp_path, "train.parquet")
    assert not (tmp_path / "train.parquet").exists()
    written = temp.stat().st_size
    assert 0 < written < size and not part.exists()
    assert json.loads((tmp_path / MANIFEST).read_text())["pending"]["train.parquet"]["dataset"] == name
    (got,) = download_datasets(fake, tmp_path, VERSION, ["train"])
    assert fake.sent[name] == [written, size - written]  # the re-run sent only the rest
    assert got.path.read_bytes() == fake.files[name] and not got.skipped
    assert leftovers(tmp_path) == []


def test_a_partial_download_of_another_dataset_is_not_resumed(fake, tmp_path):
    fake.fail_after["v5.0/train.parquet"] = 1000
    with pytest.raises(NumeraiError):
        download_datasets(fake, tmp_path, "v5.0", ["train"])
    fake.files["v5.2/train.parquet"] = parquet_bytes(era_table(1500, 9))
    (got,) = download_datasets(fake, tmp_path, VERSION, ["train"])
    assert fake.sent["v5.2/train.parquet"] == [len(fake.files["v5.2/train.parquet"])]  # started afresh
    assert got.path.read_bytes() == fake.files["v5.2/train.parquet"]


def test_a_file_of_another_version_is_downloaded_again(fake, tmp_path):
    fake.files["v5.0/train.parquet"] = parquet_bytes(era_table(300, 5))
    download_datasets(fake, tmp_path, "v5.0", ["train"])
    (got,) = download_datasets(fake, tmp_path, VERSION, ["train"])
    assert not got.skipped and got.path.read_bytes() == fake.files["v5.2/train.parquet"]


def test_a_corrupted_download_raises_and_leaves_nothing(fake, tmp_path):
    fake.files["v5.2/validation.parquet"] = b"<html>502 Bad Gateway</html>" * 20
    with pytest.raises(InputError, match="downloaded v5.2/validation.parquet is not valid parquet"):
        download_datasets(fake, tmp_path, VERSION, ["validation"])
    assert not (tmp_path / "validation.parquet").exists()
    assert leftovers(tmp_path) == []
    assert json.loads((tmp_path / MANIFEST).read_text())["pending"] == {}


def test_a_corrupted_json_raises(fake, tmp_path):
    fake.files["v5.2/features.json"] = b'{"feature_sets": '
    with pytest.raises(InputError, match="features.json is not valid JSON"):
        download_datasets(fake, tmp_path, VERSION, ["features"])
    assert not (tmp_path / "features.json").exists() and leftovers(tmp_path) == []


def test_a_new_round_downloads_live_again_but_not_train(fake, tmp_path):
    download_datasets(fake, tmp_path, VERSION, ["train", "live"])
    fake.round = 1001
    fake.files["v5.2/live.parquet"] = live_bytes(LIVE_IDS[:20], seed=1)
    train, live = download_datasets(fake, tmp_path, VERSION, ["train", "live"])
    assert train.skipped and not live.skipped and live.round == 1001
    assert live.path.read_bytes() == fake.files["v5.2/live.parquet"]
    assert json.loads((tmp_path / MANIFEST).read_text())["files"]["live.parquet"]["round"] == 1001
    (same,) = download_datasets(fake, tmp_path, VERSION, ["live"])
    assert same.skipped


def test_an_interrupted_live_download_from_an_old_round_starts_afresh(fake, tmp_path):
    name = "v5.2/live.parquet"
    fake.fail_after[name] = 600
    with pytest.raises(NumeraiError):
        download_datasets(fake, tmp_path, VERSION, ["live"])
    fake.round = 1001
    fake.files[name] = live_bytes(LIVE_IDS, seed=5)
    (live,) = download_datasets(fake, tmp_path, VERSION, ["live"])
    assert fake.sent[name][-1] == len(fake.files[name])
    assert live.path.read_bytes() == fake.files[name]


def test_benchmarks_fetch_the_listed_files(fake, tmp_path):
    got = download_datasets(fake, tmp_path, VERSION, ["benchmarks"])
    assert [d.name for d in got] == ["v5.2/validation_benchmark_models.parquet",
                                     "v5.2/live_benchmark_models.parquet"]


def test_unknown_version_lists_numerais_versions(fake, tmp_path):
    with pytest.raises(InputError, match=r"unknown dataset version 'v9.9'; Numerai lists: v4.3, v5.0, v5.2"):
        download_datasets(fake, tmp_path, "v9.9", ["train"])


def test_unknown_key_fails_before_any_call(fake, tmp_path):
    with pytest.raises(InputError, match=r"unknown file key\(s\) 'tarin'; choose from train, validation"):
        download_datasets(fake, tmp_path, VERSION, ["tarin"])
    assert fake.calls == []


def test_a_key_whose_file_numerai_does_not_list(fake, tmp_path):
    with pytest.raises(InputError, match="Numerai lists no live.parquet for v5.0"):
        download_datasets(fake, tmp_path, "v5.0", ["live"])


@pytest.mark.parametrize("error, kind, message", [
    (requests.exceptions.ConnectionError("Max retries exceeded with url: https://x?sig=abc"), NumeraiError,
     "network error while listing Numerai's datasets (ConnectionError)"),
    (KeyError("data"), NumeraiError, "no answer from Numerai's API while listing Numerai's datasets"),
    (ValueError(f"Invalid API key {SECRET}"), InputError, "Numerai refused listing Numerai's datasets"),
])
def test_numerapi_errors_become_one_line_eraflow_errors(fake, tmp_path, error, kind, message):
    fake.error = error
    with pytest.raises(kind) as info:
        download_datasets(fake, tmp_path, VERSION, ["train"])
    text = str(info.value)
    assert message in text and "\n" not in text and SECRET not in text and "sig=" not in text


def test_out_dir_that_is_a_file_and_a_failed_listing(fake, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        download_datasets(fake, tmp_path / "f", VERSION, ["train"])
    fake.error = KeyError("data")
    with pytest.raises(NumeraiError):
        download_datasets(fake, tmp_path / "new", VERSION, ["train"])
    assert not (tmp_path / "new").exists()


def test_a_second_download_into_the_same_directory_waits_its_turn(fake, tmp_path):
    with exclusive_lock(tmp_path / MANIFEST), pytest.raises(LockedError, match="another process"):
        download_datasets(fake, tmp_path, VERSION, ["train"])
    assert not (tmp_path / "train.parquet").exists()


# ---------------------------------------------------------------- credentials


def test_credentials_from_env(monkeypatch):
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "PUBLICID")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET)
    creds = load_credentials()
    assert (creds.public_id, creds.secret_key, creds.source) == ("PUBLICID", SECRET, "environment")


def test_only_one_env_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "PUBLICID")
    with pytest.raises(InputError, match="NUMERAI_PUBLIC_ID is set but NUMERAI_SECRET_KEY is not"):
        load_credentials()


def write_config(path: Path, mode: int) -> Path:
    path.write_text(f'public_id = "PUBLICID"\nsecret_key = "{SECRET}"\n')
    path.chmod(mode)
    return path


def test_credentials_from_a_private_file(tmp_path, monkeypatch):
    path = write_config(tmp_path / "numerai.toml", 0o600)
    assert load_credentials(path) == Credentials("PUBLICID", SECRET, str(path))
    monkeypatch.setenv("ERAFLOW_NUMERAI_CONFIG", str(path))
    assert load_credentials().secret_key == SECRET


def test_a_world_readable_file_is_refused(tmp_path):
    path = write_config(tmp_path / "numerai.toml", 0o644)
    with pytest.raises(InputError) as info:
        load_credentials(path)
    assert f"run `chmod 600 {path}`" in str(info.value) and "0644" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_file_without_keys_or_not_toml(tmp_path):
    path = tmp_path / "numerai.toml"
    path.write_text('public_id = "PUBLICID"\n')
    path.chmod(0o600)
    with pytest.raises(InputError, match="must set public_id and secret_key"):
        load_credentials(path)
    path.write_text("public_id = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_credentials(path)


def test_missing_credentials_name_both_variables_and_the_file(tmp_path):
    with pytest.raises(InputError) as info:
        load_credentials()
    text = str(info.value)
    assert "NUMERAI_PUBLIC_ID" in text and "NUMERAI_SECRET_KEY" in text and "no-such-config.toml" in text
    assert load_credentials(required=False) is None


def test_repr_hides_the_secret():
    creds = Credentials("ABCDEFGH", SECRET)
    assert SECRET not in repr(creds) and SECRET not in str(creds) and SECRET not in f"{creds!r} {[creds]}"
    assert repr(creds) == "Credentials(public_id='ABCD…', secret_key=***, source='environment')"


def test_numerai_client_is_a_real_numerapi_client():
    import numerapi

    client = numerai_client(Credentials("PUBLICID", SECRET))
    assert isinstance(client, numerapi.NumerAPI)
    assert client.token == ("PUBLICID", SECRET) and client.show_progress_bars is False


# ---------------------------------------------------------------- submissions


def write_predictions(path: Path, ids=LIVE_IDS, values=None) -> Path:
    values = np.linspace(0.1, 0.9, len(ids)) if values is None else values
    pd.DataFrame({"id": ids, "prediction": values}).to_parquet(path, index=False)
    return path


def test_submit_uploads_only_the_validated_rows(fake, tmp_path):
    preds = write_predictions(tmp_path / "preds.parquet", LIVE_IDS[::-1] + ["not_live"],
                              np.r_[np.linspace(0.1, 0.9, len(LIVE_IDS)), 0.5])
    result = submit_predictions(fake, preds, "my_model", LIVE_IDS)
    assert (result.submission_id, result.model_id, result.rows, result.dropped) == (
        "submission-uuid-42", "model-uuid-1", len(LIVE_IDS), 1)
    (name, model_id, content), = fake.uploads
    uploaded = pd.read_csv(io.BytesIO(content), dtype={"id": str})
    assert name == "preds.csv" and model_id == "model-uuid-1"
    assert list(uploaded.columns) == ["id", "prediction"] and uploaded["id"].tolist() == sorted(LIVE_IDS)
    np.testing.assert_array_equal(uploaded["prediction"].to_numpy(), np.linspace(0.1, 0.9, len(LIVE_IDS))[::-1])


def test_submit_validates_before_any_call(fake, tmp_path):
    preds = write_predictions(tmp_path / "bad.parquet", LIVE_IDS, np.full(len(LIVE_IDS), 1.2))
    with pytest.raises(InputError, match=r"values must lie in \[0, 1\]"):
        submit_predictions(fake, preds, "my_model", LIVE_IDS)
    assert fake.calls == [] and fake.uploads == []


def test_submit_with_a_client_factory_makes_it_only_after_validation(fake, tmp_path):
    made = []

    def factory():
        made.append(1)
        return fake

    with pytest.raises(InputError):
        submit_predictions(factory, write_predictions(tmp_path / "short.parquet", LIVE_IDS[:-1]),
                           "my_model", LIVE_IDS)
    assert made == []
    submit_predictions(factory, write_predictions(tmp_path / "ok.parquet"), "my_model", LIVE_IDS)
    assert made == [1] and len(fake.uploads) == 1


def test_unknown_model_lists_the_accounts_models(fake, tmp_path):
    with pytest.raises(InputError, match=r"no model named 'mymodel' in this Numerai account "
                                         r"\(models: my_model, other\)"):
        submit_predictions(fake, write_predictions(tmp_path / "p.parquet"), "mymodel", LIVE_IDS)
    assert fake.uploads == []


def test_dry_run_uploads_nothing_and_needs_no_client(tmp_path):
    result = submit_predictions(None, write_predictions(tmp_path / "p.parquet"), "my_model", LIVE_IDS, dry_run=True)
    assert result.dry_run and result.rows == len(LIVE_IDS) and result.submission_id is None


def test_bad_credentials_on_upload_are_one_line_without_the_secret(fake, tmp_path):
    fake.error = ValueError(f"Your session is invalid or has expired ({SECRET})")
    with pytest.raises(InputError) as info:
        submit_predictions(fake, write_predictions(tmp_path / "p.parquet"), "my_model", LIVE_IDS)
    assert "check your API keys" in str(info.value) and SECRET not in str(info.value)


# ---------------------------------------------------------------- CLI


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def cli_fake(fake, monkeypatch):
    made = []

    def factory(*, auth, progress_bars=False):
        made.append(auth)
        return fake

    monkeypatch.setattr("eraflow.cli.numerai.client_factory", factory)
    fake.made = made
    return fake


def one_line_error(out, message: str) -> None:
    lines = out.stderr.strip().splitlines()
    assert out.exit_code == 2, out.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.output and SECRET not in out.output


def test_cli_download_then_present(cli_fake, tmp_path):
    out = run("download", tmp_path / "d", "--version", VERSION, "--files", "train,features")
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("v5.2/train.parquet") and lines[0].endswith("downloaded")
    assert "KiB" in lines[0] and lines[1].startswith("v5.2/features.json")
    assert cli_fake.made == [False]  # downloads do not need credentials
    out = run("download", tmp_path / "d", "--files", "train,features", "--json")
    record = json.loads(out.stdout)
    assert [f["status"] for f in record["files"]] == ["present", "present"]
    assert record["files"][0]["bytes"] == len(cli_fake.files["v5.2/train.parquet"])


def test_cli_download_default_files(cli_fake, tmp_path):
    out = run("download", tmp_path, "--json")
    names = [f["name"] for f in json.loads(out.stdout)["files"]]
    assert names == [f"v5.2/{f}" for f in ("train.parquet", "validation.parquet", "live.parquet",
                                           "features.json", "meta_model.parquet")]


@pytest.mark.parametrize("args, message", [
    (["--version", "v9"], "unknown dataset version 'v9'; Numerai lists: v4.3, v5.0, v5.2"),
    (["--files", "train,tarin"], "unknown file key(s) 'tarin'"),
    (["--files", ","], "no files asked for"),
])
def test_cli_download_bad_input(cli_fake, tmp_path, args, message):
    one_line_error(run("download", tmp_path, *args), message)


def test_cli_download_network_failure(cli_fake, tmp_path):
    cli_fake.fail_after["v5.2/train.parquet"] = 1000
    one_line_error(run("download", tmp_path, "--files", "train"), "network error while downloading")
    assert not (tmp_path / "train.parquet").exists()
    assert run("download", tmp_path, "--files", "train").exit_code == 0
    assert (tmp_path / "train.parquet").read_bytes() == cli_fake.files["v5.2/train.parquet"]


@pytest.fixture
def live_file(tmp_path) -> Path:
    path = tmp_path / "live.parquet"
    path.write_bytes(live_bytes(LIVE_IDS))
    return path


def test_cli_submit_prints_the_submission_id(cli_fake, tmp_path, live_file):
    preds = write_predictions(tmp_path / "p.parquet")
    out = run("submit", preds, "--model", "my_model", "--live", live_file)
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == f"submitted {len(LIVE_IDS)} rows for my_model: submission-uuid-42"
    assert cli_fake.made == [True]
    record = json.loads(run("submit", preds, "--model", "other", "--live", live_file, "--json").stdout)
    assert record["submission_id"] == "submission-uuid-42" and record["model_id"] == "model-uuid-2"


def test_cli_submit_dry_run_needs_no_client(cli_fake, tmp_path, live_file):
    out = run("submit", write_predictions(tmp_path / "p.parquet"), "--model", "x", "--live", live_file, "--dry-run")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == f"valid: {len(LIVE_IDS)} rows, dry run, nothing uploaded"
    assert cli_fake.made == [] and cli_fake.calls == []


def test_cli_submit_invalid_file_uploads_nothing(cli_fake, tmp_path, live_file):
    preds = write_predictions(tmp_path / "p.parquet", LIVE_IDS[1:])
    one_line_error(run("submit", preds, "--model", "my_model", "--live", live_file),
                   f"invalid submission: 1 live id(s) are missing (e.g. {LIVE_IDS[0]})")
    assert cli_fake.made == [] and cli_fake.uploads == []


def test_cli_submit_bad_input(cli_fake, tmp_path, live_file):
    preds = write_predictions(tmp_path / "p.parquet")
    one_line_error(run("submit", preds, "--model", "nobody", "--live", live_file), "no model named 'nobody'")
    one_line_error(run("submit", tmp_path / "none.csv", "--model", "m", "--live", live_file),
                   "no such prediction file")
    one_line_error(run("submit", preds, "--model", "m", "--live", tmp_path / "none.parquet"), "no such file")
    one_line_error(run("submit", preds, "--live", live_file), "Missing option '--model'")
    cli_fake.error = ValueError(f"Invalid API key ({SECRET})")
    one_line_error(run("submit", preds, "--model", "my_model", "--live", live_file), "check your API keys")


def test_cli_submit_without_credentials_uses_the_real_factory(tmp_path, live_file):
    out = run("submit", write_predictions(tmp_path / "p.parquet"), "--model", "m", "--live", live_file)
    one_line_error(out, "no Numerai credentials: set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY")


def test_cli_submit_refuses_a_shared_config_file(tmp_path, live_file, monkeypatch):
    config = write_config(tmp_path / "numerai.toml", 0o640)
    monkeypatch.setenv("ERAFLOW_NUMERAI_CONFIG", str(config))
    out = run("submit", write_predictions(tmp_path / "p.parquet"), "--model", "m", "--live", live_file)
    one_line_error(out, f"run `chmod 600 {config}`")


class _Answer:
    """A stand-in for the ``requests.Response`` numerapi's GraphQL helper reads."""

    status_code = 200

    def __init__(self, body: dict):
        self.body = body

    def raise_for_status(self) -> None:
        return None

    def json(self) -> dict:
        return self.body


def test_real_numerapi_errors_reach_the_cli_as_one_line(tmp_path, live_file, monkeypatch):
    """The real client: a refused key (GraphQL error) and a dead network (numerapi returns {})."""
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "PUBLICID")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET)
    preds = write_predictions(tmp_path / "p.parquet")
    monkeypatch.setattr("numerapi.utils.requests.post",
                        lambda *a, **k: _Answer({"errors": [{"message": "Invalid API key"}]}))
    one_line_error(run("submit", preds, "--model", "m", "--live", live_file),
                   "Numerai refused listing your models: Invalid API key; check your API keys")

    def unreachable(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr("numerapi.utils.requests.post", unreachable)
    one_line_error(run("download", tmp_path / "d", "--files", "train"),
                   "no answer from Numerai's API while listing Numerai's datasets")


def test_a_real_subprocess_prints_one_line(tmp_path, live_file):
    import subprocess
    import sys

    preds = write_predictions(tmp_path / "p.parquet", LIVE_IDS, np.full(len(LIVE_IDS), 0.5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMERAI_")}
    proc = subprocess.run([sys.executable, "-m", "eraflow.cli", "submit", str(preds), "--model", "m",
                           "--live", str(live_file), "--dry-run"], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    expected = ("error: invalid submission: `prediction` values are constant (standard deviation 0); "
                "Numerai needs varying predictions")
    assert proc.stderr.strip().splitlines() == [expected]
