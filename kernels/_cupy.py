"""The CuPy :class:`~eraflow.kernels.backend.ArrayNamespace` (imported only when a GPU answered).

The shared array code runs unchanged on it; only three things differ from NumPy:

- ``cupy.linalg.cholesky`` on a stack calls cuSOLVER ``potrfBatched`` and, by default,
  does not report failures; we check ``L Lᵀ = C`` and mark failed factors with NaN, the
  way the NumPy namespace does.
- ``cupyx.scipy.linalg.solve_triangular`` already accepts stacks.
- ``cupyx.scipy.special.ndtri`` is the normal quantile.
"""

from __future__ import annotations

import functools

from .backend import CUPY_BLOCK_CELLS, ArrayNamespace

# A Cholesky factor of a unit-diagonal matrix whose product differs from it by more than
# this (max abs entry) is treated as failed.
FACTOR_CHECK_TOLERANCE = 1e-8


@functools.cache
def cupy_namespace() -> ArrayNamespace:
    import cupy
    import cupyx.scipy.linalg
    import cupyx.scipy.special

    def cholesky(c):
        lower = cupy.linalg.cholesky(c)
        error = cupy.abs(lower @ lower.transpose(0, 2, 1) - c).max(axis=(1, 2))
        failed = ~(error <= FACTOR_CHECK_TOLERANCE)  # NaN errors count as failed
        return cupy.where(failed[:, None, None], cupy.nan, lower)

    def solve_triangular(a, b, lower, trans="N"):
        return cupyx.scipy.linalg.solve_triangular(a, b, lower=lower, trans=trans)

    return ArrayNamespace(
        xp=cupy,
        ndtri=cupyx.scipy.special.ndtri,
        cholesky=cholesky,
        solve_triangular=solve_triangular,
        to_device=cupy.asarray,
        to_host=cupy.asnumpy,
        block_cells=CUPY_BLOCK_CELLS,
    )
