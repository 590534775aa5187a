"""The `sml` command line: parses arguments and dispatches to one command module.

Each command lives in ``sml.cli.commands.<module>`` with ``register(subparsers)`` adding its parser
and ``set_defaults(run=...)``. Errors the user can fix (:class:`SmlError`, settings, event
validation) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command module -> one-line help; order is the order of `sml --help`
COMMANDS = {
    "up": "start the local stack (local AWS endpoint, Function URL, SQS poller) and keep it running",
    "demo": "run the whole story end to end on the local stack and print a summary",
    "db": "database schema: apply migrations",
    "train": "train a model, track it in W&B and register it in S3",
    "register": "register your own fitted model (joblib or pickle) with its training data",
    "models": "list registered model versions and the champion",
    "promote": "make a registered version the champion",
    "rollback": "make the previous champion the champion again",
    "predict": "send a prediction request to the Function URL",
    "dlq": "inspect or replay the dead-letter queue",
    "capture": "recover prediction events predict could not queue",
    "feedback": "send true labels (CSV or JSON Lines) as ground truth",
    "drift": "run the drift job now and print the verdict",
    "quality": "print the model quality verdict of the latest monitoring run",
    "rebuild": "restore the database tables from the event archive",
    "query": "run SQL over the event archive (DuckDB here, Athena on AWS)",
    "compact": "merge each day's small archive objects into large ones, dropping redelivered copies",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sml",
        description="serverless-ml: serverless scikit-learn inference with prediction capture and drift alerts.",
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if wanted == name:
            module = importlib.import_module(f"sml.cli.commands.{name}")
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from sml.core.errors import SmlError
    from sml.core.events import EventValidationError
    from sml.core.settings import SettingsError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (SmlError, SettingsError, EventValidationError) as exc:
        print(f"sml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = database_unreachable(exc)
        if message is None:
            raise
        print(f"sml {args.command}: error: {message}", file=sys.stderr)
        return 2


def database_unreachable(exc: BaseException) -> str | None:
    """The one-line message for a database that refused or dropped the connection, else ``None``.

    SQLAlchemy wraps the driver's refusal (pymysql's 2003 "Can't connect", SQLite's "unable to
    open database file") in ``sqlalchemy.exc.OperationalError``; any other error is not ours to
    word and goes up unchanged. SQLAlchemy is looked up in ``sys.modules`` only: a command that
    never imported it cannot have raised its errors, and the CLI's start stays free of it.
    """
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is None or not isinstance(exc, sqlalchemy_exc.OperationalError):
        return None
    cause = exc.orig if getattr(exc, "orig", None) is not None else exc
    return (
        f"cannot use the database: {cause}; check SML_DATABASE_URL (or the SML_DB_* settings) "
        "and that the database is running"
    )


if __name__ == "__main__":
    sys.exit(main())
