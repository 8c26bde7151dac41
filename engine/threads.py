"""How many threads compute commands use (``--threads N``; 0 = each library's default).

On a busy 2-core machine LightGBM with 2 OpenMP threads ran 4–12× slower than with 1, so the
choice is the user's. ``set_threads`` records it for LightGBM parameters and limits numba and
BLAS thread pools to it.
"""

from __future__ import annotations

import os

_THREADS = 0


def configured_threads() -> int:
    """The ``--threads`` value given to this process (0: library defaults)."""
    return _THREADS


def set_threads(n: int) -> None:
    """Use ``n`` threads (0: library defaults) for LightGBM, numba and BLAS in this process."""
    global _THREADS
    _THREADS = int(n)
    if n <= 0:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import sys

    if "numba" in sys.modules:
        # numba read NUMBA_NUM_THREADS at import; changing it now would make its next compilation fail
        # ("Cannot set NUMBA_NUM_THREADS ... once the threads have been launched")
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)  # read when numba is first imported
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
