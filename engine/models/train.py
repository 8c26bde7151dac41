"""Training straight from a store, for every kind of model: era CV with embargo, early stopping
on per-era corr (kinds that boost), out-of-fold predictions.

For each target (the kind, :mod:`~eraflow.engine.models.kind`, fits each model):
1. training eras (:func:`~eraflow.engine.models.cv.training_eras`) = the chosen eras outside the
   validation eras ± the embargo, with any target value; rows without a target get weight 0;
2. with ``cv`` folds (engine.cv): train on each fold's training eras (kinds that stop early stop
   on the mean per-era numerai_corr of its test eras), predict them (out-of-fold predictions);
3. the final model trains on every training era, for the median best round of the folds (or
   stops early on ``valid_eras``, or runs all rounds).
The model directory is built aside and renamed into place.

With a Dask client (``eraflow train --workers N | --scheduler ADDRESS``) each target is one task
(:func:`train_target_task`): the worker opens the store by path, trains the target's folds and final
model with this process's thread count and saves it into the directory being built aside, which it
must see at the same path (a task rerun after its worker died replaces what the dead attempt saved);
the directory is the one a serial run writes. Each model's start reaches the progress display as it
starts on its worker (a Dask event), its rounds and end when its target's task returns. With
``data_parallel`` each model is fit across all the workers instead (:mod:`~eraflow.engine.cluster.lgbm_dask`).

Targets whose store columns are identical (``target`` is ``target_ender_20``) are trained once:
the first stands for the others (model.json ``aliases``), which get a copy of its predictions
and no weight of their own in the rank ensemble.

``era_step`` k keeps every k-th era of the training range (Numerai's example scripts use 4
against the overlap of 20-day targets). CV folds are cut from the kept eras, but embargoes
count store eras: with k = 4 and an embargo of 4, the kept era 4 eras before a test block is
dropped and the one 8 eras before stays.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from socket import gethostname

import numpy as np
import pyarrow as pa

from eraflow.kernels import numerai_corr

from ..atomic import atomic_write_parquet, atomic_writer_path, replace_dir
from ..data.derived import derived_recipe
from ..data.store import EraStore, era_rows, era_subset_offsets, open_store_checked, row_runs
from ..errors import InputError
from ..evaluation.ledger import Run
from ..evaluation.metrics import score_summary
from ..notices import warn
from ..outputs import check_output_dir, translates_write_errors
from ..threads import configured_threads, set_threads
from ..version import eraflow_version
from .cv import default_embargo, era_indices, era_splits, labeled_eras, training_eras
from .kind import DEFAULT_KIND, MODEL_FORMAT, FitData, Fitted, Kind, get_kind
from .params import DeviceChoice
from .predict import (
    ENSEMBLE,
    MODEL_JSON,
    predict_rows,
    prediction_column,
    rank_ensemble,
    with_aliases,
)

Progress = Callable[[str, int, int], None]
DUPLICATE_BLOCK_ROWS = 1 << 18  # most rows of the target matrix compared at a time when looking for duplicates


@dataclass(frozen=True)
class TrainConfig:
    targets: tuple[str, ...] = ("target",)
    feature_set: str | None = None
    features: tuple[str, ...] | None = None
    kind: str = DEFAULT_KIND
    params: dict | None = None  # the kind's parameters (None: its defaults; lgbm's: the starter preset)
    cv: int = 0
    embargo: int | None = None
    cv_mode: str = "expanding"
    train_eras: str | None = None
    valid_eras: str | None = None
    device: str = "cpu"
    seed: int = 0
    early_stopping_rounds: int = 100
    ensemble_weights: tuple[float, ...] | None = None  # one per target chosen (before duplicates are merged)
    era_step: int = 1  # train on every era_step-th era of the training range
    data_parallel: bool = False  # each model trained across the Dask client's workers (lgbm; engine.cluster.lgbm_dask)


def resolve_targets(store: EraStore, patterns) -> list[str]:
    chosen = [t for t in store.target_names if any(t == p or fnmatch.fnmatchcase(t, p) for p in patterns)]
    if not chosen:
        raise InputError(f"no store target matches {list(patterns)}; the store has {', '.join(store.target_names)}")
    return chosen


def duplicate_targets(store: EraStore, targets: list[str]) -> dict[str, str]:
    """Targets whose store column equals an earlier one's: ``{duplicate: the first target with those values}``.

    Columns are compared in blocks of rows that grow from 4096 (NaN equal to NaN) and a pair is
    dropped at its first difference, so distinct targets cost about the first block.
    """
    cols = [store.target_names.index(t) for t in targets]
    pairs = [(i, j) for j in range(len(cols)) for i in range(j)]
    lo, size = 0, 4096
    while pairs and lo < store.n_rows:
        block = np.asarray(store.targets[lo:lo + size])
        pairs = [(i, j) for i, j in pairs if np.array_equal(block[:, cols[i]], block[:, cols[j]], equal_nan=True)]
        lo, size = lo + size, min(2 * size, DUPLICATE_BLOCK_ROWS)
    aliases: dict[str, str] = {}
    for i, j in pairs:  # for each j the smallest i comes first: a target that is not itself a duplicate
        aliases.setdefault(targets[j], targets[i])
    return aliases


def _trained_weights(config: TrainConfig, chosen: list[str], aliases: dict[str, str]) -> list[float] | None:
    """The ensemble weights of the targets trained (duplicates' weights dropped)."""
    if config.ensemble_weights is None:
        return None
    if len(config.ensemble_weights) != len(chosen):
        raise InputError(f"{len(config.ensemble_weights)} ensemble weights for {len(chosen)} targets "
                         f"({', '.join(chosen)}); give one weight per target")
    return [float(w) for t, w in zip(chosen, config.ensemble_weights) if t not in aliases]


def feature_selection(store: EraStore, config: TrainConfig) -> tuple[list[str], np.ndarray]:
    view = store.select(features=config.features, feature_set=config.feature_set)
    cols = np.arange(len(store.feature_names)) if view.cols is None else view.cols
    return view.feature_names, cols


def _rows_target(store: EraStore, era_index: np.ndarray, t_col: int) -> np.ndarray:
    return np.concatenate([store.targets[lo:hi, t_col] for lo, hi in row_runs(store.offsets, era_index)])


@dataclass(frozen=True)
class TrainStatus:
    """Where a training stands, for progress displays: sent when a model starts, after each of its
    rounds, after each batch of a round (kinds that train in batches), and when it ends."""

    event: str  # "start", "batch", "round" or "end"
    target: str
    model: str  # "fold 2/4" or "final"
    round: int  # rounds this model has run
    rounds: int  # rounds it may run at most
    train_eras: int
    stop_eras: int  # eras its early stopping watches (0: none)
    corr: float | None  # mean per-era corr of those eras after this round
    best_corr: float | None
    best_round: int
    done: int  # rounds run by the whole training so far
    total: int  # rounds the whole training runs at most (shrinks as models stop early)
    elapsed: float  # seconds since the training started
    batch: int = 0  # batches of the current round (epoch) done: "batch" events, kinds that train in batches
    batches: int = 0  # batches that round has (0: the kind reports none)
    unit: str = "round"  # what a round is called: "round" (boosting), "epoch" (networks)


StatusCallback = Callable[[TrainStatus], None]


class _ModelRounds:
    """A :class:`~eraflow.engine.models.kind.Tracker` following one model's rounds and the corr its
    early stopping watches."""

    def __init__(self, counter: RoundCounter, target: str, model: str, rounds: int, train_eras: int, stop_eras: int):
        self.counter, self.target, self.model, self.rounds = counter, target, model, rounds
        self.train_eras, self.stop_eras = train_eras, stop_eras
        self.round, self.best_round = 0, 0
        self.batches_done, self.batches = 0, 0
        self.corr: float | None = None
        self.best_corr: float | None = None

    def batch(self, done: int, total: int) -> None:
        """``done`` of the ``total`` batches of the current round have run (the round count stays)."""
        self.batches_done, self.batches = done, total
        self.counter.report(self, "batch", 0)

    def step(self, round: int, corr: float | None) -> None:
        self.round, self.corr = round, corr
        if self.corr is not None and (self.best_corr is None or self.corr > self.best_corr):
            self.best_corr, self.best_round = self.corr, self.round
        self.counter.report(self, "round", 1)


class RoundCounter:
    """Rounds over a whole training (``n_models`` of at most ``max_rounds`` each), reported to a
    ``progress(stage, advance, total)`` callback and a :class:`TrainStatus` listener."""

    def __init__(self, n_models: int, max_rounds: int, progress: Progress | None = None,
                 status: StatusCallback | None = None, unit: str = "round"):
        self.max_rounds, self.total, self.done, self.unit = max_rounds, n_models * max_rounds, 0, unit
        self.progress, self.status, self.started = progress, status, time.perf_counter()

    def start(self, target: str, model: str, rounds: int, train_eras: int, stop_eras: int) -> _ModelRounds:
        self.total += rounds - self.max_rounds
        tracker = _ModelRounds(self, target, model, rounds, train_eras, stop_eras)
        self.report(tracker, "start", 0)
        return tracker

    def end(self, tracker: _ModelRounds, fitted: Fitted) -> None:
        if tracker.round == 0:  # a kind that reports no rounds: its whole fit is one step
            tracker.round = tracker.rounds
            self.report(tracker, "round", tracker.rounds)
        self.total -= tracker.rounds - tracker.round
        if fitted.rounds:
            tracker.best_round = fitted.rounds
        self.report(tracker, "end", 0)

    def announce(self, started: TrainStatus) -> None:
        """Report that another process (a Dask worker) started a model, from its "start" status, with this
        training's counts; its rounds are counted when it ends (:meth:`replay`)."""
        if self.status:
            self.status(replace(started, done=self.done, total=self.total,
                                elapsed=time.perf_counter() - self.started))

    def replay(self, ended: TrainStatus) -> None:
        """Report a model another process trained, from its "end" status: its rounds at once, then its end
        (its start was announced when it began)."""
        self.total += ended.rounds - self.max_rounds
        tracker = _ModelRounds(self, ended.target, ended.model, ended.rounds, ended.train_eras, ended.stop_eras)
        tracker.round, tracker.corr, tracker.best_corr = ended.round, ended.corr, ended.best_corr
        self.report(tracker, "round", ended.round)
        self.total -= ended.rounds - ended.round
        tracker.best_round = ended.best_round
        self.report(tracker, "end", 0)

    def report(self, m: _ModelRounds, event: str, advance: int) -> None:
        self.done += advance
        if self.progress and event != "batch":
            self.progress(f"training {self.unit}s", advance, self.total)
        if self.status:
            self.status(TrainStatus(event, m.target, m.model, m.round, m.rounds, m.train_eras, m.stop_eras, m.corr,
                                    m.best_corr, m.best_round, self.done, self.total,
                                    time.perf_counter() - self.started, m.batches_done, m.batches, self.unit))


@dataclass
class TrainResult:
    model_dir: Path
    targets: list[str]  # trained (distinct) targets
    features: list[str]
    cv: dict  # target → {"folds": [...], "overall": {...}}
    valid: dict  # target → summary on valid_eras
    rounds: dict  # target → rounds of the final model
    device: str
    seconds: float
    aliases: dict = field(default_factory=dict)  # duplicate target → the trained target with its values
    ensemble: dict = field(default_factory=dict)  # {"targets", "scored_on", "cv"?, "valid"?} with several targets
    settings: dict = field(default_factory=dict)  # the kind's settings
    device_choice: DeviceChoice | None = None  # the device's name and why it was chosen


def _split_eras(store: EraStore, config: TrainConfig, target: str,
                embargo: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Training eras (:func:`~eraflow.engine.models.cv.training_eras`) and the validation eras with
    ``target`` values (None without ``valid_eras``)."""
    train, valid = training_eras(store, target, config.train_eras, config.valid_eras, embargo, config.era_step)
    if valid is None:
        return train, None
    valid = labeled_eras(store, valid, store.target_names.index(target))
    if valid.size == 0:
        raise InputError(f"--valid-eras {config.valid_eras} has no era with target values")
    return train, valid


def cv_splits(store: EraStore, train: np.ndarray, n_splits: int, embargo: int,
              mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training eras, test eras) per fold, as store era indices.

    Folds are cut from ``train`` (engine.cv), then every training era within ``embargo`` store
    eras of the test block is dropped: with ``era_step`` > 1 the eras skipped count too.
    """
    folds = []
    for split in era_splits([store.eras[k] for k in train], n_splits, 0, mode):
        tr, te = train[split.train], train[split.test]
        tr = tr[(tr < te.min() - embargo) | (tr > te.max() + embargo)]
        if tr.size == 0:
            raise InputError(f"fold testing eras {store.eras[te[0]]}..{store.eras[te[-1]]} has no training eras "
                             f"left after an embargo of {embargo}; use fewer folds, a smaller embargo or more eras")
        folds.append((tr, te))
    return folds


@dataclass(frozen=True)
class Fit:
    """A fitted model and, with held-out eras, its predictions of them and their per-era corr."""

    model: Fitted
    preds: np.ndarray | None = None
    corr: np.ndarray | None = None


@dataclass(frozen=True)
class Fitter:
    """Fits of one training: the kind and its settings, the features, the counter of rounds."""

    store: EraStore
    kind: Kind
    settings: dict
    cols: np.ndarray
    config: TrainConfig
    device: str
    counter: RoundCounter
    device_choice: DeviceChoice  # ``device`` with its name and why it was chosen

    @property
    def stops_early(self) -> bool:
        """Whether fits stop early on the eras they hold out (else they only predict them)."""
        return self.kind.stops_early

    def fit(self, label: str, target: str, train: np.ndarray, held: np.ndarray | None, embargo: int,
            rounds: int | None = None) -> Fit:
        """Fit on ``train`` eras, stopping early on ``held`` eras (when it can), which it then predicts."""
        stop = held if self.stops_early else None
        data = FitData(self.store, train, self.cols, target, stop, self.device, self.config.seed, embargo,
                       self.config.early_stopping_rounds)
        most = rounds or self.kind.max_rounds(self.settings)
        tracker = self.counter.start(target, label, most, len(train), 0 if stop is None else len(stop))
        model = self.train(data, rounds, tracker)
        self.counter.end(tracker, model)
        if held is None:
            return Fit(model)
        preds = predict_rows(model, self.store, held, self.cols)
        return Fit(model, preds, numerai_corr(preds, data.target_values(held),
                                              era_subset_offsets(self.store.offsets, held)))

    def train(self, data: FitData, rounds: int | None, tracker: _ModelRounds) -> Fitted:
        """The kind's fit of ``data`` in this process."""
        return self.kind.fit(data, self.settings, rounds, tracker)


def make_fitter(store: EraStore, config: TrainConfig, n_models: int, progress: Progress | None = None,
                status: StatusCallback | None = None, client=None) -> Fitter:
    """The fitter of ``config`` (its features, kind, checked settings and resolved device) and a counter
    of the rounds of its ``n_models`` fits; with ``config.data_parallel`` one fitting across ``client``'s
    workers (:class:`~eraflow.engine.cluster.lgbm_dask.DataParallelFitter`)."""
    _, cols = feature_selection(store, config)
    kind = get_kind(config.kind)
    settings = kind.check_settings(config.params)
    choice = choose_device(kind, config.device, settings)
    counter = RoundCounter(n_models, kind.max_rounds(settings), progress, status, getattr(kind, "unit", "round"))
    if not config.data_parallel:
        return Fitter(store, kind, settings, cols, config, choice.device, counter, choice)
    from ..cluster.lgbm_dask import DataParallelFitter

    return DataParallelFitter(store, kind, settings, cols, config, choice.device, counter, choice, client=client)


def choose_device(kind: Kind, device: str, settings: dict) -> DeviceChoice:
    """The device ``kind`` trains on for ``--device device``: its ``choose_device`` (with the device's name
    and why it was chosen) when it has one, else its ``resolve_device``."""
    choose = getattr(kind, "choose_device", None)
    return choose(device, settings) if choose else DeviceChoice(kind.resolve_device(device, settings), device)


def _cross_validate(fitter: Fitter, target: str, train: np.ndarray, embargo: int):
    """Out-of-fold predictions of ``train`` eras, fold summaries with per-era corr, and the median
    best round (None for a kind without rounds)."""
    store, config = fitter.store, fitter.config
    splits = cv_splits(store, train, config.cv, embargo, config.cv_mode)
    oof = {}
    folds, best, per_era, tested = [], [], [], []
    for i, (tr, te) in enumerate(splits):
        fit = fitter.fit(f"fold {i + 1}/{len(splits)}", target, tr, te, embargo)
        oof.update(zip(te.tolist(), np.split(fit.preds, np.cumsum(np.diff(store.offsets)[te])[:-1])))
        best.append(fit.model.rounds)
        per_era.append(fit.corr)
        tested += [store.eras[k] for k in te]
        folds.append({"fold": i, "test_eras": [store.eras[te[0]], store.eras[te[-1]]], "train_eras": len(tr),
                      "best_round": best[-1], **score_summary(fit.corr)})
    scores = np.concatenate(per_era)
    report = {"folds": folds, "overall": score_summary(scores), "per_era": dict(zip(tested, scores.tolist()))}
    return oof, report, None if None in best else int(np.median(best))


@dataclass(frozen=True)
class TargetResult:
    """What training one target gives the trainer besides the model files it saved (small and picklable:
    it comes back from a Dask worker)."""

    target: str
    train_eras: list[str]  # eras the final model trained on
    stopping_eras: list[str]  # eras it stopped early on
    rounds: int | None  # rounds of the final model
    info: dict  # what the fitted model records in model.json (Fitted.describe)
    cv: dict | None = None  # with CV: fold summaries, overall, per-era corr
    oof: dict[int, np.ndarray] | None = None  # with CV: store era index → out-of-fold predictions
    valid: dict | None = None  # summary of the per-era corr on the validation eras
    ensemble_preds: np.ndarray | None = None  # predictions of the eras the ensemble is validated on


def train_target(fitter: Fitter, target: str, out: Path, ensemble_eras: np.ndarray | None = None) -> TargetResult:
    """Train ``target``: CV (``config.cv`` folds) then the final model, saved into ``out``; with
    ``ensemble_eras``, also its predictions of them (for the ensemble's validation score)."""
    store, config = fitter.store, fitter.config
    embargo = config.embargo if config.embargo is not None else default_embargo(target)
    train, valid = _split_eras(store, config, target, embargo)
    stopping = [] if valid is None or not fitter.stops_early else [store.eras[k] for k in valid]
    rounds, oof, cv = None, None, None
    if config.cv:
        oof, cv, rounds = _cross_validate(fitter, target, train, embargo)
    fit = fitter.fit("final", target, train, valid, embargo, rounds)
    save_target(fit.model, out, target)
    ensemble_preds = None
    if ensemble_eras is not None and fit.preds is not None:
        ensemble_preds = (fit.preds if np.array_equal(valid, ensemble_eras)
                          else predict_rows(fit.model, store, ensemble_eras, fitter.cols))
    return TargetResult(target, [store.eras[k] for k in train], stopping, fit.model.rounds, fit.model.describe(), cv,
                        oof, None if fit.corr is None else score_summary(fit.corr), ensemble_preds)


def save_target(model: Fitted, out: Path, target: str) -> None:
    """Save ``model`` (of ``target``) into ``out``, over whatever an earlier attempt left there: it saves into
    ``out/.saving-<target>`` (emptied first), then moves each entry into ``out`` in place of one of the same
    name. A Dask task rerun after its worker died mid-save (V3X's save makes a folder) thus succeeds."""
    scratch = out / f".saving-{target}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    model.save(scratch, target)
    for saved in scratch.iterdir():
        old = out / saved.name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
        saved.rename(old)
    scratch.rmdir()


def _status_to_client(topic: str | None) -> Callable[[TrainStatus], None]:
    """In a Dask task: a status listener that sends each "start" status to the client's ``topic``
    (:func:`_train_targets` shows it as the model starts); nothing without a topic."""
    if topic is None:
        return lambda status: None
    from distributed import get_worker

    worker = get_worker()
    return lambda status: worker.log_event(topic, {"status": asdict(status)}) if status.event == "start" else None


def train_target_task(store_path: str, fingerprint: str, config: TrainConfig, target: str, out: str,
                      ensemble_eras: np.ndarray | None, threads: int,
                      topic: str | None = None) -> tuple[TargetResult, list[TrainStatus]]:
    """:func:`train_target` as a Dask task: opens the store by path (InputError when it is another store),
    uses the caller's ``threads`` (so the model is the one a serial run makes) and saves into ``out``, the
    model directory being built aside, which the worker must see (a rerun replaces what a dead attempt
    saved). Sends each model's "start" status to the client's event ``topic`` as it starts; returns the
    result and each model's "end" status (the caller's progress)."""
    set_threads(threads)
    if not Path(out).is_dir():
        raise InputError(f"the model directory being built ({out}) is not visible on worker host {gethostname()}; "
                         "write the model (-o) to storage every worker sees at the same path")
    ended: list[TrainStatus] = []
    started = _status_to_client(topic)

    def status(s: TrainStatus) -> None:
        started(s)
        if s.event == "end":
            ended.append(s)

    with open_store_checked(store_path, fingerprint) as store:
        fitter = make_fitter(store, config, 1, status=status)
        return train_target(fitter, target, Path(out), ensemble_eras), ended


@contextmanager
def _model_starts(client, counter: RoundCounter, lock: threading.Lock) -> Iterator[str]:
    """An event topic on ``client`` whose "start" statuses (sent by target tasks) ``counter`` announces
    as they come, under ``lock``; none are shown once the block ends."""
    topic, active = f"eraflow-train-{uuid.uuid4().hex}", [True]

    def on_event(event: tuple[float, dict]) -> None:  # in the client's event loop thread
        with lock:
            if active[0]:
                counter.announce(TrainStatus(**event[1]["status"]))  # the worker adds its address beside it

    client.subscribe_topic(topic, on_event)
    try:
        yield topic
    finally:
        with lock:
            active[0] = False
        client.unsubscribe_topic(topic)


def _train_targets(fitter: Fitter, targets: list[str], out: Path, ensemble_eras: np.ndarray | None,
                   client) -> Iterator[TargetResult]:
    """Each target's result as it is trained: here, one after another, or as Dask tasks of ``client`` (each
    model's start shown as it starts on a worker, its rounds and end when its target's task is done)."""
    if client is None or fitter.config.data_parallel:
        for target in targets:
            yield train_target(fitter, target, out, ensemble_eras)
        return
    from ..cluster.executor import run_tasks

    store, config, lock = fitter.store, replace(fitter.config, device=fitter.device), threading.Lock()
    with _model_starts(client, fitter.counter, lock) as topic:
        tasks = {t: (str(store.path.resolve()), store.fingerprint, config, t, str(out.resolve()), ensemble_eras,
                     configured_threads(), topic) for t in targets}
        for _, (result, ended) in run_tasks(client, train_target_task, tasks):
            with lock:
                for status in ended:
                    fitter.counter.replay(status)
            yield result


def _check_config(config: TrainConfig, client) -> None:
    if config.era_step < 1:
        raise InputError(f"--era-step must be at least 1, got {config.era_step}")
    if config.data_parallel:
        from ..cluster.lgbm_dask import check_data_parallel

        check_data_parallel(config, client)


def _warn_duplicates(aliases: dict[str, str]) -> None:
    if aliases:
        same = "; ".join(f"{a} has the same values as {t}" for a, t in aliases.items())
        warn(f"{same} in the store: each is trained once, under the first name (its pred_ column repeats it; "
             "the ensemble counts it once)")


def _warn_optimistic(config: TrainConfig, unit: str) -> None:
    """Scores measured on the eras that chose the number of rounds (epochs) overstate what new eras will see."""
    scores = [name for name, used in (("cv", config.cv), ("validation", config.valid_eras)) if used]
    if scores:
        warn(f"{' and '.join(scores)} scores are optimistic: they are measured on the eras that early stopping "
             f"watched to choose the number of {unit}s; score eras no model saw with `eraflow evaluate`")


@translates_write_errors("model", "out_dir")
def train_models(store: EraStore, out_dir: str | Path, config: TrainConfig, command: str = "",
                 progress: Progress | None = None, status: StatusCallback | None = None,
                 client=None) -> TrainResult:
    """Train one model per target (plus a rank ensemble) into ``out_dir``; see the module doc.

    ``progress(stage, advance, total)`` hears of every boosting round (``total``: the rounds still
    possible, shrinking as models stop early); ``status`` gets a :class:`TrainStatus` with the
    round, the early-stopping corr and the elapsed time. With a Dask ``client`` the targets train
    as tasks on its workers (progress hears of each model when its target is done), or with
    ``config.data_parallel`` each model trains across the workers (:mod:`~eraflow.engine.cluster.lgbm_dask`).
    """
    started = time.perf_counter()
    out_dir = check_output_dir(out_dir, "model", inputs=[store.path])
    _check_config(config, client)
    chosen = resolve_targets(store, config.targets)
    aliases = duplicate_targets(store, chosen)
    targets = [t for t in chosen if t not in aliases]
    weights = _trained_weights(config, chosen, aliases)
    _warn_duplicates(aliases)
    names = feature_selection(store, config)[0]
    fitter = make_fitter(store, config, len(targets) * (config.cv + 1), progress, status, client)
    kind, counter = fitter.kind, fitter.counter
    ensemble_eras = _ensemble_eras(store, config, targets)
    tmp = atomic_writer_path(out_dir)
    tmp.mkdir(parents=True)
    try:
        results = {r.target: r for r in _train_targets(fitter, targets, tmp, ensemble_eras, client)}
        results = {t: results[t] for t in targets}
        cv_report = {t: r.cv for t, r in results.items() if r.cv is not None}
        valid_report = {t: r.valid for t, r in results.items() if r.valid is not None}
        rounds_used = {t: r.rounds for t, r in results.items()}
        ensemble = _ensemble_report(store, targets, weights, ensemble_eras, results)
        oof_columns = {t: r.oof for t, r in results.items() if r.oof is not None}
        if oof_columns:
            eras, columns = _oof_columns(store, oof_columns, weights)
            _write_oof(store, tmp / "oof.parquet", eras, with_aliases(columns, aliases))
            if ENSEMBLE in columns:
                ensemble["cv"] = _score(store, eras, columns[ENSEMBLE], ensemble["scored_on"])
        meta = {"format": MODEL_FORMAT, "kind": kind.name, "features": names, "targets": targets,
                "derived": derived_recipe(store, names),
                "aliases": aliases, "params": fitter.settings,
                "fitted": {t: r.info for t, r in results.items() if r.info},
                "rounds": rounds_used, "device": fitter.device, "device_choice": fitter.device_choice.record(),
                "store": str(store.path.resolve()),
                "store_fingerprint": store.fingerprint, "config": {**asdict(config), "params": None},
                "train_eras": {t: r.train_eras for t, r in results.items()},
                "stopping_eras": {t: r.stopping_eras for t, r in results.items()},
                "cv": cv_report, "valid": valid_report, "ensemble": ensemble, "ensemble_weights": weights,
                "command": command, "eraflow_version": eraflow_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=1, default=float))
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if fitter.stops_early:
        _warn_optimistic(config, counter.unit)
    return TrainResult(out_dir, targets, names, cv_report, valid_report, rounds_used, fitter.device,
                       time.perf_counter() - started, aliases, ensemble, fitter.settings, fitter.device_choice)


def ensemble_target(store: EraStore, targets: list[str]) -> str:
    """The target the ensemble is scored on: the store's ``target`` when it has one, else the first trained."""
    return "target" if "target" in store.target_names else targets[0]


def _score(store: EraStore, era_index: np.ndarray, preds: np.ndarray, target: str) -> dict:
    """Summary of the per-era numerai_corr of ``preds`` (rows of ``era_index``, store order) with ``target``."""
    y = _rows_target(store, era_index, store.target_names.index(target))
    return score_summary(numerai_corr(preds, y, era_subset_offsets(store.offsets, era_index)))


def _ensemble_eras(store: EraStore, config: TrainConfig, targets: list[str]) -> np.ndarray | None:
    """With several targets and validation eras: those with values of the target the ensemble is scored
    on (each target's model predicts them); else None."""
    if len(targets) < 2 or config.valid_eras is None:
        return None
    scored_on = store.target_names.index(ensemble_target(store, targets))
    eras = labeled_eras(store, era_indices(store, config.valid_eras), scored_on)
    return eras if eras.size else None


def _ensemble_report(store: EraStore, targets: list[str], weights, eras: np.ndarray | None,
                     results: dict[str, TargetResult]) -> dict:
    """With several targets: which ones, the target it is scored on, and its validation score on ``eras``."""
    if len(targets) < 2:
        return {}
    report = {"targets": targets, "scored_on": ensemble_target(store, targets)}
    if eras is None:
        return report
    columns = [results[t].ensemble_preds for t in targets]
    offsets = era_subset_offsets(store.offsets, eras)
    ensemble = rank_ensemble(np.column_stack(columns), offsets, weights)
    report["valid"] = _score(store, eras, ensemble, report["scored_on"])
    return report


def _oof_columns(store: EraStore, oof: dict[str, dict[int, np.ndarray]], weights) -> tuple[np.ndarray, dict]:
    """The eras every target's CV covered, and their out-of-fold predictions per target (plus the ensemble)."""
    era_index = np.array(sorted(set.intersection(*(set(o) for o in oof.values()))), dtype=np.int64)
    columns = {prediction_column(t): np.concatenate([o[k] for k in era_index.tolist()]) for t, o in oof.items()}
    if len(columns) > 1:
        offsets = era_subset_offsets(store.offsets, era_index)
        columns[ENSEMBLE] = rank_ensemble(np.column_stack(list(columns.values())), offsets, weights)
    return era_index, columns


def _write_oof(store: EraStore, path: Path, era_index: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Out-of-fold predictions: id, era, one column per target (and the ensemble)."""
    rows = era_rows(store.offsets, era_index)
    table = {"id": pa.array(store.ids[rows], pa.string()),
             "era": pa.array(np.repeat([store.eras[k] for k in era_index], np.diff(store.offsets)[era_index]),
                             pa.string()),
             **{k: pa.array(v.astype(np.float32)) for k, v in columns.items()}}
    atomic_write_parquet(path, pa.table(table))


def training_run(result: TrainResult, store: EraStore, config: TrainConfig, command: str) -> Run:
    """The ledger record of a training: CV and validation summaries, per-era out-of-fold corr."""
    metrics = {**{f"cv_{t}": r["overall"] for t, r in result.cv.items()},
               **{f"valid_{t}": s for t, s in result.valid.items()},
               **{f"{k}_ensemble": result.ensemble[k] for k in ("cv", "valid") if k in result.ensemble}}
    per_era = [("oof", t, era, corr) for t, r in result.cv.items() for era, corr in r["per_era"].items()]
    params = {**result.settings, "kind": config.kind, "cv": config.cv, "cv_mode": config.cv_mode, "embargo": config.embargo,
              "era_step": config.era_step, "device": result.device, "rounds": result.rounds,
              "aliases": result.aliases, **({"data_parallel": True} if config.data_parallel else {})}
    return Run("train", command, params, store.fingerprint, result.targets, result.features, metrics,
               {"model_dir": str(result.model_dir.resolve())}, per_era)
