"""`sml query "SQL"`: a question over the event archive, answered by DuckDB here or Athena on AWS."""

from __future__ import annotations

import argparse
from pathlib import Path

from sml.cli.commands.rebuild import archive_location, parse_day
from sml.core.errors import SmlError

SHOWN_ROWS = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="run SQL over the event archive (DuckDB here, Athena on AWS)",
        description=(
            "Run one SQL query over the archive's tables predictions, ground_truth and predict_refusals (the archive's "
            "columns: f_<feature>, p_<class>, model_version, ...; plus model and date), redelivered copies removed. "
            "--since/--until keep only those days (both included; Athena reads only their partitions, DuckDB downloads "
            "only their objects). The engine is duckdb unless SML_ATHENA_WORKGROUP is set."
        ),
    )
    parser.add_argument("sql", help='the query, e.g. "SELECT model_version, count(*) FROM predictions GROUP BY 1"')
    parser.add_argument("--since", type=lambda text: parse_day(text, "--since"), help="first day, YYYY-MM-DD")
    parser.add_argument("--until", type=lambda text: parse_day(text, "--until"), help="last day, YYYY-MM-DD")
    parser.add_argument("--engine", choices=("duckdb", "athena"), help="default: athena when SML_ATHENA_WORKGROUP is set, else duckdb")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", type=Path, metavar="FILE", help="write the result to FILE as CSV instead of printing it")
    output.add_argument("--parquet", type=Path, metavar="FILE", help="write the result to FILE as Parquet instead of printing it")
    parser.set_defaults(run=run_query)


def run_query(args: argparse.Namespace) -> int:
    from sml.archive.query import AthenaTarget, run_athena_query, run_duckdb_query
    from sml.core.aws import aws_client
    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    if args.since and args.until and args.until < args.since:
        raise SmlError(f"--until {args.until.isoformat()} is before --since {args.since.isoformat()}")
    engine = args.engine or ("athena" if settings.athena_workgroup else "duckdb")
    if engine == "athena":
        if not settings.athena_workgroup or not settings.athena_database:
            raise SmlError("--engine athena needs SML_ATHENA_WORKGROUP and SML_ATHENA_DATABASE (the stack's outputs)")
        target = AthenaTarget(settings.athena_workgroup, settings.athena_database)
        result = run_athena_query(aws_client("athena", settings), target, args.sql, since=args.since, until=args.until)
    else:
        result = run_duckdb_query(aws_client("s3", settings), archive_location(settings), args.sql, since=args.since, until=args.until)
    return write_result(result, csv=args.csv, parquet=args.parquet)


def write_result(result, *, csv: Path | None, parquet: Path | None) -> int:  # noqa: ANN001 - a pyarrow.Table
    """Write ``result`` to ``csv`` or ``parquet``, or print it as a table (the first rows)."""
    if csv is not None or parquet is not None:
        target = csv or parquet
        try:
            if csv is not None:
                import pyarrow.csv

                pyarrow.csv.write_csv(result, csv)
            else:
                import pyarrow.parquet

                pyarrow.parquet.write_table(result, parquet, compression="zstd")
        except OSError as exc:
            raise SmlError(f"--{'csv' if csv else 'parquet'} {target}: cannot write ({exc.strerror or exc})") from None
        print(f"{result.num_rows} rows written to {target}")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = 200
    table = Table()
    for name in result.column_names:
        table.add_column(name, overflow="fold")
    shown = result.slice(0, SHOWN_ROWS)
    for row in zip(*(column.to_pylist() for column in shown.columns)):
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)
    more = result.num_rows - SHOWN_ROWS
    console.print(f"{result.num_rows} rows" + (f" ({more} more not shown: write them with --csv or --parquet)" if more > 0 else ""), markup=False)
    return 0
