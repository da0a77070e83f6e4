"""The migrator's schema checks (transfer/tables.py): a schema it cannot copy faithfully is refused before
anything is written, with one line naming every difference.

* `migrate-to-postgres`: the two sides must describe the same tables, columns, types and keys;
* `db checksum` (either dialect): every column must have a type the canonical rendering knows, and every
  table a primary key (rows are ordered, compared and named by it).

A schema changed by hand (or by another tool) is the realistic cause; the tests make that change with
plain DDL on the store files and the PostgreSQL database.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from support.cli import db_env

from tests.test_transfer_roundtrip import options, table_counts_pg
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.domain.models import Source
from tg_parser.errors import EXIT_CONFIG
from tg_parser.stores import IngestionStore
from tg_parser.transfer import run_transfer


def sqlite_ddl(directory: Path, store: str, *statements: str) -> None:
    conn = sqlite3.connect(directory / STORE_FILES[store])
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def pg_ddl(settings: Settings, *statements: str) -> None:
    with psycopg.connect(
        host=settings.db_host, port=settings.db_port, user=settings.db_user, dbname=settings.db_name
    ) as conn:
        for statement in statements:
            conn.execute(statement)


def refusal(settings: Settings, *statements: str) -> None:
    if settings.db_type == "sqlite":
        sqlite_ddl(settings.db_sqlite_dir, "raw", *statements)
    else:
        pg_ddl(settings, *(s.replace("TABLE ", "TABLE raw.", 1) for s in statements))


def test_every_schema_difference_is_named_and_nothing_is_written(sqlite_dir, pg_only_settings):
    sqlite_ddl(
        sqlite_dir,
        "raw",
        "CREATE TABLE only_sqlite (id INTEGER PRIMARY KEY)",
        "CREATE TABLE pairs (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b))",
        "ALTER TABLE raw_messages ADD COLUMN extra_s TEXT",
        "ALTER TABLE raw_messages ADD COLUMN mixed INTEGER",
    )
    pg_ddl(
        pg_only_settings,
        "CREATE TABLE raw.only_pg (id bigint PRIMARY KEY)",
        "CREATE TABLE raw.pairs (a bigint NOT NULL, b bigint NOT NULL, PRIMARY KEY (b, a))",
        "ALTER TABLE raw.raw_messages ADD COLUMN extra_p text",
        "ALTER TABLE raw.raw_messages ADD COLUMN mixed text",
    )
    report = run_transfer(options(sqlite_dir, pg_only_settings))
    assert report.status == "refused" and report.exit_code == EXIT_CONFIG, report.error
    error = report.error or ""
    assert "\n" not in error
    assert error.startswith("the SQLite and PostgreSQL schemas differ: ")
    # Five named, in the order they were found, the rest counted.
    named = [
        "raw.only_sqlite exists in SQLite but not in PostgreSQL",
        "raw.only_pg exists in PostgreSQL but not in SQLite",
        "raw.pairs has primary key (a, b) in SQLite but (b, a) in PostgreSQL",
        "column raw.raw_messages.extra_s is missing in PostgreSQL",
        "column raw.raw_messages.mixed is INTEGER in SQLite but text in PostgreSQL",
        "column raw.raw_messages.extra_p is missing in SQLite",
    ]
    shown = [problem for problem in named if problem in error]
    assert len(shown) == 5, error
    assert "(and 1 more)" in error
    assert "run 'tg-parser db upgrade' on both sides with the same tg-parser version" in error
    assert not any(table_counts_pg(pg_only_settings).values())


@pytest.mark.parametrize(
    ("sqlite_column", "pg_column", "expected"),
    [
        ("blobby BLOB", "blobby bytea", "column raw.raw_messages.blobby has SQLite type BLOB"),
        ("untyped", "untyped text", "column raw.raw_messages.untyped has SQLite type (none)"),
        ("amount INTEGER", "amount numeric", "column raw.raw_messages.amount has PostgreSQL type numeric"),
    ],
)
def test_a_column_type_the_migrator_cannot_render_is_refused(
    sqlite_dir, pg_only_settings, sqlite_column, pg_column, expected
):
    sqlite_ddl(sqlite_dir, "raw", f"ALTER TABLE raw_messages ADD COLUMN {sqlite_column}")
    pg_ddl(pg_only_settings, f"ALTER TABLE raw.raw_messages ADD COLUMN {pg_column}")
    report = run_transfer(options(sqlite_dir, pg_only_settings))
    assert report.status == "refused" and report.exit_code == EXIT_CONFIG, report.error
    assert expected in (report.error or "") and "which the migrator does not know" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())


def checksum_error(settings: Settings) -> str:
    result = CliRunner().invoke(cli, ["db", "checksum", "--json"], env=db_env(settings))
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_db_checksum_refuses_a_table_without_a_primary_key(settings):
    refusal(settings, "CREATE TABLE keyless (a INTEGER)")
    error = checksum_error(settings)
    assert "table raw.keyless has no primary key" in error


def test_db_checksum_refuses_a_column_type_it_cannot_render(settings):
    if settings.db_type == "sqlite":
        refusal(settings, "ALTER TABLE raw_messages ADD COLUMN blobby BLOB")
        expected = "column raw.raw_messages.blobby has SQLite type BLOB, which the migrator does not know"
    else:
        refusal(settings, "ALTER TABLE raw_messages ADD COLUMN amount numeric")
        expected = (
            "column raw.raw_messages.amount has PostgreSQL type numeric, which the migrator does not know"
        )
    assert expected in checksum_error(settings)


def test_db_checksum_of_an_unchanged_schema_succeeds(settings):
    """The refusals above come from the changes, not from the fixture: the same install checks clean."""
    result = CliRunner().invoke(cli, ["db", "checksum", "--json", "--store", "raw"], env=db_env(settings))
    assert result.exit_code == 0, result.output
    assert '"raw.raw_messages"' in result.output


def test_a_store_file_never_migrated_is_refused(sqlite_dir, pg_only_settings):
    (sqlite_dir / STORE_FILES["ingestion"]).write_bytes(b"")  # an empty SQLite file: no tables at all
    report = run_transfer(options(sqlite_dir, pg_only_settings))
    assert report.status == "refused" and report.exit_code == EXIT_CONFIG
    assert "the SQLite store 'ingestion' has no migrations applied" in (report.error or "")
    assert "tg-parser init" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())


def test_a_postgresql_schema_tg_parser_did_not_create_is_refused(sqlite_dir, pg_only_settings):
    pg_ddl(pg_only_settings, "DROP TABLE processing._yoyo_migration")
    report = run_transfer(options(sqlite_dir, pg_only_settings))
    assert report.status == "refused" and report.exit_code == EXIT_CONFIG
    assert "the PostgreSQL schema 'processing' was not created by tg-parser" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())


def test_db_checksum_refuses_values_it_cannot_render(sqlite_dir):
    """A value PostgreSQL could not hold (a NUL in text) has no canonical rendering: `db checksum` of
    such a SQLite install stops with one line that says how to list every offender."""
    from tests.conftest import sqlite_settings

    settings = sqlite_settings(sqlite_dir)
    db = open_database(settings)
    try:
        IngestionStore(db).add_source(Source(source_id="chan", channel_id=77, username="chan"))
    finally:
        db.close()
    conn = sqlite3.connect(sqlite_dir / STORE_FILES["ingestion"])
    try:
        conn.execute("UPDATE sources SET title = 'a' || char(0) || 'b' WHERE source_id = 'chan'")
        conn.commit()
    finally:
        conn.close()
    result = CliRunner().invoke(cli, ["db", "checksum"], env=db_env(settings))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "1 value(s) cannot be rendered, e.g. " in line and "ingestion.sources" in line
    assert "NUL character" in line
    assert "tg-parser db migrate-to-postgres --dry-run" in line
