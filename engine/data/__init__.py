"""Data: parquet → era-sorted int8 stores (ingest, store, synthetic data, dataset cache)."""
