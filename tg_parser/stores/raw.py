"""RawStore: messages as first seen, plus the journal of later observations that differ."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from tg_parser.db.codec import JsonText
from tg_parser.domain.models import RawMessage, RawMessageVersion, UtcDatetime
from tg_parser.domain.payload import cap_payload_text
from tg_parser.stores.base import Store


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


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b


class RawStore(Store):
    def store_batch(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Store a batch in one transaction, applying the snapshot rule.

        New source_refs are inserted; a known one whose text or edit date differs from its latest
        observation gets a row in raw_message_versions (the snapshot itself is never overwritten);
        counters (views/forwards/replies) are refreshed. One lookup query serves the whole batch.
        """
        result = BatchResult()
        if not messages:
            return result
        with self.db.transaction():
            latest: dict[str, tuple[str, datetime | None]] = {}
            counters: dict[str, tuple[int | None, int | None, int | None]] = {}
            refs = list(dict.fromkeys(m.source_ref for m in messages))
            for row in self.db.fetch_all("raw_latest_observations", {"refs": refs}):
                counters[row["source_ref"]] = (row["views"], row["forwards"], row["replies"])
                if row["version_id"] is not None:
                    latest[row["source_ref"]] = (row["version_text"], row["version_edit_date"])
                else:
                    latest[row["source_ref"]] = (row["snapshot_text"], row["snapshot_edit_date"])
            inserts, versions, refreshes = [], [], []
            for message in messages:
                known = latest.get(message.source_ref)
                if known is None:
                    inserts.append(self._insert_params(message))
                    latest[message.source_ref] = (message.text, message.edit_date)
                    continue
                seen = (message.views, message.forwards, message.replies)
                stored = counters.get(message.source_ref)
                # Only counters that changed are written: a re-import of unchanged messages updates nothing.
                if stored is None or any(
                    new is not None and new != old for new, old in zip(seen, stored, strict=True)
                ):
                    refreshes.append(
                        {
                            "source_ref": message.source_ref,
                            "views": message.views,
                            "forwards": message.forwards,
                            "replies": message.replies,
                        }
                    )
                    counters[message.source_ref] = tuple(
                        old if new is None else new
                        for new, old in zip(seen, stored or (None, None, None), strict=True)
                    )  # type: ignore[assignment]
                if known[0] == message.text and _same_time(known[1], message.edit_date):
                    result.unchanged += 1
                    continue
                payload = JsonText(cap_payload_text(message.raw_payload).text)
                versions.append(
                    {
                        "source_ref": message.source_ref,
                        "observed_at": self.now(),
                        "edit_date": message.edit_date,
                        "text": message.text,
                        "raw_payload": payload,
                    }
                )
                latest[message.source_ref] = (message.text, message.edit_date)
            if inserts:
                self.db.execute_many("raw_insert_message", inserts)
                result.inserted = len(inserts)
            if versions:
                self.db.execute_many("raw_insert_version", versions)
                result.versions = len(versions)
            if refreshes:
                self.db.execute_many("raw_refresh_counters", refreshes)
        return result

    @staticmethod
    def _insert_params(message: RawMessage) -> dict:
        params = message.to_row()
        capped = cap_payload_text(message.raw_payload)
        params["raw_payload"] = JsonText(capped.text)  # serialised once: measured and stored
        params["payload_truncated"] = capped.truncated or message.payload_truncated
        params["payload_size"] = message.payload_size or capped.original_size
        return params

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

    def stream_channel(self, channel_id: int) -> Iterator[RawMessage]:
        for row in self.db.stream("raw_stream_channel", {"channel_id": channel_id}):
            yield RawMessage.model_validate(row)

    def max_message_id(self, source_id: str, message_type: str = "post") -> int:
        value = self.db.fetch_scalar(
            "raw_max_message_id", {"source_id": source_id, "message_type": message_type}
        )
        return int(value or 0)

    def channels(self) -> list[dict]:
        """Channels with stored messages: channel_id, messages, first_date, last_date."""
        # MIN/MAX over a SQLite TIMESTAMP_TEXT column come back as text (an aggregate has no declared
        # type for the codec to see), so the row is validated here to give both dialects datetimes.
        return [_ChannelRow.model_validate(row).model_dump() for row in self.db.fetch_all("raw_channels")]
