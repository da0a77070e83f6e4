"""The bulk migrator end to end: a SQLite install written through the stores → PostgreSQL, for real."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from tests.conftest import sqlite_settings
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database, pg_target
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.domain.models import (
    Anchor,
    Entity,
    ProcessedDocument,
    RawMessage,
    RunReport,
    Source,
    SupportingItem,
    TopicBundle,
    TopicCard,
)
from tg_parser.stores import IngestionStore, ProcessingStore, RawStore
from tg_parser.stores.api import ApiStore
from tg_parser.stores.run_queue import RunQueueStore
from tg_parser.stores.topics import ChannelState, TopicStore
from tg_parser.transfer import TransferOptions, database_checksums, run_transfer
from tg_parser.transfer import runner as runner_module
from tg_parser.transfer import verify as verify_module

T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
MESSAGES = 300  # more than 2 × 64 key ranges, so narrowing works on ranges


def tricky_text(i: int) -> str:
    return [
        "Привет, мир! Hello world.",
        "tab\there, newline\nand CR\r, back\\slash, \\N literally, quote ' \" and emoji 😀",
        "",
        "\\.",
        "ends with backslash \\",
        "\u2028 line separator and \u007f delete",
    ][i % 6] + f" #{i}"


def populate(settings: Settings, messages: int = MESSAGES) -> dict[str, Any]:
    """Write every table of the three stores through the application's own stores."""
    db = open_database(settings)
    try:
        ingestion, raw, processing = IngestionStore(db), RawStore(db), ProcessingStore(db)
        ingestion.add_source(
            Source(
                source_id="chan1",
                channel_id=1001,
                username="chan_one",
                title="Канал «один»",
                include_comments=True,
                since_date=T0 - timedelta(days=30),
                access_hash=-(2**62),
            )
        )
        ingestion.add_source(Source(source_id="export:Архив", kind="export", title=None))
        ingestion.record_failure("export:Архив", "boom\ttab\nline", permanent=False)
        ingestion.advance_comment_cursor("chan1", 5, 10)
        ingestion.open_discussion("chan1", chat_id=2002, access_hash=-(2**62) + 1, top_id=40, restart=True)
        ingestion.mark_discussion_unreadable(
            "chan1", "ChannelPrivateError: «закрыт»", chat_id=2002, access_hash=-(2**62) + 1
        )
        ingestion.remember_discussion_threads("chan1", {41: (5, T0), 43: (None, None)})
        db.execute(
            "comment_thread_mark_unavailable",
            {"source_id": "chan1", "thread_id": 7, "reason": "MSG_ID_INVALID", "now": T0},
        )
        run_pk = ingestion.start_run("chan1", "run-1")
        ingestion.finish_run(run_pk, success=True, counts={"posts_fetched": 3, "posts_inserted": 3})
        ingestion.finish_run(
            ingestion.start_run("chan1", "run-2"), success=False, counts={}, error=RuntimeError("x")
        )
        batch = []
        for i in range(messages):
            batch.append(
                RawMessage.build(
                    channel_id=1001,
                    message_type="post" if i % 5 else "comment",
                    message_id=i + 1,
                    source_id="chan1",
                    date=T0 + timedelta(minutes=i),
                    text=tricky_text(i),
                    views=i * 10 if i % 3 else None,
                    media={"type": "photo", "size": [1.0, 2.5], "caption": "фото"} if i % 7 == 0 else None,
                    media_type="photo" if i % 7 == 0 else None,
                    raw_payload={
                        "id": i + 1,
                        "message": tricky_text(i),
                        "score": 0.1 * i,
                        "one": 1.0,
                        "big": 2**62,
                        "nested": {"z": [True, None, "ü"], "a": {"bb": 1, "a": 2}},
                        "é": "accent key",
                    },
                )
            )
        raw.store_batch(batch)
        edited = [
            # an edit, and new counters (raw_message_counters)
            m.model_copy(
                update={"text": m.text + " (edited)", "edit_date": T0 + timedelta(days=1), "views": 1000 + i}
            )
            for i, m in enumerate(batch[:20])
        ]
        raw.store_batch(edited)
        refs = [m.source_ref for m in batch]
        processing.upsert_documents(
            [
                ProcessedDocument(
                    source_ref=ref,
                    channel_id=1001,
                    message_date=T0,
                    text_clean=f"clean {i} — чистый",
                    summary=None if i % 2 else "summary",
                    topics=["news", "новости"],
                    entities=[Entity(type="org", value="Telegram", confidence=0.5)],
                    language="ru",
                    model="m",
                    prompt_id="p",
                    pipeline_version="1",
                    input_tokens=i,
                    output_tokens=None,
                    metadata={"b": 1, "a": [1.0, 1]},
                )
                for i, ref in enumerate(refs[: len(refs) // 2])
            ]
        )
        processing.record_failure(
            refs[-10],
            channel_id=1001,
            error_class="Timeout",
            error_message="slow",
            permanent=True,
            run_id="r1",
        )
        processing.record_failure(
            refs[-11], channel_id=1001, error_class="no_text", error_message="", permanent=True, skipped=True
        )
        processing.claim(refs[-9:-6], "worker-1", timedelta(minutes=5))
        TopicStore(db).replace_channel_topics(
            1001,
            [
                TopicCard(
                    topic_id=f"topic:{refs[0]}",
                    channel_id=1001,
                    title="Тема",
                    anchors=[Anchor(source_ref=refs[0], score=0.9)],
                    tags=["a"],
                    metadata={"k": "v"},
                )
            ],
            [
                TopicBundle(
                    topic_id=f"topic:{refs[0]}",
                    channel_id=1001,
                    items=[SupportingItem(source_ref=refs[1], score=0.4)],
                )
            ],
        )
        TopicStore(db).save_channel_state(
            ChannelState(channel_id=1001, corpus_as_of=T0, computed_at=T0, strategy="llm", model="m")
        )
        report = RunReport(run_id="run-x", kind="process", started_at=T0, params={"limit": 5})
        processing.start_run(report)
        processing.finish_run(
            report.model_copy(update={"status": "ok", "counts": {"ok": 5}, "finished_at": T0})
        )
        # A running run's heartbeat and a 429 pause shared by processes (processing 0006).
        processing.start_run(RunReport(run_id="run-live", kind="process", started_at=T0))
        processing.hold_run("run-live", "хост-1:42:run-live", timedelta(minutes=1))
        processing.publish_llm_pause("ab" * 32, T0 + timedelta(seconds=30), T0)
        # The HTTP API's tables: a key (only its hash), a rate-limit window, a queued run with a webhook.
        api = ApiStore(db)
        api.add_key("0123456789ab", "ключ-1", "write", "f" * 64)
        api.hit("0123456789ab", "read", 1_700_000_000, 7)
        RunQueueStore(db).enqueue(
            "api-run-1",
            ["process", "export"],
            source_id="chan1",
            options={"processor": "extractive", "concurrency": 2},
            requested_by="ключ-1",
            webhook_url="https://example.org/hook?a=1&b='x'",
        )
    finally:
        db.close()
    if settings.db_type == "sqlite":
        # The lock table is only written on PostgreSQL in DB_POOL_MODE=transaction; a row copies anyway.
        with closing(sqlite3.connect(settings.db_sqlite_dir / STORE_FILES["ingestion"])) as conn, conn:
            conn.execute(
                "INSERT INTO named_locks VALUES ('ingest:chan1', 'f00d', 'хост-1', 42, ?, ?)",
                ("2025-01-01T00:00:00.000000Z", "2025-01-01T00:01:00.000000Z"),
            )
    return {"refs": refs}


def table_counts_sqlite(directory: Path) -> dict[str, int]:
    counts = {}
    for store, name in STORE_FILES.items():
        conn = sqlite3.connect(directory / name)
        for (table,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND name NOT LIKE '%yoyo%'"
        ):
            counts[f"{store}.{table}"] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        conn.close()
    return counts


def table_counts_pg(settings: Settings) -> dict[str, int]:
    counts = {}
    with psycopg.connect(**pg_target(settings).connect_kwargs()) as conn:
        for schema, table in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN"
            " ('ingestion', 'raw', 'processing') AND table_name NOT LIKE '%yoyo%' AND table_type = 'BASE TABLE'"
        ).fetchall():
            counts[f"{schema}.{table}"] = conn.execute(
                f'SELECT count(*) FROM "{schema}"."{table}"'
            ).fetchone()[0]
    return counts


def options(sqlite_dir: Path, settings: Settings, **kwargs: Any) -> TransferOptions:
    kwargs.setdefault("workers", 1)
    return TransferOptions(source_dir=sqlite_dir, target=pg_target(settings), **kwargs)


@pytest.fixture
def populated(sqlite_dir: Path) -> dict[str, Any]:
    data = populate(sqlite_settings(sqlite_dir))
    counts = table_counts_sqlite(sqlite_dir)
    assert counts and all(counts.values()), f"every table must hold rows: {counts}"
    return data


def read_everything(settings: Settings, refs: list[str]) -> dict[str, Any]:
    """What the application reads back through its stores."""
    db = open_database(settings)
    try:
        ingestion, raw, processing = IngestionStore(db), RawStore(db), ProcessingStore(db)
        return {
            "sources": ingestion.list_sources(),
            "cursors": ingestion.comment_cursors("chan1"),
            "discussion": ingestion.discussion_cursors(),
            "roots": ingestion.discussion_threads("chan1", [41, 42, 43]),
            "unavailable": db.fetch_all("comment_threads_unavailable_list", {"source_id": "chan1"}),
            "runs": [r.model_copy(update={"id": None}) for r in ingestion.recent_runs("chan1")],
            "messages": [raw.get(ref) for ref in refs],
            "versions": [[v.model_copy(update={"id": None}) for v in raw.versions(ref)] for ref in refs[:25]],
            "documents": [processing.get_document(ref) for ref in refs[:160]],
            "failures": processing.failures(),
            "leases": processing.leases(),
            "topics": TopicStore(db).all_topics(),
            "bundle": TopicStore(db).get_bundle(f"topic:{refs[0]}"),
            "reports": processing.recent_runs(),
            "channel_state": TopicStore(db).channel_state(1001),
        }
    finally:
        db.close()


def _file_digests(directory: Path) -> dict[str, str]:
    import hashlib

    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in STORE_FILES.values()
    }


