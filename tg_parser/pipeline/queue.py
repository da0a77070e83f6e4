"""Executing the run queue: `tg-parser worker`, `run --every` between cycles, `serve --execute-runs`.

A worker fails the runs whose worker died (lapsed lease), delivers webhooks that are due, prunes old
journal rows when the automatic prune is due (tg_parser/retention.py, PRUNE_AUTO_HOURS), then claims
the oldest queued run, executes its steps through the same `Pipeline` as `tg-parser run` (so the
per-source ingestion locks hold: an API run and a cron run never ingest one source at once), renews
the run's lease while it works, records progress after every step and the outcome at the end, and
posts the signed completion webhook.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from loguru import logger

from tg_parser import provenance
from tg_parser.backoff import Backoff
from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.errors import TgParserError
from tg_parser.logging import redact
from tg_parser.pipeline import webhooks
from tg_parser.pipeline.run import STEPS, CycleReport, Pipeline
from tg_parser.prices import TokenPrice, estimate_cost, price_table
from tg_parser.retention import auto_prune
from tg_parser.stores import ProcessingStore
from tg_parser.stores.run_queue import RunQueueStore

# How often an idle worker asks whether the automatic prune is due (it runs every PRUNE_AUTO_HOURS).
PRUNE_CHECK_SECONDS = 300.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _progress(report: CycleReport) -> dict[str, Any]:
    return {
        "steps_done": [
            {"source_id": source, "step": st.step, "ok": st.ok, "detail": st.detail}
            for source, st in report.step_results()
        ]
    }


def _counts(report: CycleReport, prices: dict[str, TokenPrice]) -> dict[str, Any]:
    """The run's counters: steps, tokens and their estimated cost in USD (None: a model has no price)."""
    costs = [
        estimate_cost(st.model, st.input_tokens, st.output_tokens, prices) for _, st in report.step_results()
    ]
    return {
        **report.totals(),
        "estimated_cost_usd": None if None in costs else round(sum(c or 0.0 for c in costs), 6),
    }


