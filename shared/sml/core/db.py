"""The database: one engine factory, the table definitions the code uses, and the migration runner.

Works on MySQL/MariaDB (``mysql+pymysql://``) and SQLite. The schema itself lives in ``sql/`` as
ordered migration files; :data:`METADATA` mirrors it for queries, and a test keeps the two equal.

Example::

    engine = create_db_engine("sqlite:///.sml/sml.db")
    apply_migrations(engine)
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Engine, make_url

from sml.core.errors import SmlError

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<dialect>mysql|sqlite))?\.sql$")

METADATA = sa.MetaData()
_TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

SCHEMA_MIGRATIONS = sa.Table(
    "schema_migrations",
    METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("checksum", sa.CHAR(64), nullable=False),
    sa.Column("applied_at", sa.String(32), nullable=False),
)

# On MySQL the primary key is (prediction_id, predicted_at) and the table is partitioned by day of
# predicted_at (sql/0008, sml.core.retention); SQLite keeps (prediction_id). Ids stay unique because
# the writer looks them up before inserting.
PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    sa.Column("prediction_id", sa.CHAR(36), primary_key=True),
    sa.Column("schema_version", sa.SmallInteger, nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("predicted_at", _TIMESTAMP, nullable=False),
    sa.Column("prediction", sa.String(255), nullable=False),
    sa.Column("probabilities", sa.Text, nullable=True),
    sa.Column("features", _LONG_TEXT, nullable=False),
    sa.Column("stored_at", _TIMESTAMP, nullable=False),
)

# ``label`` holds the label as JSON text, encoded like ``predictions.prediction`` (``"malignant"``
# with its quotes, ``1`` for an integer class), so ``label = prediction`` is a correct prediction.
GROUND_TRUTH = sa.Table(
    "ground_truth",
    METADATA,
    sa.Column("prediction_id", sa.CHAR(36), primary_key=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("labelled_at", _TIMESTAMP, nullable=False),
    sa.Column("source", sa.String(128), nullable=True),
    sa.Column("stored_at", _TIMESTAMP, nullable=False),
)

# Values predict refused: one row per refusal event, field and reason (sql/0007_predict_refusals).
PREDICT_REFUSALS = sa.Table(
    "predict_refusals",
    METADATA,
    sa.Column("refusal_id", sa.CHAR(36), primary_key=True),
    sa.Column("field_name", sa.String(128), primary_key=True),
    sa.Column("reason", sa.String(32), primary_key=True),
    sa.Column("refused_count", sa.Integer, nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=True),
    sa.Column("refused_at", _TIMESTAMP, nullable=False),
    sa.Column("stored_at", _TIMESTAMP, nullable=False),
)

DRIFT_RUNS = sa.Table(
    "drift_runs",
    METADATA,
    sa.Column("run_id", sa.CHAR(36), primary_key=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("window_start", _TIMESTAMP, nullable=False),
    sa.Column("window_end", _TIMESTAMP, nullable=False),
    sa.Column("reference_kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("n_reference", sa.Integer, nullable=False),
    sa.Column("n_current", sa.Integer, nullable=False),
    sa.Column("features_tested", sa.Integer, nullable=False),
    sa.Column("features_drifted", sa.Integer, nullable=False),
    sa.Column("report_uri", sa.String(1024), nullable=True),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("created_at", _TIMESTAMP, nullable=False),
)

DRIFT_FEATURES = sa.Table(
    "drift_features",
    METADATA,
    sa.Column("run_id", sa.CHAR(36), sa.ForeignKey("drift_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("feature_name", sa.String(128), primary_key=True),
    sa.Column("test", sa.String(24), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("statistic", sa.Float, nullable=True),
    sa.Column("p_value", sa.Float, nullable=True),
    sa.Column("p_adjusted", sa.Float, nullable=True),
    sa.Column("effect_size", sa.Float, nullable=True),
    sa.Column("effect_floor", sa.Float, nullable=True),
    sa.Column("n_reference", sa.Integer, nullable=False),
    sa.Column("n_current", sa.Integer, nullable=False),
    sa.Column("verdict", sa.String(24), nullable=False),
)

DRIFT_FEATURE_BOUNDS = sa.Table(
    "drift_feature_bounds",
    METADATA,
    sa.Column("run_id", sa.CHAR(36), sa.ForeignKey("drift_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("feature_name", sa.String(128), primary_key=True),
    sa.Column("test", sa.String(24), primary_key=True),
    sa.Column("effect_upper", sa.Float, nullable=True),
    sa.Column("reason", sa.String(24), nullable=True),
)

DATA_QUALITY_CHECKS = sa.Table(
    "data_quality_checks",
    METADATA,
    sa.Column("run_id", sa.CHAR(36), sa.ForeignKey("drift_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("feature_name", sa.String(128), primary_key=True),
    sa.Column("check_name", sa.String(24), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("violation_count", sa.Integer, nullable=False),
    sa.Column("n_values", sa.Integer, nullable=False),
    sa.Column("violated", sa.Boolean, nullable=False),
)


QUALITY_RUNS = sa.Table(
    "quality_runs",
    METADATA,
    sa.Column("run_id", sa.CHAR(36), sa.ForeignKey("drift_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(512), nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("reference_value", sa.Float, nullable=True),
    sa.Column("tolerance", sa.Float, nullable=False),
    sa.Column("n_predictions", sa.Integer, nullable=False),
    sa.Column("n_labelled", sa.Integer, nullable=False),
    sa.Column("n_labels_outside_classes", sa.Integer, nullable=False),
    sa.Column("n_unmatched_labels", sa.Integer, nullable=False),
    sa.Column("n_estimated", sa.Integer, nullable=True),
    sa.Column("delay_p50_seconds", sa.Float, nullable=True),
    sa.Column("delay_p90_seconds", sa.Float, nullable=True),
    sa.Column("delay_p99_seconds", sa.Float, nullable=True),
    sa.Column("delay_max_seconds", sa.Float, nullable=True),
    sa.Column("reliability", sa.Text, nullable=False),
    sa.Column("expected_confusion", sa.Text, nullable=True),
    sa.Column("parameters", sa.Text, nullable=False),
)

# A day's window summaries (sml.monitoring.daily): per model, manifest version, UTC day and reference.
DRIFT_DAY_SUMMARIES = sa.Table(
    "drift_day_summaries",
    METADATA,
    sa.Column("model_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(128), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("reference_id", sa.CHAR(64), primary_key=True),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("summary", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    sa.Column("computed_at", _TIMESTAMP, nullable=False),
)

# The writer's count of the day a stored day summary was checked against (sml.monitoring.daily, sql/0011).
DRIFT_DAY_SUMMARY_COUNTS = sa.Table(
    "drift_day_summary_counts",
    METADATA,
    sa.Column("model_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(128), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("reference_id", sa.CHAR(64), primary_key=True),
    sa.Column("day_count", sa.BigInteger, nullable=False),
)

# Rows of predictions per model, version and UTC day of predicted_at, as the writer inserted them
# (sml.core.day_counts, sql/0010).
PREDICTION_DAY_COUNTS = sa.Table(
    "prediction_day_counts",
    METADATA,
    sa.Column("model_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(128), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
)

QUALITY_METRICS = sa.Table(
    "quality_metrics",
    METADATA,
    sa.Column("run_id", sa.CHAR(36), sa.ForeignKey("quality_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("class_label", sa.String(255), primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("ci_low", sa.Float, nullable=True),
    sa.Column("ci_high", sa.Float, nullable=True),
    sa.Column("interval_method", sa.String(24), nullable=True),
)


def to_db_timestamp(value: datetime) -> datetime:
    """Naive UTC, the form both databases store (``DATETIME(6)`` / SQLite text)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


