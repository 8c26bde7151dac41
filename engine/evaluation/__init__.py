"""Evaluation: per-era scores, predictions files, reports and the run ledger."""
