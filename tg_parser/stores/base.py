"""What every store shares: the database it runs named queries on, and the current time."""

from __future__ import annotations

from datetime import UTC, datetime

from tg_parser.db.base import Database

# SQL LIMIT that means "no limit" on both dialects (SQLite has no LIMIT NULL).
NO_LIMIT = 2**62
# Bounds used for unset time filters, so no NULL timestamp parameter needs a type.
FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
# The bigint range: "every channel" as a range, so a keyset query bounds its index scan either way.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# A message's place in (channel, date, ref) order: the keyset key of message pages and of the queue.
MessageKey = tuple[int, datetime, str]  # (channel_id, date, source_ref)
# A time below every stored one: the first keyset batch starts after (KEYSET_START, '').
KEYSET_START = datetime(1, 1, 1, tzinfo=UTC)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)
