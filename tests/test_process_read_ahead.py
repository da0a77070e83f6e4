"""Reading a claim's pages ahead (processing/read_ahead.py): the queue peek and the read-ahead statement on
both dialects, the sessions that stop by themselves once the pages are cached or on an error, and process
runs with reading ahead on that write exactly what runs without it do, alone and side by side; and a run
ended by an exception is reported failed whatever its end could write."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from support.process_data import message_text, seed_messages

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.codec import format_timestamp
from tg_parser.db.connect import open_database
from tg_parser.errors import DatabaseUnavailable
from tg_parser.processing import ProcessCoordinator, ProcessOptions, read_ahead
from tg_parser.processing.extractive import ExtractiveDocumentProcessor, tune_options
from tg_parser.processing.read_ahead import ReadAhead
from tg_parser.stores import ProcessingStore
from tg_parser.stores.base import MessageKey


def queue_keys(store: ProcessingStore) -> list[MessageKey]:
    rows = store.queue_page(limit=10_000).rows
    return [(row["channel_id"], row["date"], row["source_ref"]) for row in rows]


def extractive(db: Database, **options: object) -> ProcessCoordinator:
    return ProcessCoordinator(db, ExtractiveDocumentProcessor(), tune_options(ProcessOptions(**options)))  # type: ignore[arg-type]


# --- the queue peek and the statement -------------------------------------------------------------------


def test_the_peek_lists_what_the_next_claims_take_in_their_order(db: Database) -> None:
    seed_messages(db, 20, channel_id=7, source_id=None)
    seed_messages(db, 15, channel_id=5)
    store = ProcessingStore(db)
    every = queue_keys(store)
    assert [key[0] for key in every] == [5] * 15 + [7] * 20  # claim order: channel, date, ref

    assert store.peek_queue(limit=10) == every[:10]
    assert store.peek_queue(limit=10, after=every[9]) == every[10:20]
    assert store.peek_queue(limit=100, after=every[-1]) == []
    assert store.peek_queue(limit=100, channel_id=7) == every[15:]
    # The peek locks and changes nothing: the claim still takes the first rows.
    assert [row["source_ref"] for row in store.queue_page(limit=3, lock=True).rows] == [
        k[2] for k in every[:3]
    ]


def test_the_read_ahead_statement_runs_on_postgresql_and_changes_nothing(db: Database) -> None:
    refs = seed_messages(db, 40, channel_id=9)
    store = ProcessingStore(db)
    keys = queue_keys(store)
    seconds = store.read_ahead(keys)
    if db.reads_ahead_in_sessions:
        assert isinstance(seconds, float) and 0 <= seconds < 60
    else:
        assert seconds is None  # SQLite: one process reads its files, nothing to overlap
    assert store.read_ahead([]) is None
    # The statement itself, on both dialects (SQLite's is there for the catalogue and a DBA): it reads
    # every key's row, so its sum holds their texts' lengths.
    payload = [{"source_ref": ref, "channel_id": c, "date": format_timestamp(d)} for c, d, ref in keys]
    row = db.fetch_one("processing_read_ahead", {"keys": payload})
    assert row is not None and row["touched"] >= sum(len(message_text(i)) for i in range(1, 41))
    assert [key[2] for key in queue_keys(store)] == refs
    assert store.count_documents() == 0


# --- the sessions ---------------------------------------------------------------------------------------


class ScriptedStore:
    """The store's read_ahead with the server seconds a test gives (or an error): how long storage takes
    cannot be arranged on a test machine, so the timings are scripted; everything else is real."""

    def __init__(self, seconds: list[float | Exception]) -> None:
        self.seconds = list(seconds)
        self.slices: list[list[MessageKey]] = []
        self.lock = threading.Lock()

    def read_ahead(self, keys: list[MessageKey]) -> float | None:
        with self.lock:
            self.slices.append(list(keys))
            answer = self.seconds.pop(0) if self.seconds else 0.0
        if isinstance(answer, Exception):
            raise answer
        return answer


def fake_keys(count: int) -> list[MessageKey]:
    """Keys in the queue's order (channel, date, ref), as a peek returns them."""
    return [
        (1, datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i), f"tg:1:post:{i}") for i in range(count)
    ]


