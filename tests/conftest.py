"""Shared fixtures: one parametrised database fixture runs every store test on SQLite and PostgreSQL.

PostgreSQL comes from pytest-postgresql's `postgresql_noproc` against the server on 127.0.0.1:5432: a
template database is migrated once per test process and cloned once; after each test that clone is put
back into a fresh clone's state, or dropped and cloned again (support/pg_database.py says how). When no
server is reachable the PostgreSQL half skips with the reason, unless TG_PARSER_REQUIRE_POSTGRES=1 (CI),
where it fails. TG_PARSER_TEST_PG_FRESH=1 clones the template for every test instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from support.pg_database import ReusedDatabase
from support.waiting import ShiftedClock

from tg_parser.config import Settings, load_settings
from tg_parser.db import migrations
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.stores.base import Store

PG_HOST = os.environ.get("TG_PARSER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TG_PARSER_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TG_PARSER_TEST_PG_USER", "postgres")
REQUIRE_PG = os.environ.get("TG_PARSER_REQUIRE_POSTGRES") == "1"
PG_FRESH_EACH_TEST = os.environ.get("TG_PARSER_TEST_PG_FRESH") == "1"
# One name per test process, so parallel sessions on one server never share a database.
PG_TEST_DB = f"tgp_test_{os.getpid()}"

# Keep settings from the developer's environment or .env out of the tests.
for _name in list(os.environ):
    if _name.startswith(
        ("DB_", "DATABASE_URL", "LOG_", "TELEGRAM_", "OPENAI_", "LLM_", "PROCESSOR", "PROMPTS_DIR")
    ):
        del os.environ[_name]
os.environ.pop("TG_PARSER_SQL_DIR", None)

# The suite starts pytest workers and ~40 Python processes (the CLI, the migrator's workers): let them
# keep bytecode caches (__pycache__, git-ignored) even where PYTHONDONTWRITEBYTECODE is set, so test
# modules are not rewritten and tg_parser is not compiled again by every process of every run.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def _pg_reachable() -> str | None:
    try:
        psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3
        ).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


_PG_PROBLEM = _pg_reachable()


def pg_settings(dbname: str, **overrides: object) -> Settings:
    return load_settings(
        _env_file=None,
        db_type="postgres",
        db_host=PG_HOST,
        db_port=PG_PORT,
        db_user=PG_USER,
        db_name=dbname,
        db_pool_min_size=1,
        db_pool_max_size=4,
        **overrides,
    )


def sqlite_settings(directory: Path, **overrides: object) -> Settings:
    return load_settings(_env_file=None, db_type="sqlite", db_sqlite_dir=directory, **overrides)


def _migrate_template(
    host: str, port: int, user: str, dbname: str, password: str | None = None, **_: object
) -> None:
    migrations.upgrade(pg_settings(dbname))


postgresql_noproc = factories.postgresql_noproc(
    host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_TEST_DB, load=[_migrate_template]
)


@pytest.fixture(scope="session")
def pg_reused(postgresql_noproc: NoopExecutor) -> Iterator[ReusedDatabase]:
    """This process's test database: cloned from the template, reset after each test."""
    database = ReusedDatabase(
        host=postgresql_noproc.host,
        port=postgresql_noproc.port,
        user=postgresql_noproc.user,
        password=postgresql_noproc.password,
        dbname=postgresql_noproc.dbname,
        template=postgresql_noproc.template_dbname,
    )
    try:
        yield database
    finally:
        database.drop()


# Fixtures that need the PostgreSQL server, and fixtures whose "postgres" parameter does; a test that calls
# require_postgres() itself carries @pytest.mark.postgres.
PG_FIXTURES = {"pg_dbname", "pg_only_settings", "pg_reused", "postgresql_noproc"}
PG_PARAMETRISED = {"settings", "fresh_env", "probe_db"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the PostgreSQL server `postgres` (so `-m "not postgres"` leaves them out)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_postgres = any(params.get(name) == "postgres" for name in PG_PARAMETRISED)
        if on_postgres or PG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def require_postgres() -> None:
    if _PG_PROBLEM is None:
        return
    message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {_PG_PROBLEM}"
    if REQUIRE_PG:
        pytest.fail(message + " (TG_PARSER_REQUIRE_POSTGRES=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite install migrated once; tests get copies of its files."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    migrations.upgrade(sqlite_settings(directory))
    return directory


@pytest.fixture
def sqlite_dir(sqlite_template: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    for name in STORE_FILES.values():
        shutil.copy(sqlite_template / name, directory / name)
    return directory


@pytest.fixture
def pg_dbname(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty, migrated PostgreSQL database for this test (as a fresh clone of the session template)."""
    require_postgres()
    database: ReusedDatabase = request.getfixturevalue("pg_reused")
    yield database.checkout()
    database.checkin(reuse=not PG_FRESH_EACH_TEST)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for a migrated, empty install, once per dialect."""
    if request.param == "sqlite":
        return sqlite_settings(request.getfixturevalue("sqlite_dir"))
    return pg_settings(request.getfixturevalue("pg_dbname"))


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = open_database(settings)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def pg_only_settings(pg_dbname: str) -> Settings:
    return pg_settings(pg_dbname)


@pytest.fixture
def store_clock(monkeypatch: pytest.MonkeyPatch) -> ShiftedClock:
    """The stores' clock for this test, in this process: advance it instead of sleeping."""
    clock = ShiftedClock()
    monkeypatch.setattr(Store, "now", staticmethod(clock.now))
    return clock
