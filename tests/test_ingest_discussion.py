"""Comments read from the discussion group's own history (issue 16), against the fake Telegram (real
Telethon types at the client boundary), on both dialects.

One stream per source, from its own cursor, attaches each group message to its channel post through its
reply header; per-thread reads remain for the first backfill of threads older than the stream and for
groups whose history this account cannot read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.fake_telegram import BASE_DATE, FakeChannel, FakeTelegram, SimulatedCrash
from telethon import errors as tg_errors
from telethon.tl import functions, types
from test_ingest_telegram import CHANNEL, GROUP, Clock, add_source, ingest, stored

from tg_parser.config import Settings
from tg_parser.db import migrations
from tg_parser.db.connect import open_database
from tg_parser.stores import IngestionStore, RawStore


@pytest.fixture
def world() -> FakeTelegram:
    return FakeTelegram()


def discussion(world: FakeTelegram, posts: int = 3) -> FakeChannel:
    channel = world.add_channel(CHANNEL, "News", "newsfeed", discussion_id=GROUP)
    for i in range(posts):
        world.post(channel, f"post {i}")
    return channel


def comment_ids(world: FakeTelegram) -> list[int]:
    """Every comment on a channel post in the fake group (what a complete collection stores)."""
    group = world.channels[GROUP]
    roots = set(group.roots.values())
    return sorted(
        m.id
        for m in group.messages.values()
        if isinstance(m, types.Message)
        and isinstance(m.reply_to, types.MessageReplyHeader)
        and (m.reply_to.reply_to_top_id or m.reply_to.reply_to_msg_id) in roots
    )


def requests_since(world: FakeTelegram, mark: int) -> list[Any]:
    return world.requests[mark:]


def group_history(requests: list[Any]) -> list[Any]:
    return [
        r
        for r in requests
        if isinstance(r, functions.messages.GetHistoryRequest) and r.peer.channel_id == GROUP
    ]


def comment_requests(requests: list[Any]) -> list[Any]:
    """The requests made for comments: the group's history, threads, root look-ups, the group's identity."""
    return group_history(requests) + [
        r
        for r in requests
        if isinstance(
            r,
            functions.messages.GetRepliesRequest
            | functions.channels.GetMessagesRequest
            | functions.channels.GetFullChannelRequest,
        )
    ]


def test_a_comment_on_a_post_far_older_than_the_recheck_window_is_collected(db, world, settings):
    channel = discussion(world, posts=40)
    world.comment(channel, 1, "early")
    add_source(db, world, include_comments=True)
    outcome, _ = ingest(db, world, settings, "newsfeed", recheck_posts=5)
    assert outcome.status == "ok", outcome.message
    assert list(stored(db, "comment").values()) == ["early"]  # the first backfill, thread by thread

    for i in range(10):
        world.post(channel, f"newer {i}")  # post 1 is now 49 posts behind the 5 re-checked ones
    late = world.comment(channel, 1, "weeks later")
    mark = len(world.requests)
    outcome, _ = ingest(db, world, settings, "newsfeed", recheck_posts=5)
    assert outcome.status == "ok", outcome.message
    assert outcome.counts.comments_inserted == 1
    comment = RawStore(db).get(f"tg:{CHANNEL}:comment:{late.id}")
    assert comment.text == "weeks later" and comment.thread_id == 1
    assert comment.parent_message_id == world.channels[GROUP].roots[1]
    asked = requests_since(world, mark)
    assert not [r for r in asked if isinstance(r, functions.messages.GetRepliesRequest)]
    # the ten new posts' forwarded copies came through the stream too: known roots, nothing looked up
    assert not [r for r in asked if isinstance(r, functions.channels.GetMessagesRequest)]
    assert outcome.counts.discussion_skipped == 10


def test_a_run_with_nothing_new_makes_one_request_for_comments(db, world, settings):
    channel = discussion(world, posts=5)
    for post_id in range(1, 6):
        world.comment(channel, post_id, f"on {post_id}")
    add_source(db, world, include_comments=True)
    ingest(db, world, settings, "newsfeed")
    ingest(db, world, settings, "newsfeed")  # settles: the threads' backfill is done

    mark = len(world.requests)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok" and outcome.counts.comments_fetched == 0
    asked = comment_requests(requests_since(world, mark))
    assert len(asked) == 1 and isinstance(asked[0], functions.messages.GetHistoryRequest)
    cursor = IngestionStore(db).discussion_cursor("newsfeed")
    assert asked[0].offset_id == cursor.last_message_id + 1  # read from the cursor on

    # New comments cost requests by their number, not by the number of posts with threads.
    for i in range(30):
        world.comment(channel, 1 + i % 5, f"news {i}")
    mark = len(world.requests)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.comments_inserted == 30
    asked = comment_requests(requests_since(world, mark))
    assert len(asked) == 2 and all(isinstance(r, functions.messages.GetHistoryRequest) for r in asked)


def test_a_run_killed_mid_stream_and_run_again_stores_the_exact_set(db, world, settings):
    channel = discussion(world, posts=6)
    add_source(db, world, include_comments=True)
    ingest(db, world, settings, "newsfeed")  # the stream starts here (nothing to backfill yet)
    last: dict[int, int] = {}
    for i in range(240):
        post_id = 1 + i % 6
        if i % 4 == 3 and post_id in last:  # a reply to the thread's previous comment
            last[post_id] = world.comment(channel, post_id, f"reply {i}", reply_to=last[post_id]).id
        else:
            last[post_id] = world.comment(channel, post_id, f"comment {i}").id
    world.chatter(channel, "anyone here?")
    world.fail(
        functions.messages.GetHistoryRequest,
        lambda r: SimulatedCrash("killed"),
        skip=2,
        where=lambda r: r.peer.channel_id == GROUP,
    )
    with pytest.raises(SimulatedCrash):
        ingest(db, world, settings, "newsfeed", batch_size=50)
    partial = stored(db, "comment")
    cursor = IngestionStore(db).discussion_cursor("newsfeed")
    assert 0 < len(partial) < 240, "the crash came mid-stream"
    assert max(partial) <= cursor.last_message_id or not partial  # never ahead of stored rows
    assert all(c <= cursor.last_message_id for c in partial)

    outcome, _ = ingest(db, world, settings, "newsfeed", batch_size=50)
    assert outcome.status == "ok", outcome.message
    assert sorted(stored(db, "comment")) == comment_ids(world)
    assert len(stored(db, "comment")) == 240
    assert outcome.counts.versions_recorded == 0  # a re-read batch is found unchanged


def test_replies_to_replies_keep_their_parent(db, world, settings):
    channel = discussion(world, posts=2)
    add_source(db, world, include_comments=True)
    ingest(db, world, settings, "newsfeed")
    top = world.comment(channel, 2, "a question")
    answer = world.comment(channel, 2, "an answer", reply_to=top.id)
    follow = world.comment(channel, 2, "a follow-up", reply_to=answer.id)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.comments_inserted == 3
    raw = RawStore(db)
    root = world.channels[GROUP].roots[2]
    got = {m.message_id: m for m in raw.stream_channel(CHANNEL) if m.message_type == "comment"}
    assert {i: (m.thread_id, m.parent_message_id) for i, m in got.items()} == {
        top.id: (2, root),
        answer.id: (2, top.id),
        follow.id: (2, answer.id),
    }
    assert got[follow.id].raw_payload["discussion_root_id"] == root


def test_group_chatter_is_skipped_and_counted_not_stored(db, world, settings):
    channel = discussion(world, posts=2)
    add_source(db, world, include_comments=True)
    ingest(db, world, settings, "newsfeed")
    hello = world.chatter(channel, "hello group")
    world.chatter(channel, "hi!", reply_to=hello.id)  # a reply in the chatter: its root is no post
    world.group_service(channel)
    world.post(channel, "a new post")  # its forwarded copy lands in the group
    real = world.comment(channel, 1, "a real comment")
    mark = len(world.requests)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok", outcome.message
    assert list(stored(db, "comment").values()) == ["a real comment"]
    assert outcome.counts.discussion_read == 5
    assert outcome.counts.discussion_skipped == 4  # chatter, the reply to it, the join, the post's copy
    assert outcome.counts.comments_inserted == 1 and real.id in stored(db, "comment")
    # the chatter's root was looked up once, and is remembered as no post
    lookups = [r for r in requests_since(world, mark) if isinstance(r, functions.channels.GetMessagesRequest)]
    assert len(lookups) == 1
    world.chatter(channel, "still here", reply_to=hello.id)
    mark = len(world.requests)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.discussion_skipped == 1 and outcome.counts.comments_fetched == 0
    assert not [
        r for r in requests_since(world, mark) if isinstance(r, functions.channels.GetMessagesRequest)
    ]


def test_comments_on_posts_outside_the_window_are_skipped(db, world, settings):
    channel = discussion(world, posts=4)
    since = BASE_DATE + timedelta(hours=2, minutes=30)  # posts 3 and 4 are in the window
    add_source(db, world, include_comments=True, since_date=since)
    ingest(db, world, settings, "newsfeed")
    world.comment(channel, 1, "on an old post")
    world.comment(channel, 4, "on a post in the window")
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert list(stored(db, "comment").values()) == ["on a post in the window"]
    assert outcome.counts.discussion_skipped == 1


def test_a_group_whose_history_cannot_be_read_is_read_thread_by_thread(
    db, world, settings, run_cli, store_clock
):
    channel = discussion(world, posts=3)
    world.comment(channel, 1, "one")
    world.comment(channel, 3, "three")
    world.close_discussion_history(channel)
    add_source(db, world, include_comments=True)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok", outcome.message
    assert "thread by thread" in outcome.message
    assert sorted(stored(db, "comment").values()) == ["one", "three"]
    source = IngestionStore(db).get_source("newsfeed")
    assert source.comments_unavailable is False and source.status == "active"
    assert IngestionStore(db).discussion_cursor("newsfeed").history_error.startswith("ChannelPrivateError")
    listed = {s["source_id"]: s for s in json.loads(run_cli("sources", "list", "--json").stdout)}
    assert listed["newsfeed"]["comments_read"] == "per thread"
    assert "per thread" in run_cli("sources", "list").stdout

    world.comment(channel, 3, "three again")
    store_clock.advance(timedelta(hours=23).total_seconds())
    mark = len(world.requests)
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.comments_inserted == 1
    asked = requests_since(world, mark)
    assert not group_history(asked), "the history is not tried again before a day has passed"
    assert {r.msg_id for r in asked if isinstance(r, functions.messages.GetRepliesRequest)} == {3}

    world.channels[GROUP].history_closed = False  # the account joined the group
    store_clock.advance(timedelta(days=1).total_seconds())
    world.comment(channel, 2, "two")
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.status == "ok", outcome.message
    assert sorted(stored(db, "comment").values()) == ["one", "three", "three again", "two"]
    assert IngestionStore(db).discussion_cursor("newsfeed").history_error is None
    listed = {s["source_id"]: s for s in json.loads(run_cli("sources", "list", "--json").stdout)}
    assert listed["newsfeed"]["comments_read"] == "history"


def failing_stream(db, world, settings, make_error: Any) -> tuple[Any, list[float]]:
    """150 new comments, and `make_error` on the stream's second page."""
    channel = discussion(world, posts=2)
    add_source(db, world, include_comments=True)
    ingest(db, world, settings, "newsfeed")
    for i in range(150):
        world.comment(channel, 1 + i % 2, f"c{i}")
    world.fail(
        functions.messages.GetHistoryRequest,
        make_error,
        skip=1,
        where=lambda r: r.peer.channel_id == GROUP,
    )
    return ingest(db, world, settings, "newsfeed", batch_size=100)


