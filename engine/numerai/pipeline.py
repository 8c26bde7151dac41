"""``eraflow run PIPELINE.toml``: the weekly journey as steps that re-run only when their inputs change.

Steps, in order: ``data`` (synthetic files, a Numerai download, or the user's own ``files``) →
``ingest`` → ``train`` → ``postprocess`` → ``validate`` (predictions for the evaluation eras) →
``evaluate`` (report) → ``live`` → ``submit``. A step's fingerprint hashes its own settings, the
files it reads and what the steps before it produced. ``WORKDIR/pipeline.json`` keeps, per step,
the fingerprint it last completed with and the identity of the outputs it left (a store's
meta.json, a model's boosters and ``created`` stamp, model.json's post-processing, a file's
size and mtime). A step is skipped only when both match: an output that was lost or rebuilt
since re-runs the step, and every step after it that reads it. Editing only ``[postprocess]``
therefore re-runs postprocess, validate, evaluate, live and submit.

Each submitted (or dry-run validated) live file is kept in ``WORKDIR/submissions/``, named by the
UTC time (and Numerai's round), and every run with [submit] reports the churn of the newest kept
file against the five kept before it (:mod:`eraflow.engine.evaluation.churn`).

``source = "numerai"`` asks Numerai for the file list and round each run; when it cannot be
reached the files already on disk are used (with a warning), and a missing one is an error.

The whole file is checked before any work: unknown sections or keys, wrong types and bad
values are one InputError each (see :data:`SCHEMA`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_json
from ..data.ingest import IngestOptions, Progress, ingest_files
from ..data.store import open_store
from ..data.synth import SynthSpec, write_synthetic
from ..errors import InputError
from ..evaluation.churn import RECENT, ChurnReport, churn_report, read_churn_submission
from ..evaluation.evaluate import EvaluateOptions, evaluate_predictions, evaluation_run
from ..evaluation.ledger import record_run
from ..evaluation.prediction_writer import write_predictions
from ..evaluation.report import write_report
from ..models.kind import DEFAULT_KIND, TRAINABLE, get_kind
from ..models.params import DEVICES, PRESETS, check_network_option, kind_params, with_options
from ..models.predict import MODEL_JSON, load_model
from ..models.train import TrainConfig, train_models, training_run
from ..notices import warn
from .live import Postprocess, default_column, live_predictions, predict_submitted, set_postprocess, write_submission
from .numerai import (
    DEFAULT_KEYS,
    NumeraiError,
    RoundUncheckedError,
    download_datasets,
    load_credentials,
    numerai_client,
    read_manifest,
    submit_predictions,
)
from .submission import read_live_ids

STATE = "pipeline.json"
SUBMISSIONS = "submissions"  # WORKDIR/submissions: every submitted (or dry-run validated) live file
KEPT_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z(_round\d+)?\.parquet")  # keep_submission's names

# section → key → type, or a tuple of allowed strings
SCHEMA: dict[str, dict[str, object]] = {
    "": {"workdir": str},
    "data": {"source": ("synthetic", "numerai", "files"), "eras": int, "rows_per_era": int, "features": int,
             "targets": int, "validation_eras": int, "seed": int, "version": str, "directory": str,
             "train": str, "validation": str, "live": str, "features_json": str, "meta_model": str, "benchmark": str},
    "ingest": {"feature_set": str, "targets": list},
    "train": {"model": tuple(TRAINABLE), "targets": list, "params": str, "feature_set": str, "cv": int, "cv_mode": ("expanding", "blocked"),
              "device": DEVICES, "train_eras": str, "valid_eras": str, "seed": int, "early_stopping": int,
              "era_step": int, "epochs": int, "batch_size": int},
    "postprocess": {"column": str, "neutralize": float, "feature_set": str},
    "evaluate": {"eras": str, "target": str, "feature_set": str, "meta_model": bool, "benchmark": str},
    "live": {"enabled": bool},
    "submit": {"model": str, "dry_run": bool},
}
REQUIRED = {"data": ("source",), "submit": ("model",)}
SOURCE_KEYS = {  # [data] keys each source reads
    "synthetic": ("eras", "rows_per_era", "features", "targets", "validation_eras", "seed"),
    "numerai": ("version", "directory"),
    "files": ("train", "validation", "live", "features_json", "meta_model", "benchmark"),
}
NUMERAI_NAMES = {"train": "train.parquet", "validation": "validation.parquet", "live": "live.parquet",
                 "features_json": "features.json", "meta_model": "meta_model.parquet"}  # file of each role


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
        if data["source"] == "files":
            return self.path.parent
        return self.workdir / "data"

    def file(self, role: str) -> Path | None:
        """A dataset file by role (``train``, ``live``, ``features_json``…): ``[data] ROLE`` for the
        files source (None when not given), else Numerai's file name in the data directory."""
        data = self.section("data")
        if data["source"] == "files":
            return Path(os.path.normpath(self.path.parent / data[role])) if role in data else None
        return self.data_dir / NUMERAI_NAMES[role] if role in NUMERAI_NAMES else None

    @property
    def live_enabled(self) -> bool:
        return live_enabled(self.config)

    def needed_roles(self) -> list[str]:
        """The dataset files the configured steps read."""
        return needed_roles(self.config)

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
    churn: ChurnReport | None = None  # with [submit]: the newest kept submission against those before it


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


