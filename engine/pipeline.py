"""``eraflow run PIPELINE.toml``: the weekly journey as steps that re-run only when their inputs change.

Steps, in order: ``data`` (synthetic files or a Numerai download) → ``ingest`` → ``train`` →
``postprocess`` → ``validate`` (predictions for the evaluation eras) → ``evaluate`` (report) →
``live`` → ``submit``. A step's fingerprint hashes its own settings and the fingerprints of the
steps it reads; ``WORKDIR/pipeline.json`` keeps the fingerprint each step last completed with,
and a step with an unchanged fingerprint whose outputs exist is skipped. Editing only
``[postprocess]`` therefore re-runs postprocess, validate, evaluate, live and submit.

The whole file is checked before any work: unknown sections or keys, wrong types and bad
values are one InputError each (see :data:`SCHEMA`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write_json
from .errors import InputError
from .evaluate import EvaluateOptions, evaluate_predictions, evaluation_run
from .ingest import IngestOptions, Progress, ingest_files
from .ledger import append_run
from .numerai import DEFAULT_KEYS, download_datasets, load_credentials, numerai_client, submit_predictions
from .live import Postprocess, live_predictions, model_outputs, predict_submitted, set_postprocess, write_submission
from .params import DEVICES, PRESETS, load_params
from .predict import load_model
from .predictions import write_predictions
from .report import write_report
from .store import open_store
from .submission import read_live_ids
from .synth import SynthSpec, write_synthetic
from .train import TrainConfig, train_models, training_run

STATE = "pipeline.json"

# section → key → type, or a tuple of allowed strings
SCHEMA: dict[str, dict[str, object]] = {
    "": {"workdir": str},
    "data": {"source": ("synthetic", "numerai"), "eras": int, "rows_per_era": int, "features": int, "targets": int,
             "validation_eras": int, "seed": int, "version": str, "directory": str},
    "ingest": {"feature_set": str, "targets": list},
    "train": {"targets": list, "params": str, "feature_set": str, "cv": int, "cv_mode": ("expanding", "blocked"),
              "device": DEVICES, "train_eras": str, "valid_eras": str, "seed": int, "early_stopping": int},
    "postprocess": {"column": str, "neutralize": float, "feature_set": str},
    "evaluate": {"eras": str, "target": str, "feature_set": str, "meta_model": bool, "benchmark": str},
    "live": {"enabled": bool},
    "submit": {"model": str, "dry_run": bool},
}
REQUIRED = {"data": ("source",), "submit": ("model",)}


@dataclass(frozen=True)
class Pipeline:
    """A checked pipeline file: its sections, and the directories it reads and writes."""

    path: Path
    config: dict
    workdir: Path

    def section(self, name: str) -> dict:
        return self.config.get(name, {})

    @property
    def data_dir(self) -> Path:
        data = self.section("data")
        if data["source"] == "numerai":
            return Path(os.path.normpath(self.path.parent / data.get("directory", f"data/{data['version']}")))
        return self.workdir / "data"

    def resolve(self, name: str) -> Path:
        """A file named in the pipeline: in the data directory, else relative to the TOML file."""
        in_data = self.data_dir / name
        return in_data if in_data.exists() or not (self.path.parent / name).exists() else self.path.parent / name


@dataclass
class PipelineResult:
    steps: list[tuple[str, str, float]] = field(default_factory=list)  # (step, "ran" | "skipped", seconds)
    report: Path | None = None
    summary: list[dict] = field(default_factory=list)
    live: Path | None = None
    submission: str | None = None


def _check_value(where: str, key: str, value, kind) -> None:
    if isinstance(kind, tuple):
        if value not in kind:
            raise InputError(f"{where} {key} = {value!r}: choose one of {', '.join(kind)}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} {key} must be a number, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where} {key} must be a whole number ≥ 0, got {value!r}")
    elif kind is list:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where} {key} must be a non-empty list of strings, got {value!r}")
    elif not isinstance(value, kind):
        raise InputError(f"{where} {key} must be a {kind.__name__}, got {value!r}")


def check_config(config: dict, path: Path) -> None:
    """Unknown sections/keys, wrong types, missing or inconsistent settings: InputError naming the first."""
    for section, body in config.items():
        if isinstance(body, dict):
            if section not in SCHEMA or not section:
                raise InputError(f"{path.name}: unknown section [{section}]; known: "
                                 f"{', '.join(f'[{s}]' for s in SCHEMA if s)}")
            items, where = body.items(), f"{path.name} [{section}]"
        else:
            items, where, section = [(section, body)], f"{path.name}", ""
        for key, value in items:
            if key not in SCHEMA[section]:
                raise InputError(f"{where}: unknown key {key!r}; known: {', '.join(SCHEMA[section])}")
            _check_value(where, key, value, SCHEMA[section][key])
    for section, keys in REQUIRED.items():
        if section in config or section == "data":
            missing = [k for k in keys if k not in config.get(section, {})]
            if missing:
                raise InputError(f"{path.name} [{section}] needs {', '.join(missing)}")
    data = config["data"]
    if data["source"] == "numerai" and "version" not in data:
        raise InputError(f"{path.name} [data] source = 'numerai' needs version (e.g. 'v5.2')")
    proportion = config.get("postprocess", {}).get("neutralize")
    if proportion is not None and not 0 <= proportion <= 1:
        raise InputError(f"{path.name} [postprocess] neutralize must lie in [0, 1], got {proportion}")
    if "evaluate" in config and not (config["evaluate"].get("eras") or config.get("train", {}).get("valid_eras")):
        raise InputError(f"{path.name}: [evaluate] needs eras (or [train] valid_eras); training eras would score "
                         "in-sample")


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline TOML file (nothing runs)."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no pipeline file {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML ({exc})") from None
    if "data" not in config:
        raise InputError(f"{path.name} needs a [data] section")
    check_config(config, path)
    params = config.get("train", {}).get("params", "starter")
    if params not in PRESETS:
        local = path.parent / params
        config.setdefault("train", {})["params"] = str(local if local.exists() else params)
        load_params(config["train"]["params"])  # a bad parameter file fails now, before any work
    return Pipeline(path, config, Path(os.path.normpath(path.parent / config.get("workdir", path.stem))))


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files_fingerprint(paths: list[Path]) -> str:
    return fingerprint([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists()])


def _read_state(path: Path) -> dict:
    """Step → fingerprint of the last completed run; empty when absent or unreadable (all steps run)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class _Runner:
    """Runs steps in order, skipping those whose fingerprint and outputs are unchanged."""

    def __init__(self, pipe: Pipeline, on_step: Callable[[str, str, float], None] | None):
        self.pipe = pipe
        self.state_path = pipe.workdir / STATE
        self.state = _read_state(self.state_path)
        self.on_step = on_step
        self.result = PipelineResult()

    def step(self, name: str, fp: str, outputs: list[Path], work: Callable[[], None], always: bool = False) -> str:
        started = time.perf_counter()
        if not always and self.state.get(name) == fp and all(p.exists() for p in outputs):
            status = "skipped"
        else:
            self.state.pop(name, None)  # until it completes, a step counts as never run
            atomic_write_json(self.state_path, self.state)
            work()
            self.state[name] = fp
            atomic_write_json(self.state_path, self.state)
            status = "ran"
        seconds = time.perf_counter() - started
        self.result.steps.append((name, status, seconds))
        if self.on_step:
            self.on_step(name, status, seconds)
        return fp