@pytest.mark.slow
def test_transfer_copies_every_table_and_the_application_reads_the_same(
    populated, sqlite_dir, pg_only_settings
):
    for name in STORE_FILES.values():  # fold the WAL into the files, so their bytes can be compared
        conn = sqlite3.connect(sqlite_dir / name)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    untouched = _file_digests(sqlite_dir)
    report = run_transfer(options(sqlite_dir, pg_only_settings, workers=2))
    assert _file_digests(sqlite_dir) == untouched  # the migrator never writes to the source
    assert report.status == "ok", report.error
    assert report.committed and report.exit_code == 0
    for entry in report.tables:
        assert entry.match, entry
        assert entry.rows_source == entry.rows_target
        assert entry.checksum_source == entry.checksum_target
    assert table_counts_pg(pg_only_settings) == table_counts_sqlite(sqlite_dir)

    # db checksum prints the same figures on both dialects.
    assert (
        database_checksums(sqlite_settings(sqlite_dir))["tables"]
        == database_checksums(pg_only_settings)["tables"]
    )

    refs = populated["refs"]
    before = read_everything(sqlite_settings(sqlite_dir), refs)
    after = read_everything(pg_only_settings, refs)
    assert after == before

    # Sequences continue after the largest copied id.
    db = open_database(pg_only_settings)
    try:
        new_id = IngestionStore(db).start_run("chan1", "run-3")
    finally:
        db.close()
    assert new_id == 3


