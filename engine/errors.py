"""Exceptions raised by eraflow: each message names the problem and the next step."""


class EraflowError(Exception):
    """Base class: the CLI prints the message on one line and exits with status 2."""


class InputError(EraflowError):
    """A source file, option or argument the user gave cannot be used."""


class StoreError(EraflowError):
    """An EraStore is missing, damaged or of another format version."""


class LockedError(EraflowError):
    """Another process is writing the same store."""