def test_reading_ahead_stops_once_the_pages_turn_out_cached(pg_only_settings: Settings) -> None:
    with open_database(pg_only_settings) as db:
        seed_messages(db, 300, channel_id=11)
        store = ProcessingStore(db)
        reader = ReadAhead(store, 3)
        try:
            reader.ahead(queue_keys(store))
            # A small database is in memory: the server's seconds per slice say so and it stops.
            assert reader.wait_stopped(30), "reading ahead went on over cached pages"
            assert not reader.active
            assert 3 <= reader.slices_read <= 300 // read_ahead.SLICE + 1
        finally:
            reader.close()


def test_slow_slices_keep_it_reading_and_cached_ones_in_a_row_stop_it() -> None:
    slow = read_ahead.SLOW_SECONDS_PER_KEY * read_ahead.SLICE * 10
    # One session reads the slices in order: two slow ones (pages read from storage: go on), then a
    # cached one, and with one session one cached slice in a row stops it.
    store = ScriptedStore([slow, slow, 0.0])
    reader = ReadAhead(store, 1)  # type: ignore[arg-type]
    try:
        reader.ahead(fake_keys(5 * read_ahead.SLICE))
        assert reader.wait_stopped(30)
        assert reader.slices_read == 3  # stopped after the first cached slice
        reader.ahead(fake_keys(read_ahead.SLICE))  # given after it stopped: not read
    finally:
        reader.close()
    assert len(store.slices) == 3
    assert [len(s) for s in store.slices] == [read_ahead.SLICE] * 3
    assert store.slices[0][0][2] == "tg:1:post:0" and store.slices[1][0][2] == f"tg:1:post:{read_ahead.SLICE}"


def test_it_takes_as_many_cached_slices_in_a_row_as_sessions_to_stop() -> None:
    slow = read_ahead.SLOW_SECONDS_PER_KEY * read_ahead.SLICE * 10
    store = ScriptedStore([0.0, 0.0, slow, 0.0, 0.0, 0.0, 0.0, slow])
    reader = ReadAhead(store, 4)  # type: ignore[arg-type]
    try:
        reader.ahead(fake_keys(20 * read_ahead.SLICE))
        assert reader.wait_stopped(30)
    finally:
        reader.close()
    # Four sessions note their slices in whatever order they finish, so where the run of four cached ones
    # falls varies; but it takes four of them, and it stops long before the 20 slices given.
    assert reader.slices_read >= 4
    assert 4 <= len(store.slices) < 20


def test_an_error_stops_the_reading_ahead_and_nothing_else() -> None:
    store = ScriptedStore([RuntimeError("connection lost")])
    reader = ReadAhead(store, 2)  # type: ignore[arg-type]
    try:
        reader.ahead(fake_keys(10 * read_ahead.SLICE))
        assert reader.wait_stopped(30)
        assert not reader.active
    finally:
        reader.close()
    assert len(store.slices) < 10  # the rest were dropped
    with pytest.raises(ValueError, match="at least one session"):
        ReadAhead(store, 0)  # type: ignore[arg-type]


# --- process runs ---------------------------------------------------------------------------------------


@pytest.fixture
def never_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slice counts as read from storage, so reading ahead lasts the whole run (small claims and
    writes, a window kept ahead) however fast this machine's database answers."""
    monkeypatch.setattr(read_ahead, "SLOW_SECONDS_PER_KEY", 0.0)