def flooded_stream(db, world, settings, seconds: int) -> tuple[Any, list[float]]:
    return failing_stream(db, world, settings, lambda r: tg_errors.FloodWaitError(r, capture=seconds))


def test_a_flood_wait_in_the_stream_is_slept_and_the_stream_resumes(db, world, settings):
    outcome, slept = flooded_stream(db, world, settings, 5)
    assert outcome.status == "ok", outcome.message
    assert slept == [6] and sorted(stored(db, "comment")) == comment_ids(world)


def test_a_long_flood_wait_parks_the_source_with_the_cursor_behind_stored_rows(db, world, settings):
    outcome, _ = flooded_stream(db, world, settings, 3600)
    assert outcome.status == "rate_limited"
    cursor = IngestionStore(db).discussion_cursor("newsfeed").last_message_id
    kept = stored(db, "comment")
    assert kept and max(kept) <= cursor
    assert [i for i in comment_ids(world) if i <= cursor] == sorted(kept)
    outcome, _ = ingest(db, world, settings, "newsfeed", clock=Clock(datetime.now(UTC) + timedelta(hours=2)))
    assert outcome.status == "ok" and sorted(stored(db, "comment")) == comment_ids(world)


def test_an_edited_comment_read_again_goes_to_the_versions_journal(db, world, settings):
    channel = discussion(world, posts=1)
    add_source(db, world, include_comments=True)
    ingest(db, world, settings, "newsfeed")
    first = world.comment(channel, 1, "first take")
    ingest(db, world, settings, "newsfeed")
    world.edit(world.channels[GROUP], first.id, "second take")
    # a crash-replay reads the stretch again: move the stream's cursor back as a lost commit would leave it
    store = IngestionStore(db)
    cursor = store.discussion_cursor("newsfeed")
    db.execute(
        "discussion_cursor_open",
        {
            "source_id": "newsfeed",
            "chat_id": cursor.chat_id,
            "access_hash": cursor.access_hash,
            "last_message_id": cursor.floor_id,
            "restart": True,
            "now": store.now(),
        },
    )
    outcome, _ = ingest(db, world, settings, "newsfeed")
    assert outcome.counts.versions_recorded == 1
    ref = f"tg:{CHANNEL}:comment:{first.id}"
    assert RawStore(db).get(ref).text == "first take"  # the snapshot is never overwritten
    assert [v.text for v in RawStore(db).versions(ref)] == ["second take"]


