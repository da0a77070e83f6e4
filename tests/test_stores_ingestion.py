"""IngestionStore on both dialects: sources, cursors, attempt bookkeeping and the ingest runs journal."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tg_parser.db.base import Database
from tg_parser.domain.models import Source
from tg_parser.stores import IngestionStore

TRICKY_IDS = [
    "a'b%c:d;e",
    '"double"',
    "100%",
    "%s",
    "%(source_id)s",
    ":source_id",
    "x; DROP TABLE ingestion.sources; --",
    "'; DELETE FROM ingestion.sources WHERE '1'='1",
    "back\\slash",
    "Канал 👋",
    "@user_name",
    "-1001234567890",
]


INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture
def store(db: Database) -> IngestionStore:
    return IngestionStore(db)


def _recent(value: datetime | None, before: datetime) -> bool:
    return value is not None and value.utcoffset() == timedelta(0) and before <= value <= datetime.now(UTC)


# --- sources CRUD -----------------------------------------------------------------------------------


def test_tricky_ids_and_titles_round_trip(store: IngestionStore) -> None:
    for source_id in TRICKY_IDS:
        assert store.add_source(Source(source_id=source_id, title=f"title {source_id}", username=source_id))
    for source_id in TRICKY_IDS:
        source = store.get_source(source_id)
        assert source is not None
        assert (source.source_id, source.title, source.username) == (
            source_id,
            f"title {source_id}",
            source_id,
        )
    assert {s.source_id for s in store.list_sources()} == set(TRICKY_IDS)  # nothing executed out of a value
    assert store.set_status(TRICKY_IDS[0], "paused")
    assert [s.source_id for s in store.list_sources("paused")] == [TRICKY_IDS[0]]
    assert store.remove_source(TRICKY_IDS[6])
    assert len(store.list_sources()) == len(TRICKY_IDS) - 1


def test_add_returns_whether_new_and_get_returns_what_was_added(store: IngestionStore) -> None:
    source = Source(
        source_id="chan",
        channel_id=-1001,
        username="chan_user",
        title="Chan",
        kind="export",
        include_comments=True,
        since_date=datetime(2024, 1, 1, tzinfo=UTC),
        until_date=datetime(2024, 6, 1, tzinfo=UTC),
        access_hash=-(2**63),
        created_at=datetime(2025, 1, 1, 1, 2, 3, 456789, tzinfo=UTC),
        updated_at=datetime(2025, 1, 1, 1, 2, 3, 456789, tzinfo=UTC),
    )
    assert store.add_source(source) is True
    assert store.get_source("chan") == source
    assert store.get_source("nope") is None


def test_re_adding_never_resets_cursor_counters_or_status(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s", username="original", include_comments=True))
    store.advance_post_cursor("s", 100)
    store.advance_comment_cursor("s", 100, 7)
    store.record_failure("s", "flood", permanent=False)
    store.set_status("s", "paused")
    store.set_comments_unavailable("s")
    before = store.get_source("s")
    assert before is not None
    again = Source(source_id="s", username="other", include_comments=False, status="active", last_post_id=0)
    assert store.add_source(again) is False
    assert store.get_source("s") == before
    assert store.comment_cursor("s", 100) == 7
    assert (before.last_post_id, before.fail_count, before.status, before.username) == (
        100,
        1,
        "paused",
        "original",
    )


def test_list_in_id_order_and_by_status(store: IngestionStore) -> None:
    for source_id in ("c", "a", "b", "d"):
        store.add_source(Source(source_id=source_id))
    store.set_status("b", "paused")
    store.set_status("d", "error")
    assert [s.source_id for s in store.list_sources()] == ["a", "b", "c", "d"]
    assert [s.source_id for s in store.list_sources("active")] == ["a", "c"]
    assert [s.source_id for s in store.list_sources("paused")] == ["b"]
    assert [s.source_id for s in store.list_sources("error")] == ["d"]


def test_status_changes(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    before = datetime.now(UTC)
    assert store.set_status("s", "paused") is True
    source = store.get_source("s")
    assert source is not None and source.status == "paused" and _recent(source.updated_at, before)
    assert store.set_status("s", "active") is True
    assert store.get_source("s").status == "active"  # type: ignore[union-attr]
    assert store.set_status("missing", "paused") is False
    with pytest.raises(INTEGRITY_ERRORS):  # the CHECK constraint guards the column on both dialects
        store.db.execute("sources_set_status", {"source_id": "s", "status": "bogus", "now": before})
    assert store.get_source("s").status == "active"  # type: ignore[union-attr]


def test_update_identity_keeps_what_is_not_given(store: IngestionStore) -> None:
    store.add_source(Source(source_id="@chan", username="chan", title="Old", last_post_id=5))
    store.update_identity("@chan", channel_id=-100777, access_hash=123)
    source = store.get_source("@chan")
    assert source is not None
    assert (source.channel_id, source.username, source.title, source.access_hash) == (
        -100777,
        "chan",
        "Old",
        123,
    )
    store.update_identity("@chan", title="New 100% ;'")
    source = store.get_source("@chan")
    assert source is not None
    assert (source.channel_id, source.title, source.last_post_id, source.status) == (
        -100777,
        "New 100% ;'",
        5,
        "active",
    )
    assert [s.source_id for s in store.sources_for_channel(-100777)] == ["@chan"]
    assert store.sources_for_channel(-1) == []


def test_sources_for_channel_lists_every_source_of_it(store: IngestionStore) -> None:
    store.add_source(Source(source_id="live", channel_id=42))
    store.add_source(Source(source_id="export", channel_id=42, kind="export"))
    store.add_source(Source(source_id="other", channel_id=43))
    assert [s.source_id for s in store.sources_for_channel(42)] == ["export", "live"]


def test_update_options(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s", include_comments=False))
    since, until = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    store.update_options("s", include_comments=True, since_date=since, until_date=until)
    source = store.get_source("s")
    assert source is not None and (source.include_comments, source.since_date, source.until_date) == (
        True,
        since,
        until,
    )
    store.update_options("s", include_comments=False, since_date=None, until_date=None)
    source = store.get_source("s")
    assert source is not None and (source.include_comments, source.since_date, source.until_date) == (
        False,
        None,
        None,
    )


def test_remove_cascades_to_comment_cursors(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    store.add_source(Source(source_id="t"))
    store.advance_comment_cursor("s", 1, 10)
    store.advance_comment_cursor("t", 1, 20)
    assert store.remove_source("s") is True
    assert store.remove_source("s") is False
    assert store.get_source("s") is None
    assert store.comment_cursors("s") == []
    assert store.comment_cursor("t", 1) == 20


# --- attempts, failures, rate limits ----------------------------------------------------------------


def test_record_attempt_success_failure(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    before = datetime.now(UTC)
    store.record_attempt("s")
    source = store.get_source("s")
    assert source is not None and _recent(source.last_attempt_at, before) and source.last_success_at is None

    store.record_failure("s", "timeout", permanent=False)
    store.record_failure("s", "x" * 5000, permanent=False)
    source = store.get_source("s")
    assert source is not None
    assert (source.fail_count, source.status) == (2, "active")
    assert source.last_error == "x" * 2000  # capped

    store.record_failure("s", "channel is private", permanent=True)
    source = store.get_source("s")
    assert source is not None and (source.fail_count, source.status, source.last_error) == (
        3,
        "error",
        "channel is private",
    )

    store.set_rate_limit("s", datetime(2030, 1, 1, tzinfo=UTC))
    store.record_success("s")
    source = store.get_source("s")
    assert source is not None
    assert (source.fail_count, source.last_error, source.status, source.rate_limit_until) == (
        0,
        None,
        "active",
        None,
    )
    assert _recent(source.last_success_at, before)


def test_success_does_not_resume_a_paused_source(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    store.set_status("s", "paused")
    store.record_failure("s", "boom", permanent=True)  # a permanent failure flags it
    assert store.get_source("s").status == "error"  # type: ignore[union-attr]
    store.set_status("s", "paused")
    store.record_success("s")
    assert store.get_source("s").status == "paused"  # type: ignore[union-attr]


def test_rate_limit_set_and_cleared(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    until = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    store.set_rate_limit("s", until)
    assert store.get_source("s").rate_limit_until == until  # type: ignore[union-attr]
    store.set_rate_limit("s", None)
    assert store.get_source("s").rate_limit_until is None  # type: ignore[union-attr]


def test_comments_unavailable_flag(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    store.set_comments_unavailable("s")
    assert store.get_source("s").comments_unavailable is True  # type: ignore[union-attr]
    store.set_comments_unavailable("s", False)
    assert store.get_source("s").comments_unavailable is False  # type: ignore[union-attr]


# --- cursors ----------------------------------------------------------------------------------------


def test_post_cursor_only_moves_forward(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    store.add_source(Source(source_id="t"))
    for value, expected in ((10, 10), (5, 10), (10, 10), (2**40, 2**40), (0, 2**40)):
        store.advance_post_cursor("s", value)
        assert store.get_source("s").last_post_id == expected  # type: ignore[union-attr]
    assert store.get_source("t").last_post_id == 0  # type: ignore[union-attr]


def test_comment_cursors_per_thread_forward_only(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    store.add_source(Source(source_id="t"))
    assert store.comment_cursor("s", 100) == 0
    store.advance_comment_cursor("s", 300, 5)
    store.advance_comment_cursor("s", 100, 50)
    store.advance_comment_cursor("s", 100, 40)  # back: ignored
    store.advance_comment_cursor("s", 200, 1)
    store.advance_comment_cursor("t", 100, 99)
    assert store.comment_cursor("s", 100) == 50
    cursors = store.comment_cursors("s")
    assert [(c.thread_id, c.last_comment_id) for c in cursors] == [(100, 50), (200, 1), (300, 5)]
    assert all(c.source_id == "s" and c.updated_at.utcoffset() == timedelta(0) for c in cursors)
    assert [(c.thread_id, c.last_comment_id) for c in store.comment_cursors("t")] == [(100, 99)]


def test_comment_cursor_needs_a_known_source(store: IngestionStore) -> None:
    with pytest.raises(INTEGRITY_ERRORS):  # foreign key on both dialects
        store.advance_comment_cursor("ghost", 1, 1)
    assert store.comment_cursors("ghost") == []


# --- ingest runs journal ----------------------------------------------------------------------------


def test_ingest_runs_journal(store: IngestionStore) -> None:
    store.add_source(Source(source_id="s"))
    before = datetime.now(UTC)
    first = store.start_run("s", "run-1")
    store.finish_run(
        first, success=True, counts={"posts_fetched": 10, "posts_inserted": 7, "versions_recorded": 2}
    )
    second = store.start_run("s", "run-2")
    store.finish_run(
        second, success=False, counts={"comments_fetched": 3}, error=ValueError("bad ' % : ; value")
    )
    third = store.start_run("s", "run-3")  # still running
    other = store.start_run("t", "run-1")
    assert len({first, second, third, other}) == 4

    runs = store.recent_runs("s")
    assert [r.run_id for r in runs] == ["run-3", "run-2", "run-1"]  # newest first
    running, failed, ok = runs
    assert running.id == third and running.finished_at is None and running.success is None
    assert (failed.success, failed.error_class, failed.error_message) == (
        False,
        "ValueError",
        "bad ' % : ; value",
    )
    assert (failed.comments_fetched, failed.posts_fetched) == (3, 0)
    assert ok.success is True and ok.error_class is None
    assert (ok.posts_fetched, ok.posts_inserted, ok.versions_recorded, ok.comments_inserted) == (10, 7, 2, 0)
    assert _recent(ok.started_at, before) and ok.finished_at is not None and ok.finished_at >= ok.started_at
    assert [r.run_id for r in store.recent_runs("s", limit=2)] == ["run-3", "run-2"]
    assert [r.id for r in store.recent_runs("t")] == [other]
