"""`sml rollback`: make the previous champion the champion again."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from sml.cli.commands.models import add_model_option

    parser = subparsers.add_parser(
        "rollback",
        help="make the previous champion the champion again",
        description=(
            "Point /<app>/<name>/champion back at the champion before the current one; repeat to go further back. Only the pointer moves."
        ),
    )
    add_model_option(parser)
    parser.set_defaults(run=run_rollback)


def run_rollback(args: argparse.Namespace) -> int:
    from sml.cli.commands.models import open_registry

    registry, _ = open_registry(args.model)
    current = registry.champion_version()
    previous = registry.rollback()
    print(f"champion of {registry.model_name}: {previous}, was {current}")
    return 0
