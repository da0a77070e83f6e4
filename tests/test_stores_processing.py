"""ProcessingStore on both dialects: candidate selection, leases, documents, failures, topics, run reports."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tg_parser import provenance
from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database
from tg_parser.domain.models import (
    Anchor,
    Entity,
    ProcessedDocument,
    RawMessage,
    RunReport,
    SupportingItem,
    TopicBundle,
    TopicCard,
)
from tg_parser.stores import ProcessingStore, RawStore
from tg_parser.stores.topics import TopicStore

T0 = datetime(2025, 1, 2, tzinfo=UTC)
A, B = -1001, -1002
TTL = timedelta(minutes=10)
WORKERS = 6


INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


def ref(channel_id: int, message_id: int) -> str:
    return f"tg:{channel_id}:post:{message_id}"


def doc(source_ref: str, summary: str = "s", **fields: object) -> ProcessedDocument:
    channel_id = int(source_ref.split(":")[1])
    values: dict[str, object] = {
        "channel_id": channel_id,
        "message_date": T0 + timedelta(minutes=int(source_ref.rsplit(":", 1)[1])),
        "text_clean": "clean",
        "summary": summary,
        "model": "m",
        "prompt_id": "p1",
        "pipeline_version": "1",
    }
    values.update(fields)
    return ProcessedDocument(source_ref=source_ref, **values)  # type: ignore[arg-type]


@pytest.fixture
def store(db: Database) -> ProcessingStore:
    """Raw messages A:1..5 (source @a) and B:1..3 (source @b), nothing processed yet."""
    messages = [
        RawMessage.build(
            channel_id=channel,
            message_type="post",
            message_id=i,
            source_id=source,
            date=T0 + timedelta(minutes=i),
            text=f"text {channel} {i}",
        )
        for channel, source, count in ((A, "@a", 5), (B, "@b", 3))
        for i in range(1, count + 1)
    ]
    RawStore(db).store_batch(messages)
    return ProcessingStore(db)


def refs_of(rows: list[dict]) -> list[str]:
    return [r["source_ref"] for r in rows]


ALL = [ref(B, i) for i in (1, 2, 3)] + [ref(A, i) for i in (1, 2, 3, 4, 5)]  # channel_id, date order

# --- candidate selection ----------------------------------------------------------------------------


def test_all_unprocessed_messages_are_candidates_in_order(store: ProcessingStore) -> None:
    rows = store.select_candidates()
    assert refs_of(rows) == ALL
    first = rows[0]
    assert (
        first["text"] == f"text {B} 1"
        and first["source_id"] == "@b"
        and first["date"] == T0 + timedelta(minutes=1)
    )
    assert first["message_type"] == "post" and first["channel_id"] == B


def test_selection_excludes_processed_failed_and_leased(store: ProcessingStore) -> None:
    now = datetime.now(UTC)
    store.upsert_documents([doc(ref(A, 1))])
    store.record_failure(ref(A, 2), channel_id=A, error_class="Refused", error_message="no", permanent=True)
    store.record_failure(
        ref(A, 3), channel_id=A, error_class="Timeout", error_message="later", permanent=False
    )
    assert store.claim([ref(A, 4)], "w1", TTL, now=now) == [ref(A, 4)]  # live lease
    assert store.claim([ref(A, 5)], "w1", TTL, now=now - 2 * TTL) == [ref(A, 5)]  # lapsed lease

    default = refs_of(store.select_candidates(now=now))
    assert default == [ref(B, 1), ref(B, 2), ref(B, 3), ref(A, 3), ref(A, 5)]
    assert refs_of(store.select_candidates(now=now, force=True)) == [
        ref(B, 1),
        ref(B, 2),
        ref(B, 3),
        ref(A, 1),
        ref(A, 3),
        ref(A, 5),
    ]
    assert refs_of(store.select_candidates(now=now, retry_failed=True)) == [
        ref(B, 1),
        ref(B, 2),
        ref(B, 3),
        ref(A, 2),
        ref(A, 3),
        ref(A, 5),
    ]
    # once the live lease has lapsed it is a candidate again
    assert ref(A, 4) in refs_of(store.select_candidates(now=now + 2 * TTL))


def test_selection_filters_and_limit(store: ProcessingStore) -> None:
    assert refs_of(store.select_candidates(source_id="@a")) == [ref(A, i) for i in range(1, 6)]
    assert refs_of(store.select_candidates(channel_id=B)) == [ref(B, i) for i in (1, 2, 3)]
    assert refs_of(store.select_candidates(channel_id=B, source_id="@a")) == []
    assert refs_of(store.select_candidates(source_id="x'%:;")) == []
    assert refs_of(store.select_candidates(limit=2)) == ALL[:2]
    assert refs_of(store.select_candidates(limit=3, channel_id=A)) == [ref(A, i) for i in (1, 2, 3)]
    assert store.select_candidates(limit=0) == []


# --- leases -----------------------------------------------------------------------------------------


def test_two_workers_get_disjoint_claims(store: ProcessingStore) -> None:
    now = datetime.now(UTC)
    first = store.claim([ref(A, 3), ref(A, 1), ref(A, 2)], "w1", TTL, now=now)
    assert first == [ref(A, 3), ref(A, 1), ref(A, 2)]  # in the caller's order
    second = store.claim([ref(A, 2), ref(A, 3), ref(A, 4)], "w2", TTL, now=now)
    assert second == [ref(A, 4)]
    held = {lease.source_ref: lease.worker_id for lease in store.leases()}
    assert held == {ref(A, 1): "w1", ref(A, 2): "w1", ref(A, 3): "w1", ref(A, 4): "w2"}
    lease = next(x for x in store.leases() if x.source_ref == ref(A, 4))
    assert (lease.leased_at, lease.expires_at) == (now, now + TTL)
    # a worker may renew its own lease
    assert store.claim([ref(A, 1)], "w1", TTL * 2, now=now + TTL / 2) == [ref(A, 1)]
    assert store.claim([], "w1", TTL) == []


def test_claim_with_repeated_refs(store: ProcessingStore) -> None:
    # A repeated ref must not break the claim (PostgreSQL refuses an upsert touching one row twice).
    assert store.claim([ref(A, 2), ref(A, 1), ref(A, 2)], "w1", TTL) == [ref(A, 2), ref(A, 1), ref(A, 2)]
    assert sorted(x.source_ref for x in store.leases()) == [ref(A, 1), ref(A, 2)]


def test_expired_lease_is_taken_over(store: ProcessingStore) -> None:
    now = datetime.now(UTC)
    assert store.claim([ref(A, 1)], "crashed", TTL, now=now - 2 * TTL) == [ref(A, 1)]
    assert store.claim([ref(A, 1)], "w2", TTL, now=now) == [ref(A, 1)]
    (lease,) = store.leases()
    assert (lease.worker_id, lease.expires_at) == ("w2", now + TTL)


def test_processed_refs_are_not_claimable_unless_forced(store: ProcessingStore) -> None:
    store.upsert_documents([doc(ref(A, 1))])
    assert store.claim([ref(A, 1), ref(A, 2)], "w1", TTL) == [ref(A, 2)]
    assert store.claim([ref(A, 1)], "w1", TTL, force=True) == [ref(A, 1)]


def test_release_only_own_leases_and_purge_expired(store: ProcessingStore) -> None:
    now = datetime.now(UTC)
    store.claim([ref(A, 1), ref(A, 2)], "w1", TTL, now=now)
    store.claim([ref(A, 3)], "w'2;%", TTL, now=now - 2 * TTL)  # already lapsed
    assert store.release([ref(A, 1), ref(A, 3)], "w1") == 1  # A:3 is not w1's
    assert {x.source_ref for x in store.leases()} == {ref(A, 2), ref(A, 3)}
    assert store.release([], "w1") == 0
    assert store.purge_expired_leases(now=now) == 1
    assert [x.source_ref for x in store.leases()] == [ref(A, 2)]
    assert store.release([ref(A, 2)], "w1") == 1 and store.leases() == []


def test_concurrent_claims_never_overlap(store: ProcessingStore, settings: Settings) -> None:
    # Several workers, each with its own connection, race for overlapping batches of the same refs in
    # different orders (leases need no raw row, so plenty of fresh refs make the race real).
    refs = [ref(A, i) for i in range(1, 301)]
    won: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(WORKERS)

    def worker(name: str) -> None:
        db = open_database(settings)
        try:
            mine = ProcessingStore(db)
            rng = random.Random(name)
            barrier.wait()
            got: list[str] = []
            for _ in range(10):
                got += mine.claim(rng.sample(refs, 60), name, TTL)
            won[name] = got
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    claimed = [r for got in won.values() for r in set(got)]
    assert len(claimed) == len(set(claimed)), won  # no ref was won by two workers
    holders = {lease.source_ref: lease.worker_id for lease in store.leases()}
    assert {r: w for w, got in won.items() for r in got} == holders


# --- documents --------------------------------------------------------------------------------------


def test_upsert_replaces_and_clears_failures(store: ProcessingStore) -> None:
    store.record_failure(ref(A, 1), channel_id=A, error_class="E", error_message="m", permanent=True)
    store.record_failure(ref(A, 2), channel_id=A, error_class="E", error_message="m", permanent=False)
    first = doc(
        ref(A, 1),
        "first",
        topics=["a", "b"],
        entities=[Entity(type="org", value="ACME ' % :x", confidence=0.5)],
        metadata={"k": [1, {"x": None}]},
        language="en",
        input_tokens=10,
        output_tokens=5,
    )
    assert store.upsert_documents([first]) == 1
    assert store.get_document(ref(A, 1)) == first
    assert [f.source_ref for f in store.failures()] == [ref(A, 2)]
    replacement = doc(ref(A, 1), "second", topics=[], model="m2")
    store.upsert_documents([replacement])
    assert store.get_document(ref(A, 1)) == replacement
    assert store.count_documents() == 1
    assert store.upsert_documents([]) == 0
    assert store.get_document(ref(A, 9)) is None
    assert store.get_document(ref(A, 1)).id == f"doc:{ref(A, 1)}"  # type: ignore[union-attr]


def test_stream_and_count_documents(store: ProcessingStore) -> None:
    store.upsert_documents([doc(ref(A, i)) for i in (3, 1, 2)] + [doc(ref(B, 1))])
    assert store.count_documents() == 4
    assert store.count_documents(channel_id=A) == 3
    assert store.count_documents(channel_id=-5) == 0
    assert [d.source_ref for d in store.stream_documents(channel_id=A)] == [ref(A, 1), ref(A, 2), ref(A, 3)]
    assert [d.source_ref for d in store.stream_documents()] == [ref(B, 1), ref(A, 1), ref(A, 2), ref(A, 3)]
    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)
    assert [d.source_ref for d in store.stream_documents(channel_id=A, since=since, until=until)] == [
        ref(A, 2)
    ]


# --- failures journal -------------------------------------------------------------------------------


def test_failures_journal_counts_attempts(store: ProcessingStore) -> None:
    before = datetime.now(UTC)
    store.record_failure(
        ref(A, 1), channel_id=A, error_class="Timeout", error_message="t1", permanent=False, run_id="r1"
    )
    store.record_failure(ref(B, 1), channel_id=B, error_class="Bad", error_message="b", permanent=False)
    store.record_failure(
        ref(A, 1), channel_id=A, error_class="Refused", error_message="x" * 3000, permanent=True, run_id="r2"
    )
    failures = store.failures()
    assert [f.source_ref for f in failures] == [ref(A, 1), ref(B, 1)]  # newest first
    latest = failures[0]
    assert (latest.attempts, latest.error_class, latest.permanent, latest.run_id) == (
        2,
        "Refused",
        True,
        "r2",
    )
    assert latest.error_message == "x" * 2000
    assert before <= latest.first_failed_at < latest.last_failed_at <= datetime.now(UTC)
    assert failures[1].attempts == 1
    assert [f.source_ref for f in store.failures(limit=1)] == [ref(A, 1)]
    store.delete_failure(ref(A, 1))
    assert [f.source_ref for f in store.failures()] == [ref(B, 1)]


# --- topics -----------------------------------------------------------------------------------------


def card(topic_ref: str, channel_id: int, title: str = "T", **fields: object) -> TopicCard:
    values: dict[str, object] = {
        "anchors": [Anchor(source_ref=topic_ref, score=0.9)],
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return TopicCard(topic_id=f"topic:{topic_ref}", channel_id=channel_id, title=title, **values)  # type: ignore[arg-type]


def bundle(topic: TopicCard) -> TopicBundle:
    items = [
        SupportingItem(source_ref=a.source_ref, score=a.score, reason="anchor ' % :") for a in topic.anchors
    ]
    return TopicBundle(topic_id=topic.topic_id, channel_id=topic.channel_id, items=items, updated_at=T0)


def test_topics_replace_per_channel(db: Database) -> None:
    store = TopicStore(db)
    t1 = card(
        ref(A, 1),
        A,
        "One ' % : ;",
        anchors=[Anchor(source_ref=ref(A, 1), score=0.9), Anchor(source_ref=ref(A, 2), score=0.5)],
        tags=["x"],
        metadata={"m": 1},
    )
    t2 = card(ref(A, 3), A, "Two", kind="singleton")
    other = card(ref(B, 1), B, "Other")
    store.replace_channel_topics(A, [t1, t2], [bundle(t1), bundle(t2)])
    store.replace_channel_topics(B, [other], [bundle(other)])
    assert store.topics_for_channel(A) == [t1, t2]
    assert store.get_topic(t1.topic_id) == t1
    assert store.get_bundle(t1.topic_id) == bundle(t1)
    assert [t.topic_id for t in store.all_topics()] == sorted([t1.topic_id, t2.topic_id, other.topic_id])

    # a re-run that no longer finds t2: its card, bundle and membership go; t1 is rewritten
    t1_new = card(ref(A, 1), A, "One, renamed")
    t4 = card(ref(A, 4), A, "Four")
    store.replace_channel_topics(A, [t1_new, t4], [bundle(t4)])
    assert store.topics_for_channel(A) == [t1_new, t4]
    assert store.get_topic(t2.topic_id) is None
    assert store.get_bundle(t2.topic_id) is None
    assert store.get_bundle(t1.topic_id) is None  # not in this run's bundles: no stale bundle lingers
    assert store.get_bundle(t4.topic_id) == bundle(t4)
    assert store.topics_for_channel(B) == [other]  # other channels untouched
    assert store.get_bundle(other.topic_id) == bundle(other)

    store.replace_channel_topics(A, [], [])
    assert store.topics_for_channel(A) == []
    assert [t.topic_id for t in store.all_topics()] == [other.topic_id]


def test_topics_replace_is_atomic(db: Database) -> None:
    store = TopicStore(db)
    t1 = card(ref(A, 1), A)
    store.replace_channel_topics(A, [t1], [bundle(t1)])
    duplicate = card(ref(A, 2), A)
    with pytest.raises(INTEGRITY_ERRORS):  # the same topic twice violates the primary key mid-way
        store.replace_channel_topics(A, [duplicate, duplicate], [])
    assert store.topics_for_channel(A) == [t1]
    assert store.get_bundle(t1.topic_id) == bundle(t1)


# --- run reports ------------------------------------------------------------------------------------


def test_run_reports(store: ProcessingStore) -> None:
    first = RunReport(run_id="r1", kind="process", started_at=T0, params={"limit": 10, "force": False})
    second = RunReport(run_id="r2", kind="topicize", started_at=T0 + timedelta(hours=1))
    third = RunReport(run_id="r3", kind="process", started_at=T0 + timedelta(hours=2))
    for report in (first, second, third):
        store.start_run(report)
    stored = store.get_run("r1")
    assert stored is not None
    who = stored.params["started_by"]  # recorded by start_run: this process, started from code (no CLI)
    assert (who["pid"], who["host"], who["origin"]) == (os.getpid(), socket.gethostname(), "cli")
    assert stored == first.model_copy(update={"params": {**first.params, "started_by": who}})
    finished = first.model_copy(
        update={
            "finished_at": T0 + timedelta(minutes=5),
            "status": "partial",
            "counts": {"ok": 9, "failed": 1},
            "error": "1 ' % : ; failed",
        }
    )
    store.finish_run(finished)
    assert store.get_run("r1") == finished.model_copy(update={"params": stored.params})
    assert store.get_run("nope") is None
    assert [r.run_id for r in store.recent_runs()] == ["r3", "r2", "r1"]
    assert [r.run_id for r in store.recent_runs("process")] == ["r3", "r1"]
    assert [r.run_id for r in store.recent_runs(limit=1)] == ["r3"]
    assert store.recent_runs("export") == []
    assert [r.run_id for r in store.recent_runs(status="running")] == ["r3", "r2"]
    assert [r.run_id for r in store.recent_runs("process", status="partial")] == ["r1"]
    assert store.recent_runs("topicize", status="partial") == []


def test_run_origin_is_recorded_with_the_report(store: ProcessingStore) -> None:
    with provenance.origin("api", requested_by="ci-key"):
        store.start_run(RunReport(run_id="q1", kind="run", started_at=T0))
    store.start_run(RunReport(run_id="q2", kind="run", started_at=T0, params={"started_by": {"origin": "x"}}))
    first, second = store.get_run("q1"), store.get_run("q2")
    assert first is not None and second is not None
    assert first.params["started_by"]["origin"] == "api"
    assert first.params["started_by"]["requested_by"] == "ci-key"
    assert second.params["started_by"] == {"origin": "x"}  # given by the caller: kept as it is


def test_single_and_batch_writes_store_identical_rows(store: ProcessingStore) -> None:
    # One statement writes documents, processing_upsert_documents, whether it is given one document or a
    # batch (its SET list is the only one). A document written alone and the same document written in a
    # batch give identical rows, on the insert branch and on the update branch.
    docs = [
        doc(
            ref(A, 1),
            'Ünïcödé "quoted" \\ back\nslash 🔥 \' % :x',
            topics=["новости", "a b"],
            entities=[Entity(type="url", value="https://ex.com/?a=1&b=%20", confidence=1.0)],
            metadata={"k": [1, 2.5, {"x": None, "y": True}], "when": "2025-01-01T00:00:00Z"},
            language="ru",
            input_tokens=0,
            output_tokens=2**31 - 1,
        ),
        doc(ref(A, 2), summary=None, topics=[], entities=[], metadata={}),  # type: ignore[arg-type]
        doc(ref(B, 1), processed_at=datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)),
    ]
    db = store.db

    def stored() -> list[dict]:
        return [db.fetch_one("processing_get_document", {"source_ref": d.source_ref}) for d in docs]

    for document in docs:  # one at a time: the insert branch
        assert store.upsert_documents([document]) == 1
    singly = stored()
    assert [store.get_document(d.source_ref) for d in docs] == docs
    replaced = [d.model_copy(update={"text_clean": "other", "summary": None}) for d in docs]
    assert store.upsert_documents(replaced) == 3  # a batch over existing rows: the update branch
    assert all(r["text_clean"] == "other" and r["summary"] is None for r in stored())
    assert store.upsert_documents(docs) == 3
    assert stored() == singly
    for document in replaced:  # one at a time over existing rows
        store.upsert_documents([document])
    assert [store.get_document(d.source_ref) for d in docs] == replaced
    for document in docs:
        store.upsert_documents([document])
    assert stored() == singly


def test_batch_upsert_keeps_the_last_document_of_a_repeated_ref(store: ProcessingStore) -> None:
    store.record_failure(ref(A, 1), channel_id=A, error_class="E", error_message="m", permanent=True)
    first, second = doc(ref(A, 1), "first"), doc(ref(A, 1), "second")
    assert store.upsert_documents([first, doc(ref(A, 2)), second]) == 3
    assert store.get_document(ref(A, 1)) == second
    assert store.count_documents() == 2
    assert store.failures() == []


def _until_a_lock_waits(settings: Settings, sqlite_begins: threading.Event, timeout: float = 10.0) -> None:
    """On PostgreSQL, return once some backend waits for a lock (so the race is really set up); SQLite
    shows no such thing, so there `sqlite_begins` is set when the other connection starts its BEGIN
    IMMEDIATE, the statement that then waits for the write lock."""
    if settings.db_type != "postgres":
        if not sqlite_begins.wait(timeout):
            raise AssertionError("the release never began its transaction")
        return
    from tg_parser.db.connect import pg_target

    deadline = time.monotonic() + timeout
    with psycopg.connect(**pg_target(settings).connect_kwargs(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:  # type: ignore[index]
                return
            time.sleep(0.01)
    raise AssertionError("the release never waited for the claim's lock")


def test_a_release_racing_another_workers_claim_does_not_deadlock(
    store: ProcessingStore, settings: Settings
) -> None:
    # Worker B's claim locks the lease rows it finds (in ref order), worker A's release locks its own as it
    # deletes them. If the release went in another order, A could hold r2 waiting for r1 while B holds r1
    # waiting for r2: PostgreSQL would abort one of them (a deadlock), and with it a whole run. The release
    # locks in ref order too, so one simply waits for the other.
    r1, r2 = ref(A, 1), ref(A, 2)
    assert store.claim([r2], "A", TTL) == [r2]  # stored before r1: a table scan meets r2 first
    assert store.claim([r1], "A", TTL) == [r1]
    holds_r1, errors = threading.Event(), []
    a_begins = threading.Event()
    if settings.db_type == "sqlite":  # A's connection tells when its BEGIN starts (see _until_a_lock_waits)
        store.db.raw_connection().set_trace_callback(lambda sql: sql.startswith("BEGIN") and a_begins.set())
    claimed: list[str] = []

    def worker_b() -> None:
        db = open_database(settings)
        try:
            other = ProcessingStore(db)
            with db.transaction():
                claimed.extend(other.claim([r1], "B", TTL))  # A's live lease: not taken, but locked
                holds_r1.set()
                _until_a_lock_waits(settings, a_begins)  # A's release is now waiting for r1
                claimed.extend(other.claim([r2], "B", TTL))
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    thread = threading.Thread(target=worker_b)
    thread.start()
    assert holds_r1.wait(10)
    try:
        with store.db.transaction():
            released = store.release([r2, r1], "A")
    finally:
        thread.join()
    assert not errors, errors
    assert claimed == [] and released == 2
    assert store.leases() == []


def test_batch_upsert_takes_integers_beyond_64_bits(store: ProcessingStore) -> None:
    # orjson refuses them; the batch JSON falls back to the standard library encoder (db.codec.dump_json).
    big = doc(ref(A, 1), metadata={"big": 2**70 + 1, "neg": -(2**65)})
    assert store.upsert_documents([big, doc(ref(A, 2))]) == 2
    stored = store.db.fetch_one("processing_get_document", {"source_ref": ref(A, 1)})
    assert stored is not None
    # Reading JSON back goes through orjson, which returns such integers as floats (both dialects).
    assert stored["metadata"] == {"big": pytest.approx(2**70), "neg": pytest.approx(-(2**65))}
    assert store.count_documents() == 2
