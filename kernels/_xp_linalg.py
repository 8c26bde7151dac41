"""Neutralization and feature exposure as array code on padded blocks (NumPy reference, CuPy path).

Blocks come from :mod:`eraflow.kernels._eras`: values ``x (B, L, m)``, features ``F (B, L, k)``
(int8 store codes or float64), and ``kept (B, L, 1)``, the rows that take part. The solve of
the normal equations, :func:`solve_centered_gram`, is also used by the numba backend.

Why normal equations with a Cholesky factor, not ``lstsq`` per era (what numerai-tools does):
for an era of 5000 rows × 500 features ``lstsq`` (an SVD) costs ~100 ms, while the Gram
``FᵀF`` is one GEMM (~13 ms in float32 on one core, exact for store codes; the numba backend
sums it from bit planes in ~5 ms) shared by every column being neutralized, and the factor of
the k × k matrix is ~1.5 ms. Normal equations square the condition number, so we make them
well conditioned and check them:

- features are centered (the intercept drops out) and scaled to unit variance, so the matrix
  is the features' correlation matrix: constant features become exact zero rows (they are
  removed: they add nothing the intercept does not), and Cholesky works on a matrix with a
  unit diagonal;
- a pivot ``L_ii²`` is the share of feature i's variance that the features before it leave
  unexplained; below ``PIVOT_TOLERANCE`` the features are (nearly) collinear and the era is
  solved again with ``lstsq(F1, x, rcond=1e-6)`` exactly as numerai-tools does. With pivots
  above 1e-8 the features' singular values stay far above lstsq's cut-off, so both solvers
  agree; eras with no more rows than features always take the lstsq path, and where the
  features and intercept span every row the residual is exactly 0 (numerai-tools leaves
  rounding noise of ~1e-15 there, which later ranking would amplify into arbitrary scores).
  That last case is recognised first, the same way, from the Cholesky pivots of the rows'
  normalized Gram ``F1 F1ᵀ``: on a 2271-row era × 2377 columns 0.6 s instead of lstsq's 2.9 s.
"""

from __future__ import annotations

import numpy as np

from ._checks import MISSING_CODE
from ._xp_scores import scaled_to_unit, varies

TOP_CODE = 4  # the largest store code
MIDDLE_CODE = 2  # a missing feature code (-1) is read as the middle bucket: see neutralization.py
PIVOT_TOLERANCE = 1e-8
LSTSQ_RCOND = 1e-6  # numerai-tools' neutralize
FLOAT32_EXACT_ROWS = 2**20  # sums of code products (≤ 16 each) stay below 2**24 up to this many rows


def feature_values(xp, features, max_rows: int):
    """Features as numbers: int8 codes with missing → ``MIDDLE_CODE`` as float32 (exact while
    eras have at most ``FLOAT32_EXACT_ROWS`` rows and codes are within 0..4, else float64),
    float features unchanged."""
    if features.dtype != np.int8:
        return features
    store_codes = features.size == 0 or (int(features.min()) >= MISSING_CODE and int(features.max()) <= TOP_CODE)
    dtype = xp.float32 if store_codes and max_rows <= FLOAT32_EXACT_ROWS else xp.float64
    return xp.where(features == MISSING_CODE, MIDDLE_CODE, features).astype(dtype)


def design_block(xp, features, kept, n_kept):
    """The era design of a feature block: ``(W, mean, varying)``.

    ``W (B, L, k)``: feature values on kept rows, zero elsewhere; float features are centered
    per era (codes are not: their Gram is then exact). ``mean (B, k)`` float64: column means of
    W over kept rows. ``varying (B, k)``: the feature takes more than one value in the era.
    """
    values = feature_values(xp, features, features.shape[1])
    safe_n = xp.maximum(n_kept, 1)
    if features.dtype != np.int8:
        values = values - xp.where(kept, values, 0).sum(axis=1, keepdims=True) / safe_n[:, None]
    w = xp.where(kept, values, 0).astype(values.dtype)
    mean = w.sum(axis=1, dtype=xp.float64) / safe_n
    return w, mean, varies(xp, values, kept)


def solve_centered_gram(ns, gram, mean, n_kept, cross, varying):
    """Slopes ``β (B, k, m)`` of the per-era regression with intercept, and which eras succeeded.

    Solves ``(WᵀW − n μμᵀ) β = W_cᵀ x_c`` (``gram = WᵀW (B, k, k)``, ``cross = Wᵀ x_c (B, k, m)``,
    both float64) on the varying features (β = 0 on constant ones) via the Cholesky factor of
    the correlation matrix. ``ok (B,)`` is False where that is not trustworthy — fewer rows than
    varying features plus one, or a pivot below ``PIVOT_TOLERANCE`` — and the caller must use lstsq.
    """
    xp = ns.xp
    k = gram.shape[1]
    cov = gram - n_kept[:, :, None] * (mean[:, :, None] * mean[:, None, :])
    var = xp.diagonal(cov, axis1=1, axis2=2)
    usable = varying & (var > 0)
    inv_scale = xp.where(usable, 1 / xp.sqrt(xp.where(usable, var, 1.0)), 0.0)  # 0 removes constant features
    corr = cov * inv_scale[:, :, None] * inv_scale[:, None, :]
    diagonal = xp.arange(k)
    corr[:, diagonal, diagonal] = 1.0
    lower = ns.cholesky(corr)
    pivots = xp.diagonal(lower, axis1=1, axis2=2) ** 2
    ok = ((pivots >= PIVOT_TOLERANCE).all(axis=1)  # NaN (a failed factor) compares False
          & (usable == varying).all(axis=1)
          & (n_kept[:, 0] > varying.sum(axis=1)))
    if not bool(ok.all()):
        lower = xp.where(ok[:, None, None], lower, xp.eye(k))  # any solvable factor; those eras use lstsq
    rhs = cross * inv_scale[:, :, None]
    gamma = ns.solve_triangular(lower, ns.solve_triangular(lower, rhs, lower=True), lower=True, trans="T")
    return gamma * inv_scale[:, :, None], ok


