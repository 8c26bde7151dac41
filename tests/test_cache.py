"""The LightGBM Dataset cache: checksums, labels from the store, read-only stores, budget, list/clean."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from click.testing import CliRunner

from eraflow.cli import cli
from eraflow.engine import open_store
from eraflow.engine.data import cache
from eraflow.engine.models import lgb_data
from eraflow.engine.models.params import load_params
from eraflow.engine.models.train import TrainConfig, train_models

PARAMS = {**load_params("starter"), "n_estimators": 30, "learning_rate": 0.1, "colsample_bytree": 0.5,
          "deterministic": True, "force_col_wise": True, "num_threads": 1}


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """The user cache directory ($XDG_CACHE_HOME) of each test is its own."""
    path = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


@pytest.fixture
def store_copy(store_path, tmp_path) -> Path:
    """A private copy of the small synthetic store, without a cache."""
    path = tmp_path / "store"
    shutil.copytree(store_path, path, ignore=shutil.ignore_patterns("cache"))
    return path


def _train(store: Path, out: Path, **config) -> str:
    """Train the model of ``target`` and return its trees (the model text before its parameters)."""
    train_models(open_store(store), out, TrainConfig(params=PARAMS, **config))
    return (out / f"model_{config.get('targets', ('target',))[0]}.txt").read_text().split("parameters:")[0]


def _entries(store: Path) -> list[Path]:
    return sorted((store / "cache").glob("lgb-*.bin"))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "eraflow" and r.levelno == logging.WARNING]


def _count_reads(monkeypatch) -> list:
    """Record every block LightGBM reads from the store (none when a cached set is loaded)."""
    calls = []
    real = lgb_data.StoreRows.__getitem__
    monkeypatch.setattr(lgb_data.StoreRows, "__getitem__", lambda self, idx: calls.append(idx) or real(self, idx))
    return calls


@pytest.mark.parametrize("where", [0.01, 0.9], ids=["header", "bins"])
def test_damaged_cache_file_is_rebuilt_with_a_warning_and_the_model_equals_a_fresh_one(store_copy, tmp_path,
                                                                                        caplog, where):
    fresh = _train(store_copy, tmp_path / "a")
    (path,) = _entries(store_copy)
    data = bytearray(path.read_bytes())
    at = int(len(data) * where)
    data[at:at + 8] = bytes(b ^ 0x5A for b in data[at:at + 8])
    path.write_bytes(bytes(data))
    caplog.clear()
    assert _train(store_copy, tmp_path / "b") == fresh, "the damaged binary was rebuilt, not trained on"
    assert _warnings(caplog) == [f"cached dataset {path} is damaged (its sha256 differs from the one recorded "
                                 "when it was written); rebuilding it"]
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == cache.file_sha256(path) and record["bytes"] == path.stat().st_size


def _capture_saved(monkeypatch) -> list[lgb.Dataset]:
    saved = []
    real = lgb.Dataset.save_binary
    monkeypatch.setattr(lgb.Dataset, "save_binary", lambda self, f: saved.append(self) or real(self, f))
    return saved


def _rewrite_with_labels(dataset: lgb.Dataset, path: Path, label: np.ndarray) -> None:
    """Replace the cached binary by a valid one of the same rows and bins, with other labels."""
    dataset.set_label(label)
    other = path.with_name("other.bin")
    dataset.save_binary(str(other))
    other.replace(path)


def test_a_cached_binary_with_other_labels_is_detected_and_rebuilt(store_copy, tmp_path, caplog, monkeypatch):
    saved = _capture_saved(monkeypatch)
    fresh = _train(store_copy, tmp_path / "a")
    (path,) = _entries(store_copy)
    _rewrite_with_labels(saved[0], path, np.random.default_rng(0).random(saved[0].num_data()))
    caplog.clear()
    reads = _count_reads(monkeypatch)
    assert _train(store_copy, tmp_path / "b") == fresh
    assert reads, "rebuilt from the store"
    assert [w.split(" (")[0] for w in _warnings(caplog)] == [f"cached dataset {path} is damaged"]


def test_labels_always_come_from_the_store_even_from_a_binary_whose_record_was_rewritten(
        store_copy, tmp_path, caplog, monkeypatch):
    saved = _capture_saved(monkeypatch)
    fresh = _train(store_copy, tmp_path / "a")
    (path,) = _entries(store_copy)
    _rewrite_with_labels(saved[0], path, np.random.default_rng(0).random(saved[0].num_data()))
    record_path = path.with_suffix(".json")
    if record_path.exists():  # make the record match the new binary, as a deliberate edit would
        record = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**record, "bytes": path.stat().st_size, "sha256": cache.file_sha256(path)}))
    caplog.clear()
    reads = _count_reads(monkeypatch)
    assert _train(store_copy, tmp_path / "b") == fresh, "the store's labels, not the binary's"
    assert reads == [] and _warnings(caplog) == [], "the binary passed its (rewritten) check and was used"


def test_one_entry_serves_every_target(store_copy, tmp_path, monkeypatch):
    _train(store_copy, tmp_path / "a", targets=("target",))
    reads = _count_reads(monkeypatch)
    other = _train(store_copy, tmp_path / "b", targets=("target_cyrus_20",))  # labeled in the same eras
    assert reads == [] and len(_entries(store_copy)) == 1, "the set binned for `target` was reused"
    shutil.rmtree(store_copy / "cache")
    assert other == _train(store_copy, tmp_path / "c", targets=("target_cyrus_20",)), "same trees as a fresh set"


def _make_read_only(store: Path, monkeypatch) -> None:
    """chmod 0o555; where that does not stop writes (root), refuse them as a read-only mount does."""
    store.chmod(0o555)
    probe = store / "probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return
    probe.unlink()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == store or store in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_a_read_only_store_caches_in_the_user_cache_directory(store_copy, tmp_path, user_cache, caplog,
                                                              monkeypatch):
    fresh = _train(store_copy, tmp_path / "a")
    shutil.rmtree(store_copy / "cache")
    _make_read_only(store_copy, monkeypatch)
    try:
        caplog.clear()
        assert _train(store_copy, tmp_path / "b") == fresh
        fingerprint = open_store(store_copy).fingerprint
        where = user_cache / "eraflow" / "datasets" / fingerprint
        assert [w.split(" (")[0] for w in _warnings(caplog)] == [f"store {store_copy} cannot be written"]
        assert _warnings(caplog)[0].endswith(f": caching LightGBM datasets in {where}")
        assert len(list(where.glob("lgb-*.bin"))) == 1 and not (store_copy / "cache").exists()
        caplog.clear()
        reads = _count_reads(monkeypatch)
        assert _train(store_copy, tmp_path / "c") == fresh
        assert reads == [] and _warnings(caplog) == [], "reloaded from the user cache; the fallback said once"
        listed = CliRunner().invoke(cli, ["cache", "list", str(store_copy), "--json"])
        assert [Path(e["path"]).parent for e in json.loads(listed.output)["entries"]] == [where]
    finally:
        store_copy.chmod(0o755)


def test_new_entries_prune_the_least_recently_used_beyond_the_budget(store_copy, tmp_path, monkeypatch):
    _train(store_copy, tmp_path / "a", train_eras="0001:0010")
    (first,) = _entries(store_copy)
    monkeypatch.setattr(cache, "BUDGET_FACTOR", 0)
    monkeypatch.setattr(cache, "BUDGET_FLOOR", int(2.5 * first.stat().st_size))
    _train(store_copy, tmp_path / "b", train_eras="0001:0009")
    (second,) = set(_entries(store_copy)) - {first}
    _train(store_copy, tmp_path / "c", train_eras="0001:0010")  # uses the first again: now the second is oldest
    _train(store_copy, tmp_path / "d", train_eras="0001:0008")
    (third,) = set(_entries(store_copy)) - {first}
    assert not second.exists() and not second.with_suffix(".json").exists()
    assert sum(p.stat().st_size for p in _entries(store_copy)) <= cache.BUDGET_FLOOR
    assert sorted(p.name for p in (store_copy / "cache").iterdir()) == sorted(
        [first.name, first.with_suffix(".json").name, third.name, third.with_suffix(".json").name])


def _fake_entry(directory: Path, key: str, size: int, last_used: datetime, **record) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"lgb-{key}.bin"
    path.write_bytes(b"x" * size)
    full = {"format": cache.RECORD_FORMAT, "file": path.name, "bytes": size, "sha256": cache.file_sha256(path),
            "rows": 1200, "features": 40, "eras": ["0001", "0020"], "n_eras": 20,
            "created": last_used.isoformat(), "last_used": last_used.isoformat(), "command": "eraflow train s -o m"}
    path.with_suffix(".json").write_text(json.dumps({**full, **record}))
    return path


def _local(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M")


@pytest.fixture
def listed_store(store_copy, user_cache):
    """Two entries in the store's cache (one old), one in the user cache, an unrecorded file, a leftover."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    times = {"old": now - timedelta(days=40), "new": now - timedelta(hours=1), "user": now - timedelta(days=2)}
    cache_dir = store_copy / "cache"
    _fake_entry(cache_dir, "a" * 24, 3000, times["old"], command="eraflow train store -o m1 --cv 4")
    _fake_entry(cache_dir, "b" * 24, 1024, times["new"], rows=900, eras=["0001", "0015"], n_eras=15)
    (cache_dir / f"lgb-{'c' * 24}.bin").write_bytes(b"y" * 10)
    os.utime(cache_dir / f"lgb-{'c' * 24}.bin", (times["old"].timestamp() - 60,) * 2)
    (cache_dir / f"lgb-{'d' * 24}.bin.tmp-999999999-0a1b2c3d").write_bytes(b"z" * 100)
    user_dir = user_cache / "eraflow" / "datasets" / open_store(store_copy).fingerprint
    _fake_entry(user_dir, "e" * 24, 2048, times["user"])
    return store_copy, user_dir, times


