"""The roles recipe of docs/SQL.md, run for real: an owner role migrates a scratch database, a DML-only app
role ingests, processes, topicizes and exports through the CLI, and DDL as the app role is refused.

The grants are the `sql` block after the `roles-grants` marker in docs/SQL.md, executed as written with the
names made unique to this test process (roles are cluster-wide; parallel test processes share the server).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import PG_HOST, PG_PORT, PG_USER, require_postgres
from psycopg import sql
from test_run import EXAMPLE, invoke, validate_export

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.postgres


def grants_block() -> str:
    text = (ROOT / "docs" / "SQL.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- roles-grants:[^>]*-->\s*```sql\n(.*?)```", text, re.DOTALL)
    assert match, "docs/SQL.md lost its roles-grants block"
    return match.group(1)


def _admin(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


@pytest.fixture
def scratch() -> Iterator[dict[str, str]]:
    """A database owned by a fresh owner role, with a fresh app role; everything dropped afterwards."""
    require_postgres()
    suffix = f"{os.getpid()}"
    names = {"db": f"tgp_roles_{suffix}", "owner": f"tgp_owner_{suffix}", "app": f"tgp_app_{suffix}"}
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(names["db"])))
        for role in (names["owner"], names["app"]):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        # The superuser part of the recipe (passwords left out: the test server trusts local logins).
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(names["owner"])))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(names["app"])))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(names["db"]), sql.Identifier(names["owner"])
            )
        )
    try:
        yield names
    finally:
        with _admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(names["db"]))
            )
            for role in (names["app"], names["owner"]):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _url(role: str, dbname: str) -> str:
    return f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{dbname}"


def test_migrate_as_owner_then_work_as_a_dml_only_app_role(scratch: dict[str, str], tmp_path: Path) -> None:
    block = grants_block()
    for doc_name, real in (
        ("tg_owner", scratch["owner"]),
        ("tg_app", scratch["app"]),
        ("tg_parser", scratch["db"]),
    ):
        block = re.sub(rf"\b{doc_name}\b", real, block)
    with _admin(scratch["db"]) as conn:
        for statement in filter(str.strip, block.split(";")):
            conn.execute(statement)

    env = {
        "DB_TYPE": "postgres",
        "DATABASE_URL": _url(scratch["app"], scratch["db"]),
        "DATABASE_MIGRATION_URL": _url(scratch["owner"], scratch["db"]),
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
    }
    app_only = {k: v for k, v in env.items() if k != "DATABASE_MIGRATION_URL"}

    # Without the migration URL, the app role cannot migrate: one clear line, no traceback.
    refused = invoke(app_only, "db", "upgrade")
    assert refused.exit_code == 3 and "Traceback" not in refused.output
    assert f"role '{scratch['app']}' may not change the schema" in refused.output
    assert "DATABASE_MIGRATION_URL" in refused.output

    migrated = invoke(env, "db", "upgrade")
    assert migrated.exit_code == 0, migrated.output
    with _admin(scratch["db"]) as conn:
        owners = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('ingestion', 'raw', 'processing')"
            )
        }
    assert owners == {scratch["owner"]}

    # Everything else runs as the app role.
    assert invoke(app_only, "db", "status").exit_code == 0
    ingested = invoke(app_only, "ingest", "--from-export", str(EXAMPLE))
    assert ingested.exit_code == 0, ingested.output
    ran = invoke(app_only, "run", "--out", str(tmp_path / "out"))
    assert ran.exit_code == 0, ran.output
    entries = validate_export(tmp_path / "out")
    assert sum(e["type"] == "message" for e in entries) >= 10 and any(e["type"] == "topic" for e in entries)
    checked = invoke(app_only, "db", "check-orphans", "--json")
    assert checked.exit_code == 0, checked.output

    with psycopg.connect(_url(scratch["app"], scratch["db"]), autocommit=True) as conn:
        for ddl in (
            "CREATE TABLE raw.intruder (a int)",
            "CREATE TABLE public.intruder (a int)",
            "ALTER TABLE raw.raw_messages ADD COLUMN intruder int",
            "DROP TABLE processing.processed_documents",
            "CREATE INDEX intruder_idx ON raw.raw_messages (text)",
            "TRUNCATE raw.raw_messages",
            "CREATE SCHEMA intruder",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(ddl)
        assert conn.execute("SELECT count(*) FROM raw.raw_messages").fetchone()[0] > 0
