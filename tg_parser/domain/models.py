"""Records of the three stores (DESIGN.md §4.3) as pydantic models.

Timestamps are always timezone-aware UTC; a naive datetime is rejected rather than guessed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tg_parser.domain.ids import doc_id, make_source_ref, parse_source_ref

PAYLOAD_CAP_BYTES = 256 * 1024


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_row(self) -> dict[str, Any]:
        """The model as named-query parameters."""
        return self.model_dump()


# --- ingestion --------------------------------------------------------------------------------------


SourceKind = Literal["telegram", "export"]
SourceStatus = Literal["active", "paused", "error"]


class Source(Record):
    source_id: str = Field(min_length=1, max_length=512)
    channel_id: int | None = None
    username: str | None = None
    title: str | None = None
    kind: SourceKind = "telegram"
    status: SourceStatus = "active"
    include_comments: bool = False
    since_date: UtcDatetime | None = None
    until_date: UtcDatetime | None = None
    last_post_id: int = 0
    access_hash: int | None = None
    last_attempt_at: UtcDatetime | None = None
    last_success_at: UtcDatetime | None = None
    fail_count: int = 0
    last_error: str | None = None
    rate_limit_until: UtcDatetime | None = None
    comments_unavailable: bool = False
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _window(self) -> Source:
        if self.since_date and self.until_date and self.since_date > self.until_date:
            raise ValueError("since_date is after until_date")
        return self


class CommentCursor(Record):
    source_id: str
    thread_id: int
    last_comment_id: int = 0
    updated_at: UtcDatetime = Field(default_factory=utcnow)


class DiscussionCursor(Record):
    """Where a source's stream over its discussion group's history stands (see ingestion/runner.py)."""

    source_id: str
    chat_id: int | None = None
    access_hash: int | None = None
    last_message_id: int = 0
    floor_id: int = 0
    history_error: str | None = None
    checked_at: UtcDatetime | None = None
    updated_at: UtcDatetime = Field(default_factory=utcnow)


class IngestRun(Record):
    id: int | None = None
    source_id: str
    run_id: str
    started_at: UtcDatetime
    finished_at: UtcDatetime | None = None
    success: bool | None = None
    posts_fetched: int = 0
    posts_inserted: int = 0
    comments_fetched: int = 0
    comments_inserted: int = 0
    versions_recorded: int = 0
    error_class: str | None = None
    error_message: str | None = None


# --- raw --------------------------------------------------------------------------------------------


MessageType = Literal["post", "comment"]


class RawMessage(Record):
    source_ref: str
    source_id: str | None = None
    channel_id: int
    message_id: int
    message_type: MessageType
    date: UtcDatetime
    edit_date: UtcDatetime | None = None
    text: str = ""
    thread_id: int | None = None
    parent_message_id: int | None = None
    grouped_id: int | None = None
    views: int | None = None
    forwards: int | None = None
    replies: int | None = None
    media_type: str | None = None
    media: dict[str, Any] | None = None
    raw_payload: dict[str, Any] = Field(default_factory=dict)
    payload_truncated: bool = False
    payload_size: int | None = None
    inserted_at: UtcDatetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _ref_matches(self) -> RawMessage:
        ref = parse_source_ref(self.source_ref)
        if (ref.channel_id, ref.message_type, ref.message_id) != (
            self.channel_id,
            self.message_type,
            self.message_id,
        ):
            raise ValueError(f"source_ref {self.source_ref!r} does not match channel/type/message id")
        return self

    @classmethod
    def build(
        cls, *, channel_id: int, message_type: MessageType, message_id: int, **fields: Any
    ) -> RawMessage:
        ref = make_source_ref(channel_id, message_type, message_id)
        return cls(
            source_ref=ref, channel_id=channel_id, message_type=message_type, message_id=message_id, **fields
        )


class RawMessageVersion(Record):
    id: int | None = None
    source_ref: str
    observed_at: UtcDatetime = Field(default_factory=utcnow)
    edit_date: UtcDatetime | None = None
    text: str = ""
    raw_payload: dict[str, Any] = Field(default_factory=dict)


# --- processing -------------------------------------------------------------------------------------


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    value: str
    confidence: float = Field(ge=0.0, le=1.0)


class ProcessedDocument(Record):
    source_ref: str
    id: str = ""
    channel_id: int
    message_date: UtcDatetime
    processed_at: UtcDatetime = Field(default_factory=utcnow)
    text_clean: str = Field(min_length=1)
    summary: str | None = None
    topics: list[str] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    language: str | None = None
    model: str
    prompt_id: str
    pipeline_version: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _derive_id(self) -> ProcessedDocument:
        expected = doc_id(self.source_ref)
        if not self.id:
            object.__setattr__(self, "id", expected)
        elif self.id != expected:
            raise ValueError(f"document id must be {expected!r}, not {self.id!r}")
        return self


class ProcessingFailure(Record):
    source_ref: str
    channel_id: int | None = None
    error_class: str
    error_message: str = ""
    permanent: bool = False
    skipped: bool = False  # nothing to process (media only): journaled so runs pass it by, not a failure
    attempts: int = 1
    first_failed_at: UtcDatetime = Field(default_factory=utcnow)
    last_failed_at: UtcDatetime = Field(default_factory=utcnow)
    run_id: str | None = None


class WorkLease(Record):
    source_ref: str
    worker_id: str
    leased_at: UtcDatetime
    expires_at: UtcDatetime


class Anchor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_ref: str
    score: float = Field(ge=0.0, le=1.0)


class SupportingItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_ref: str
    score: float = Field(ge=0.0, le=1.0)
    reason: str | None = None


def sort_anchors(anchors: list[Anchor]) -> list[Anchor]:
    """Deduplicate by ref (keeping the best score) and order by score desc, then ref asc."""
    best: dict[str, Anchor] = {}
    for anchor in anchors:
        if anchor.source_ref not in best or anchor.score > best[anchor.source_ref].score:
            best[anchor.source_ref] = anchor
    return sorted(best.values(), key=lambda a: (-a.score, a.source_ref))


class TopicCard(Record):
    topic_id: str
    channel_id: int
    title: str
    summary: str = ""
    kind: Literal["singleton", "cluster"] = "cluster"
    anchors: list[Anchor]
    tags: list[str] = Field(default_factory=list)
    model: str | None = None
    prompt_id: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TopicBundle(Record):
    topic_id: str
    channel_id: int
    items: list[SupportingItem] = Field(default_factory=list)
    updated_at: UtcDatetime = Field(default_factory=utcnow)


class RunReport(Record):
    run_id: str
    kind: str
    started_at: UtcDatetime
    finished_at: UtcDatetime | None = None
    status: Literal["running", "ok", "partial", "failed", "interrupted"] = "running"
    params: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