@pytest.mark.slow
def test_a_row_changed_after_the_load_is_named(populated, sqlite_dir, pg_only_settings, monkeypatch):
    assert run_transfer(options(sqlite_dir, pg_only_settings)).status == "ok"
    refs = populated["refs"]
    with psycopg.connect(**pg_target(pg_only_settings).connect_kwargs()) as conn:
        conn.execute("UPDATE raw.raw_messages SET views = 424242 WHERE source_ref = %s", (refs[137],))
        conn.execute(
            "UPDATE raw.raw_messages SET raw_payload = jsonb_set(raw_payload, '{one}', '1') WHERE source_ref = %s",
            (refs[250],),
        )
        conn.execute("DELETE FROM processing.work_leases WHERE source_ref = %s", (refs[-8],))
        conn.execute(
            "INSERT INTO processing.topic_channels (topic_id, channel_id) VALUES (%s, 2)",
            (f"topic:{refs[0]}",),
        )
    # Small leaves force the narrowing to cut ranges more than once.
    monkeypatch.setattr(verify_module, "LEAF_ROWS", 8)
    report = run_transfer(options(sqlite_dir, pg_only_settings, verify_only=True))
    assert report.status == "mismatch" and report.exit_code == 1
    found = {
        (entry.table, tuple(d.key.values()), d.problem) for entry in report.tables for d in entry.differences
    }
    assert found == {
        ("raw.raw_messages", (refs[137],), "differs"),
        ("raw.raw_messages", (refs[250],), "differs"),  # 1.0 → 1 inside JSON is a change
        ("processing.work_leases", (refs[-8],), "missing in target"),
        ("processing.topic_channels", (f"topic:{refs[0]}", 2), "only in target"),
    }
    mismatched = {e.table for e in report.tables if not e.match}
    assert mismatched == {"raw.raw_messages", "processing.work_leases", "processing.topic_channels"}

    # The same is visible by comparing `db checksum --json` of the two installs.
    runner = CliRunner()
    env_sqlite = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    env_pg = _pg_env(pg_only_settings)
    ours = runner.invoke(cli, ["db", "checksum", "--json"], env=env_sqlite)
    theirs = runner.invoke(cli, ["db", "checksum", "--json"], env=env_pg)
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.output + theirs.output
    a = {t["table"]: t for t in json.loads(ours.output)["tables"]}
    b = {t["table"]: t for t in json.loads(theirs.output)["tables"]}
    assert {name for name in a if a[name] != b[name]} == mismatched


