"""Live-era commands: ``live`` (the submission file) and ``export`` (the model for Numerai's upload)."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine.export import export_model
from eraflow.engine.live import (
    live_predictions,
    model_postprocess,
    postprocess_summary,
    write_submission,
)
from eraflow.engine.predict import load_model

from .data import json_option, print_json


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Directory holding live.parquet.")
@click.option("--live", "live_file", type=click.Path(path_type=Path),
              help="The live parquet file [default: DATA/live.parquet].")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Submission file to write (.parquet, or .csv).")
@json_option
def live(model_dir, data_dir, live_file, output, as_json):
    """Predict Numerai's live era with a trained model, ready to submit.

    Ingests live.parquet (only the model's features), predicts, applies the model's
    post-processing (ensemble, neutralization), ranks to (0, 1) and validates the file as Numerai does.

    \b
    Example:
      eraflow live models/starter --data data/v5.2 -o live_predictions.parquet
    """
    if live_file is None and data_dir is None:
        raise click.UsageError("give --data DIR (with live.parquet) or --live FILE")
    model = load_model(model_dir)
    frame = live_predictions(model, live_file or data_dir / "live.parquet")
    write_submission(frame, output)
    summary = {"output": str(output), "rows": len(frame), "postprocess": postprocess_summary(model_postprocess(model))}
    if as_json:
        print_json(summary)
    else:
        click.echo(f"wrote {output}: {len(frame):,} live rows ({summary['postprocess']}); valid for submission")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Pickle file to write.")
def export(model_dir, output):
    """Export a model as a cloudpickled predict(live_features, live_benchmark_models) for Numerai's model upload.

    The function needs numpy, pandas, lightgbm and cloudpickle, not eraflow, and gives the
    same predictions as `eraflow live`.

    \b
    Example:
      eraflow export models/starter -o model.pkl
    """
    size = export_model(load_model(model_dir), output)
    click.echo(f"wrote {output} ({size / 1024:,.0f} KiB): predict(live_features, live_benchmark_models) -> DataFrame")
