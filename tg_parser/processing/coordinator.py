"""The `process` coordinator: raw messages in, processed documents out, several LLM calls at once.

Threads and responsibilities:

- the *coordinator* (the calling thread) is the only one writing to the database. It takes work from
  the pending-work queue (raw.pending_work: the messages with no document and no permanent failure,
  queued when they were stored), a chunk per claim transaction that pages through the queue in key
  order and leases the chunk (on PostgreSQL the queue rows are locked FOR UPDATE SKIP LOCKED, so
  workers never wait for each other nor take the same rows), hands claimed messages to the workers,
  collects their results and writes them in batches: documents, failure-journal rows and the release
  of their leases go in one transaction per batch, and the finished messages leave the queue right
  after it. `--force` walks raw_messages instead (every message is work then);
- `concurrency` *worker* threads only call the processor (the LLM). They never wait for the database,
  and the database never waits for them, so neither is the other's bottleneck;
- on PostgreSQL, a few *read-ahead* threads (`read_ahead`, processing/read_ahead.py) only read: they
  touch the pages of the queue's next keys from their own pooled connections, so that the claims and
  the writes do not wait for random reads one at a time; they write nothing and stop by themselves
  where that is not worth it.

Several workers (processes, hosts) can run against one database: a message is sent to the LLM only by
the worker holding its lease. A lease expires after `lease_ttl` (PROCESS_LEASE_SECONDS, 60 s) unless
renewed. Every quarter of it the coordinator renews its in-flight leases and its run's heartbeat
(processing.run_leases), and takes over what a dead worker left: queued messages whose lease lapsed
(pending_lapsed) are claimed by this run, and runs whose heartbeat lapsed are marked failed with an
error starting 'abandoned:' and the counts they had written (each batch write records them). So a
killed worker's messages are taken over within about a lease and a quarter, by a worker already running.

With `shared_pause` (LLM_SHARED_PAUSE) the coordinator also shares the LLM client's 429 pause with the
other processes using the same endpoint and key: a Retry-After received here is published to
processing.llm_pauses, and one published by another process holds this client's gate, so N processes
do not hammer a quota each on its own (checked every PAUSE_SYNC_SECONDS).

Stopping (`stop` event, set by Ctrl-C in the CLI): no new request starts; documents already finished
are written; requests still in flight are abandoned and their leases released, so nothing is
half-written and the next run picks them up.
"""

from __future__ import annotations

import gc
import os
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger

from tg_parser.db.base import Database
from tg_parser.domain.models import ProcessedDocument, RunReport
from tg_parser.errors import ItemFailure, TgParserError
from tg_parser.llm.errors import LlmRejectedEverything
from tg_parser.logging import redact
from tg_parser.processing.processor import EmptyMessage, Processor
from tg_parser.processing.read_ahead import ReadAhead
from tg_parser.stores.base import FAR_PAST, MessageKey
from tg_parser.stores.processing import DocumentRow, ProcessingStore, QueuePage

# This many bad-request rejections in a row, before any success, means the settings are wrong.
REJECTIONS_BEFORE_ABORT = 10
# While reading ahead: queue rows per claim at most (the workers process one while the next one's pages
# arrive), and how many claims' keys are given to the read-ahead sessions beyond the claims' position
# (a window: 2,000 keys for the extractive processor's claims, 4 × --concurrency for an LLM run's).
READ_AHEAD_CLAIM = 500
READ_AHEAD_CLAIMS = 4
# How often a coordinator publishes its client's 429 pause and reads the other processes' (seconds).
PAUSE_SYNC_SECONDS = 0.25


@dataclass
class ProcessOptions:
    source_id: str | None = None
    channel_id: int | None = None
    concurrency: int = 4
    limit: int | None = None
    force: bool = False
    retry_failed: bool = False
    lease_ttl: float = 60.0  # seconds a claimed message (and the run) stays reserved; renewed every 1/4
    shared_pause: bool = True  # share the LLM client's 429 pause with other processes (same endpoint, key)
    write_batch: int = 100  # results written per transaction, at most
    flush_interval: float = 0.5  # seconds a finished result may wait for its batch
    page_size: int = 500  # candidates read per selection query
    claim_batch: int | None = None  # messages leased per claim transaction (default: the concurrency)
    hand_off: int = 1  # messages a worker takes from the work queue at once (a fast processor: many)
    # The cyclic garbage collector's thresholds during the run (None: left as they are). A fast processor
    # allocates many short-lived containers per message, and at Python's default (700, 10, 10) the
    # collections that follow cost about a tenth of its CPU; the extractive processor raises them.
    gc_thresholds: tuple[int, int, int] | None = None
    # Sessions reading the next claims' pages ahead (processing/read_ahead.py; PROCESS_READ_AHEAD), 0:
    # none. Only where the database overlaps their reads (Database.reads_ahead_in_sessions), not with --force.
    read_ahead: int = 0


