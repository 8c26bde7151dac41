"""A summary of a store for people and scripts: sizes, eras, features, targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import EraStore


def bytes_on_disk(path: Path) -> int:
    """Allocated bytes of the store's files (sparse regions not counted)."""
    return sum(p.stat().st_blocks * 512 for p in path.iterdir() if p.is_file())


def store_info(store: EraStore) -> dict:
    """Rows, eras (first/last, rows per era min/median/max), features, feature sets, targets, bytes."""
    per_era = np.diff(store.offsets)
    meta = store.meta
    return {
        "path": str(store.path),
        "rows": store.n_rows,
        "eras": {"count": store.n_eras, "first": store.eras[0], "last": store.eras[-1],
                 "rows_min": int(per_era.min()), "rows_median": float(np.median(per_era)),
                 "rows_max": int(per_era.max())},
        "features": len(store.feature_names),
        "feature_sets": {name: len(members) for name, members in store.feature_sets.items()},
        "targets": {t: {"nan_share": meta["target_nan_share"][t]} for t in store.target_names},
        "extra_columns": meta["extra_columns"],
        "bytes_on_disk": bytes_on_disk(store.path),
        "format_version": meta["format_version"],
        "created": meta["created"],
    }