def _pg_env(settings: Settings) -> dict[str, str]:
    return {
        "DB_TYPE": "postgres",
        "DB_HOST": settings.db_host,
        "DB_PORT": str(settings.db_port),
        "DB_USER": settings.db_user,
        "DB_NAME": settings.db_name,
    }


def _dsn(settings: Settings, password: str | None = None) -> str:
    secret = f":{password}" if password else ""
    return f"postgresql://{settings.db_user}{secret}@{settings.db_host}:{settings.db_port}/{settings.db_name}"


@pytest.mark.slow
def test_dry_run_verifies_then_leaves_the_target_empty(populated, sqlite_dir, pg_only_settings):
    report = run_transfer(options(sqlite_dir, pg_only_settings, dry_run=True))
    assert report.status == "ok" and not report.committed and report.exit_code == 0
    assert all(e.match for e in report.tables)
    assert sum(e.rows_target or 0 for e in report.tables) > MESSAGES
    assert not any(table_counts_pg(pg_only_settings).values())


@pytest.mark.slow
def test_failure_mid_copy_leaves_the_target_empty(populated, sqlite_dir, pg_only_settings):
    def kill_backend(table, target):
        if table.qualified == "raw.raw_messages":  # after that table's COPY, before the next one
            with psycopg.connect(**pg_target(pg_only_settings).connect_kwargs(), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (target.backend_pid,))

    report = run_transfer(options(sqlite_dir, pg_only_settings, after_table=kill_backend))
    assert report.status == "failed" and report.exit_code == 1
    assert "terminat" in (report.error or "").lower() or "connection" in (report.error or "").lower()
    assert not any(table_counts_pg(pg_only_settings).values())

    def explode(table, target):
        if table.qualified == "processing.processed_documents":
            raise RuntimeError("injected failure")

    report = run_transfer(options(sqlite_dir, pg_only_settings, after_table=explode))
    assert report.status == "failed" and "injected failure" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())
    # The identity sequence was not moved by the failed runs either.
    with psycopg.connect(**pg_target(pg_only_settings).connect_kwargs()) as conn:
        assert (
            conn.execute("SELECT nextval(pg_get_serial_sequence('ingestion.ingest_runs', 'id'))").fetchone()[
                0
            ]
            == 1
        )


def test_failures_after_the_copy_leave_the_target_empty(populated, sqlite_dir, pg_only_settings, monkeypatch):
    # The server reads the tables back while the helper process may still scan; a statement failing
    # there fails the run and rolls everything back.
    def rename_column(table, target):
        if table.qualified == "raw.raw_messages":
            target.db.execute('ALTER TABLE raw.raw_messages RENAME COLUMN "views" TO "views_gone"')

    report = run_transfer(options(sqlite_dir, pg_only_settings, workers=2, after_table=rename_column))
    assert report.status == "failed" and report.exit_code == 1
    assert "views" in (report.error or ""), report.error
    assert not any(table_counts_pg(pg_only_settings).values())

    # The rest of the scan failing after the COPY: nothing is written either.
    def broken_scan(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("scan broke")

    monkeypatch.setattr(runner_module, "_finish_scan", broken_scan)
    report = run_transfer(options(sqlite_dir, pg_only_settings, workers=2))
    assert report.status == "failed" and "scan broke" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())
    monkeypatch.undo()
    assert run_transfer(options(sqlite_dir, pg_only_settings, workers=2)).status == "ok"


