"""Synthetic Numerai v5-shaped data with a planted, known signal.

Per era, features come from a few latent group factors so features of one group correlate:
``x_f = a_f·z_g(f) + √(1−a_f²)·ε``, binned into five equal-share bins 0..4 (int8). A weak signal
``s = standardize(Σ_k w_k·(x_k − 2))`` over a handful of features drives the target:
``t = ρ_e·s + √(1−ρ_e²)·η``, binned per era into {0, .25, .5, .75, 1} with Numerai's shares
(5/20/50/20/5 %). ``ρ_e`` follows regimes, long positive ones and short reversals, so per-era correlation
of the planted signal sits around 0.02–0.05 with some negative eras. Files are written one row
group at a time: memory stays bounded whatever the size, and the same seed gives identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_write_json, atomic_writer_path
from ..errors import InputError
from .store import FNC_FEATURE_SET, GROUPS

TARGET_NAMES = ("target_ender_20", "target_ender_60", "target_cyrus_20", "target_cyrus_60",
                "target_ralph_20", "target_ralph_60", "target_victor_20", "target_victor_60",
                "target_waldo_20", "target_waldo_60", "target_jasper_20", "target_jasper_60")
# Numerai's target bins and their shares within an era.
TARGET_VALUES = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
TARGET_SHARES = np.array([0.05, 0.20, 0.50, 0.20, 0.05])
# Standard normal quintile edges: equal-share feature bins 0..4.
FEATURE_EDGES = np.array([-0.8416212, -0.2533471, 0.2533471, 0.8416212], dtype=np.float32)
FNCV3_SHARE = (416, 2376)  # Numerai's fncv3_features: 416 of v5's 2376 features
ROW_GROUP_ROWS = 50_000  # rows per parquet row group (whole eras, at least one)


@dataclass(frozen=True)
class SynthSpec:
    """Sizes and knobs of a synthetic data set."""

    eras: int = 120
    rows_per_era: int = 400
    features: int = 300
    targets: int = 4
    validation_eras: int = 0  # 0: a quarter of the eras
    unlabeled_eras: int = 4  # newest validation eras whose targets are all NaN
    signal_features: int = 12
    signal_strength: float = 0.045  # ρ in a positive regime
    missing_share: float = 0.005  # share of (era, feature) cells missing (all 2)
    seed: int = 0

    def n_validation_eras(self) -> int:
        return self.validation_eras or max(1, self.eras // 4)

    def n_unlabeled_eras(self) -> int:
        """Newest validation eras without targets; at least one validation era keeps them."""
        return min(self.unlabeled_eras, self.n_validation_eras() - 1)


def validate_spec(spec: SynthSpec) -> None:
    """Raise InputError for sizes the generator cannot honour."""
    checks = [
        (spec.eras >= 2, "--eras must be at least 2 (train and validation)"),
        (spec.rows_per_era >= 10, "--rows-per-era must be at least 10"),
        (spec.features >= 5, "--features must be at least 5"),
        (1 <= spec.targets <= len(TARGET_NAMES), f"--targets must be 1..{len(TARGET_NAMES)}"),
        (spec.n_validation_eras() < spec.eras, "--validation-eras must leave at least one train era"),
        (spec.unlabeled_eras >= 0, "unlabeled eras must not be negative"),
        (spec.signal_features <= spec.features, "more signal features than features"),
    ]
    for ok, msg in checks:
        if not ok:
            raise InputError(msg)


def feature_names(spec: SynthSpec) -> list[str]:
    return [f"feature_{feature_group(spec, i)}_{i:04d}" for i in range(spec.features)]


def feature_group(spec: SynthSpec, i: int) -> str:
    return GROUPS[i * len(GROUPS) // spec.features]


def target_names(spec: SynthSpec) -> list[str]:
    """``target`` (alias of target_ender_20) followed by the named targets."""
    return ["target", *TARGET_NAMES[: spec.targets]]


def era_label(k: int) -> str:
    return f"{k + 1:04d}"


class _Model:
    """The fixed parts of the generator: loadings, signal weights, regimes, era sizes."""

    def __init__(self, spec: SynthSpec):
        rng = np.random.default_rng([spec.seed, 0])
        n_latent = max(2, spec.features // 25)
        self.group_of = (np.arange(spec.features) * n_latent // spec.features).astype(np.int64)
        self.loading = rng.uniform(0.35, 0.85, spec.features).astype(np.float32)
        self.signal_idx = np.sort(rng.choice(spec.features, spec.signal_features, replace=False))
        self.signal_w = rng.normal(size=spec.signal_features)
        total_eras = spec.eras + 1  # + the live era
        self.rho = regimes(rng, total_eras, spec.signal_strength)
        self.era_rows = rng.integers(int(spec.rows_per_era * 0.9), int(spec.rows_per_era * 1.1) + 1,
                                     total_eras)
        self.missing = rng.random((total_eras, spec.features)) < spec.missing_share
        self.n_latent = n_latent


def regimes(rng: np.random.Generator, n_eras: int, strength: float) -> np.ndarray:
    """Per-era signal strength ρ_e: positive regimes of 15–40 eras alternating with reversed ones
    of 3–10 eras at half strength, each era jittered ×0.6–1.4."""
    rho = np.empty(n_eras)
    k, positive = 0, True
    while k < n_eras:
        length = int(rng.integers(15, 41) if positive else rng.integers(3, 11))
        rho[k:k + length] = strength if positive else -0.5 * strength
        k += length
        positive = not positive
    return rho * rng.uniform(0.6, 1.4, n_eras)


def bin_by_shares(x: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Bin index 0..len(shares)−1 of each value by its rank: the lowest shares[0] get 0, …"""
    order = np.argsort(x, kind="stable")
    edges = np.round(np.cumsum(shares)[:-1] * len(x)).astype(np.int64)
    bins = np.empty(len(x), dtype=np.int64)
    bins[order] = np.searchsorted(edges, np.arange(len(x)), side="right")
    return bins


