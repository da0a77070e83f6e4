"""Migrations: the same logical schema on both dialects, upgrade → rollback → upgrade, the schema checks
done when a database is opened, yoyo's lock, and unreachable servers (with no password in any message).
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from conftest import PG_HOST, PG_PORT, PG_USER, pg_settings, sqlite_settings
from pydantic import SecretStr
from yoyo.backends.base import DatabaseBackend

from tg_parser.config import Settings, load_settings
from tg_parser.db import migrations
from tg_parser.db.connect import dialect_of, open_database, pg_target
from tg_parser.db.postgres import describe_connect_error
from tg_parser.db.resources import STORES
from tg_parser.db.sqlite import STORE_FILES, store_path
from tg_parser.errors import (
    EXIT_LOCKED,
    ConfigError,
    DatabaseUnavailable,
    LockHeld,
    SchemaOutdated,
    StoreNotInitialised,
)

# yoyo's bookkeeping tables live next to ours; they are not part of our schema.
YOYO_TABLES = {
    DatabaseBackend.log_table,
    DatabaseBackend.lock_table,
    DatabaseBackend.version_table,
    "_yoyo_migration",
    "_yoyo_tg_compat",
}

# SQLite declared type → the PostgreSQL type family it stands for (bigint and integer both become INTEGER).
SQLITE_TYPES = {
    "INTEGER": "integer",
    "TEXT": "text",
    "TIMESTAMP_TEXT": "timestamptz",
    "JSON_TEXT": "jsonb",
    "BOOLEAN_INT": "boolean",
    "REAL": "double precision",
}
PG_TYPES = {
    "bigint": "integer",
    "integer": "integer",
    "smallint": "integer",
    "text": "text",
    "timestamp with time zone": "timestamptz",
    "jsonb": "jsonb",
    "boolean": "boolean",
    "double precision": "double precision",
}
PG_FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

Schema = dict[str, dict[str, Any]]  # table → {"columns": [...], "primary_key": ..., ...}

# --- introspection ----------------------------------------------------------------------------------


def _sqlite_default(value: str | None) -> str | None:
    return None if value is None else value.strip()


def sqlite_schema(path: Path) -> Schema:
    """The logical schema of one SQLite store file, from its PRAGMAs."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            if r[0] not in YOYO_TABLES
        ]
        schema: Schema = {}
        for table in tables:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            # A WITHOUT ROWID table has no rowid, so its INTEGER PRIMARY KEY is an ordinary column.
            without_rowid = any(row[1] == table and row[4] for row in conn.execute("PRAGMA table_list"))
            rowid_alias = (
                not without_rowid
                and len(pk) == 1
                and next(r[2].upper() for r in info if r[1] == pk[0]) == "INTEGER"
            )
            columns = []
            for _, name, decl, notnull, default, _ in info:
                is_rowid = rowid_alias and name == pk[0]
                columns.append(
                    {
                        "name": name,
                        "type": SQLITE_TYPES.get(decl.upper(), f"unmapped sqlite type {decl}"),
                        # an INTEGER PRIMARY KEY is the rowid: never NULL, assigned when omitted
                        "nullable": not (notnull or is_rowid),
                        "default": "<auto>" if is_rowid else _sqlite_default(default),
                    }
                )
            unique, indexes = [], []
            for _, name, is_unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
                cols = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
                if origin == "u":
                    unique.append(tuple(cols))
                elif origin == "c":
                    indexes.append((name, tuple(cols), bool(is_unique), bool(partial)))
                # origin "pk": the primary key's own index, covered by primary_key
            fks: dict[int, dict[str, Any]] = {}
            for fid, _, ref_table, col, ref_col, on_update, on_delete, _ in conn.execute(
                f"PRAGMA foreign_key_list({table})"
            ):
                fk = fks.setdefault(
                    fid,
                    {
                        "columns": [],
                        "ref_table": ref_table,
                        "ref_columns": [],
                        "on_delete": on_delete,
                        "on_update": on_update,
                    },
                )
                fk["columns"].append(col)
                fk["ref_columns"].append(ref_col)
            schema[table] = {
                "columns": columns,
                "primary_key": tuple(pk),
                "unique": sorted(unique),
                "foreign_keys": sorted(
                    (
                        tuple(f["columns"]),
                        f["ref_table"],
                        tuple(f["ref_columns"]),
                        f["on_delete"],
                        f["on_update"],
                    )
                    for f in fks.values()
                ),
                "indexes": sorted(indexes),
            }
        return schema
    finally:
        conn.close()