def test_cache_list_shows_each_entry_and_the_total(listed_store):
    store, user_dir, t = listed_store
    result = CliRunner().invoke(cli, ["cache", "list", str(store)])
    assert result.exit_code == 0, result.output
    c_when = _local(datetime.fromtimestamp(t["old"].timestamp() - 60, timezone.utc))
    assert result.output.splitlines() == [
        f"{store / 'cache'}:",
        "  file                                 size   rows  features  eras             last used         made by",
        f"  lgb-{'a' * 24}.bin  2.9 KiB  1,200        40  0001..0020 (20)  {_local(t['old'])}  "
        "eraflow train store -o m1 --cv 4",
        f"  lgb-{'b' * 24}.bin  1.0 KiB    900        40  0001..0015 (15)  {_local(t['new'])}  "
        "eraflow train s -o m",
        f"  lgb-{'c' * 24}.bin     10 B      ?         ?  ?                {c_when}  (no record: rebuilt before use)",
        f"{user_dir}:",
        "  file                                 size   rows  features  eras             last used         made by",
        f"  lgb-{'e' * 24}.bin  2.0 KiB  1,200        40  0001..0020 (20)  {_local(t['user'])}  eraflow train s -o m",
        "total: 4 entries, 5.9 KiB (budget 64.0 MiB per directory)",
        "leftovers of ended writers: 1 file(s), 100 B (`eraflow cache clean` removes them)",
    ]