def test_a_run_reading_ahead_processes_the_queue_as_one_without(db: Database, never_cached: None) -> None:
    refs = seed_messages(db, 700, channel_id=21) + seed_messages(db, 300, channel_id=22)
    coordinator = extractive(db, read_ahead=3, limit=600)
    report = coordinator.run()
    assert report.status == "ok"
    assert report.counts.processed == 600 and report.counts.claimed == 600
    store = ProcessingStore(db)
    # The first 600 in claim order, each once; the rest still queued.
    assert [key[2] for key in queue_keys(store)] == refs[600:]
    assert store.count_documents() == 600
    if db.reads_ahead_in_sessions:
        assert coordinator._read_ahead is not None and coordinator._read_ahead.slices_read > 0
        assert not coordinator._read_ahead.active  # closed with the run
    else:
        assert coordinator._read_ahead is None

    rest = extractive(db, read_ahead=3).run()
    assert rest.counts.processed == 400 and queue_keys(store) == []
    assert store.count_documents() == 1000


def test_read_ahead_is_not_used_by_a_force_run(db: Database, never_cached: None) -> None:
    seed_messages(db, 50, channel_id=23)
    extractive(db).run()
    coordinator = extractive(db, read_ahead=3, force=True)
    assert coordinator.run().counts.processed == 50
    assert coordinator._read_ahead is None  # --force walks raw_messages, not the queue


def test_two_runs_reading_ahead_side_by_side_never_take_a_message_twice(
    pg_only_settings: Settings, never_cached: None
) -> None:
    total = 2000
    with open_database(pg_only_settings) as db:
        seed_messages(db, total, channel_id=24)
    databases = [open_database(pg_only_settings) for _ in range(2)]
    reports = []
    try:
        coordinators = [extractive(d, read_ahead=2) for d in databases]
        threads = [threading.Thread(target=lambda c=c: reports.append(c.run())) for c in coordinators]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert sum(report.counts.processed for report in reports) == total
        store = ProcessingStore(databases[0])
        assert store.count_documents() == total and queue_keys(store) == []
    finally:
        for database in databases:
            database.close()


def test_the_sessions_fit_in_the_pool() -> None:
    assert Settings(process_read_ahead=8, db_pool_max_size=10).read_ahead_sessions == 8
    assert Settings(process_read_ahead=8, db_pool_max_size=4).read_ahead_sessions == 3
    assert Settings(process_read_ahead=8, db_pool_max_size=1).read_ahead_sessions == 0
    assert Settings(process_read_ahead=0).read_ahead_sessions == 0


