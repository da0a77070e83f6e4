"""`tg-parser run`: for each source ingest, process and topicize; then export the knowledge base.

One failing source does not stop the others: each step's outcome is recorded per source, and the
cycle's status says whether everything succeeded. With an interval, cycles repeat until a stop is
requested (Ctrl-C / SIGTERM), which ends the sleep at once or the running cycle after its current step.

A cycle's own report (`runs` row, kind `run`) carries a heartbeat like a `process` run's
(processing.run_leases, renewed every quarter of PROCESS_LEASE_SECONDS by a thread), and its counts so far
are written after every step: a cycle whose process was killed is marked failed ('abandoned: ...') by the
next run or worker once its heartbeat lapses, with the steps it had finished, instead of staying
`running` for ever.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.domain.models import RunReport, Source
from tg_parser.errors import InvalidInput, TgParserError
from tg_parser.export import ExportFilters, export
from tg_parser.logging import redact
from tg_parser.processing.selection import ProcessorKind
from tg_parser.stores import IngestionStore, ProcessingStore
from tg_parser.topics.model import TopicGates
from tg_parser.topics.runner import TopicStrategy, topicize

# The steps of a cycle, in the order they run: the first three per source, export once at the end.
STEPS = ("ingest", "process", "topicize", "export")

_INTERVAL = re.compile(r"(\d+)\s*([smhd])", re.I)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """'15m', '1h30m', '90s', '1d' → seconds (at least 10 s, so a typo cannot hammer Telegram)."""
    compact = text.replace(" ", "")
    # Longer text is no interval anyone means; the pattern is tried at every digit, so a long run of
    # digits would be scanned quadratically (and past 4300 digits int() refuses it).
    parts = _INTERVAL.findall(compact) if len(compact) <= 40 else []
    if not parts or "".join(f"{n}{u}" for n, u in parts).lower() != compact.lower():
        raise InvalidInput(f"--every {text!r} is not an interval", "write it like 15m, 1h, 1h30m or 90s")
    seconds = sum(int(n) * _UNIT[u.lower()] for n, u in parts)
    if seconds < 10:
        raise InvalidInput(f"--every {text!r} is shorter than 10 seconds", "use an interval of 10s or more")
    return float(seconds)


@dataclass
class StepResult:
    step: str
    ok: bool
    detail: str = ""
    run_id: str | None = None  # the step's own run report (process, topicize), if it wrote one
    model: str | None = None
    documents: int = 0  # processed documents written (the process step)
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"step": self.step, "ok": self.ok, "detail": self.detail}
        if self.run_id is not None:
            shown.update(
                run_id=self.run_id,
                model=self.model,
                documents=self.documents,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
            )
        return shown


@dataclass
class SourceResult:
    source_id: str
    channel_id: int | None
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


@dataclass
class CycleReport:
    run_id: str
    processor: str
    started_at: datetime
    finished_at: datetime | None = None
    sources: list[SourceResult] = field(default_factory=list)
    export: StepResult | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sources) and (self.export is None or self.export.ok)

    def step_results(self) -> list[tuple[str | None, StepResult]]:
        """(source id, step) of every step done, in order; the export's source id is None."""
        done: list[tuple[str | None, StepResult]] = [
            (s.source_id, st) for s in self.sources for st in s.steps
        ]
        if self.export is not None:
            done.append((None, self.export))
        return done

    def totals(self) -> dict[str, int]:
        """The run's counters: sources, steps that succeeded and failed, documents written, tokens."""
        done = [step for _, step in self.step_results()]
        return {
            "sources": len(self.sources),
            "steps_ok": sum(step.ok for step in done),
            "steps_failed": sum(not step.ok for step in done),
            "documents": sum(step.documents for step in done),
            "input_tokens": sum(step.input_tokens for step in done),
            "output_tokens": sum(step.output_tokens for step in done),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "processor": self.processor,
            "ok": self.ok,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "sources": [
                {
                    "source_id": s.source_id,
                    "channel_id": s.channel_id,
                    "ok": s.ok,
                    "steps": [st.as_dict() for st in s.steps],
                }
                for s in self.sources
            ],
            "export": None if self.export is None else {"ok": self.export.ok, "detail": self.export.detail},
        }


