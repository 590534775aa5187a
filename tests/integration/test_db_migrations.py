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
        assert primary_key == [column.name for column in table.primary_key.columns], table.name
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
