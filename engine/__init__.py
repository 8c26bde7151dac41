"""eraflow engine: era-sorted stores, out-of-core ingest, synthetic Numerai data."""

from .errors import EraflowError, InputError, LockedError, StoreError
from .info import store_info
from .ingest import IngestOptions, IngestPlan, IngestResult, build_store, ingest_files, plan_ingest
from .store import EraStore, StoreView, open_store
from .synth import SynthSpec, write_synthetic

__all__ = [
    "EraStore", "EraflowError", "IngestOptions", "IngestPlan", "IngestResult", "InputError",
    "LockedError", "StoreError", "StoreView", "SynthSpec", "build_store", "open_store",
    "ingest_files", "plan_ingest", "store_info", "write_synthetic",
]
