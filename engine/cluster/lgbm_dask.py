"""One LightGBM model trained across the workers of a Dask cluster (``eraflow train --data-parallel``).

The training eras are cut into shards of whole eras with about equal rows (:func:`~.partition.era_parts`; at
least one per worker, at most about :data:`SHARD_ROWS` rows each). Each shard is two tasks placed
round-robin on the workers (they may run or move elsewhere: ``allow_other_workers``, e.g. when a worker
dies) that open the store BY PATH: one reads the shard's int8 codes as float32 (missing → NaN), the other
its labels and weights (one rule with a local fit: :func:`~eraflow.engine.models.kind.labels_and_weights`);
nothing large leaves the client. The shards become dask arrays and ``lightgbm.dask.DaskLGBMRegressor`` trains
one booster over them where they lie, with LightGBM's data-parallel tree learner (histograms summed across
workers). The booster is saved as a normal ``lgbm`` model: ``predict``, ``live`` and ``export`` do not know
how it was made.

What it supports: kind ``lgbm`` on the workers' CPUs, any targets (one model after another), feature
sets, ``--era-step``, ``--cv`` and ``--valid-eras``. LightGBM's Dask interface has no early stopping,
so every fit runs all ``n_estimators`` rounds: CV folds and validation eras are scored (predicted in
the client, batch by batch from the store), never stopped on. Each worker uses its own Dask thread
count for LightGBM (``--threads`` does not reach it). Refused in one line: other kinds, ``--device``
other than cpu, ``--era-boost``, and no cluster.

Why the model differs from a local one: LightGBM sums per-worker histograms in another order (float
sums), so near-equal split gains can break differently; with the store's integer codes every worker
bins features the same way, so the models agree up to those ties (tests/test_train_dask.py measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.store import int8_to_float32, open_store_checked, read_codes, row_runs
from ..errors import InputError
from ..models import lgb_data  # noqa: F401  (on a worker too: LightGBM's messages go to eraflow's silent logger)
from ..models.kind import FitData, Fitted, labels_and_weights
from ..models.lgb_errors import lightgbm_errors
from ..models.params import THREADS_KEYS
from ..models.train import Fitter, TrainConfig
from .partition import era_parts

# Most rows of one shard (about 12 of Numerai's ~5.5k-row eras): 65,536 rows × 2376 features (Numerai's "all")
# ≈ 156M cells ≈ 0.62 GB of float32 read by one task on its worker.
SHARD_ROWS = 1 << 16


def check_data_parallel(config: TrainConfig, client) -> None:
    """InputError for what ``--data-parallel`` does not do (see the module doc)."""
    if client is None:
        raise InputError("--data-parallel trains one model across a Dask cluster; give --workers N or "
                         "--scheduler ADDRESS")
    if config.kind != "lgbm":
        raise InputError(f"--data-parallel trains lgbm models only, not --model {config.kind}; "
                         "drop --data-parallel (--workers still trains targets in parallel)")
    if config.device != "cpu":
        raise InputError(f"--data-parallel trains on the workers' CPUs; drop --device {config.device}")
    params = config.params or {}
    if params.get("era_boost_steps"):
        raise InputError("--data-parallel does not boost eras (it fits each model in one pass); drop --era-boost")


def era_shards(offsets: np.ndarray, eras: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """``eras`` cut into at most ``n_shards`` contiguous groups of whole eras with about equal rows
    (:func:`~.partition.era_parts` of their rows)."""
    return [eras[k0:k1] for k0, k1 in era_parts(np.diff(offsets)[eras], n_shards)]


def _quiet_lightgbm_thread() -> None:
    """LightGBM's C++ log callback is per thread: register it in this worker thread too, so the messages of
    the training that follows here ("Listening...", "Connected to rank 0") go to eraflow's silent logger
    (engine.models.lgb_data), not to the worker's stdout."""
    import lightgbm.basic

    lightgbm.basic._LIB.LGBM_RegisterLogCallback(lightgbm.basic._LIB.callback)


def read_shard_features(store_path: str, fingerprint: str, eras: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """On a worker: float32 features (missing NaN) of the rows of ``eras``, columns ``cols``."""
    _quiet_lightgbm_thread()
    with open_store_checked(store_path, fingerprint) as store:
        return np.concatenate([int8_to_float32(read_codes(store, lo, hi, cols))
                               for lo, hi in row_runs(store.offsets, eras)])


def read_shard_labels(store_path: str, fingerprint: str, eras: np.ndarray, t_col: int) -> np.ndarray:
    """On a worker: (rows of ``eras``) × 2, each row's label and weight (:func:`labels_and_weights`)."""
    with open_store_checked(store_path, fingerprint) as store:
        y = np.concatenate([store.targets[lo:hi, t_col] for lo, hi in row_runs(store.offsets, eras)])
    return np.column_stack(labels_and_weights(y))


def shard_arrays(client, data: FitData):
    """Dask arrays (features, label, weight) of ``data``'s training eras, each shard read on its worker."""
    import dask.array as da

    store = data.store
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise InputError("the Dask cluster has no workers; start some with `dask worker SCHEDULER_ADDRESS`")
    n_rows = int(np.diff(store.offsets)[data.train_eras].sum())
    n_shards = min(len(data.train_eras), max(len(workers), math.ceil(n_rows / SHARD_ROWS)))
    path, fp = str(store.path.resolve()), store.fingerprint
    xs, ys, ws = [], [], []
    for i, eras in enumerate(era_shards(store.offsets, data.train_eras, n_shards)):
        where = {"workers": [workers[i % len(workers)]], "allow_other_workers": True}
        n = int(np.diff(store.offsets)[eras].sum())
        xs.append(da.from_delayed(client.submit(read_shard_features, path, fp, eras, data.cols, **where),
                                  (n, len(data.cols)), np.float32))
        labels = da.from_delayed(client.submit(read_shard_labels, path, fp, eras, data.target_col, **where),
                                 (n, 2), np.float64)
        ys.append(labels[:, 0])
        ws.append(labels[:, 1])
    return da.concatenate(xs), da.concatenate(ys), da.concatenate(ws)


def fit_data_parallel(client, data: FitData, settings: dict, rounds: int | None) -> Fitted:
    """One booster of ``data`` trained across ``client``'s workers for ``rounds`` (else all) rounds."""
    from lightgbm.dask import DaskLGBMRegressor

    from ..models.lgbm import KIND, LightGBMModel

    params = {k: v for k, v in KIND.train_params(data, settings).items() if k not in THREADS_KEYS}
    x, y, w = shard_arrays(client, data)
    model = DaskLGBMRegressor(client=client, n_estimators=rounds or KIND.max_rounds(settings), **params)
    with lightgbm_errors():
        model.fit(x, y, sample_weight=w)
    return LightGBMModel(model.booster_)


@dataclass(frozen=True)
class DataParallelFitter(Fitter):
    """A :class:`~eraflow.engine.models.train.Fitter` whose fits run across ``client``'s workers, all rounds
    (no early stopping: held-out eras are only predicted and scored)."""

    client: Any = None

    @property
    def stops_early(self) -> bool:
        return False

    def train(self, data: FitData, rounds: int | None, tracker) -> Fitted:
        return fit_data_parallel(self.client, data, self.settings, rounds)
