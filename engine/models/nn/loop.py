"""The training loop of the network kinds ``gtruda`` and ``mlp``: epochs of batches from the store,
validation on held-out eras, early stopping, Ctrl-C, mixed precision and devices.

One fit (:func:`train_network`):

1. **Eras.** With stopping eras from the trainer (CV test eras, ``--valid-eras``) the net trains on
   every training era and watches those. Given ``rounds`` (the CV folds' median best epoch) and no
   stopping eras, it runs exactly that many epochs on every training era. Given neither, the
   **holdout rule** (:func:`era_schedule`): the latest ``holdout`` share of the training eras (at
   least one) is held out for early stopping, and the ``embargo`` store eras before it are dropped;
   the net trains on the rest. ``holdout = 0``: every training era, all epochs, the last weights.
2. **Epochs.** An epoch is one pass over the training rows with a target (rows whose target is
   NaN are skipped and counted), in batches from :func:`~.data.batch_loader` (a plan seeded by
   ``(seed, epoch)``); the kind's ``step`` trains on each batch, moved to the device.
3. **Validation** after each epoch: the net in eval mode (BatchNorm running statistics, no
   Dropout) predicts the stopping eras in blocks of whole eras, scored by the mean per-era
   numerai_corr; the best epoch's weights are kept in memory and training stops after
   ``patience`` epochs without a higher corr. The fit keeps the best epoch's weights.
4. **Ctrl-C** (KeyboardInterrupt) inside the epochs ends training with the best weights so far
   (one warning; ``interrupted`` in model.json). Before the first epoch ends there is nothing to
   keep, and the interrupt goes on.

Devices: ``cpu``, ``cuda`` (``gpu`` is the same), ``auto`` (CUDA when ``torch.cuda.is_available()``).
Mixed precision (``amp``): bfloat16 autocast of the forward passes (``"auto"``: on CUDA only; true:
on the CPU too); losses are computed in float32 outside autocast. With a seed the fit is
deterministic on the CPU: the net's initial weights, Dropout and the batch plan come from it, and
the process's own random state is left as it was.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eraflow.kernels import numerai_corr

from ...atomic import atomic_write_bytes
from ...data.store import era_subset_offsets
from ...errors import InputError
from ...notices import warn
from ...threads import configured_threads
from ..kind import FitData, Tracker, unknown_settings
from ..model_files import damaged_file, missing_file
from ..portable.nets import NetPredictor
from ..predict import predict_rows
from .data import CHUNK_ROWS, Batch, batch_loader, inputs_from_int8, iter_batches
from .nets import load_state_arrays, portable_predictor, state_arrays

DEVICES = ("cpu", "cuda", "gpu", "auto")  # gpu: CUDA, as for the xgb kind
# Settings every network kind takes (see the README's table); the kinds add their own and a batch size.
COMMON_DEFAULTS = {"epochs": 30, "patience": 5, "holdout": 0.2, "per_era": False, "workers": 0, "amp": "auto",
                   "chunk_rows": CHUNK_ROWS}
PREDICT_ROWS = 8192  # rows per forward pass when predicting: GTRUDA's activations at 2376 features ~0.4 GB
ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive
PEARSON_EPS = 1e-12  # keeps the Pearson loss finite on a batch (or era) of constant predictions

Step = Callable[[Batch], None]  # trains the net on one batch (on the device)
Cast = Callable[[], AbstractContextManager]  # the autocast context of the forward passes


def model_file(target: str) -> str:
    return f"model_{target}.npz"


# ---------------------------------------------------------------------------------------------- settings


def _refuse(kind: str, name: str, what: str, value) -> InputError:
    return InputError(f"model kind {kind!r}: {name} must be {what}, got {value!r}")


def whole_number(kind: str, name: str, value, least: int) -> int:
    """``value`` when it is an integer ≥ ``least`` (a boolean is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _refuse(kind, name, f"a whole number ≥ {least}", value)
    return value


def number_in(kind: str, name: str, value, low: float, high: float = math.inf, open_low: bool = False) -> float:
    """``value`` as a float when it is a finite number ≥ ``low`` (> with ``open_low``) and < ``high``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (open_low and value == low) or value >= high:
        bounds = f"{'>' if open_low else '≥'} {low:g}" + (f" and < {high:g}" if high < math.inf else "")
        raise _refuse(kind, name, f"a number {bounds}", value)
    return float(value)


def flag(kind: str, name: str, value) -> bool:
    """``value`` when it is a boolean: the string "False" is refused (the seed's flags were strings, always true)."""
    if not isinstance(value, bool):
        raise _refuse(kind, name, "true or false (a boolean, not a string)", value)
    return value


def widths(kind: str, name: str, value) -> list[int]:
    """``value`` as a list of layer widths, each a whole number ≥ 1."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                                       for w in value):
        raise _refuse(kind, name, "a list of layer widths (whole numbers ≥ 1)", value)
    return list(value)


def check_common(kind: str, settings: dict) -> dict:
    """The settings every network kind takes, checked and normalised (see :data:`COMMON_DEFAULTS`)."""
    if settings["amp"] != "auto" and not isinstance(settings["amp"], bool):
        raise _refuse(kind, "amp", '"auto", true or false', settings["amp"])
    return {**settings, "epochs": whole_number(kind, "epochs", settings["epochs"], 1),
            "batch_size": whole_number(kind, "batch_size", settings["batch_size"], 2),  # BatchNorm needs 2 rows
            "patience": whole_number(kind, "patience", settings["patience"], 1),
            "holdout": number_in(kind, "holdout", settings["holdout"], 0.0, 1.0),
            "per_era": flag(kind, "per_era", settings["per_era"]),
            "workers": whole_number(kind, "workers", settings["workers"], 0),
            "chunk_rows": whole_number(kind, "chunk_rows", settings["chunk_rows"], 1)}


# ---------------------------------------------------------------------------------------------- devices


def resolve_device(device: str) -> str:
    """``cuda`` for ``cuda``/``gpu`` when torch sees a GPU (else a one-line InputError), ``auto`` → ``cuda``
    when it does, else ``cpu``."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device == "auto":
        return "cpu"
    raise InputError(f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                     f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")


def uses_amp(amp: bool | str, device: str) -> bool:
    """Whether the forward passes run under bfloat16 autocast: ``amp`` true, or ``"auto"`` on CUDA."""
    return device == "cuda" if amp == "auto" else bool(amp)


def autocast(device: str, enabled: bool) -> Cast:
    """The context of the forward passes: bfloat16 autocast on ``device`` when ``enabled``."""
    return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


@contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """torch's random state seeded with ``seed`` inside, restored after (net initialisation, Dropout)."""
    cuda = [torch.cuda.current_device()] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def to_device(batch: Batch, device: str, pinned: bool) -> Batch:
    """``batch`` on ``device`` (asynchronous copies from pinned memory)."""
    return Batch(*(t.to(device, non_blocking=pinned) for t in batch))


# ---------------------------------------------------------------------------------------------- losses


def negative_pearson(pred: torch.Tensor, y: torch.Tensor, era: torch.Tensor | None = None) -> torch.Tensor:
    """``−Pearson(pred, y)`` over the batch, or (``era`` given) ``−mean_e Pearson(pred_e, y_e)`` over its eras.

    ``Pearson = Σ p̃ỹ / √(Σ p̃² · Σ ỹ²)`` with ``p̃ = p − mean(p)``, ``ỹ = y − mean(y)`` (per era).
    """
    if era is None:
        group, n_groups = torch.zeros_like(y, dtype=torch.long), 1
    else:
        _, group = torch.unique(era, return_inverse=True)
        n_groups = int(group.max()) + 1

    def group_sum(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_groups, dtype=v.dtype, device=v.device).index_add_(0, group, v)

    count = group_sum(torch.ones_like(y))
    p = pred - (group_sum(pred) / count)[group]
    t = y - (group_sum(y) / count)[group]
    corr = group_sum(p * t) / torch.sqrt(group_sum(p * p) * group_sum(t * t) + PEARSON_EPS)
    return -corr.mean()


# ---------------------------------------------------------------------------------------------- the fitted model


def net_outputs(net: nn.Module, x: np.ndarray, device: str, rows: int = PREDICT_ROWS) -> np.ndarray:
    """The eval-mode outputs (float64, n) of ``net`` for int8 codes ``x`` (n × features, −1 missing), in
    batches of ``rows``: BatchNorm uses its running statistics, so a row's output does not depend on the
    other rows of its batch."""
    net.eval()
    out = np.empty(len(x), dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, len(x), rows):
            inputs = torch.from_numpy(inputs_from_int8(x[lo:lo + rows])).to(device)
            out[lo:lo + len(inputs)] = net(inputs).float().cpu().numpy()
    return out


@dataclass
class NetModel:
    """A trained network of one target (``rounds``: its best epoch) and what model.json records of the fit."""

    net: nn.Module
    info: dict = field(default_factory=dict)
    rounds: int | None = None
    device: str = "cpu"

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return net_outputs(self.net, x, self.device)

    def save(self, model_dir: Path, target: str) -> None:
        """``model_<target>.npz``: the state dict (BatchNorm statistics included), written aside then renamed."""
        buffer = io.BytesIO()
        np.savez(buffer, **state_arrays(self.net))
        atomic_write_bytes(model_dir / model_file(target), buffer.getvalue())

    def portable(self) -> NetPredictor:
        return portable_predictor(self.net)

    def importance(self) -> None:
        return None

    def describe(self) -> dict:
        return self.info


def read_weights(file: Path) -> dict[str, np.ndarray]:
    """The arrays of a weights ``.npz`` (no pickles), all finite; a one-line InputError when the file is
    missing, damaged or truncated."""
    try:
        with open(file, "rb") as handle:
            if handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                raise damaged_file(file, "not an .npz archive")
            handle.seek(0)
            archive = np.load(handle, allow_pickle=False)
            with archive:
                arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise missing_file(file) from None
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        # what zipfile and np.load raise on a damaged archive (fuzzed: 20,000 byte edits, 250 truncations)
        raise damaged_file(file, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}") \
            from None
    if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
        raise damaged_file(file, "it holds weights that are not finite")
    return arrays


def load_net(model_dir: Path, target: str, net: nn.Module, info: dict) -> NetModel:
    """The model of ``target`` saved in ``model_dir``: ``net`` (built with the saved settings) given its
    weights, on the CPU, in eval mode."""
    file = model_dir / model_file(target)
    load_state_arrays(net, read_weights(file), file)
    net.eval()
    return NetModel(net, info, info.get("best_epoch"), "cpu")


# ---------------------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class EraSchedule:
    """Eras (store indices) one fit trains on and watches, its most epochs and how it stops
    (``"stop eras"``: the trainer's; ``"holdout"``: the holdout rule; ``"rounds"``: the epochs given;
    ``"none"``: every epoch, the last weights)."""

    train: np.ndarray
    stop: np.ndarray | None
    epochs: int
    stopping: str


def era_schedule(data: FitData, settings: dict, rounds: int | None) -> EraSchedule:
    """The eras and epochs of one fit (the holdout rule of the module docstring, step 1).

    Example: 50 training eras, holdout 0.2, embargo 4 → eras 0..35 train, 40..49 watched.
    """
    train = np.asarray(data.train_eras, dtype=np.int64)
    epochs = rounds or settings["epochs"]
    if data.stop_eras is not None:
        return EraSchedule(train, np.asarray(data.stop_eras, dtype=np.int64), epochs, "stop eras")
    if rounds is not None:
        return EraSchedule(train, None, rounds, "rounds")
    if settings["holdout"] == 0:
        return EraSchedule(train, None, epochs, "none")
    held = train[-max(1, round(settings["holdout"] * len(train))):]
    kept = train[train < held.min() - data.embargo]
    if kept.size == 0:
        raise InputError(f"holdout {settings['holdout']:g} of {len(train)} training eras with an embargo of "
                         f"{data.embargo} leaves no era to train on; lower holdout (0: no early stopping), or give "
                         "stopping eras with --valid-eras")
    return EraSchedule(kept, held, epochs, "holdout")


def validation_corr(model: NetModel, data: FitData, eras: np.ndarray, target: np.ndarray) -> float:
    """Mean per-era numerai_corr of the eval-mode predictions of ``eras`` (blocks of whole eras) with
    ``target`` (their rows' values, NaN kept); NaN when no era can be scored."""
    preds = predict_rows(model, data.store, eras, data.cols)
    corr = numerai_corr(preds, target, era_subset_offsets(data.store.offsets, eras))
    return float(np.nanmean(corr)) if np.isfinite(corr).any() else math.nan


def state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``net``'s state dict (on its device)."""
    return {name: t.detach().clone() for name, t in net.state_dict().items()}


@dataclass
class EpochLog:
    """What the epochs of one fit have done: the best epoch, its weights and the per-epoch corr."""

    best_epoch: int = 0
    best_corr: float = -math.inf
    best_state: dict | None = None
    epochs_run: int = 0
    corrs: list = field(default_factory=list)
    rows: int = 0
    skipped: int = 0
    interrupted: bool = False

    def record(self, epoch: int, corr: float | None, net: nn.Module) -> None:
        """Epoch ``epoch`` ended with validation ``corr`` (None: no validation, each epoch is the best so far)."""
        self.epochs_run = epoch
        self.corrs.append(None if corr is None or not math.isfinite(corr) else corr)
        score = -math.inf if corr is None or not math.isfinite(corr) else corr
        if corr is None or self.best_state is None or score > self.best_corr:
            self.best_epoch, self.best_corr, self.best_state = epoch, score, state_copy(net)

    def patience_spent(self, patience: int) -> bool:
        return self.epochs_run - self.best_epoch >= patience


def run_epoch(net: nn.Module, step: Step, data: FitData, settings: dict, eras: np.ndarray, y: np.ndarray,
              epoch: int, tracker: Tracker | None) -> tuple[int, int]:
    """One pass with ``step`` over the rows of ``eras`` whose target ``y`` (store order, NaN kept) is
    present; returns (rows trained, rows skipped)."""
    pinned = data.device == "cuda"
    epoch_batches = batch_loader(data.store, data.cols, y, eras, settings["batch_size"], settings["per_era"],
                                 settings["workers"], data.seed, epoch, pinned, settings["chunk_rows"])
    net.train()
    for done, batch in enumerate(iter_batches(epoch_batches.loader), 1):
        step(to_device(batch, data.device, pinned))
        if tracker:
            tracker.batch(done, epoch_batches.n_batches)
    return epoch_batches.rows, epoch_batches.skipped


def train_network(net: nn.Module, make_step: Callable[[nn.Module, Cast], Step], data: FitData, settings: dict,
                  rounds: int | None, tracker: Tracker | None) -> NetModel:
    """Train ``net`` (moved to ``data.device``) by ``make_step(net, cast)``'s steps as the module docstring
    says; the fitted model keeps the best epoch's weights."""
    device = data.device
    if configured_threads() > 0:
        torch.set_num_threads(configured_threads())
    plan = era_schedule(data, settings, rounds)
    net.to(device)
    step = make_step(net, autocast(device, uses_amp(settings["amp"], device)))
    model = NetModel(net, device=device)
    y = data.target_values(plan.train)
    target = None if plan.stop is None else data.target_values(plan.stop)
    log = EpochLog()
    try:
        for epoch in range(1, plan.epochs + 1):
            log.rows, log.skipped = run_epoch(net, step, data, settings, plan.train, y, epoch, tracker)
            corr = None if plan.stop is None else validation_corr(model, data, plan.stop, target)
            log.record(epoch, corr, net)
            if tracker:
                tracker.step(epoch, log.corrs[-1])
            if plan.stop is not None and log.patience_spent(settings["patience"]):
                break
    except KeyboardInterrupt:
        if log.best_state is None:
            raise
        log.interrupted = True
        warn(f"training of {data.target} interrupted after {log.epochs_run} epochs: keeping the weights of "
             f"epoch {log.best_epoch}")
    net.load_state_dict(log.best_state)
    net.eval()
    model.rounds = log.best_epoch
    model.info = fit_info(net, plan, log, data, device)
    return model


def fit_info(net: nn.Module, plan: EraSchedule, log: EpochLog, data: FitData, device: str) -> dict:
    """What model.json records of a fit (``fitted.<target>``)."""
    info = {"parameters": net.parameter_counts(), "best_epoch": log.best_epoch,
            "epochs_run": log.epochs_run, "rows": log.rows, "rows_skipped": log.skipped,
            "train_eras": len(plan.train), "stopping": plan.stopping, "valid_corr": log.corrs,
            "interrupted": log.interrupted, "device": device}
    if plan.stopping == "holdout":
        eras = data.era_labels(plan.stop)
        info["holdout_eras"] = [eras[0], eras[-1]]
    return info


class NetworkKind:
    """The frame of a network kind: settings = the common ones (:func:`check_common`) and the kind's own
    (:meth:`check_own`), trained in epochs by :func:`train_network`, saved and loaded by :func:`load_net`.
    A kind gives ``name``, ``DEFAULTS``, :meth:`make_net` and :meth:`make_step`."""

    name: str
    DEFAULTS: dict
    stops_early = True
    unit = "epoch"

    def check_own(self, settings: dict) -> dict:
        """The kind's own settings checked (InputError naming a bad one); ``settings`` are all of them."""
        return settings

    def check_features(self, n_features: int) -> None:
        """InputError when the net cannot take ``n_features`` inputs."""

    def make_net(self, n_features: int, settings: dict) -> nn.Module:
        raise NotImplementedError

    def make_step(self, net: nn.Module, cast: Cast, settings: dict) -> Step:
        raise NotImplementedError

    def check_settings(self, params: dict | None) -> dict:
        params = dict(params or {})
        unknown_settings(self.name, params, self.DEFAULTS)
        return self.check_own(check_common(self.name, {**self.DEFAULTS, **params}))

    def resolve_device(self, device: str, settings: dict) -> str:
        return resolve_device(device)

    def max_rounds(self, settings: dict) -> int:
        return settings["epochs"]

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> NetModel:
        self.check_features(len(data.cols))
        with seeded(data.seed, data.device):
            net = self.make_net(len(data.cols), settings)
            return train_network(net, lambda n, cast: self.make_step(n, cast, settings), data, settings, rounds,
                                 tracker)

    def load(self, model_dir: Path, target: str, meta: dict) -> NetModel:
        settings = self.check_settings(meta.get("params"))
        self.check_features(len(meta["features"]))
        net = self.make_net(len(meta["features"]), settings)
        return load_net(model_dir, target, net, (meta.get("fitted") or {}).get(target, {}))
