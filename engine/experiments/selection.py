"""Feature selection on training eras only: CV-fold gain importance, per-era corr sharpe, correlation clusters.

Training eras (:func:`training_eras`): the eras of ``train_eras`` (default: all) with a value of the
target, minus ``valid_eras`` and the ``embargo`` eras on each side of them (as ``eraflow train``
drops them). No method reads a feature or a target of any other era.

- ``era-sharpe``: for each era e and feature f, ``c_ef`` = Pearson corr of the feature codes with the
  target over the era's rows where both are present; ``sharpe_f = mean_e c_ef / std_e c_ef``
  (population std, as :func:`~eraflow.kernels.era_summary`); the ``keep`` features of highest |sharpe|.
- ``importance``: a LightGBM model (the ``lgbm`` kind, :data:`IMPORTANCE_PARAMS`) fit on each of ``cv``
  expanding CV folds' training eras (:func:`~eraflow.engine.models.train.cv_splits`, with the embargo;
  the fold's test eras are not used); ``gain_f`` = total split gain of f summed over the fold models;
  the ``keep`` features of highest gain.
- ``cluster``: feature-feature Pearson corr over a seeded sample of rows of the training eras
  (``max(2, CLUSTER_SAMPLE_ROWS // n_eras)`` rows from each era, all of a smaller one: at most
  :data:`CLUSTER_SAMPLE_ROWS` in all, except two rows per era when there are more than half that many
  eras; pairwise-complete rows, as pandas' ``DataFrame.corr``), distance ``1 − |corr|``, average-linkage
  hierarchical clustering cut into ``keep`` clusters; from each cluster the member with the highest |era-sharpe|.

Memory: features are read as int8 blocks of whole eras (at most :data:`BLOCK_BYTES`, or one era); floats
exist only for a tile of at most :data:`TILE_CELLS` cells (era-sharpe) or :data:`SAMPLE_CHUNK_ROWS` sampled
rows (cluster); LightGBM bins the store in row blocks (:mod:`~eraflow.engine.models.lgb_data`).
Selected features are returned best first; ``scores`` holds every candidate's score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from eraflow.kernels import era_summary

from ..data.store import BLOCK_BYTES, EraStore, era_blocks, era_subset_offsets, read_codes, row_runs
from ..errors import InputError
from ..models.cv import default_embargo
from ..models.cv import training_eras as cv_training_eras
from ..models.kind import FitData
from ..models.params import BASE
from ..models.train import cv_splits

Progress = Callable[[str, int, int], None]  # (stage, advance, total), as cli/progress.row_progress
METHODS = ("importance", "cluster", "era-sharpe")
# Quicker than the starter preset (2000 trees at 0.01): ranking features needs the strong splits, not the
# last basis point; half the features per tree so every feature competes often.
IMPORTANCE_PARAMS = {**BASE, "n_estimators": 300, "learning_rate": 0.05, "max_depth": 5, "num_leaves": 31,
                     "colsample_bytree": 0.5}
TILE_CELLS = 1 << 21  # codes per era-sharpe tile: as float64 (16 MiB) and, with missing codes, their presence
CLUSTER_SAMPLE_ROWS = 50_000  # rows sampled over all training eras: a corr's standard error ≈ 1/√50000 ≈ 0.005
SAMPLE_CHUNK_ROWS = 4096  # rows per float32 product: sums of codes (≤ 4096·16) stay exact integers below 2²⁴


@dataclass(frozen=True)
class Selection:
    """A feature selection: ``features`` best first, every candidate's score, the eras that scored them.

    ``scores``: importance → summed gain; era-sharpe and cluster → era sharpe (NaN when a feature's
    corr is never defined). ``clusters`` (method cluster): feature → its cluster number (0..keep−1).
    """

    features: list[str]
    method: str
    scores: dict[str, float]
    eras: list[str]  # training eras only
    clusters: dict[str, int] = field(default_factory=dict)


def select_features(store: EraStore, method: str, keep: int, target: str = "target", feature_set: str | None = None,
                    train_eras: str | None = None, valid_eras: str | None = None, cv: int = 3,
                    embargo: int | None = None, seed: int = 0, progress: Progress | None = None,
                    params: dict | None = None) -> Selection:
    """The ``keep`` best features of ``feature_set`` (default: all) by ``method``, scored on training eras only.

    1. candidates: the features of ``feature_set``; ``embargo`` defaults to the target's horizon (``_20`` → 4);
    2. training eras (:func:`training_eras`): nothing else is read;
    3. the method's score of every candidate, and its picks (module doc).

    ``cv`` and ``params`` (LightGBM settings, default :data:`IMPORTANCE_PARAMS`) serve ``importance``; ``seed``
    seeds LightGBM and the cluster row sample. ``progress(stage, advance, total)`` hears of rows read, sampled rows
    correlated and boosting rounds.

    >>> select_features(store, "era-sharpe", 50, valid_eras="0500:")  # doctest: +SKIP
    """
    candidates, cols = _candidates(store, method, keep, feature_set)
    embargo = _embargo(store, target, embargo)
    eras = training_eras(store, target, train_eras, valid_eras, embargo)
    if method == "importance":
        gain = gain_importance(store, eras, cols, target, cv, embargo, seed, params, progress)
        return _selection(store, method, candidates, gain, top_indices(gain, keep), eras)
    _check_two_eras(store, eras, method)
    sharpe = era_summary(era_feature_corr(store, eras, cols, store.target_names.index(target), progress)).sharpe
    if method == "era-sharpe":
        return _selection(store, method, candidates, sharpe, top_indices(np.abs(sharpe), keep), eras)
    labels = feature_clusters(sample_corr(store, cluster_sample_rows(store, eras, seed), cols, progress), keep)
    return _selection(store, method, candidates, sharpe, cluster_representatives(labels, np.abs(sharpe)), eras,
                      labels)


def _candidates(store: EraStore, method: str, keep: int, feature_set: str | None) -> tuple[list[str], np.ndarray]:
    """Names and store columns of the features of ``feature_set``; InputError for a bad method or ``keep``."""
    if method not in METHODS:
        raise InputError(f"unknown selection method {method!r}; choose one of {', '.join(METHODS)}")
    view = store.select(feature_set=feature_set)
    names = view.feature_names
    if not 1 <= keep <= len(names):
        raise InputError(f"--keep must be 1..{len(names)} (the candidate features), got {keep}")
    return names, np.arange(len(names), dtype=np.int64) if view.cols is None else view.cols


def _embargo(store: EraStore, target: str, embargo: int | None) -> int:
    if target not in store.target_names:
        raise InputError(f"unknown target {target!r}; the store has {', '.join(store.target_names)}")
    embargo = default_embargo(target) if embargo is None else embargo
    if embargo < 0:
        raise InputError(f"--embargo must not be negative, got {embargo}")
    return embargo


def _selection(store: EraStore, method: str, candidates: list[str], scores: np.ndarray, chosen: np.ndarray,
               eras: np.ndarray, labels: np.ndarray | None = None) -> Selection:
    return Selection([candidates[i] for i in chosen], method, dict(zip(candidates, scores.tolist())),
                     [store.eras[k] for k in eras], {} if labels is None else dict(zip(candidates, labels.tolist())))


def training_eras(store: EraStore, target: str, train_eras: str | None, valid_eras: str | None,
                  embargo: int) -> np.ndarray:
    """The training eras of :func:`eraflow.engine.models.cv.training_eras` (the rule ``train`` and
    ``search`` use): validation targets are never read."""
    return cv_training_eras(store, target, train_eras, valid_eras, embargo)[0]


def _check_two_eras(store: EraStore, eras: np.ndarray, method: str) -> None:
    if eras.size < 2:
        raise InputError(f"{method} needs at least 2 training eras for a sharpe, got {eras.size} "
                         f"({store.eras[eras[0]]}); widen --train-eras")


def top_indices(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest scores, highest first (NaN lowest; ties: the earlier feature first)."""
    return _ranked(scores)[:keep]