# --- upgrading an install that has per-thread cursors ---------------------------------------------------


def test_an_install_with_per_thread_cursors_continues_without_rereading_or_missing(settings, world):
    channel = discussion(world, posts=6)
    for post_id in range(1, 7):
        world.comment(channel, post_id, f"old {post_id}")
    db = open_database(settings)
    try:
        add_source(db, world, include_comments=True)
        # What the per-thread code left: every thread read up to its newest comment...
        world.close_discussion_history(channel)
        ingest(db, world, settings, "newsfeed")
        world.channels[GROUP].history_closed = False
        before = dict(stored(db, "comment"))
        assert len(before) == 6
        threads = {c.thread_id: c.last_comment_id for c in IngestionStore(db).comment_cursors("newsfeed")}
    finally:
        db.close()
    # ...and no stream: roll the migration back and forth (its upgrade seeds the stream from them).
    assert migrations.rollback(settings, "ingestion", steps=1) == ["0005.discussion_history"]
    migrations.upgrade(settings, ("ingestion",))
    db = open_database(settings)
    try:
        cursor = IngestionStore(db).discussion_cursor("newsfeed")
        assert cursor.chat_id is None  # learnt on the next run
        assert cursor.last_message_id == cursor.floor_id == max(threads.values())
        # Comments written meanwhile: on an old thread below the seeded cursor? none can be (the cursor is
        # the group's highest stored comment); new ones anywhere.
        world.comment(channel, 1, "new on 1")
        world.comment(channel, 6, "new on 6")
        outcome, _ = ingest(db, world, settings, "newsfeed")
        assert outcome.status == "ok", outcome.message
        assert sorted(stored(db, "comment")) == comment_ids(world)
        assert outcome.counts.comments_fetched == 2, "nothing stored before is read again"
        assert IngestionStore(db).discussion_cursor("newsfeed").chat_id == GROUP
    finally:
        db.close()