def live_enabled(config: dict) -> bool:
    """Whether live predictions are made: ``[live] enabled``, by default when [live] or [submit] is present."""
    return config.get("live", {}).get("enabled", "live" in config or "submit" in config)


def needed_roles(config: dict) -> list[str]:
    """Dataset files (roles of NUMERAI_NAMES) the configured steps read."""
    roles = ["train"] if config["data"]["source"] == "files" else ["train", "validation", "features_json"]
    if live_enabled(config):
        roles.append("live")
    if config.get("evaluate", {}).get("meta_model"):
        roles.append("meta_model")
    if any("feature_set" in config.get(section, {}) for section in ("ingest", "train", "postprocess", "evaluate")):
        roles.append("features_json")  # feature sets come from features.json
    return list(dict.fromkeys(roles))


def check_data(config: dict, path: Path) -> None:
    """[data]: keys of its source only; the files source names existing files for every step that reads one."""
    data = config["data"]
    source = data["source"]
    if source == "numerai" and "version" not in data:
        raise InputError(f"{path.name} [data] source = 'numerai' needs version (e.g. 'v5.2')")
    foreign = [k for k in data if k != "source" and k not in SOURCE_KEYS[source]]
    if foreign:
        raise InputError(f"{path.name} [data] {foreign[0]} does not apply to source = {source!r}; "
                         f"its keys: {', '.join(SOURCE_KEYS[source])}")
    if source != "files":
        return
    missing = [k for k in needed_roles(config) if k not in data]
    if missing:
        raise InputError(f"{path.name} [data] source = 'files' needs {', '.join(missing)} "
                         f"(paths relative to {path.name})")
    for key in SOURCE_KEYS["files"]:
        if key in data and not (path.parent / data[key]).is_file():
            raise InputError(f"{path.name} [data] {key} = {data[key]!r}: no such file "
                             f"{os.path.normpath(path.parent / data[key])}")


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
    check_data(config, path)
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
    train = config.get("train", {})
    params = train.get("params")
    if params is not None and params not in PRESETS:
        local = path.parent / params
        train["params"] = str(local if local.exists() else params)
    kind = train.get("model", DEFAULT_KIND)
    get_kind(kind).check_settings(train_params(train, path))  # a bad parameter fails now, before any work
    return Pipeline(path, config, Path(os.path.normpath(path.parent / config.get("workdir", path.stem))))


def train_params(train: dict, path: Path) -> dict | None:
    """The kind's parameters of a [train] section: its ``params`` (a preset or file), updated with
    ``epochs`` and ``batch_size`` (network kinds only)."""
    kind = train.get("model", DEFAULT_KIND)
    options = {key: train.get(key) for key in ("epochs", "batch_size")}
    for key, value in options.items():
        check_network_option(f"{path.name} [train] {key}", value, kind)
    return with_options(kind_params(kind, train.get("params")), **options)


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files_fingerprint(paths: list[Path]) -> str:
    return fingerprint([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists()])


def files_identity(paths: list[Path]) -> str | None:
    """Name, size and mtime of each file; None when one is missing."""
    if not all(p.is_file() for p in paths):
        return None
    return _files_fingerprint(paths)


def model_identity(model_dir: Path) -> str | None:
    """What a training left: model.json's ``created`` stamp and the size and mtime of every other file
    of the model directory (the fitted models of any kind, out-of-fold predictions).

    model.json's own mtime is left out: post-processing rewrites it without retraining.
    """
    try:
        meta = json.loads((model_dir / MODEL_JSON).read_text())
        files = files_identity(sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MODEL_JSON))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return fingerprint(meta.get("created"), files) if files and isinstance(meta, dict) else None


