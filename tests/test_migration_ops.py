"""Operating migrations on a shared database: rolling upgrades (older code keeps running across additive
migrations and refuses the rest), the migration lock's staleness decided by host and database session
rather than the local process table, and non-transactional steps for `CREATE INDEX CONCURRENTLY` with the
invalid index a failed build leaves behind detected on the next run.
"""

from __future__ import annotations

import shutil
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from test_migrations import _dead_pid, _run_sql, plant_lock

from tg_parser.config import Settings
from tg_parser.db import migrations
from tg_parser.db.connect import dialect_of, open_database, pg_target
from tg_parser.db.locks import lock_key
from tg_parser.db.resources import DIALECTS, STORES, migrations_root
from tg_parser.domain.models import Source
from tg_parser.errors import ConfigError, LockHeld
from tg_parser.stores import IngestionStore

# --- helpers ----------------------------------------------------------------------------------------


def _tree(tmp_path: Path) -> Path:
    """A copy of the shipped migrations, to which a test adds files a newer tg-parser would ship."""
    root = tmp_path / "migrations"
    shutil.copytree(migrations_root(), root)
    return root


def _add(root: Path, dialect: str, store: str, name: str, forward: str, rollback: str) -> str:
    """Add migration `NNNN.name` after the store's latest one; returns its id."""
    latest = migrations.expected_ids(dialect, store, root)[-1]
    folder = root / dialect / store
    (folder / f"{name}.sql").write_text(f"-- depends: {latest}\n{forward}", encoding="utf-8")
    (folder / f"{name}.rollback.sql").write_text(rollback, encoding="utf-8")
    return name


def _pg(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(**pg_target(settings).connect_kwargs(), autocommit=True)


# --- compatibility markers --------------------------------------------------------------------------


def test_every_shipped_migration_declares_the_same_compatibility_on_both_dialects() -> None:
    for store in STORES:
        ids = {d: migrations.expected_ids(d, store) for d in DIALECTS}
        assert ids["sqlite"] == ids["postgres"], store
        for mid in ids["sqlite"]:
            values = {
                migrations.compatibility_of(migrations_root() / d / store / f"{mid}.sql") for d in DIALECTS
            }
            assert len(values) == 1, (store, mid, values)
    assert (
        migrations.compatibility_of(migrations_root() / "sqlite" / "raw" / "0001.initial.sql") == "breaking"
    )
    assert (
        migrations.compatibility_of(migrations_root() / "postgres" / "processing" / "0003.api.sql")
        == "additive"
    )


def test_a_marker_is_read_from_the_leading_comments_only_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "0009.x.sql"
    path.write_text("-- depends: 0008.y\n-- compatibility: Additive (a new table)\nCREATE TABLE t (a int);\n")
    assert migrations.compatibility_of(path) == "additive"
    path.write_text("CREATE TABLE t (a int);\n-- compatibility: additive\n")
    assert migrations.compatibility_of(path) == "breaking"  # after the first statement: not a header
    path.write_text("-- no marker\nCREATE TABLE t (a int);\n")
    assert migrations.compatibility_of(path) == "breaking"
    path.write_text("-- compatibility: mostly\nCREATE TABLE t (a int);\n")
    with pytest.raises(ConfigError, match=r"0009\.x\.sql.*mostly") as info:
        migrations.compatibility_of(path)
    assert "additive" in (info.value.hint or "")


# --- rolling upgrades -------------------------------------------------------------------------------


def test_older_code_runs_across_additive_migrations_and_refuses_a_breaking_one(
    settings: Settings, tmp_path: Path
) -> None:
    """The database is upgraded by a newer tg-parser (the temporary tree); this process runs the older code
    (the shipped tree), as a worker on another host would during a rolling upgrade."""
    dialect = dialect_of(settings)
    root = _tree(tmp_path)
    additive = _add(
        root,
        dialect,
        "raw",
        "0901.notes",
        "-- compatibility: additive (a new table the older code never touches)\n"
        "CREATE TABLE raw_notes (note_id INTEGER PRIMARY KEY, body TEXT);\n",
        "DROP TABLE raw_notes;\n",
    )
    assert migrations.upgrade(settings, ("raw",), root=root) == {"raw": [additive]}

    with open_database(settings) as db:  # accepted: the old code keeps working
        assert db.migration_compatibility("raw")[additive] == "additive"
        assert (
            db.migration_compatibility("raw")["0001.initial"] == "breaking"
        )  # recorded for earlier ones too
        store = IngestionStore(db)
        assert store.add_source(Source(source_id="rolling_upgrade", username="rolling_upgrade"))
        assert [s.source_id for s in store.list_sources()] == ["rolling_upgrade"]
    (status,) = migrations.status(settings, ("raw",))
    assert status.unknown == [additive] and status.unknown_compatibility == {additive: "additive"}

    breaking = _add(
        root,
        dialect,
        "raw",
        "0902.rename",
        "-- compatibility: breaking (renames a column the older code writes)\n"
        "ALTER TABLE raw_notes RENAME COLUMN body TO text_body;\n",
        "ALTER TABLE raw_notes RENAME COLUMN text_body TO body;\n",
    )
    unmarked = _add(
        root,
        dialect,
        "ingestion",
        "0901.unmarked",
        "CREATE TABLE t_unmarked (a INTEGER);\n",
        "DROP TABLE t_unmarked;\n",
    )
    assert migrations.upgrade(settings, ("raw", "ingestion"), root=root) == {
        "raw": [breaking],
        "ingestion": [unmarked],
    }
    with pytest.raises(ConfigError) as info:
        open_database(settings)
    assert "0901.unmarked" in info.value.message and "recorded as breaking" in info.value.message
    assert "upgrade tg-parser" in (info.value.hint or "")

    assert migrations.rollback(settings, "ingestion", root=root) == [unmarked]
    with pytest.raises(ConfigError) as info:
        open_database(settings)
    assert "0902.rename" in info.value.message and "recorded as breaking" in info.value.message

    # Rolled back, the records go with the migrations; the older code is current again.
    assert migrations.rollback(settings, "raw", steps=2, root=root) == [breaking, additive]
    with open_database(settings) as db:
        assert additive not in db.migration_compatibility("raw")
        assert breaking not in db.migration_compatibility("raw")


def test_an_unknown_migration_without_any_record_is_refused(settings: Settings) -> None:
    """Applied by a version that records nothing (or recorded by hand): no record means breaking."""
    _run_sql(
        settings,
        "processing",
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) VALUES (%s, %s, %s)",
        ("h", "0999.future", datetime(2030, 1, 1)),
    )
    with pytest.raises(ConfigError, match=r"0999\.future.*no compatibility record"):
        open_database(settings)
    _run_sql(
        settings,
        "processing",
        "INSERT INTO _yoyo_tg_compat (migration_id, compatibility, recorded_at_utc) VALUES (%s, %s, %s)",
        ("0999.future", "additive", datetime(2030, 1, 1)),
    )
    open_database(settings).close()