def run_pipeline(path: str | Path, client_factory: Callable | None = None,
                 on_step: Callable[[str, str, float], None] | None = None,
                 ledger: str | Path | None = None, progress: Progress | None = None) -> PipelineResult:
    """Run the pipeline file at ``path``.

    ``client_factory(auth=…)`` gives the numerapi client (default: the real one); ``on_step(name,
    status, seconds)`` hears of each step; ``progress`` is handed to ingest and training.
    """
    pipe = load_pipeline(path)
    pipe.workdir.mkdir(parents=True, exist_ok=True)
    run = _Runner(pipe, on_step)
    command = f"eraflow run {pipe.path}"
    data, data_dir = pipe.section("data"), pipe.data_dir
    store_dir, model_dir = pipe.workdir / "store", pipe.workdir / "model"
    valid_path, report_dir = pipe.workdir / "validation_predictions.parquet", pipe.workdir / "report"
    live_path = pipe.workdir / "live_predictions.parquet"

    numerai = data["source"] == "numerai"  # a download is checked every run (live changes weekly)
    data_fp = run.step("data", fingerprint(data), [data_dir / "train.parquet", data_dir / "live.parquet"],
                       lambda: _get_data(pipe, client_factory), always=numerai)
    if numerai:  # later steps follow the files themselves
        data_fp = _files_fingerprint([data_dir / f for f in ("train.parquet", "validation.parquet",
                                                            "features.json", "meta_model.parquet")])
    ingest = pipe.section("ingest")
    ingest_fp = run.step("ingest", fingerprint(ingest, data_fp), [store_dir], lambda: ingest_files(
        [data_dir / "train.parquet", data_dir / "validation.parquet"], store_dir,
        IngestOptions(feature_set=ingest.get("feature_set"), features_json=data_dir / "features.json",
                      targets=tuple(ingest.get("targets", ("target*",)))), progress=progress))
    train = pipe.section("train")
    params = load_params(train.get("params", "starter"))  # a parameter file's content, not only its name
    train_fp = run.step("train", fingerprint(train, params, ingest_fp), [model_dir],
                        lambda: _train(pipe, store_dir, model_dir, params, command, ledger, progress))
    post = pipe.section("postprocess")
    post_fp = run.step("postprocess", fingerprint(post, train_fp), [model_dir],
                       lambda: _postprocess(pipe, store_dir, model_dir))
    if "evaluate" in pipe.config:
        evaluate = pipe.section("evaluate")
        eras = evaluate.get("eras") or train["valid_eras"]
        valid_fp = run.step("validate", fingerprint(eras, post_fp), [valid_path],
                            lambda: _validation_predictions(store_dir, model_dir, eras, valid_path))
        run.step("evaluate", fingerprint(evaluate, valid_fp), [report_dir / "metrics.json"],
                 lambda: _evaluate(pipe, store_dir, model_dir, valid_path, report_dir, command, ledger, progress))
        run.result.report = report_dir / "report.html"
        run.result.summary = json.loads((report_dir / "metrics.json").read_text())["summary"]
    if pipe.section("live").get("enabled", "live" in pipe.config or "submit" in pipe.config):
        live_fp = run.step("live", fingerprint(post_fp, _files_fingerprint([data_dir / "live.parquet"])), [live_path],
                           lambda: write_submission(live_predictions(load_model(model_dir), data_dir / "live.parquet"),
                                                    live_path))
        run.result.live = live_path
        if "submit" in pipe.config:
            run.step("submit", fingerprint(pipe.section("submit"), live_fp), [],
                     lambda: _submit(pipe, live_path, data_dir / "live.parquet", client_factory, run.result))
    return run.result