def postprocess_identity(model_dir: Path) -> str | None:
    """The model it was recorded in and model.json's ``postprocess``; None when the model has none."""
    try:
        post = json.loads((model_dir / MODEL_JSON).read_text()).get("postprocess")
    except (OSError, ValueError, AttributeError):
        return None
    model = model_identity(model_dir)
    return fingerprint(model, post) if post and model else None


def _read_state(path: Path) -> dict:
    """Step → {fingerprint, outputs} of its last completed run; empty when absent or unreadable (all steps run)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


# files an earlier eraflow's pipeline wrote in its workdir, before outputs carried eraflow's marker
UNMARKED_OUTPUTS = ("validation_predictions.parquet", "live_predictions.parquet")


def _forget_unmarked_outputs(workdir: Path) -> None:
    """A state of the earlier format (step → fingerprint string) means the workdir's fixed file
    outputs were written before eraflow marked its files: remove them so the steps rewrite them."""
    for name in UNMARKED_OUTPUTS:
        (workdir / name).unlink(missing_ok=True)


class _Runner:
    """Runs steps in order, skipping those whose fingerprint and outputs are what they last left."""

    def __init__(self, pipe: Pipeline, on_step: Callable[[str, str, float], None] | None):
        self.pipe = pipe
        self.state_path = pipe.workdir / STATE
        self.state = _read_state(self.state_path)
        if any(isinstance(v, str) for v in self.state.values()):
            _forget_unmarked_outputs(pipe.workdir)
            self.state = {}
        self.on_step = on_step
        self.result = PipelineResult()

    def step(self, name: str, fp: str, outputs: Callable[[], str | None], work: Callable[[], None],
             always: bool = False) -> str:
        """Run ``work`` unless the step completed with ``fp`` and ``outputs()`` (the identity of its
        outputs, None when missing) is what it left then.

        Returns ``fp`` combined with the outputs' identity: the fingerprint later steps build on,
        so an output rebuilt with unchanged settings still re-runs the steps that read it.
        """
        started = time.perf_counter()
        current = outputs()
        if not always and current is not None and self.state.get(name) == {"fingerprint": fp, "outputs": current}:
            status = "skipped"
        else:
            self.state.pop(name, None)  # until it completes, a step counts as never run
            atomic_write_json(self.state_path, self.state)
            work()
            current = outputs()
            self.state[name] = {"fingerprint": fp, "outputs": current}
            atomic_write_json(self.state_path, self.state)
            status = "ran"
        seconds = time.perf_counter() - started
        self.result.steps.append((name, status, seconds))
        if self.on_step:
            self.on_step(name, status, seconds)
        return fingerprint(fp, current)


def run_pipeline(path: str | Path, client_factory: Callable | None = None,
                 on_step: Callable[[str, str, float], None] | None = None,
                 ledger: str | Path | None = None, progress: Progress | None = None,
                 status: Callable | None = None) -> PipelineResult:
    """Run the pipeline file at ``path``.

    ``client_factory(auth=…)`` gives the numerapi client (default: the real one); ``on_step(name,
    status, seconds)`` hears of each step; ``progress`` is handed to ingest and training, ``status``
    (engine.train.TrainStatus events) to training.
    """
    pipe = load_pipeline(path)
    pipe.workdir.mkdir(parents=True, exist_ok=True)
    run = _Runner(pipe, on_step)
    command = f"eraflow run {pipe.path}"
    data = pipe.section("data")
    store_dir, model_dir = pipe.workdir / "store", pipe.workdir / "model"
    valid_path, report_dir = pipe.workdir / "validation_predictions.parquet", pipe.workdir / "report"
    live_path = pipe.workdir / "live_predictions.parquet"

    needed = [pipe.file(role) for role in pipe.needed_roles()]
    run.step("data", fingerprint(data), lambda: files_identity(needed), lambda: _get_data(pipe, client_factory),
             always=data["source"] == "numerai")  # Numerai is asked every run (live changes weekly)
    ingest = pipe.section("ingest")
    sources = [p for p in (pipe.file("train"), pipe.file("validation")) if p is not None]
    features_json = pipe.file("features_json")
    ingest_fp = run.step(
        "ingest", fingerprint(ingest, _files_fingerprint(sources + [features_json] if features_json else sources)),
        lambda: files_identity([store_dir / "meta.json"]), lambda: ingest_files(
            sources, store_dir, IngestOptions(feature_set=ingest.get("feature_set"), features_json=features_json,
                                              targets=tuple(ingest.get("targets", ("target*",)))), progress=progress))
    train = pipe.section("train")
    params = train_params(train, pipe.path)  # a file's content, not only its name
    train_fp = run.step("train", fingerprint(train, params, ingest_fp), lambda: model_identity(model_dir),
                        lambda: _train(pipe, store_dir, model_dir, params, command, ledger, progress, status))
    post = pipe.section("postprocess")
    post_fp = run.step("postprocess", fingerprint(post, train_fp), lambda: postprocess_identity(model_dir),
                       lambda: _postprocess(pipe, store_dir, model_dir))
    if "evaluate" in pipe.config:
        evaluate = pipe.section("evaluate")
        eras = evaluate.get("eras") or train["valid_eras"]
        valid_fp = run.step("validate", fingerprint(eras, post_fp), lambda: files_identity([valid_path]),
                            lambda: _validation_predictions(store_dir, model_dir, eras, valid_path))
        references = [p for p in _references(pipe) if p is not None]
        run.step("evaluate", fingerprint(evaluate, valid_fp, _files_fingerprint(references)),
                 lambda: files_identity([report_dir / "metrics.json"]),
                 lambda: _evaluate(pipe, store_dir, model_dir, valid_path, report_dir, command, ledger, progress))
        run.result.report = report_dir / "report.html"
        run.result.summary = json.loads((report_dir / "metrics.json").read_text())["summary"]
    if pipe.live_enabled:
        live_file = pipe.file("live")
        live_fp = run.step("live", fingerprint(post_fp, _files_fingerprint([live_file])),
                           lambda: files_identity([live_path]),
                           lambda: write_submission(live_predictions(load_model(model_dir), live_file), live_path))
        run.result.live = live_path
        if "submit" in pipe.config:
            run.step("submit", fingerprint(pipe.section("submit"), live_fp), lambda: "",
                     lambda: _submit(pipe, live_path, live_file, client_factory, run.result))
            try:
                run.result.churn = recent_churn(pipe.workdir / SUBMISSIONS)
            except InputError as exc:  # the submission went through: a kept file eraflow cannot read only warns
                warn(f"churn not computed: {exc}")
    return run.result


def _get_data(pipe: Pipeline, client_factory: Callable | None) -> None:
    data = pipe.section("data")
    if data["source"] == "synthetic":
        settings = {k: data[k] for k in SOURCE_KEYS["synthetic"] if k in data}
        write_synthetic(pipe.data_dir, SynthSpec(**settings))
    elif data["source"] == "numerai":
        try:
            download_datasets(_client(client_factory, False), pipe.data_dir, data["version"], DEFAULT_KEYS)
        except RoundUncheckedError as exc:
            use_files_on_disk(pipe, exc)
    # source "files": nothing to fetch; load_pipeline checked that the files exist


def use_files_on_disk(pipe: Pipeline, reason: RoundUncheckedError) -> None:
    """Numerai could not be asked for its round: warn and go on with the files on disk, or fail naming the missing."""
    missing = [NUMERAI_NAMES[role] for role in pipe.needed_roles() if not pipe.file(role).is_file()]
    if missing:
        raise NumeraiError(f"{pipe.data_dir} lacks {', '.join(missing)}, and Numerai could not be reached: {reason}")
    if "submit" in pipe.config and not pipe.section("submit").get("dry_run", False):
        raise NumeraiError(f"not submitting: Numerai's current round could not be checked, so live.parquet may be an "
                           f"earlier round's ({reason}); run again when Numerai answers, or set [submit] dry_run")
    live_round = read_manifest(pipe.data_dir)["files"].get(NUMERAI_NAMES["live"], {}).get("round")
    from_round = f"; live.parquet is from round {live_round}" if pipe.live_enabled and live_round else ""
    warn(f"could not check Numerai's current round, using the files already in {pipe.data_dir}{from_round} "
         f"({reason})")


def _references(pipe: Pipeline) -> list[Path | None]:
    """The meta-model and benchmark files [evaluate] compares with (None where not used)."""
    evaluate = pipe.section("evaluate")
    source_files = pipe.section("data")["source"] == "files"
    meta_model = ((pipe.file("meta_model") if source_files else pipe.resolve(NUMERAI_NAMES["meta_model"]))
                  if evaluate.get("meta_model") else None)
    benchmark = pipe.resolve(evaluate["benchmark"]) if "benchmark" in evaluate else pipe.file("benchmark")
    return [meta_model, benchmark]


def _client(client_factory: Callable | None, auth: bool):
    """A numerapi client from ``client_factory(auth=…)``, or the real one (credentials needed when ``auth``)."""
    if client_factory is not None:
        return client_factory(auth=auth)
    return numerai_client(load_credentials(required=auth))


def _train(pipe: Pipeline, store_dir: Path, model_dir: Path, params: dict | None, command: str, ledger,
           progress: Progress | None, status: Callable | None) -> None:
    train = pipe.section("train")
    config = TrainConfig(targets=tuple(train.get("targets", ("target",))), feature_set=train.get("feature_set"),
                         kind=train.get("model", DEFAULT_KIND), params=params, cv=train.get("cv", 0),
                         cv_mode=train.get("cv_mode", "expanding"), train_eras=train.get("train_eras"),
                         valid_eras=train.get("valid_eras"), device=train.get("device", "cpu"),
                         seed=train.get("seed", 0), early_stopping_rounds=train.get("early_stopping", 100),
                         era_step=train.get("era_step", 1))
    store = open_store(store_dir)
    result = train_models(store, model_dir, config, command, progress, status)
    record_run(training_run(result, store, config, command), ledger)


def _postprocess(pipe: Pipeline, store_dir: Path, model_dir: Path) -> None:
    post = pipe.section("postprocess")
    model = load_model(model_dir)
    features = None
    if "feature_set" in post:
        store = open_store(store_dir)
        features = tuple(store.select(feature_set=post["feature_set"]).feature_names)
    column = post.get("column", default_column(model))
    set_postprocess(model_dir, Postprocess(column, post.get("neutralize"), features))


def _validation_predictions(store_dir: Path, model_dir: Path, eras: str, out: Path) -> None:
    store = open_store(store_dir)
    table = predict_submitted(load_model(model_dir), store, eras)
    write_predictions(out, table.ids, table.eras, table.columns)


def _evaluate(pipe: Pipeline, store_dir: Path, model_dir: Path, preds: Path, report_dir: Path, command: str,
              ledger, progress: Progress | None) -> None:
    evaluate = pipe.section("evaluate")
    store = open_store(store_dir)
    meta_model, benchmark = _references(pipe)
    options = EvaluateOptions(target=evaluate.get("target", "target"), feature_set=evaluate.get("feature_set"),
                              meta_model=meta_model, benchmark=benchmark)
    result = evaluate_predictions(store, preds, options, progress=progress)
    paths = write_report(result, report_dir, store, load_model(model_dir))
    record_run(evaluation_run(result, store, options, command, {**paths, "predictions": str(preds.resolve())}), ledger)


def _submit(pipe: Pipeline, live_path: Path, live_source: Path, client_factory: Callable | None,
            result: PipelineResult) -> None:
    submit = pipe.section("submit")
    dry_run = submit.get("dry_run", False)
    client = None if dry_run else (lambda: _client(client_factory, True))
    outcome = submit_predictions(client, live_path, submit["model"], read_live_ids(live_source), dry_run=dry_run)
    result.submission = "dry run: valid, nothing uploaded" if dry_run else outcome.submission_id
    source = pipe.section("data")["source"]
    live_round = (read_manifest(pipe.data_dir)["files"].get(NUMERAI_NAMES["live"], {}).get("round")
                  if source == "numerai" else None)
    keep_submission(live_path, pipe.workdir / SUBMISSIONS, live_round)


def keep_submission(live_path: Path, folder: Path, round_num: int | None = None,
                    now: datetime | None = None) -> Path:
    """An atomic copy of a submitted file in ``folder``, named by the UTC time and round, e.g.
    ``20261202T081440.123456Z_round812.parquet``: names sort as the submissions were made."""
    now = now or datetime.now(timezone.utc)
    name = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + (
        f"_round{round_num}" if round_num is not None else "") + ".parquet"
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / name
    atomic_write_bytes(kept, live_path.read_bytes(), "submission")
    return kept


def kept_submissions(folder: Path) -> list[Path]:
    """The files :func:`keep_submission` left in ``folder``, oldest first (other files are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if KEPT_NAME.fullmatch(p.name) and p.is_file())


def recent_churn(folder: Path, recent: int = RECENT) -> ChurnReport | None:
    """Churn of the newest kept submission against the ``recent`` kept before it (newest first); None
    when none is kept."""
    kept = kept_submissions(folder)
    if not kept:
        return None
    previous = kept[-1 - recent:-1][::-1]
    return churn_report(read_churn_submission(kept[-1]), [read_churn_submission(p) for p in previous])
