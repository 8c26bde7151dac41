"""eraflow engine: era-sorted stores, out-of-core ingest, synthetic Numerai data.

Public names are loaded on first use (PEP 562), so ``import eraflow.engine.errors`` — what the
CLI needs before it knows the command — does not import Polars, numba or LightGBM.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EraflowError": "errors", "InputError": "errors", "LockedError": "errors", "OutputError": "errors",
    "StoreError": "errors",
    "store_info": "info",
    "IngestOptions": "ingest", "IngestPlan": "ingest", "IngestResult": "ingest", "build_store": "ingest",
    "ingest_files": "ingest", "plan_ingest": "ingest",
    "EraStore": "store", "StoreView": "store", "open_store": "store",
    "SynthSpec": "synth", "write_synthetic": "synth",
    "EraLGBMRegressor": "estimator",
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
