"""Migrations on SQLite and MariaDB: applied once, in order; edits refused; schema matches the code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from sml.core.db import (
    METADATA,
    apply_migrations,
    create_db_engine,
    default_sql_dir,
    dialect_family,
    discover_migrations,
    migrations_newer_than_files,
)
from sml.core.errors import SmlError


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), target)
    return target


def test_applies_every_file_once_in_order(db_url: str) -> None:
    engine = create_db_engine(db_url)
    first = apply_migrations(engine)
    second = apply_migrations(engine)
    versions = [name.split("_")[0] for name in first]
    assert versions == sorted(versions) and versions[0] == "0000" and len(first) >= 3
    assert second == []
    with engine.connect() as connection:
        recorded = connection.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
    assert recorded == [int(v) for v in versions]
    engine.dispose()


def test_tables_match_what_the_code_reads_and_writes(db_url: str) -> None:
    engine = create_db_engine(db_url)
    apply_migrations(engine)
    inspector = sa.inspect(engine)
    for table in METADATA.sorted_tables:
        columns = {column["name"]: column for column in inspector.get_columns(table.name)}
        assert set(columns) == {column.name for column in table.columns}, table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, f"{table.name}.{column.name}"
        primary_key = inspector.get_pk_constraint(table.name)["constrained_columns"]
        expected = [column.name for column in table.primary_key.columns]
        if table.name == "predictions" and dialect_family(engine) == "mysql":
            expected.append("predicted_at")  # partitioned by day of predicted_at (sql/0008)
        assert primary_key == expected, table.name
    indexes = {index["name"]: index["column_names"] for index in inspector.get_indexes("predictions")}
    assert indexes["ix_predictions_model_time"] == ["model_name", "predicted_at"]
    engine.dispose()


def test_edited_migration_is_refused_naming_the_file(db_url: str, sql_copy: Path) -> None:
    engine = create_db_engine(db_url)
    apply_migrations(engine, sql_copy)
    edited = discover_migrations(sql_copy, dialect_family(engine))[1].path
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(SmlError, match=rf"{edited.name}: edited after it was applied"):
        apply_migrations(engine, sql_copy)
    engine.dispose()


def test_removed_migration_is_refused(db_url: str, sql_copy: Path) -> None:
    engine = create_db_engine(db_url)
    apply_migrations(engine, sql_copy)
    for path in sql_copy.glob("0002_*"):
        path.unlink()
    with pytest.raises(SmlError, match="0002_drift was applied but its file is gone"):
        apply_migrations(engine, sql_copy)
    engine.dispose()


def test_a_database_migrated_by_newer_code_is_refused_unless_accepted(db_url: str, sql_copy: Path) -> None:
    engine = create_db_engine(db_url)
    (sql_copy / "0999_later.sql").write_text("CREATE TABLE IF NOT EXISTS later (id INTEGER NOT NULL PRIMARY KEY);\n")
    apply_migrations(engine, sql_copy)
    older = sql_copy.parent / "older"
    shutil.copytree(sql_copy, older)
    (older / "0999_later.sql").unlink()

    with pytest.raises(SmlError, match="newer than the files in sql/ \\(0999_later\\)"):
        apply_migrations(engine, older)
    assert apply_migrations(engine, older, accept_newer=True) == []
    assert migrations_newer_than_files(engine, older) == ["0999_later"]
    assert migrations_newer_than_files(engine, sql_copy) == []
    engine.dispose()


def test_new_migration_is_applied_after_the_others(db_url: str, sql_copy: Path) -> None:
    engine = create_db_engine(db_url)
    apply_migrations(engine, sql_copy)
    (sql_copy / "0099_add_note.sql").write_text("CREATE TABLE notes (id INTEGER NOT NULL PRIMARY KEY);\n")
    assert apply_migrations(engine, sql_copy) == ["0099_add_note"]
    assert "notes" in sa.inspect(engine).get_table_names()
    engine.dispose()


@pytest.mark.parametrize(
    ("filename", "message"),
    [("1_bad.sql", "are named NNNN_name.sql"), ("0001_other.sql", "version 0001 is already used")],
)
def test_badly_named_files_are_refused(sql_copy: Path, filename: str, message: str) -> None:
    (sql_copy / filename).write_text("SELECT 1;\n")
    with pytest.raises(SmlError, match=message):
        discover_migrations(sql_copy, "sqlite")


def test_sql_dir_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(SmlError, match="does not exist"):
        discover_migrations(tmp_path / "nowhere", "mysql")


# --- resumable migrations, the lock, and ledgers written before the files became resumable ----------


def test_every_migration_reruns_after_its_statements_committed_without_a_ledger_row(db_url: str) -> None:
    # MySQL commits each DDL statement: a run can die after any statement and before the ledger row.
    engine = create_db_engine(db_url)
    migrations = discover_migrations(default_sql_dir(), dialect_family(engine))
    with engine.begin() as connection:
        for migration in migrations:
            for statement in migration.statements:
                connection.execute(sa.text(statement))
    applied = apply_migrations(engine)
    assert applied == [f"{m.version:04d}_{m.name}" for m in migrations]
    engine.dispose()


def _pre_resumable_text(path: Path) -> str:
    """The file as released before IF NOT EXISTS was added (its first two lines say so)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert "IF NOT EXISTS" in lines[0]
    return "".join(lines[2:]).replace(" IF NOT EXISTS", "")


