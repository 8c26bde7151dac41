"""Random search of a model kind's parameters, each trial scored by era CV with the embargo.

1. Plan: the training eras (:func:`~eraflow.engine.models.cv.training_eras`, the rule ``train`` uses:
   ``train_eras`` outside ``valid_eras`` ± the embargo, with target values; validation eras never
   choose), the CV folds of them (engine ``cv_splits``), and each trial's parameters
   (:meth:`~eraflow.engine.experiments.space.Space.draw`), all checked by the kind before any work.
2. Run one task per (trial, fold) (:func:`~eraflow.engine.experiments.trials.evaluate_fold`) in this
   process or on a Dask cluster; a trial is done when all its folds are.
3. Write each finished trial to ``OUT_DIR/trials/trial-0007.json`` (atomically: this is what a re-run
   skips), then the leaderboard and ``best_params.toml`` again; at the end the report page.

A trial's scores: per-era numerai_corr of its out-of-fold predictions (every fold's test eras):
``cv_mean``, ``cv_std`` (population), ``cv_sharpe = cv_mean / cv_std``; the spread of the folds' mean
corr (``fold_min``, ``fold_max``, ``fold_std``); with ``neutralize``, ``cv_mean_n<p>`` and
``cv_sharpe_n<p>`` of the predictions neutralized per era at proportion p.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from ..data.store import EraStore
from ..errors import InputError, OutputError
from ..evaluation.ledger import Run
from ..evaluation.metrics import score_summary
from ..lock import exclusive_lock
from ..models.cv import default_embargo, training_eras
from ..models.kind import DEFAULT_KIND, get_kind
from ..models.train import cv_splits
from ..outputs import is_own_output, mark_table
from .space import Space
from .trials import FoldResult, FoldTask, evaluate_fold, proportion_label

SEARCH_FORMAT = "eraflow-search"  # search.json "format": marks OUT_DIR as an eraflow search
SEARCH_JSON, TRIALS, LEADERBOARD, BEST_PARAMS = "search.json", "trials", "leaderboard.parquet", "best_params.toml"
REPORT = "report.html"
SAMPLERS = ("random",)
METRICS = ("cv_sharpe", "cv_mean")
SCORE_COLUMNS = ("trial", "cv_mean", "cv_std", "cv_sharpe", "fold_min", "fold_max", "fold_std", "time")


@dataclass(frozen=True)
class SearchConfig:
    space: Space
    trials: int
    cv: int = 3
    kind: str = DEFAULT_KIND
    params: dict | None = None  # base parameters the draws update (None: the kind's defaults; lgbm: its preset)
    target: str = "target"
    feature_set: str | None = None
    features: tuple[str, ...] | None = None
    train_eras: str | None = None
    valid_eras: str | None = None
    embargo: int | None = None
    cv_mode: str = "expanding"
    seed: int = 0
    neutralize: tuple[float, ...] = ()
    neutralize_features: str | None = None  # a feature set (None: each trial's own features)
    metric: str = "cv_sharpe"
    sampler: str = "random"
    threads: int = 1  # per task, wherever it runs


@dataclass(frozen=True)
class SearchPlan:
    """Everything fixed before the first task: eras, folds, features, base parameters, identity."""

    config: SearchConfig
    store_path: Path
    fingerprint: str
    base: dict
    features: list[str]
    cols: np.ndarray
    neutral_cols: np.ndarray | None
    embargo: int
    train_eras: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    identity: dict
    search_id: str

    def params(self, trial: int) -> dict:
        """The space's draw for ``trial`` (the leaderboard's parameter columns)."""
        return self.config.space.draw(self.config.seed, trial)

    def settings(self, trial: int) -> dict:
        """The kind's full settings of ``trial``: the base parameters updated with its draw."""
        return get_kind(self.config.kind).check_settings(merged_params(self.config.kind, self.base, self.params(trial)))


def merged_params(kind: str, base: dict, draw: dict) -> dict:
    """``base`` updated with ``draw``; for lgbm a drawn alias replaces the base's name of the same
    LightGBM parameter (``num_iterations`` drawn → ``n_estimators`` set), so the draw always wins."""
    if kind != "lgbm":
        return {**base, **draw}
    from ..models.lgbm import lightgbm_names

    names = lightgbm_names()
    by_main = {names.get(k, k): k for k in base}
    return {**base, **{by_main.get(names.get(k, k), k): v for k, v in draw.items()}}


