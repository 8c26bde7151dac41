"""eraflow engine: era-sorted stores, out-of-core ingest, synthetic Numerai data.

Public names are loaded on first use (PEP 562), so ``import eraflow.engine.errors`` — what the
CLI needs before it knows the command — does not import Polars, numba or LightGBM.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EraflowError": "errors", "InputError": "errors", "LockedError": "errors", "OutputError": "errors",
    "StoreError": "errors",
    "store_info": "data.info",
    "IngestOptions": "data.ingest", "IngestPlan": "data.ingest", "IngestResult": "data.ingest",
    "build_store": "data.ingest",
    "ingest_files": "data.ingest", "plan_ingest": "data.ingest",
    "EraStore": "data.store", "StoreView": "data.store", "open_store": "data.store",
    "SynthSpec": "data.synth", "write_synthetic": "data.synth",
    "add_group_stats": "data.derived", "save_feature_set": "data.derived",
    "EraLGBMRegressor": "models.estimator",
    "SearchConfig": "experiments.search", "plan_search": "experiments.search", "run_search": "experiments.search",
    "read_space": "experiments.space", "select_features": "experiments.selection",
    "open_client": "cluster.client",
    "SignalsSynthSpec": "signals.synth", "write_signals_synthetic": "signals.synth",
    "signals_features": "signals.features",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
