"""Imports a command pays for only what it uses: LightGBM without its scikit-learn and pandas interfaces."""

from __future__ import annotations

import importlib
import sys

# imported by `import lightgbm` only for LGBMRegressor & co. and DataFrame inputs (scikit-learn brings scipy.stats)
LIGHTGBM_OPTIONAL = ("sklearn", "pandas")
# model kinds whose module imports lightgbm (an ensemble's members may be any kind)
LIGHTGBM_KINDS = frozenset({"lgbm", "rf", "v3x", "ensemble"})


def import_lightgbm_lean_for(kind: str) -> None:
    """:func:`import_lightgbm_lean` when models of ``kind`` use LightGBM."""
    if kind in LIGHTGBM_KINDS:
        import_lightgbm_lean()


def import_lightgbm_lean() -> None:
    """Import LightGBM with scikit-learn and pandas hidden from it, unless one of the three is already loaded.

    ``import lightgbm`` imports scikit-learn (and through it scipy.stats) and pandas: ~2 s and ~140 MiB of
    each `eraflow train`/`predict` process, for interfaces the CLI never uses (it trains with ``lgb.train``
    and predicts with ``Booster.predict`` on NumPy arrays and its own ``lgb.Sequence``). LightGBM then
    treats them as absent for the rest of the process (no ``LGBMRegressor`` base classes, no
    DataFrame inputs); other code may still import them. Not for Dask training: ``lightgbm.dask``
    needs scikit-learn.
    """
    if "lightgbm" in sys.modules:
        return
    hidden = [name for name in LIGHTGBM_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError, which lightgbm.compat expects
    try:
        importlib.import_module("lightgbm")
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
