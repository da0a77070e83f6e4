"""Ingestion bookkeeping that the shared IngestionStore does not cover: unreadable comment threads and
rate limits recorded without counting a failure. A thin wrapper over named queries, like every store."""

from __future__ import annotations

from datetime import datetime

from tg_parser.stores.base import Store


class IngestionState(Store):
    def mark_thread_unavailable(self, source_id: str, thread_id: int, reason: str) -> None:
        self.db.execute(
            "comment_thread_mark_unavailable",
            {"source_id": source_id, "thread_id": thread_id, "reason": reason[:500], "now": self.now()},
        )

    def unavailable_threads(self, source_id: str) -> set[int]:
        rows = self.db.fetch_all("comment_threads_unavailable_list", {"source_id": source_id})
        return {int(row["thread_id"]) for row in rows}

    def record_rate_limit(self, source_id: str, until: datetime, error: str) -> None:
        self.db.execute(
            "sources_record_rate_limit",
            {"source_id": source_id, "until": until, "error": error[:2000], "now": self.now()},
        )