# --------------------------------------------------------------------------------------------
# Engines


def create_db_engine(
    url: str | URL, *, pool_size: int = 1, echo: bool = False, password: Callable[[], str] | None = None
) -> Engine:
    """The one engine factory.

    ``pool_pre_ping`` replaces connections that died while a Lambda was frozen; ``pool_recycle``
    retires them before MySQL's or RDS Proxy's idle timeouts. SQLite gets WAL and a busy timeout
    so the writer and readers can share the file. Creating an engine opens no connection.

    :param password: called for every new MySQL connection, whose password it supplies (an IAM
        authentication token lives 15 minutes, so each connection needs a fresh one).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    if parsed.get_backend_name() not in ("mysql", "mariadb"):
        raise SmlError(f"database URL: unsupported backend {parsed.get_backend_name()!r} (use sqlite:// or mysql+pymysql://)")
    query = dict(parsed.query)
    query.setdefault("charset", "utf8mb4")
    engine = sa.create_engine(
        parsed.set(query=query),
        pool_pre_ping=True,
        pool_recycle=280,
        pool_size=pool_size,
        max_overflow=2,
        connect_args={"connect_timeout": 5, "local_infile": False},
        echo=echo,
    )

    @sa.event.listens_for(engine, "connect")
    def _session_settings(dbapi_connection: Any, _record: Any) -> None:
        ensure_session_settings(dbapi_connection)

    if password is not None:

        @sa.event.listens_for(engine, "do_connect")
        def _fresh_password(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
            cparams["password"] = password()

    return engine


# Strict mode turns silent truncation into errors the writer can narrow down; UTC keeps DATETIME(6)
# values what the events say. On AWS the DB parameter group sets both server-wide (infra/database.py).
REQUIRED_SQL_MODES = ("STRICT_ALL_TABLES", "NO_ENGINE_SUBSTITUTION")
UTC_TIME_ZONES = ("+00:00", "UTC")
SESSION_SETTINGS_SQL = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"


def ensure_session_settings(dbapi_connection: Any) -> bool:
    """Make a new MySQL connection strict and UTC, issuing ``SET SESSION`` only when the server is not.

    Behind RDS Proxy a ``SET`` of a session variable pins the client connection to one database
    connection for its whole life (AWS, "Avoiding pinning an RDS Proxy"), so the deployed database
    gets ``sql_mode`` and ``time_zone`` from its parameter group and this sees them already in
    effect: one ``SELECT`` of the two variables (a read, no session state change) and nothing
    else. A local MySQL/MariaDB with its defaults (non-strict or ``SYSTEM`` time zone) still gets
    the ``SET``, so the behaviour is the same everywhere.

    :param dbapi_connection: a PEP 249 connection (pymysql).
    :returns: whether the ``SET`` was needed.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT @@SESSION.sql_mode, @@SESSION.time_zone")
        sql_mode, time_zone = cursor.fetchone()
        if session_settings_in_effect(sql_mode, time_zone):
            return False
        cursor.execute(SESSION_SETTINGS_SQL)
        return True
    finally:
        cursor.close()


