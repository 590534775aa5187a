"""`sml models`: list registered versions with their metrics and mark the champion.

Also home of :func:`open_registry`, which every model command uses to reach the registry.
"""

from __future__ import annotations

import argparse

from sml.lifecycle.registry import ModelRegistry
from sml.core.settings import LocalSettings

SHOWN_METRICS = ("accuracy", "f1", "roc_auc")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list registered model versions and the champion",
        description=(
            "List the registered versions of SML_MODEL_NAME in s3://SML_BUCKET/models/<name>/, oldest first, "
            "with held-out metrics; the champion (SSM /<app>/<name>/champion) is marked with *."
        ),
    )
    parser.set_defaults(run=run_models)


def open_registry() -> tuple[ModelRegistry, LocalSettings]:
    """The registry named by the settings (environment, then ``.sml/stack.json``), with its settings."""
    from sml.core.aws import aws_client
    from sml.core.settings import load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    registry = ModelRegistry(
        aws_client("s3", settings),
        aws_client("ssm", settings),
        bucket=settings.bucket,
        app_name=settings.app_name,
        model_name=settings.model_name,
    )
    return registry, settings


def run_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry, _ = open_registry()
    manifests = registry.list_versions()
    console = Console()
    if not console.is_terminal:
        # Piped output is for reading whole lines (grep, logs), not for an 80-column screen.
        console.width = 160
    if not manifests:
        console.print(
            f"no versions of {registry.model_name!r} registered in s3://{registry.bucket}/{registry.prefix}; train one with `sml train`"
        )
        return 0
    champion = registry.find_champion_version()
    table = Table(title=f"{registry.model_name} in s3://{registry.bucket}/{registry.prefix}")
    table.add_column("", justify="center")
    table.add_column("version", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("estimator", no_wrap=True)
    for metric in SHOWN_METRICS:
        table.add_column(metric, justify="right")
    for manifest in manifests:
        table.add_row(
            "*" if manifest.version == champion else "",
            manifest.version,
            manifest.created_at,
            manifest.estimator,
            *(f"{manifest.metrics[metric]:.4f}" if metric in manifest.metrics else "-" for metric in SHOWN_METRICS),
        )
    console.print(table)
    console.print(f"champion: {champion}" if champion else "no champion yet: `sml promote VERSION` or `sml promote --best-by f1`")
    return 0