def _check_config(store: EraStore, config: SearchConfig) -> None:
    if config.trials < 1:
        raise InputError(f"--trials must be at least 1, got {config.trials}")
    if config.seed < 0:
        raise InputError(f"--seed must not be negative, got {config.seed} (it seeds NumPy's generators)")
    if config.sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {config.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if config.metric not in METRICS:
        raise InputError(f"unknown metric {config.metric!r}; choose one of {', '.join(METRICS)}")
    if config.target not in store.target_names:
        raise InputError(f"no target {config.target!r} in the store; it has {', '.join(store.target_names)}")
    taken = [n for n in config.space.params if n in SCORE_COLUMNS or n.startswith(("cv_mean_n", "cv_sharpe_n"))]
    if taken:
        raise InputError(f"search space parameter(s) {taken} clash with leaderboard columns "
                         f"({', '.join(SCORE_COLUMNS)}, cv_mean_n<p>, cv_sharpe_n<p>); no model kind takes such a name")
    bad = [p for p in config.neutralize if not 0 <= p <= 1]
    if bad:
        raise InputError(f"--neutralize proportions must lie in [0, 1], got {bad}")
    if len(set(config.neutralize)) < len(config.neutralize):
        raise InputError(f"--neutralize repeats a proportion: {list(config.neutralize)}")
    if config.neutralize_features is not None and not config.neutralize:
        raise InputError(f"--neutralize-features {config.neutralize_features} needs --neutralize PROPORTIONS "
                         "(e.g. 0,0.5,1): it names what the predictions are neutralized against")


def _base_params(config: SearchConfig) -> dict:
    if config.params is not None:
        return dict(config.params)
    kind = get_kind(config.kind)
    return kind.check_settings(None) if hasattr(kind, "preset") else {}


def check_trials(plan: SearchPlan, trials: list[int]) -> None:
    """Every trial's settings, checked by the kind (names, and values where the kind probes them)."""
    kind = get_kind(plan.config.kind)
    kind.check_settings(merged_params(plan.config.kind, plan.base, plan.config.space.representative()))
    probed = set()
    for i in trials:
        settings = plan.settings(i)
        key = json.dumps(settings, sort_keys=True, default=str)
        if key in probed:
            continue
        try:
            kind.resolve_device("cpu", settings)
        except InputError as exc:
            raise InputError(f"trial {i} ({plan.params(i)}): {exc}") from None
        probed.add(key)


def plan_search(store: EraStore, config: SearchConfig) -> SearchPlan:
    """Check the config and every trial's settings (:func:`check_trials`), and fix eras, folds, features
    and identity (see the module doc, step 1): all before any task runs or any cluster starts."""
    _check_config(store, config)
    view = store.select(features=config.features, feature_set=config.feature_set)
    cols = np.arange(len(store.feature_names)) if view.cols is None else view.cols
    neutral = None
    if config.neutralize and config.neutralize_features is not None:
        neutral_view = store.select(feature_set=config.neutralize_features)
        neutral = np.arange(len(store.feature_names)) if neutral_view.cols is None else neutral_view.cols
    embargo = config.embargo if config.embargo is not None else default_embargo(config.target)
    train, _ = training_eras(store, config.target, config.train_eras, config.valid_eras, embargo)
    folds = cv_splits(store, train, config.cv, embargo, config.cv_mode)
    base = _base_params(config)
    identity = {"store_fingerprint": store.fingerprint, "kind": config.kind, "space": config.space.doc,
                "base_params": base, "sampler": config.sampler, "seed": config.seed, "threads": config.threads,
                "target": config.target, "features": view.feature_names, "cv": config.cv, "cv_mode": config.cv_mode,
                "embargo": embargo,
                "train_eras": [store.eras[k] for k in train], "neutralize": list(config.neutralize),
                "neutralize_features": None if neutral is None else [store.feature_names[c] for c in neutral]}
    identity = json.loads(json.dumps(identity))  # as search.json will hold it
    search_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    plan = SearchPlan(config, store.path, store.fingerprint, base, view.feature_names, cols, neutral, embargo, train,
                      folds, identity, search_id)
    check_trials(plan, list(range(config.trials)))
    return plan


# -- the output directory ------------------------------------------------------------------------

def is_search_dir(path: Path) -> bool:
    try:
        return json.loads((path / SEARCH_JSON).read_text()).get("format") == SEARCH_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_search_dir(path: Path, store_path: Path) -> Path:
    """OutputError unless ``path`` is absent, empty, or an eraflow search, and holds no input."""
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; give the real path, eraflow does not write through links")
    out, store = path.resolve(), store_path.resolve()
    if out == store or out in store.parents or store in out.parents:
        raise OutputError(f"{path} holds or is inside the store {store_path}; write the search to another directory")
    if any(is_own_output(p, kind) for p in out.parents for kind in ("store", "model", "report")):
        raise OutputError(f"{path} is inside an eraflow store, model or report directory; write the search elsewhere")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path} is an existing file; give a directory for the search")
        if any(path.iterdir()) and not is_search_dir(path):
            raise OutputError(f"{path} exists and is not an eraflow search (no {SEARCH_JSON}); give a new directory: "
                              "eraflow writes only into its own outputs")
    return path


