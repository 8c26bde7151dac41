"""Era boosting for the ``lgbm`` and ``xgb`` kinds: more trees fit on the eras the model fits worst.

The idea of Numerai's forum ("era boosted models"), as numerblox's ``EraBoostedXGBRegressor`` does it
for XGBoost, here for both libraries and straight from the store:

1. fit the booster as usual (its rounds chosen by early stopping on the stopping eras when there
   are some, else all its rounds);
2. ``steps`` times: predict every training era, take each era's numerai_corr with the target,
   pick the ``⌈proportion · n⌉`` eras of lowest corr (n: training eras with a finite corr; eras
   tie-broken in era order), and add ``trees`` trees to the same booster fit on only those eras'
   rows (continuing it: the new trees fit the residuals of everything before them).

Only training eras are ever predicted, scored or fit in step 2: the stopping eras (a CV fold's test
eras, ``--valid-eras``) choose the first fit's rounds as they do without era boosting and play no
part after it (LightGBM keeps its running scores of them up to date as trees are added, which
nothing reads), so each CV fold boosts on its own training eras and its out-of-fold predictions
stay out of fold. The number of boosting trees is fixed (``steps × trees``), not stopped early: choose
``steps``, ``trees`` and ``proportion`` by CV (``eraflow search`` varies them like any parameter).

Rounds: a boosted model's rounds are all its trees, first fit and boosting (``rounds + steps ×
trees``), so the trainer's median of the folds' rounds, given to the final fit, is the median first
fit plus the same boosting trees; the final fit subtracts them to find its first fit's rounds.

Settings (keys of the kind's settings, so a search space can vary them):
``era_boost_steps`` (0, the default: off), ``era_boost_proportion`` (0.5) and ``era_boost_trees``
(default: a tenth of the kind's rounds, ``⌈n_estimators / 10⌉``: the learning rate that sets how
many rounds the first fit needs sets how far a step moves too; 200 for the starter preset's 2000).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eraflow.kernels import numerai_corr

from ..data.store import EraStore, era_subset_offsets
from ..errors import InputError

STEPS, PROPORTION, TREES = "era_boost_steps", "era_boost_proportion", "era_boost_trees"
KEYS = (STEPS, PROPORTION, TREES)
DEFAULT_PROPORTION = 0.5  # the worst half of the eras, as the forum post and numerblox
DEFAULT_STEPS = 10  # steps when --era-boost does not say
TREES_SHARE = 10  # default trees per step: the kind's rounds / TREES_SHARE
OPTION_KEYS = {"steps": STEPS, "proportion": PROPORTION, "trees": TREES}  # --era-boost key → settings key
KINDS = ("lgbm", "xgb")
# lgbm predicts the training rows each step while its binned Dataset is held: from the store in float32 blocks
# of at most this many values (16 MiB; whole eras, so one era larger than that is a block of its own). xgb
# predicts its binned training matrix instead.
PREDICT_VALUES = 1 << 22


@dataclass(frozen=True)
class EraBoost:
    """``steps`` steps of ``trees`` trees each, fit on the ``proportion`` of training eras of lowest corr."""

    steps: int
    proportion: float
    trees: int

    @property
    def extra_trees(self) -> int:
        return self.steps * self.trees

    def first_rounds(self, rounds: int) -> int:
        """Rounds of the first fit of a model of ``rounds`` trees in all (at least 1)."""
        return max(1, rounds - self.extra_trees)


def first_fit_rounds(boost: EraBoost | None, default: int, rounds: int | None) -> int:
    """Rounds of a kind's first fit: ``default`` (the settings' rounds) when ``rounds`` is None, else
    ``rounds`` (all trees, the trainer's median over folds) less the era boosting trees."""
    if rounds is None:
        return default
    return boost.first_rounds(rounds) if boost else rounds


def without_era_boost(settings: dict) -> dict:
    """``settings`` less the era boosting keys (what the library is given)."""
    return {k: v for k, v in settings.items() if k not in KEYS}


def _whole(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{name} must be a whole number ≥ {least}, got {value!r}")
    return value


def era_boost_of(settings: dict, max_rounds: int) -> EraBoost | None:
    """The era boosting ``settings`` ask for (None when ``era_boost_steps`` is 0 or absent);
    InputError naming a bad value. ``max_rounds``: the kind's rounds without era boosting."""
    steps = _whole(STEPS, settings.get(STEPS, 0), 0)
    proportion = settings.get(PROPORTION, DEFAULT_PROPORTION)
    if isinstance(proportion, bool) or not isinstance(proportion, (int, float)) or not 0 < proportion <= 1:
        raise InputError(f"{PROPORTION} must be a number in (0, 1], got {proportion!r}")
    trees = _whole(TREES, settings.get(TREES, math.ceil(max_rounds / TREES_SHARE)), 1)
    return EraBoost(steps, float(proportion), trees) if steps else None


def parse_era_boost(spec: str) -> dict:
    """``--era-boost "proportion=0.5,steps=10,trees=50"`` → the settings keys it sets; ``steps``
    is :data:`DEFAULT_STEPS` when not given. InputError (one line) for a key or value it cannot read."""
    out: dict = {}
    for part in spec.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if key not in OPTION_KEYS or not sep or not value:
            raise InputError(f"--era-boost {spec!r}: cannot read {part.strip()!r}; give key=value pairs of "
                             f"{', '.join(OPTION_KEYS)}, e.g. proportion=0.5,steps=10")
        if OPTION_KEYS[key] in out:
            raise InputError(f"--era-boost {spec!r} gives {key} twice; give it once")
        try:
            out[OPTION_KEYS[key]] = float(value) if key == "proportion" else int(value)
        except ValueError:
            kind = "a number" if key == "proportion" else "a whole number"
            raise InputError(f"--era-boost {key}={value!r} is not {kind}") from None
    out.setdefault(STEPS, DEFAULT_STEPS)
    era_boost_of(out, 1)  # the values' ranges
    return out


def with_era_boost(kind: str, params: dict | None, spec: str | None) -> dict | None:
    """``params`` (a kind's ``--params``) updated with ``--era-boost spec`` when given; InputError for
    a kind that does not boost eras."""
    if spec is None:
        return params
    if kind not in KINDS:
        raise InputError(f"--era-boost applies to model kinds {' and '.join(KINDS)}, not {kind!r}")
    return {**(params or {}), **parse_era_boost(spec)}


def worst_eras(corr: np.ndarray, proportion: float) -> np.ndarray:
    """Positions (increasing) of the ``⌈proportion · n⌉`` lowest of the ``n`` finite ``corr``
    (ties broken by position); every position when none is finite."""
    finite = np.flatnonzero(np.isfinite(corr))
    if finite.size == 0:
        return np.arange(corr.size)
    count = max(1, math.ceil(proportion * finite.size))
    return np.sort(finite[np.argsort(corr[finite], kind="stable")[:count]])


def boost_eras(store: EraStore, eras: np.ndarray, target: np.ndarray, boost: EraBoost,
               predict: Callable[[], np.ndarray], grow: Callable[[np.ndarray], None]) -> list[dict]:
    """Run the steps of era boosting on the training ``eras`` (store indices; ``target``: their rows'
    target, NaN kept): ``predict()`` gives the current model's predictions of those rows, ``grow(worst)``
    adds ``boost.trees`` trees fit on the rows of the eras at positions ``worst``. Returns per step
    the mean per-era corr before it, of all eras and of the worst, and the worst eras' labels."""
    offsets = era_subset_offsets(store.offsets, eras)
    record = []
    for _ in range(boost.steps):
        corr = numerai_corr(predict(), target, offsets)
        worst = worst_eras(corr, boost.proportion)
        record.append({"corr": float(np.nanmean(corr)), "worst_corr": float(np.nanmean(corr[worst])),
                       "worst_eras": [store.eras[int(k)] for k in eras[worst]]})
        grow(worst)
    return record


def predict_block_rows(n_cols: int) -> int:
    """Rows of a block of training rows predicted at a time (:data:`PREDICT_VALUES` values)."""
    return max(1, PREDICT_VALUES // max(1, n_cols))


def local_rows(offsets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Row numbers (within the concatenated eras of ``offsets``) of the eras at ``positions``."""
    return np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in positions]).astype(np.int32)


def describe(boost: EraBoost, first_rounds: int, steps: list[dict]) -> dict:
    """What model.json records of an era-boosted fit (its ``fitted`` entry)."""
    return {"era_boost": {"steps": boost.steps, "proportion": boost.proportion, "trees": boost.trees,
                          "first_rounds": first_rounds, "per_step": steps}}