def lstsq_fitted(xp, values, x):
    """Fitted values ``F1 β`` with ``β = lstsq(F1, x, rcond=1e-6)``, ``F1 = [F, 1]`` — numerai-tools' neutralize.

    When ``F1`` has as many independent columns as rows the fit is exact and x itself is
    returned, so the residual is exactly 0 rather than rounding noise.
    """
    f1 = xp.concatenate([values.astype(xp.float64), xp.ones((len(values), 1))], axis=1)
    if len(f1) <= f1.shape[1] and rows_independent(xp, f1):
        return x
    beta, _, rank, _ = xp.linalg.lstsq(f1, x, rcond=LSTSQ_RCOND)
    return x if int(rank) == len(values) else f1 @ beta


def rows_independent(xp, f1) -> bool:
    """Whether the rows of ``f1`` are clearly independent: every Cholesky pivot of their Gram
    scaled to a unit diagonal is at least ``PIVOT_TOLERANCE`` (rows are never zero: F1 holds the 1)."""
    gram = f1 @ f1.T
    inv_norm = 1 / xp.sqrt(xp.diagonal(gram))
    try:
        lower = xp.linalg.cholesky(gram * inv_norm[:, None] * inv_norm[None, :])
    except np.linalg.LinAlgError:
        return False
    return bool((xp.diagonal(lower) ** 2 >= PIVOT_TOLERANCE).all())  # NaN (a failed factor) compares False


def neutralize_block(ns, x, features, kept, proportion: float):
    """``x − proportion · fitted`` per era, where fitted are the least-squares values of x on
    ``[F, 1]``; NaN outside the kept rows and in columns that are constant in the era.

    1. Center x and the features over kept rows (codes: through ``n μμᵀ``).
    2. ``β`` from :func:`solve_centered_gram`; fitted = x̄ + (W − μ) β.
    3. Eras where that is not trustworthy: fitted from lstsq on ``[F, 1]``.
    """
    xp = ns.xp
    n_kept = kept.sum(axis=1)
    w, mean, varying = design_block(xp, features, kept, n_kept)
    x_mean = xp.where(kept, x, 0.0).sum(axis=1, keepdims=True) / xp.maximum(n_kept, 1)[:, None]
    x_centered = xp.where(kept, x - x_mean, 0.0)
    w_t = w.transpose(0, 2, 1)
    gram = (w_t @ w).astype(xp.float64)
    beta, ok = solve_centered_gram(ns, gram, mean, n_kept, w_t @ x_centered, varying)
    fitted = x_mean + w @ beta - mean[:, None, :] @ beta
    for era in np.flatnonzero(ns.to_host(~ok & (n_kept[:, 0] > 0))):
        rows = kept[era, :, 0]
        fitted[era, rows] = lstsq_fitted(xp, feature_values(xp, features[era, rows], features.shape[1]),
                                         x[era, rows])
    keep = kept & varies(xp, x, kept)[:, None, :]
    return xp.where(keep, x - proportion * fitted, xp.nan)


def scaled_centered(xp, x, kept):
    """``x (B, L, m)`` on the kept rows, scaled per era and column by a power of two
    (:func:`~._xp_scores.scaled_to_unit`), then centered; 0 elsewhere. Correlation ignores the
    scale, and its sums of squares stay finite and clear of subnormals for any finite magnitude."""
    x = scaled_to_unit(xp, xp.where(kept, x, 0.0))
    n = xp.maximum(kept.sum(axis=1, keepdims=True), 1)
    return xp.where(kept, x - x.sum(axis=1, keepdims=True) / n, 0.0)


def exposure_block(ns, x, features, kept):
    """Per era and column of x: ``[max_i |corr(x, F_i)|, sqrt(mean_i corr(x, F_i)²)]`` over the
    features that vary in the era, as ``(B, 2m)``; NaN where x is constant or no feature varies.
    x and float features go through :func:`scaled_centered` first, so any finite magnitude gives
    |corr| ≤ 1."""
    xp = ns.xp
    n_kept = kept.sum(axis=1)
    if features.dtype != np.int8:
        features = scaled_centered(xp, features, kept)
    w, mean, varying = design_block(xp, features, kept, n_kept)
    x_centered = scaled_centered(xp, x, kept)
    cross = w.transpose(0, 2, 1) @ x_centered                                      # Σ (w − μ)(x − x̄)
    feature_var = (w * w).sum(axis=1, dtype=xp.float64) - n_kept * mean**2          # Σ (w − μ)²
    x_var = (x_centered**2).sum(axis=1)
    defined = varying[:, :, None] & varies(xp, x, kept)[:, None, :]
    scale = xp.sqrt(xp.where(defined, feature_var[:, :, None] * x_var[:, None, :], 1.0))
    corr = xp.clip(xp.where(defined, cross / scale, 0.0), -1.0, 1.0)  # rounding may pass ±1
    n_defined = defined.sum(axis=1)
    max_abs = xp.where(defined, xp.abs(corr), -xp.inf).max(axis=1)
    rms = xp.sqrt((corr**2).sum(axis=1) / xp.maximum(n_defined, 1))
    has_any = n_defined > 0
    return xp.concatenate([xp.where(has_any, max_abs, xp.nan), xp.where(has_any, rms, xp.nan)], axis=1)