def _get_data(pipe: Pipeline, client_factory: Callable | None) -> None:
    data = pipe.section("data")
    if data["source"] == "synthetic":
        settings = {k: data[k] for k in ("eras", "rows_per_era", "features", "targets", "validation_eras", "seed")
                    if k in data}
        write_synthetic(pipe.data_dir, SynthSpec(**settings))
        return
    download_datasets(_client(client_factory, False), pipe.data_dir, data["version"], DEFAULT_KEYS)


def _client(client_factory: Callable | None, auth: bool):
    """A numerapi client from ``client_factory(auth=…)``, or the real one (credentials needed when ``auth``)."""
    if client_factory is not None:
        return client_factory(auth=auth)
    return numerai_client(load_credentials(required=auth))


def _train(pipe: Pipeline, store_dir: Path, model_dir: Path, params: dict, command: str, ledger,
           progress: Progress | None) -> None:
    train = pipe.section("train")
    config = TrainConfig(targets=tuple(train.get("targets", ("target",))), feature_set=train.get("feature_set"),
                         params=params, cv=train.get("cv", 0),
                         cv_mode=train.get("cv_mode", "expanding"), train_eras=train.get("train_eras"),
                         valid_eras=train.get("valid_eras"), device=train.get("device", "cpu"),
                         seed=train.get("seed", 0), early_stopping_rounds=train.get("early_stopping", 100))
    store = open_store(store_dir)
    result = train_models(store, model_dir, config, command, progress)
    append_run(training_run(result, store, config, command), ledger)


def _postprocess(pipe: Pipeline, store_dir: Path, model_dir: Path) -> None:
    post = pipe.section("postprocess")
    model = load_model(model_dir)
    features = None
    if "feature_set" in post:
        store = open_store(store_dir)
        features = tuple(store.select(feature_set=post["feature_set"]).feature_names)
    column = post.get("column", model_outputs(model)[-1])  # default: the ensemble, or the only target
    set_postprocess(model_dir, Postprocess(column, post.get("neutralize"), features))


def _validation_predictions(store_dir: Path, model_dir: Path, eras: str, out: Path) -> None:
    store = open_store(store_dir)
    table = predict_submitted(load_model(model_dir), store, eras)
    write_predictions(out, table.ids, table.eras, table.columns)


def _evaluate(pipe: Pipeline, store_dir: Path, model_dir: Path, preds: Path, report_dir: Path, command: str,
              ledger, progress: Progress | None) -> None:
    evaluate = pipe.section("evaluate")
    store = open_store(store_dir)
    options = EvaluateOptions(target=evaluate.get("target", "target"), feature_set=evaluate.get("feature_set"),
                              meta_model=pipe.resolve("meta_model.parquet") if evaluate.get("meta_model") else None,
                              benchmark=pipe.resolve(evaluate["benchmark"]) if "benchmark" in evaluate else None)
    result = evaluate_predictions(store, preds, options, progress=progress)
    paths = write_report(result, report_dir, store, load_model(model_dir))
    append_run(evaluation_run(result, store, options, command, paths), ledger)


def _submit(pipe: Pipeline, live_path: Path, live_source: Path, client_factory: Callable | None,
            result: PipelineResult) -> None:
    submit = pipe.section("submit")
    dry_run = submit.get("dry_run", False)
    client = None if dry_run else (lambda: _client(client_factory, True))
    outcome = submit_predictions(client, live_path, submit["model"], read_live_ids(live_source), dry_run=dry_run)
    result.submission = "dry run: valid, nothing uploaded" if dry_run else outcome.submission_id
