"""`sml register ARTIFACT --reference FILE --target COLUMN`: register the user's own fitted model."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from sml.core.errors import SmlError


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option
    from sml.cli.commands.promote import add_power_options
    from sml.lifecycle.manifest import TASKS

    parser = subparsers.add_parser(
        "register",
        help="register your own fitted model (joblib or pickle) with its training data",
        description=(
            "Register a fitted estimator with predict() (a scikit-learn estimator or pipeline, or one with scikit-learn's API) "
            "as a new version of the model in s3://SML_BUCKET/models/NAME/. The feature schema, the drift reference, the task, "
            "held-out metrics and the label-free estimator are derived from the data; the model must predict every reference "
            "and held-out row the way predict will call it, or nothing is registered. A pickle runs code when loaded: register "
            "only files you trust. The new version is not promoted."
        ),
    )
    parser.add_argument("artifact", type=Path, nargs="?", metavar="ARTIFACT", help="the fitted model, saved with joblib.dump or pickle")
    parser.add_argument(
        "--from-wandb",
        metavar="ENTITY/PROJECT/NAME:ALIAS",
        help=(
            "instead of ARTIFACT, the W&B model artifact holding one .joblib/.pkl file (needs WANDB_API_KEY); the manifest "
            "records the artifact version and its run, and the registered version is added to the artifact's aliases"
        ),
    )
    parser.add_argument("--reference", type=Path, required=True, metavar="FILE", help="the training data (.csv, .parquet or .jsonl), with the target column")
    parser.add_argument("--target", required=True, metavar="COLUMN", help="the target column of the data files")
    held_out = parser.add_mutually_exclusive_group()
    held_out.add_argument("--test", type=Path, metavar="FILE", help="held-out rows for the metrics and the label-free estimator, same columns")
    held_out.add_argument(
        "--test-size", type=float, metavar="F", help="instead of --test, hold out this fraction of the reference rows (only if the model was not fitted on them)"
    )
    parser.add_argument("--task", choices=TASKS, help="binary, multiclass or regression (default: inferred from the model and the target, and printed)")
    parser.add_argument("--positive-class", metavar="VALUE", help="a binary model's positive class (default: the second of its classes)")
    parser.add_argument(
        "--drift-config", type=Path, metavar="FILE", help="the model's own drift floors and thresholds (.toml or .json), checked and stored in the manifest"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed for --test-size and the reference sample (default: %(default)s)")
    add_model_option(parser)
    parser.add_argument(
        "--strict", action="store_true", help="refuse (exit 2) when the features, classes or task differ from the champion's"
    )
    add_power_options(parser)
    parser.set_defaults(run=run_register)


def run_register(args: argparse.Namespace) -> int:
    from sml.cli.commands.models import open_registry
    from sml.cli.commands.promote import check_window_rows, print_power_check
    from sml.lifecycle.datafiles import load_estimator, read_table, split_target
    from sml.lifecycle.registration import check_against_champion, prepare_version, upload_version

    from sml.monitoring.config import read_model_drift_config

    check_window_rows(args.expected_window_rows)
    if (args.artifact is None) == (args.from_wandb is None):
        raise SmlError("give ARTIFACT (a joblib or pickle file) or --from-wandb ENTITY/PROJECT/NAME:ALIAS, not both")
    drift_config = None if args.drift_config is None else read_model_drift_config(args.drift_config).for_manifest
    registry, settings = open_registry(args.model)
    source = None
    if args.from_wandb is not None:
        from sml.lifecycle.wandb_models import fetch_wandb_model

        settings.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.state_dir, prefix="wandb-") as folder:
            source = fetch_wandb_model(args.from_wandb, Path(folder))
            print(f"downloaded {source.artifact} (logged by run {source.run_path or 'unknown'})")
            model = load_estimator(source.path)
        artifact_path = source.path
    else:
        artifact_path = args.artifact
        model = load_estimator(artifact_path)
    reference, y_reference = split_target(read_table(args.reference, "--reference"), args.target, args.reference, "--reference")
    test = y_test = None
    if args.test is not None:
        test, y_test = split_target(read_table(args.test, "--test"), args.target, args.test, "--test")
    registry.check_bucket()
    prepared = prepare_version(
        model,
        reference,
        _as_classes_type(model, y_reference),
        X_test=test,
        y_test=None if y_test is None else _as_classes_type(model, y_test),
        test_size=args.test_size,
        task=args.task,
        positive_class=args.positive_class,
        model_name=registry.model_name,
        target_name=args.target,
        reference_name=f"--reference {args.reference}",
        test_name=f"--test {args.test}" if args.test is not None else "held-out rows",
        seed=args.seed,
        dataset=str(args.reference),
        drift_config=drift_config,
        extra={"artifact_file": artifact_path.name, **({"wandb_artifact": source.artifact} if source is not None else {})},
    )
    if source is not None:
        prepared = replace(prepared, manifest=replace(prepared.manifest, wandb_run_path=source.run_path))
    for note in prepared.notes:
        print(note)
    check_against_champion(registry, prepared.manifest, strict=args.strict)
    manifest = upload_version(registry, prepared.model, prepared.manifest, work_dir=settings.state_dir)
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in manifest.metrics.items()) or "no held-out metrics"
    print(f"registered {manifest.model_name} {manifest.version} ({manifest.estimator}, {manifest.task}): {metrics}")
    print(f"artifact s3://{registry.bucket}/{manifest.artifact_key} sha256 {manifest.sha256}")
    if source is not None:
        from sml.lifecycle.wandb_models import tag_registered_version

        try:
            tag_registered_version(source, manifest.version)
            print(f"W&B artifact {source.artifact} has alias {manifest.version}")
        except SmlError as exc:
            print(f"warning: {exc}; the version is registered")
    print_power_check(manifest, window_rows=args.expected_window_rows)
    print(f"promote it with `sml promote {manifest.version} --model {manifest.model_name}`")
    return 0


def _as_classes_type(model: object, target: object) -> object:
    """A file's target column in the type of the model's classes when they are strings: a file has
    no types for ``0`` versus ``"0"``, the model's classes decide (other mismatches are refused)."""
    classes = getattr(model, "classes_", None)
    if classes is not None and len(classes) and all(isinstance(label, str) for label in classes.tolist()):
        return target.map(lambda value: value if value is None or value != value else str(value))  # type: ignore[attr-defined]
    return target
