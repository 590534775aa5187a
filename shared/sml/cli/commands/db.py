"""`sml db migrate`: apply pending schema migrations to the configured database."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="database schema: apply migrations", description="Database schema commands.")
    db_commands = parser.add_subparsers(title="db commands", dest="db_command", metavar="DB_COMMAND")
    db_commands.required = True
    migrate = db_commands.add_parser(
        "migrate",
        help="apply pending migrations from sql/ once, in order",
        description=(
            "Apply pending migrations from sql/ once, in order, and record them in schema_migrations. "
            "Refuses when an applied migration file was edited. On MySQL it holds a database lock while it runs "
            "(GET_LOCK), so it never interleaves with the deploy's migration step. The database is --database-url, else "
            "SML_DATABASE_URL, else the local stack's (.sml/stack.json), else sqlite:///.sml/sml.db."
        ),
    )
    migrate.add_argument("--database-url", help="SQLAlchemy URL, e.g. mysql+pymysql://root@127.0.0.1:3306/test")
    migrate.add_argument("--sql-dir", help="folder of migration files (default: the repository's sql/)")
    migrate.set_defaults(run=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sml.core.db import apply_migrations, database_engine_from_settings
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    engine = database_engine_from_settings(settings)
    try:
        applied = apply_migrations(engine, Path(args.sql_dir) if args.sql_dir else None)
    finally:
        engine.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    if applied:
        print(f"applied {len(applied)} migration(s) to {shown}: {', '.join(applied)}")
    else:
        print(f"{shown} is up to date")
    return 0