def session_settings_in_effect(sql_mode: str | None, time_zone: str | None) -> bool:
    """Whether ``sql_mode`` (comma-separated) holds every :data:`REQUIRED_SQL_MODES` and ``time_zone`` is UTC."""
    modes = {mode.strip().upper() for mode in (sql_mode or "").split(",")}
    return set(REQUIRED_SQL_MODES) <= modes and (time_zone or "") in UTC_TIME_ZONES


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, echo=echo)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def database_url_from_secret(secret: dict[str, Any], *, host: str | None, database: str) -> URL:
    """A MySQL URL from an RDS-generated Secrets Manager secret, with TLS against the system CAs.

    ``host`` overrides the secret's host (the RDS Proxy endpoint).
    """
    missing = [key for key in ("username", "password") if not secret.get(key)]
    if missing:
        raise SmlError(f"database secret: missing key(s) {', '.join(missing)}")
    if not (host or secret.get("host")):
        raise SmlError("database secret: no host in the secret and SML_DB_HOST is not set")
    ca_file = _system_ca_file()
    return URL.create(
        "mysql+pymysql",
        username=secret["username"],
        password=secret["password"],
        host=host or secret["host"],
        port=int(secret.get("port") or 3306),
        database=database,
        query={"charset": "utf8mb4", "ssl_ca": ca_file},
    )


def _system_ca_file() -> str | None:
    return ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile


def iam_database_url(*, host: str, user: str, database: str, port: int = 3306) -> URL:
    """A MySQL URL without a password, for IAM authentication (TLS against the system CAs).

    The password is the token of :func:`iam_auth_token`, given per connection through
    ``create_db_engine(password=...)``; pymysql sends it with ``mysql_clear_password`` over TLS.
    """
    return URL.create(
        "mysql+pymysql",
        username=user,
        host=host,
        port=port,
        database=database,
        query={"charset": "utf8mb4", "ssl_ca": _system_ca_file()},
    )


def iam_auth_token(rds_client: Any, *, host: str, user: str, port: int = 3306) -> Callable[[], str]:
    """A function returning a fresh IAM database authentication token (valid 15 minutes).

    ``generate_db_auth_token`` presigns locally with the caller's credentials (no API call), so it
    works inside a VPC without an endpoint; the role needs ``rds-db:connect`` on the user.
    """
    return lambda: rds_client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)


