"""Numerai Signals: technical features from daily prices, synthetic Signals data, keyed (era, ticker) files,
submissions."""