@dataclass
class ProcessCounts:
    selected: int = 0  # candidates read from the selection
    claimed: int = 0  # leased by this worker (the only ones it sends)
    skipped_leased: int = 0  # taken by another worker (or finished by one) in the meantime
    taken_over: int = 0  # claimed after another worker's lease lapsed (that worker died)
    processed: int = 0  # documents written
    failed: int = 0
    failed_permanent: int = 0
    failed_transient: int = 0
    skipped_no_text: int = 0  # media-only messages: journaled, nothing to send
    discarded: int = 0  # in flight when the run stopped; released for the next run
    requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    failures_by_class: dict[str, int] = field(default_factory=dict)


@dataclass
class ProcessReport:
    run_id: str
    worker_id: str
    status: str  # ok | partial | failed | interrupted
    started_at: datetime
    finished_at: datetime
    counts: ProcessCounts
    params: dict[str, Any]
    error: str | None = None
    fatal: ItemFailure | None = None

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def docs_per_second(self) -> float:
        return self.counts.processed / self.duration if self.duration > 0 else 0.0

    def counts_dict(self) -> dict[str, Any]:
        data = asdict(self.counts)
        data["duration_s"] = round(self.duration, 3)
        data["docs_per_s"] = round(self.docs_per_second, 2)
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": "process",
            "worker_id": self.worker_id,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "params": self.params,
            "counts": self.counts_dict(),
            "error": self.error,
        }


