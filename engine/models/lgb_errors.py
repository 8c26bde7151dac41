"""LightGBM's errors and stderr, and its prediction threads, handled the same everywhere."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import lightgbm as lgb

from ..errors import InputError, first_line
from ..threads import configured_threads


@contextmanager
def lightgbm_stderr_closed() -> Iterator[None]:
    """Close stderr to LightGBM's C++ code inside the block: it prints fatal errors before raising
    them, and the error becomes eraflow's own one-line message."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def lightgbm_failures(what: str) -> Iterator[None]:
    """LightGBM errors as one-line InputErrors about ``what``, its own stderr silenced."""
    try:
        with lightgbm_stderr_closed():
            yield
    except lgb.basic.LightGBMError as exc:
        raise InputError(f"LightGBM failed on {what}: {first_line(exc)}") from None


@contextmanager
def lightgbm_errors() -> Iterator[None]:
    """LightGBM's training errors, its own stderr silenced, turned into advice."""
    try:
        with lightgbm_stderr_closed():
            yield
    except lgb.basic.LightGBMError as exc:
        msg = first_line(exc)
        if "CUDA Tree Learner was not enabled" in msg:
            raise InputError("--device cuda needs LightGBM built with CUDA: run `make lightgbm-cuda`") from None
        if "OpenCL" in msg or "GPU Tree Learner was not enabled" in msg:
            raise InputError(f"--device gpu: LightGBM's OpenCL learner cannot run here ({msg}); "
                             "use --device cpu or --device auto") from None
        raise InputError(f"LightGBM refused the parameters: {msg}") from None


def predict_params() -> dict:
    """Keyword parameters of ``Booster.predict``: ``num_threads`` when ``--threads`` is set."""
    n = configured_threads()
    return {"num_threads": n} if n > 0 else {}
