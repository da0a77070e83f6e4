"""IngestionStore: sources, comment cursors and the journal of ingestion attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tg_parser.domain.models import CommentCursor, DiscussionCursor, IngestRun, Source, SourceStatus
from tg_parser.stores.base import Store


class IngestionStore(Store):
    # --- sources ------------------------------------------------------------------------------------

    def add_source(self, source: Source) -> bool:
        """Insert a source; an existing one is left untouched. Returns True when it was new."""
        row = self.db.fetch_one("sources_insert", source.to_row())
        return row is not None

    def update_identity(
        self,
        source_id: str,
        *,
        channel_id: int | None = None,
        username: str | None = None,
        title: str | None = None,
        access_hash: int | None = None,
    ) -> None:
        self.db.execute(
            "sources_update_identity",
            {
                "source_id": source_id,
                "channel_id": channel_id,
                "username": username,
                "title": title,
                "access_hash": access_hash,
                "now": self.now(),
            },
        )

    def update_options(
        self,
        source_id: str,
        *,
        include_comments: bool,
        since_date: datetime | None,
        until_date: datetime | None,
    ) -> None:
        self.db.execute(
            "sources_update_options",
            {
                "source_id": source_id,
                "include_comments": include_comments,
                "since_date": since_date,
                "until_date": until_date,
                "now": self.now(),
            },
        )

    def get_source(self, source_id: str) -> Source | None:
        row = self.db.fetch_one("sources_get", {"source_id": source_id})
        return Source.model_validate(row) if row else None

    def sources_for_channel(self, channel_id: int) -> list[Source]:
        return [
            Source.model_validate(r)
            for r in self.db.fetch_all("sources_get_by_channel", {"channel_id": channel_id})
        ]

    def list_sources(self, status: SourceStatus | None = None) -> list[Source]:
        if status is None:
            rows = self.db.fetch_all("sources_list")
        else:
            rows = self.db.fetch_all("sources_list_by_status", {"status": status})
        return [Source.model_validate(r) for r in rows]

    def set_status(self, source_id: str, status: SourceStatus) -> bool:
        return (
            self.db.execute(
                "sources_set_status", {"source_id": source_id, "status": status, "now": self.now()}
            )
            > 0
        )

    def remove_source(self, source_id: str) -> bool:
        return self.db.execute("sources_delete", {"source_id": source_id}) > 0

    def record_attempt(self, source_id: str) -> None:
        self.db.execute("sources_record_attempt", {"source_id": source_id, "now": self.now()})

    def record_success(self, source_id: str) -> None:
        self.db.execute("sources_record_success", {"source_id": source_id, "now": self.now()})

    def record_failure(self, source_id: str, error: str, *, permanent: bool) -> None:
        self.db.execute(
            "sources_record_failure",
            {"source_id": source_id, "error": error[:2000], "permanent": permanent, "now": self.now()},
        )

    def set_rate_limit(self, source_id: str, until: datetime | None) -> None:
        self.db.execute("sources_set_rate_limit", {"source_id": source_id, "until": until, "now": self.now()})

    def advance_post_cursor(self, source_id: str, last_post_id: int) -> None:
        """Move the cursor forward (never back). Call after the rows it covers are committed."""
        self.db.execute(
            "sources_advance_cursor",
            {"source_id": source_id, "last_post_id": last_post_id, "now": self.now()},
        )

    def set_comments_unavailable(self, source_id: str, value: bool = True) -> None:
        self.db.execute(
            "sources_set_comments_unavailable", {"source_id": source_id, "value": value, "now": self.now()}
        )

    # --- comment cursors ----------------------------------------------------------------------------

    def comment_cursor(self, source_id: str, thread_id: int) -> int:
        row = self.db.fetch_one("comment_cursor_get", {"source_id": source_id, "thread_id": thread_id})
        return int(row["last_comment_id"]) if row else 0

    def comment_cursors(self, source_id: str) -> list[CommentCursor]:
        return [
            CommentCursor.model_validate(r)
            for r in self.db.fetch_all("comment_cursors_list", {"source_id": source_id})
        ]

    def advance_comment_cursor(self, source_id: str, thread_id: int, last_comment_id: int) -> None:
        self.db.execute(
            "comment_cursor_advance",
            {
                "source_id": source_id,
                "thread_id": thread_id,
                "last_comment_id": last_comment_id,
                "now": self.now(),
            },
        )

    # --- the discussion group's history stream -----------------------------------------------------

    def discussion_cursor(self, source_id: str) -> DiscussionCursor | None:
        row = self.db.fetch_one("discussion_cursor_get", {"source_id": source_id})
        return DiscussionCursor.model_validate(row) if row else None

    def discussion_cursors(self) -> dict[str, DiscussionCursor]:
        return {
            row["source_id"]: DiscussionCursor.model_validate(row)
            for row in self.db.fetch_all("discussion_cursors_list")
        }

    def open_discussion(
        self, source_id: str, *, chat_id: int, access_hash: int, top_id: int, restart: bool
    ) -> None:
        """Point the stream at group `chat_id`; with `restart` it starts after `top_id` (its floor)."""
        self.db.execute(
            "discussion_cursor_open",
            {
                "source_id": source_id,
                "chat_id": chat_id,
                "access_hash": access_hash,
                "last_message_id": top_id,
                "restart": restart,
                "now": self.now(),
            },
        )

    def advance_discussion_cursor(self, source_id: str, last_message_id: int) -> None:
        """Move the stream cursor forward (never back). Call after the comments it covers are committed."""
        self.db.execute(
            "discussion_cursor_advance",
            {"source_id": source_id, "last_message_id": last_message_id, "now": self.now()},
        )

    def mark_discussion_unreadable(
        self, source_id: str, error: str, *, chat_id: int | None, access_hash: int | None
    ) -> None:
        self.db.execute(
            "discussion_history_unreadable",
            {
                "source_id": source_id,
                "chat_id": chat_id,
                "access_hash": access_hash,
                "error": error[:500],
                "now": self.now(),
            },
        )

    def discussion_threads(self, source_id: str, roots: list[int]) -> dict[int, tuple[int | None, Any]]:
        """root id → (channel post id or None for chatter, post date) for the known roots among `roots`."""
        if not roots:
            return {}
        rows = self.db.fetch_all("discussion_threads_lookup", {"source_id": source_id, "roots": roots})
        return {int(r["root_id"]): (r["post_id"], r["post_date"]) for r in rows}

    def remember_discussion_threads(
        self, source_id: str, threads: dict[int, tuple[int | None, datetime | None]]
    ) -> None:
        self.db.execute_many(
            "discussion_thread_put",
            [
                {"source_id": source_id, "root_id": root, "post_id": post, "post_date": date}
                for root, (post, date) in threads.items()
            ],
        )

    # --- attempts journal ---------------------------------------------------------------------------

    def start_run(self, source_id: str, run_id: str) -> int:
        row = self.db.fetch_one(
            "ingest_run_start", {"source_id": source_id, "run_id": run_id, "started_at": self.now()}
        )
        assert row is not None
        return int(row["id"])

    def finish_run(
        self, run_pk: int, *, success: bool, counts: dict[str, int], error: BaseException | None = None
    ) -> None:
        params: dict[str, Any] = {
            "id": run_pk,
            "finished_at": self.now(),
            "success": success,
            "posts_fetched": counts.get("posts_fetched", 0),
            "posts_inserted": counts.get("posts_inserted", 0),
            "comments_fetched": counts.get("comments_fetched", 0),
            "comments_inserted": counts.get("comments_inserted", 0),
            "versions_recorded": counts.get("versions_recorded", 0),
            "error_class": type(error).__name__ if error else None,
            "error_message": str(error)[:2000] if error else None,
        }
        self.db.execute("ingest_run_finish", params)

    def recent_runs(self, source_id: str, limit: int = 20) -> list[IngestRun]:
        rows = self.db.fetch_all("ingest_runs_recent", {"source_id": source_id, "limit": limit})
        return [IngestRun.model_validate(r) for r in rows]

    # --- comment threads that cannot be read, and rate limits ------------------------------------

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