def test_a_run_ended_by_an_exception_is_failed_even_when_its_report_could_be_written(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database went away under a write and came back before the run recorded its end (what a
    server restart mid-run does): the report says failed, with the error, not ok."""
    seed_messages(db, 30, channel_id=25)
    real_upsert = ProcessingStore.upsert_documents
    calls = []

    def upsert_once_lost(self: ProcessingStore, documents: list) -> None:
        calls.append(len(documents))
        if len(calls) == 1:
            raise DatabaseUnavailable("the connection was lost", "check the server")
        real_upsert(self, documents)

    monkeypatch.setattr(ProcessingStore, "upsert_documents", upsert_once_lost)
    coordinator = extractive(db)
    with pytest.raises(DatabaseUnavailable):
        coordinator.run()
    (run,) = ProcessingStore(db).recent_runs(kind="process")
    assert run.status == "failed", run
    assert "the connection was lost" in (run.error or "")
    # The finished results were written by the run's end, each once.
    assert calls == [30, 30] and ProcessingStore(db).count_documents() == 30


def test_slices_the_claims_have_passed_are_dropped_unread() -> None:
    started, release, last_read = threading.Event(), threading.Event(), threading.Event()
    keys = fake_keys(5 * read_ahead.SLICE)

    class FirstSliceWaits(ScriptedStore):
        def read_ahead(self, keys_slice: list[MessageKey]) -> float | None:
            if not self.slices:
                self.slices.append(list(keys_slice))
                started.set()
                assert release.wait(30)
                return read_ahead.SLOW_SECONDS_PER_KEY * len(keys_slice) * 10  # from storage: go on
            answer = super().read_ahead(keys_slice)
            if keys_slice[-1] == keys[-1]:
                last_read.set()
            return answer

    store = FirstSliceWaits([read_ahead.SLOW_SECONDS_PER_KEY * read_ahead.SLICE * 10] * 5)
    reader = ReadAhead(store, 1)  # type: ignore[arg-type]
    try:
        reader.ahead(keys)
        assert started.wait(30)
        reader.passed(keys[3 * read_ahead.SLICE - 1])  # meanwhile the claims passed the third slice
        release.set()
        assert last_read.wait(30)
    finally:
        release.set()
        reader.close()
    firsts = [slice_[0][2] for slice_ in store.slices]
    # The first was being read; the second and third were behind the claims; the last two are read.
    assert firsts == [keys[0][2], keys[3 * read_ahead.SLICE][2], keys[4 * read_ahead.SLICE][2]]


def test_a_failing_peek_stops_the_reading_ahead_not_the_run(
    db: Database, monkeypatch: pytest.MonkeyPatch, never_cached: None
) -> None:
    seed_messages(db, 400, channel_id=26)

    def lost(self: ProcessingStore, **_: object) -> list[MessageKey]:
        raise DatabaseUnavailable("statement timeout on the peek", "check the server")

    monkeypatch.setattr(ProcessingStore, "peek_queue", lost)
    coordinator = extractive(db, read_ahead=3)
    report = coordinator.run()
    assert report.status == "ok" and report.counts.processed == 400
    if db.reads_ahead_in_sessions:
        assert coordinator._read_ahead is not None and not coordinator._read_ahead.active
    # The sessions ended with the run (none is left waiting on its queue).
    assert not [t for t in threading.enumerate() if t.name.startswith("read-ahead-") and t.is_alive()]


def test_results_collected_at_once_are_written_a_batch_at_a_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_messages(db, 250, channel_id=27)
    real_upsert = ProcessingStore.upsert_documents
    sizes: list[int] = []

    def counting(self: ProcessingStore, documents: list) -> None:
        sizes.append(len(documents))
        real_upsert(self, documents)

    monkeypatch.setattr(ProcessingStore, "upsert_documents", counting)
    options = tune_options(ProcessOptions())
    # A worker hands back 125 results at once, and nothing is written before it is due: a write of 40
    # at most must take them in several transactions, each lease released with its document.
    options.hand_off, options.claim_batch, options.write_batch, options.flush_interval = 125, 250, 40, 60.0
    report = ProcessCoordinator(db, ExtractiveDocumentProcessor(), options).run()
    assert report.counts.processed == 250
    assert max(sizes) <= 40 and sum(sizes) == 250 and len(sizes) >= 7
    store = ProcessingStore(db)
    assert store.count_documents() == 250 and queue_keys(store) == []
    assert store.leases() == []


def test_the_other_sessions_start_only_once_a_slice_was_slow() -> None:
    slow = read_ahead.SLOW_SECONDS_PER_KEY * read_ahead.SLICE * 10
    fast = ScriptedStore([0.0] * 100)
    reader = ReadAhead(fast, 6)  # type: ignore[arg-type]
    try:
        reader.ahead(fake_keys(20 * read_ahead.SLICE))
        assert reader.wait_stopped(30)
    finally:
        reader.close()
    # Fast slices (pages cached): no connection opened beyond the first sessions.
    assert len(reader._threads) == read_ahead.FIRST_SESSIONS

    all_started = threading.Event()

    class Slow(ScriptedStore):
        def read_ahead(self, keys: list[MessageKey]) -> float | None:
            if len({t.name for t in threading.enumerate() if t.name.startswith("read-ahead-")}) >= 6:
                all_started.set()
            return super().read_ahead(keys)

    slow_store = Slow([slow] * 100)
    reader = ReadAhead(slow_store, 6)  # type: ignore[arg-type]
    try:
        reader.ahead(fake_keys(40 * read_ahead.SLICE))
        assert all_started.wait(30), "the other sessions did not start after slow slices"
    finally:
        reader.close()
    assert len(reader._threads) == 6
    assert not any(thread.is_alive() for thread in reader._threads)
