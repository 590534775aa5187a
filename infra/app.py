"""Entry point of the CDK app: ``cdk.json`` runs ``python -m infra.app``.

:func:`build_app` is what tests and plain-Python synthesis call; it needs no AWS credentials and
no CDK CLI. cdk-nag's AwsSolutions checks run on every synthesis.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import aws_cdk as cdk

from infra.config import ContextError, config_from_context
from infra.nag import add_nag_checks
from infra.stack import ServerlessMlStack

STACK_ID = "ServerlessMl"


def build_app(context: Mapping[str, object] | None = None, outdir: str | None = None) -> cdk.App:
    """Build (but do not synthesize) the app.

    :param context: CDK context values (see infra/config.py); ``None`` reads what the CDK CLI
        passes (``cdk.json`` and ``-c key=value``).
    :param outdir: cloud assembly folder; ``None`` lets CDK choose (the CLI's ``cdk.out``).
    :returns: the app; call ``.synth()`` on it.
    :raises infra.config.ContextError: when a context value cannot be deployed.
    """
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    config = config_from_context(app.node.try_get_context)
    ServerlessMlStack(app, STACK_ID, config=config)
    add_nag_checks(app)
    return app


def main() -> int:
    """Synthesize into ``$CDK_OUTDIR`` (set by the CLI) or ``cdk.out``; a bad context value exits 2 with one line."""
    try:
        app = build_app(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"))
    except ContextError as exc:
        print(f"infra: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