@dataclass
class Pipeline:
    """Everything one cycle needs; the step functions are attributes so each can be swapped in tests."""

    db: Database
    settings: Settings
    processor_kind: ProcessorKind
    out_dir: Path
    run_id: str
    concurrency: int = 4
    stop: threading.Event = field(default_factory=threading.Event)

    def select_sources(self, source_ids: tuple[str, ...], all_sources: bool) -> list[Source]:
        store = IngestionStore(self.db)
        if all_sources or not source_ids:
            return store.list_sources("active")
        missing = [s for s in source_ids if store.get_source(s) is None]
        if missing:
            raise InvalidInput(
                f"no source {', '.join(repr(m) for m in missing)}", "see 'tg-parser sources list'"
            )
        return [s for s in (store.get_source(i) for i in dict.fromkeys(source_ids)) if s is not None]

    # --- steps ------------------------------------------------------------------------------------

    def ingest(self, source: Source) -> StepResult:
        if source.kind == "export":
            return StepResult(
                "ingest", True, "export source: nothing to fetch (re-import the file to update)"
            )
        from tg_parser.ingestion.client import TelegramGateway
        from tg_parser.ingestion.runner import Ingestor, Policy

        policy = Policy(
            batch_size=self.settings.ingest_batch_size,
            flood_sleep_threshold=self.settings.telegram_flood_sleep_threshold,
        )
        with TelegramGateway.from_settings(self.settings) as gateway:
            gateway.open(db=self.db)
            ingestor = Ingestor(
                self.db,
                gateway,
                run_id=f"{self.run_id}-ingest",
                policy=policy,
                sqlite_dir=self.settings.db_sqlite_dir if self.db.dialect == "sqlite" else None,
            )
            outcome = ingestor.run_source(source)
        c = outcome.counts
        detail = f"{outcome.status}: {c.posts_inserted} new post(s), {c.comments_inserted} new comment(s)"
        return StepResult(
            "ingest",
            outcome.status in ("ok", "skipped"),
            detail + (f" — {outcome.message}" if outcome.message else ""),
        )

    def process(self, source: Source) -> StepResult:
        from tg_parser.processing.coordinator import ProcessCoordinator, ProcessOptions
        from tg_parser.processing.selection import build_document_processor

        options = ProcessOptions(
            source_id=source.source_id,
            concurrency=self.concurrency,
            lease_ttl=self.settings.process_lease_seconds,
            shared_pause=self.settings.llm_shared_pause,
            read_ahead=self.settings.read_ahead_sessions,
        )
        with build_document_processor(self.settings, self.processor_kind) as built:
            coordinator = ProcessCoordinator(
                self.db,
                built.processor,
                built.tune(options),
                run_id=f"{self.run_id}-process-{source.source_id}",
                run_params={**built.run_params, "via": "run"},
            )
            coordinator.stop = self.stop
            report = coordinator.run()
        counts = report.counts
        detail = f"{report.status}: {counts.processed} document(s), {counts.failed} failed"
        if counts.skipped_no_text:
            detail += f", {counts.skipped_no_text} without text"
        if report.fatal is not None:
            detail += f" — {report.fatal.one_line()}"
        return StepResult(
            "process",
            report.status in ("ok",) and report.fatal is None,
            detail,
            run_id=report.run_id,
            model=report.params.get("model"),
            documents=counts.processed,
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
        )

    def topicize(self, source: Source, strategy: TopicStrategy) -> StepResult:
        if source.channel_id is None:
            return StepResult("topicize", False, "the source has no channel id yet (ingest it first)")
        report = topicize(
            self.db,
            strategy,
            TopicGates.from_settings(self.settings),
            run_id=f"{self.run_id}-topicize-{source.source_id}",
            channel_ids=[source.channel_id],
        )
        outcome = report.channels[0]
        detail = f"{outcome.status}: {outcome.topics} topic(s)" + (
            f" — {outcome.error}" if outcome.error else ""
        )
        return StepResult(
            "topicize",
            outcome.status != "failed",
            detail,
            run_id=report.run_id,
            model=strategy.model,
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
        )

    def export(self) -> StepResult:
        result = export(self.db, self.out_dir, ExportFilters())
        return StepResult(
            "export",
            True,
            f"{result.message_entries} message and {result.topic_entries} topic entries in {self.out_dir}",
        )

    # --- a cycle ----------------------------------------------------------------------------------

    def cycle(
        self,
        sources: list[Source],
        strategy: TopicStrategy | None,
        steps: tuple[str, ...] = STEPS,
        on_step: Callable[[CycleReport], None] | None = None,
    ) -> CycleReport:
        """Run `steps` (all four by default, always in pipeline order) for each source, then export.

        `on_step` is called with the report after every step (a queued run records its progress there).
        """
        report = CycleReport(run_id=self.run_id, processor=self.processor_kind, started_at=datetime.now(UTC))
        record = RunReport(
            run_id=self.run_id,
            kind="run",
            started_at=report.started_at,
            params={
                "steps": [step for step in STEPS if step in steps],
                "sources": [s.source_id for s in sources],
                "processor": self.processor_kind,
                "concurrency": self.concurrency,
            },
        )
        store = ProcessingStore(self.db)
        heartbeat = _RunHeartbeat(
            store,
            self.run_id,
            f"{socket.gethostname()}:{os.getpid()}:{self.run_id}",
            timedelta(seconds=self.settings.process_lease_seconds),
        )
        with self.db.transaction():
            store.start_run(record)
            heartbeat.hold()
        try:
            for dead in store.abandon_lapsed_runs():
                logger.warning("run {} failed: its process stopped renewing its heartbeat (abandoned)", dead)
        except Exception as exc:  # housekeeping only: the next cycle or process run tries again
            logger.warning("run {}: could not mark dead runs abandoned: {}", self.run_id, _one_line(exc))

        def step_done(report: CycleReport) -> None:
            # What the cycle has done so far stays on record if its process dies before the end.
            try:
                store.run_progress(self.run_id, _run_counts(report))
            except Exception as exc:  # a blip: the final report records it all anyway
                logger.warning("run {}: could not record its progress: {}", self.run_id, _one_line(exc))
            if on_step is not None:
                on_step(report)

        heartbeat.start()
        try:
            self._steps(report, sources, strategy, steps, step_done)
        finally:
            heartbeat.halt()
            report.finished_at = datetime.now(UTC)
            self._record(record, report)
        return report

    def _record(self, record: RunReport, report: CycleReport) -> None:
        """Close the cycle's run report: its steps (each with its own run id and tokens) and status, and
        drop its heartbeat in the same transaction."""
        done = report.step_results()
        if self.stop.is_set():
            status = "interrupted"
        elif report.ok:
            status = "ok"
        else:
            status = "partial" if any(step.ok for _, step in done) else "failed"
        failed = [f"{source or 'all'} {step.step}: {step.detail}" for source, step in done if not step.ok]
        record.finished_at = report.finished_at
        record.status = status  # type: ignore[assignment]
        record.error = redact("; ".join(failed))[:2000] or None
        record.counts = _run_counts(report)
        store = ProcessingStore(self.db)
        try:
            with self.db.transaction():
                store.drop_run_lease(self.run_id)
                store.finish_run(record)
        except TgParserError as exc:  # the database went away: the steps said so already, no traceback
            logger.warning("could not record the end of run {}: {}", self.run_id, exc.one_line())
        except Exception:  # the cycle's outcome is already printed and in its steps' own reports
            logger.opt(exception=True).error("could not record the end of run {}", self.run_id)

    def _steps(
        self,
        report: CycleReport,
        sources: list[Source],
        strategy: TopicStrategy | None,
        steps: tuple[str, ...],
        on_step: Callable[[CycleReport], None] | None,
    ) -> None:
        per_source = [step for step in STEPS[:-1] if step in steps]
        for source in sources if per_source else []:
            if self.stop.is_set():
                break
            result = SourceResult(source.source_id, source.channel_id)
            report.sources.append(result)
            for step in per_source:
                if self.stop.is_set():
                    break
                try:
                    if step == "ingest":
                        outcome = self.ingest(source)
                        # The ingest step may have learned the channel id (sources add without Telegram).
                        fresh = IngestionStore(self.db).get_source(source.source_id)
                        source = fresh or source
                        result.channel_id = source.channel_id
                    elif step == "process":
                        outcome = self.process(source)
                    else:
                        assert strategy is not None, "topicize needs a strategy"
                        outcome = self.topicize(source, strategy)
                except Exception as exc:  # one source's failure must not stop the others
                    outcome = StepResult(step, False, f"{type(exc).__name__}: {_one_line(exc)}")
                result.steps.append(outcome)
                log = logger.info if outcome.ok else logger.warning
                log(
                    "run {} {}: {} ({})",
                    source.source_id,
                    step,
                    "ok" if outcome.ok else "FAILED",
                    outcome.detail,
                )
                if on_step is not None:
                    on_step(report)
                if not outcome.ok and step == "ingest":
                    # Process what is already stored anyway: an ingest failure (Telegram down, not
                    # logged in) should not keep earlier messages from reaching the knowledge base.
                    continue
        if "export" in steps and not self.stop.is_set():
            try:
                report.export = self.export()
            except Exception as exc:
                report.export = StepResult("export", False, f"{type(exc).__name__}: {_one_line(exc)}")
            if on_step is not None:
                on_step(report)