def test_cache_clean_dry_run_removes_nothing_and_clean_removes_what_it_says(listed_store):
    store, user_dir, t = listed_store
    before = sorted(p for d in (store / "cache", user_dir) for p in d.iterdir())
    c_when = _local(datetime.fromtimestamp(t["old"].timestamp() - 60, timezone.utc))
    dry = CliRunner().invoke(cli, ["cache", "clean", str(store), "--older-than", "30", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        f"would remove {store / 'cache' / ('lgb-' + 'a' * 24 + '.bin')}  2.9 KiB  last used {_local(t['old'])}",
        f"would remove {store / 'cache' / ('lgb-' + 'c' * 24 + '.bin')}  10 B  last used {c_when}",
        "would free 3.0 KiB: 2 entries to remove, 2 kept",
    ]
    assert sorted(p for d in (store / "cache", user_dir) for p in d.iterdir()) == before
    result = CliRunner().invoke(cli, ["cache", "clean", str(store), "--keep", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"removed {store / 'cache' / ('lgb-' + 'a' * 24 + '.bin')}  2.9 KiB  last used {_local(t['old'])}",
        f"removed {store / 'cache' / ('lgb-' + 'c' * 24 + '.bin')}  10 B  last used {c_when}",
        "freed 3.0 KiB: 2 entries removed, 2 kept",
    ]
    assert sorted(p.name for d in (store / "cache", user_dir) for p in d.iterdir()) == [
        f"lgb-{'b' * 24}.bin", f"lgb-{'b' * 24}.json", f"lgb-{'e' * 24}.bin", f"lgb-{'e' * 24}.json"]
    everything = CliRunner().invoke(cli, ["cache", "clean", str(store), "--json"])
    assert json.loads(everything.output)["kept"] == 0 and json.loads(everything.output)["freed_bytes"] == 1024 + 2048
    assert list((store / "cache").iterdir()) == [] and list(user_dir.iterdir()) == []


def test_cache_commands_on_a_missing_store_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(cli, ["cache", "list", str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.output.startswith("error: no store at ")
    assert len(result.output.splitlines()) == 1


def test_cache_clean_says_what_it_could_not_remove(listed_store, monkeypatch):
    store, user_dir, _ = listed_store
    real_unlink = Path.unlink

    def unlink(self, *args, **kwargs):
        if self.parent == user_dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    result = CliRunner().invoke(cli, ["cache", "clean", str(store)])
    assert result.exit_code == 2
    assert result.output.splitlines()[-2:] == [
        "freed 4.0 KiB: 3 entries removed, 1 kept",
        f"error: could not remove 1 entry (first: {user_dir / ('lgb-' + 'e' * 24 + '.bin')}: Permission denied); "
        "check the directory's permissions"]
    assert sorted(p.name for p in user_dir.iterdir()) == [f"lgb-{'e' * 24}.bin", f"lgb-{'e' * 24}.json"]
