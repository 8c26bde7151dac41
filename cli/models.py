"""Model commands: ``train`` and ``predict``."""

from __future__ import annotations

from pathlib import Path

import click

from eraflow.engine import open_store
from eraflow.engine.cluster.client import check_store_visible, open_client
from eraflow.engine.evaluation.ledger import record_run
from eraflow.engine.evaluation.prediction_writer import write_predictions
from eraflow.engine.models.era_boost import with_era_boost
from eraflow.engine.models.kind import DEFAULT_KIND, TRAINABLE
from eraflow.engine.models.params import DEVICES, check_network_option, kind_params, with_options
from eraflow.engine.models.predict import ENSEMBLE, load_model, predict_table, read_meta
from eraflow.engine.models.train import TrainConfig, train_models, training_run
from eraflow.engine.outputs import check_output_dir, check_output_file

from .lean import import_lightgbm_lean_for
from .options import cluster_options, command_line, csv_list, era_boost_option, json_option, print_json, quiet_option
from .progress import train_progress
from .runs import ledger_option


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Model directory to write.")
@click.option("--target", "targets", multiple=True, help="Target name or glob, repeatable [default: target].")
@click.option("--feature-set", help="A feature set of the store [default: every feature].")
@click.option("--features", help="Comma-separated features.")
@click.option("--model", "kind", type=click.Choice(TRAINABLE), default=DEFAULT_KIND, show_default=True,
              help="Kind of model (see the README's table of kinds).")
@click.option("--params", "params_spec",
              help="lgbm: a preset (starter, deep) or a params.toml [default: starter]; other kinds: a params.toml "
                   "of the kind's parameters [default: the kind's].")
@click.option("--blocks", type=int, help="v3x: contiguous blocks of training eras, one sub-model each [default: 3].")
@click.option("--pca-frac", type=float, help="v3x: PCA per block keeping this share of the variance (0 < f < 1).")
@click.option("--sub-model", type=click.Choice(["xgb", "lgbm"]), help="v3x: kind of the block models [default: xgb].")
@click.option("--meta", type=click.Choice(["ridge", "simplex"]),
              help="v3x: meta-model weights, ridge (CV'd alpha) or simplex (non-negative, summing to 1).")
@click.option("--epochs", type=int, help="gtruda/mlp: most epochs (passes over the training rows) [default: 30].")
@click.option("--batch-size", type=int, help="gtruda/mlp: rows per batch [default: gtruda 2048, mlp 512].")
@era_boost_option
@click.option("--cv", type=int, default=0, show_default=True, help="Era CV folds (0: none).")
@click.option("--embargo", type=int, help="Eras dropped between training and test eras [default: from the target].")
@click.option("--cv-mode", type=click.Choice(["expanding", "blocked"]), default="expanding", show_default=True)
@click.option("--train-eras", help="Era range to train on, e.g. 0001:0400 [default: all].")
@click.option("--valid-eras", help="Era range held out for early stopping and a report.")
@click.option("--era-step", type=int, default=1, show_default=True,
              help="Train on every N-th era of the training range (4 against the overlap of 20-day targets); "
                   "embargoes still count store eras.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="lgbm/rf: gpu = LightGBM's OpenCL learner, cuda = a CUDA build (make lightgbm-cuda); xgb, gtruda, "
                   "mlp: gpu or cuda = CUDA; auto: a GPU if one answers (never a CPU OpenCL device such as PoCL), "
                   "else cpu. linear/logistic: the CPU.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--early-stopping", type=int, default=100, show_default=True,
              help="Rounds without improvement (networks: their patience parameter).")
@cluster_options
@click.option("--data-parallel", is_flag=True,
              help="With --workers/--scheduler: train each lgbm model across all the workers (LightGBM's Dask "
                   "interface; every round, no early stopping) instead of one target per worker.")