def _run_counts(report: CycleReport) -> dict[str, Any]:
    """A cycle's counts as its run report keeps them: the totals and each finished step."""
    return {
        **report.totals(),
        "steps": [{"source_id": source, **step.as_dict()} for source, step in report.step_results()],
    }


class _RunHeartbeat:
    """Holds a cycle's heartbeat (processing.run_leases) and renews it every quarter of the lease from a
    thread, so a step that runs for long (an ingestion, a topicization) does not let it lapse."""

    def __init__(self, store: ProcessingStore, run_id: str, worker_id: str, lease: timedelta) -> None:
        self.store = store
        self.run_id = run_id
        self.worker_id = worker_id
        self.lease = lease
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def hold(self) -> None:
        self.store.hold_run(self.run_id, self.worker_id, self.lease)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        lost = False
        while not self._halt.wait(self.lease.total_seconds() / 4):
            try:
                alive = lost or self.store.renew_run(self.run_id, self.worker_id, self.lease)
            except Exception as exc:  # a blip: the next renewal, a quarter of the lease later, tries again
                if not self._halt.is_set():
                    logger.warning("run {}: heartbeat renewal failed: {}", self.run_id, _one_line(exc))
                continue
            if not alive and not self._halt.is_set():
                # Said once: the report is marked abandoned until this cycle's final report replaces it.
                lost = True
                logger.warning(
                    "run {}: its heartbeat lapsed and another process marked it abandoned; "
                    "this cycle's final report will replace that",
                    self.run_id,
                )


def _one_line(exc: BaseException) -> str:
    one_line = getattr(exc, "one_line", None)
    text = one_line() if callable(one_line) else str(exc)
    return redact(" ".join(str(text).split())[:500])