def database_engine_from_settings(settings: Any, client: Callable[[str], Any] | None = None, *, pool_size: int = 1) -> Engine:
    """The engine the settings describe, for every entry point (the functions and the command line):
    ``SML_DATABASE_URL`` (local), else IAM authentication as ``SML_DB_USER`` at ``SML_DB_HOST``
    (AWS, through RDS Proxy), else the secret ``SML_DB_SECRET_ARN``.

    :param client: builds a boto3 client for a service name (``rds`` or ``secretsmanager``);
        :func:`sml.core.aws.aws_client` with ``settings`` by default.
    :raises SmlError: the settings name no database, or ``SML_DB_USER`` without ``SML_DB_HOST``.
    """
    if client is None:
        from sml.core.aws import aws_client

        def client(service: str) -> Any:
            return aws_client(service, settings)

    if not (settings.database_url or settings.db_secret_arn or getattr(settings, "db_user", None)):
        named = " (SML_DB_HOST alone names no user)" if settings.db_host else ""
        raise SmlError(f"no database configured{named}: set SML_DATABASE_URL (local), or SML_DB_USER and SML_DB_HOST (IAM) or SML_DB_SECRET_ARN (AWS)")
    if not settings.database_url and getattr(settings, "db_user", None):
        if not settings.db_host:
            raise SmlError("SML_DB_USER is set but SML_DB_HOST is not: IAM authentication needs the proxy endpoint")
        url = iam_database_url(host=settings.db_host, user=settings.db_user, database=settings.db_name)
        token = iam_auth_token(client("rds"), host=settings.db_host, user=settings.db_user)
        return create_db_engine(url, pool_size=pool_size, password=token)
    secrets_client = client("secretsmanager") if settings.db_secret_arn and not settings.database_url else None
    return create_db_engine(resolve_database_url(settings, secrets_client), pool_size=pool_size)


def resolve_database_url(settings: Any, secrets_client: Any | None = None) -> str | URL:
    """The URL from ``SML_DATABASE_URL`` or, on AWS, from the secret named by ``SML_DB_SECRET_ARN``."""
    if settings.database_url:
        return settings.database_url
    if not settings.db_secret_arn:
        raise SmlError("no database configured: set SML_DATABASE_URL (local) or SML_DB_SECRET_ARN (AWS)")
    if secrets_client is None:
        raise SmlError("SML_DB_SECRET_ARN is set but no Secrets Manager client was given")
    response = secrets_client.get_secret_value(SecretId=settings.db_secret_arn)
    return database_url_from_secret(json.loads(response["SecretString"]), host=settings.db_host, database=settings.db_name)


def dialect_family(engine: Engine) -> str:
    """``mysql`` for MySQL and MariaDB, ``sqlite`` for SQLite."""
    return "sqlite" if engine.dialect.name == "sqlite" else "mysql"


# --------------------------------------------------------------------------------------------
# Migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def statements(self) -> list[str]:
        return split_sql_statements(self.path.read_text(encoding="utf-8"))

    @property
    def foreign_keys_off(self) -> bool:
        """Whether the file asks (a ``-- sml: foreign-keys-off`` line) to run with SQLite's foreign key
        enforcement off: what rebuilding a parent table needs, so dropping it does not cascade."""
        return any(line.strip() == FOREIGN_KEYS_OFF_MARK for line in self.path.read_text(encoding="utf-8").splitlines())


