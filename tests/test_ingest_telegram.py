"""Incremental Telegram ingestion against the fake Telegram (real Telethon types), on both dialects."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.fake_telegram import BASE_DATE, FakeTelegram, SimulatedCrash, photo, video, voice, webpage
from telethon import errors as tg_errors
from telethon.tl import functions, types

from tg_parser.db.base import Database
from tg_parser.domain.models import Source
from tg_parser.ingestion.client import TelegramGateway
from tg_parser.ingestion.runner import Ingestor, Policy
from tg_parser.stores import IngestionStore, RawStore

CHANNEL = 1001
GROUP = 2002


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world() -> FakeTelegram:
    return FakeTelegram()


def make_ingestor(
    db: Database, world: FakeTelegram, settings: Any, **policy: Any
) -> tuple[Ingestor, list[float]]:
    slept: list[float] = []
    gateway = TelegramGateway(world.client())
    gateway.open()
    defaults: dict[str, Any] = {"sleep": slept.append, "rng": random.Random(7), "batch_size": 500}
    defaults.update(policy)
    ingestor = Ingestor(
        db,
        gateway,
        run_id="test-run",
        policy=Policy(**defaults),
        sqlite_dir=settings.db_sqlite_dir if db.dialect == "sqlite" else None,
    )
    return ingestor, slept


def add_source(db: Database, world: FakeTelegram, channel_id: int = CHANNEL, **fields: Any) -> Source:
    channel = world.channels[channel_id]
    store = IngestionStore(db)
    source = Source(
        source_id=fields.pop("source_id", channel.username or str(channel_id)),
        channel_id=channel_id,
        username=channel.username,
        title=channel.title,
        access_hash=channel.access_hash,
        **fields,
    )
    store.add_source(source)
    return store.get_source(source.source_id)


def ingest(db: Database, world: FakeTelegram, settings: Any, source_id: str, **policy: Any):
    limit = policy.pop("limit", None)
    ingestor, slept = make_ingestor(db, world, settings, **policy)
    try:
        source = IngestionStore(db).get_source(source_id)
        return ingestor.run_source(source, limit=limit), slept
    finally:
        ingestor.gateway.close()


def stored(db: Database, kind: str = "post") -> dict[int, str]:
    raw = RawStore(db)
    return {m.message_id: m.text for m in raw.stream_channel(CHANNEL) if m.message_type == kind}


def content_ids(world: FakeTelegram, channel_id: int = CHANNEL) -> list[int]:
    return sorted(m.id for m in world.channels[channel_id].messages.values() if isinstance(m, types.Message))


# --- posts ----------------------------------------------------------------------------------------


def test_backfill_then_incremental(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(230):
        world.post(channel, f"post {i}")
    world.service(channel)
    add_source(db, world)

    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok", outcome.message
    assert outcome.counts.posts_fetched == 230 and outcome.counts.posts_inserted == 230
    source = IngestionStore(db).get_source("newsfeed")
    assert source.last_post_id == 231  # past the trailing service message
    assert source.last_success_at is not None and source.fail_count == 0
    assert sorted(stored(db)) == content_ids(world)

    for i in range(30):
        world.post(channel, f"later {i}")
    before = len(world.calls(functions.messages.GetHistoryRequest))
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.posts_fetched == 30 and outcome.counts.posts_inserted == 30
    history = world.calls(functions.messages.GetHistoryRequest)[before:]
    forward = [r for r in history if r.add_offset < 0]  # paging forward from the cursor
    assert forward[0].offset_id == 232, "the incremental run starts right after the cursor"
    assert sorted(stored(db)) == content_ids(world)
    assert IngestionStore(db).get_source("newsfeed").last_post_id == 261

    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.posts_fetched == 0 and outcome.counts.posts_inserted == 0
    runs = IngestionStore(db).recent_runs("newsfeed")
    assert len(runs) == 3 and all(r.success for r in runs)
    assert [r.posts_inserted for r in reversed(runs)] == [230, 30, 0]


def test_batches_never_exceed_batch_size(db, world, settings, monkeypatch):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(260):
        world.post(channel, f"post {i}")
    add_source(db, world)
    sizes: list[int] = []
    real = RawStore.store_batch

    def spy(self: RawStore, messages: Any) -> Any:
        sizes.append(len(messages))
        return real(self, messages)

    monkeypatch.setattr(RawStore, "store_batch", spy)
    outcome, _ = ingest(db, world, settings, "newsfeed", batch_size=50)
    assert outcome.status == "ok"
    assert max(sizes) <= 50 and sum(sizes) == 260


def test_raw_payload_media_and_service_messages(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    world.post(
        channel,
        "Bold news with a link",
        entities=[types.MessageEntityBold(0, 4), types.MessageEntityTextUrl(15, 4, "https://example.org")],
        post_author="Anna",
        views=1234,
        forwards=56,
    )
    world.post(channel, "", media=photo(), grouped_id=99)  # media-only album part
    world.post(channel, "clip", media=video(), grouped_id=99)
    world.service(channel, types.MessageActionChannelCreate(title="News"))
    world.post(channel, "", media=voice())
    world.post(channel, "read this", media=webpage())
    add_source(db, world)

    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok"
    raw = RawStore(db)
    first = raw.get(f"tg:{CHANNEL}:post:1")
    assert first.text == "Bold news with a link" and first.views == 1234 and first.forwards == 56
    payload = first.raw_payload
    assert payload["post_author"] == "Anna"
    assert [e["_"] for e in payload["entities"]] == ["MessageEntityBold", "MessageEntityTextUrl"]
    assert payload["date"] == "2025-01-01T10:00:00Z"
    media_only = raw.get(f"tg:{CHANNEL}:post:2")
    assert media_only.text == "" and media_only.media_type == "photo" and media_only.grouped_id == 99
    assert media_only.media["width"] == 1280 and media_only.media["height"] == 720
    assert media_only.raw_payload["media"]["_"] == "MessageMediaPhoto"
    clip = raw.get(f"tg:{CHANNEL}:post:3")
    assert clip.media_type == "video" and clip.media["file_name"] == "clip.mp4"
    assert raw.get(f"tg:{CHANNEL}:post:4") is None  # service message skipped
    assert raw.get(f"tg:{CHANNEL}:post:5").media_type == "voice"
    page = raw.get(f"tg:{CHANNEL}:post:6")
    assert page.media_type == "webpage" and page.media["url"] == "https://example.org/article"
    assert IngestionStore(db).get_source("newsfeed").last_post_id == 6


def test_since_until_window_and_limit(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(50):
        world.post(channel, f"post {i}")  # post n is dated BASE_DATE + n hours
    add_source(
        db,
        world,
        since_date=BASE_DATE + timedelta(hours=10),
        until_date=BASE_DATE + timedelta(hours=40),
    )
    outcome, _ = ingest(db, world, settings, "newsfeed", limit=12)
    assert outcome.counts.posts_fetched == 12
    assert sorted(stored(db)) == list(range(10, 22))
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert sorted(stored(db)) == list(range(10, 41))
    assert IngestionStore(db).get_source("newsfeed").last_post_id == 40  # stops before the window ends
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.posts_fetched == 0


def test_resolves_username_once_and_stores_identity(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "NewsFeed")
    world.post(channel, "hello")
    IngestionStore(db).add_source(Source(source_id="newsfeed", username="NewsFeed"))  # added offline
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok"
    source = IngestionStore(db).get_source("newsfeed")
    assert (source.channel_id, source.access_hash, source.title) == (CHANNEL, channel.access_hash, "News")
    assert stored(db) == {1: "hello"}
    resolves = len(world.calls(functions.contacts.ResolveUsernameRequest))
    ingest(db, world, settings, "newsfeed")
    assert len(world.calls(functions.contacts.ResolveUsernameRequest)) == resolves  # access hash reused


# --- kill and rerun ----------------------------------------------------------------------------------


def test_crash_between_batches_then_rerun_stores_the_same_set(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(700):
        world.post(channel, f"post {i}")
        if i % 97 == 0:
            world.service(channel)
    add_source(db, world)
    # The process "dies" on the 5th history request: after two batches of 200 were committed.
    world.fail(functions.messages.GetHistoryRequest, lambda r: SimulatedCrash(), skip=4)
    with pytest.raises(SimulatedCrash):
        ingest(db, world, settings, "newsfeed", batch_size=200)
    source = IngestionStore(db).get_source("newsfeed")
    kept = stored(db)
    assert kept, "whole batches committed before the crash are kept"
    assert max(kept) <= source.last_post_id or source.last_post_id == 0
    assert all(m in kept for m in content_ids(world) if m <= source.last_post_id), (
        "cursor never ahead of rows"
    )
    assert source.last_post_id == 400  # four pages in two batches; only the request in flight was lost

    outcome, _ = ingest(db, world, settings, "newsfeed", batch_size=200)
    assert outcome.status == "ok"
    assert sorted(stored(db)) == content_ids(world)
    assert RawStore(db).count(CHANNEL) == 700
    runs = IngestionStore(db).recent_runs("newsfeed")
    assert len(runs) == 2 and runs[-1].finished_at is None  # the killed attempt stays visibly unfinished


def test_crash_after_rows_before_cursor_then_rerun(db, world, settings, monkeypatch):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(300):
        world.post(channel, f"post {i}")
    add_source(db, world)
    real = IngestionStore.advance_post_cursor
    calls = {"n": 0}

    def dying(self: IngestionStore, source_id: str, last_post_id: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise SimulatedCrash  # the rows of batch 2 are committed, its cursor is not
        real(self, source_id, last_post_id)

    monkeypatch.setattr(IngestionStore, "advance_post_cursor", dying)
    with pytest.raises(SimulatedCrash):
        ingest(db, world, settings, "newsfeed", batch_size=100)
    source = IngestionStore(db).get_source("newsfeed")
    if db.dialect == "postgres":
        assert source.last_post_id == 100 and len(stored(db)) == 100  # rows and cursor rolled back together
    else:
        assert source.last_post_id == 100 and len(stored(db)) == 200  # cursor behind the rows, never ahead
    monkeypatch.setattr(IngestionStore, "advance_post_cursor", real)
    outcome, _ = ingest(db, world, settings, "newsfeed", batch_size=100)
    assert outcome.status == "ok" and outcome.counts.versions_recorded == 0
    assert sorted(stored(db)) == content_ids(world)


# --- edits -------------------------------------------------------------------------------------------


def test_edits_go_to_the_versions_journal(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(20):
        world.post(channel, f"post {i}")
    add_source(db, world)
    ingest(db, world, settings, "newsfeed")
    world.edit(channel, 15, "post 14 (corrected)")
    world.post(channel, "new one")
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.versions_recorded == 1
    assert outcome.counts.posts_rechecked == 20
    raw = RawStore(db)
    ref = f"tg:{CHANNEL}:post:15"
    assert raw.get(ref).text == "post 14"  # the snapshot is never overwritten
    versions = raw.versions(ref)
    assert len(versions) == 1 and versions[0].text == "post 14 (corrected)"
    assert versions[0].edit_date == channel.messages[15].edit_date
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.versions_recorded == 0  # the same edit is journaled once


# --- comments ----------------------------------------------------------------------------------------


def test_comments_through_the_discussion_group(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed", discussion_id=GROUP)
    for i in range(5):
        world.post(channel, f"post {i}")
    first = world.comment(channel, 2, "first!")
    world.comment(channel, 2, "agreed", reply_to=first.id)
    world.comment(channel, 4, "hello")
    add_source(db, world, include_comments=True)

    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok", outcome.message
    assert outcome.counts.comments_inserted == 3 and outcome.counts.threads_read == 2
    # only posts with comments were asked for theirs
    assert sorted(r.msg_id for r in world.calls(functions.messages.GetRepliesRequest)) == [2, 2, 4, 4]
    raw = RawStore(db)
    group = world.channels[GROUP]
    comment = raw.get(f"tg:{CHANNEL}:comment:{first.id}")
    assert comment.thread_id == 2 and comment.text == "first!"
    assert comment.parent_message_id == group.roots[2]  # discussion-group id space
    assert comment.raw_payload["discussion_chat_id"] == GROUP
    assert comment.raw_payload["discussion_root_id"] == group.roots[2]
    reply = raw.get(f"tg:{CHANNEL}:comment:{first.id + 1}")
    assert reply.parent_message_id == first.id and reply.raw_payload["discussion_root_id"] == group.roots[2]
    # The first run read those threads one by one (they predate the stream) up to the stream's floor,
    # the group's newest message when the stream started.
    floor = max(group.messages)
    cursors = {c.thread_id: c.last_comment_id for c in IngestionStore(db).comment_cursors("newsfeed")}
    assert cursors == {2: floor, 4: floor}
    assert IngestionStore(db).discussion_cursor("newsfeed").floor_id == floor

    later = world.comment(channel, 4, "late comment")
    before = len(world.calls(functions.messages.GetRepliesRequest))
    history = len(world.calls(functions.messages.GetHistoryRequest))
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.comments_inserted == 1
    assert world.calls(functions.messages.GetRepliesRequest)[before:] == [], "no thread is read again"
    from_group = [
        r for r in world.calls(functions.messages.GetHistoryRequest)[history:] if r.peer.channel_id == GROUP
    ]
    assert from_group[0].offset_id == floor + 1  # the stream resumes after its cursor
    assert len(from_group) == 2  # Telethon asks once more after a short page
    assert raw.get(f"tg:{CHANNEL}:comment:{later.id}").text == "late comment"
    assert raw.get(f"tg:{CHANNEL}:comment:{later.id}").thread_id == 4
    assert len(stored(db, "comment")) == 4


def test_threads_an_interrupted_run_left_unread_are_read_by_the_next_run(db, world, settings):
    """Found by tests/test_crash_kill.py: the post cursor is committed before the comments are read, so
    threads of posts a killed run stored, or re-read with new comments, were never read once those posts
    were no longer among the newest re-read ones."""
    channel = world.add_channel(CHANNEL, "News", "newsfeed", discussion_id=GROUP)
    for i in range(30):
        world.post(channel, f"post {i}")
    for post_id in (3, 10, 25):
        world.comment(channel, post_id, f"on {post_id}")
    add_source(db, world, include_comments=True)
    replies = functions.messages.GetRepliesRequest
    # Killed at its first thread request: the posts and their cursor are committed, no comment is.
    world.fail(replies, lambda r: SimulatedCrash())
    with pytest.raises(SimulatedCrash):
        ingest(db, world, settings, "newsfeed", recheck_posts=5)
    assert IngestionStore(db).get_source("newsfeed").last_post_id == 30 and stored(db, "comment") == {}
    outcome, _ = ingest(db, world, settings, "newsfeed", recheck_posts=5)
    assert outcome.status == "ok", outcome.message
    assert sorted(stored(db, "comment").values()) == ["on 10", "on 25", "on 3"]

    # A late comment under post 25 and 20 new posts; the run that sees them is killed at its read of the
    # discussion group's history, after committing the new posts: the next run re-reads only 46-50, and
    # the stream (its cursor not moved) still brings the comment under the old post.
    world.comment(channel, 25, "late on 25")
    for i in range(20):
        world.post(channel, f"new post {i}")
    world.fail(
        functions.messages.GetHistoryRequest,
        lambda r: SimulatedCrash(),
        where=lambda r: getattr(r.peer, "channel_id", None) == GROUP,
    )
    with pytest.raises(SimulatedCrash):
        ingest(db, world, settings, "newsfeed", recheck_posts=6)
    assert IngestionStore(db).get_source("newsfeed").last_post_id == 50
    outcome, _ = ingest(db, world, settings, "newsfeed", recheck_posts=5)
    assert outcome.status == "ok", outcome.message
    assert "late on 25" in stored(db, "comment").values()

    # After a run that finished, no thread is read again.
    before = len(world.calls(replies))
    outcome, _ = ingest(db, world, settings, "newsfeed", recheck_posts=5)
    assert outcome.status == "ok" and world.calls(replies)[before:] == []


def test_post_without_thread_is_marked_and_skipped(db, world, settings):
    from tg_parser.stores.ingestion import IngestionStore

    channel = world.add_channel(CHANNEL, "News", "newsfeed", discussion_id=GROUP)
    for i in range(3):
        world.post(channel, f"post {i}")
    world.comment(channel, 1, "on one")
    world.comment(channel, 2, "on two")
    world.break_thread(channel, 1)
    add_source(db, world, include_comments=True)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok" and outcome.counts.threads_unavailable == 1
    assert IngestionStore(db).unavailable_threads("newsfeed") == {1}
    assert list(stored(db, "comment").values()) == ["on two"]
    before = len(world.calls(functions.messages.GetRepliesRequest))
    world.comment(channel, 2, "more")
    ingest(db, world, settings, "newsfeed")
    assert world.calls(functions.messages.GetRepliesRequest)[before:] == []  # the stream brings it
    assert sorted(stored(db, "comment").values()) == ["more", "on two"]


def test_channel_without_discussion_is_marked(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    world.post(channel, "no comments here")
    add_source(db, world, include_comments=True)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok"
    assert IngestionStore(db).get_source("newsfeed").comments_unavailable is True
    before = len(world.calls(functions.channels.GetFullChannelRequest))
    ingest(db, world, settings, "newsfeed")
    assert len(world.calls(functions.channels.GetFullChannelRequest)) == before  # not asked again


# --- flood control and errors ------------------------------------------------------------------------


def test_short_flood_wait_is_slept_and_paging_resumes(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(250):
        world.post(channel, f"post {i}")
    add_source(db, world)
    world.fail(functions.messages.GetHistoryRequest, lambda r: tg_errors.FloodWaitError(r, capture=7), skip=1)
    outcome, slept = ingest(db, world, settings, "newsfeed", flood_sleep_threshold=60)
    assert outcome.status == "ok"
    assert slept == [8]
    history = [r for r in world.calls(functions.messages.GetHistoryRequest) if r.add_offset < 0]
    assert [r.offset_id for r in history[:3]] == [1, 101, 101], "the failed page is asked again, not page 1"
    assert sorted(stored(db)) == content_ids(world)


def test_long_flood_wait_parks_the_source_and_resumes_later(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    for i in range(250):
        world.post(channel, f"post {i}")
    add_source(db, world)
    clock = Clock(datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    world.fail(
        functions.messages.GetHistoryRequest, lambda r: tg_errors.FloodWaitError(r, capture=3600), skip=1
    )
    outcome, slept = ingest(db, world, settings, "newsfeed", clock=clock)
    assert outcome.status == "rate_limited" and slept == []
    assert outcome.retry_at == clock.now + timedelta(hours=1)
    source = IngestionStore(db).get_source("newsfeed")
    assert source.rate_limit_until == clock.now + timedelta(hours=1)
    assert source.last_post_id == 100 and len(stored(db)) == 100  # the page before the wait is kept
    assert source.fail_count == 0 and source.status == "active"
    assert "FloodWaitError" in source.last_error
    run = IngestionStore(db).recent_runs("newsfeed")[0]
    assert run.success is False and run.error_class == "FloodWaitError" and run.posts_inserted == 100

    before = len(world.calls(functions.messages.GetHistoryRequest))
    clock.now += timedelta(minutes=30)
    outcome, _ = ingest(db, world, settings, "newsfeed", clock=clock)
    assert outcome.status == "rate_limited"
    assert len(world.calls(functions.messages.GetHistoryRequest)) == before  # skipped without asking
    assert len(IngestionStore(db).recent_runs("newsfeed")) == 1  # a skip is not an attempt

    clock.now += timedelta(minutes=31)
    outcome, _ = ingest(db, world, settings, "newsfeed", clock=clock)
    assert outcome.status == "ok"
    forward = [r for r in world.calls(functions.messages.GetHistoryRequest)[before:] if r.add_offset < 0]
    assert forward[0].offset_id == 101, "resumes from the stored cursor, not from the start"
    assert sorted(stored(db)) == content_ids(world)
    source = IngestionStore(db).get_source("newsfeed")
    assert source.rate_limit_until is None and source.last_error is None


def test_retryable_errors_back_off_then_succeed(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    world.post(channel, "hello")
    add_source(db, world)
    world.fail(functions.messages.GetHistoryRequest, lambda r: ConnectionError("reset by peer"), times=2)
    outcome, slept = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok" and stored(db) == {1: "hello"}
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0  # exponential, jittered


def test_retryable_errors_exhausted_count_a_failure(db, world, settings):
    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    world.post(channel, "hello")
    add_source(db, world)
    world.fail(
        functions.messages.GetHistoryRequest, lambda r: tg_errors.ServerError(r, "INTERNAL", 500), times=None
    )
    outcome, slept = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "failed" and len(slept) == 4
    source = IngestionStore(db).get_source("newsfeed")
    assert (
        source.status == "active" and source.fail_count == 1 and source.last_error.startswith("ServerError")
    )
    assert source.last_attempt_at is not None and source.last_success_at is None
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert IngestionStore(db).get_source("newsfeed").fail_count == 2
    world.rules.clear()
    outcome, _ = ingest(db, world, settings, "newsfeed")
    source = IngestionStore(db).get_source("newsfeed")
    assert outcome.status == "ok" and source.fail_count == 0 and source.last_error is None
    runs = IngestionStore(db).recent_runs("newsfeed")
    assert [r.success for r in reversed(runs)] == [False, False, True]
    assert runs[-1].error_class == "ServerError"


def test_private_channel_is_a_permanent_error(db, world, settings):
    world.add_channel(CHANNEL, "News", "newsfeed", private=True)
    add_source(db, world)
    outcome, slept = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "failed" and slept == []
    source = IngestionStore(db).get_source("newsfeed")
    assert source.status == "error" and source.fail_count == 1
    assert source.last_error.startswith("ChannelPrivateError")


def test_invalid_username_is_a_permanent_error(db, world, settings):
    IngestionStore(db).add_source(Source(source_id="gone", username="gone_channel"))
    outcome, _ = ingest(db, world, settings, "gone")
    assert outcome.status == "failed"
    source = IngestionStore(db).get_source("gone")
    assert source.status == "error" and source.last_error.startswith("ChannelNotFound")


def test_auth_error_stops_the_run(db, world, settings):
    world.add_channel(CHANNEL, "News", "newsfeed")
    world.add_channel(CHANNEL + 1, "Other", "otherfeed")
    add_source(db, world)
    add_source(db, world, CHANNEL + 1)
    world.fail(functions.messages.GetHistoryRequest, lambda r: tg_errors.AuthKeyUnregisteredError(r))
    ingestor, _ = make_ingestor(db, world, settings)
    sources = IngestionStore(db).list_sources()
    outcomes = ingestor.run(sources)
    ingestor.gateway.close()
    assert [o.status for o in outcomes] == ["failed"] and outcomes[0].auth_failed
    assert IngestionStore(db).get_source("newsfeed").status == "error"
    assert IngestionStore(db).get_source("otherfeed").last_attempt_at is None


def test_paused_and_export_sources_are_skipped(db, world, settings):
    world.add_channel(CHANNEL, "News", "newsfeed")
    add_source(db, world, status="paused")
    IngestionStore(db).add_source(Source(source_id="export-5", kind="export", channel_id=5))
    ingestor, _ = make_ingestor(db, world, settings)
    outcomes = ingestor.run(IngestionStore(db).list_sources())
    ingestor.gateway.close()
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert world.calls(functions.messages.GetHistoryRequest) == []


def test_lock_held_skips_the_source(db, world, settings):
    from tg_parser.ingestion.locks import source_lock

    channel = world.add_channel(CHANNEL, "News", "newsfeed")
    world.post(channel, "hello")
    add_source(db, world)
    with source_lock(db, "newsfeed"):
        outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "locked" and "another run" in outcome.message
    assert IngestionStore(db).recent_runs("newsfeed") == []
    assert stored(db) == {}
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok" and stored(db) == {1: "hello"}