def test_the_migration_seeds_each_source_from_its_highest_thread_cursor(settings):
    db = open_database(settings)
    store = IngestionStore(db)
    try:
        from tg_parser.domain.models import Source

        for source_id in ("a", "b", "c"):
            store.add_source(Source(source_id=source_id, channel_id=hash(source_id) % 10_000 + 1))
        store.advance_comment_cursor("a", 5, 120)
        store.advance_comment_cursor("a", 9, 340)
        store.advance_comment_cursor("b", 2, 17)
        db.execute(
            "discussion_cursor_open",
            {  # what the upgrade must not keep: rolled back below
                "source_id": "c",
                "chat_id": 1,
                "access_hash": 2,
                "last_message_id": 9,
                "restart": True,
                "now": store.now(),
            },
        )
    finally:
        db.close()
    migrations.rollback(settings, "ingestion", steps=1)
    migrations.upgrade(settings, ("ingestion",))
    db = open_database(settings)
    try:
        streams = IngestionStore(db).discussion_cursors()
        assert {k: (v.last_message_id, v.floor_id, v.chat_id) for k, v in streams.items()} == {
            "a": (340, 340, None),
            "b": (17, 17, None),
        }
    finally:
        db.close()


@pytest.fixture
def run_cli(settings: Settings):
    from click.testing import CliRunner
    from support.cli import db_env

    from tg_parser.cli.main import cli

    def invoke(*args: str):
        result = CliRunner().invoke(cli, list(args), env=db_env(settings), prog_name="tg-parser")
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_a_history_refused_mid_stream_keeps_what_was_read_and_falls_back_to_threads(db, world, settings):
    outcome, _ = failing_stream(db, world, settings, lambda r: tg_errors.ChannelPrivateError(r))
    assert outcome.status == "ok", outcome.message
    assert "thread by thread" in outcome.message
    assert IngestionStore(db).get_source("newsfeed").status == "active"
    assert IngestionStore(db).discussion_cursor("newsfeed").history_error.startswith("ChannelPrivateError")
    # the first page came from the stream, the rest thread by thread: the exact set, once each
    assert sorted(stored(db, "comment")) == comment_ids(world)
