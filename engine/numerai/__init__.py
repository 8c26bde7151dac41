"""Numerai: the tournament API, submissions, live predictions, exports and the weekly pipeline."""
