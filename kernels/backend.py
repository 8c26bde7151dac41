"""Choose where a kernel runs: the NumPy reference, numba on the CPU, or CuPy on a GPU.

Every public kernel takes ``backend="auto" | "numpy" | "numba" | "cupy"`` and calls
:func:`resolve_backend` once. ``"numpy"`` and ``"cupy"`` run the same array code
(``_xp_scores``, ``_xp_linalg``) through an :class:`ArrayNamespace`; ``"numba"`` runs the
compiled per-era loops (``_numba_scores``, ``_numba_linalg``).

Inputs and results are always NumPy arrays on the host; the CuPy namespace copies each
block of eras to the device and its results back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from eraflow.engine.errors import InputError

BACKENDS = ("auto", "numpy", "numba", "cupy")

# Padded blocks (eras × longest era × columns) are kept under this many cells; the array
# code holds about a dozen block-sized temporaries. On the CPU a block only needs to feed
# BLAS and sorts well (2**20 float64 cells = 8 MiB); on a GPU batching is the point
# (2**25 cells = 256 MiB, a few GiB of temporaries).
NUMPY_BLOCK_CELLS = 2**20
CUPY_BLOCK_CELLS = 2**25


@dataclass(frozen=True)
class ArrayNamespace:
    """The array module and the few SciPy-like functions the shared array code needs.

    ``cholesky`` factors a stack (B, k, k) and returns NaN for the matrices it cannot
    factor instead of raising; ``solve_triangular`` accepts stacks.
    """

    xp: ModuleType
    ndtri: Callable
    cholesky: Callable
    solve_triangular: Callable
    to_device: Callable
    to_host: Callable
    block_cells: int


@functools.cache
def gpu_available() -> bool:
    """True when CuPy imports *and* a computation on the GPU succeeds (cached per process).

    Importing CuPy succeeds on machines without a driver; the first real call then raises
    (``cudaErrorInsufficientDriver``, no device, missing NVRTC …), so we make one.
    """
    try:
        import cupy

        return int((cupy.arange(4) * 2).sum()) == 12
    except Exception:  # any failure means "no usable GPU": ImportError, CUDARuntimeError, …
        return False


def resolve_backend(backend: str) -> str:
    """``"numpy"``, ``"numba"`` or ``"cupy"`` for a requested backend name.

    ``"auto"`` picks ``"cupy"`` when :func:`gpu_available`, otherwise ``"numba"``.

    Raises
    ------
    InputError
        For an unknown name, or ``"cupy"`` on a machine where no GPU answers.
    """
    if backend not in BACKENDS:
        msg = f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}"
        raise InputError(msg)
    if backend == "auto":
        return "cupy" if gpu_available() else "numba"
    if backend == "cupy" and not gpu_available():
        msg = "backend 'cupy' needs CuPy and a working NVIDIA GPU, and none answered; use backend='numba'"
        raise InputError(msg)
    return backend


def array_namespace(backend: str) -> ArrayNamespace:
    """The :class:`ArrayNamespace` of a resolved ``"numpy"`` or ``"cupy"`` backend."""
    if backend == "cupy":
        from ._cupy import cupy_namespace

        return cupy_namespace()
    return NUMPY


def _numpy_cholesky(c: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack (B, k, k); NaN for the matrices that are not positive definite."""
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:  # raised for the whole stack: factor one matrix at a time
        if len(c) == 1:
            return np.full_like(c, np.nan)
        return np.concatenate([_numpy_cholesky(one[None]) for one in c])


def _numpy_solve_triangular(a: np.ndarray, b: np.ndarray, lower: bool, trans: str = "N") -> np.ndarray:
    """``scipy.linalg.solve_triangular`` over a stack: a (B, k, k), b (B, k, m)."""
    import scipy.linalg

    return np.stack([scipy.linalg.solve_triangular(ai, bi, lower=lower, trans=trans, check_finite=False)
                     for ai, bi in zip(a, b)])


def _numpy_ndtri(p: np.ndarray) -> np.ndarray:
    """``scipy.special.ndtri`` (the normal quantile), imported on first use."""
    import scipy.special

    return scipy.special.ndtri(p)


NUMPY = ArrayNamespace(
    xp=np,
    ndtri=_numpy_ndtri,
    cholesky=_numpy_cholesky,
    solve_triangular=_numpy_solve_triangular,
    to_device=np.asarray,
    to_host=np.asarray,
    block_cells=NUMPY_BLOCK_CELLS,
)