def test_a_ledger_written_before_the_files_became_resumable_is_accepted_and_updated(
    db_url: str, sql_copy: Path
) -> None:
    import hashlib

    from sml.core.db import SUPERSEDED_CHECKSUMS

    engine = create_db_engine(db_url)
    for name, checksums in SUPERSEDED_CHECKSUMS.items():
        old = _pre_resumable_text(default_sql_dir() / name)
        assert hashlib.sha256(old.encode()).hexdigest() in checksums, name
        (sql_copy / name).write_text(old, encoding="utf-8")
    first = apply_migrations(engine, sql_copy)
    assert "0001_predictions" in first and "0002_drift" in first
    assert apply_migrations(engine) == []
    current = {m.version: m.checksum for m in discover_migrations(default_sql_dir(), dialect_family(engine))}
    with engine.connect() as connection:
        recorded = dict(connection.execute(sa.text("SELECT version, checksum FROM schema_migrations")).all())
    assert recorded == current
    engine.dispose()


def test_migrations_wait_for_the_lock_another_runner_holds(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    with engine.connect() as holder:
        assert holder.execute(sa.text("SELECT GET_LOCK(CONCAT('sml.schema_migrations.', DATABASE()), 0)")).scalar() == 1
        with pytest.raises(SmlError, match="another migration run holds the lock"):
            apply_migrations(engine, lock_timeout_seconds=1)
        holder.execute(sa.text("SELECT RELEASE_LOCK(CONCAT('sml.schema_migrations.', DATABASE()))"))
    assert apply_migrations(engine)[0] == "0000_schema_migrations"
    with engine.connect() as connection:
        free = connection.execute(sa.text("SELECT IS_FREE_LOCK(CONCAT('sml.schema_migrations.', DATABASE()))"))
        assert free.scalar() == 1
    engine.dispose()


# --- session settings: strict and UTC everywhere, without a SET where the server has them --------------


def test_mysql_sessions_are_strict_and_utc(mysql_url: str) -> None:
    engine = create_db_engine(mysql_url)
    with engine.connect() as connection:
        sql_mode, time_zone = connection.execute(sa.text("SELECT @@SESSION.sql_mode, @@SESSION.time_zone")).one()
    assert "STRICT_ALL_TABLES" in sql_mode.split(",") and time_zone in ("+00:00", "UTC")
    engine.dispose()


class _RecordingConnection:
    """A PEP 249 connection that answers the settings query with given values and records statements."""

    def __init__(self, sql_mode: str, time_zone: str) -> None:
        self.row = (sql_mode, time_zone)
        self.statements: list[str] = []

    def cursor(self) -> "_RecordingConnection":
        return self

    def execute(self, statement: str) -> None:
        self.statements.append(statement)

    def fetchone(self) -> tuple[str, str]:
        return self.row

    def close(self) -> None:
        pass


def test_no_set_statement_reaches_a_server_whose_parameter_group_already_sets_them() -> None:
    from sml.core.db import ensure_session_settings

    configured = _RecordingConnection("STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION", "UTC")
    assert ensure_session_settings(configured) is False
    assert not [s for s in configured.statements if s.lstrip().upper().startswith("SET")]

    local_default = _RecordingConnection("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION", "SYSTEM")
    assert ensure_session_settings(local_default) is True
    assert local_default.statements[-1].startswith("SET SESSION sql_mode = 'STRICT_ALL_TABLES")


# --- drift runs kept per model version --------------------------------------------------------


def test_the_per_version_run_key_keeps_every_stored_run_and_its_rows(db_url: str, sql_copy: Path) -> None:
    # The table is rebuilt on SQLite: with foreign keys enforced, dropping the old drift_runs would
    # have cascaded to the features, bounds, checks and quality of every stored run.
    engine = create_db_engine(db_url)
    for path in sql_copy.glob("0012_*"):
        held = sql_copy.parent / path.name
        path.rename(held)
    apply_migrations(engine, sql_copy)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO drift_runs (run_id, model_name, model_version, window_start, window_end, reference_kind, status, "
            "n_reference, n_current, features_tested, features_drifted, report_uri, parameters, created_at) VALUES "
            "('r1', 'm', '1', '2026-11-01 00:00:00', '2026-11-08 00:00:00', 'training', 'DRIFT', 10, 20, 1, 1, NULL, '{}', '2026-11-08 06:00:00')"
        ))
        connection.execute(sa.text(
            "INSERT INTO drift_features (run_id, feature_name, test, kind, n_reference, n_current, verdict) "
            "VALUES ('r1', 'x', 'ks', 'numeric', 10, 20, 'DRIFT')"
        ))
        connection.execute(sa.text(
            "INSERT INTO quality_runs (run_id, status, reason, metric, tolerance, n_predictions, n_labelled, n_labels_outside_classes, "
            "n_unmatched_labels, reliability, parameters) VALUES ('r1', 'OK', '', 'f1', 0.05, 20, 5, 0, 0, '[]', '{}')"
        ))
    for path in sql_copy.parent.glob("0012_*"):
        path.rename(sql_copy / path.name)

    applied = apply_migrations(engine, sql_copy)

    assert applied == ["0012_drift_runs_per_version"]
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT feature_name FROM drift_features")).scalars().all() == ["x"]
        assert connection.execute(sa.text("SELECT run_id FROM quality_runs")).scalars().all() == ["r1"]
    with engine.begin() as connection:  # another version, same window: stored beside the first
        connection.execute(sa.text(
            "INSERT INTO drift_runs (run_id, model_name, model_version, window_start, window_end, reference_kind, status, "
            "n_reference, n_current, features_tested, features_drifted, report_uri, parameters, created_at) VALUES "
            "('r2', 'm', '2', '2026-11-01 00:00:00', '2026-11-08 00:00:00', 'training', 'NO_DRIFT', 10, 20, 1, 0, NULL, '{}', '2026-11-08 07:00:00')"
        ))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:  # the same version twice: refused
        connection.execute(sa.text(
            "INSERT INTO drift_runs (run_id, model_name, model_version, window_start, window_end, reference_kind, status, "
            "n_reference, n_current, features_tested, features_drifted, report_uri, parameters, created_at) VALUES "
            "('r3', 'm', '2', '2026-11-01 00:00:00', '2026-11-08 00:00:00', 'training', 'NO_DRIFT', 10, 20, 1, 0, NULL, '{}', '2026-11-08 08:00:00')"
        ))
    with engine.begin() as connection:  # foreign keys are enforced again after the rebuild
        connection.execute(sa.text("DELETE FROM drift_runs WHERE run_id = 'r1'"))
        assert connection.execute(sa.text("SELECT COUNT(*) FROM drift_features")).scalar() == 0
        assert connection.execute(sa.text("SELECT COUNT(*) FROM quality_runs")).scalar() == 0
    engine.dispose()


def test_a_sqlite_migration_another_runner_applied_meanwhile_is_not_applied_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two runners on one SQLite file (`sml up` and `sml db migrate` at once): the other one applies
    # every migration after this one read the ledger; this one ended on the ledger's unique version.
    import sml.core.db as db

    url = f"sqlite:///{tmp_path / 'sml.db'}"
    engine, other = create_db_engine(url), create_db_engine(url)
    checked = db._check_applied_unchanged

    def other_runner_goes_first(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(db, "_check_applied_unchanged", checked)
        assert apply_migrations(other) != []
        return checked(*args, **kwargs)

    monkeypatch.setattr(db, "_check_applied_unchanged", other_runner_goes_first)
    assert apply_migrations(engine) == []
    current = {m.version: m.checksum for m in discover_migrations(default_sql_dir(), "sqlite")}
    with engine.connect() as connection:
        assert dict(connection.execute(sa.text("SELECT version, checksum FROM schema_migrations")).all()) == current
    engine.dispose()
    other.dispose()
