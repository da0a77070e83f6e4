"""ProcessingStore: processed documents, the failure journal, work leases, topics and run reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tg_parser.db.codec import JsonText, NaiveDatetimeError, dump_json, format_timestamp
from tg_parser.domain.models import (
    ProcessedDocument,
    ProcessingFailure,
    RunReport,
    WorkLease,
)
from tg_parser.provenance import started_by
from tg_parser.stores.base import BIGINT_MAX, BIGINT_MIN, FAR_FUTURE, FAR_PAST, NO_LIMIT, MessageKey, Store

# The keyset below every candidate: (channel_id, date, source_ref) of the first page's lower bound.
FIRST_CANDIDATE_KEY: MessageKey = (-(2**63), FAR_PAST, "")


def _after(after: MessageKey | None) -> dict[str, Any]:
    """The keyset parameters of a page that starts after the key `after` (None: the first page)."""
    after_channel_id, after_date, after_ref = after or FIRST_CANDIDATE_KEY
    return {"after_channel_id": after_channel_id, "after_date": after_date, "after_ref": after_ref}


def document_row(document: ProcessedDocument) -> dict[str, Any]:
    """The row of a processed document, keyed by column name (an object of processing_upsert_documents'
    `rows`, see `ProcessingStore.batch_json`)."""
    return {
        "source_ref": document.source_ref,
        "id": document.id,
        "channel_id": document.channel_id,
        "message_date": document.message_date,
        "processed_at": document.processed_at,
        "text_clean": document.text_clean,
        "summary": document.summary,
        "topics": document.topics,
        # What Entity.model_dump() gives (its three fields, in order), without pydantic's cost per entity.
        "entities": [
            {"type": entity.type, "value": entity.value, "confidence": entity.confidence}
            for entity in document.entities
        ],
        "language": document.language,
        "model": document.model,
        "prompt_id": document.prompt_id,
        "pipeline_version": document.pipeline_version,
        "input_tokens": document.input_tokens,
        "output_tokens": document.output_tokens,
        "metadata": document.metadata,
    }


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """A processed document already in its row shape (`document_row`'s keys and values), built by a
    processor whose fields need no validation (the extractive one: `process_row`) instead of a
    ProcessedDocument, which costs more to build and to turn into a row than the extractors do to run.
    `upsert_documents` writes either."""

    source_ref: str
    row: dict[str, Any]


@dataclass(frozen=True)
class QueuePage:
    """One page of the pending queue (ProcessingStore.queue_page)."""

    rows: list[dict[str, Any]]  # queued messages still to process, in queue order
    done: list[str]  # queued refs whose message is done already: they only need to leave the queue
    last: MessageKey | None  # the key of the page's last row, done or not; None: empty page


class ProcessingStore(Store):
    # --- selection and leases -----------------------------------------------------------------------

    def select_candidates(
        self,
        *,
        limit: int | None = None,
        source_id: str | None = None,
        channel_id: int | None = None,
        force: bool = False,
        retry_failed: bool = False,
        now: datetime | None = None,
        after: MessageKey | None = None,
    ) -> list[dict[str, Any]]:
        """Messages that need processing, chosen by one query (see processing_select_candidates).

        `after` is the (channel_id, date, source_ref) of the previous page's last row: the page starts
        after it, so a caller walks all candidates once, in order, with bounded memory.
        """
        return self.db.fetch_all(
            "processing_select_candidates",
            {
                "limit": NO_LIMIT if limit is None else limit,
                "source_id": source_id,
                "channel_id": channel_id,
                "force": force,
                "retry_failed": retry_failed,
                "now": now or self.now(),
                **_after(after),
            },
        )

    # --- the pending-work queue (raw.pending_work) --------------------------------------------------

    def pending_page(self, **page: Any) -> list[dict[str, Any]]:
        """The messages still to process in the next page of the queue: `queue_page(**page).rows`."""
        return self.queue_page(**page).rows

    def queue_page(
        self,
        *,
        limit: int,
        source_id: str | None = None,
        channel_id: int | None = None,
        retry_failed: bool = False,
        after: MessageKey | None = None,
        now: datetime | None = None,
        lock: bool = False,
        lapsed_for: str | None = None,
    ) -> QueuePage:
        """The next page of the pending queue after the key `after`: up to `limit` queued messages
        without a live lease, split into those still to process and those done already (a document or a
        permanent failure; the caller dequeues them), with the key the next page starts after.

        `lock=True` is the claim (pending_claim: on PostgreSQL the rows are locked FOR UPDATE SKIP
        LOCKED, so call it inside the transaction that leases them); otherwise a plain read (dry run).
        The claim's `done` holds the permanent failures only: the lease step that follows it looks the
        documents up (`unclaim_done`), so the page does not probe them too.
        `lapsed_for=worker_id` is the takeover claim instead (pending_lapsed, locked the same way): the
        queued messages whose lease lapsed under another worker (it died), whatever `after`.
        """
        name = "pending_lapsed" if lapsed_for else "pending_claim" if lock else "pending_candidates"
        rows = self.db.fetch_all(
            name,
            {
                "worker_id": lapsed_for,
                "limit": limit,
                "source_id": source_id,
                "channel_id": channel_id,
                "retry_failed": retry_failed,
                "now": now or self.now(),
                **_after(after),
            },
        )
        last = (rows[-1]["channel_id"], rows[-1]["date"], rows[-1]["source_ref"]) if rows else None
        todo: list[dict[str, Any]] = []
        done: list[str] = []
        for row in rows:
            if row.pop("done"):
                done.append(row["source_ref"])
            else:
                todo.append(row)
        return QueuePage(rows=todo, done=done, last=last)

    def peek_queue(
        self,
        *,
        limit: int,
        source_id: str | None = None,
        channel_id: int | None = None,
        after: MessageKey | None = None,
    ) -> list[MessageKey]:
        """The keys (channel_id, date, source_ref) of the next `limit` queued messages after `after`, read
        without locking: what the next claim will probably take (pending_peek)."""
        rows = self.db.fetch_all(
            "pending_peek",
            {
                "limit": limit,
                "source_id": source_id,
                "channel_id": channel_id,
                **_after(after),
            },
        )
        return [(row["channel_id"], row["date"], row["source_ref"]) for row in rows]

    def read_ahead(self, keys: Sequence[MessageKey]) -> float | None:
        """Bring into the database's cache what processing these queued messages reads: the claim's
        rows and index leaves and the document insert's (processing_read_ahead). Returns the seconds the
        server spent (whether the pages were cached shows there, not in the time a caller waited); None
        where the database does not read ahead (SQLite) or nothing was given."""
        if not keys or not self.db.reads_ahead_in_sessions:
            return None
        payload = [
            {"source_ref": ref, "channel_id": channel_id, "date": format_timestamp(date)}
            for channel_id, date, ref in keys
        ]
        row = self.db.fetch_one("processing_read_ahead", {"keys": payload})
        return float(row["seconds"]) if row is not None else None

    def dequeue(self, refs: Sequence[str]) -> int:
        """Take refs whose document or permanent failure is written out of the pending queue."""
        if not refs:
            return 0
        return self.db.execute("pending_dequeue", {"refs": list(refs)})

    def requeue_failed(self, *, source_id: str | None = None, channel_id: int | None = None) -> int:
        """Queue the permanent failures again (`process --retry-failed`)."""
        return self.db.execute("pending_requeue_failed", {"source_id": source_id, "channel_id": channel_id})

    def count_pending(self) -> int:
        return int(self.db.fetch_scalar("pending_count"))

    def claim(
        self,
        refs: Sequence[str],
        worker_id: str,
        ttl: timedelta,
        *,
        force: bool = False,
        now: datetime | None = None,
    ) -> list[str]:
        """Lease refs for this worker; returns those it now holds (the only ones it may process).

        Without `force` a message with a document is not leased (one lookup of processed_documents per
        ref). The process coordinator passes `force` and runs `unclaim_done` next in the same
        transaction, which looks the documents up anyway, with a later snapshot."""
        if not refs:
            return []
        now = now or self.now()
        rows = self.db.fetch_all(
            "processing_claim_leases",
            {"refs": list(refs), "worker_id": worker_id, "now": now, "expires_at": now + ttl, "force": force},
        )
        claimed = {row["source_ref"] for row in rows}
        return [ref for ref in refs if ref in claimed]

    def unclaim_done(self, refs: Sequence[str], worker_id: str, done_since: datetime) -> list[str]:
        """Give back this worker's leases on refs whose document was written at or after `done_since`.

        Run right after `claim` in the same transaction: on PostgreSQL a claim can wait for another
        worker's commit (document + lease release) and then insert a fresh lease from a snapshot that
        predates that document; this second statement sees the commit and drops such claims. Returns the
        refs given back.
        """
        if not refs:
            return []
        rows = self.db.fetch_all(
            "processing_unclaim_done",
            {"refs": list(refs), "worker_id": worker_id, "done_since": done_since},
        )
        return [row["source_ref"] for row in rows]

    def release(self, refs: Sequence[str], worker_id: str) -> int:
        if not refs:
            return 0
        return self.db.execute("processing_release_leases", {"refs": list(refs), "worker_id": worker_id})

    def leases(self) -> list[WorkLease]:
        return [WorkLease.model_validate(r) for r in self.db.fetch_all("processing_list_leases")]

    def purge_expired_leases(self, now: datetime | None = None) -> int:
        return self.db.execute("processing_purge_expired_leases", {"now": now or self.now()})

    # --- documents ----------------------------------------------------------------------------------

    def upsert_documents(self, documents: Sequence[ProcessedDocument | DocumentRow]) -> int:
        """Write documents (one current per source_ref) and clear their failure rows, in one transaction.

        One statement (processing_upsert_documents) whatever the number of documents, on both dialects:
        the document upsert and its SET list live in that one query.
        """
        if not documents:
            return 0
        rows = self.documents_json(documents, canonical=not self.db.json_timestamps_cast)
        with self.db.transaction():
            self.db.execute("processing_upsert_documents", {"rows": rows})
            self.db.execute("processing_delete_failures", {"refs": [d.source_ref for d in documents]})
        return len(documents)

    @staticmethod
    def documents_json(
        documents: Sequence[ProcessedDocument | DocumentRow], *, canonical: bool = True
    ) -> JsonText:
        """`documents` as the `rows` parameter of processing_upsert_documents (`batch_json` of their
        `document_row`s).

        A ref given twice is written once, with its last document (what one upsert each would leave);
        rows go in ref order, so concurrent batches lock rows in one order.
        `canonical=False` (a database whose `json_timestamps_cast` is set: PostgreSQL, whose statement
        casts the timestamps to timestamptz): the rows are dumped as they are, timestamps in orjson's
        RFC 3339 and NULLs as JSON nulls, which the statement reads as the canonical form (the same
        stored values), without a copy of each row in Python.
        """
        latest = {document.source_ref: document for document in documents}
        rows = [
            document.row if isinstance(document, DocumentRow) else document_row(document)
            for _, document in sorted(latest.items())
        ]
        if not canonical:
            for row in rows:  # what format_timestamp refuses: a naive timestamp has no one instant
                if row["message_date"].tzinfo is None or row["processed_at"].tzinfo is None:
                    raise NaiveDatetimeError(f"{row['source_ref']}: a naive timestamp in its document")
            try:
                return JsonText(dump_json(rows))
            except TypeError:
                pass  # what only the standard library encoder takes (see dump_json_bytes): the canonical form
        return ProcessingStore.batch_json(rows)

    @staticmethod
    def batch_json(rows: Sequence[dict[str, Any]]) -> JsonText:
        """Document rows (`document_row`, one per source_ref) as the `rows` parameter of
        processing_upsert_documents: a JSON array of objects keyed by column name, timestamps as
        canonical UTC text, NULL values left out (the statement reads a missing key as NULL)."""
        objects = []
        for row in rows:
            obj = {key: value for key, value in row.items() if value is not None}
            obj["message_date"] = format_timestamp(row["message_date"])
            obj["processed_at"] = format_timestamp(row["processed_at"])
            objects.append(obj)
        return JsonText(dump_json(objects))

    def get_document(self, source_ref: str) -> ProcessedDocument | None:
        row = self.db.fetch_one("processing_get_document", {"source_ref": source_ref})
        return ProcessedDocument.model_validate(row) if row else None

    def stream_documents(
        self, channel_id: int | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[ProcessedDocument]:
        """Documents in (channel, message date) order, read a batch at a time (each batch its own short
        read, so no transaction stays open while the caller works)."""
        lo, hi = (channel_id, channel_id) if channel_id is not None else (BIGINT_MIN, BIGINT_MAX)
        since = since or FAR_PAST
        params = {"channel_lo": lo, "channel_hi": hi, "since": since, "until": until or FAR_FUTURE}
        batches = self.db.keyset_batches(
            "processing_stream_documents",
            params,
            start={"after_channel": lo, "after_date": since, "after_ref": ""},
            after=lambda row: {
                "after_channel": row["channel_id"],
                "after_date": row["message_date"],
                "after_ref": row["source_ref"],
            },
        )
        with closing(batches):
            for batch in batches:
                for row in batch:
                    yield ProcessedDocument.model_validate(row)

    def count_documents(self, channel_id: int | None = None) -> int:
        return int(self.db.fetch_scalar("processing_count_documents", {"channel_id": channel_id}))

    # --- failures -----------------------------------------------------------------------------------

    def record_failure(
        self,
        source_ref: str,
        *,
        channel_id: int | None,
        error_class: str,
        error_message: str,
        permanent: bool,
        run_id: str | None = None,
        skipped: bool = False,
        attempts: int = 1,
    ) -> None:
        """Journal a failure, or with `skipped` a message with nothing to process (kept apart: the
        failure list, counts and /metrics leave skips out). `attempts` is the requests this failure
        cost; the journal's `attempts` sums them over runs."""
        self.db.execute(
            "processing_record_failure",
            {
                "source_ref": source_ref,
                "channel_id": channel_id,
                "error_class": error_class,
                "error_message": error_message[:2000],
                "permanent": permanent,
                "skipped": skipped,
                "run_id": run_id,
                "attempts": max(1, attempts),
                "now": self.now(),
            },
        )

    def failures(self, limit: int | None = None) -> list[ProcessingFailure]:
        rows = self.db.fetch_all("processing_list_failures", {"limit": NO_LIMIT if limit is None else limit})
        return [ProcessingFailure.model_validate(r) for r in rows]

    def count_skipped(self) -> int:
        """Messages journaled as skipped (nothing to process)."""
        return int(self.db.fetch_scalar("processing_count_skipped") or 0)

    def delete_failure(self, source_ref: str) -> None:
        self.db.execute("processing_delete_failure", {"source_ref": source_ref})

    # --- run reports --------------------------------------------------------------------------------

    def start_run(self, report: RunReport) -> None:
        """Open a run report; its params record who started it (`started_by`, tg_parser.provenance)."""
        row = report.model_dump(mode="python")
        row["params"] = {**row["params"], "started_by": row["params"].get("started_by") or started_by()}
        self.db.execute("runs_insert", row)

    def finish_run(self, report: RunReport) -> None:
        self.db.execute(
            "runs_finish",
            {
                "run_id": report.run_id,
                "finished_at": report.finished_at or self.now(),
                "status": report.status,
                "counts": report.counts,
                "error": report.error,
            },
        )

    def run_progress(self, run_id: str, counts: dict[str, Any]) -> None:
        """Record a running run's counts so far (kept if its process dies)."""
        self.db.execute("runs_progress", {"run_id": run_id, "counts": counts})

    # --- run heartbeats (a dead run's process is found by its lapsed lease) ------------------------

    def hold_run(self, run_id: str, worker_id: str, lease: timedelta) -> None:
        self.db.execute(
            "run_leases_insert", {"run_id": run_id, "worker_id": worker_id, "expires_at": self.now() + lease}
        )

    def renew_run(self, run_id: str, worker_id: str, lease: timedelta) -> bool:
        """Extend the run's heartbeat; False when another worker already declared the run abandoned."""
        rows = self.db.fetch_all(
            "run_leases_renew", {"run_id": run_id, "worker_id": worker_id, "expires_at": self.now() + lease}
        )
        return bool(rows)

    def drop_run_lease(self, run_id: str) -> None:
        self.db.execute("run_leases_delete", {"run_id": run_id})

    def abandon_lapsed_runs(self, now: datetime | None = None) -> list[str]:
        """Mark failed ('abandoned: ...') the runs whose heartbeat lapsed (their process died), with the
        counts they last wrote; returns their ids. One transaction: one worker records each."""
        now = now or self.now()
        abandoned = []
        with self.db.transaction():
            for lease in self.db.fetch_all("run_leases_take_lapsed", {"now": now}):
                expired = lease["expires_at"]
                self.db.execute(
                    "runs_abandon",
                    {
                        "run_id": lease["run_id"],
                        "finished_at": expired,
                        "error": (
                            f"abandoned: its worker {lease['worker_id']} stopped renewing its lease, "
                            f"which lapsed at {format_timestamp(expired)}"
                        ),
                    },
                )
                abandoned.append(lease["run_id"])
        return abandoned

    # --- the LLM pause shared by every process using one endpoint and key --------------------------

    def publish_llm_pause(self, key_hash: str, until: datetime, now: datetime) -> None:
        self.db.execute("llm_pause_publish", {"key_hash": key_hash, "paused_until": until, "now": now})

    def llm_pause_until(self, key_hash: str) -> datetime | None:
        return self.db.fetch_scalar("llm_pause_until", {"key_hash": key_hash})

    def get_run(self, run_id: str) -> RunReport | None:
        row = self.db.fetch_one("runs_get", {"run_id": run_id})
        return RunReport.model_validate(row) if row else None

    def recent_runs(
        self, kind: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[RunReport]:
        rows = self.db.fetch_all("runs_recent", {"kind": kind, "status": status, "limit": limit})
        return [RunReport.model_validate(r) for r in rows]
