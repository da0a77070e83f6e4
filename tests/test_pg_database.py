"""The reused PostgreSQL test database (support/pg_database.py) starts every test as a fresh clone would."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from conftest import PG_HOST, PG_PORT, PG_USER, require_postgres
from support.pg_database import ReusedDatabase

pytestmark = pytest.mark.postgres

LEASE = "INSERT INTO processing.work_leases VALUES (%s, 'w', now(), now() + interval '1 minute')"


@pytest.fixture
def reused(request: pytest.FixtureRequest) -> Iterator[ReusedDatabase]:
    require_postgres()
    template = request.getfixturevalue("postgresql_noproc")
    database = ReusedDatabase(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        password=None,
        dbname=f"{template.dbname}_reuse",
        template=template.template_dbname,
    )
    try:
        yield database
    finally:
        database.drop()


def connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


def database_oid(dbname: str) -> int:
    with connect("postgres") as conn:
        return conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (dbname,)).fetchone()[0]  # type: ignore[index]


def contents(dbname: str) -> dict[str, object]:
    """Rows and pages per table and sequence positions: what a test could leave behind."""
    with connect(dbname) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname IN ('raw', 'ingestion', 'processing') ORDER BY 1"
        ).fetchall()
        state: dict[str, object] = {
            name: conn.execute(f"SELECT count(*), pg_relation_size('{name}') FROM {name}").fetchone()
            for (name,) in tables
        }
        sequences = conn.execute(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences ORDER BY 1"
        ).fetchall()
        return state | dict(sequences)


def test_rows_dead_rows_and_sequences_are_undone_in_place(reused: ReusedDatabase) -> None:
    name = reused.checkout()
    fresh, oid = contents(name), database_oid(name)
    assert fresh["processing.work_leases"] == (0, 0) and fresh["ingestion.ingest_runs_id_seq"] is None
    with connect(name) as conn:
        conn.execute(LEASE, ("tg:1:1",))
        conn.execute("SELECT nextval('ingestion.ingest_runs_id_seq')")
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute(LEASE, ("tg:1:2",))
            conn.execute(LEASE, ("tg:1:2",))  # rolled back: dead rows stay in the pages
    assert contents(name) != fresh
    reused.checkin()
    assert reused.checkout() == name
    assert database_oid(name) == oid  # reset, not cloned again
    assert contents(name) == fresh


def test_sessions_left_open_are_ended(reused: ReusedDatabase) -> None:
    name = reused.checkout()
    left = connect(name)
    left.execute("BEGIN")
    left.execute("LOCK TABLE processing.work_leases IN ACCESS EXCLUSIVE MODE")  # would block TRUNCATE
    left.execute("SELECT pg_advisory_lock(42)")
    reused.checkin()
    with pytest.raises(psycopg.OperationalError):
        left.execute("SELECT 1")
    left.close()
    reused.checkout()
    with connect(name) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0]  # type: ignore[index]


def test_a_table_the_test_created_is_dropped_in_place(reused: ReusedDatabase) -> None:
    name = reused.checkout()
    fresh, oid = contents(name), database_oid(name)
    with connect(name) as conn:
        conn.execute("CREATE TABLE raw.probe (id bigserial PRIMARY KEY, label text)")
        conn.execute("INSERT INTO raw.probe (label) VALUES ('x')")
    reused.checkin()
    reused.checkout()
    assert database_oid(name) == oid
    assert contents(name) == fresh


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE processing.work_leases ADD COLUMN extra int",
        "CREATE INDEX extra_idx ON raw.raw_messages (views)",
        "GRANT SELECT ON processing.runs TO PUBLIC",
        "ALTER DATABASE {db} SET work_mem = '8MB'",
        "DELETE FROM raw._yoyo_migration",
        "CREATE FUNCTION raw.extra() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TABLE raw.probe (id int); ALTER TABLE raw.raw_messages ADD COLUMN probe_id int",
    ],
)
def test_any_other_change_gets_a_new_clone(reused: ReusedDatabase, change: str) -> None:
    name = reused.checkout()
    fresh, oid = contents(name), database_oid(name)
    with connect(name) as conn:
        before = reused._schema(conn)
        for statement in change.format(db=name).split("; "):
            conn.execute(statement)
    reused.checkin()
    reused.checkout()
    assert database_oid(name) != oid
    assert contents(name) == fresh
    with connect(name) as conn:
        assert reused._schema(conn) == before