def _pg_default(value: str | None, identity: str) -> str | None:
    if identity == "YES" or (value or "").startswith("nextval("):
        return "<auto>"
    if value is None:
        return None
    value = re.sub(r"(::[a-z ]+(\[\])?)+$", "", value.strip())
    return {"false": "0", "true": "1"}.get(value, value)


def pg_schema(conn: psycopg.Connection, store: str) -> Schema:
    """The logical schema of one PostgreSQL store schema, from the catalogs."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (store,),
        )
        if r[0] not in YOYO_TABLES
    ]
    schema: Schema = {}
    for table in tables:
        columns = [
            {
                "name": name,
                "type": PG_TYPES.get(data_type, f"unmapped postgres type {data_type}"),
                "nullable": nullable == "YES",
                "default": _pg_default(default, identity),
            }
            for name, data_type, nullable, default, identity in conn.execute(
                "SELECT column_name, data_type, is_nullable, column_default, is_identity FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                (store, table),
            )
        ]
        relid = conn.execute("SELECT %s::regclass::oid", (f'"{store}"."{table}"',)).fetchone()[0]  # type: ignore[index]

        def names(rel: int, attnums: list[int]) -> tuple[str, ...]:
            return tuple(
                conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum = %s", (rel, n)
                ).fetchone()[0]  # type: ignore[index]
                for n in attnums
            )

        constraints = conn.execute(
            "SELECT contype, conkey, confrelid, confkey, confdeltype, confupdtype FROM pg_constraint WHERE conrelid = %s",
            (relid,),
        ).fetchall()
        pk = next((names(relid, c[1]) for c in constraints if c[0] == "p"), ())
        unique = sorted(names(relid, c[1]) for c in constraints if c[0] == "u")
        fks = sorted(
            (
                names(relid, c[1]),
                conn.execute("SELECT relname FROM pg_class WHERE oid = %s", (c[2],)).fetchone()[0],  # type: ignore[index]
                names(c[2], c[3]),
                PG_FK_ACTIONS[c[4]],
                PG_FK_ACTIONS[c[5]],
            )
            for c in constraints
            if c[0] == "f"
        )
        indexes = sorted(
            (
                name,
                names(relid, [int(n) for n in str(indkey).split()]),
                bool(is_unique),
                bool(partial),
            )
            for name, indkey, is_unique, partial in conn.execute(
                # indexes created by CREATE INDEX; those backing a PRIMARY KEY/UNIQUE constraint are the
                # constraints above (SQLite reports those as origin 'pk'/'u' and they are compared there)
                "SELECT c.relname, i.indkey, i.indisunique, i.indpred IS NOT NULL FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)",
                (relid,),
            )
        )
        schema[table] = {
            "columns": columns,
            "primary_key": pk,
            "unique": unique,
            "foreign_keys": fks,
            "indexes": indexes,
        }
    return schema


def schemas(settings: Settings) -> dict[str, Schema]:
    if dialect_of(settings) == "sqlite":
        return {store: sqlite_schema(store_path(settings.db_sqlite_dir, store)) for store in STORES}
    with psycopg.connect(**pg_target(settings).connect_kwargs()) as conn:
        return {store: pg_schema(conn, store) for store in STORES}


# --- one logical schema -----------------------------------------------------------------------------


def test_both_dialects_produce_the_same_logical_schema(sqlite_dir: Path, pg_dbname: str) -> None:
    lite = schemas(sqlite_settings(sqlite_dir))
    pg = schemas(pg_settings(pg_dbname))
    # not vacuous: the comparison sees the tables, keys and indexes we know are there
    assert {"sources", "comment_cursors", "ingest_runs"} <= set(lite["ingestion"])
    assert lite["raw"]["raw_message_versions"]["foreign_keys"] == [
        (("source_ref",), "raw_messages", ("source_ref",), "CASCADE", "NO ACTION")
    ]
    assert ("raw_messages_channel_date_idx", ("channel_id", "date", "source_ref"), False, False) in lite[
        "raw"
    ]["raw_messages"]["indexes"]
    assert lite["processing"]["api_keys"]["unique"] == [("name",)]
    # processed_documents.id is not indexed (a CHECK ties it to the primary key), nor are the dropped indexes
    assert lite["processing"]["processed_documents"]["unique"] == []
    assert {i[0] for i in lite["raw"]["raw_messages"]["indexes"]} == {"raw_messages_channel_date_idx"}
    for store in STORES:
        assert set(lite[store]) == set(pg[store]), store
        for table in lite[store]:
            for part in ("columns", "primary_key", "unique", "foreign_keys", "indexes"):
                assert lite[store][table][part] == pg[store][table][part], f"{store}.{table} {part} differ"
            types = [c["type"] for c in lite[store][table]["columns"]]
            assert not [t for t in types if t.startswith("unmapped")], f"{store}.{table}: {types}"


def test_every_migration_has_both_dialects_and_a_rollback() -> None:
    from tg_parser.db.resources import migrations_dir

    for store in STORES:
        lite, pg = migrations.expected_ids("sqlite", store), migrations.expected_ids("postgres", store)
        assert lite == pg and lite, store
        for dialect in ("sqlite", "postgres"):
            for migration_id in lite:
                assert (migrations_dir(dialect, store) / f"{migration_id}.rollback.sql").is_file(), (
                    dialect,
                    store,
                    migration_id,
                )


def test_status_after_init(settings: Settings) -> None:
    for status in migrations.status(settings):
        assert status.up_to_date and not status.pending and not status.unknown and status.lock is None
        assert status.applied == migrations.expected_ids(dialect_of(settings), status.store)
        assert status.as_dict()["current"] == status.applied[-1]


@pytest.mark.slow
@pytest.mark.parametrize("store", STORES)
def test_upgrade_rollback_upgrade(settings: Settings, store: str) -> None:
    dialect = dialect_of(settings)
    before = schemas(settings)
    ids = migrations.expected_ids(dialect, store)
    assert migrations.rollback(settings, store, steps=len(ids)) == list(reversed(ids))
    after_rollback = schemas(settings)
    assert after_rollback[store] == {}, (
        f"{store} keeps tables after rollback: {sorted(after_rollback[store])}"
    )
    for other in STORES:  # the other stores are untouched
        if other != store:
            assert after_rollback[other] == before[other]
    (status,) = migrations.status(settings, (store,))
    assert status.applied == [] and status.pending == ids
    with pytest.raises(SchemaOutdated) as info:
        open_database(settings)
    assert f"'{store}'" in info.value.message and info.value.hint == "run 'tg-parser db upgrade'"
    assert migrations.upgrade(settings, (store,)) == {store: ids}
    assert schemas(settings) == before
    assert migrations.upgrade(settings) == {s: [] for s in STORES}  # idempotent
    open_database(settings).close()


# --- checks on open ---------------------------------------------------------------------------------


def test_behind_database_is_refused_with_the_upgrade_hint(settings: Settings) -> None:
    migrations.rollback(settings, "raw", steps=1)
    with pytest.raises(SchemaOutdated) as info:
        open_database(settings)
    assert "'raw'" in info.value.message and "behind" in info.value.message
    assert info.value.hint == "run 'tg-parser db upgrade'"
    assert "run 'tg-parser db upgrade'" in info.value.one_line()
    migrations.upgrade(settings)
    open_database(settings).close()


@pytest.mark.parametrize("name", ["what?now", "100%25 #1", "спорт & news"])
def test_init_in_a_folder_whose_name_an_sqlite_uri_would_misread(tmp_path: Path, name: str) -> None:
    # yoyo connects through an SQLite URI ("file:<path>?cache=shared"): '?', '#' and '%xx' in the path
    # ended it or were decoded, so init failed ("unable to open database file") or wrote elsewhere.
    folder = tmp_path / name
    settings = sqlite_settings(folder)
    migrations.upgrade(settings)
    assert sorted(p.name for p in folder.iterdir()) == sorted(STORE_FILES.values())
    assert all(s.up_to_date for s in migrations.status(settings))
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing written beside it
    open_database(settings).close()


def test_uninitialised_sqlite_dir_asks_for_init_and_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "never-initialised"
    empty.mkdir()
    with pytest.raises(SchemaOutdated) as info:
        open_database(sqlite_settings(empty))
    assert "not initialised" in info.value.message
    assert info.value.hint == "run 'tg-parser init' (or 'tg-parser db upgrade')"
    assert list(empty.iterdir()) == []


def test_a_store_file_removed_after_the_check_is_not_created_on_connect(
    sqlite_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The existence check is only for the message: the ATTACH itself (mode=rw) never creates a file, so
    a file removed between the check and the connect is refused too, not recreated empty."""
    from tg_parser.db import sqlite as sqlite_module

    checked = sqlite_module.require_store_files
    calls: list[int] = []

    def check_then_lose_raw(directory: Path, stores: tuple[str, ...] = STORES) -> None:
        calls.append(1)
        if len(calls) == 1:  # the check passes; then the file goes before the ATTACH
            store_path(sqlite_dir, "raw").unlink()
            return
        checked(directory, stores)

    monkeypatch.setattr(sqlite_module, "require_store_files", check_then_lose_raw)
    with pytest.raises(StoreNotInitialised, match=STORE_FILES["raw"]):
        open_database(sqlite_settings(sqlite_dir), check_migrations=False)
    assert len(calls) == 2
    assert not store_path(sqlite_dir, "raw").exists()


