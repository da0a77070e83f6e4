"""Cron safety: one ingestion per source at a time, across processes (and, on PostgreSQL, hosts)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Any

import psycopg
import pytest
from conftest import sqlite_settings
from support import crash_child
from support.child_runs import (
    SEED,
    add_telegram_sources,
    child_env,
    read_until,
    reference_run,
    snapshot,
    start_child,
)
from support.waiting import wait_for
from telethon.sessions import StringSession

from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.locks import CONNECTION_BROKE, ROW_TAKEN_OVER, LockLost, lock_file, lock_key
from tg_parser.ingestion.client import session_lock_name
from tg_parser.ingestion.errors import SourceLocked
from tg_parser.ingestion.locks import lock_name, source_lock

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \| (WARNING|ERROR) \| ")


def test_lock_excludes_a_second_holder_and_is_released(db, settings):
    other = open_database(settings)  # another process's connection pool / file handle
    try:
        with source_lock(db, "chan"):
            with pytest.raises(SourceLocked) as caught, source_lock(other, "chan"):
                pass
            assert "being ingested by another run" in caught.value.one_line()
            assert caught.value.exit_code == 4
            with source_lock(other, "another-source"):
                pass  # locks are per source
        with source_lock(other, "chan"):
            pass  # released when the holder's block ended
    finally:
        other.close()


def test_lock_is_released_when_the_block_fails(db, settings):
    with pytest.raises(RuntimeError), source_lock(db, "chan"):
        raise RuntimeError("boom")
    with source_lock(db, "chan"):
        pass


@pytest.mark.slow
def test_lock_held_by_another_process(settings, tmp_path):
    """A real second process holds the lock; this one is refused at once, then succeeds after it exits."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from tg_parser.config import load_settings
        from tg_parser.db.connect import open_database
        from tg_parser.ingestion.locks import source_lock
        settings = load_settings(_env_file=None, **{settings.model_dump(mode="json", include={"db_type", "db_sqlite_dir", "db_host", "db_port", "db_user", "db_name"})!r})
        db = open_database(settings)
        with source_lock(db, "chan"):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        db = open_database(settings)
        try:
            with pytest.raises(SourceLocked) as caught, source_lock(db, "chan"):
                pass
            if settings.db_type == "sqlite":
                assert f"pid {holder.pid}" in caught.value.message
            else:
                assert "PostgreSQL backend pid" in caught.value.message
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(timeout=30)
            with source_lock(db, "chan"):
                pass
        finally:
            db.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_killed_holder_leaves_no_lock(settings):
    script = textwrap.dedent(
        f"""
        import os
        from tg_parser.config import load_settings
        from tg_parser.db.connect import open_database
        from tg_parser.ingestion.locks import source_lock
        settings = load_settings(_env_file=None, **{settings.model_dump(mode="json", include={"db_type", "db_sqlite_dir", "db_host", "db_port", "db_user", "db_name"})!r})
        db = open_database(settings)
        with source_lock(db, "chan"):
            os._exit(9)  # no finally, no cleanup: like kill -9
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    db = open_database(settings)
    try:
        with source_lock(db, "chan"):
            pass
    finally:
        db.close()


def test_lock_keys_and_file_names_are_stable_and_safe(tmp_path):
    assert lock_key(lock_name("durov")) == lock_key(lock_name("durov")) != lock_key(lock_name("Durov"))
    assert -(2**63) <= lock_key("x") < 2**63
    path = lock_file(tmp_path, lock_name("../../etc/passwd:evil name"))
    assert path.parent == tmp_path / "locks" and path.name.startswith("ingest_") and "/" not in path.name
    assert lock_file(tmp_path, "a/b") != lock_file(tmp_path, "a_b")


def test_lock_key_is_the_one_earlier_versions_used():
    # A host still on the previous release takes the same advisory lock during a rolling upgrade.
    import hashlib

    digest = hashlib.blake2b(b"tg-parser:ingest:durov", digest_size=8).digest()
    assert lock_key(lock_name("durov")) == int.from_bytes(digest, "big", signed=True)


# --- a lock lost while its run goes on --------------------------------------------------------------


def _connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_user,
        dbname=settings.db_name,
        autocommit=True,
    )


def advisory_holder(settings: Settings, name: str) -> int | None:
    """The pid of the backend holding the advisory lock `name` in the test's database, or None."""
    key = lock_key(name)
    with _connect(settings) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s AND objid = %s AND objsubid = 1",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else int(row[0])


def terminate_advisory_holder(settings: Settings, name: str) -> int | None:
    """pg_terminate_backend the backend holding the advisory lock `name`; its pid (None when no backend
    holds it), once that backend has gone."""
    pid = advisory_holder(settings, name)
    if pid is None:
        return None
    with _connect(settings) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        wait_for(
            lambda: (
                conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
                == (0,)
            ),
            30,
            what=f"backend {pid} to end",
        )
    return pid


def test_advisory_lock_is_lost_with_its_connection(pg_only_settings):
    db = open_database(pg_only_settings)
    other = open_database(pg_only_settings)
    try:
        with db.hold_lock("ingest:chan") as held:
            held.check()  # held: nothing raised, and checking twice costs nothing more than a round trip
            held.check()
            assert terminate_advisory_holder(pg_only_settings, "ingest:chan") is not None
            with pytest.raises(LockLost) as caught:
                held.check()
            line = caught.value.one_line()
            assert "'ingest:chan'" in line and CONNECTION_BROKE in line and "run it again" in line
            assert caught.value.exit_code == 1
            with source_lock(other, "chan"):  # it really is free: another run takes it
                pass
        with db.hold_lock("ingest:chan") as again:  # the pool replaced the broken connection
            again.check()
    finally:
        other.close()
        db.close()


@pytest.mark.slow
def test_table_lock_taken_over_is_lost(pg_only_settings):
    """DB_POOL_MODE=transaction: the lock is a row. Another run taking it over (as after it expired) is
    seen by the heartbeat; check() raises from then on, and the end of the block leaves the taker's row."""
    db = open_database(pg_only_settings.model_copy(update={"db_pool_mode": "transaction"}))
    try:
        db.lock_ttl = 3.0  # type: ignore[attr-defined]  # a beat every second
        with _connect(pg_only_settings) as conn:
            with db.hold_lock("ingest:chan") as held:
                held.check()
                taken = conn.execute(
                    "UPDATE ingestion.named_locks SET owner = 'another-run', host = 'elsewhere'"
                    " WHERE name = 'ingest:chan'"
                ).rowcount
                assert taken == 1

                def lost() -> bool:
                    try:
                        held.check()
                    except LockLost as exc:
                        assert ROW_TAKEN_OVER in exc.one_line()
                        return True
                    return False

                wait_for(lost, 30, what="the heartbeat to see the lock taken over")
            owner = conn.execute(
                "SELECT owner FROM ingestion.named_locks WHERE name = 'ingest:chan'"
            ).fetchone()
            assert owner == ("another-run",)  # the loser did not delete the taker's row
    finally:
        db.close()


STORE_BATCH = "tg_parser.stores.raw:RawStore.store_batch"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["source", "session"])
def test_ingest_that_loses_a_lock_stops_and_a_rerun_completes(
    which, pg_only_settings, sqlite_dir, monkeypatch
):
    """A real `ingest` paused before its second batch's rows are written; the backend holding the source
    lock (or the Telegram session lock) is terminated; the run goes on, meets the loss before that batch
    commits and stops with one clear line. What is stored is whole committed batches up to the cursor; a re-run completes the set
    exactly as an uninterrupted run does."""
    spec: dict[str, Any] = {"world": {"seed": SEED}, "marks": [STORE_BATCH], "argv": ["ingest", "--all"]}
    reference = sqlite_settings(sqlite_dir)
    add_telegram_sources(reference)
    ref_env = {k: v for k, v in child_env(reference).items() if k.startswith(("TELEGRAM_", "INGEST_"))}
    reference_run(reference, spec, monkeypatch, ref_env)
    expected = snapshot(reference)

    pg = pg_only_settings
    add_telegram_sources(pg)
    session = StringSession(crash_child.telegram_env()["TELEGRAM_SESSION"])
    # store_batch:before of the second batch: one batch committed, the next one's transaction open
    pause_at = 3
    proc = start_child(pg, {**spec, "pause_at": pause_at}, stdin=subprocess.PIPE)
    try:
        read_until(proc, f"paused {pause_at}", timeout=90)
        held = [s for s in expected["sources"] if advisory_holder(pg, lock_name(s)) is not None]
        assert len(held) == 1, held  # one source is being ingested
        (lost,) = held
        name = lock_name(lost) if which == "source" else session_lock_name(session)
        assert terminate_advisory_holder(pg, name) is not None
        out, err = proc.communicate("go\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err
    assert f"lost the lock '{name}' ({CONNECTION_BROKE})" in errors[0], errors[0]
    # The lost source met the loss in its second batch (the first one attempted). A lost source lock fails
    # that source and the run goes on to the next; a lost session lock stops the run there.
    attempted = [
        line.split(":")[0] for line in out.splitlines() if line.startswith(tuple(expected["sources"]))
    ]
    assert attempted[0] == lost, out
    assert len(attempted) == (len(expected["sources"]) if which == "source" else 1), out
    assert all(LOG_LINE.match(line) for line in err.splitlines() if line.strip() and line not in errors), err

    state = snapshot(pg)
    for ref, row in state["messages"].items():
        assert row == expected["messages"][ref], f"half-written {ref}"
    channel_id, *_ = expected["sources"][lost]
    cursor = state["sources"][lost][3]
    assert 0 < cursor < expected["sources"][lost][3]  # a batch was committed, and the run stopped early

    def posts(snap: dict[str, Any]) -> set[str]:
        return {
            ref
            for ref, m in snap["messages"].items()
            if m["channel_id"] == channel_id and m["message_type"] == "post" and m["message_id"] <= cursor
        }

    assert posts(state) == posts(expected)  # every post up to the cursor, and none past it
    assert all(m["message_id"] <= cursor for m in state["messages"].values() if m["channel_id"] == channel_id)

    rerun = start_child(pg, spec)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    state = snapshot(pg)
    for key in ("messages", "versions", "sources", "cursors", "pending"):
        assert state[key] == expected[key], f"{key} differ"


def test_export_import_that_loses_its_source_lock_stops_after_the_last_whole_batch(
    pg_only_settings, tmp_path, monkeypatch
):
    from test_export_import import all_rows, chat, importer, message, write

    from tg_parser.stores import IngestionStore, RawStore

    db = open_database(pg_only_settings)
    try:
        path = write(tmp_path / "result.json", chat(messages=[message(i, f"post {i}") for i in range(1, 31)]))
        calls: list[int] = []
        real = RawStore.store_tuples

        def store_tuples(self: RawStore, rows: Any) -> Any:
            calls.append(len(rows))
            if len(calls) == 2:  # the second batch: the first is committed
                assert terminate_advisory_holder(pg_only_settings, lock_name("export-42")) is not None
            return real(self, rows)

        monkeypatch.setattr(RawStore, "store_tuples", store_tuples)
        with pytest.raises(LockLost) as caught:
            importer(db, pg_only_settings, batch_size=10).run(path)
        assert "'ingest:export-42'" in caught.value.one_line()
        assert sorted(all_rows(db, 42)) == list(range(1, 11))  # the first batch whole, nothing of the second
        source = IngestionStore(db).get_source("export-42")
        assert source is not None and source.last_post_id == 0  # the cursor moves only after the whole file
        monkeypatch.setattr(RawStore, "store_tuples", real)
        importer(db, pg_only_settings, batch_size=10).run(path)  # a re-run completes
        assert sorted(all_rows(db, 42)) == list(range(1, 31))
    finally:
        db.close()