def new_worker_id(run_id: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"


class _Result:
    __slots__ = ("document", "error", "kind", "message")

    def __init__(
        self,
        kind: str,
        message: Mapping[str, Any],
        document: ProcessedDocument | DocumentRow | None = None,
        error: ItemFailure | None = None,
    ) -> None:
        self.kind = kind  # ok | error | empty | cancelled
        self.message = message
        self.document = document
        self.error = error


class _InternalError(ItemFailure):
    """A bug or an unexpected exception while processing one message: journaled, retried next run."""

    error_class = "internal_error"
    transient = True


class _NoText(ItemFailure):
    """Journaled (permanent) for a message without text, so later runs do not select it again: a skip,
    kept apart from real failures (processing_failures.skipped)."""

    error_class = "no_text"
    skipped = True


class ProcessCoordinator:
    def __init__(
        self,
        db: Database,
        processor: Processor,
        options: ProcessOptions,
        *,
        run_id: str | None = None,
        worker_id: str | None = None,
        stop: threading.Event | None = None,
        on_progress: Callable[[ProcessCounts], None] | None = None,
        run_params: Mapping[str, Any] | None = None,
    ) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.db = db
        self.store = ProcessingStore(db)
        self.processor = processor
        self.options = options
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.worker_id = worker_id or new_worker_id(self.run_id)
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.run_params = dict(run_params or {})
        self.counts = ProcessCounts()
        self._failure_classes: Counter[str] = Counter()
        # Set on Ctrl-C or a fatal error: workers start nothing new and cut their retry waits short.
        self._cancel = threading.Event()
        self._fatal: ItemFailure | None = None
        # Work goes to the workers and results come back in chunks of `hand_off` messages: one queue
        # round trip per message would cost a fast processor (extractive) more than the message does.
        self._work: queue.Queue[list[Mapping[str, Any]] | None] = queue.Queue()
        self._results: queue.Queue[list[_Result]] = queue.Queue()
        # A processor that builds the stored row itself (the extractive one) skips ProcessedDocument.
        self._process_row: Callable[[Mapping[str, Any]], DocumentRow] | None = getattr(
            processor, "process_row", None
        )
        self._in_flight: dict[str, Mapping[str, Any]] = {}
        self._documents: list[ProcessedDocument | DocumentRow] = []
        self._failures: list[tuple[Mapping[str, Any], ItemFailure]] = []
        self._release: list[str] = []
        self._first_unwritten = 0.0
        self._rejections = 0
        self._started = datetime.now(UTC)
        self._after: tuple[int, datetime, str] | None = None  # key of the last queued row claimed
        self._read_ahead: ReadAhead | None = None
        self._ahead_until: MessageKey | None = None  # the last key given to the read-ahead
        self._ahead_left = 0  # of the keys given, how many this run's claims have not passed (an estimate)
        self._ahead_to_end = False  # a peek reached the end of the queue: nothing more to give
        # The LLM client's 429 gate, shared with other processes through the database (shared_pause).
        client = getattr(processor, "client", None)
        self._gate = getattr(client, "gate", None) if options.shared_pause else None
        self._pause_key: str = getattr(client, "pause_key", "") if self._gate is not None else ""

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> ProcessReport:
        options = self.options
        params = {
            "source_id": options.source_id,
            "channel_id": options.channel_id,
            "concurrency": options.concurrency,
            "limit": options.limit,
            "force": options.force,
            "retry_failed": options.retry_failed,
            "model": self.processor.model,
            "prompt_id": self.processor.prompt_id,
            "worker_id": self.worker_id,
            **self.run_params,
        }
        self._started = datetime.now(UTC)
        try:
            if not options.retry_failed:  # else once the failures are queued again (_prepare_queue)
                # Before the run's own bookkeeping: the first claim's pages arrive meanwhile.
                self._start_reading_ahead()
            return self._run(params)
        finally:
            if self._read_ahead is not None:
                self._read_ahead.close()

    def _run(self, params: dict[str, Any]) -> ProcessReport:
        options = self.options
        with self.db.transaction():
            self.store.start_run(
                RunReport(run_id=self.run_id, kind="process", started_at=self._started, params=params)
            )
            self.store.hold_run(self.run_id, self.worker_id, self._lease)
        self._abandon_dead_runs()
        logger.info(
            "process run {} started: worker {}, concurrency {}, model {}, prompt {}",
            self.run_id,
            self.worker_id,
            options.concurrency,
            self.processor.model,
            self.processor.prompt_id,
        )
        workers = [
            threading.Thread(target=self._worker, name=f"llm-worker-{i}", daemon=True)
            for i in range(options.concurrency)
        ]
        for worker in workers:
            worker.start()
        error: str | None = None
        thresholds = gc.get_threshold()
        if options.gc_thresholds is not None:
            gc.set_threshold(*options.gc_thresholds)
        try:
            self._coordinate()
        except BaseException as exc:  # a second Ctrl-C or a database error: stop, report, re-raise
            self._cancel.set()
            error = redact(f"{type(exc).__name__}: {exc}")[:2000]
            self._shutdown(workers, wait=False)
            self._finish(
                params, error=error, interrupted=isinstance(exc, KeyboardInterrupt), best_effort=True
            )
            raise
        finally:
            gc.set_threshold(*thresholds)
        stopped = self.stop.is_set() or self._fatal is not None
        self._shutdown(workers, wait=not stopped)
        return self._finish(params, error=None, interrupted=self.stop.is_set())

    def _coordinate(self) -> None:
        options = self.options
        if not options.force:
            self._prepare_queue()
            self._start_reading_ahead()
        candidates = self._candidates() if options.force else None
        exhausted = False
        claim_batch = options.claim_batch or options.concurrency
        # Claimed and not finished: busy workers plus one round queued. A fast processor (extractive)
        # claims in bigger batches so each message does not pay for its own claim transaction.
        high_water = 2 * max(options.concurrency, claim_batch)
        renew_every = max(options.lease_ttl / 4, 0.05)
        next_renewal = time.monotonic() + renew_every
        next_pause_sync = 0.0
        while True:
            if self.stop.is_set() or self._fatal is not None:
                self._cancel.set()
                break
            while not exhausted and len(self._in_flight) < high_water:
                room = min(self._claim_size(claim_batch), self._remaining())
                if room <= 0:
                    exhausted = True
                    break
                if candidates is not None:
                    chunk = [row for _, row in zip(range(room), candidates, strict=False)]
                    if not chunk:
                        exhausted = True
                        break
                    held, _ = self._claim(chunk)
                else:
                    held, exhausted = self._claim_pending(room)
                self._dispatch(held)
            if not self._in_flight:
                # Before leaving, the messages of a worker that died meanwhile (their leases lapsed).
                if exhausted and not self._take_over(high_water):
                    break
                continue  # every message of that chunk was taken by another worker: claim more
            self._collect(timeout=0.1)
            if self._due_for_write():
                self._write()
            now = time.monotonic()
            if self._gate is not None and now >= next_pause_sync:
                self._sync_pause()
                next_pause_sync = now + PAUSE_SYNC_SECONDS
            if now >= next_renewal:
                self._heartbeat(high_water)
                next_renewal = time.monotonic() + renew_every
        # Results that finished before we stopped are kept; whatever is still running is abandoned.
        self._collect(timeout=0)
        self._write()

    def _remaining(self) -> int:
        if self.options.limit is None:
            return 2**62
        done = self.counts.claimed - self.counts.discarded
        return max(0, self.options.limit - done)

    def _prepare_queue(self) -> None:
        """Before the first claim, with --retry-failed: queue the permanent failures again (reads the
        journal). Queued messages that are done already (what a crash between the document write and
        the queue's can leave, and on SQLite what the migration queued) leave the queue when a claim
        reaches them, not in a pass over the whole queue at the start of every run: the run costs the
        work it takes, whatever the length of the queue."""
        options = self.options
        if options.retry_failed:
            with self.db.transaction():
                self.store.requeue_failed(source_id=options.source_id, channel_id=options.channel_id)

    def _claim_pending(self, room: int) -> tuple[list[Mapping[str, Any]], bool]:
        """The next chunk of the pending queue, leased in one transaction; (held rows, queue exhausted).

        The page continues after the key of the previous one, so a run passes each queued message once
        (one that fails transiently stays queued for the next run, not for this one); the queue is
        exhausted when a page comes back empty. Queued messages found done already (the page flags
        permanent failures, the lease step documents) leave the queue, in their own transaction after
        the claim (on SQLite the queue is another file).
        """
        if self._reading_ahead:
            self._keep_reading_ahead(room)
        page, held = self._lease_queue_page(room, after=self._after, lock=True)
        self._ahead_left = max(0, self._ahead_left - len(page.rows) - len(page.done))
        if page.last is not None:
            self._after = page.last
            if self._read_ahead is not None:
                self._read_ahead.passed(page.last)  # slices behind the claims are not read any more
            if self._reading_ahead:
                self._keep_reading_ahead(room)  # the next claims' pages, read while this one is processed
        return held, page.last is None

    def _start_reading_ahead(self) -> None:
        """Start the read-ahead sessions (ProcessOptions.read_ahead) with the first window of the queue:
        not with --force (it walks raw_messages) nor where the database would not overlap their reads."""
        options = self.options
        if self._read_ahead is not None or options.read_ahead < 1 or options.force:
            return
        if not self.db.reads_ahead_in_sessions:
            return
        self._read_ahead = ReadAhead(self.store, options.read_ahead)
        claim_batch = options.claim_batch or options.concurrency
        self._keep_reading_ahead(min(self._claim_size(claim_batch), self._remaining()))

    @property
    def _reading_ahead(self) -> bool:
        return self._read_ahead is not None and self._read_ahead.active

    def _claim_size(self, claim_batch: int) -> int:
        """Queue rows per claim: smaller while the read-ahead runs, so the workers process one claim while
        the next one's pages arrive, instead of waiting for a whole big claim's reads."""
        return min(claim_batch, READ_AHEAD_CLAIM) if self._reading_ahead else claim_batch

    def _keep_reading_ahead(self, room: int) -> None:
        """Keep the next claims' keys given to the read-ahead: when less than half a window (READ_AHEAD_CLAIMS
        claims of `room`) is left ahead of the claims, the next window's keys, peeked from the queue
        without locking after the last key given or the claims' position, whichever is further (other
        workers' claims move the position past rows this run never counts). An error here stops the
        reading ahead, never the run."""
        assert self._read_ahead is not None
        if self._ahead_to_end:
            return
        window = READ_AHEAD_CLAIMS * room
        after = self._after
        if self._ahead_until is None or (after is not None and after >= self._ahead_until):
            self._ahead_left = 0  # the claims caught up with (or passed) everything given
        else:
            after = self._ahead_until
        if self._ahead_left >= window // 2:
            return
        limit = min(window, self._remaining() - self._ahead_left)
        if limit <= 0:
            return
        options = self.options
        try:
            keys = self.store.peek_queue(
                limit=limit, source_id=options.source_id, channel_id=options.channel_id, after=after
            )
        except Exception as exc:  # an optimisation: the claim reads what it needs anyway
            self._read_ahead.stop(f"the queue could not be read ahead: {type(exc).__name__}: {exc}")
            return
        self._ahead_to_end = len(keys) < limit
        if keys:
            self._ahead_until = keys[-1]
            self._ahead_left += len(keys)
            self._read_ahead.ahead(keys)

    def _lease_queue_page(self, room: int, **where: Any) -> tuple[QueuePage, list[Mapping[str, Any]]]:
        """One page of the queue (`where`: after a key, or lapsed under other workers) leased in one
        transaction; its rows found done already leave the queue afterwards. Returns (page, held rows)."""
        options = self.options
        with self.db.transaction():
            page = self.store.queue_page(
                limit=room,
                source_id=options.source_id,
                channel_id=options.channel_id,
                retry_failed=options.retry_failed,
                **where,
            )
            held, done = self._claim(page.rows, queued=True) if page.rows else ([], [])
        self.counts.selected += len(page.rows) - len(done)
        self._dequeue_done(page.done + done)
        return page, held

    def _dequeue_done(self, refs: list[str]) -> None:
        """Queued messages a page found done already leave the queue (own transaction: on SQLite the
        queue is another file than the documents)."""
        if refs:
            with self.db.transaction():
                self.store.dequeue(refs)
            logger.info("{} queued message(s) were done already and left the queue", len(refs))

    def _candidates(self) -> Iterator[Mapping[str, Any]]:
        """Every candidate once, in (channel, date, ref) order: one selection query per page."""
        for rows in candidate_pages(self.store, self.options):
            self.counts.selected += len(rows)
            yield from rows

    def _claim(
        self, rows: list[Mapping[str, Any]], *, queued: bool = False
    ) -> tuple[list[Mapping[str, Any]], list[str]]:
        """Lease rows in one transaction; (the rows now held, the refs found done).

        Whether a message has a document is looked up here, once (processing_unclaim_done): the claim
        page does not, and the lease insert does not either. The refs given back for a document are
        `done` when the rows come from the queue (`queued`: the caller dequeues them, as the refs its
        page flagged); a --force run's, written by another worker since this run started, are skipped."""
        refs = [row["source_ref"] for row in rows]
        ttl = timedelta(seconds=self.options.lease_ttl)
        done_since = self._started if self.options.force else FAR_PAST
        # The lease insert looks no document up (force=True): processing_unclaim_done, next in this
        # transaction, does with a later snapshot and gives back every lease on a message with a document
        # (with --force, one written since this run started); a lookup in the insert too would be the same
        # probe of processed_documents twice per message.
        with self.db.transaction():
            claimed = self.store.claim(refs, self.worker_id, ttl, force=True)
            dropped = set(self.store.unclaim_done(claimed, self.worker_id, done_since)) if claimed else set()
        held = set(claimed) - dropped
        done = [ref for ref in refs if ref in dropped] if queued else []
        self.counts.claimed += len(held)
        self.counts.skipped_leased += len(rows) - len(held) - len(done)
        return [row for row in rows if row["source_ref"] in held], done

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.options.lease_ttl)

    def _heartbeat(self, high_water: int) -> None:
        """Every quarter of the lease: renew this run's leases, then take over what dead workers left."""
        refs = list(self._in_flight)
        with self.db.transaction():
            kept = set(self.store.claim(refs, self.worker_id, self._lease, force=True)) if refs else set()
            alive = self.store.renew_run(self.run_id, self.worker_id, self._lease)
        lost = [ref for ref in refs if ref not in kept]
        if lost:
            logger.warning("{} lease(s) lapsed and were taken by another worker: {}", len(lost), lost[:5])
        if not alive:
            logger.warning(
                "run {}: its heartbeat lapsed and another worker marked it abandoned; "
                "this run's final report will replace that",
                self.run_id,
            )
        self._abandon_dead_runs()
        self._take_over(high_water)  # room of its own: a busy worker takes over too, over its high water

    def _abandon_dead_runs(self) -> None:
        for run_id in self.store.abandon_lapsed_runs():
            logger.warning("run {} failed: its worker stopped renewing its lease (abandoned)", run_id)

    def _take_over(self, room: int) -> bool:
        """Claim queued messages whose lease lapsed under another worker (it died); True if any.

        The pending pages pass each message once, so one leased by a dead worker behind the page's key
        is found here. A `--force` run walks raw_messages instead and leaves them to the next run."""
        room = min(room, self._remaining())
        if self.options.force or room <= 0:
            return False
        _, held = self._lease_queue_page(room, lapsed_for=self.worker_id)
        self._dispatch(held)
        if held:
            self.counts.taken_over += len(held)
            logger.warning("took over {} message(s) whose worker stopped renewing its leases", len(held))
        return bool(held)

    def _dispatch(self, held: list[Mapping[str, Any]]) -> None:
        """Claimed messages go in flight and to the workers, `hand_off` at a time."""
        for row in held:
            self._in_flight[row["source_ref"]] = row
        step = max(1, self.options.hand_off)
        for start in range(0, len(held), step):
            self._work.put(held[start : start + step])

    def _sync_pause(self) -> None:
        """Publish this process's new 429 deadline and hold the gate until any process's deadline."""
        assert self._gate is not None
        now = datetime.now(UTC)
        deadline = self._gate.take_unpublished()
        if deadline is not None:
            self.store.publish_llm_pause(self._pause_key, datetime.fromtimestamp(deadline, UTC), now)
        until = self.store.llm_pause_until(self._pause_key)
        if until is not None and until > now:
            self._gate.hold_until(until.timestamp())

    # --- results ------------------------------------------------------------------------------------

    def _collect(self, timeout: float) -> None:
        try:
            results = self._results.get(timeout=timeout) if timeout > 0 else self._results.get_nowait()
        except queue.Empty:
            return
        while True:
            for result in results:
                self._handle(result)
            try:
                results = self._results.get_nowait()
            except queue.Empty:
                break
        if self.on_progress is not None:
            self.on_progress(self.counts)

    def _handle(self, result: _Result) -> None:
        ref = result.message["source_ref"]
        if self._in_flight.pop(ref, None) is None:
            return  # already given up on (stopped): never written
        if not self._documents and not self._failures and not self._release:
            self._first_unwritten = time.monotonic()
        self._release.append(ref)
        if result.kind == "cancelled":
            self.counts.discarded += 1
            return
        if result.kind == "ok":
            assert result.document is not None
            document = result.document
            self._documents.append(document)
            if isinstance(document, DocumentRow):  # one local call, no tokens
                self.counts.requests += 1
                self._rejections = 0
                return
            self.counts.requests += int(document.metadata.get("attempts", 1))
            self.counts.retries += int(document.metadata.get("attempts", 1)) - 1
            self.counts.input_tokens += document.input_tokens or 0
            self.counts.output_tokens += document.output_tokens or 0
            self.counts.reasoning_tokens += int(document.metadata.get("reasoning_tokens") or 0)
            self._rejections = 0
            return
        if result.kind == "empty":
            self.counts.skipped_no_text += 1
            self._failures.append(
                (result.message, _NoText("message has no text (media only): nothing to send"))
            )
            return
        error = result.error
        assert error is not None
        if error.error_class == "cancelled":
            self.counts.discarded += 1
            return
        self.counts.requests += error.attempts
        self.counts.retries += error.attempts - 1
        self.counts.input_tokens += error.input_tokens
        self.counts.output_tokens += error.output_tokens
        self.counts.failed += 1
        if error.permanent:
            self.counts.failed_permanent += 1
        else:
            self.counts.failed_transient += 1
        self._failure_classes[error.error_class] += 1
        self._failures.append((result.message, error))
        logger.warning("{}: {} ({})", ref, error.one_line(), error.error_class)
        if error.fatal and self._fatal is None:
            self._fatal = error
        if error.error_class == "bad_request":
            self._rejections += 1
            if (
                self._rejections >= REJECTIONS_BEFORE_ABORT
                and self.counts.processed == 0
                and not self._documents
            ):
                self._fatal = LlmRejectedEverything(
                    f"the first {self._rejections} requests were all rejected; last: {error.message}",
                    "check LLM_MODEL, LLM_API and the LLM_* parameters for this server",
                )

    def _due_for_write(self) -> bool:
        pending = len(self._documents) + len(self._failures) + len(self._release)
        if not pending:
            return False
        # While reading ahead, claims are smaller and so are writes: a batch is written while the next
        # claims' pages arrive, not all at the end.
        write_batch = self._claim_size(self.options.write_batch)
        if len(self._documents) + len(self._failures) >= write_batch:
            return True
        return time.monotonic() - self._first_unwritten >= self.options.flush_interval or not self._in_flight

    def _write(self) -> None:
        """Documents, journal rows and lease releases of finished messages: a transaction per write batch
        at most (results collected at once can outnumber it), each message's lease released with its
        document or journal row, the leases of messages that wrote nothing with the last batch. A batch
        leaves the lists once committed: after an error the rest is still there for the run's end."""
        size = max(1, self._claim_size(self.options.write_batch))
        while self._documents or self._failures or self._release:
            documents, rest_documents = self._documents[:size], self._documents[size:]
            room = size - len(documents)
            failures, rest_failures = self._failures[:room], self._failures[room:]
            if rest_documents or rest_failures:
                refs = {document.source_ref for document in documents}
                refs.update(message["source_ref"] for message, _ in failures)
                release = [ref for ref in self._release if ref in refs]
                rest_release = [ref for ref in self._release if ref not in refs]
            else:
                release, rest_release = self._release, []
            self._write_batch(documents, failures, release)
            self._documents, self._failures, self._release = rest_documents, rest_failures, rest_release

    def _write_batch(
        self,
        documents: list[ProcessedDocument | DocumentRow],
        failures: list[tuple[Mapping[str, Any], ItemFailure]],
        release: list[str],
    ) -> None:
        """One batch of results in one transaction (see _write)."""
        done = [document.source_ref for document in documents]
        done += [message["source_ref"] for message, error in failures if error.permanent]
        # Done messages leave the pending queue. On PostgreSQL in this transaction, before the leases are
        # released (a concurrent claim never sees a done message without its lease; the queue rows are
        # locked before the lease rows, as a claim locks them, so the two cannot deadlock). On SQLite
        # after the commit, never with it: the queue is another file, a transaction over attached WAL
        # files is not atomic across them, and a crash in between must leave a done message queued
        # (found done and dequeued by the next claim that reaches it), not one neither done nor queued.
        atomic = self.db.atomic_across_stores
        with self.db.transaction():
            self.store.upsert_documents(documents)
            for message, error in failures:
                self.store.record_failure(
                    message["source_ref"],
                    channel_id=message.get("channel_id"),
                    error_class=error.error_class,
                    error_message=redact(error.one_line()),
                    permanent=error.permanent,
                    run_id=self.run_id,
                    skipped=getattr(error, "skipped", False),
                    attempts=error.attempts,
                )
            if atomic:
                self.store.dequeue(done)
            self.store.release(release, self.worker_id)
            self.counts.processed += len(documents)
            if documents or failures:  # what this run wrote, kept if its process dies
                self.store.run_progress(self.run_id, self._progress_counts())
        if not atomic:
            self.store.dequeue(done)

    def _progress_counts(self) -> dict[str, Any]:
        data = asdict(self.counts)
        data["failures_by_class"] = dict(sorted(self._failure_classes.items()))
        data["duration_s"] = round((datetime.now(UTC) - self._started).total_seconds(), 3)
        return data

    # --- workers ------------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            chunk = self._work.get()
            if chunk is None:
                return
            self._results.put([self._run_one(message) for message in chunk])

    def _run_one(self, message: Mapping[str, Any]) -> _Result:
        if self._cancel.is_set():
            return _Result("cancelled", message)
        try:
            if self._process_row is not None:
                return _Result("ok", message, document=self._process_row(message))
            return _Result("ok", message, document=self.processor.process(message, self._cancel))
        except EmptyMessage:
            return _Result("empty", message)
        except ItemFailure as exc:
            return _Result("error", message, error=exc)
        except Exception as exc:  # a bug must cost one message, not the run
            logger.opt(exception=exc).error("unexpected error on {}", message.get("source_ref"))
            error = _InternalError(f"unexpected error: {type(exc).__name__}: {exc}")
            return _Result("error", message, error=error)

    def _shutdown(self, workers: list[threading.Thread], *, wait: bool) -> None:
        # Messages claimed but not started: give them back.
        while True:
            try:
                chunk = self._work.get_nowait()
            except queue.Empty:
                break
            for message in chunk or ():
                if self._in_flight.pop(message["source_ref"], None) is not None:
                    self._release.append(message["source_ref"])
                    self.counts.discarded += 1
        for _ in workers:
            self._work.put(None)
        if wait:
            for worker in workers:
                worker.join()

    def _finish(
        self, params: dict[str, Any], *, error: str | None, interrupted: bool, best_effort: bool = False
    ) -> ProcessReport:
        # Requests still running are abandoned: release their leases so the next run takes them.
        abandoned = list(self._in_flight)
        self.counts.discarded += len(abandoned)
        self._release.extend(abandoned)
        self._in_flight.clear()
        self.counts.failures_by_class = dict(sorted(self._failure_classes.items()))
        if self._fatal is not None:
            status, error = "failed", error or self._fatal.one_line()
        elif interrupted:
            status = "interrupted"
        elif error is not None:  # the run ended on an exception (the database went away): not ok, even
            status = "failed"  # when the report, and the results finished before it, could still be written
        elif self.counts.failed:
            status = "partial"
        else:
            status = "ok"
        report = ProcessReport(
            run_id=self.run_id,
            worker_id=self.worker_id,
            status=status,
            started_at=self._started,
            finished_at=datetime.now(UTC),
            counts=self.counts,
            params=params,
            error=error,
            fatal=self._fatal,
        )
        try:
            self._write()
            with self.db.transaction():
                self.store.drop_run_lease(self.run_id)
                self.store.finish_run(
                    RunReport(
                        run_id=self.run_id,
                        kind="process",
                        started_at=self._started,
                        finished_at=report.finished_at,
                        status=status,  # type: ignore[arg-type]
                        params=params,
                        counts=report.counts_dict(),
                        error=error,
                    )
                )
        except TgParserError as exc:
            if not best_effort:
                raise
            # The database went away under the run (what stopped it, reported by the caller in one
            # line): no traceback on top of that. A later run marks this one abandoned once its lease lapses.
            logger.info("could not record the end of run {}: {}", self.run_id, exc.one_line())
        except Exception:
            if not best_effort:
                raise
            logger.opt(exception=True).error("could not record the end of run {}", self.run_id)
        logger.info(
            "process run {} {}: {} written, {} failed, {} discarded in {:.1f} s",
            self.run_id,
            status,
            self.counts.processed,
            self.counts.failed,
            self.counts.discarded,
            report.duration,
        )
        return report


