"""The journey's commands (ingest re-run, train, predict, score) load only what they use, with the same results."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eraflow.engine import open_store
from eraflow.engine.evaluation.prediction_writer import float32_array, string_array

FAST = "n_estimators = 5\nlearning_rate = 0.1\nnum_leaves = 4\ncolsample_bytree = 0.5\n"
# what each command must not import: what that command never calls
NOT_FOR = {
    "ingest": {"numba", "pandas", "sklearn", "lightgbm", "scipy"},  # a re-run that finds the store up to date
    "train": {"pandas", "sklearn", "scipy.stats"},
    "predict": {"pandas", "polars", "sklearn", "scipy.stats", "numba", "scipy.linalg", "duckdb"},
    "score": {"pandas", "sklearn", "lightgbm", "scipy.stats", "duckdb"},  # numba itself loads scipy.linalg
}


def _run(args: list[str], cwd) -> tuple[set[str], str]:
    """Modules (and their parents) a fresh interpreter running ``eraflow ARGS`` imported, and its output."""
    code = ("import sys, json\nfrom eraflow.cli.main import cli\ncli.main(%r, standalone_mode=False)\n"
            "print(json.dumps(sorted(sys.modules)))" % (args,))
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    *lines, modules = out.stdout.strip().splitlines()
    return set(json.loads(modules)), "\n".join(lines)


@pytest.fixture(scope="module")
def journey(synth_dir, tmp_path_factory):
    """The journey run once, each step a fresh process: ingest (then its re-run), train, predict, score."""
    root = tmp_path_factory.mktemp("lean")
    (root / "p.toml").write_text(FAST)
    store, model, preds = str(root / "store"), str(root / "model"), str(root / "preds.parquet")
    sources = [str(synth_dir / "train.parquet"), str(synth_dir / "validation.parquet")]
    _run(["ingest", *sources, store, "-q"], root)
    steps = {"ingest": ["ingest", *sources, store, "-q"],
             "train": ["train", store, "-o", model, "--params", str(root / "p.toml"), "--train-eras", ":0012",
                       "--quiet"],
             "predict": ["predict", model, store, "-o", preds, "--eras", "0013:"],
             "score": ["score", preds, "--store", store, "--json"]}
    return root, {name: _run(args, root) for name, args in steps.items()}


@pytest.mark.parametrize("step", list(NOT_FOR))
def test_journey_step_imports_only_what_it_uses(journey, step):
    """Guards: lightgbm importing scikit-learn (and scipy.stats) and pandas; the kernels importing numba and
    SciPy eagerly; pyarrow's `pa.array`/`to_numpy` and `pq.read_table` importing pandas; ingest's numba."""
    loaded, _ = journey[1][step]
    assert not loaded & NOT_FOR[step], loaded & NOT_FOR[step]


def test_lean_predictions_are_lightgbms_and_written_as_before(journey):
    """The lean process predicts what a LightGBM with scikit-learn loaded predicts, and writes the same table."""
    root, _ = journey
    from eraflow.engine.models.predict import load_model, predict_table

    table = predict_table(load_model(root / "model"), open_store(root / "store"), "0013:")
    want = pa.table({"id": pa.array(table.ids, pa.string()), "era": pa.array(table.eras, pa.string()),
                     **{k: pa.array(np.asarray(v, dtype=np.float32)) for k, v in table.columns.items()}})
    got = pq.read_table(root / "preds.parquet")
    assert got.schema.equals(want.schema) and got.equals(want)


def test_score_of_the_lean_journey_is_the_in_process_score(journey):
    from eraflow.engine.evaluation.scoring import score_predictions

    root, steps = journey
    report = json.loads(steps["score"][1])
    want = [row for r in score_predictions(open_store(root / "store"), root / "preds.parquet") for row in r.summary()]
    assert report == json.loads(json.dumps(want, default=float))


def test_lean_lightgbm_leaves_scikit_learn_and_pandas_importable():
    code = ("import sys\nfrom eraflow.cli.lean import import_lightgbm_lean\nimport_lightgbm_lean()\n"
            "import lightgbm.compat as c\nassert not c.SKLEARN_INSTALLED and not c.PANDAS_INSTALLED\n"
            "assert 'sklearn' not in sys.modules and 'pandas' not in sys.modules\n"
            "import sklearn.base, pandas\nimport_lightgbm_lean()\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ok"]


@pytest.mark.parametrize("values", [np.array(["n1", "é2", ""], dtype=object), np.repeat(["0061", "0062"], [2, 3]),
                                    np.array([], dtype=object), ["x", None], [1, 2]])
def test_string_arrays_are_what_pa_array_makes(values):
    """Guards the offsets of the buffer-built array (multi-byte UTF-8, empty strings, no rows) and the fallback."""
    try:
        want = pa.array(values, pa.string())
    except (pa.ArrowException, TypeError):
        with pytest.raises((pa.ArrowException, TypeError)):
            string_array(values)
        return
    got = string_array(values)
    got.validate(full=True)
    assert got.type == pa.string() and got.equals(want)


@pytest.mark.parametrize("values", [np.array([1.5, np.nan, -0.0]), np.arange(6, dtype=np.float32)[::2], np.array([])])
def test_float32_arrays_are_what_pa_array_makes(values):
    got, want = float32_array(values), pa.array(np.asarray(values, dtype=np.float32))
    got.validate(full=True)
    assert got.type == want.type and got.null_count == want.null_count == 0
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def test_store_ids_are_arrows_ids(store_path):
    store = open_store(store_path)
    want = store.id_table(["id"]).column("id").to_numpy(zero_copy_only=False)
    assert store.ids.dtype == object and list(store.ids) == list(want) and type(store.ids[0]) is str
