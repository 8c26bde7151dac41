"""A search space of a model kind's parameters (SPACE.toml) and reproducible random draws from it.

One key per parameter, each one of::

    n_estimators = 200                                        # a constant
    num_leaves = [15, 31, 63]                                 # a choice: each value equally likely
    learning_rate = {low = 0.01, high = 0.1, log = true}      # a range: uniform, or log-uniform
    min_data_in_leaf = {low = 20, high = 200}                 # integers when both ends are

Trial ``i`` of a search with seed ``s`` draws each parameter from its own generator,
``np.random.default_rng([s, i, crc32(name)])``: a trial's parameters depend on nothing but the seed,
its number and the space, so ``--trials 20`` after ``--trials 10`` keeps the first 10 and adds 10,
and reordering the keys of SPACE.toml (or adding one) changes no other parameter's draws.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

RANGE_KEYS = {"low", "high", "log"}


@dataclass(frozen=True)
class Constant:
    value: object

    def draw(self, rng: np.random.Generator):
        return self.value


@dataclass(frozen=True)
class Choice:
    values: tuple

    def draw(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]


@dataclass(frozen=True)
class Range:
    """``low ≤ x ≤ high``: uniform, or with ``log`` uniform in log x; whole numbers when both ends are."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rng: np.random.Generator):
        if self.integer:
            return self._draw_integer(rng)
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def _draw_integer(self, rng: np.random.Generator) -> int:
        """Uniform over low..high; log: ``floor(exp(u))``, u uniform in [log low, log(high + 1)), so each
        integer k gets the share log((k + 1) / k) of the draws."""
        if not self.log:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        u = rng.uniform(math.log(self.low), math.log(self.high + 1))
        return int(min(self.high, max(self.low, math.floor(math.exp(u)))))


Param = Constant | Choice | Range


def param_rng(seed: int, trial: int, name: str) -> np.random.Generator:
    """The generator parameter ``name`` of trial ``trial`` is drawn from: seeded by (seed, trial, crc32 of the name)."""
    return np.random.default_rng([seed, trial, zlib.crc32(name.encode())])


def _is_scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _range(name: str, spec: dict, where: str) -> Range:
    """A ``{low, high, log}`` table as a Range; InputError naming the parameter otherwise."""
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown or not {"low", "high"} <= set(spec):
        raise InputError(f"{where}: range {name} must have low and high (and optionally log), got keys "
                         f"{sorted(spec)}; e.g. {name} = {{low = 0.01, high = 0.1, log = true}}")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not (_is_number(low) and _is_number(high)) or not math.isfinite(low) or not math.isfinite(high):
        raise InputError(f"{where}: range {name} needs finite numbers for low and high, got {low!r} and {high!r}")
    if not isinstance(log, bool):
        raise InputError(f"{where}: range {name}: log must be true or false, got {log!r}")
    if not low < high:
        raise InputError(f"{where}: range {name} has low {low!r} not below high {high!r}; use a constant for one value")
    if log and low <= 0:
        raise InputError(f"{where}: log range {name} needs low > 0, got {low!r}")
    return Range(low, high, log, isinstance(low, int) and isinstance(high, int))


def parse_param(name: str, spec, where: str = "search space") -> Param:
    """One SPACE.toml value as a Constant, a Choice or a Range (see the module doc)."""
    if isinstance(spec, dict):
        return _range(name, spec, where)
    if isinstance(spec, list):
        if not spec or not all(_is_scalar(v) for v in spec):
            raise InputError(f"{where}: choice {name} must be a non-empty list of numbers, strings or booleans, "
                             f"got {spec!r}")
        return Choice(tuple(spec))
    if not _is_scalar(spec):
        raise InputError(f"{where}: {name} = {spec!r} is not a number, string, boolean, list or range")
    return Constant(spec)


@dataclass(frozen=True)
class Space:
    """Parameters in the file's order."""

    params: dict[str, Param]
    doc: dict  # the TOML document as read (the search's identity)

    def draw(self, seed: int, trial: int) -> dict:
        """Parameters of trial ``trial``: each drawn from ``default_rng([seed, trial, crc32(name)])``."""
        return {name: p.draw(param_rng(seed, trial, name)) for name, p in self.params.items()}

    def varied(self) -> list[str]:
        """Parameters that are not constants."""
        return [n for n, p in self.params.items() if not isinstance(p, Constant)]

    def representative(self) -> dict:
        """One value of each parameter (a constant, the first choice, a range's low end), to check names early."""
        def first(p: Param):
            return p.value if isinstance(p, Constant) else p.values[0] if isinstance(p, Choice) else p.low
        return {n: first(p) for n, p in self.params.items()}


def parse_space(doc: dict, where: str = "search space") -> Space:
    """A SPACE.toml document as a Space; InputError for an empty space or a malformed value."""
    if not doc:
        raise InputError(f"{where} has no parameters; give one key per parameter, e.g. num_leaves = [15, 31, 63]")
    return Space({name: parse_param(name, spec, where) for name, spec in doc.items()}, doc)


def read_space(path: Path) -> Space:
    """The search space in the TOML file ``path``."""
    from ..models.params import read_toml

    if not path.is_file():
        raise InputError(f"--space {str(path)!r} is not a file; give a SPACE.toml of the model's parameters")
    return parse_space(read_toml(path), str(path))