@dataclass
class QueueWorker:
    db: Database
    settings: Settings
    out_dir: Path = Path("out")
    worker_id: str = field(default_factory=new_worker_id)
    stop: threading.Event = field(default_factory=threading.Event)
    webhook_backoff: Backoff | None = None  # between delivery attempts; None: webhooks.WEBHOOK_BACKOFF
    # When this process last asked whether the automatic prune is due (monotonic seconds; None: never).
    _prune_checked_at: float | None = field(default=None, init=False, repr=False)

    @property
    def store(self) -> RunQueueStore:
        return RunQueueStore(self.db)

    @property
    def prices(self) -> dict[str, TokenPrice]:
        return price_table(self.settings.llm_prices)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.run_lease_seconds)

    # --- the loop ---------------------------------------------------------------------------------

    def drain(self) -> int:
        """Tidy up, then execute queued runs until the queue is empty or a stop; returns how many ran."""
        from tg_parser.db.migrations import require_current

        # A newer release may have migrated meanwhile: an additive migration is fine, a breaking one
        # stops this older worker (SchemaIncompatible; rolling upgrades, docs/SQL.md).
        require_current(self.db)
        self.housekeeping()
        executed = 0
        while not self.stop.is_set():
            row = self.store.claim(self.worker_id, self.lease)
            if row is None:
                break
            self.execute(row)
            executed += 1
        return executed

    def run_forever(self) -> None:
        """Drain the queue, wait WORKER_POLL_SECONDS (or less, until a stop), repeat."""
        from tg_parser.db.migrations import SchemaIncompatible

        while not self.stop.is_set():
            try:
                self.drain()
            except SchemaIncompatible:
                raise
            except TgParserError as exc:  # the database went away: say so and try again later
                logger.warning("worker: {}", exc.one_line())
            except Exception as exc:
                # Also what the driver raises when the pool finds no connection or the server went away
                # mid-statement: the worker must outlive an outage, not die with it.
                logger.warning("worker: {}: {}", type(exc).__name__, redact(str(exc))[:300])
            self.stop.wait(self.settings.worker_poll_seconds)

    def housekeeping(self) -> None:
        for run_id in self.store.fail_lapsed():
            logger.warning("run {} failed: its worker stopped renewing its lease", run_id)
        # The run reports (`runs list`) of a dead process: its cycle's and its steps' heartbeats lapsed.
        for run_id in ProcessingStore(self.db).abandon_lapsed_runs():
            logger.warning("run report {} failed: its process stopped renewing its heartbeat", run_id)
        for row in self.store.webhooks_due():
            self._post_webhook(row)
        self._maybe_prune()

    def _maybe_prune(self) -> None:
        """The automatic prune, when due. Whether it is due is asked of the database (the last prune of
        any process) at most once per PRUNE_CHECK_SECONDS here, not on every poll."""
        if self.settings.prune_auto_hours <= 0:
            return
        checked = self._prune_checked_at
        if checked is not None and time.monotonic() - checked < PRUNE_CHECK_SECONDS:
            return
        self._prune_checked_at = time.monotonic()
        with provenance.origin("worker", worker_id=self.worker_id):
            auto_prune(self.db, self.settings)

    # --- one run ----------------------------------------------------------------------------------

    def execute(self, row: dict[str, Any]) -> None:
        run_id = row["run_id"]
        steps = tuple(step for step in STEPS if step in row["steps"])
        options = row["options"] or {}
        logger.info("run {}: starting {} for {}", run_id, ",".join(steps), row["source_id"] or "all sources")
        run_stop = threading.Event()  # set by a worker stop, or when another worker failed this run
        renewer = _LeaseRenewer(self, run_id, run_stop)
        status, error = "failed", None
        report: CycleReport | None = None
        try:
            pipeline, sources, strategy = self._prepare(row, steps, options, run_stop)
            renewer.start()
            requester = row.get("requested_by")
            with provenance.origin(
                "api" if requester else "worker", requested_by=requester, worker_id=self.worker_id
            ):
                report = pipeline.cycle(sources, strategy, steps=steps, on_step=renewer.record)
            status = "succeeded" if report.ok and not run_stop.is_set() else "failed"
            if run_stop.is_set():
                error = "the worker was stopped during the run"
            elif not report.ok:
                error = "; ".join(
                    f"{s.source_id} {st.step}: {st.detail}"
                    for s in report.sources
                    for st in s.steps
                    if not st.ok
                ) or (report.export.detail if report.export else "a step failed")
        except TgParserError as exc:
            error = exc.one_line()
        except Exception as exc:  # a bug must fail the run, not the worker
            error = f"{type(exc).__name__}: {exc}"
            logger.exception("run {} failed unexpectedly", run_id)
        finally:
            renewer.halt()
        error = redact(error)[:2000] if error else None
        finished = self.store.finish(
            run_id,
            self.worker_id,
            status=status,
            progress=_progress(report) if report else {},
            counts=_counts(report, self.prices) if report else {},
            error=error,
        )
        if not finished:
            logger.warning("run {}: lost its lease before finishing (another worker failed it)", run_id)
        logger.info("run {}: {}", run_id, status + (f" — {error}" if error else ""))
        fresh = self.store.get(run_id)
        if fresh is not None and fresh["webhook_status"] == "pending":
            self._post_webhook(fresh)

    def _prepare(
        self, row: dict[str, Any], steps: tuple[str, ...], options: dict[str, Any], stop: threading.Event
    ) -> Any:
        from tg_parser.processing.selection import build_topic_strategy, choose_processor

        kind, _ = choose_processor(self.settings, options.get("processor"))
        pipeline = Pipeline(
            self.db,
            self.settings,
            kind,
            Path(options.get("out_dir") or self.out_dir),
            run_id=row["run_id"],
            concurrency=int(options.get("concurrency") or 4),
            stop=stop,
        )
        source_ids = (row["source_id"],) if row["source_id"] else ()
        sources = pipeline.select_sources(source_ids, not source_ids)
        strategy = build_topic_strategy(self.settings, kind) if "topicize" in steps else None
        return pipeline, sources, strategy

    def _post_webhook(self, row: dict[str, Any]) -> None:
        url = row["webhook_url"]
        secret = self.settings.webhook_secret
        if not url or secret is None:
            self.store.record_webhook(row["run_id"], "failed", "WEBHOOK_SECRET is not set", attempts=0)
            return
        # Claim the delivery first: another worker's housekeeping may find the same webhook due while
        # this one is still posting (or waiting between retries), and must leave it alone.
        backoff = self.webhook_backoff or webhooks.WEBHOOK_BACKOFF
        settings = self.settings
        lease = self.lease + timedelta(
            seconds=settings.webhook_max_attempts * (settings.webhook_timeout + backoff.cap)
        )
        claimed = self.store.claim_webhook(row["run_id"], lease)
        if claimed is None:
            return
        row = claimed
        body = orjson.dumps(
            {
                "event": "run.finished",
                "run_id": row["run_id"],
                "status": row["status"],
                "steps": row["steps"],
                "source_id": row["source_id"],
                "counts": row["counts"],
                "error": row["error"],
                "created_at": row["created_at"],
                "started_at": row["started_at"],
                "finished_at": row["finished_at"],
            },
            option=orjson.OPT_UTC_Z,
        )
        delivery = webhooks.deliver(
            url,
            body,
            secret.get_secret_value(),
            event="run.finished",
            timeout=self.settings.webhook_timeout,
            max_attempts=self.settings.webhook_max_attempts,
            backoff=backoff,
            stop=self.stop,
            allow_private=self.settings.webhook_allow_private,
        )
        final = "delivered" if delivery.delivered else ("pending" if self.stop.is_set() else "failed")
        self.store.record_webhook(row["run_id"], final, delivery.error, attempts=delivery.attempts)
        log = logger.info if delivery.delivered else logger.warning
        log("run {}: webhook {} after {} attempt(s)", row["run_id"], final, delivery.attempts)


class _LeaseRenewer:
    """Renews a running run's lease every third of it, and records progress as steps finish."""

    def __init__(self, worker: QueueWorker, run_id: str, run_stop: threading.Event) -> None:
        self.worker = worker
        self.run_id = run_id
        self.run_stop = run_stop
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{run_id}", daemon=True)
        self._progress: dict[str, Any] = {}
        self._counts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def record(self, report: CycleReport) -> None:
        with self._lock:
            self._progress, self._counts = _progress(report), _counts(report, self.worker.prices)
        self._renew()

    def halt(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _renew(self) -> None:
        with self._lock:
            progress, counts = self._progress, self._counts
        try:
            kept = self.worker.store.renew(
                self.run_id, self.worker.worker_id, self.worker.lease, progress, counts
            )
        except Exception as exc:  # a blip: the next renewal (a third of the lease later) tries again
            logger.warning("run {}: lease renewal failed: {}", self.run_id, redact(str(exc))[:200])
            return
        if not kept:
            logger.warning("run {}: this worker no longer holds the run; stopping it", self.run_id)
            self.run_stop.set()

    def _loop(self) -> None:
        # Renew every third of the lease; pass a worker stop on to the run at once (checked each second).
        interval = self.worker.settings.run_lease_seconds / 3
        waited = 0.0
        while not self._halt.wait(min(1.0, interval)):
            if self.worker.stop.is_set():
                self.run_stop.set()
            waited += min(1.0, interval)
            if waited >= interval:
                waited = 0.0
                self._renew()
