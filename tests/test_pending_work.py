"""The pending-work queue (raw.pending_work) on both dialects: filled with the raw insert on every
ingestion path, emptied by documents and permanent failures, claimed without contention (PostgreSQL:
SKIP LOCKED), computed by the migration for an existing install, and harmless after a crash between the
two stores' writes."""

from __future__ import annotations

import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support.api_server import EXAMPLE, EXAMPLE_CHANNEL, cli
from support.fake_telegram import FakeTelegram
from support.process_data import seed_messages

from tests.conftest import sqlite_settings
from tg_parser.config import Settings
from tg_parser.db import migrations
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database, pg_target
from tg_parser.db.sqlite import store_path
from tg_parser.domain.models import ProcessedDocument, RawMessage, Source
from tg_parser.errors import SchemaOutdated
from tg_parser.ingestion.client import TelegramGateway
from tg_parser.ingestion.runner import Ingestor, Policy
from tg_parser.processing import ProcessCoordinator, ProcessOptions
from tg_parser.processing.coordinator import dry_run
from tg_parser.processing.extractive import ExtractiveDocumentProcessor, tune_options
from tg_parser.stores import IngestionStore, ProcessingStore, RawStore
from tg_parser.stores.topics import TopicStore
from tg_parser.transfer import TransferOptions, run_transfer

T0 = datetime(2025, 5, 1, tzinfo=UTC)
TTL = timedelta(minutes=10)


def raw_sql(settings: Settings, statement: str) -> list[tuple]:
    """A statement on the raw store, outside the tool (what a DBA would run), committed."""
    if settings.db_type == "postgres":
        with psycopg.connect(**pg_target(settings).connect_kwargs(), autocommit=True) as conn:
            cursor = conn.execute(statement.replace("{raw}", "raw."))
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(store_path(settings.db_sqlite_dir, "raw"))
    try:
        with conn:
            cursor = conn.execute(statement.replace("{raw}", ""))
            return cursor.fetchall()
    finally:
        conn.close()


def queued(settings: Settings) -> list[str]:
    """Every ref in the queue table, in claim order (read straight from the table)."""
    rows = raw_sql(settings, "SELECT source_ref FROM {raw}pending_work ORDER BY channel_id, date, source_ref")
    return [row[0] for row in rows]


def queue_size(db: Database) -> int:
    return ProcessingStore(db).count_pending()


def message(channel_id: int, i: int, text: str = "hello world #tag", **fields: object) -> RawMessage:
    return RawMessage.build(
        channel_id=channel_id,
        message_type="post",
        message_id=i,
        source_id=fields.pop("source_id", f"src{channel_id}"),
        date=T0 + timedelta(minutes=i),
        text=text,
        **fields,
    )


def document(source_ref: str) -> ProcessedDocument:
    channel_id = int(source_ref.split(":")[1])
    return ProcessedDocument(
        source_ref=source_ref,
        channel_id=channel_id,
        message_date=T0,
        text_clean="clean",
        model="m",
        prompt_id="p",
        pipeline_version="1",
    )


def extractive_run(db: Database, **options: object):
    return ProcessCoordinator(
        db,
        ExtractiveDocumentProcessor(),
        tune_options(ProcessOptions(**options)),  # type: ignore[arg-type]
    ).run()


# --- filled with the raw insert -----------------------------------------------------------------------


def test_a_stored_message_is_queued_in_the_same_batch_once(db: Database, settings: Settings) -> None:
    raw = RawStore(db)
    raw.store_batch([message(7, 1)])  # one message
    assert queued(settings) == ["tg:7:post:1"]
    raw.store_batch([message(7, i) for i in range(2, 6)] + [message(8, 1)])  # a bulk batch of new ones
    assert queued(settings) == [f"tg:7:post:{i}" for i in range(1, 6)] + ["tg:8:post:1"]
    # Seen again (a counter change, an edit): no second queue row, and a processed one is not requeued.
    ProcessingStore(db).upsert_documents([document("tg:7:post:1")])
    ProcessingStore(db).dequeue(["tg:7:post:1"])
    raw.store_batch([message(7, 1, text="edited"), message(7, 2, views=9)])
    assert queue_size(db) == 5 and "tg:7:post:1" not in queued(settings)