# --- the migration lock -----------------------------------------------------------------------------


def test_the_lock_taken_by_an_upgrade_records_this_host_and_its_session(settings: Settings) -> None:
    with migrations._backend(settings, "raw") as backend, backend.lock():
        (status,) = migrations.status(settings, ("raw",))
        lock = status.lock
        assert lock is not None
        assert lock["host"] == socket.gethostname() and lock["stale"] is False
        if dialect_of(settings) == "postgres":
            assert lock["db_pid"] == backend.connection.info.backend_pid
            assert "is migrating" in lock["reason"]
        with pytest.raises(LockHeld, match="being migrated by another process"):
            migrations.upgrade(settings, ("raw",))
    (status,) = migrations.status(settings, ("raw",))
    assert status.lock is None
    if dialect_of(settings) == "postgres":  # the advisory lock went with it: a new upgrade takes it
        assert migrations.upgrade(settings, ("raw",)) == {"raw": []}


def test_a_dead_local_pid_is_stale(settings: Settings) -> None:
    pid = _dead_pid()
    # On PostgreSQL the row names a session that is gone (nobody holds the advisory lock).
    plant_lock(settings, "raw", pid, host=socket.gethostname(), db_pid=pid)
    (status,) = migrations.status(settings, ("raw",))
    assert status.lock is not None and status.lock["stale"] is True
    with pytest.raises(LockHeld, match="stale migration lock") as info:
        migrations.upgrade(settings, ("raw",))
    assert "tg-parser db unlock --store raw" in (info.value.hint or "")


def test_a_lock_from_another_host_is_not_stale_however_old(settings: Settings) -> None:
    """Its pid means nothing here, and a migration may run for hours (an index build on a big table)."""
    pid = _dead_pid()  # no such process on this host, which must not matter
    since = datetime.now(UTC) - timedelta(days=2)
    if dialect_of(settings) == "sqlite":
        plant_lock(settings, "raw", pid, host="other-host.example", since=since)
        (status,) = migrations.status(settings, ("raw",))
        assert status.lock is not None and status.lock["stale"] is False
        assert "another host" in status.lock["reason"]
        with pytest.raises(LockHeld) as info:
            migrations.upgrade(settings, ("raw",))
        assert "other-host.example" in info.value.message and "stale" not in info.value.message
        with pytest.raises(LockHeld, match="may still be running"):  # nor removed without --force
            migrations.unlock(settings, "raw")
        return
    with _pg(settings) as holder:  # the other host's migrating session, alive
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("migrate:raw"),))
        plant_lock(
            settings, "raw", pid, host="other-host.example", db_pid=holder.info.backend_pid, since=since
        )
        (status,) = migrations.status(settings, ("raw",))
        assert status.lock is not None and status.lock["stale"] is False
        with pytest.raises(LockHeld) as info:
            migrations.upgrade(settings, ("raw",))
        assert "other-host.example" in info.value.message and "stale" not in info.value.message
    # That session ended (its host crashed): now it is stale, whatever host wrote the row.
    (status,) = migrations.status(settings, ("raw",))
    assert status.lock is not None and status.lock["stale"] is True