@ledger_option
@quiet_option
@json_option
def train(store_path, output, targets, feature_set, features, kind, params_spec, blocks, pca_frac, sub_model, meta,
          epochs, batch_size, era_boost, cv, embargo, cv_mode, train_eras, valid_eras, era_step, device, seed,
          early_stopping, workers, scheduler, scheduler_timeout, data_parallel, ledger, quiet, as_json):
    """Train models from a store: one per target (of kind --model), plus a rank ensemble.

    Early stopping watches the mean per-era numerai_corr of the held-out eras, not l2. With
    --cv, out-of-fold predictions and per-fold scores are saved in the model directory.
    Targets with identical values (`target` is `target_ender_20`) are trained once. Progress goes
    to stderr: on a terminal a bar of rounds (networks: epochs, and the current epoch's batches),
    else a line per model, per epoch and every 20 s (--quiet: none).

    With --workers N (a local Dask cluster) or --scheduler ADDRESS each target trains as one Dask
    task (as many at once as the workers have threads; --workers gives each one thread), reading the
    store by path (the model is the one a serial run makes); progress shows each model as it starts
    and its rounds when its target is done. Add --data-parallel to train each lgbm model across all
    the workers instead.

    \b
    Example:
      eraflow train store/ -o models/starter --target target --target 'target_*_20' --cv 4 --valid-eras 0575:
      eraflow train store/ -o models/boosted --era-boost proportion=0.5,steps=10 --cv 4
      eraflow train store/ -o models/v3x --model v3x --blocks 4 --meta simplex
      eraflow train store/ -o models/mlp --model mlp --epochs 20 --batch-size 8192 --valid-eras 0575: --device auto
      eraflow train /shared/store -o /shared/models/big --scheduler tcp://10.0.0.5:8786 --data-parallel
    """
    if workers is None and scheduler is None:  # before anything imports lightgbm; lightgbm.dask needs scikit-learn
        import_lightgbm_lean_for(kind)
    check_network_option("--epochs", epochs, kind)
    check_network_option("--batch-size", batch_size, kind)
    params = with_options(kind_params(kind, params_spec), blocks=blocks, pca_frac=pca_frac, sub_model=sub_model,
                          meta=meta, epochs=epochs, batch_size=batch_size)
    params = with_era_boost(kind, params, era_boost)
    config = TrainConfig(targets=targets or ("target",), feature_set=feature_set,
                         features=tuple(csv_list(features)) if features else None, kind=kind, params=params,
                         cv=cv, embargo=embargo, cv_mode=cv_mode, train_eras=train_eras, valid_eras=valid_eras,
                         device=device, seed=seed, early_stopping_rounds=early_stopping, era_step=era_step,
                         data_parallel=data_parallel)
    command = command_line()
    check_output_dir(output, "model", inputs=[store_path])
    store = open_store(store_path)
    with open_client(workers, scheduler, scheduler_timeout) as client:
        check_store_visible(client, store_path, store.fingerprint)
        with train_progress(quiet) as status:
            result = train_models(store, output, config, command, status=status, client=client)
    run = training_run(result, store, config, command)
    ledger_file = record_run(run, ledger)
    report = {"model_dir": str(result.model_dir), "kind": kind, "run_id": run.run_id, "ledger": str(ledger_file),
              "targets": result.targets, "device": result.device, "device_choice": result.device_choice.record(),
              "rounds": result.rounds, "cv": {t: r["overall"] for t, r in result.cv.items()}, "valid": result.valid,
              "ensemble": result.ensemble, "aliases": result.aliases, "era_step": era_step,
              "data_parallel": data_parallel,
              "seconds": round(result.seconds, 2)}
    if as_json:
        print_json(report)
        return
    click.echo(f"trained {kind} for {', '.join(result.targets)} on {result.device_choice.describe()} in "
               f"{result.seconds:.1f} s → {output} (run {run.run_id} in {ledger_file})")
    for alias, target in result.aliases.items():
        click.echo(f"  {alias} = {target} (identical in the store; trained once)")
    for label in ("cv", "valid"):
        scores = {**report[label], **({ENSEMBLE: result.ensemble[label]} if label in result.ensemble else {})}
        for target, s in scores.items():
            click.echo(f"  {label:5} {target:24} corr {s['mean']:+.4f}  std {s['std']:.4f}  "
                       f"sharpe {s['sharpe']:+.2f}  max dd {s['max_drawdown']:.4f}  ({s['eras']} eras)")
    if result.ensemble:
        click.echo(f"  {ENSEMBLE} = per-era rank mean of {', '.join(result.ensemble['targets'])}, "
                   f"scored on {result.ensemble['scored_on']}")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Predictions parquet file.")
@click.option("--eras", help="Era range to predict [default: all].")
@click.option("--neutralize", "proportion", type=float,
              help="Neutralize each column by this proportion (0 to 1) per era.")
@click.option("--feature-set", help="Features to neutralize against [default: the model's features].")
def predict(model_dir, store_path, output, eras, proportion, feature_set):
    """Predict every row of a store (or some eras) with a trained model.

    Writes `id`, `era` and one column per target model (plus `ensemble`), in batches over the
    memory-mapped store.

    \b
    Example:
      eraflow predict models/starter store/ -o preds.parquet --neutralize 0.5 --feature-set medium
    """
    check_output_file(output, "predictions", inputs=[model_dir, store_path])
    import_lightgbm_lean_for(read_meta(model_dir).get("kind", DEFAULT_KIND))
    table = predict_table(load_model(model_dir), open_store(store_path), eras, proportion, feature_set)
    write_predictions(output, table.ids, table.eras, table.columns)
    click.echo(f"wrote {output}: {len(table.ids):,} rows, {len(set(table.eras))} eras, "
               f"columns {', '.join(table.columns)}")
