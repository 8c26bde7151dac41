"""Model parameters: LightGBM presets, a params.toml file of any kind's parameters, and the training device."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..threads import configured_threads

PRESETS = {
    # Numerai's starter model: shallow trees, few features per tree.
    "starter": {"n_estimators": 2000, "learning_rate": 0.01, "max_depth": 5, "num_leaves": 31,
                "colsample_bytree": 0.1},
    # Numerai's "deep" v5 example settings.
    "deep": {"n_estimators": 30000, "learning_rate": 0.001, "max_depth": 10, "num_leaves": 1024,
             "colsample_bytree": 0.1, "min_data_in_leaf": 10000},
}
# Features take at most 5 values (+ missing): a 20k-row sample finds every bin, and the sample
# (sample rows × features × ~12 bytes) is most of LightGBM's memory while binning.
# force_col_wise: left to choose, LightGBM builds the row-wise layout too to time both; at 250k × 2376
# that cost 0.6 GiB of peak memory and 4× the time of a 3-round training, and it chose col-wise anyway.
BASE = {"objective": "regression", "metric": "None", "bin_construct_sample_cnt": 20000, "verbosity": -1,
        "force_col_wise": True}
DEVICES = ("cpu", "gpu", "cuda", "auto")
NETWORK_KINDS = ("gtruda", "mlp")  # kinds trained in epochs of batches: they take epochs and batch_size
ROUNDS_KEYS = ("n_estimators", "num_iterations", "num_boost_round", "num_trees", "num_round", "num_rounds")
THREADS_KEYS = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")


def read_toml(path: Path) -> dict:
    """The TOML document in ``path``; InputError when it is not valid TOML."""
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML ({exc})") from None


def load_params(spec: str) -> dict:
    """A preset name or the path of a TOML file of LightGBM parameters (optionally ``preset = "…"``)."""
    if spec in PRESETS:
        return {**BASE, **PRESETS[spec]}
    path = Path(spec)
    if not path.exists():
        raise InputError(f"--params {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    doc = read_toml(path)
    base = doc.pop("preset", "starter")
    if base not in PRESETS:
        raise InputError(f"{path}: unknown preset {base!r}; choose one of {', '.join(PRESETS)}")
    bad = [k for k, v in doc.items() if isinstance(v, (dict, list))]
    if bad:
        raise InputError(f"{path}: parameters must be plain values; {bad} are not")
    return {**BASE, **PRESETS[base], **doc}


def without_clash(params: dict) -> dict:
    """LightGBM ``params`` without the base ``force_col_wise`` when they ask for ``force_row_wise``."""
    return {k: v for k, v in params.items() if k != "force_col_wise"} if params.get("force_row_wise") else params


def read_params_file(path: Path) -> dict:
    """A TOML file of plain ``name = value`` parameters."""
    if not path.is_file():
        raise InputError(f"--params {str(path)!r} is not a file")
    doc = read_toml(path)
    bad = [k for k, v in doc.items() if not is_plain(v)]
    if bad:
        raise InputError(f"{path}: parameters must be plain values or lists of them; {bad} are not")
    return doc


def is_plain(value) -> bool:
    """A number, string or boolean, or a list of them (``alphas = [0.1, 1.0]``)."""
    if isinstance(value, list):
        return all(not isinstance(v, (dict, list)) for v in value)
    return not isinstance(value, dict)


def kind_params(kind: str, spec: str | None) -> dict | None:
    """``--params`` for a model kind: for ``lgbm`` a preset or a params.toml (:func:`load_params`,
    the starter preset by default); for other kinds a params.toml of the kind's parameters, or None
    (the kind's defaults). Presets are LightGBM's only."""
    if kind == "lgbm":
        return load_params(spec or "starter")
    if spec is None:
        return None
    if spec in PRESETS:
        raise InputError(f"--params {spec!r} is a LightGBM preset; model kind {kind!r} takes a params.toml "
                         "of its own parameters")
    return read_params_file(Path(spec))


def with_options(params: dict | None, **options) -> dict | None:
    """``params`` updated with the command-line options that were given (not None)."""
    given = {k: v for k, v in options.items() if v is not None}
    return {**(params or {}), **given} if given else params


def check_network_option(name: str, value, kind: str) -> None:
    """InputError unless ``value`` of the option ``name`` is None, or a whole number ≥ 1 for a kind of
    :data:`NETWORK_KINDS`."""
    if value is None:
        return
    if kind not in NETWORK_KINDS:
        raise InputError(f"{name} applies to the network kinds ({', '.join(NETWORK_KINDS)}), not model kind {kind!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number ≥ 1, got {value!r}")


def split_rounds(params: dict) -> tuple[dict, int]:
    """LightGBM params without the number of rounds, and that number (default 100)."""
    rounds = [params[k] for k in ROUNDS_KEYS if k in params]
    rest = {k: v for k, v in params.items() if k not in ROUNDS_KEYS}
    return rest, int(rounds[0]) if rounds else 100


def device_params(device: str) -> dict:
    """LightGBM's ``device_type`` for a --device choice (``auto`` is resolved by the trainer)."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return {"device_type": device}


@dataclass(frozen=True)
class DeviceChoice:
    """The device a training uses: ``device`` (cpu, gpu, cuda) for the ``--device`` asked (``requested``),
    the device's ``name`` when known, and ``why`` a choice was made (``auto`` choosing cpu: no GPU found)."""

    device: str
    requested: str
    name: str | None = None
    why: str | None = None

    def record(self) -> dict:
        """What model.json records: ``{"requested", "device"}`` and ``name``/``why`` when known."""
        return {"requested": self.requested, "device": self.device,
                **{k: v for k, v in (("name", self.name), ("why", self.why)) if v}}

    def describe(self) -> str:
        """``device`` with its name or the reason it was chosen, for the train command's output."""
        about = "; ".join(x for x in (self.name, self.why) if x)
        return f"{self.device} ({about})" if about else self.device


def with_threads(params: dict) -> dict:
    """``params`` with ``num_threads`` from ``--threads`` (:func:`~eraflow.engine.threads.configured_threads`)
    when it is set; LightGBM's aliases of it are dropped so the command line wins over a params file."""
    n = configured_threads()
    if n <= 0:
        return dict(params)
    return {**{k: v for k, v in params.items() if k not in THREADS_KEYS}, "num_threads": n}
