"""RawStore: messages as first seen, plus the journal of later observations that differ."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from tg_parser.db.codec import JsonText, dump_json, dump_json_bytes, format_timestamp, parse_timestamp
from tg_parser.domain.ids import make_source_ref
from tg_parser.domain.models import RawMessage, RawMessageVersion, UtcDatetime
from tg_parser.domain.payload import cap_payload_text
from tg_parser.stores.base import KEYSET_START, Store


class _ChannelRow(BaseModel):
    channel_id: int
    messages: int
    first_date: UtcDatetime
    last_date: UtcDatetime


@dataclass
class BatchResult:
    inserted: int = 0
    versions: int = 0
    unchanged: int = 0

    def __iadd__(self, other: BatchResult) -> BatchResult:
        self.inserted += other.inserted
        self.versions += other.versions
        self.unchanged += other.unchanged
        return self


def raw_row(
    *,
    channel_id: int,
    message_type: str,
    message_id: int,
    source_id: str | None,
    date: datetime,
    edit_date: datetime | None,
    text: str,
    media_type: str | None,
    media: JsonText | None,
    raw_payload: JsonText,
    payload_truncated: bool,
    payload_size: int | None,
    inserted_at: datetime,
    thread_id: int | None = None,
    parent_message_id: int | None = None,
    grouped_id: int | None = None,
    views: int | None = None,
    forwards: int | None = None,
    replies: int | None = None,
) -> dict[str, Any]:
    """The one builder of a raw message row, keyed by column name: the parameters of raw_insert_message
    and a row of raw_insert_messages, for both ingestion paths (`RawStore.row_of` for a record, the
    export import's `export_row` for the fields it has parsed and checked itself).

    `media` and `raw_payload` are their JSON already serialised (db.codec.dump_json; the payload capped
    and measured), stored as they are. The fields only Telegram's API gives default to None.
    """
    return {
        "source_ref": make_source_ref(channel_id, message_type, message_id),  # type: ignore[arg-type]
        "source_id": source_id,
        "channel_id": channel_id,
        "message_id": message_id,
        "message_type": message_type,
        "date": date,
        "edit_date": edit_date,
        "text": text,
        "thread_id": thread_id,
        "parent_message_id": parent_message_id,
        "grouped_id": grouped_id,
        "views": views,
        "forwards": forwards,
        "replies": replies,
        "media_type": media_type,
        "media": media,
        "raw_payload": raw_payload,
        "payload_truncated": payload_truncated,
        "payload_size": payload_size,
        "inserted_at": inserted_at,
    }


# The columns of a raw message row in raw_insert_message's parameter order: the tuple form of a row
# (`RawStore.store_tuples`), timestamps as canonical UTC text (db.codec.format_timestamp); `text` and
# the JSON columns (serialised) as str or as their UTF-8 bytes (what the export import spools, bound
# as they are on SQLite: its raw_insert_message casts them to TEXT).
RAW_COLUMNS = (
    "source_ref",
    "source_id",
    "channel_id",
    "message_id",
    "message_type",
    "date",
    "edit_date",
    "text",
    "thread_id",
    "parent_message_id",
    "grouped_id",
    "views",
    "forwards",
    "replies",
    "media_type",
    "media",
    "raw_payload",
    "payload_truncated",
    "payload_size",
    "inserted_at",
)
_TIMESTAMP_COLUMNS = ("date", "edit_date", "inserted_at")
_QUEUE_COLUMNS = ("source_ref", "channel_id", "date", "source_id")  # pending_enqueue_rows, from RAW_COLUMNS
_JSON_COLUMNS = ("media", "raw_payload")


def row_of_tuple(values: tuple[Any, ...]) -> dict[str, Any]:
    """The `raw_row` of a row in tuple form (RAW_COLUMNS): timestamps parsed, UTF-8 bytes decoded,
    JSON marked as serialised."""
    row = dict(zip(RAW_COLUMNS, values, strict=True))
    for key in _TIMESTAMP_COLUMNS:
        if row[key] is not None:
            row[key] = parse_timestamp(row[key])
    if isinstance(row["text"], bytes):
        row["text"] = row["text"].decode("utf-8")
    for key in _JSON_COLUMNS:
        value = row[key]
        if value is not None:
            row[key] = JsonText(value.decode("utf-8") if isinstance(value, bytes) else value)
    return row


def _json_value(value: Any) -> Any:
    """A JSON column's value inside the batch array: serialised text is embedded as it is."""
    # orjson.Fragment takes an exact str only, hence str() of the JsonText subclass (a copy).
    return orjson.Fragment(str(value)) if isinstance(value, str) else value


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b


class RawStore(Store):
    def store_batch(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Store a batch of validated records in one transaction, applying the snapshot rule."""
        return self.store_rows([self.row_of(message) for message in messages])

    def store_rows(self, rows: Sequence[dict[str, Any]]) -> BatchResult:
        """Store a batch of rows (`raw_row`) in one transaction.

        New source_refs are inserted; a known one whose text or edit date differs from its latest
        observation gets a row in raw_message_versions (the snapshot itself is never overwritten);
        counters (views/forwards/replies) that changed are written to raw_message_counters (a narrow row
        whose update is HOT; the snapshot keeps them as first seen). One lookup query serves the batch.

        Rows are the bulk path's currency: a bulk producer (the export import) builds them directly,
        with the payload already capped and serialised, instead of going through a RawMessage each.
        """
        result = BatchResult()
        if not rows:
            return result
        with self.db.transaction():
            latest: dict[str, tuple[str, datetime | None]] = {}
            counters: dict[str, tuple[int | None, int | None, int | None]] = {}
            refs = list(dict.fromkeys(row["source_ref"] for row in rows))
            for found in self.db.fetch_all("raw_latest_observations", {"refs": refs}):
                counters[found["source_ref"]] = (found["views"], found["forwards"], found["replies"])
                if found["version_id"] is not None:
                    latest[found["source_ref"]] = (found["version_text"], found["version_edit_date"])
                else:
                    latest[found["source_ref"]] = (found["snapshot_text"], found["snapshot_edit_date"])
            if not latest and len(refs) == len(rows):
                # The bulk case (a first import): every row is new, nothing to compare.
                self._insert(rows)
                result.inserted = len(rows)
                return result
            inserts, versions, refreshes = [], [], []
            for row in rows:
                ref = row["source_ref"]
                known = latest.get(ref)
                if known is None:
                    inserts.append(row)
                    latest[ref] = (row["text"], row["edit_date"])
                    continue
                seen = (row["views"], row["forwards"], row["replies"])
                stored = counters.get(ref)
                # Only counters that changed are written: a re-import of unchanged messages updates nothing.
                if stored is None or any(
                    new is not None and new != old for new, old in zip(seen, stored, strict=True)
                ):
                    merged = tuple(
                        old if new is None else new
                        for new, old in zip(seen, stored or (None, None, None), strict=True)
                    )
                    refreshes.append(
                        {
                            "source_ref": ref,
                            "views": merged[0],
                            "forwards": merged[1],
                            "replies": merged[2],
                            "observed_at": self.now(),
                        }
                    )
                    counters[ref] = merged  # type: ignore[assignment]
                if known[0] == row["text"] and _same_time(known[1], row["edit_date"]):
                    result.unchanged += 1
                    continue
                versions.append(
                    {
                        "source_ref": ref,
                        "observed_at": self.now(),
                        "edit_date": row["edit_date"],
                        "text": row["text"],
                        "raw_payload": row["raw_payload"],
                    }
                )
                latest[ref] = (row["text"], row["edit_date"])
            if inserts:
                self._insert(inserts)
                result.inserted = len(inserts)
            if versions:
                self.db.execute_many("raw_insert_version", versions)
                result.versions = len(versions)
            if refreshes:
                self.db.execute_many("raw_refresh_counters", refreshes)
        return result

    def store_tuples(self, rows: Sequence[tuple[Any, ...]]) -> BatchResult:
        """`store_rows` for rows in tuple form (RAW_COLUMNS), the bulk importer's currency.

        A batch of messages none of which is stored yet (a first import) is inserted as the tuples
        are, where rows are bound one by one (SQLite), with no dict and no conversion per row; anything
        else (a re-import, where rows are compared with what is stored, or a database that inserts a
        batch as one JSON statement, PostgreSQL) goes through `store_rows`.
        """
        if not rows:
            return BatchResult()
        if self.db.inserts_json_batches:
            return self.store_rows([row_of_tuple(row) for row in rows])
        with self.db.transaction():
            refs = [row[0] for row in rows]
            if len(set(refs)) != len(refs) or self.db.fetch_all("raw_latest_observations", {"refs": refs}):
                return self.store_rows([row_of_tuple(row) for row in rows])
            self.db.execute_many_tuples("raw_insert_message", RAW_COLUMNS, rows)
            self.db.execute_many_tuples(
                "pending_enqueue_rows", _QUEUE_COLUMNS, [(r[0], r[2], r[5], r[1]) for r in rows]
            )
        return BatchResult(inserted=len(rows))

    def _insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new rows and queue them for processing (raw.pending_work), in the caller's transaction:
        the queue is in this store (the same SQLite file), so a message is never stored unqueued."""
        if self.db.inserts_json_batches:  # one statement for the batch (db/base.py says why)
            self.db.execute("raw_insert_messages", {"rows": self.batch_json(rows)})
        else:
            self.db.execute_many("raw_insert_message", rows, batch_size=len(rows))
        self.db.execute("pending_enqueue", {"refs": [row["source_ref"] for row in rows]})

    @staticmethod
    def batch_json(rows: Sequence[dict[str, Any]]) -> JsonText:
        """`rows` (`raw_row`s) as the `rows` parameter of raw_insert_messages: a JSON array of objects
        keyed by column name, timestamps as canonical UTC text.

        NULL values are left out (the statement reads a missing key as NULL), so the batch is no bigger
        than positional arrays were. JSON columns hold serialised text (see `row_of`), embedded as it
        is, so a big integer in media or a payload never reaches the encoder here; a value orjson
        refuses at the top of a row (an integer beyond 64 bits) fits no column either, and raises
        (db.codec.dump_json).
        """
        objects = []
        inserted_at, inserted_text = None, ""  # a batch usually shares one inserted_at: format it once
        for row in rows:
            obj = {key: value for key, value in row.items() if value is not None}
            obj["date"] = format_timestamp(row["date"])
            if row["inserted_at"] is not inserted_at:
                inserted_at = row["inserted_at"]
                inserted_text = format_timestamp(inserted_at)
            obj["inserted_at"] = inserted_text
            obj["raw_payload"] = _json_value(row["raw_payload"])
            if "edit_date" in obj:
                obj["edit_date"] = format_timestamp(obj["edit_date"])
            if "media" in obj:
                obj["media"] = _json_value(obj["media"])
            objects.append(obj)
        return JsonText(dump_json(objects))

    @staticmethod
    def row_of(message: RawMessage) -> dict[str, Any]:
        """The row (`raw_row`) of a record, its payload capped and serialised once, its media serialised."""
        capped = cap_payload_text(message.raw_payload, dump_json_bytes)
        return raw_row(
            channel_id=message.channel_id,
            message_type=message.message_type,
            message_id=message.message_id,
            source_id=message.source_id,
            date=message.date,
            edit_date=message.edit_date,
            text=message.text,
            thread_id=message.thread_id,
            parent_message_id=message.parent_message_id,
            grouped_id=message.grouped_id,
            views=message.views,
            forwards=message.forwards,
            replies=message.replies,
            media_type=message.media_type,
            media=None if message.media is None else JsonText(dump_json(message.media)),
            raw_payload=JsonText(capped.text),  # serialised once: measured and stored
            payload_truncated=capped.truncated or message.payload_truncated,
            payload_size=message.payload_size or capped.original_size,
            inserted_at=message.inserted_at,
        )

    def get(self, source_ref: str) -> RawMessage | None:
        row = self.db.fetch_one("raw_get_message", {"source_ref": source_ref})
        return RawMessage.model_validate(row) if row else None

    def versions(self, source_ref: str) -> list[RawMessageVersion]:
        return [
            RawMessageVersion.model_validate(r)
            for r in self.db.fetch_all("raw_list_versions", {"source_ref": source_ref})
        ]

    def count(self, channel_id: int | None = None, message_type: str | None = None) -> int:
        return int(
            self.db.fetch_scalar(
                "raw_count_messages", {"channel_id": channel_id, "message_type": message_type}
            )
        )

    def posts_with_replies(self, channel_id: int) -> list[tuple[int, datetime, datetime | None]]:
        """(message id, date, when its counters last changed or None) of the channel's stored posts whose
        reply count is above zero, in no particular order."""
        rows = self.db.fetch_all("raw_posts_with_replies", {"channel_id": channel_id})
        return [(int(r["message_id"]), r["date"], r["counters_changed_at"]) for r in rows]

    def stream_channel(self, channel_id: int) -> Iterator[RawMessage]:
        """The channel's messages in time order, read a batch at a time (each its own short read)."""
        batches = self.db.keyset_batches(
            "raw_stream_channel",
            {"channel_id": channel_id},
            start={"after_date": KEYSET_START, "after_ref": ""},
            after=lambda row: {"after_date": row["date"], "after_ref": row["source_ref"]},
        )
        with closing(batches):
            for batch in batches:
                for row in batch:
                    yield RawMessage.model_validate(row)

    def channels(self) -> list[dict]:
        """Channels with stored messages: channel_id, messages, first_date, last_date."""
        # MIN/MAX over a SQLite TIMESTAMP_TEXT column come back as text (an aggregate has no declared
        # type for the codec to see), so the row is validated here to give both dialects datetimes.
        return [_ChannelRow.model_validate(row).model_dump() for row in self.db.fetch_all("raw_channels")]
