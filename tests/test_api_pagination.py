"""Keyset pagination on both dialects: walking every page returns every row once and in order, also
while rows are inserted before and after the cursor between page fetches; the page-size cap; cursors
this API did not hand out are refused."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from support.api_server import ThreadedApi, new_key

from tg_parser.db.connect import open_database
from tg_parser.domain.models import Anchor, ProcessedDocument, RawMessage, TopicCard
from tg_parser.stores import ProcessingStore, RawStore
from tg_parser.stores.run_queue import RunQueueStore
from tg_parser.stores.topics import TopicStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CHANNELS = (100, 200, 300)
_ids = itertools.count(1)


def _date(i: int) -> datetime:
    # Ties (three messages a minute) and microseconds, so the cursor must carry the date exactly.
    return T0 + timedelta(minutes=i // 3, microseconds=123_457 * (i % 2))


def _messages(channel: int, dates: list[datetime]) -> list[RawMessage]:
    return [
        RawMessage.build(
            channel_id=channel, message_type="post", message_id=next(_ids), date=date, text=f"m {channel}"
        )
        for date in dates
    ]


def _document(message: RawMessage) -> ProcessedDocument:
    return ProcessedDocument(
        source_ref=message.source_ref,
        channel_id=message.channel_id,
        message_date=message.date,
        text_clean=f"text of {message.source_ref}",
        model="m",
        prompt_id="p",
        pipeline_version="1",
    )


@pytest.fixture
def paged(settings):
    db = open_database(settings)
    try:
        messages = [m for channel in CHANNELS for m in _messages(channel, [_date(i) for i in range(14)])]
        RawStore(db).store_batch(messages)
        ProcessingStore(db).upsert_documents([_document(m) for m in messages])
        token = new_key(db, "reader")
    finally:
        db.close()
    small = settings.model_copy(update={"api_max_page_size": 7, "api_rate_limit_read": 100_000})
    with ThreadedApi(small) as api:
        yield api, api.client(token)


def _key(row: dict, date_field: str) -> tuple:
    return (
        row["channel_id"],
        datetime.fromisoformat(row[date_field].replace("Z", "+00:00")),
        row["source_ref"],
    )


@pytest.mark.parametrize(("route", "date_field"), [("messages", "date"), ("documents", "message_date")])
def test_walking_the_pages_while_rows_arrive(paged, route, date_field):
    api, client = paged
    db = open_database(api.state.settings)
    try:
        initial = [
            _key(row, date_field)
            for row in client.get(f"/api/v1/{route}", params={"limit": 7}).json()["items"]
        ]
        # Read the whole list once without interference, for reference.
        before = _walk(client, route, date_field, limit=7)
        assert len(before) == 42 and before[:7] == initial
        seen: list[tuple] = []
        cursor = None
        inserted_behind, inserted_ahead = 0, 0
        for page_number in range(100):
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"/api/v1/{route}", params=params).json()
            seen += [_key(row, date_field) for row in page["items"]]
            cursor = page["next"]
            if cursor is None:
                break
            # Between two fetches: one row before the cursor (never shown now) and one after it.
            last = seen[-1]
            behind = _messages(last[0], [last[1] - timedelta(microseconds=1)])
            ahead = _messages(last[0], [last[1] + timedelta(seconds=30 + page_number)])
            RawStore(db).store_batch(behind + ahead)
            ProcessingStore(db).upsert_documents([_document(m) for m in behind + ahead])
            inserted_behind += 1
            inserted_ahead += 1
    finally:
        db.close()
    assert len(seen) == len(set(seen)), "a row came twice"
    assert seen == sorted(seen), "rows out of order"
    assert set(before) <= set(seen), "a row that existed at the start was skipped"
    extra = set(seen) - set(before)
    assert len(extra) <= inserted_ahead  # only rows inserted ahead of the cursor can show up
    assert inserted_behind > 5


def _walk(client, route: str, date_field: str, **params) -> list[tuple]:
    rows, cursor = [], None
    for _ in range(1000):
        page = client.get(f"/api/v1/{route}", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status == 200, page
        rows += [_key(row, date_field) for row in page.json()["items"]]
        cursor = page.json()["next"]
        if cursor is None:
            return rows
    raise AssertionError("paging did not end")


def test_topics_and_runs_page_through(paged):
    api, client = paged
    db = open_database(api.state.settings)
    try:
        cards = [
            TopicCard(
                topic_id=f"topic:{channel}:{i:02d}",
                channel_id=channel,
                title=f"Topic {i}",
                anchors=[Anchor(source_ref=f"tg:{channel}:post:{i + 1}", score=0.5)],
            )
            for channel in CHANNELS
            for i in range(5)
        ]
        for channel in CHANNELS:
            TopicStore(db).replace_channel_topics(channel, [c for c in cards if c.channel_id == channel], [])
        queue = RunQueueStore(db)
        for i in range(9):
            queue.enqueue(
                f"run-{i}", ["export"], source_id=None, options={}, requested_by="t", webhook_url=None
            )
        ids, cursor = [], None
        for _ in range(100):
            page = client.get("/api/v1/topics", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            ids += [t["topic_id"] for t in page.json()["items"]]
            cursor = page.json()["next"]
            if cursor is None:
                break
            queue.enqueue(
                f"late-{len(ids)}", ["export"], source_id=None, options={}, requested_by="t", webhook_url=None
            )
        assert ids == sorted(c.topic_id for c in cards)
        only = client.get("/api/v1/topics", params={"channel": "200", "limit": 7}).json()
        assert [t["topic_id"] for t in only["items"]] == [c.topic_id for c in cards if c.channel_id == 200]

        runs, cursor = [], None
        for _ in range(100):
            page = client.get("/api/v1/runs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            runs += page.json()["items"]
            cursor = page.json()["next"]
            if cursor is None:
                break
            # A run queued meanwhile is newer than every listed one: it sorts before the cursor.
            queue.enqueue(
                f"later-{len(runs)}",
                ["export"],
                source_id=None,
                options={},
                requested_by="t",
                webhook_url=None,
            )
    finally:
        db.close()
    run_ids = [r["run_id"] for r in runs]
    assert len(run_ids) == len(set(run_ids))
    keys = [(r["created_at"], r["run_id"]) for r in runs]
    assert keys == sorted(keys, reverse=True)
    assert {f"run-{i}" for i in range(9)} <= set(run_ids)
    assert not any(r.startswith("later-") for r in run_ids)


def test_page_size_cap(paged):
    _, client = paged
    for route in ("messages", "documents", "topics", "runs"):
        default = client.get(f"/api/v1/{route}")
        assert default.status == 200
        assert client.get(f"/api/v1/{route}", params={"limit": 7}).status == 200
        over = client.get(f"/api/v1/{route}", params={"limit": 8})
        assert over.status == 422, over
        assert over.json()["error"]["message"] == "limit: must be between 1 and 7"
    assert len(client.get("/api/v1/messages").json()["items"]) == 7  # the default is capped too


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


BAD_CURSORS = [
    "garbage!",
    "%%%",
    "AAAA",
    _cursor({"m": 1}),
    _cursor(["t", "topic:1"]),  # another list's cursor
    _cursor(["m", 100, "2025-03-01T12:00:00Z"]),  # too short
    _cursor(["m", "100", "2025-03-01T12:00:00Z", "tg:100:post:1"]),
    _cursor(["m", True, "2025-03-01T12:00:00Z", "tg:100:post:1"]),
    _cursor(["m", 2**63, "2025-03-01T12:00:00Z", "tg:100:post:1"]),
    _cursor(["m", 100, "2025-03-01T12:00:00", "tg:100:post:1"]),  # no zone
    _cursor(["m", 100, "yesterday", "tg:100:post:1"]),
    _cursor(["m", 100, "2025-03-01T12:00:00Z", None]),
    base64.urlsafe_b64encode(b'["m", 1, ').decode(),
    "A" * 1001,
]


def test_a_cursor_we_did_not_hand_out_is_422(paged):
    _, client = paged
    problems = []
    for cursor in BAD_CURSORS:
        for route in ("messages", "documents", "topics", "runs"):
            if route == "topics" and cursor == _cursor(["t", "topic:1"]):
                continue  # a fine topics cursor
            answer = client.get(f"/api/v1/{route}", params={"cursor": cursor})
            if answer.status != 422 or not answer.json()["error"]["message"].startswith("cursor: "):
                problems.append(f"{route} {cursor[:60]!r}: {answer}")
    assert not problems, "\n".join(problems)


def test_a_cursor_is_tied_to_its_list(paged):
    _, client = paged
    messages_next = client.get("/api/v1/messages", params={"limit": 2}).json()["next"]
    assert client.get("/api/v1/documents", params={"cursor": messages_next}).status == 422
    assert client.get("/api/v1/messages", params={"cursor": messages_next}).status == 200