def test_a_failed_raw_batch_queues_nothing(db: Database) -> None:
    raw = RawStore(db)
    good = RawStore.row_of(message(7, 1))
    bad = dict(RawStore.row_of(message(7, 2)), message_type="story")  # refused by the CHECK
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        raw.store_rows([good, bad])
    assert queue_size(db) == 0 and raw.count() == 0


def test_the_export_import_path_queues_every_message(settings: Settings) -> None:
    result = cli(settings, "ingest", "--from-export", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    with open_database(settings) as db:
        stored = RawStore(db).count(channel_id=EXAMPLE_CHANNEL)
        assert stored > 0 and queue_size(db) == RawStore(db).count()
        assert len(queued(settings)) == stored


def test_the_telegram_path_queues_every_message(db: Database, settings: Settings) -> None:
    world = FakeTelegram()
    channel = world.add_channel(1001, "News", "newsfeed")
    for i in range(7):
        world.post(channel, f"post {i}")
    IngestionStore(db).add_source(
        Source(
            source_id="newsfeed",
            channel_id=1001,
            username="newsfeed",
            title="News",
            access_hash=channel.access_hash,
        )
    )
    gateway = TelegramGateway(world.client())
    gateway.open()
    try:
        ingestor = Ingestor(
            db,
            gateway,
            run_id="t",
            policy=Policy(sleep=lambda _s: None, rng=random.Random(7), batch_size=3),
            sqlite_dir=settings.db_sqlite_dir if db.dialect == "sqlite" else None,
        )
        ingestor.run_source(IngestionStore(db).get_source("newsfeed"))
    finally:
        gateway.close()
    assert RawStore(db).count() == 7
    assert queued(settings) == [f"tg:1001:post:{i}" for i in range(1, 8)]


# --- emptied by the processing writes -----------------------------------------------------------------


def test_documents_and_permanent_failures_leave_the_queue_a_transient_failure_stays(
    db: Database, settings: Settings
) -> None:
    seed_messages(db, 4, channel_id=5)
    seed_messages(db, 1, channel_id=5, first_id=5, text=lambda i: "   ")  # media-only: no_text, permanent
    assert queue_size(db) == 5
    report = extractive_run(db)
    assert report.counts.processed == 4 and report.counts.skipped_no_text == 1
    assert queue_size(db) == 0
    # A transient failure (journaled, not permanent) keeps its message queued for the next run.
    seed_messages(db, 1, channel_id=5, first_id=6)
    store = ProcessingStore(db)
    store.record_failure(
        "tg:5:post:6", channel_id=5, error_class="timeout", error_message="t", permanent=False
    )
    assert queued(settings) == ["tg:5:post:6"]
    assert refs(store.pending_page(limit=10)) == ["tg:5:post:6"]  # a transient failure is still work
    report = extractive_run(db)
    assert report.counts.processed == 1 and queue_size(db) == 0
    # The media-only message is journaled as a skip, apart from real failures.
    assert store.failures() == [] and store.count_skipped() == 1


def test_retry_failed_queues_permanent_failures_again_and_filters_hold(db: Database) -> None:
    failed = seed_messages(db, 2, channel_id=5, source_id="a")
    failed += seed_messages(db, 2, channel_id=6, source_id="b")
    seed_messages(db, 1, channel_id=6, first_id=9, source_id="b", text=lambda i: "  ")  # media only
    store = ProcessingStore(db)
    for ref in failed:  # as an LLM run that got a schema-violating answer twice leaves them
        channel = int(ref.split(":")[1])
        store.record_failure(
            ref, channel_id=channel, error_class="schema_invalid", error_message="bad", permanent=True
        )
    report = extractive_run(db)  # its reconcile takes the journaled messages out of the queue
    assert report.counts.selected == 1 and report.counts.skipped_no_text == 1 and queue_size(db) == 0
    assert extractive_run(db).counts.selected == 0  # permanent failures and skips are not work
    preview = dry_run(db, ExtractiveDocumentProcessor(), ProcessOptions(retry_failed=True, channel_id=6))
    assert preview["messages"] == 2 and preview["skipped_no_text"] == 0  # the skip is left alone
    report = extractive_run(db, retry_failed=True, channel_id=6)
    assert report.counts.selected == 2 and report.counts.processed == 2
    assert report.counts.skipped_no_text == 0 and queue_size(db) == 0
    assert store.count_skipped() == 1  # journaled once, not again by --retry-failed
    assert extractive_run(db, retry_failed=True, channel_id=5).counts.selected == 2  # the filter held
    assert store.failures() == []


def refs(rows: list[dict]) -> list[str]:
    return [row["source_ref"] for row in rows]


def test_a_crash_between_the_document_commit_and_the_dequeue_is_harmless(db: Database) -> None:
    """What a crash right after the processing store's commit leaves (on SQLite the queue is another
    file): documents written, their queue rows still there. Nothing is selected twice, the dry run does
    not count them, and the next run's claim takes them out when it reaches them."""
    seed_messages(db, 6, channel_id=9)
    store = ProcessingStore(db)
    done = [f"tg:9:post:{i}" for i in (1, 2, 3)]
    store.upsert_documents([document(r) for r in done])  # ... and the process died before dequeue
    assert queue_size(db) == 6
    assert refs(store.pending_page(limit=10)) == [f"tg:9:post:{i}" for i in (4, 5, 6)]
    page = store.queue_page(limit=2)
    assert page.rows == [] and page.done == done[:2] and page.last is not None  # not the end of the queue
    assert dry_run(db, ExtractiveDocumentProcessor(), ProcessOptions())["messages"] == 3
    assert dry_run(db, ExtractiveDocumentProcessor(), ProcessOptions(page_size=2))["messages"] == 3
    assert queue_size(db) == 6  # the dry run only reads
    report = extractive_run(db)
    assert report.counts.processed == 3 and report.counts.selected == 3
    # found done by the lease step (the claim page does not look documents up): dequeued, neither
    # selected nor counted as taken by another worker
    assert report.counts.claimed == 3 and report.counts.skipped_leased == 0
    assert queue_size(db) == 0 and store.leases() == []
    assert {d: store.get_document(d).model for d in done} == dict.fromkeys(done, "m")  # not rewritten


def test_a_claim_page_of_done_messages_does_not_end_the_run(db: Database) -> None:
    """Claims smaller than the streak of done queued messages: each such page comes back with nothing
    to process, is dequeued, and the run goes on to the messages after it."""
    seed_messages(db, 9, channel_id=9)
    store = ProcessingStore(db)
    store.upsert_documents([document(f"tg:9:post:{i}") for i in range(1, 7)])
    options = ProcessOptions(claim_batch=2, write_batch=2, concurrency=1)  # not tune_options' batches
    report = ProcessCoordinator(db, ExtractiveDocumentProcessor(), options).run()
    assert report.counts.processed == 3 and report.counts.selected == 3
    assert queue_size(db) == 0
    assert store.get_document("tg:9:post:1").model == "m"  # a done message is not processed again


def test_a_run_reads_the_queue_it_takes_not_the_whole_queue(db: Database) -> None:
    """No pass over the whole queue at the start of a run: done messages beyond what a run claims stay
    queued (harmlessly: every claim passes them by) until a claim reaches them."""
    seed_messages(db, 6, channel_id=9)
    store = ProcessingStore(db)
    store.upsert_documents([document(f"tg:9:post:{i}") for i in (4, 5, 6)])
    assert extractive_run(db, limit=1).counts.processed == 1
    assert queue_size(db) == 5
    assert extractive_run(db).counts.processed == 2
    assert queue_size(db) == 0


def test_a_live_lease_hides_a_queued_message_until_it_lapses(db: Database) -> None:
    seed_messages(db, 3, channel_id=9)
    store = ProcessingStore(db)
    now = datetime.now(UTC)
    with db.transaction():
        assert store.claim(["tg:9:post:2"], "other-worker", TTL, now=now) == ["tg:9:post:2"]
    assert refs(store.pending_page(limit=10, now=now)) == ["tg:9:post:1", "tg:9:post:3"]
    assert refs(store.pending_page(limit=10, now=now + 2 * TTL)) == [f"tg:9:post:{i}" for i in (1, 2, 3)]
    assert refs(store.pending_page(limit=10, channel_id=8)) == []
    assert refs(store.pending_page(limit=10, source_id="nope")) == []
    assert refs(store.pending_page(limit=1, after=(9, T0 - timedelta(days=365), ""))) == ["tg:9:post:1"]


# --- concurrent claims (PostgreSQL) -------------------------------------------------------------------


def test_concurrent_claims_skip_each_others_rows_without_waiting(pg_only_settings: Settings) -> None:
    with open_database(pg_only_settings) as db:
        seed_messages(db, 10, channel_id=3)
    first, second = open_database(pg_only_settings), open_database(pg_only_settings)
    try:
        holding, got = threading.Event(), threading.Event()
        taken: dict[str, list[str]] = {}

        def worker_b() -> None:
            holding.wait(10)
            with second.transaction():
                rows = ProcessingStore(second).pending_page(limit=4, lock=True)
                taken["b"] = ProcessingStore(second).claim(refs(rows), "b", TTL)
            got.set()

        thread = threading.Thread(target=worker_b, daemon=True)
        thread.start()
        with first.transaction():
            rows = ProcessingStore(first).pending_page(limit=4, lock=True)  # the lowest four, locked
            holding.set()
            # B neither waits for A's open transaction nor takes its rows: it finishes while A holds.
            assert got.wait(10), "the second claim waited for the first (no SKIP LOCKED)"
            taken["a"] = ProcessingStore(first).claim(refs(rows), "a", TTL)
        thread.join(10)
        assert taken["a"] == [f"tg:3:post:{i}" for i in (1, 2, 3, 4)]
        assert taken["b"] == [f"tg:3:post:{i}" for i in (5, 6, 7, 8)]
    finally:
        first.close()
        second.close()


def test_two_coordinators_share_the_queue_and_never_process_a_message_twice(
    pg_only_settings: Settings,
) -> None:
    total = 3000
    with open_database(pg_only_settings) as db:
        seed_messages(db, total, channel_id=4)
    databases = [open_database(pg_only_settings) for _ in range(2)]
    reports = []
    try:
        options = [tune_options(ProcessOptions()) for _ in databases]
        for option in options:
            option.claim_batch = 50  # many small claims, so the two runs interleave
        coordinators = [
            ProcessCoordinator(d, ExtractiveDocumentProcessor(), o)
            for d, o in zip(databases, options, strict=True)
        ]
        threads = [threading.Thread(target=lambda c=c: reports.append(c.run())) for c in coordinators]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive(), "a run did not finish in 120 s"
    finally:
        for d in databases:
            d.close()
    assert sum(r.counts.claimed for r in reports) == total
    assert sum(r.counts.processed for r in reports) == total
    assert all(r.counts.processed > 0 for r in reports), [r.counts for r in reports]
    with open_database(pg_only_settings) as db:
        assert ProcessingStore(db).count_documents() == total and queue_size(db) == 0


FILL_RAW = """
INSERT INTO raw.raw_messages (source_ref, source_id, channel_id, message_id, message_type, date, text,
                              raw_payload, inserted_at)
SELECT 'tg:' || (1000 + i % 20) || ':post:' || i, 'src', 1000 + i % 20, i, 'post',
       timestamptz '2024-01-01' + i * interval '1 minute', 'text ' || i, '{}', now()
FROM generate_series(1, 40000) AS i;
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
SELECT source_ref, channel_id, date, source_id FROM raw.raw_messages WHERE channel_id >= 1000 AND message_id % 4 = 0
"""


def test_the_claim_reads_the_queue_index_not_raw_messages(pg_only_settings: Settings) -> None:
    """The plan of pending_claim on a database where most messages are processed: an index walk of the
    queue, primary-key probes for the rest, and no sequential scan of raw_messages or the documents."""
    with open_database(pg_only_settings) as db:
        seed_messages(db, 50, channel_id=2)
    # 40,000 messages of 20 channels, a quarter of them queued, the rest processed: raw rows and queue
    # straight in SQL, documents through the store.
    raw_sql(pg_only_settings, FILL_RAW)
    with open_database(pg_only_settings) as db:
        refs_done = [f"tg:{1000 + i % 20}:post:{i}" for i in range(1, 40_001) if i % 4]
        for start in range(0, len(refs_done), 5000):
            ProcessingStore(db).upsert_documents([document(r) for r in refs_done[start : start + 5000]])
    # Only the tables filled here: statistics outlive the per-test reset and other tests read plans too.
    raw_sql(pg_only_settings, "ANALYZE raw.raw_messages, raw.pending_work, processing.processed_documents")
    # The first page, and one from the middle of the queue (where fewer queued rows remain after the
    # key, so a planner that doubts its filters would rather read and sort the whole queue).
    for after_channel in (-(2**63), 1010):
        with open_database(pg_only_settings) as db:
            plan = "\n".join(
                db.explain(
                    "pending_claim",
                    {
                        "limit": 500,
                        "source_id": None,
                        "channel_id": None,
                        "retry_failed": False,
                        "now": datetime.now(UTC),
                        "after_channel_id": after_channel,
                        "after_date": T0 - timedelta(days=3650),
                        "after_ref": "",
                    },
                )
            )
        assert "pending_work_channel_date_idx" in plan and "Seq Scan on pending_work" not in plan, plan
        assert "Seq Scan on raw_messages" not in plan and "Seq Scan on processed_documents" not in plan, plan
        assert "LockRows" in plan, plan  # (the only sort is of the page, after it is taken)


# --- the migration ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_migration_computes_the_queue_of_an_existing_install_and_rolls_back(settings: Settings) -> None:
    with open_database(settings) as db:
        seed_messages(db, 6, channel_id=1)
        store = ProcessingStore(db)
        store.upsert_documents([document("tg:1:post:1"), document("tg:1:post:2")])
        store.record_failure(
            "tg:1:post:3", channel_id=1, error_class="no_text", error_message="x", permanent=True
        )
        store.record_failure(
            "tg:1:post:4", channel_id=1, error_class="timeout", error_message="x", permanent=False
        )
    # Back before the queue (raw/0004's CHECKs and raw/0003's counters table go first), then up again.
    both = ["0004.raw_checks", "0003.counters_hygiene", "0002.pending_work"]
    assert migrations.rollback(settings, "raw", steps=3) == both
    with pytest.raises(SchemaOutdated):
        open_database(settings)
    assert migrations.upgrade(settings) == {"ingestion": [], "raw": both[::-1], "processing": []}
    expected = ["tg:1:post:4", "tg:1:post:5", "tg:1:post:6"]
    with open_database(settings) as db:
        if db.dialect == "postgres":  # computed by the migration itself
            assert queued(settings) == expected
        else:  # SQLite's raw file cannot see the processing file: every message, until the first run
            assert queued(settings) == [f"tg:1:post:{i}" for i in range(1, 7)]
            assert refs(ProcessingStore(db).pending_page(limit=10)) == expected  # never selected
        report = extractive_run(db)
        assert report.counts.processed == 3 and queue_size(db) == 0
    assert migrations.rollback(settings, "raw", steps=3) == both
    with pytest.raises((psycopg.errors.UndefinedTable, sqlite3.OperationalError)):
        queued(settings)
    assert migrations.upgrade(settings)["raw"] == both[::-1]


# --- the bulk migrator --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_transfer_to_postgres_carries_the_queue_over(sqlite_dir, pg_only_settings: Settings) -> None:
    lite = sqlite_settings(sqlite_dir)
    with open_database(lite) as db:
        seed_messages(db, 30, channel_id=11)
        extractive_run(db, limit=10)  # 10 processed, 20 queued
        assert queue_size(db) == 20
    report = run_transfer(
        TransferOptions(source_dir=sqlite_dir, target=pg_target(pg_only_settings), workers=1)
    )
    assert report.status == "ok", report.error
    (entry,) = [t for t in report.tables if t.table == "raw.pending_work"]
    assert entry.match and entry.rows_source == entry.rows_target == 20
    assert queued(pg_only_settings) == queued(lite)
    with open_database(pg_only_settings) as db:  # and PostgreSQL works it off
        assert extractive_run(db).counts.processed == 20 and queue_size(db) == 0


# --- topicize's channel catalogue ---------------------------------------------------------------------


def test_one_channels_catalogue_row_is_its_row_of_the_full_catalogue(db: Database) -> None:
    seed_messages(db, 5, channel_id=21)
    seed_messages(db, 3, channel_id=22)
    extractive_run(db)
    topics = TopicStore(db)
    catalogue = {c.channel_id: c for c in topics.channels()}
    assert {c: row.documents for c, row in catalogue.items()} == {21: 5, 22: 3}
    assert topics.channel(21) == catalogue[21] and topics.channel(22) == catalogue[22]
    assert topics.channel(23) is None