def era_block(model: _Model, spec: SynthSpec, era: int, rng: np.random.Generator):
    """One era: int8 features (n × F), planted score s (n,), targets (n × T) float32."""
    n = int(model.era_rows[era])
    z = rng.standard_normal((n, model.n_latent), dtype=np.float32)
    a = model.loading
    x = rng.standard_normal((n, spec.features), dtype=np.float32)
    x *= np.sqrt(1 - a * a)
    x += z[:, model.group_of] * a
    feats = np.searchsorted(FEATURE_EDGES, x).astype(np.int8)  # 0..4
    feats[:, model.missing[era]] = 2
    s = (feats[:, model.signal_idx].astype(np.float64) - 2) @ model.signal_w
    s = (s - s.mean()) / (s.std() or 1.0)
    targets = np.empty((n, len(target_names(spec))), dtype=np.float32)
    for j in range(1, targets.shape[1]):
        rho = model.rho[era] * (0.8 if j % 2 == 0 else 1.0)  # 60-day targets a bit weaker
        latent = rho * s + np.sqrt(1 - rho * rho) * rng.standard_normal(n)
        targets[:, j] = TARGET_VALUES[bin_by_shares(latent, TARGET_SHARES)]
    targets[:, 0] = targets[:, 1]  # `target` is target_ender_20
    return feats, s, targets


def row_ids(start: int, n: int) -> pa.Array:
    """Unique, stable ids like Numerai's: odd-multiplier hashing is a bijection mod 2^60."""
    k = np.arange(start, start + n, dtype=np.uint64)
    h = (k * np.uint64(0x9E3779B97F4A7C15)) & np.uint64((1 << 60) - 1)
    return pa.array([f"n{v:015x}" for v in h.tolist()], type=pa.string())


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom else float("nan")


