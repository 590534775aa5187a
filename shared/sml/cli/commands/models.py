"""`sml models`: list registered versions with their metrics and mark the champion.

Also home of :func:`open_registry`, which every model command uses to reach the registry.
"""

from __future__ import annotations

import argparse
from typing import TypeVar

from sml.core.errors import SmlError
from sml.core.settings import LocalSettings
from sml.lifecycle.registry import ModelRegistry, registry_for

S = TypeVar("S")

# The held-out metrics `sml models` shows, per task.
SHOWN_METRICS = {"binary": ("accuracy", "f1", "roc_auc"), "multiclass": ("accuracy", "f1_macro", "roc_auc"), "regression": ("mae", "rmse", "r2")}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list registered model versions and the champion",
        description=(
            "List the registered versions of the model (--model, default SML_MODEL_NAME) in s3://SML_BUCKET/models/<name>/, "
            "oldest first, with their task and held-out metrics; the champion (SSM /<app>/<name>/champion) is marked with *."
        ),
    )
    add_model_option(parser)
    parser.set_defaults(run=run_models)


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model NAME``: the model a command acts on, instead of ``SML_MODEL_NAME``."""
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="the model to act on (default: SML_MODEL_NAME, else the stack's, else breast-cancer)",
    )


def load_model_settings(cls: type[S], model: str | None) -> S:
    """Settings of ``cls`` (environment, then ``.sml/stack.json``) with ``--model`` in place of ``SML_MODEL_NAME``.

    Raises:
        SmlError: ``model`` is not a valid model name (names ``--model``).
        SettingsError: any other setting does not validate.
    """
    from sml.core import settings as core

    try:
        return core.load_model_settings(cls, model)
    except core.SettingsError as exc:
        if model is not None and exc.variable == "SML_MODEL_NAME":
            raise SmlError(f"--model: {model!r} is not a model name ({exc.problem})") from None
        raise


def open_registry(model: str | None = None) -> tuple[ModelRegistry, LocalSettings]:
    """The registry of ``model`` (default ``SML_MODEL_NAME``) named by the settings, with its settings."""
    settings = load_model_settings(LocalSettings, model)
    return registry_for(settings), settings


def run_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry, _ = open_registry(args.model)
    manifests = registry.list_versions()
    console = Console()
    if not console.is_terminal:
        # Piped output is for reading whole lines (grep, logs), not for an 80-column screen.
        console.width = 160
    if not manifests:
        console.print(
            f"no versions of {registry.model_name!r} registered in s3://{registry.bucket}/{registry.prefix}; train one with `sml train` or register yours with `sml register`"
        )
        return 0
    champion = registry.find_champion_version()
    shown = list(dict.fromkeys(metric for manifest in manifests for metric in SHOWN_METRICS[manifest.task or "binary"]))
    table = Table(title=f"{registry.model_name} in s3://{registry.bucket}/{registry.prefix}")
    table.add_column("", justify="center")
    table.add_column("version", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("estimator", no_wrap=True)
    table.add_column("task", no_wrap=True)
    for metric in shown:
        table.add_column(metric, justify="right")
    for manifest in manifests:
        table.add_row(
            "*" if manifest.version == champion else "",
            manifest.version,
            manifest.created_at,
            manifest.estimator,
            manifest.task or "",
            *(f"{manifest.metrics[metric]:.4f}" if metric in manifest.metrics else "-" for metric in shown),
        )
    console.print(table)
    console.print(f"champion: {champion}" if champion else "no champion yet: `sml promote VERSION` or `sml promote --best-by f1`")
    return 0
