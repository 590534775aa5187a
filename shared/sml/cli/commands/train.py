"""`sml train`: train a model, track the run in W&B and register the version in S3."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option
    from sml.cli.commands.promote import add_power_options
    from sml.lifecycle.manifest import TASKS
    from sml.lifecycle.training import ESTIMATORS, REGRESSORS

    parser = subparsers.add_parser(
        "train",
        help="train a model, track it in W&B and register it in S3",
        description=(
            "Train a scikit-learn pipeline (imputation and encoding per column, then the estimator) on the breast cancer data "
            "set that ships with scikit-learn, or on your own data with --data FILE --target COLUMN, evaluate it on a held-out "
            "split, log the run to Weights & Biases (offline under SML_STATE_DIR/wandb unless WANDB_API_KEY is set) and register "
            "it as a new version in s3://SML_BUCKET/models/NAME/ (--model, default SML_MODEL_NAME). The new version is not "
            "promoted: run `sml promote VERSION` or `sml promote --best-by METRIC`."
        ),
    )
    parser.add_argument(
        "--estimator",
        choices=sorted({*ESTIMATORS, *REGRESSORS}),
        help=(
            f"classifiers: {', '.join(ESTIMATORS)} (default logistic_regression); regressors: {', '.join(REGRESSORS)} (default ridge)"
        ),
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyper-parameter of the estimator, repeatable, e.g. --param C=0.5 or --param max_depth=4",
    )
    parser.add_argument("--data", type=Path, metavar="FILE", help="train on this file (.csv, .parquet or .jsonl) instead of the bundled data set")
    parser.add_argument("--target", metavar="COLUMN", help="the target column of --data")
    parser.add_argument("--task", choices=TASKS, help="with --data: binary, multiclass or regression (default: inferred from the target, and printed)")
    parser.add_argument("--test-size", type=float, default=0.25, help="fraction of rows held out for metrics (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the split and the estimator (default: %(default)s)")
    parser.add_argument(
        "--drift-config",
        type=Path,
        metavar="FILE",
        help=(
            "the model's own drift floors and thresholds (.toml or .json; see sml.monitoring.config), checked against the "
            "model's features and stored in its manifest; its keys take precedence over the deployment's SML_DRIFT_*/SML_DQ_* settings"
        ),
    )
    add_power_options(parser)
    add_model_option(parser)
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sml.cli.commands.models import open_registry
    from sml.cli.commands.promote import check_window_rows, print_power_check
    from sml.core.errors import SmlError
    from sml.lifecycle.tracking import tracking_options
    from sml.lifecycle.training import DEFAULT_ESTIMATOR, TrainingConfig, parse_params, target_task, track_and_register, train_and_register

    from sml.monitoring.config import read_model_drift_config

    check_window_rows(args.expected_window_rows)
    if (args.data is None) != (args.target is None):
        raise SmlError("--data and --target go together: --data FILE --target COLUMN")
    if args.task is not None and args.data is None:
        raise SmlError("--task: the bundled data set is binary; give --task with --data FILE --target COLUMN")
    # Read before training, so a broken file fails in a second; its features are checked once the model has them.
    drift_config = None if args.drift_config is None else read_model_drift_config(args.drift_config).for_manifest
    registry, settings = open_registry(args.model)
    features = target = None
    task = "binary"
    if args.data is not None:
        from sml.lifecycle.datafiles import read_table, split_target

        features, target = split_target(read_table(args.data, "--data"), args.target, args.data, "--data")
        task = target_task(target, args.task)
        print(f"task: {task}{'' if args.task else ' (inferred from the target; --task to set it)'}")
    estimator = args.estimator or DEFAULT_ESTIMATOR[task]
    config = TrainingConfig(
        model_name=registry.model_name,
        estimator=estimator,
        params=parse_params(estimator, args.param, task),
        test_size=args.test_size,
        seed=args.seed,
        task=task,
    )
    tracking = tracking_options(settings.state_dir)
    console = Console(stderr=True, log_path=False)
    with console.status(f"checking bucket {settings.bucket}") as status:
        registry.check_bucket()

        def show_step(step: str) -> None:
            status.update(step)
            console.log(step)

        if args.data is None:
            manifest = train_and_register(
                config, registry=registry, tracking=tracking, work_dir=settings.state_dir, on_step=show_step, drift_config=drift_config
            )
        else:
            from sml.lifecycle.training import train_on_data

            show_step(f"fitting {estimator} on {args.data}")
            prepared = train_on_data(config, features, target, source=str(args.data), target_name=args.target, drift_config=drift_config)
            for note in prepared.notes:
                print(note)
            manifest = track_and_register(
                prepared.model, prepared.manifest, config, registry=registry, tracking=tracking, work_dir=settings.state_dir, on_step=show_step
            )
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in manifest.metrics.items())
    print(f"registered {manifest.model_name} {manifest.version} ({manifest.estimator}, {manifest.task}): {metrics}")
    print(f"artifact s3://{registry.bucket}/{manifest.artifact_key} sha256 {manifest.sha256}")
    if manifest.wandb_run_path:
        print(f"W&B run ({tracking.mode}): {manifest.wandb_run_path}")
    if manifest.drift_config is not None:
        print(f"drift config {args.drift_config} stored in the manifest")
    print_power_check(manifest, window_rows=args.expected_window_rows)
    print(f"promote it with `sml promote {manifest.version} --model {manifest.model_name}` or `sml promote --best-by METRIC --model {manifest.model_name}`")
    return 0
