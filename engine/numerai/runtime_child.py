"""Run an exported pickle as Numerai's model-upload runtime does; run by the runtime's Python, never eraflow's.

Usage: ``python runtime_child.py MODEL.pkl SPEC.json RESULT.json``. This file imports only the
standard library at the top, and numpy/pandas inside functions, so it runs in the runtime venv
(:mod:`eraflow.engine.numerai.runtime`), which has no eraflow; eraflow imports it too, to predict
the same frame in its own process (:func:`live_frame`, :func:`predict_eras`). It follows numerai-predict's
``predict.py``:

1. pin the process to one CPU (Numerai's limit; the parent also sets the thread variables to 1);
2. ``pd.read_pickle(MODEL.pkl)``; the number of parameters of its signature (1 or 2);
3. the live frame: ``pd.read_parquet(SPEC["live"])`` (a column ``id`` becomes the index, as in
   Numerai's file), else :func:`synthetic_live` of ``SPEC["features"]`` (one era);
4. for each era: ``predict(era_features)`` or ``predict(era_features, benchmarks.loc[era_features.index])``
   (benchmarks: one random column indexed like the live frame);
5. each era's answer must be exactly a ``pd.DataFrame`` (no subclass), indexed like the era's
   rows, without NaN, every value in [0, 1] (:func:`answer_problem`);
6. the answers' values, eras in order (:func:`answer_values`), saved as float64 ``.npy`` to
   ``SPEC["predictions"]`` for the parent to compare with eraflow's.

RESULT.json is rewritten at each step: ``stage`` (load, read, predict, answer, done), ``problem`` (None or
one line), ``args``, ``rows``, ``eras``, ``cpus`` (CPUs it may run on), ``python`` and ``peak_kib``
(this process's peak RSS, :func:`peak_kib`), so the parent knows how far a process that crashed got.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import resource
import sys

BENCHMARK_COLUMN = "v52_lgbm_ender20"  # a benchmark model's column; eraflow's predictors ignore it


def pin_one_cpu() -> None:
    """Restrict this process (and the threads it starts) to the first CPU it may use."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def synthetic_live(features: list[str], rows: int, seed: int = 0):
    """A live-shaped frame: index ``id``, ``era`` "X", each feature a random int8 code 0..4."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns = {"era": np.full(rows, "X", dtype=object),
               **{f: rng.integers(0, 5, rows).astype(np.int8) for f in features}}
    return pd.DataFrame(columns, index=pd.Index([f"n{i:07d}" for i in range(rows)], name="id"))


def read_live(path: str):
    """``pd.read_parquet(path)`` with a column ``id`` made the index (Numerai's file has it as the index)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    return frame.set_index("id") if "id" in frame.columns else frame


def live_frame(spec: dict):
    """The frame to predict: ``SPEC["live"]`` read as Numerai does, else the synthetic era of ``SPEC["features"]``."""
    return read_live(spec["live"]) if spec.get("live") else synthetic_live(spec["features"], spec["rows"])


def benchmarks_for(live):
    """A benchmark-models frame indexed like ``live``: one column of random values in (0, 1)."""
    import numpy as np
    import pandas as pd

    values = np.random.default_rng(1).random(len(live))
    return pd.DataFrame({BENCHMARK_COLUMN: values}, index=live.index)


def answer_problem(out, era_features) -> str | None:
    """What Numerai would reject in ``predict``'s answer for ``era_features``; None when it is fine."""
    import pandas as pd

    if type(out) is not pd.DataFrame:
        kind = "None" if out is None else f"{type(out).__module__}.{type(out).__qualname__}"
        return f"it returned {kind}, not exactly a pandas DataFrame"
    if len(out) != len(era_features) or not out.index.equals(era_features.index):
        return f"it returned {len(out)} rows not indexed like the {len(era_features)} live rows given"
    if out.shape[1] == 0 or not all(pd.api.types.is_numeric_dtype(t) for t in out.dtypes):
        return f"it returned columns {list(out.columns)[:3]}, not numeric predictions"
    if out.isna().to_numpy().any():
        return "it returned NaN predictions"
    values = out.to_numpy(dtype=float)
    if not ((values >= 0) & (values <= 1)).all():
        return f"its predictions are not all in [0, 1] (min {values.min():.3g}, max {values.max():.3g})"
    return None


def predict_eras(model, live, args: int) -> list:
    """``(answer, era_features)`` for each era of ``live`` in ``groupby`` order, ``model`` called with ``args``
    (1 or 2) arguments as Numerai calls it; an exception of ``model`` propagates."""
    benchmarks = benchmarks_for(live) if args == 2 else None
    return [(model(era) if args == 1 else model(era, benchmarks.loc[era.index]), era) for _, era in live.groupby("era")]


def answer_values(answers: list):
    """The answers' values as one float64 array (rows × columns), eras in the order of ``answers``."""
    import numpy as np

    return np.concatenate([out.to_numpy(dtype=np.float64) for out, _ in answers]) if answers else np.zeros((0, 0))


def error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def run(model_path: str, spec: dict, report) -> None:
    """Steps 2–5 of the module docstring; ``report(**fields)`` records progress."""
    import pandas as pd

    report(stage="load")
    try:
        model = pd.read_pickle(model_path)
        args = len(inspect.signature(model).parameters)
    except Exception as exc:
        return report(problem=f"loading the pickle raised {error_line(exc)}")
    report(args=args)
    if args not in (1, 2):
        return report(stage="predict", problem=f"predict takes {args} arguments; Numerai passes 1 or 2")
    report(stage="read")
    try:
        live = live_frame(spec)
        eras = live["era"].nunique()
    except Exception as exc:
        return report(problem=f"reading the live data raised {error_line(exc)}")
    report(stage="predict", rows=len(live), eras=eras)
    try:
        answers = predict_eras(model, live, args)
    except Exception as exc:
        return report(problem=f"predict raised {error_line(exc)}")
    report(stage="answer")
    problem = next(filter(None, (answer_problem(out, era_features) for out, era_features in answers)), None)
    if problem is None:
        problem = save_values(answers, spec["predictions"])
    report(problem=problem, stage="answer" if problem else "done")


def save_values(answers: list, path: str) -> str | None:
    """Save :func:`answer_values` to ``path`` (``.npy``); the problem when the eras' answers do not stack."""
    import numpy as np

    try:
        values = answer_values(answers)
    except ValueError as exc:
        return f"its answers for different eras do not stack ({error_line(exc)})"
    np.save(path, values, allow_pickle=False)
    return None


def peak_kib() -> int:
    """This process's peak resident memory in KiB: ``VmHWM`` of /proc/self/status, which starts afresh
    at exec (Linux's ``ru_maxrss`` keeps the forking parent's peak across exec, so a child of a large
    process would report that), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(model_path: str, spec_path: str, result_path: str) -> None:
    pin_one_cpu()
    with open(spec_path) as fh:
        spec = json.load(fh)
    result = {"stage": "start", "problem": None, "args": None, "rows": None, "eras": None,
              "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
              "python": platform.python_version()}

    def report(**fields) -> None:
        result.update(fields, peak_kib=peak_kib())
        with open(result_path + ".tmp", "w") as fh:
            json.dump(result, fh)
        os.replace(result_path + ".tmp", result_path)

    run(model_path, spec, report)


if __name__ == "__main__":
    main(*sys.argv[1:4])
