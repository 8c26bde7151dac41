"""``--threads`` for numba: before numba is imported it sets NUMBA_NUM_THREADS; after, only numba's
active thread count, because changing the variable then makes numba's next compilation fail."""

from __future__ import annotations

import subprocess
import sys

import pytest

SET_AFTER_IMPORT = """
import numba
from eraflow.engine.threads import set_threads
set_threads(1)
print(numba.njit(lambda x: x + 1)(1), numba.get_num_threads())
"""
SET_BEFORE_IMPORT = """
from eraflow.engine.threads import set_threads
set_threads(1)
import numba
print(numba.njit(lambda x: x + 1)(1), numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
"""


@pytest.mark.parametrize(("code", "expected"), [(SET_AFTER_IMPORT, "2 1"), (SET_BEFORE_IMPORT, "2 1 1")])
def test_threads_set_around_numba_import_leave_compilation_working(code, expected, tmp_path):
    """Bug guarded: `eraflow search` (threads 1 per task) on a fresh install failed at its first kernel
    compilation with "Cannot set NUMBA_NUM_THREADS to a different value once the threads have been launched"."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()
