"""Fixtures shared by every test layer.

Database tests take ``db_url``: a fresh, empty database per test, on SQLite and on MySQL/MariaDB.
The MySQL server is ``SML_TEST_MYSQL_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``);
each test gets its own ``sml_t_<uuid>`` database on it, dropped afterwards. When no server
answers, MySQL cases skip with the reason, unless ``SML_REQUIRE_MYSQL=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from hypothesis import settings

DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"

# No timing thresholds in tests: Hypothesis's default 200 ms deadline per example failed a pure
# property test (feature-name escaping) on a loaded 2-core machine. Examples still run to the end.
# Derandomized: each run tries the same examples, so a suite that passed passes again (CI on a
# clean clone has no example database to replay a failure from). To look for new counterexamples,
# run with `--hypothesis-profile=explore` (random examples, the rest the same).
settings.register_profile("sml", deadline=None, derandomize=True)
settings.register_profile("explore", deadline=None)
settings.load_profile("sml")


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real AWS account, whatever the developer's shell holds."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def mysql_server_url() -> str:
    return os.environ.get("SML_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)


@cache
def _mysql_unavailable_reason() -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(mysql_server_url(), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to reach the server means "no MySQL here"
        return f"no MySQL server at {engine.url.render_as_string(hide_password=True)}: {type(exc).__name__}: {exc}"
    finally:
        engine.dispose()
    return None


def require_mysql() -> None:
    reason = _mysql_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("SML_REQUIRE_MYSQL") == "1":
        pytest.fail(f"SML_REQUIRE_MYSQL=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh, empty MySQL/MariaDB database for one test."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    require_mysql()
    server = make_url(mysql_server_url())
    name = f"sml_t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(server)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'sml.db'}"


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for one test, once on SQLite and once on MySQL/MariaDB."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def migrated_db_url(db_url: str) -> str:
    """``db_url`` with every migration applied."""
    from sml.core.db import apply_migrations, create_db_engine

    engine = create_db_engine(db_url)
    try:
        apply_migrations(engine)
    finally:
        engine.dispose()
    return db_url
