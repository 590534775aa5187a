"""`sml promote VERSION | --best-by METRIC`: move the champion pointer to a registered version."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="make a registered version the champion",
        description=(
            "Make a registered version the champion by moving the SSM pointer /<app>/<name>/champion; "
            "nothing in S3 changes. The previous champion is remembered for `sml rollback`."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", help="the version to promote, as `sml models` lists it")
    target.add_argument("--best-by", metavar="METRIC", help="promote the version with the highest METRIC, e.g. f1, roc_auc, accuracy")
    parser.set_defaults(run=run_promote)


def run_promote(args: argparse.Namespace) -> int:
    from sml.cli.commands.models import open_registry

    registry, _ = open_registry()
    previous = registry.find_champion_version()
    if args.best_by:
        version = registry.promote_best(args.best_by)
        metric = registry.manifest(version).metrics[args.best_by]
        reason = f" (highest {args.best_by}: {metric:.4f})"
    else:
        version = args.version
        registry.promote(version)
        reason = ""
    if previous == version:
        print(f"{version} is already the champion of {registry.model_name}{reason}")
    else:
        print(f"champion of {registry.model_name}: {version}{reason}, was {previous or 'none'}")
    return 0