def test_partially_initialised_sqlite_dir_names_the_missing_file(sqlite_dir: Path) -> None:
    store_path(sqlite_dir, "processing").unlink()
    with pytest.raises(SchemaOutdated, match=STORE_FILES["processing"]) as info:
        open_database(sqlite_settings(sqlite_dir))
    assert STORE_FILES["raw"] not in info.value.message


def test_postgres_without_schema_asks_for_init(pg_only_settings: Settings) -> None:
    with psycopg.connect(**pg_target(pg_only_settings).connect_kwargs(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA processing CASCADE")
    with pytest.raises(SchemaOutdated) as info:
        open_database(pg_only_settings)
    assert "'processing'" in info.value.message and "no schema yet" in info.value.message
    assert "tg-parser init" in (info.value.hint or "")
    migrations.upgrade(pg_only_settings)  # init repairs it
    open_database(pg_only_settings).close()


def _run_sql(settings: Settings, store: str, statement: str, params: tuple = ()) -> None:
    if dialect_of(settings) == "sqlite":
        conn = sqlite3.connect(store_path(settings.db_sqlite_dir, store))
        try:
            conn.execute(statement.replace("%s", "?"), params)
            conn.commit()
        finally:
            conn.close()
    else:
        with psycopg.connect(**pg_target(settings).connect_kwargs(), autocommit=True) as conn:
            conn.execute(f"SET search_path TO {store}")
            conn.execute(statement, params)


def test_migration_unknown_to_this_tool_is_refused(settings: Settings) -> None:
    _run_sql(
        settings,
        "raw",
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) VALUES (%s, %s, %s)",
        ("h", "9999.from_the_future", datetime(2030, 1, 1)),
    )
    with pytest.raises(ConfigError, match=r"9999\.from_the_future") as info:
        open_database(settings)
    assert "upgrade tg-parser" in (info.value.hint or "")
    (status,) = migrations.status(settings, ("raw",))
    assert status.unknown == ["9999.from_the_future"]


# --- yoyo's lock ------------------------------------------------------------------------------------


def plant_lock(
    settings: Settings,
    store: str,
    pid: int,
    *,
    host: str | None = None,
    db_pid: int | None = None,
    since: datetime | None = None,
) -> None:
    """Leave a migration lock row behind (host and db_pid are the columns this version records)."""
    when = (since or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    _run_sql(
        settings,
        store,
        "INSERT INTO yoyo_lock (locked, ctime, pid, host, db_pid) VALUES (1, %s, %s, %s, %s)",
        (when.isoformat(sep=" ") if dialect_of(settings) == "sqlite" else when, pid, host, db_pid),
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_lock_is_reported_with_the_unlock_command_and_unlock_clears_it(settings: Settings) -> None:
    pid = _dead_pid()
    # As a process of this version killed mid-upgrade leaves it: on this host, and on PostgreSQL with a
    # database session that is gone (nobody holds the store's migration advisory lock).
    plant_lock(settings, "ingestion", pid, host=socket.gethostname(), db_pid=pid)
    with pytest.raises(LockHeld) as info:
        migrations.upgrade(settings)
    assert (
        f"pid {pid}" in info.value.message
        and "stale" in info.value.message
        and "'ingestion'" in info.value.message
    )
    assert "tg-parser db unlock --store ingestion" in (info.value.hint or "")
    assert info.value.exit_code == EXIT_LOCKED
    with pytest.raises(LockHeld):
        migrations.rollback(settings, "ingestion")
    status = {s.store: s for s in migrations.status(settings)}
    assert status["ingestion"].lock is not None and status["ingestion"].lock["stale"] is True
    assert status["raw"].lock is None
    removed = migrations.unlock(settings, "ingestion")
    assert removed is not None and removed["pid"] == pid
    assert migrations.unlock(settings, "ingestion") is None  # nothing left
    assert migrations.upgrade(settings) == {s: [] for s in STORES}
    assert all(s.lock is None for s in migrations.status(settings))


def test_live_lock_asks_to_wait(settings: Settings) -> None:
    import os

    plant_lock(settings, "raw", os.getpid())  # a lock row as yoyo writes it: no host, no session
    with pytest.raises(LockHeld) as info:
        migrations.upgrade(settings)
    assert "being migrated by another process" in info.value.message
    assert "unlock" not in (info.value.hint or "")
    with pytest.raises(LockHeld, match="may still be running"):
        migrations.unlock(settings, "raw")
    assert migrations.unlock(settings, "raw", force=True) is not None


# --- unreachable servers ----------------------------------------------------------------------------

SECRET = "p@ss:w%rd;'\""


def _assert_no_secret(exc: BaseException) -> None:
    encoded = quote(SECRET, safe="")
    for text in (str(exc), repr(exc), getattr(exc, "message", ""), getattr(exc, "hint", "") or ""):
        assert SECRET not in text and encoded not in text, text
    assert exc.__cause__ is None and exc.__suppress_context__  # the driver's text is not chained in


def _parts(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "db_type": "postgres",
        "db_host": PG_HOST,
        "db_port": PG_PORT,
        "db_user": PG_USER,
        "db_name": "postgres",
        "db_password": SECRET,
        "db_connect_timeout": 3,
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


def test_unreachable_port_names_host_and_port_without_password() -> None:
    settings = _parts(db_port=1)
    for action in (
        lambda: open_database(settings),
        lambda: migrations.upgrade(settings),
        lambda: migrations.status(settings),
    ):
        with pytest.raises(DatabaseUnavailable) as info:
            action()
        assert f"{PG_HOST}:1" in info.value.message
        _assert_no_secret(info.value)


def test_unreachable_database_url_names_host_and_port_without_password() -> None:
    url = f"postgresql://someone:{quote(SECRET, safe='')}@{PG_HOST}:1/db?connect_timeout=3"
    settings = load_settings(_env_file=None, db_type="postgres", database_url=url)
    assert pg_target(settings).password == SECRET  # decoded, passed as a keyword, never rebuilt into a URL
    with pytest.raises(DatabaseUnavailable) as info:
        open_database(settings)
    assert f"someone@{PG_HOST}:1/db" in info.value.message
    _assert_no_secret(info.value)


@pytest.mark.postgres
def test_wrong_user_names_host_and_port_without_password() -> None:
    from conftest import require_postgres

    require_postgres()
    settings = _parts(db_user="tgp_no_such_role")
    with pytest.raises(DatabaseUnavailable) as info:
        open_database(settings)
    assert f"{PG_HOST}:{PG_PORT}" in info.value.message and "tgp_no_such_role" in info.value.message
    _assert_no_secret(info.value)
    with pytest.raises(DatabaseUnavailable) as info:
        migrations.upgrade(settings)
    _assert_no_secret(info.value)


def test_a_password_echoed_by_the_driver_is_masked() -> None:
    target = pg_target(_parts())
    error = describe_connect_error(target, psycopg.OperationalError(f"auth failed for password {SECRET}"))
    assert "***" in error.message
    assert SECRET not in error.one_line()


def test_password_is_kept_out_of_settings_repr() -> None:
    settings = _parts(db_password=SecretStr(SECRET))
    assert SECRET not in repr(settings) and SECRET not in repr(pg_target(settings))