@pytest.mark.postgres
def test_a_lock_row_without_a_session_is_stale_only_past_the_bound_with_no_migrator_connected(
    pg_only_settings: Settings,
) -> None:
    """Rows written by yoyo itself or an older tg-parser record no session: age decides, bounded by
    DB_MIGRATION_LOCK_STALE_AFTER, unless a `*-migrate` session is still connected."""
    settings = pg_only_settings
    plant_lock(settings, "raw", 4242, since=datetime.now(UTC) - timedelta(minutes=10))
    (status,) = migrations.status(settings, ("raw",))
    assert status.lock is not None and status.lock["stale"] is False
    short = settings.model_copy(update={"db_migration_lock_stale_after": 300})
    (status,) = migrations.status(short, ("raw",))
    assert status.lock is not None and status.lock["stale"] is True
    with psycopg.connect(**pg_target(settings).connect_kwargs(), application_name="old-tool-migrate"):
        (status,) = migrations.status(short, ("raw",))
        assert status.lock is not None and status.lock["stale"] is False


# --- non-transactional steps: CREATE INDEX CONCURRENTLY ---------------------------------------------

_CONCURRENT = (
    "-- transactional: false\n"
    "-- compatibility: additive (an index)\n"
    "CREATE INDEX CONCURRENTLY raw_messages_probe_idx ON raw_messages (message_id);\n"
)


@pytest.mark.postgres
def test_a_concurrent_index_migration_applies_and_rolls_back(
    pg_only_settings: Settings, tmp_path: Path
) -> None:
    settings = pg_only_settings
    root = _tree(tmp_path)
    mid = _add(
        root,
        "postgres",
        "raw",
        "0901.probe_index",
        _CONCURRENT,
        "DROP INDEX CONCURRENTLY raw_messages_probe_idx;\n",
    )
    # Inside a transaction PostgreSQL refuses CONCURRENTLY: applying at all proves the step ran outside one.
    assert migrations.upgrade(settings, ("raw",), root=root) == {"raw": [mid]}
    with _pg(settings) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass('raw.raw_messages_probe_idx')"
        ).fetchone()
        assert row == (True,)
    assert migrations.rollback(settings, "raw", root=root) == [mid]
    with _pg(settings) as conn:
        assert conn.execute("SELECT to_regclass('raw.raw_messages_probe_idx')").fetchone() == (None,)


@pytest.mark.postgres
def test_a_failed_concurrent_build_is_reported_and_refused_until_dropped(
    pg_only_settings: Settings, tmp_path: Path
) -> None:
    settings = pg_only_settings
    root = _tree(tmp_path)
    mid = _add(
        root,
        "postgres",
        "raw",
        "0901.unique_probe",
        "-- transactional: false\n-- compatibility: additive\n"
        "CREATE UNIQUE INDEX CONCURRENTLY dup_probe_v_idx ON dup_probe (v);\n",
        "DROP INDEX CONCURRENTLY dup_probe_v_idx;\n",
    )
    with _pg(settings) as conn:
        conn.execute("CREATE TABLE raw.dup_probe (v integer)")
        conn.execute("INSERT INTO raw.dup_probe VALUES (1), (1)")

    with pytest.raises(migrations.InvalidIndex) as info:
        migrations.upgrade(settings, ("raw",), root=root)
    assert "a migration failed" in info.value.message and "raw.dup_probe_v_idx" in info.value.message
    assert "DROP INDEX CONCURRENTLY raw.dup_probe_v_idx" in (info.value.hint or "")
    (status,) = migrations.status(settings, ("raw",))
    assert status.invalid_indexes == ["raw.dup_probe_v_idx"] and status.lock is None

    # The rerun refuses before running anything (CREATE INDEX would only say "already exists").
    with pytest.raises(migrations.InvalidIndex) as info:
        migrations.upgrade(settings, ("raw",), root=root)
    assert "invalid index" in info.value.message and "raw.dup_probe_v_idx" in info.value.message

    with _pg(settings) as conn:  # what the hint says: fix the cause, drop the invalid index
        conn.execute("DELETE FROM raw.dup_probe WHERE ctid = (SELECT min(ctid) FROM raw.dup_probe)")
        conn.execute("DROP INDEX CONCURRENTLY raw.dup_probe_v_idx")
    assert migrations.upgrade(settings, ("raw",), root=root) == {"raw": [mid]}
    assert migrations.rollback(settings, "raw", root=root) == [mid]


def test_a_running_queue_worker_stops_when_a_breaking_migration_lands(
    settings: Settings, tmp_path: Path
) -> None:
    """Long-running processes check again before each poll: an older worker must not keep writing once a
    migration it does not know, and that is not additive, is applied."""
    from tg_parser.pipeline.queue import QueueWorker

    with open_database(settings) as db:
        worker = QueueWorker(db, settings, out_dir=tmp_path / "out")
        _run_sql(
            settings,
            "processing",
            "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) VALUES (%s, %s, %s)",
            ("h", "0999.reshape", datetime(2030, 1, 1)),
        )
        with pytest.raises(migrations.SchemaIncompatible, match=r"0999\.reshape"):
            worker.run_forever()  # raises on its first poll instead of logging and retrying forever
