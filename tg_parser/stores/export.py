"""ExportStore: what the knowledge-base export reads — channel names for links, topic cards and bundles,
anchor dates, and the documents themselves streamed in batches (named queries in sql/processing/export.sql)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime
from typing import Any, TypeVar

from tg_parser.stores.base import BIGINT_MAX, BIGINT_MIN, Store

Row = dict[str, Any]
# A position in the export's order: (channel_id, message_date as export_stream_documents returns it,
# source_ref).
ExportKey = tuple[int, Any, str]
_T = TypeVar("_T")


class ExportStore(Store):
    def channel_usernames(self) -> dict[int, str]:
        """The public username of each channel that has one (the first one wins), for t.me links."""
        usernames: dict[int, str] = {}
        for row in self.db.fetch_all("export_channel_usernames"):
            usernames.setdefault(int(row["channel_id"]), row["username"])
        return usernames

    def topic_cards(self) -> list[Row]:
        """Every topic card as a row (anchors as JSON values), in topic id order."""
        return self.db.fetch_all("topics_list_all")

    def topic_bundles(self) -> dict[str, Row]:
        return {row["topic_id"]: row for row in self.db.fetch_all("export_topic_bundles")}

    def document_dates(self, refs: Sequence[str]) -> list[Row]:
        """Message dates of the given documents (to place topic anchors in the export's date window)."""
        return self.db.fetch_all("export_document_dates", {"refs": list(refs)}) if refs else []

    def document_batches(
        self,
        channel_id: int | None,
        since: datetime,
        until: datetime,
        batch_size: int = 2000,
        *,
        after: ExportKey | None = None,
        upto: ExportKey | None = None,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Documents to export, as plain tuples in `export_stream_documents`' column order, a batch at
        a time (the export's hot loop formats every column itself).

        Each batch is its own short read (keyset paging): no transaction or cursor stays open while the
        caller writes a batch out, however slow the file or the HTTP client is. `after` (exclusive) and
        `upto` (inclusive) narrow the stream to one part of the export's order (keys from `split_keys`).
        """
        lo, hi = _channel_range(channel_id)
        first = after or (lo, since, "")
        last = upto or (hi, until, "")
        params = {
            "channel_lo": lo,
            "channel_hi": hi,
            "since": since,
            "until": until,
            "upto_channel": last[0],
            "upto_date": last[1],
            "upto_ref": last[2],
        }
        # Columns 0-2 are source_ref, channel_id, message_date: the keyset, handed back as read.
        batches = self.db.keyset_batches(
            "export_stream_documents",
            params,
            start={"after_channel": first[0], "after_date": first[1], "after_ref": first[2]},
            after=lambda row: {"after_channel": row[1], "after_date": row[2], "after_ref": row[0]},
            batch_size=batch_size,
            tuples=True,
        )
        with closing(batches):
            # Inside a transaction the batches must join it, in this thread. Where the database does not
            # read ahead (PostgreSQL: each batch is BEGIN, SELECT, COMMIT), that short transaction would
            # wait for the GIL while the writer formats, i.e. be open during the writer's work
            # (tests/test_short_transactions).
            if self.db.in_transaction or not self.db.reads_ahead:
                yield from batches
            else:
                yield from read_ahead(batches)

    def count_documents(self, channel_id: int | None, since: datetime, until: datetime) -> int:
        """The documents in an export's window (one channel or all, [since, until) on message dates)."""
        return int(self.db.fetch_scalar("export_count_documents", _window(channel_id, since, until)) or 0)

    def split_keys(
        self,
        channel_id: int | None,
        since: datetime,
        until: datetime,
        parts: int,
        documents: int,
        first_extra: int = 0,
    ) -> list[ExportKey]:
        """Where the `documents` (`count_documents`) of an export's window split into `parts` parts, in the
        export's order: the last key of every part but the last (fewer keys when there are fewer
        documents than parts; none for an empty window). The parts are of about equal size, except that
        the first holds `first_extra` documents more (capped so that every part keeps a share). Each key
        is given to `document_batches` as `upto` of its part and `after` of the next one."""
        window = _window(channel_id, since, until)
        first_extra = max(0, min(first_extra, documents - parts))
        rest = documents - first_extra
        keys: list[ExportKey] = []
        for skip in sorted({first_extra + rest * part // parts - 1 for part in range(1, parts)}):
            if skip < 0:
                continue
            row = self.db.fetch_one("export_split_key", {**window, "skip": skip})
            if row is None:  # documents deleted since the count: the rest is one part
                break
            keys.append((int(row["channel_id"]), row["message_date"], row["source_ref"]))
        return keys


def _channel_range(channel_id: int | None) -> tuple[int, int]:
    return (channel_id, channel_id) if channel_id is not None else (BIGINT_MIN, BIGINT_MAX)


def _window(channel_id: int | None, since: datetime, until: datetime) -> dict[str, Any]:
    lo, hi = _channel_range(channel_id)
    return {"channel_lo": lo, "channel_hi": hi, "since": since, "until": until}


def read_ahead(batches: Iterator[_T]) -> Iterator[_T]:
    """The items of `batches`, each next one fetched in a worker thread while the caller works on the
    current one: the database (SQLite, with the GIL released) produces batch
    k+1 while the export formats and writes batch k, instead of the two taking turns. SQLite only (it
    releases the GIL while it steps; see `document_batches` for why not PostgreSQL).

    Only for iterators that hold nothing open between items (keyset batches: each batch is its own
    short statement and transaction, closed before it is handed over), so the read ahead is one more
    short read, never a transaction kept open across the caller's writes. At most one batch is read
    ahead; an error reading it is raised here, where that batch would have been."""
    with ThreadPoolExecutor(1, thread_name_prefix="tgp-read-ahead") as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch
