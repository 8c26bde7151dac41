"""Warnings from library code: logged to the ``eraflow`` logger, printed by the CLI as ``warning: …``.

Library functions never print; a condition the user should hear about (a rebuilt cache, an
optimistic score, a fallback file) goes through :func:`warn`.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("eraflow")


def warn(message: str) -> None:
    """Record a warning for the user (one line)."""
    LOGGER.warning(message)
