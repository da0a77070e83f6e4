"""The routes: probes at the top level, the versioned API under /api/v1."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tg_parser.api import pagination
from tg_parser.api.app import ApiState, json_response
from tg_parser.api.errors import bad_request, not_found
from tg_parser.errors import TgParserError
from tg_parser.ingestion.sources import MAX_SOURCE_ID, MAX_TITLE

probes = APIRouter(tags=["probes"])
v1 = APIRouter(prefix="/api/v1")

MAX_TEXT = 500


def _state(request: Request) -> ApiState:
    return request.app.state.api  # type: ignore[no-any-return]


# --- parameter checks -----------------------------------------------------------------------------


def _text(value: str | None, field: str) -> str | None:
    """A text parameter the database can hold: no NUL, no lone surrogate, not absurdly long."""
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        raise bad_request(f"longer than {MAX_TEXT} characters", field)
    if "\x00" in value:
        raise bad_request("contains a NUL character", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("is not valid Unicode text", field) from None
    return value


def _channel(value: str | None, field: str) -> str | None:
    """A channel parameter: text the database can hold, naming a channel id the stores can hold."""
    from tg_parser.domain.channels import ChannelIdTooLarge, parse_channel_ref

    text = _text(value, field)
    if text is None:
        return None
    try:
        parse_channel_ref(text)
    except ChannelIdTooLarge as exc:
        raise bad_request(str(exc), field) from None
    except ValueError:
        pass
    # Other problems: the shared source rules say what is wrong with it, as `tg-parser` does.
    return text


def _date(value: str | None, field: str) -> datetime | None:
    text = _text(value, field)
    if text is None or text == "":
        return None
    from tg_parser.domain.dates import parse_utc

    try:
        return parse_utc(text)
    except ValueError as exc:
        raise bad_request(str(exc), field) from None


def _window(
    request: Request,
    channel: str | None,
    source: str | None,
    since: str | None,
    until: str | None,
    topic: str | None = None,
) -> Any:
    from tg_parser.ingestion.sources import resolve_channel_id
    from tg_parser.stores.browse import Window

    db = _state(request).database()
    channel = _channel(channel, "channel")
    start, end = _date(since, "since"), _date(until, "until")
    if start and end and start > end:
        raise bad_request("since is after until", "since")
    return Window(
        channel_id=resolve_channel_id(db, channel) if channel else None,
        source_id=_text(source, "source"),
        since=start,
        until=end,
        topic_id=_text(topic, "topic"),
    )


def _limit(request: Request, limit: int | None) -> int:
    cap = _state(request).settings.api_max_page_size
    if limit is None:
        return min(100, cap)
    if not 1 <= limit <= cap:
        raise bad_request(f"must be between 1 and {cap}", "limit")
    return limit


Limit = Annotated[
    int | None,
    Query(description="Rows per page (default 100, at most API_MAX_PAGE_SIZE).", ge=-(2**62), le=2**62),
]
Cursor = Annotated[str | None, Query(description="The `next` value of the previous page.")]
Channel = Annotated[
    str | None, Query(description="A channel: numeric id, @username, t.me link or source id.")
]
Source = Annotated[str | None, Query(description="A source id.")]
Since = Annotated[str | None, Query(description="Message date from (YYYY-MM-DD or ISO date-time, UTC).")]
Until = Annotated[str | None, Query(description="Message date before (exclusive).")]


def _page(rows: list[dict[str, Any]], limit: int, kind: str, key: Any) -> dict[str, Any]:
    next_cursor = pagination.encode(kind, key(rows[-1])) if len(rows) == limit else None
    return {"items": rows, "next": next_cursor}


# --- probes -------------------------------------------------------------------------------------


@probes.get("/health", summary="Liveness: the process answers (no database).")
def health(request: Request) -> Response:
    _probe(request)
    return json_response({"status": "ok", "version": _version()})


@probes.get("/ready", summary="Readiness: every store reachable, migrations current, pool stats.")
def ready(request: Request) -> Response:
    state = _probe(request)
    try:
        db = state.database()
        db.ping(timeout=2.0)
    except TgParserError as exc:
        return json_response({"ready": False, "error": exc.one_line()}, status=503)
    report = state.health(db)
    report["ready"] = report["ok"]
    return json_response(report, status=200 if report["ok"] else 503)


@probes.get("/metrics", summary="Prometheus metrics.")
def metrics(request: Request) -> Response:
    from tg_parser.api.metrics import CONTENT_TYPE, render

    state = _probe(request)
    return Response(render(state.http, state.database_if_open), media_type=CONTENT_TYPE)


def _probe(request: Request) -> ApiState:
    from tg_parser.api.auth import probe_open

    state = _state(request)
    # The gate reads keys from the database: only consult it when this caller needs a key, so /health
    # answers (and /ready says why not) while the database is down.
    if state.settings.api_require_keys and not probe_open(state.settings, request):
        state.gate.require(request, "read", "read")
    return state


def _version() -> str:
    from tg_parser import __version__

    return __version__


# --- sources --------------------------------------------------------------------------------------


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(max_length=MAX_TEXT, description="@username, t.me link or numeric channel id")
    source_id: str | None = Field(None, max_length=MAX_SOURCE_ID)
    title: str | None = Field(None, max_length=MAX_TITLE)
    comments: bool = False
    since: str | None = None
    until: str | None = None


def _source_json(source: Any) -> dict[str, Any]:
    data = source.model_dump(mode="json")
    data.pop("access_hash", None)  # belongs to the Telegram account, not to API clients
    return data


@v1.get("/sources", tags=["sources"], summary="Every source with its cursor and health.")
def list_sources(request: Request, status: Literal["active", "paused", "error"] | None = None) -> Response:
    from tg_parser.ingestion.sources import list_with_comments

    state = _state(request)
    state.gate.require(request, "read", "read")
    listed = list_with_comments(state.database(), status)
    for source in listed:
        source.pop("access_hash", None)  # belongs to the Telegram account, not to API clients
    return json_response({"items": listed})


@v1.post("/sources", tags=["sources"], status_code=201, summary="Add a source (or update its options).")
def add_source(request: Request, body: Annotated[SourceIn, Body()]) -> Response:
    from tg_parser.ingestion.sources import add_source as add

    state = _state(request)
    state.gate.require(request, "write", "write")
    _channel(body.channel, "channel")
    for name in ("source_id", "title"):
        _text(getattr(body, name), name)
    added = add(
        state.settings,
        state.database(),
        body.channel,
        source_id=body.source_id,
        title=body.title,
        comments=body.comments,
        since=_date(body.since, "since"),
        until=_date(body.until, "until"),
    )
    return json_response(
        {"created": added.created, "source": _source_json(added.source)}, status=201 if added.created else 200
    )


@v1.post("/sources/{source_id}/pause", tags=["sources"], summary="Stop collecting a source until resumed.")
def pause_source(request: Request, source_id: str) -> Response:
    return _set_status(request, source_id, "paused")


@v1.post("/sources/{source_id}/resume", tags=["sources"], summary="Collect a source again.")
def resume_source(request: Request, source_id: str) -> Response:
    return _set_status(request, source_id, "active")


def _set_status(request: Request, source_id: str, status: Any) -> Response:
    from tg_parser.ingestion.sources import set_source_status

    state = _state(request)
    state.gate.require(request, "write", "write")
    source = set_source_status(state.database(), _text(source_id, "source_id") or "", status)
    return json_response({"source": _source_json(source)})


@v1.delete(
    "/sources/{source_id}", tags=["sources"], summary="Remove a source and its cursors (data is kept)."
)
def remove_source(request: Request, source_id: str) -> Response:
    from tg_parser.ingestion.sources import remove_source as remove

    state = _state(request)
    state.gate.require(request, "write", "write")
    remove(state.database(), _text(source_id, "source_id") or "")
    return json_response({"removed": source_id})


# --- messages, documents, topics --------------------------------------------------------------------


@v1.get("/messages", tags=["data"], summary="Raw messages, keyset-paged in (channel, date, ref) order.")
def list_messages(
    request: Request,
    channel: Channel = None,
    source: Source = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    from tg_parser.stores.browse import BrowseStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    window = _window(request, channel, source, since, until)
    size = _limit(request, limit)
    after = pagination.decode("m", _text(cursor, "cursor"), (int, datetime, str))
    rows = BrowseStore(state.database()).messages_page(window, tuple(after) if after else None, size)  # type: ignore[arg-type]
    return json_response(_page(rows, size, "m", lambda r: [r["channel_id"], r["date"], r["source_ref"]]))


@v1.get(
    "/documents", tags=["data"], summary="Processed documents, keyset-paged in (channel, date, ref) order."
)
def list_documents(
    request: Request,
    channel: Channel = None,
    source: Source = None,
    since: Since = None,
    until: Until = None,
    topic: Annotated[str | None, Query(description="Only the documents anchoring this topic id.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    from tg_parser.stores.browse import BrowseStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    window = _window(request, channel, source, since, until, topic)
    size = _limit(request, limit)
    after = pagination.decode("d", _text(cursor, "cursor"), (int, datetime, str))
    rows = BrowseStore(state.database()).documents_page(window, tuple(after) if after else None, size)  # type: ignore[arg-type]
    return json_response(
        _page(rows, size, "d", lambda r: [r["channel_id"], r["message_date"], r["source_ref"]])
    )


@v1.get("/topics", tags=["data"], summary="Topic cards, keyset-paged in topic id order.")
def list_topics(
    request: Request, channel: Channel = None, limit: Limit = None, cursor: Cursor = None
) -> Response:
    from tg_parser.stores.browse import BrowseStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    window = _window(request, channel, None, None, None)
    size = _limit(request, limit)
    after = pagination.decode("t", _text(cursor, "cursor"), (str,))
    rows = BrowseStore(state.database()).topics_page(window.channel_id, after[0] if after else None, size)
    return json_response(_page(rows, size, "t", lambda r: [r["topic_id"]]))


@v1.get("/topics/{topic_id}", tags=["data"], summary="One topic card with its bundle of supporting items.")
def get_topic(request: Request, topic_id: str) -> Response:
    from tg_parser.stores.topics import TopicStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    store = TopicStore(state.database())
    card = store.get_topic(_text(topic_id, "topic_id") or "")
    if card is None:
        raise not_found(f"topic {topic_id!r}")
    bundle = store.get_bundle(card.topic_id)
    return json_response(
        {"topic": card.model_dump(mode="json"), "bundle": bundle.model_dump(mode="json") if bundle else None}
    )


# --- export ---------------------------------------------------------------------------------------


class _Spool:
    """The export, written by the export writer into an unnamed temporary file as fast as the database
    gives it, and read back by the response as the file grows.

    The writer never waits for the client: the export reads in keyset batches, each its own short
    statement, and spooling keeps even the time between two batches independent of the client, so a
    slow (or vanished) client holds no transaction, no pooled connection and (on SQLite) not the one
    shared connection. A response that ends early closes the file, which
    stops the writer at its next write.
    """

    CHUNK = 1 << 16

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115  # closed by chunks()
        self._buffer = bytearray()
        self._written = 0
        self._done = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    # --- the export writer's side (a file-like object) ---

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= self.CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._buffer:
            return
        view = memoryview(bytes(self._buffer))
        self._buffer.clear()
        while view:
            view = view[self.file.write(view) or 0 :]
        with self._changed:
            self._written = self.file.tell()
            self._changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._changed:
            self._done, self._error = True, error
            self._changed.notify_all()

    # --- the response's side ---

    def started(self, deadline: float) -> None:
        """Wait until the writer has written its first bytes or ended, for at most `deadline` seconds. A
        writer that failed before writing anything (no pooled connection came free, the database is down)
        raises its error here, before the headers go out, so the client gets the error's status and JSON
        body, not a 200 with a cut stream. Past the deadline (a sparse filter over a large base writes
        nothing for long) the headers go out anyway, so no proxy times out waiting for the first byte."""
        until = time.monotonic() + deadline
        with self._changed:
            while self._written == 0 and not self._done and time.monotonic() < until:
                self._changed.wait(min(1.0, max(until - time.monotonic(), 0.0)))
            error = self._error if self._written == 0 and self._done else None
        if error is not None:
            self.file.close()
            raise error

    def chunks(self) -> Iterator[bytes]:
        offset = 0
        try:
            while True:
                with self._changed:
                    while offset >= self._written and not self._done:
                        self._changed.wait(1.0)
                    written, done, error = self._written, self._done, self._error
                if offset < written:
                    data = os.pread(self.file.fileno(), min(written - offset, self.CHUNK), offset)
                    offset += len(data)
                    yield data
                elif error is not None:
                    # Headers are sent: the only way to say "incomplete" is to end the stream early.
                    raise error
                elif done:
                    return
        finally:
            self.file.close()


@v1.get(
    "/export/kb.ndjson",
    tags=["export"],
    summary="The knowledge base as NDJSON, streamed: the records, order and filters of `tg-parser export`.",
    response_class=StreamingResponse,
)
def export_kb(
    request: Request,
    channel: Channel = None,
    topic: Annotated[str | None, Query(description="Only entries of this topic id.")] = None,
    since: Since = None,
    until: Until = None,
) -> Response:
    from tg_parser.export import ExportFilters
    from tg_parser.export.writer import write_kb_entries
    from tg_parser.stores.topics import TopicStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    window = _window(request, channel, None, since, until, topic)
    # The checks of `tg-parser export`: an empty window or an unknown topic is a mistake, not an empty KB.
    if window.since and window.until and window.since >= window.until:
        raise bad_request("is not before until; give a window where since < until", "since")
    if window.topic_id is not None and TopicStore(state.database()).get_topic(window.topic_id) is None:
        raise bad_request(f"unknown topic {window.topic_id!r}", "topic")
    filters = ExportFilters(
        channel_id=window.channel_id, topic_id=window.topic_id, since=window.since, until=window.until
    )
    db = state.database()
    spool = _Spool()

    def produce() -> None:
        try:
            write_kb_entries(db, spool, filters)  # type: ignore[arg-type]
            spool.flush()
        except BaseException as exc:  # handed to the response, which ends the stream early
            spool.finish(exc)
        else:
            spool.finish()

    threading.Thread(target=produce, name="export-stream", daemon=True).start()
    # Long enough for the pool's wait (DB_POOL_TIMEOUT), whose failure is the error worth a status code.
    spool.started(deadline=state.settings.db_pool_timeout + 1.0)
    return StreamingResponse(spool.chunks(), media_type="application/x-ndjson")


# --- runs -----------------------------------------------------------------------------------------

Step = Literal["ingest", "process", "topicize", "export"]


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    processor: Literal["llm", "extractive"] | None = None
    concurrency: int = Field(4, ge=1, le=256)


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(
        default_factory=lambda: ["ingest", "process", "topicize", "export"], min_length=1, max_length=4
    )
    source: str | None = Field(
        None, max_length=MAX_SOURCE_ID, description="A source id; every active source when absent."
    )
    options: RunOptions = Field(default_factory=RunOptions)
    webhook_url: str | None = Field(
        None, max_length=2000, description="Where the signed completion POST goes."
    )


@v1.post("/runs", tags=["runs"], status_code=202, summary="Queue a run; a worker executes it.")
def create_run(request: Request, body: Annotated[RunIn, Body()]) -> Response:
    from tg_parser.pipeline import webhooks
    from tg_parser.stores import IngestionStore
    from tg_parser.stores.run_queue import RunQueueStore

    state = _state(request)
    caller = state.gate.require(request, "write", "write")
    db = state.database()
    source = _text(body.source, "source")
    if source is not None and IngestionStore(db).get_source(source) is None:
        raise bad_request(f"no source {source!r}", "source")
    if body.webhook_url is not None:
        _text(body.webhook_url, "webhook_url")
        if not webhooks.valid_url(body.webhook_url):
            raise bad_request("not an http(s) URL", "webhook_url")
        if state.settings.webhook_secret is None:
            raise bad_request("webhooks need WEBHOOK_SECRET set on the server", "webhook_url")
        refused = (
            None
            if state.settings.webhook_allow_private
            else webhooks.literal_destination_refused(body.webhook_url)
        )
        if refused:
            raise bad_request(
                f"refused: {refused} (the server allows public addresses only, unless WEBHOOK_ALLOW_PRIVATE=true)",
                "webhook_url",
            )
    run_id = f"api-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    row = RunQueueStore(db).enqueue(
        run_id,
        list(dict.fromkeys(body.steps)),
        source_id=source,
        options=body.options.model_dump(exclude_none=True),
        requested_by=caller.name,
        webhook_url=body.webhook_url,
    )
    return json_response({"run": _run_json(row)}, status=202, headers={"Location": f"/api/v1/runs/{run_id}"})


@v1.get("/runs", tags=["runs"], summary="Runs, newest first, keyset-paged.")
def list_runs(
    request: Request,
    status: Literal["queued", "running", "succeeded", "failed"] | None = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    from tg_parser.stores.run_queue import RunQueueStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    size = _limit(request, limit)
    before = pagination.decode("r", _text(cursor, "cursor"), (datetime, str))
    rows = RunQueueStore(state.database()).page(status, tuple(before) if before else None, size)  # type: ignore[arg-type]
    page = _page(rows, size, "r", lambda r: [r["created_at"], r["run_id"]])
    page["items"] = [_run_json(r) for r in rows]
    return json_response(page)


@v1.get("/runs/{run_id}", tags=["runs"], summary="One run: status, progress, counters and error.")
def get_run(request: Request, run_id: str) -> Response:
    from tg_parser.stores.run_queue import RunQueueStore

    state = _state(request)
    state.gate.require(request, "read", "read")
    row = RunQueueStore(state.database()).get(_text(run_id, "run_id") or "")
    if row is None:
        raise not_found(f"run {run_id!r}")
    return json_response({"run": _run_json(row)})


def _run_json(row: dict[str, Any]) -> dict[str, Any]:
    shown = dict(row)
    shown.pop("worker_id", None)
    return shown


# --- keys (admin) ---------------------------------------------------------------------------------


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    scope: Literal["read", "write", "admin"] = "read"


@v1.get("/keys", tags=["keys"], summary="API keys (names, scopes, dates; never a secret).")
def list_keys(request: Request) -> Response:
    from tg_parser.stores.api import ApiStore

    state = _state(request)
    state.gate.require(request, "admin", "write")
    return json_response({"items": ApiStore(state.database()).list_keys()})


@v1.post("/keys", tags=["keys"], status_code=201, summary="Create a key; its token is in this answer only.")
def create_key(request: Request, body: Annotated[KeyIn, Body()]) -> Response:
    from tg_parser.api.keys import create_key as create

    state = _state(request)
    state.gate.require(request, "admin", "write")
    token, row = create(state.database(), body.name, body.scope)
    return json_response({"key": row, "token": token}, status=201)


@v1.delete("/keys/{name}", tags=["keys"], summary="Revoke a key by name.")
def revoke_key(request: Request, name: str) -> Response:
    from tg_parser.stores.api import ApiStore

    state = _state(request)
    state.gate.require(request, "admin", "write")
    if not ApiStore(state.database()).revoke_key(_text(name, "name") or ""):
        raise not_found(f"active key {name!r}")
    return json_response({"revoked": name})