def default_sql_dir() -> Path:
    """``$SML_SQL_DIR`` (set in the Lambda images) or the repository's ``sql/`` folder."""
    configured = os.environ.get("SML_SQL_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "sql"


def split_sql_statements(text: str) -> list[str]:
    """Statements of a migration file: ``--`` comment lines dropped, split at a ``;`` ending a line."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    leftover = "\n".join(current).strip()
    if leftover:
        statements.append(leftover)
    return statements


def discover_migrations(sql_dir: Path, dialect: str) -> list[Migration]:
    """The migrations for ``dialect`` in version order; a dialect-specific file wins over a generic one."""
    if not sql_dir.is_dir():
        raise SmlError(f"migrations folder {sql_dir} does not exist (set SML_SQL_DIR)")
    by_version: dict[int, dict[str | None, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise SmlError(f"{path}: migration files are named NNNN_name.sql or NNNN_name.<mysql|sqlite>.sql")
        version = int(match["version"])
        if names.setdefault(version, match["name"]) != match["name"]:
            raise SmlError(f"{path}: version {version:04d} is already used by {names[version]!r}")
        by_version.setdefault(version, {})[match["dialect"]] = path
    migrations = []
    for version in sorted(by_version):
        variants = by_version[version]
        path = variants.get(dialect) or variants.get(None)
        if path is None:
            raise SmlError(f"migration {version:04d}_{names[version]} has no {dialect} or generic .sql file in {sql_dir}")
        checksum = hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
        migrations.append(Migration(version, names[version], path, checksum))
    return migrations


FOREIGN_KEYS_OFF_MARK = "-- sml: foreign-keys-off"

# The migration lock (MySQL GET_LOCK; lock names are server-wide, so the database name follows).
MIGRATION_LOCK = "sml.schema_migrations."
MIGRATION_LOCK_TIMEOUT_SECONDS = 120

# Files edited after release only to make them resumable (``CREATE TABLE IF NOT EXISTS``); a ledger
# row holding one of these earlier checksums is the same schema, so it is accepted and updated to
# the file's current checksum. File name -> sha256 of the earlier contents.
SUPERSEDED_CHECKSUMS: dict[str, frozenset[str]] = {
    "0001_predictions.mysql.sql": frozenset({"8316b182b05b9e571a6f4e70e81b8e87292b18d75dca3d79f9f747f50bb5c2b5"}),
    "0001_predictions.sqlite.sql": frozenset({"5585199ae94a2afd405e6a93520db6dea6c722da859b9f6c7c90b05587e8500e"}),
    "0002_drift.mysql.sql": frozenset({"059df8e954aa23ab88cabe7a0edc38f1bef56508b4baf5ce11a569d34a1cdda2"}),
    "0002_drift.sqlite.sql": frozenset({"bbbe15600c20538a25ef6fce7ff5748c473972ab68f3c739e669f5ed20ddcc6a"}),
}


def apply_migrations(
    engine: Engine,
    sql_dir: Path | None = None,
    *,
    lock_timeout_seconds: int = MIGRATION_LOCK_TIMEOUT_SECONDS,
    accept_newer: bool = False,
) -> list[str]:
    """Apply pending migrations once, in order; returns the names applied (empty when up to date).

    Everything runs on one connection. On MySQL/MariaDB that connection first takes the named lock
    :data:`MIGRATION_LOCK` + the database's name (``GET_LOCK``, released on return or when the session ends), so two
    runners (the deploy's migration step and an operator's ``sml db migrate``) never interleave;
    SQLite serialises writers on its own. MySQL commits each DDL statement on its own, so a
    migration that failed half-way is run again from its first statement: every statement must be
    safe to rerun (``IF NOT EXISTS``) or the file must hold a single statement.

    :param accept_newer: accept a ledger holding versions above the newest file (a database
        migrated by newer code): nothing is applied for them, :func:`migrations_newer_than_files`
        names them. What a deploy's rollback needs: CloudFormation runs the previous image's
        migration step against the schema the failed deploy already migrated.
    :raises SmlError: naming the file, when an applied migration was edited or removed since (an
        earlier checksum listed in :data:`SUPERSEDED_CHECKSUMS` is accepted); when the database holds
        a newer migration and not ``accept_newer``; when another runner held the lock for
        ``lock_timeout_seconds``.
    """
    migrations = discover_migrations(sql_dir or default_sql_dir(), dialect_family(engine))
    if not migrations or migrations[0].version != 0:
        raise SmlError("migration 0000 (the schema_migrations ledger) is missing")
    with engine.connect() as connection:
        locked = dialect_family(engine) == "mysql"
        if locked:
            _take_migration_lock(connection, lock_timeout_seconds)
        try:
            return _apply_on(connection, migrations, accept_newer=accept_newer)
        finally:
            if locked:
                _release_migration_lock(connection)


def _release_migration_lock(connection: sa.Connection) -> None:
    try:
        connection.rollback()
        connection.execute(sa.text("SELECT RELEASE_LOCK(CONCAT(:name, DATABASE()))"), {"name": MIGRATION_LOCK})
        connection.commit()
    except sa.exc.DBAPIError:
        # The connection is gone (the reason is already being raised): MySQL released the lock with
        # the session. Behind RDS Proxy, GET_LOCK pins this one connection, which is what we want.
        pass


def _take_migration_lock(connection: sa.Connection, timeout_seconds: int) -> None:
    got = connection.execute(
        sa.text("SELECT GET_LOCK(CONCAT(:name, DATABASE()), :timeout)"),
        {"name": MIGRATION_LOCK, "timeout": timeout_seconds},
    ).scalar()
    connection.commit()
    if got != 1:
        raise SmlError(
            f"another migration run holds the lock {MIGRATION_LOCK}<database> (waited {timeout_seconds} s); "
            "let it finish, then run the migrations again"
        )


def migrations_newer_than_files(engine: Engine, sql_dir: Path | None = None) -> list[str]:
    """The ledger's migrations above the newest file of ``sql_dir``, as ``NNNN_name`` (empty when none).

    Non-empty when newer code migrated this database: a rolled-back deploy, or an older checkout.
    """
    migrations = discover_migrations(sql_dir or default_sql_dir(), dialect_family(engine))
    newest = migrations[-1].version if migrations else -1
    if SCHEMA_MIGRATIONS.name not in sa.inspect(engine).get_table_names():
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(SCHEMA_MIGRATIONS).where(SCHEMA_MIGRATIONS.c.version > newest).order_by(SCHEMA_MIGRATIONS.c.version)
        )
        return [f"{row.version:04d}_{row.name}" for row in rows]


def _apply_on(connection: sa.Connection, migrations: list[Migration], *, accept_newer: bool) -> list[str]:
    ledger, *pending_candidates = migrations
    with connection.begin():
        for statement in ledger.statements:
            connection.execute(sa.text(statement))
        applied = {row.version: row for row in connection.execute(sa.select(SCHEMA_MIGRATIONS))}
    newest = migrations[-1].version
    newer = {version: row for version, row in applied.items() if version > newest}
    if newer and not accept_newer:
        names = ", ".join(f"{version:04d}_{row.name}" for version, row in sorted(newer.items()))
        raise SmlError(
            f"the database holds migrations newer than the files in sql/ ({names}): it was migrated by newer code; "
            "run that code's migrations, not these"
        )
    applied = {version: row for version, row in applied.items() if version <= newest}
    superseded = _check_applied_unchanged(migrations, applied)
    if superseded:
        with connection.begin():
            for migration in superseded:
                connection.execute(
                    SCHEMA_MIGRATIONS.update()
                    .where(SCHEMA_MIGRATIONS.c.version == migration.version)
                    .values(checksum=migration.checksum)
                )
    applied_names = []
    for migration in [ledger, *pending_candidates]:
        if migration.version in applied:
            continue
        if connection.dialect.name == "sqlite":
            if not _apply_sqlite(connection, migration, run_statements=migration is not ledger):
                continue  # another runner applied it since the ledger was read
        else:
            with connection.begin():
                if migration is not ledger:
                    for statement in migration.statements:
                        connection.execute(sa.text(statement))
                _record_applied(connection, migration)
        applied_names.append(f"{migration.version:04d}_{migration.name}")
    return applied_names


def _record_applied(connection: sa.Connection, migration: Migration) -> None:
    connection.execute(
        SCHEMA_MIGRATIONS.insert().values(
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    )


def _apply_sqlite(connection: sa.Connection, migration: Migration, *, run_statements: bool = True) -> bool:
    """Run ``migration`` on SQLite in one explicit transaction that holds the write lock from its
    start (``BEGIN IMMEDIATE``), and record it; ``False`` (nothing done) when the ledger already
    holds it: another runner (``sml up`` and ``sml db migrate`` at once, say) applied it after this
    one read the ledger, and running it again would end on the ledger's unique version.

    The statements, DDL included (which the sqlite3 module would otherwise run outside any
    transaction), run between ``BEGIN`` and ``COMMIT``. A file marked ``-- sml: foreign-keys-off``
    (:attr:`Migration.foreign_keys_off`) runs as SQLite prescribes for schema changes ALTER TABLE
    cannot make (https://www.sqlite.org/lang_altertable.html, section 7): ``PRAGMA foreign_keys``
    is a no-op inside a transaction, so it is switched off before and on again after, and
    ``PRAGMA foreign_key_check`` must find no violation before the commit.

    :raises SmlError: naming the file, when a foreign key would be left dangling (nothing is changed).
    """
    if migration.foreign_keys_off:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            if connection.execute(sa.select(SCHEMA_MIGRATIONS.c.version).where(SCHEMA_MIGRATIONS.c.version == migration.version)).first():
                return False
            if run_statements:
                for statement in migration.statements:
                    connection.execute(sa.text(statement))
            if migration.foreign_keys_off:
                dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if dangling:
                    raise SmlError(f"{migration.path.name}: it would leave foreign keys dangling ({dangling[:5]}); nothing was changed")
            _record_applied(connection, migration)
            return True
    finally:
        if migration.foreign_keys_off:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _check_applied_unchanged(migrations: list[Migration], applied: dict[int, Any]) -> list[Migration]:
    """Refuse edited or removed migrations; return those whose ledger row holds a superseded checksum."""
    known = {migration.version: migration for migration in migrations}
    superseded = []
    for version, row in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise SmlError(f"migration {version:04d}_{row.name} was applied but its file is gone from sql/; restore it")
        if migration.checksum == row.checksum:
            continue
        if row.checksum in SUPERSEDED_CHECKSUMS.get(migration.path.name, frozenset()):
            superseded.append(migration)
            continue
        raise SmlError(
            f"{migration.path}: edited after it was applied (applied sha256 {row.checksum[:12]}…, "
            f"file now {migration.checksum[:12]}…); restore it and put the change in a new migration"
        )
    return superseded


# --------------------------------------------------------------------------------------------
# Database users of the deployed functions (MySQL only; the migration step keeps them in step)

# Each function's own user and the privileges it needs, per table; a name with ``*`` covers every
# table it matches when the grants are applied (drift's tables grow with its migrations). The
# writer's MySQL insert is ``INSERT ... ON DUPLICATE KEY UPDATE``, hence UPDATE.
FUNCTION_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "writer": {
        "predictions": ("SELECT", "INSERT", "UPDATE"),
        "ground_truth": ("SELECT", "INSERT", "UPDATE"),
        "predict_refusals": ("SELECT", "INSERT", "UPDATE"),
        "prediction_day_counts": ("SELECT", "INSERT", "UPDATE"),
    },
    "drift": {
        "predictions": ("SELECT",),
        "prediction_day_counts": ("SELECT",),
        "ground_truth": ("SELECT",),
        "predict_refusals": ("SELECT",),
        "drift_*": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "quality_*": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "data_quality_checks": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    },
}


@dataclass(frozen=True)
class DatabaseUser:
    """A function's login: ``function`` is a key of :data:`FUNCTION_GRANTS`."""

    function: str
    username: str
    password: str


def apply_function_users(engine: Engine, users: list[DatabaseUser], *, host: str = "%") -> dict[str, list[str]]:
    """Create (or update the password of) each function's user and grant it :data:`FUNCTION_GRANTS`.

    Idempotent: ``CREATE USER IF NOT EXISTS``, then ``ALTER USER`` to the given password (so a
    rotated secret takes effect on the next run), then the grants on the tables that exist now.
    Run it after :func:`apply_migrations`, with a user allowed to grant (the RDS master user).

    :returns: function -> the tables it was granted on.
    :raises SmlError: on SQLite, or for a function without grants.
    """
    if dialect_family(engine) != "mysql":
        raise SmlError("database users exist on MySQL only")
    granted: dict[str, list[str]] = {}
    with engine.begin() as connection:
        tables = sorted(sa.inspect(connection).get_table_names())
        quote = engine.dialect.identifier_preparer.quote
        for user in users:
            grants = FUNCTION_GRANTS.get(user.function)
            if grants is None:
                raise SmlError(f"no grants are defined for function {user.function!r}")
            account = {"user": user.username, "host": host, "password": user.password}
            connection.execute(sa.text("CREATE USER IF NOT EXISTS :user@:host IDENTIFIED BY :password"), account)
            connection.execute(sa.text("ALTER USER :user@:host IDENTIFIED BY :password"), account)
            granted[user.function] = []
            for pattern, privileges in grants.items():
                for table in [name for name in tables if fnmatch.fnmatchcase(name, pattern)]:
                    connection.execute(
                        sa.text(f"GRANT {', '.join(privileges)} ON {quote(table)} TO :user@:host"),
                        {"user": user.username, "host": host},
                    )
                    granted[user.function].append(table)
    return granted
