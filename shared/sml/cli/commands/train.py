"""`sml train`: train a model, track the run in W&B and register the version in S3."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option
    from sml.cli.commands.promote import add_power_options
    from sml.lifecycle.training import ESTIMATORS

    parser = subparsers.add_parser(
        "train",
        help="train a model, track it in W&B and register it in S3",
        description=(
            "Train a scikit-learn pipeline on the breast cancer data set that ships with scikit-learn, evaluate it on a "
            "held-out split, log the run to Weights & Biases (offline under SML_STATE_DIR/wandb unless WANDB_API_KEY is set) "
            "and register it as a new version in s3://SML_BUCKET/models/NAME/ (--model, default SML_MODEL_NAME). The new version is not promoted: "
            "run `sml promote VERSION` or `sml promote --best-by f1`."
        ),
    )
    parser.add_argument(
        "--estimator", choices=list(ESTIMATORS), default="logistic_regression", help="the classifier (default: %(default)s)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyper-parameter of the estimator, repeatable, e.g. --param C=0.5 or --param max_depth=4",
    )
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
    from sml.lifecycle.tracking import tracking_options
    from sml.lifecycle.training import TrainingConfig, parse_params, train_and_register

    from sml.monitoring.config import read_model_drift_config

    check_window_rows(args.expected_window_rows)
    # Read before training, so a broken file fails in a second; its features are checked once the model has them.
    drift_config = None if args.drift_config is None else read_model_drift_config(args.drift_config).for_manifest
    registry, settings = open_registry(args.model)
    config = TrainingConfig(
        model_name=settings.model_name,
        estimator=args.estimator,
        params=parse_params(args.estimator, args.param),
        test_size=args.test_size,
        seed=args.seed,
    )
    tracking = tracking_options(settings.state_dir)
    console = Console(stderr=True, log_path=False)
    with console.status(f"checking bucket {settings.bucket}") as status:
        registry.check_bucket()

        def show_step(step: str) -> None:
            status.update(step)
            console.log(step)

        manifest = train_and_register(
            config, registry=registry, tracking=tracking, work_dir=settings.state_dir, on_step=show_step, drift_config=drift_config
        )
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in manifest.metrics.items())
    print(f"registered {manifest.model_name} {manifest.version} ({manifest.estimator}): {metrics}")
    print(f"artifact s3://{registry.bucket}/{manifest.artifact_key} sha256 {manifest.sha256}")
    if manifest.wandb_run_path:
        print(f"W&B run ({tracking.mode}): {manifest.wandb_run_path}")
    if manifest.drift_config is not None:
        print(f"drift config {args.drift_config} stored in the manifest")
    print_power_check(manifest, window_rows=args.expected_window_rows)
    print(f"promote it with `sml promote {manifest.version} --model {manifest.model_name}` or `sml promote --best-by f1 --model {manifest.model_name}`")
    return 0
