"""`sml promote VERSION | --best-by METRIC`: move the champion pointer to a registered version.

Before it moves the pointer it says which drift floors the version's training reference cannot
certify (:func:`sml.monitoring.job.certifiable_floors`): a warning, unless ``--strict`` makes it a
refusal. ``sml train`` prints the same check when it registers a version.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sml.core.errors import SmlError

if TYPE_CHECKING:
    from sml.lifecycle.manifest import ModelManifest

DEFAULT_WINDOW_ROWS = 1000


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option

    parser = subparsers.add_parser(
        "promote",
        help="make a registered version the champion",
        description=(
            "Make a registered version the champion by moving the SSM pointer /<app>/<name>/champion; "
            "nothing in S3 changes. The previous champion is remembered for `sml rollback`. First it warns "
            "where the version's training reference cannot certify NO_DRIFT at a drift floor (the deployment's "
            "SML_DRIFT_* settings with the model's drift config on top), for windows of --expected-window-rows "
            "rows and for unlimited ones, and prints how the version's features, classes and task differ from the champion's."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", help="the version to promote, as `sml models` lists it")
    target.add_argument(
        "--best-by",
        metavar="METRIC",
        help="promote the version best by METRIC: highest for scores (f1, roc_auc, accuracy, r2), lowest for losses (rmse, mae, log_loss, brier, ece)",
    )
    add_power_options(parser)
    add_model_option(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="do not promote (exit status 1) when the drift power check warns or the features, classes or task differ from the champion's",
    )
    parser.set_defaults(run=run_promote)


def add_power_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expected-window-rows",
        type=int,
        default=DEFAULT_WINDOW_ROWS,
        metavar="N",
        help="predictions a drift window typically holds, for the power check (default: %(default)s)",
    )


def check_window_rows(window_rows: int) -> None:
    """Refuse an impossible ``--expected-window-rows`` before a command does anything (train would register first)."""
    if window_rows < 1:
        raise SmlError(f"--expected-window-rows: must be at least 1, got {window_rows}")


def run_promote(args: argparse.Namespace) -> int:
    from sml.cli.commands.models import open_registry
    from sml.lifecycle.registration import check_against_champion

    check_window_rows(args.expected_window_rows)
    registry, _ = open_registry(args.model)
    previous = registry.find_champion_version()
    version = registry.best_version(args.best_by) if args.best_by else args.version
    manifest = registry.manifest(version)
    warnings = print_power_check(manifest, window_rows=args.expected_window_rows)
    differences = check_against_champion(registry, manifest, strict=False)
    if (warnings or differences) and args.strict:
        reasons = [f"{len(warnings)} drift power warning(s)"] * bool(warnings) + [f"{len(differences)} difference(s) from the champion"] * bool(differences)
        print(f"not promoted: {', '.join(reasons)} and --strict")
        return 1
    registry.promote(version)
    reason = f" (best {args.best_by}: {manifest.metrics[args.best_by]:.4f})" if args.best_by else ""
    if previous == version:
        print(f"{version} is already the champion of {registry.model_name}{reason}")
    else:
        print(f"champion of {registry.model_name}: {version}{reason}, was {previous or 'none'}")
    return 0


def print_power_check(manifest: ModelManifest, *, window_rows: int) -> list[str]:
    """Print the drift power check of ``manifest``'s version; returns its warnings (empty when none).

    The floors are those a drift run would use now: the deployment's settings (environment and
    ``.sml/stack.json``) with the model's drift config on top. A floor setting that does not fit
    the model is itself a warning.
    """
    from sml.core.settings import DriftSettings, SettingsError, load_settings, read_stack_file
    from sml.monitoring.job import DriftJobConfig, certifiable_floors

    check_window_rows(window_rows)
    try:
        config = DriftJobConfig.from_settings(load_settings(DriftSettings, stack=read_stack_file()))
        shifts = certifiable_floors(config, manifest, window_rows=window_rows)
    except (SmlError, SettingsError) as exc:
        # Promotion does not need the drift settings; a drift run would fail on them, so say it now.
        warnings = [f"the drift settings do not fit this version: {exc}"]
    else:
        warnings = [shift.warning() for shift in shifts if not shift.certifiable]
    for warning in warnings:
        print(f"warning: {warning}")
    if not warnings:
        print(
            f"drift power: all {len(shifts)} tests can certify NO_DRIFT at their floors with {window_rows:,}-row windows "
            f"(training reference: {manifest.reference.n_rows} rows)"
        )
    return warnings