def test_non_empty_target_is_refused_unless_truncate(populated, sqlite_dir, pg_only_settings):
    assert run_transfer(options(sqlite_dir, pg_only_settings)).status == "ok"
    before = table_counts_pg(pg_only_settings)
    report = run_transfer(options(sqlite_dir, pg_only_settings))
    assert report.status == "refused" and report.exit_code == 3
    assert "already holds rows" in (report.error or "") and "--truncate" in (report.error or "")
    assert table_counts_pg(pg_only_settings) == before
    report = run_transfer(options(sqlite_dir, pg_only_settings, truncate=True))
    assert report.status == "ok" and all(e.match for e in report.tables)
    assert table_counts_pg(pg_only_settings) == before


def test_schema_version_mismatch_is_refused(populated, sqlite_dir, pg_only_settings):
    conn = sqlite3.connect(sqlite_dir / STORE_FILES["processing"])
    conn.execute(
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) VALUES ('x', '0099.future', '2030-01-01')"
    )
    conn.commit()
    conn.close()
    report = run_transfer(options(sqlite_dir, pg_only_settings))
    assert report.status == "refused" and report.exit_code == 3
    assert "store 'processing'" in (report.error or "") and "0099.future" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())


@pytest.mark.slow
def test_cli_report_and_exit_codes(populated, sqlite_dir, pg_only_settings, tmp_path):
    runner = CliRunner()
    env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    report_file = tmp_path / "report.json"
    result = runner.invoke(
        cli,
        [
            "db",
            "migrate-to-postgres",
            "--to",
            _dsn(pg_only_settings, "s3cret-pw"),
            "--dry-run",
            "--workers",
            "1",
            "--report",
            str(report_file),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert (
        "raw.raw_messages" in result.output
        and "TOTAL" in result.output
        and "rolled back (dry run)" in result.output
    )
    text = report_file.read_text()
    assert "s3cret-pw" not in text and "s3cret-pw" not in result.output
    data = json.loads(text)
    assert data["status"] == "ok" and data["mode"] == "dry-run" and data["totals"]["match"] is True
    assert {
        "table",
        "rows_source",
        "rows_target",
        "bytes",
        "checksum_source",
        "checksum_target",
        "match",
        "seconds",
        "rows_per_s",
    } <= set(data["tables"][0])

    result = runner.invoke(
        cli, ["db", "migrate-to-postgres", "--to", _dsn(pg_only_settings), "--workers", "1"], env=env
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["db", "migrate-to-postgres", "--to", _dsn(pg_only_settings), "--workers", "1"], env=env
    )
    assert result.exit_code == 3 and "already holds rows" in result.output

    # Unreachable target: one line, no password, no traceback.
    result = runner.invoke(
        cli,
        ["db", "migrate-to-postgres", "--to", "postgresql://u:topsecret@127.0.0.1:1/x", "--workers", "1"],
        env=env,
    )
    assert result.exit_code != 0
    assert "topsecret" not in result.output and "Traceback" not in result.output
    assert "127.0.0.1:1" in result.output


@pytest.mark.slow
def test_script_dry_run_verify(populated, sqlite_dir, pg_only_settings):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "migrate_sqlite_to_postgres.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--dry-run",
            "--verify",
            "--from-sqlite",
            str(sqlite_dir),
            "--to",
            _dsn(pg_only_settings),
            "--workers",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DB_TYPE": "sqlite"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    data = json.loads(done.stdout)
    assert data["mode"] == "dry-run" and data["status"] == "ok" and not data["committed"]
    assert not any(table_counts_pg(pg_only_settings).values())


def test_a_busy_source_is_refused(populated, sqlite_dir, pg_only_settings):
    writer = sqlite3.connect(sqlite_dir / STORE_FILES["raw"], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        report = run_transfer(options(sqlite_dir, pg_only_settings, busy_timeout_ms=200))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert report.status == "failed" and report.exit_code == 4
    assert "being written by another process" in (report.error or "")
    assert not any(table_counts_pg(pg_only_settings).values())


def test_the_migrator_holds_writers_off_while_it_runs(populated, sqlite_dir, pg_only_settings):
    attempts = []

    def try_to_write(table, target):
        if table.qualified == "raw.raw_messages":
            other = sqlite3.connect(sqlite_dir / STORE_FILES["raw"], timeout=0.1)
            try:
                other.execute("UPDATE raw_messages SET views = 1")
                other.commit()
                attempts.append("written")
            except sqlite3.OperationalError as exc:
                attempts.append(str(exc))
            finally:
                other.close()

    report = run_transfer(options(sqlite_dir, pg_only_settings, after_table=try_to_write))
    assert report.status == "ok"
    assert attempts == ["database is locked"]
