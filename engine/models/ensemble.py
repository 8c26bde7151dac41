"""Kind ``ensemble``: trained model directories of any kinds combined per era (``eraflow ensemble``).

An ensemble directory holds model.json and a copy of each member directory (``members/<j>/``),
so it predicts, goes live and exports on its own. Each member gives its **submitted column**:
its only target's predictions, or its own per-era rank ensemble of targets. Then per era:

- ``rank-mean``: ``p = Σ_j w_j · rank_j / Σ_j w_j`` (``rank_j``: member j's column ranked
  ``(rank − 0.5) / n``; weights given, equal by default);
- ``stack``: the same with weights fitted on the members' out-of-fold predictions (oof.parquet of
  ``eraflow train --cv``), never on in-sample ones: over the eras every member predicted out of
  fold (its CV held them out, the embargo away from its fold's training eras) that have target
  values, ``w = argmin_{w ≥ 0} ‖R w − y_c‖²`` (non-negative least squares), ``R`` the per-era ranks
  of the members' OOF columns less 0.5, ``y_c`` the target less its era mean; ``w`` is then
  normalised to sum 1. model.json records these ``fit_eras`` and each member's ``train_eras``.

Every member must use the same feature list. An ensemble is built, not trained: ``eraflow train
--model ensemble`` is not offered.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from eraflow.kernels import rank

from ..atomic import atomic_writer_path, replace_dir
from ..data.store import EraStore, era_rows, era_subset_offsets, open_store, row_runs
from ..errors import InputError
from ..evaluation.ledger import Run
from ..notices import warn
from ..outputs import check_output_dir, translates_write_errors
from ..version import eraflow_version
from .kind import MODEL_FORMAT, FitData, Tracker, meta_kind
from .portable.ensemble import RankEnsemble
from .predict import ENSEMBLE, MODEL_JSON, TrainedModel, load_model, prediction_column, rank_ensemble

METHODS = ("rank-mean", "stack")
MEMBERS = "members"  # sub-directory holding the copies of the member directories
OOF = "oof.parquet"


def member_column(meta: dict) -> str:
    """A member's submitted column: ``ensemble`` with several targets, else ``pred_<target>``."""
    return ENSEMBLE if len(meta["targets"]) > 1 else prediction_column(meta["targets"][0])


def scored_target(meta: dict) -> str:
    """The target a member's submitted column is scored on (its ensemble's ``scored_on``, else its target)."""
    return (meta.get("ensemble") or {}).get("scored_on") or meta["targets"][0]


