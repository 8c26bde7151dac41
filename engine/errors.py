"""Exceptions raised by eraflow: each message names the problem and the next step."""


class EraflowError(Exception):
    """Base class: the CLI prints the message on one line and exits with status 2."""


class InputError(EraflowError):
    """A source file, option or argument the user gave cannot be used."""


class StoreError(EraflowError):
    """An EraStore is missing, damaged or of another format version."""


class LockedError(EraflowError):
    """Another process is writing the same store."""


class OutputError(InputError):
    """An output path eraflow may not write (not its own output, an input, a link…) or a failed write."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), for one-line reports."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
