"""Every backend against the NumPy reference, on the mixed case and on edge cases numerai-tools
cannot take (empty eras, all-NaN columns, constant columns, eras shorter than the features,
all-NaN targets, float32 input), and with eras batched differently."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eraflow import kernels
from eraflow.kernels import backend as backend_module
from tests.test_kernels_cases import FAST_BACKENDS, MISSING_CODE, Case, mixed_case

AGREE = 1e-9  # backends compute the same float64 math in a different order


def edge_case(seed: int = 1) -> Case:
    """Eras of 0, 1, 0, 2, 7, 30, 13 and 0 rows: an all-NaN prediction column (7-row era), a
    constant one (30-row era), an all-NaN target (13-row era), a feature missing for a whole era."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 0, 2, 7, 30, 13, 0]
    n, m, k = sum(sizes), 2, 5
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    predictions = rng.normal(size=(n, m)).round(1)
    target = rng.choice([0, 0.25, 0.5, 0.75, 1.0], n)
    codes = rng.integers(0, 5, (n, k)).astype(np.int8)
    nan_rows = rng.random((n, m)) < 0.1
    nan_rows[offsets[4]:offsets[5], 0] = True
    predictions[offsets[5]:offsets[6], 1] = 0.3
    target[offsets[6]:offsets[7]] = np.nan
    codes[offsets[5]:offsets[6], 2] = MISSING_CODE
    return Case("edge", sizes, predictions, target, rng.normal(size=n), codes, nan_rows)


CASES = [mixed_case(seed=3, sizes=(1, 2, 700, 40, 3, 300)), edge_case()]


def all_kernels(case: Case, backend: str) -> dict[str, np.ndarray]:
    x, o = case.with_nan, case.offsets
    exposure = kernels.feature_exposure(x, case.codes, o, backend=backend)
    return {
        "rank average": kernels.rank(x, o, backend=backend),
        "rank first": kernels.rank(x, o, "first", backend=backend),
        "gaussianize": kernels.gaussianize(x, o, backend=backend),
        "pearson": kernels.pearson(x, case.meta, o, backend=backend),
        "spearman": kernels.spearman(x, case.target, o, backend=backend),
        "numerai_corr": kernels.numerai_corr(x, case.target, o, backend=backend),
        "correlation_contribution": kernels.correlation_contribution(x, case.meta, case.target, o, backend=backend),
        "neutralize": kernels.neutralize(x, case.codes, o, 0.7, backend=backend),
        "neutralize float features": kernels.neutralize(x[:, 0], case.feature_values * 0.3, o, backend=backend),
        "exposure max": exposure.max_abs,
        "exposure rms": exposure.rms,
        "feature_neutral_corr": kernels.feature_neutral_corr(x, case.codes, case.target, o, backend=backend),
        "neutral_correlation": kernels.neutral_correlation(x, case.codes, case.target, o, backend=backend),
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_numpy_reference(case, backend):
    reference = all_kernels(case, "numpy")
    for name, got in all_kernels(case, backend).items():
        assert got.shape == reference[name].shape, f"{name} shape on {backend}, case {case.name}"
        np.testing.assert_allclose(got, reference[name], rtol=0, atol=AGREE,
                                   err_msg=f"{name} on {backend} vs numpy, case {case.name}")


def test_edge_case_has_scores_and_gaps():
    """The edge case exercises both defined values and NaN (so the comparison above means something)."""
    scores = all_kernels(edge_case(), "numpy")["numerai_corr"]
    assert np.isfinite(scores).sum() >= 3 and np.isnan(scores).sum() >= 4


def test_numpy_results_do_not_depend_on_how_eras_are_batched(monkeypatch):
    """The padded NumPy/CuPy path cuts eras into blocks by a cell budget; one era per block
    (budget 1) and all eras in one block must give the same results."""
    case = CASES[0]
    for budget in (1, 2**40):
        monkeypatch.setattr(backend_module, "NUMPY", dataclasses.replace(backend_module.NUMPY, block_cells=budget))
        results = all_kernels(case, "numpy")
        if budget == 1:
            one_per_block = results
    for name, got in results.items():
        np.testing.assert_allclose(got, one_per_block[name], rtol=0, atol=AGREE,
                                   err_msg=f"{name}: one block vs one era per block")


@pytest.mark.parametrize("backend", ["numpy", *FAST_BACKENDS])
def test_float32_input_gives_float32_rows_and_float64_scores(backend):
    case = CASES[1]
    x32 = case.with_nan.astype(np.float32)
    for name, out in [("rank", kernels.rank(x32, case.offsets, backend=backend)),
                      ("gaussianize", kernels.gaussianize(x32, case.offsets, backend=backend)),
                      ("neutralize", kernels.neutralize(x32, case.codes, case.offsets, backend=backend)),
                      ("power", kernels.power(x32, 1.5, backend=backend))]:
        assert out.dtype == np.float32, f"{name} on {backend}"
    assert kernels.numerai_corr(x32, case.target, case.offsets, backend=backend).dtype == np.float64
