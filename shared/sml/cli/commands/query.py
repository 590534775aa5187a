"""`sml query "SQL"`: a question over the event archive, answered by DuckDB here or Athena on AWS."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from sml.cli.commands.rebuild import archive_errors_named, archive_location, check_days, parse_day, warn_unconverted
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
            "only their objects). The engine is duckdb unless SML_ATHENA_WORKGROUP is set. Batches the writer landed that "
            "the conversion has not yet turned into Parquet are not in the answer (a warning counts them; `sml compact` converts them)."
        ),
    )
    parser.add_argument("sql", help='the query, e.g. "SELECT model_version, count(*) FROM predictions GROUP BY 1"')
    parser.add_argument("--since", type=parse_day, help="first day, YYYY-MM-DD")
    parser.add_argument("--until", type=parse_day, help="last day, YYYY-MM-DD")
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
    if args.since and args.until:
        check_days(args.since, args.until)
    engine = args.engine or ("athena" if settings.athena_workgroup else "duckdb")
    if engine == "athena":
        if not settings.athena_workgroup or not settings.athena_database:
            raise SmlError("--engine athena needs SML_ATHENA_WORKGROUP and SML_ATHENA_DATABASE (the stack's outputs)")
        if settings.archive_prefix is not None:
            warn_unconverted(aws_client("s3", settings), archive_location(settings), "this answer")
        target = AthenaTarget(settings.athena_workgroup, settings.athena_database)
        result = run_athena_query(aws_client("athena", settings), target, args.sql, since=args.since, until=args.until)
    else:
        s3, location = aws_client("s3", settings), archive_location(settings)
        warn_unconverted(s3, location, "this answer")
        with archive_errors_named(location):
            result = run_duckdb_query(s3, location, args.sql, since=args.since, until=args.until)
    return write_result(result, csv=args.csv, parquet=args.parquet)


def write_result(result, *, csv: Path | None, parquet: Path | None) -> int:  # noqa: ANN001 - a pyarrow.Table
    """Write ``result`` to ``csv`` or ``parquet``, or print it as a table (the first rows).

    The file is written beside the target and renamed onto it once complete, so a result the
    format cannot hold (a list or interval column) leaves an earlier file of that name as it was.

    :raises SmlError: the file cannot be written, naming the option and, for a column the format
        cannot hold, the column and its type.
    """
    if csv is not None or parquet is not None:
        import pyarrow as pa

        target, option, kind = (csv, "--csv", "CSV") if csv is not None else (parquet, "--parquet", "Parquet")
        write = _csv_writer() if csv is not None else _parquet_writer()
        partial = None
        try:
            handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
            os.close(handle)
            write(result, partial)
            os.chmod(partial, 0o666 & ~_umask())
            os.replace(partial, target)
        except OSError as exc:
            raise SmlError(f"{option} {target}: cannot write ({exc.strerror or exc})") from None
        except pa.ArrowException as exc:
            columns = ", ".join(f"column {name} ({column.type})" for name, column in zip(result.column_names, result.columns) if not _writes(write, name, column))
            raise SmlError(
                f"{option} {target}: {kind} cannot hold {columns or str(exc).splitlines()[0]}; "
                "turn such columns into text in the query (CAST(... AS VARCHAR)) or leave out the option to print the result"
            ) from None
        finally:
            if partial is not None and os.path.exists(partial):
                os.unlink(partial)
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


def _csv_writer():  # noqa: ANN202 - (pyarrow.Table, path or sink) -> None
    import pyarrow.csv

    return pyarrow.csv.write_csv


def _parquet_writer():  # noqa: ANN202 - (pyarrow.Table, path or sink) -> None
    import pyarrow.parquet

    return lambda table, where: pyarrow.parquet.write_table(table, where, compression="zstd")


def _writes(write, name: str, column) -> bool:  # noqa: ANN001 - a writer above and a pyarrow.ChunkedArray
    import pyarrow as pa

    try:
        write(pa.table({name: column}), pa.BufferOutputStream())
    except pa.ArrowException:
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
