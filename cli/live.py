"""Live-era commands: ``live`` (the submission file) and ``export`` (the model for Numerai's upload)."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine.errors import InputError
from eraflow.engine.models.predict import load_model
from eraflow.engine.numerai.export import DEFAULT_RUNTIME, RUNTIMES, export_model
from eraflow.engine.numerai.live import (
    feature_set_names,
    live_predictions,
    override_postprocess,
    postprocess_summary,
    write_submission,
)
from eraflow.engine.numerai.runtime import export_checked
from eraflow.engine.outputs import check_output_file

from .options import json_option, print_json


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Directory holding live.parquet.")
@click.option("--live", "live_file", type=click.Path(path_type=Path),
              help="The live parquet file [default: DATA/live.parquet].")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Submission file to write (.parquet, or .csv).")
@click.option("--column", help="Output to submit: ensemble or pred_<target> [default: model.json's].")
@click.option("--neutralize", "proportion", type=click.FloatRange(0, 1),
              help="Neutralize per era by this proportion in [0, 1] [default: model.json's].")
@click.option("--feature-set", help="Neutralize against this feature set [default: model.json's, else the "
                                    "model's features].")
@click.option("--features-json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="features.json for --feature-set [default: DATA/features.json, or beside --live; "
                   "else the model's store].")
@json_option
def live(model_dir, data_dir, live_file, output, column, proportion, feature_set, features_json, as_json):
    """Predict Numerai's live era with a trained model, ready to submit.

    Ingests live.parquet (only the features needed), predicts, applies the model's
    post-processing (ensemble, neutralization), ranks to (0, 1) and validates the file as Numerai does.
    --column, --neutralize and --feature-set replace model.json's post-processing for this run
    only; model.json is not changed.

    \b
    Example:
      eraflow live models/starter --data data/v5.2 -o live_predictions.parquet
      eraflow live models/starter --data data/v5.2 --neutralize 0.5 --feature-set medium -o live.parquet
    """
    if live_file is None and data_dir is None:
        raise click.UsageError("give --data DIR (with live.parquet) or --live FILE")
    if features_json is not None and feature_set is None:
        raise click.UsageError("--features-json is read only for --feature-set; give both")
    live_file = live_file or data_dir / "live.parquet"
    check_output_file(output, "submission", inputs=[model_dir, live_file])
    model = load_model(model_dir)
    features = None
    if feature_set is not None:
        features_json = features_json or (data_dir or live_file.parent) / "features.json"
        features = feature_set_names(model, feature_set, features_json)
    post = override_postprocess(model, column, proportion, features)
    frame = live_predictions(model, live_file, post)
    write_submission(frame, output)
    overridden = any(v is not None for v in (column, proportion, feature_set))
    summary = {"output": str(output), "rows": len(frame), "postprocess": postprocess_summary(post),
               "postprocess_overridden": overridden}
    if as_json:
        print_json(summary)
    else:
        note = "; post-processing from the command line, model.json unchanged" if overridden else ""
        click.echo(f"wrote {output}: {len(frame):,} live rows ({summary['postprocess']}{note}); valid for submission")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Pickle file to write.")
@click.option("--check", is_flag=True, help="Run the pickle in Numerai's runtime (its Python and pins, 1 CPU) "
                                            "before writing it; written only when it passes.")
@click.option("--live", "live_file", type=click.Path(path_type=Path),
              help="Live parquet file for --check [default: a synthetic era of 7,000 rows]; implies --check.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=DEFAULT_RUNTIME, show_default=True,
              help="Python version of Numerai's image that will load the pickle; eraflow must run under it.")
def export(model_dir, output, check, live_file, runtime):
    """Export a model as a cloudpickled predict(live_features, live_benchmark_models) for Numerai's model upload.

    The function needs numpy, pandas, the kind's model library and cloudpickle, not eraflow, and gives
    the same predictions as `eraflow live`. Pickles break across Python versions: eraflow refuses to
    export under another Python than --runtime's. --check builds once (cached in
    ~/.cache/eraflow/runtime-*) a venv with the image's pins, runs the pickle there as Numerai does
    and checks its answer, that its predictions equal eraflow's own run of the pickle (to 1e-9), and
    its time and peak memory against Numerai's limits (10 minutes, 4 GB); on a failure it exits 2
    and writes nothing.

    \b
    Example:
      eraflow export models/starter -o model.pkl
      eraflow export models/starter -o model.pkl --check --live data/v5.2/live.parquet
    """
    check_output_file(output, "export", inputs=[model_dir])
    model = load_model(model_dir)
    if not (check or live_file):
        size = export_model(model, output, runtime)
        click.echo(f"wrote {output} ({size / 1024:,.0f} KiB): predict(live_features, live_benchmark_models) -> DataFrame")
        return
    size, result = export_checked(model, output, runtime, live_file, progress=lambda m: click.echo(m, err=True))
    for c in result.checks:
        status = {True: "pass", False: "FAIL", None: "-"}[c.passed]
        click.echo(f"{c.name:<8}{status:<6}{c.detail}")
    if not result.passed:
        raise InputError(f"the export fails in Numerai's Python {runtime} runtime ({result.reason}); nothing written")
    click.echo(f"wrote {output} ({size / 1024:,.0f} KiB): passes in Numerai's Python {runtime} runtime")