class _FileWriter:
    """Writes one parquet file row group by row group, under a temporary name until closed."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self._tmp = atomic_writer_path(path)
        self._writer = pq.ParquetWriter(self._tmp, schema)
        self.schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, columns: dict) -> None:
        batch = pa.record_batch(columns, schema=self.schema)
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending), row_group_size=self._rows)
        self._pending, self._rows = [], 0

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def data_schema(spec: SynthSpec, with_data_type: bool) -> pa.Schema:
    fields = [pa.field("id", pa.string()), pa.field("era", pa.string())]
    if with_data_type:
        fields.append(pa.field("data_type", pa.string()))
    fields += [pa.field(f, pa.int8()) for f in feature_names(spec)]
    fields += [pa.field(t, pa.float32()) for t in target_names(spec)]
    return pa.schema(fields)


def features_json(spec: SynthSpec, model: _Model) -> dict:
    names = feature_names(spec)
    signal = [names[i] for i in model.signal_idx]
    rest = [n for n in names if n not in set(signal)]
    small_n = max(2, spec.features // 20)
    small = sorted(signal[: small_n // 2] + rest[: small_n - small_n // 2])
    medium = sorted(set(signal) | set(rest[: max(small_n, spec.features // 3) - len(signal)]))
    fncv3_n = max(2, spec.features * FNCV3_SHARE[0] // FNCV3_SHARE[1])
    fncv3_signal = signal[: fncv3_n // 2]
    fncv3 = sorted(fncv3_signal + rest[: fncv3_n - len(fncv3_signal)])
    sets = {"small": small, "medium": medium, FNC_FEATURE_SET: fncv3, "all": names}
    for g in GROUPS:
        members = [n for i, n in enumerate(names) if feature_group(spec, i) == g]
        if members:
            sets[g] = members
    return {"feature_sets": sets, "targets": target_names(spec)}


def write_synthetic(out_dir: str | Path, spec: SynthSpec,
                    progress: Callable[[int], None] | None = None) -> dict:
    """Write train/validation/live/meta_model parquet files, features.json and synth.json.

    Also ``oracle.parquet``: the planted score of every train and validation row (id, era,
    oracle), a prediction file that scores what a perfect model would.
    Returns the synth.json record: the spec, file names, and per-era Pearson correlation of the
    planted score with ``target`` (the oracle a model can at best approach).
    ``progress(rows)`` is called after each era is generated.
    """
    validate_spec(spec)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    model = _Model(spec)
    rng = np.random.default_rng([spec.seed, 1])
    n_train = spec.eras - spec.n_validation_eras()
    meta_rng = np.random.default_rng([spec.seed, 2])
    writers = {
        "train": _FileWriter(out / "train.parquet", data_schema(spec, False)),
        "validation": _FileWriter(out / "validation.parquet", data_schema(spec, True)),
        "live": _FileWriter(out / "live.parquet", data_schema(spec, True)),
        "meta_model": _FileWriter(out / "meta_model.parquet", pa.schema(
            [("id", pa.string()), ("era", pa.string()), ("numerai_meta_model", pa.float32())])),
        "oracle": _FileWriter(out / "oracle.parquet", pa.schema(
            [("id", pa.string()), ("era", pa.string()), ("oracle", pa.float32())])),
    }
    oracle: dict[str, float] = {}
    next_id = 0
    try:
        for era in range(spec.eras + 1):
            kind = "train" if era < n_train else "validation" if era < spec.eras else "live"
            feats, s, targets = era_block(model, spec, era, rng)
            n = len(s)
            label = era_label(era)
            if kind == "live" or era >= spec.eras - spec.n_unlabeled_eras():
                targets[:] = np.nan
            elif kind == "train" and era >= n_train - 3:
                targets[:, 2::2] = np.nan  # 60-day targets overlap validation: NaN tail
            if kind != "live" and not np.isnan(targets[:, 0]).all():
                oracle[label] = pearson(s, targets[:, 0].astype(np.float64))
            ids = row_ids(next_id, n)
            next_id += n
            cols = {"id": ids, "era": pa.array([label] * n, pa.string())}
            if kind != "train":
                cols["data_type"] = pa.array([kind] * n, pa.string())
            cols.update({name: feats[:, j] for j, name in enumerate(feature_names(spec))})
            cols.update({name: targets[:, j] for j, name in enumerate(target_names(spec))})
            writers[kind].add(cols)
            if kind != "live":
                writers["oracle"].add({"id": ids, "era": cols["era"], "oracle": s.astype(np.float32)})
            if kind == "validation":
                meta = 0.5 * s + meta_rng.standard_normal(n)
                ranks = (np.argsort(np.argsort(meta)) + 0.5) / n
                writers["meta_model"].add({"id": ids, "era": cols["era"],
                                           "numerai_meta_model": ranks.astype(np.float32)})
            if progress:
                progress(n)
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    atomic_write_json(out / "features.json", features_json(spec, model))
    values = np.array(list(oracle.values()))
    record = {
        "spec": asdict(spec),
        "files": [f"{k}.parquet" for k in writers] + ["features.json"],
        "rows": {k: int(sum(model.era_rows[e] for e in eras)) for k, eras in {
            "train": range(n_train), "validation": range(n_train, spec.eras),
            "live": range(spec.eras, spec.eras + 1)}.items()},
        "signal_features": [feature_names(spec)[i] for i in model.signal_idx],
        "oracle_corr_mean": float(values.mean()),
        "oracle_corr_positive_share": float((values > 0).mean()),
        "oracle_corr": oracle,
    }
    atomic_write_json(out / "synth.json", record)
    return record


def read_synth_record(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "synth.json").read_text())
