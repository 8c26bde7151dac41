"""How many threads compute commands use (``--threads N``; 0 = each library's default).

On a busy 2-core machine LightGBM with 2 OpenMP threads ran 4–12× slower than with 1, so the
choice is the user's. ``set_threads`` records it for LightGBM parameters and limits numba and
BLAS thread pools to it.
"""

from __future__ import annotations

import os

_THREADS = 0


def openmp_wait_policy(load: float, cores: int) -> str | None:
    """``passive`` when other work already fills the machine (1-minute load average ≥ cores), else
    None (libgomp's default: a thread that finishes its share of a parallel region spins a while).

    Spinning threads lose their time slices to other processes: on 2 cores at load 7, 100 LightGBM
    rounds on 30k × 1000 took 7.7–19.8 s spinning and 2.3 s passive. On a quiet machine spinning
    tends to win: the journey recipe's 300 rounds on 180k × 1000 took a median 36.0 s spinning,
    41.3 s passive (3 pairs, one the other way; benches/results/journey-240k.md)."""
    return "passive" if load >= cores else None


def choose_openmp_waits() -> None:
    """Set ``OMP_WAIT_POLICY`` for this process and its children by :func:`openmp_wait_policy`,
    unless the user set it. libgomp reads it once, when loaded: call before importing LightGBM,
    numba or XGBoost."""
    policy = openmp_wait_policy(os.getloadavg()[0], os.cpu_count() or 1)
    if policy is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)


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
