"""SciPy's normal quantile ``ndtri`` callable from numba kernels, bit-identical to ``scipy.stats.norm.ppf``.

``scipy.special.cython_special`` exports the C function; we register its address under a
fixed symbol name and declare it as an external function. Unlike a ctypes pointer this keeps
the calling kernels cacheable (``cache=True``): the symbol is resolved by name when a cached
kernel is loaded, and this module (imported by every kernel module) registers it first.
"""

from __future__ import annotations

import llvmlite.binding
from numba import types
from numba.extending import get_cython_function_address

_SYMBOL = "eraflow_scipy_ndtri"

llvmlite.binding.add_symbol(_SYMBOL, get_cython_function_address("scipy.special.cython_special", "ndtri"))
ndtri = types.ExternalFunction(_SYMBOL, types.float64(types.float64))
