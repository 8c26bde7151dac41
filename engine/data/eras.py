"""Era labels: natural ordering and inclusive ranges such as ``0001:0500``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import InputError

_DIGITS = re.compile(r"(\d+)")


def era_key(label: str) -> tuple:
    """Natural sort key: digit runs compare as numbers ("2" < "10", "0002" == "2" in order)."""
    parts = _DIGITS.split(label)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p)


def sort_eras(labels: Iterable[str]) -> list[str]:
    """Distinct labels in natural order."""
    return sorted(set(labels), key=era_key)


def parse_era_range(spec: str) -> tuple[str | None, str | None]:
    """``"0001:0500"`` -> ("0001", "0500"); either side may be empty (open)."""
    if spec.count(":") != 1:
        msg = f"era range {spec!r} must look like FIRST:LAST (either side may be empty), e.g. 0001:0500"
        raise InputError(msg)
    first, last = (part.strip() or None for part in spec.split(":"))
    return first, last


def eras_in_range(labels: Sequence[str], spec: str) -> list[str]:
    """Labels between the range's bounds, inclusive, in natural order."""
    first, last = parse_era_range(spec)
    lo = era_key(first) if first is not None else None
    hi = era_key(last) if last is not None else None
    chosen = [e for e in labels if (lo is None or era_key(e) >= lo) and (hi is None or era_key(e) <= hi)]
    if not chosen:
        msg = f"era range {spec!r} selects no era (the data has {labels[0]}..{labels[-1]})"
        raise InputError(msg)
    return chosen