def candidate_pages(store: ProcessingStore, options: ProcessOptions) -> Iterator[list[dict[str, Any]]]:
    """The messages a run selects, a page at a time in (channel, date, ref) order (keyset paging): a
    `--force` run's walk over raw_messages, and the dry run's. Without --force and --retry-failed the
    dry run reads the pending queue (what a run claims); with either it scans raw_messages, which
    holds what the queue does not (documents to rebuild, permanent failures to retry)."""
    after: tuple[int, datetime, str] | None = None
    if not (options.force or options.retry_failed):
        while True:
            page = store.queue_page(
                limit=options.page_size,
                source_id=options.source_id,
                channel_id=options.channel_id,
                after=after,
            )
            if page.rows:
                yield page.rows
            if page.last is None:  # the queue ends at an empty page; rows found done are passed by
                return
            after = page.last
    while True:
        rows = store.select_candidates(
            limit=options.page_size,
            source_id=options.source_id,
            channel_id=options.channel_id,
            force=options.force,
            retry_failed=options.retry_failed,
            after=after,
        )
        if rows:
            yield rows
        if len(rows) < options.page_size:  # a short page ends a scan
            return
        last = rows[-1]
        after = (last["channel_id"], last["date"], last["source_ref"])


def dry_run(db: Database, processor: Processor, options: ProcessOptions) -> dict[str, Any]:
    """How many messages a run would send and roughly how many input tokens: reads only, calls nothing."""
    store = ProcessingStore(db)
    count = tokens = empty = 0
    limit = options.limit
    for rows in candidate_pages(store, options):
        for row in rows:
            if limit is not None and count >= limit:
                break
            if not (row.get("text") or "").strip():
                empty += 1
                continue
            count += 1
            tokens += processor.estimate_input_tokens(row)
        if limit is not None and count >= limit:
            break
    return {
        "messages": count,
        "skipped_no_text": empty,
        "estimated_input_tokens": tokens,
        "estimated_input_tokens_per_message": round(tokens / count) if count else 0,
        "model": processor.model,
        "prompt_id": processor.prompt_id,
    }