def _ranked(scores: np.ndarray) -> np.ndarray:
    """All indices by score, highest first; NaN last; ties in index order."""
    return np.lexsort((np.arange(scores.size), -np.nan_to_num(scores, nan=-np.inf)))


# -- era-sharpe ------------------------------------------------------------------------------

def era_feature_corr(store: EraStore, eras: np.ndarray, cols: np.ndarray, t_col: int,
                     progress: Progress | None = None) -> np.ndarray:
    """Per-era Pearson corr of each feature with the target, ``(len(eras), len(cols))`` float64
    (:func:`corr_with_target` of each era, in tiles of at most :data:`TILE_CELLS` codes)."""
    out = np.empty((eras.size, cols.size))
    done, total_rows = 0, int(np.diff(store.offsets)[eras].sum())
    for block in era_blocks(store.offsets, eras, max(1, BLOCK_BYTES // max(1, cols.size))):
        codes = np.concatenate([read_codes(store, lo, hi, cols) for lo, hi in row_runs(store.offsets, block)])
        y = np.concatenate([store.targets[lo:hi, t_col] for lo, hi in row_runs(store.offsets, block)])
        bounds = era_subset_offsets(store.offsets, block)
        for e, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            step = max(1, TILE_CELLS // max(hi - lo, 1))
            for c0 in range(0, cols.size, step):
                out[done + e, c0:c0 + step] = corr_with_target(codes[lo:hi, c0:c0 + step], y[lo:hi])
        done += block.size
        if progress:
            progress("feature-target corr", len(y), total_rows)
    return out


def corr_with_target(codes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson corr of each column of int8 ``codes`` (n × f, −1 missing) with ``y`` (n, NaN missing), over the
    rows where both are present; NaN where either is constant there (or fewer than 2 rows remain).

    Rows without ``y`` are dropped; with ``m`` the rows where the code is present and sums over them,
    ``corr = (n·Σxy − Σx·Σy) / √((n·Σx² − (Σx)²)(n·Σy² − (Σy)²))`` (Σy, Σy², n per feature only when a code
    is missing).
    """
    labeled = np.isfinite(y)
    if not labeled.all():
        codes, y = codes[labeled], y[labeled]
    y = y.astype(np.float64)
    x = codes.astype(np.float64)
    missing = codes < 0
    if missing.any():
        x[missing] = 0.0
        m = (~missing).astype(np.float64)
        n, sy, syy = m.sum(axis=0), y @ m, (y * y) @ m
    else:
        n, sy, syy = float(y.size), y.sum(), y @ y
    sx, sxx, sxy = x.sum(axis=0), np.einsum("ij,ij->j", x, x), y @ x
    cov = n * sxy - sx * sy
    var = (n * sxx - sx * sx) * (n * syy - sy * sy)
    return np.divide(cov, np.sqrt(np.maximum(var, 0.0)), out=np.full(cov.shape, np.nan), where=var > 0)


# -- importance ------------------------------------------------------------------------------

class _RoundProgress:
    """A :class:`~eraflow.engine.models.kind.Tracker` passing each boosting round to ``progress``."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total = progress, total

    def step(self, round: int, corr: float | None) -> None:
        self.progress("importance models (rounds)", 1, self.total)

    def batch(self, done: int, total: int) -> None:
        return None


def gain_importance(store: EraStore, eras: np.ndarray, cols: np.ndarray, target: str, cv: int, embargo: int,
                    seed: int, params: dict | None = None, progress: Progress | None = None) -> np.ndarray:
    """Total split gain of each feature (``cols``), summed over LightGBM models fit on the training eras
    of each of ``cv`` expanding folds of ``eras`` (embargo dropped; test eras unused), float64."""
    from ..models.kind import get_kind

    kind = get_kind("lgbm")
    settings = kind.check_settings(IMPORTANCE_PARAMS if params is None else params)
    folds = cv_splits(store, eras, cv, embargo, "expanding")
    tracker = _RoundProgress(progress, len(folds) * kind.max_rounds(settings)) if progress else None
    total = np.zeros(cols.size)
    for train, _test in folds:
        model = kind.fit(FitData(store, train, cols, target, None, "cpu", seed, embargo), settings, None, tracker)
        total += model.importance()
    return total


# -- cluster ---------------------------------------------------------------------------------

def cluster_sample_rows(store: EraStore, eras: np.ndarray, seed: int) -> np.ndarray:
    """Store rows sampled from ``eras``: ``max(2, CLUSTER_SAMPLE_ROWS // len(eras))`` from each (all of a
    smaller era), drawn without replacement by ``default_rng(seed)`` era after era; increasing."""
    rng = np.random.default_rng(seed)
    per_era = max(2, CLUSTER_SAMPLE_ROWS // eras.size)
    picks = []
    for k in eras:
        lo, hi = int(store.offsets[k]), int(store.offsets[k + 1])
        picks.append(lo + np.sort(rng.choice(hi - lo, size=min(per_era, hi - lo), replace=False)))
    return np.concatenate(picks).astype(np.int64)


def sample_corr(store: EraStore, rows: np.ndarray, cols: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Feature-feature Pearson corr (f × f) over the store ``rows``, each pair on the rows where both are
    present (pandas ``DataFrame.corr``); NaN where a feature is constant there.

    With X the codes (missing → 0) and Z the missing cells, sums over the rows where both i and j are present
    are accumulated chunk by chunk: ``N_ij = n − z_i − z_j + (ZᵀZ)_ij``, ``Sx_ij = Σ_r x_ri − (XᵀZ)_ij``,
    ``Sxx_ij = Σ_r x_ri² − ((X²)ᵀZ)_ij``, ``Sxy = XᵀX`` (Z's products only over the chunk's columns with a
    missing cell: one product when nothing is missing); then
    ``corr_ij = (N·Sxy − Sx_ij·Sx_ji) / √((N·Sxx_ij − Sx_ij²)(N·Sxx_ji − Sx_ji²))``.
    """
    f = cols.size
    n, sx, sxx, sxy = (np.zeros((f, f)) for _ in range(4))
    for r0 in range(0, rows.size, SAMPLE_CHUNK_ROWS):
        chunk = rows[r0:r0 + SAMPLE_CHUNK_ROWS]
        codes = np.take(np.take(store.features, chunk, axis=0), cols, axis=1)
        x = np.maximum(codes, 0).astype(np.float32)
        x2 = x * x
        n += chunk.size
        sx += x.sum(axis=0, dtype=np.float64)[:, None]
        sxx += x2.sum(axis=0, dtype=np.float64)[:, None]
        sxy += x.T @ x
        _subtract_missing(codes < 0, x, x2, n, sx, sxx)
        if progress:
            progress("feature-feature corr (sampled rows)", int(chunk.size), int(rows.size))
    return _pair_corr(n, sx, sxx, sxy)


def _pair_corr(n: np.ndarray, sx: np.ndarray, sxx: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    """``(N·Sxy − Sx·Sxᵀ) / √((N·Sxx − Sx²)(N·Sxx − Sx²)ᵀ)``, NaN where a variance is 0; computed in the
    arrays given (f × f each, a few f × f temporaries at most: 45 MB each at 2376 features)."""
    sxy *= n
    sxy -= sx * sx.T  # covariance · N²
    sxx *= n
    sxx -= sx * sx  # variance of i over the rows of pair (i, j) · N²
    var = sxx * sxx.T
    defined = var > 0
    np.sqrt(var, out=var)
    return np.divide(sxy, var, out=np.full_like(sxy, np.nan), where=defined)


def _subtract_missing(missing: np.ndarray, x: np.ndarray, x2: np.ndarray, n: np.ndarray, sx: np.ndarray,
                      sxx: np.ndarray) -> None:
    """Take the rows where feature j is missing out of the pair sums of column j (and N of row i), in place."""
    c = np.flatnonzero(missing.any(axis=0))
    if c.size == 0:
        return
    z = missing[:, c].astype(np.float32)
    z_sum = z.sum(axis=0, dtype=np.float64)
    n[:, c] -= z_sum
    n[c, :] -= z_sum[:, None]
    n[np.ix_(c, c)] += z.T @ z
    sx[:, c] -= x.T @ z
    sxx[:, c] -= x2.T @ z


def feature_clusters(corr: np.ndarray, keep: int) -> np.ndarray:
    """Cluster number (0..keep−1) of each feature: average-linkage clustering of the distance
    ``1 − |corr|`` (NaN corr → 1), cut into exactly ``keep`` clusters."""
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    if corr.shape[0] == 1:
        return np.zeros(1, dtype=np.int64)
    distance = np.clip(1.0 - np.nan_to_num(np.abs(corr), nan=0.0), 0.0, 1.0)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return cut_tree(tree, n_clusters=keep).ravel().astype(np.int64)


def cluster_representatives(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Index of each cluster's highest-scoring member (NaN lowest; ties: the earlier feature), highest first."""
    best: dict[int, int] = {}
    for i in _ranked(scores):
        best.setdefault(int(labels[i]), int(i))
    return np.array(list(best.values()), dtype=np.int64)
