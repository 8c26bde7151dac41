"""The ``eraflow`` command line: parse, call the engine, print. No logic of its own."""

from .main import cli, main

__all__ = ["cli", "main"]