@dataclass
class EnsembleModel:
    """Members (loaded model directories) and their per-era rank-mean ``weights``."""

    members: list[TrainedModel]
    weights: np.ndarray
    rounds: int | None = None

    def member_predictions(self, member: TrainedModel, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """A member's submitted column for int8 rows ``x`` of whole eras ``offsets``."""
        preds = [f.predict(x, offsets) for f in member.fitted.values()]
        if len(preds) == 1:
            return preds[0]
        return rank_ensemble(np.column_stack(preds), offsets, member.meta.get("ensemble_weights"))

    def predict(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        columns = np.column_stack([self.member_predictions(m, x, offsets) for m in self.members])
        return rank_ensemble(columns, offsets, self.weights)

    def save(self, model_dir: Path, target: str) -> None:
        """Nothing per target: :func:`build_ensemble` writes the member copies and model.json."""

    def portable(self) -> RankEnsemble:
        return RankEnsemble([[f.portable() for f in m.fitted.values()] for m in self.members],
                            [m.meta.get("ensemble_weights") for m in self.members], self.weights.tolist())

    def importance(self) -> np.ndarray | None:
        """``Σ_j w_j · imp_j / Σ_j w_j``, ``imp_j`` member j's importances normalised to sum 1 (mean over
        its targets); None unless every member has importances."""
        per_member = [[normalised(f.importance()) for f in m.fitted.values()] for m in self.members]
        if any(imp is None for imps in per_member for imp in imps):
            return None
        stacked = np.column_stack([np.mean(imps, axis=0) for imps in per_member])
        return stacked @ self.weights / self.weights.sum()

    def describe(self) -> dict:
        return {}


def normalised(importance: np.ndarray | None) -> np.ndarray | None:
    """Importances over their sum (zeros stay zeros)."""
    if importance is None:
        return None
    importance = np.asarray(importance, dtype=np.float64)
    total = importance.sum()
    return importance / total if total > 0 else importance


class EnsembleKind:
    """Model directories combined per era; built by ``eraflow ensemble``, never trained."""

    name = "ensemble"
    stops_early = False

    def check_settings(self, params: dict | None) -> dict:
        raise InputError("an ensemble is built from trained model directories with `eraflow ensemble`, not trained")

    def resolve_device(self, device: str, settings: dict) -> str:
        return "cpu"

    def max_rounds(self, settings: dict) -> int:
        return 1

    def fit(self, data: FitData, settings: dict, rounds: int | None, tracker: Tracker | None) -> EnsembleModel:
        raise InputError("an ensemble is built from trained model directories with `eraflow ensemble`, not trained")

    def load(self, model_dir: Path, target: str, meta: dict) -> EnsembleModel:
        entries, weights = meta.get("members"), meta.get("weights")
        if (not isinstance(entries, list) or len(entries) < 2 or not isinstance(weights, list)
                or len(weights) != len(entries) or not all(is_weight(w) for w in weights) or sum(weights) <= 0):
            raise InputError(f"{model_dir / MODEL_JSON} is malformed: an ensemble needs 'members' and one "
                             "non-negative weight per member; rebuild it with `eraflow ensemble`")
        members = [load_model(model_dir / MEMBERS / str(j)) for j in range(len(entries))]
        check_same_features([m.path for m in members], [m.features for m in members])
        if members[0].features != meta["features"]:
            raise InputError(f"{model_dir} mixes files of different models (its members' features differ from "
                             "model.json's); rebuild it with `eraflow ensemble`")
        return EnsembleModel(members, np.asarray(weights, dtype=np.float64))


def is_weight(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value >= 0


KIND = EnsembleKind()


# -- building ------------------------------------------------------------------------------------

def check_same_features(paths: list[Path], features: list[list[str]]) -> None:
    """InputError naming the first member whose feature list differs from the first member's."""
    first = features[0]
    for path, names in zip(paths[1:], features[1:]):
        if names == first:
            continue
        only_first = [f for f in first if f not in set(names)]
        only_this = [f for f in names if f not in set(first)]
        if only_first or only_this:
            diff = (f"{len(only_first)} features only in {paths[0]} (e.g. {only_first[:2]}), "
                    f"{len(only_this)} only in {path} (e.g. {only_this[:2]})")
        else:
            diff = f"{path} lists the same {len(names)} features in another order"
        raise InputError(f"ensembling models trained on different feature sets: {diff}; train the members on "
                         "the same features")


def check_same_derived(members: list[TrainedModel]) -> None:
    """InputError naming the first member whose derived features (model.json ``derived``: group statistics and
    the raw features they come from) are computed otherwise than the first member's: one recipe serves all."""
    first = members[0].meta.get("derived") or None
    other = next((m for m in members[1:] if (m.meta.get("derived") or None) != first), None)
    if other is not None:
        raise InputError(f"ensembling models whose derived features are computed differently ({members[0].path} "
                         f"and {other.path}: model.json 'derived'); train the members on one store's group statistics")


def check_weights(weights: list[float] | None, n_members: int, method: str) -> np.ndarray:
    """The rank-mean weights normalised to sum 1 (equal when None); InputError for a bad list."""
    if weights is None:
        return np.full(n_members, 1.0 / n_members)
    if method == "stack":
        raise InputError("--weights is for --method rank-mean; stack fits its weights on the members' "
                         "out-of-fold predictions")
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n_members:
        raise InputError(f"{len(w)} weights for {n_members} members; give one weight per MODEL_DIR")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"weights must be non-negative numbers, not all zero, got {list(weights)}")
    return w / w.sum()


def ensemble_target(members: list[TrainedModel], target: str | None) -> str:
    """``target`` when given, else the target every member is scored on; InputError when they differ."""
    if target is not None:
        return target
    scored = {scored_target(m.meta) for m in members}
    if len(scored) > 1:
        raise InputError(f"the members are scored on different targets ({', '.join(sorted(scored))}); "
                         "choose the ensemble's with --target")
    return scored.pop()


def read_oof(member: TrainedModel) -> pd.DataFrame:
    """A member's out-of-fold predictions (id, era, its submitted column); InputError without them."""
    file = member.path / OOF
    column = member_column(member.meta)
    if not file.is_file():
        raise InputError(f"--method stack fits weights on out-of-fold predictions and {member.path} has none "
                         f"(no {OOF}; its in-sample predictions would leak): retrain it with `eraflow train --cv K` "
                         "or use --method rank-mean")
    try:
        frame = pq.read_table(file, columns=["id", "era", column]).to_pandas()
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{file} is damaged or lacks column {column!r} ({exc}); retrain with --cv") from None
    return frame


def cv_held_out_eras(member: TrainedModel) -> set[str]:
    """Eras every target's CV held out (model.json ``cv`` per-era scores), the only eras with OOF predictions."""
    cv = member.meta.get("cv") or {}
    eras = [set(cv[t].get("per_era") or {}) for t in member.targets if t in cv]
    return set.intersection(*eras) if len(eras) == len(member.targets) else set()


def stack_eras(store: EraStore, frames: list, members: list[TrainedModel], target: str) -> np.ndarray:
    """Store eras with ``target`` values that every member predicted out of fold; InputError when none
    or when an oof.parquet holds eras its model.json says CV never held out."""
    common = set(store.eras)
    for member, frame in zip(members, frames):
        eras = set(frame["era"].unique())
        leaked = sorted(eras - cv_held_out_eras(member))
        if leaked:
            raise InputError(f"{member.path / OOF} holds eras its CV did not hold out ({leaked[0]}…); "
                             "retrain the member with `eraflow train --cv K`")
        common &= eras
    t_col = store.target_names.index(target)
    keep = [k for k, e in enumerate(store.eras) if e in common
            and not np.isnan(store.targets[store.offsets[k]:store.offsets[k + 1], t_col]).all()]
    if not keep:
        raise InputError(f"the members share no out-of-fold era with {target} values in {store.path}; "
                         "train them with --cv on the same eras")
    return np.array(keep, dtype=np.int64)


def oof_matrix(store: EraStore, frames: list, members: list[TrainedModel], era_index: np.ndarray) -> np.ndarray:
    """Members' OOF columns (rows of ``era_index`` in store order × members); InputError for missing rows."""
    ids = store.ids[era_rows(store.offsets, era_index)]
    columns = []
    for member, frame in zip(members, frames):
        column = frame.set_index("id")[member_column(member.meta)].reindex(ids).to_numpy(np.float64)
        if np.isnan(column).any():
            raise InputError(f"{member.path / OOF} lacks rows of {store.path} in its out-of-fold eras; "
                             "was it trained on another store? give that one with --store")
        columns.append(column)
    return np.column_stack(columns)


def stack_weights(columns: np.ndarray, y: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Non-negative least squares of the centred per-era ranks on the per-era centred target.

    1. ``R = rank(columns) − 0.5`` per era (n × m);
    2. ``y_c = y − mean_era(y)`` over rows with a target;
    3. ``w = argmin_{w ≥ 0} ‖R w − y_c‖²`` on those rows, then ``w / Σ w``.
    """
    from scipy.optimize import nnls

    n_eras = len(offsets) - 1
    era = np.repeat(np.arange(n_eras), np.diff(offsets))
    y = np.asarray(y, dtype=np.float64)
    rows = np.isfinite(y)
    era_mean = np.bincount(era[rows], y[rows], n_eras) / np.maximum(np.bincount(era[rows], minlength=n_eras), 1)
    r = rank(columns, offsets) - 0.5
    rows &= np.isfinite(r).all(axis=1)
    w = nnls(r[rows], (y - era_mean[era])[rows])[0]
    if w.sum() <= 0:
        raise InputError("no member's out-of-fold predictions correlate positively with the target; "
                         "use --method rank-mean or other members")
    return w / w.sum()


def warn_early_stopped(members: list[TrainedModel]) -> None:
    """Members whose CV folds stopped early on their test eras chose their rounds on the eras the
    weights are fitted on: their out-of-fold scores, and so their weights, are optimistic."""
    stopped = [str(m.path) for m in members if meta_kind(m.meta, m.path / MODEL_JSON).stops_early]
    if stopped and len(stopped) < len(members):
        warn(f"{', '.join(stopped)} stopped early on the eras of their out-of-fold predictions, so the stacked "
             "weights favour them over members that do not stop early; compare with --method rank-mean")


def fit_stack(members: list[TrainedModel], store: EraStore, target: str) -> tuple[np.ndarray, list[str]]:
    """Stacking weights fitted on the members' OOF predictions and the eras they were fitted on."""
    if target not in store.target_names:
        raise InputError(f"the store {store.path} has no target {target!r}; give the members' store with --store")
    frames = [read_oof(m) for m in members]
    warn_early_stopped(members)
    era_index = stack_eras(store, frames, members, target)
    offsets = era_subset_offsets(store.offsets, era_index)
    t_col = store.target_names.index(target)
    y = np.concatenate([store.targets[lo:hi, t_col] for lo, hi in row_runs(store.offsets, era_index)])
    weights = stack_weights(oof_matrix(store, frames, members, era_index), y, offsets)
    return weights, [store.eras[k] for k in era_index]


@dataclass(frozen=True)
class EnsembleResult:
    model_dir: Path
    method: str
    target: str
    weights: list[float]
    fit_eras: list[str]
    members: list[str]
    features: list[str]
    store_fingerprint: str | None
    seconds: float


def ensemble_run(result: EnsembleResult, command: str) -> Run:
    """The ledger record of a built ensemble: method, members and weights, the stack's fit eras."""
    params = {"kind": KIND.name, "method": result.method, "members": result.members, "weights": result.weights,
              "fit_eras": result.fit_eras}
    return Run("ensemble", command, params, result.store_fingerprint or "", [result.target], result.features, {},
               {"model_dir": str(result.model_dir.resolve())})


def union_eras(members: list[TrainedModel], key: str) -> list[str]:
    """Every era any member lists under model.json ``key`` (``train_eras``, ``stopping_eras``), sorted."""
    return sorted(set().union(*(set(e) for m in members for e in (m.meta.get(key) or {}).values())))


def member_entry(j: int, member: TrainedModel) -> dict:
    """What model.json records of member j: where its copy is, where it came from, what it trained on."""
    return {"path": f"{MEMBERS}/{j}", "source": str(member.path.resolve()), "kind": member.kind,
            "column": member_column(member.meta), "targets": member.targets,
            "train_eras": member.meta.get("train_eras") or {}, "stopping_eras": member.meta.get("stopping_eras") or {}}


@translates_write_errors("model", "out_dir")
def build_ensemble(model_dirs: list[str | Path], out_dir: str | Path, method: str = "rank-mean",
                   weights: list[float] | None = None, store: str | Path | None = None, target: str | None = None,
                   command: str = "") -> EnsembleResult:
    """Combine trained model directories into the ensemble directory ``out_dir`` (see the module doc).

    ``store`` (stack only): where the target is read [default: the first member's store].
    Nothing is written when a check fails.

    Example: ``build_ensemble(["models/lgbm", "models/rf"], "models/ens", "stack")``
    """
    started = time.perf_counter()
    out_dir = check_output_dir(out_dir, "model", inputs=[*model_dirs, store])
    if method not in METHODS:
        raise InputError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    if len(model_dirs) < 2:
        raise InputError(f"an ensemble needs at least 2 model directories, got {len(model_dirs)}")
    w = check_weights(weights, len(model_dirs), method)
    members = [load_model(d) for d in model_dirs]
    check_same_features([m.path for m in members], [m.features for m in members])
    check_same_derived(members)
    target = ensemble_target(members, target)
    fit_eras: list[str] = []
    store_path = store or members[0].meta.get("store")
    fingerprint = members[0].meta.get("store_fingerprint")
    if method == "stack":
        if store_path is None:
            raise InputError(f"{members[0].path} records no store; give the store with the target with --store")
        opened = open_store(store_path)
        w, fit_eras = fit_stack(members, opened, target)
        fingerprint = opened.fingerprint
    meta = {"format": MODEL_FORMAT, "kind": KIND.name, "features": members[0].features, "targets": [target],
            "derived": members[0].meta.get("derived"),
            "aliases": {}, "method": method, "weights": w.tolist(), "fit_eras": fit_eras,
            "members": [member_entry(j, m) for j, m in enumerate(members)],
            "train_eras": {target: union_eras(members, "train_eras")},
            "stopping_eras": {target: union_eras(members, "stopping_eras")},
            "store": str(Path(store_path).resolve()) if store_path else None,
            "store_fingerprint": fingerprint,
            "command": command, "eraflow_version": eraflow_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = atomic_writer_path(out_dir)
    try:
        for j, member in enumerate(members):
            shutil.copytree(member.path, tmp / MEMBERS / str(j))
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EnsembleResult(out_dir, method, target, w.tolist(), fit_eras, [str(m.path) for m in members],
                          members[0].features, fingerprint, time.perf_counter() - started)