def _differs(old: dict, new: dict) -> str | None:
    """The first identity key whose value differs, or None."""
    return next((k for k in new if old.get(k) != new[k]), None)


def check_same_search(out_dir: Path, plan: SearchPlan) -> None:
    """InputError when the search in ``out_dir`` differs from ``plan`` in any key of its identity."""
    old = json.loads((out_dir / SEARCH_JSON).read_text()).get("identity", {})
    key = _differs(old, plan.identity)
    if key is not None:
        raise InputError(f"{out_dir} holds a search with another {key} ({json.dumps(old.get(key))[:60]}, now "
                         f"{json.dumps(plan.identity[key])[:60]}); use a new -o for a different search")


def create_search_dir(out_dir: Path, plan: SearchPlan, command: str) -> None:
    """``out_dir`` with ``trials/`` and search.json (kept when it is there)."""
    (out_dir / TRIALS).mkdir(parents=True, exist_ok=True)
    if not (out_dir / SEARCH_JSON).exists():
        atomic_write_json(out_dir / SEARCH_JSON, {"format": SEARCH_FORMAT, "search": plan.search_id,
                                                  "identity": plan.identity, "command": command,
                                                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def trial_file(out_dir: Path, trial: int) -> Path:
    return out_dir / TRIALS / f"trial-{trial:04d}.json"


def load_trials(out_dir: Path, plan: SearchPlan) -> dict[int, dict]:
    """Finished trials in ``out_dir``; InputError for one whose parameters are not this search's draw."""
    done = {}
    for path in sorted((out_dir / TRIALS).glob("trial-*.json")):
        try:
            record = json.loads(path.read_text())
            trial = int(record["trial"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{path} is not a trial record eraflow wrote; delete it to run that trial again") from None
        if record.get("params") != json.loads(json.dumps(plan.params(trial))):
            raise InputError(f"{path} holds parameters that are not trial {trial}'s draw of this search; "
                             "delete it to run that trial again")
        done[trial] = record
    return done


# -- scores --------------------------------------------------------------------------------------

def trial_scores(folds: list[dict], neutralize: tuple[float, ...]) -> dict:
    """The leaderboard's scores of one trial from its folds' per-era corr (see the module doc)."""
    oof = np.array([c for f in folds for c in f["corr"]], dtype=np.float64)
    overall = score_summary(oof)
    means = np.array([score_summary(np.array(f["corr"], dtype=np.float64))["mean"] for f in folds])
    scores = {"cv_mean": overall["mean"], "cv_std": overall["std"], "cv_sharpe": overall["sharpe"],
              "fold_min": float(means.min()), "fold_max": float(means.max()), "fold_std": float(means.std())}
    for p in neutralize:
        label = proportion_label(p)
        s = score_summary(np.array([c for f in folds for c in f["neutral"][label]], dtype=np.float64))
        scores[f"cv_mean_n{label}"], scores[f"cv_sharpe_n{label}"] = s["mean"], s["sharpe"]
    return {k: float(v) for k, v in scores.items()}


def trial_record(plan: SearchPlan, trial: int, results: dict[int, FoldResult]) -> dict:
    """trial-NNNN.json: the draw, every fold's per-era corr, the scores, the time."""
    folds = [{"fold": r.fold, "eras": r.eras, "corr": r.corr, "neutral": r.neutral, "seconds": r.seconds,
              "rows_read": r.rows_read, "bytes_read": r.bytes_read} for r in (results[f] for f in sorted(results))]
    return {"trial": trial, "search": plan.search_id, "params": plan.params(trial),
            "scores": trial_scores(folds, plan.config.neutralize), "seconds": sum(f["seconds"] for f in folds),
            "folds": folds}


def _column(values: list) -> pa.Array:
    """A parameter column: its own type, or strings when the values mix types."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([str(v) for v in values], pa.string())


def leaderboard_table(plan: SearchPlan, done: dict[int, dict]) -> pa.Table:
    """One row per finished trial, in trial order: trial, parameters, scores, time (seconds its folds took)."""
    records = [done[i] for i in sorted(done)]
    columns = {"trial": pa.array([r["trial"] for r in records], pa.int64())}
    columns.update({name: _column([r["params"][name] for r in records]) for name in plan.config.space.params})
    score_names = list(records[0]["scores"]) if records else []
    columns.update({s: pa.array([r["scores"][s] for r in records], pa.float64()) for s in score_names})
    columns["time"] = pa.array([r["seconds"] for r in records], pa.float64())
    return mark_table(pa.table(columns), "leaderboard")


def best_trial(done: dict[int, dict], metric: str) -> dict | None:
    """The finished trial with the highest ``metric`` (NaN never best; ties: the lower trial number)."""
    scored = [r for _, r in sorted(done.items()) if math.isfinite(r["scores"][metric])]
    return max(scored, key=lambda r: r["scores"][metric]) if scored else None


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise InputError(f"cannot write {value!r} to {BEST_PARAMS}: TOML takes numbers, strings, booleans and lists")


def params_toml(settings: dict, header: list[str]) -> str:
    """``name = value`` lines of ``settings`` (None values left out: the kind's default), after ``# header`` lines."""
    lines = [f"# {h}" for h in header]
    lines += [f"{json.dumps(k) if not k.replace('_', '').isalnum() else k} = {_toml_value(v)}"
              for k, v in settings.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, plan: SearchPlan, done: dict[int, dict]) -> dict | None:
    """Rewrite leaderboard.parquet and best_params.toml (atomically); the best trial."""
    atomic_write_parquet(out_dir / LEADERBOARD, leaderboard_table(plan, done))
    best = best_trial(done, plan.config.metric)
    if best is not None:
        metric = plan.config.metric
        header = [f"eraflow search {plan.search_id}: trial {best['trial']}, best by {metric} "
                  f"{best['scores'][metric]:+.4f} of {len(done)} trials",
                  f"use with: eraflow train STORE --model {plan.config.kind} --params {BEST_PARAMS}"]
        atomic_write_bytes(out_dir / BEST_PARAMS, params_toml(plan.settings(best["trial"]), header).encode())
    return best


# -- running -------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    out_dir: Path
    search_id: str
    trials: dict[int, dict]  # every finished trial in OUT_DIR
    ran: list[int]  # trials this run finished
    skipped: list[int]  # trials already done before this run
    best: dict | None
    seconds: float


def fold_tasks(plan: SearchPlan, trials: list[int]) -> dict[str, tuple]:
    """One task per (trial, fold), keyed ``0007-2``: ``(store path, fingerprint, FoldTask)``."""
    config, path = plan.config, str(plan.store_path.resolve())
    return {f"{i:04d}-{f}": (path, plan.fingerprint,
                             FoldTask(i, f, config.kind, plan.settings(i), config.target, train, test, plan.cols,
                                      config.seed, plan.embargo, config.threads, config.neutralize, plan.neutral_cols))
            for i in trials for f, (train, test) in enumerate(plan.folds)}


TaskCallback = Callable[[int, int], None]  # (tasks done, tasks in all)
TrialCallback = Callable[[dict, int], None]  # a finished trial's record, trials done in all


def _run_trials(plan: SearchPlan, out_dir: Path, todo: list[int], done: dict[int, dict], client,
                on_task: TaskCallback | None, on_trial: TrialCallback | None) -> list[int]:
    """Run the folds of the trials ``todo``; as each trial finishes, write it, add it to ``done`` and rewrite
    the leaderboard and best_params.toml. Returns the trials finished, in order."""
    tasks = fold_tasks(plan, todo)
    pending: dict[int, dict[int, FoldResult]] = {}
    ran = []
    if done:
        write_results(out_dir, plan, done)
    if on_task:
        on_task(0, len(tasks))
    for n, (_, result) in enumerate(_run(client, tasks), 1):
        if on_task:
            on_task(n, len(tasks))
        folds = pending.setdefault(result.trial, {})
        folds[result.fold] = result
        if len(folds) < len(plan.folds):
            continue
        record = trial_record(plan, result.trial, pending.pop(result.trial))
        atomic_write_json(trial_file(out_dir, result.trial), record)
        done[result.trial] = record
        ran.append(result.trial)
        write_results(out_dir, plan, done)
        if on_trial:
            on_trial(record, len(done))
    return ran


def run_search(plan: SearchPlan, out_dir: str | Path, client=None, command: str = "",
               on_task: TaskCallback | None = None, on_trial: TrialCallback | None = None) -> SearchResult:
    """Run the trials of ``plan`` not yet in ``out_dir`` (see the module doc) on ``client`` (None: here).

    ``on_task(done, total)`` hears of every finished task; ``on_trial(record, done)`` of every finished trial,
    after its file and the leaderboard are written (the CLI records it in the ledger there).
    """
    started = time.perf_counter()
    config = plan.config
    out_dir = check_search_dir(Path(out_dir), plan.store_path)
    if is_search_dir(out_dir):
        check_same_search(out_dir, plan)
    create_search_dir(out_dir, plan, command)
    with exclusive_lock(out_dir / "search"):  # OUT_DIR/search.lock: one run at a time writes the search
        done = load_trials(out_dir, plan)
        skipped = sorted(done)
        ran = _run_trials(plan, out_dir, [i for i in range(config.trials) if i not in done], done, client, on_task,
                          on_trial)
        best = best_trial(done, config.metric)
        from .search_report import write_search_report

        write_search_report(out_dir, plan, done, best)
    return SearchResult(out_dir, plan.search_id, done, ran, skipped, best, time.perf_counter() - started)


def _run(client, tasks: dict[str, tuple]):
    from ..cluster.executor import run_tasks

    return run_tasks(client, evaluate_fold, tasks)


def trial_run_id(plan: SearchPlan, out_dir: Path, trial: int) -> str:
    """A trial's ledger run id, fixed by (search, directory, trial): recording a trial again names the same run."""
    where = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:6]
    return f"search-{plan.search_id}-{where}-{trial:04d}"


def trial_run(plan: SearchPlan, record: dict, out_dir: Path, command: str) -> Run:
    """The ledger record of one trial: its settings tagged with the search, CV scores, per-era OOF corr."""
    config = plan.config
    params = {**plan.settings(record["trial"]), "kind": config.kind, "search": plan.search_id,
              "trial": record["trial"], "cv": config.cv, "cv_mode": config.cv_mode, "embargo": plan.embargo,
              "seed": config.seed}
    per_era = [("oof", config.target, era, corr) for f in record["folds"] for era, corr in zip(f["eras"], f["corr"])]
    per_era += [(f"oof_n{p}", config.target, era, corr) for f in record["folds"] for p, values in f["neutral"].items()
                for era, corr in zip(f["eras"], values)]
    metrics = {"cv": score_summary(np.array([c for f in record["folds"] for c in f["corr"]], dtype=np.float64)),
               **{f"cv_n{p}": score_summary(np.array([c for f in record["folds"] for c in f["neutral"][p]],
                                                      dtype=np.float64)) for p in record["folds"][0]["neutral"]},
               "search": record["scores"]}
    artifacts = {"search_dir": str(out_dir.resolve()), "report": str((out_dir / REPORT).resolve()),
                 "trial_file": str(trial_file(out_dir, record["trial"]).resolve())}
    return Run("search", command, params, plan.fingerprint, [config.target], plan.features, metrics, artifacts, per_era,
               trial_run_id(plan, out_dir, record["trial"]))
