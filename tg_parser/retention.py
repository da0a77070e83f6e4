"""Retention: `tg-parser db prune` and the automatic prune step of `run` and `worker`.

What goes, each kind with its own age (settings PRUNE_*, overridable per command):

- `runs`: run reports (processing.runs) started more than PRUNE_RUNS_DAYS ago;
- `ingest_runs`: ingestion attempts (ingestion.ingest_runs) started more than PRUNE_INGEST_RUNS_DAYS ago;
- `run_requests`: runs queued through the API that finished (succeeded or failed) more than
  PRUNE_RUN_REQUESTS_DAYS ago (queued and running ones never);
- `versions`: journaled message versions (raw.raw_message_versions, full payload copies) observed more
  than PRUNE_VERSIONS_DAYS ago, except the PRUNE_VERSIONS_KEEP newest of each message;
- `leases`: work leases that expired (a crashed worker's; any worker may take them over anyway).

An age of 0 keeps that kind forever. Nothing else is ever deleted: not raw messages, documents, topics,
the failure journal or the skip markers (media-only messages journaled so runs pass them by).

Deletes go in batches of PRUNE_BATCH_SIZE rows, each batch its own short transaction, each found through
an index (the `Served by:` line of each prune_* query says which), so a prune never holds locks or a
snapshot for long and costs what it deletes, not the size of the table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from loguru import logger

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.domain.models import RunReport
from tg_parser.logging import redact
from tg_parser.stores.processing import ProcessingStore
from tg_parser.stores.retention import RetentionStore

KINDS = ("runs", "ingest_runs", "run_requests", "versions", "leases")


@dataclass(frozen=True)
class RetentionPolicy:
    runs_days: int = 90
    ingest_runs_days: int = 90
    run_requests_days: int = 30
    versions_days: int = 365
    versions_keep: int = 10
    batch_size: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetentionPolicy:
        policy = cls(
            runs_days=settings.prune_runs_days,
            ingest_runs_days=settings.prune_ingest_runs_days,
            run_requests_days=settings.prune_run_requests_days,
            versions_days=settings.prune_versions_days,
            versions_keep=settings.prune_versions_keep,
            batch_size=settings.prune_batch_size,
        )
        return replace(policy, **{key: value for key, value in overrides.items() if value is not None})

    def as_dict(self) -> dict[str, int]:
        return {
            "runs_days": self.runs_days,
            "ingest_runs_days": self.ingest_runs_days,
            "run_requests_days": self.run_requests_days,
            "versions_days": self.versions_days,
            "versions_keep": self.versions_keep,
            "batch_size": self.batch_size,
        }


@dataclass
class KindResult:
    kind: str
    enabled: bool
    cutoff: datetime | None
    rows: int = 0  # deleted, or (dry run) that would be deleted
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "enabled": self.enabled,
            "cutoff": self.cutoff,
            "rows": self.rows,
            "batches": self.batches,
        }


@dataclass
class PruneReport:
    dry_run: bool
    policy: RetentionPolicy
    started_at: datetime
    kinds: list[KindResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(kind.rows for kind in self.kinds)

    def counts(self) -> dict[str, int]:
        return {kind.kind: kind.rows for kind in self.kinds}

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "policy": self.policy.as_dict(),
            "kinds": [kind.as_dict() for kind in self.kinds],
            "total": self.total,
            "seconds": round(self.seconds, 3),
        }


def _cutoff(now: datetime, days: int) -> datetime | None:
    return None if days <= 0 else now - timedelta(days=days)


def prune(
    db: Database,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    kinds: tuple[str, ...] = KINDS,
    on_batch: Callable[[str, int], None] | None = None,
) -> PruneReport:
    """Delete (or with `dry_run` count) what `policy` says has aged out; see the module docstring.

    `on_batch(kind, rows)` is called after every batch deleted (progress, tests).
    """
    store = RetentionStore(db)
    now = now or store.now()
    started = time.perf_counter()
    report = PruneReport(dry_run=dry_run, policy=policy, started_at=now)
    batch = policy.batch_size
    days = {
        "runs": policy.runs_days,
        "ingest_runs": policy.ingest_runs_days,
        "run_requests": policy.run_requests_days,
        "versions": policy.versions_days,
    }
    for kind in KINDS:
        if kind not in kinds:
            continue
        cutoff = now if kind == "leases" else _cutoff(now, days[kind])
        result = KindResult(kind, cutoff is not None, cutoff)
        report.kinds.append(result)
        if cutoff is None:
            continue

        step = partial(_step, result, on_batch)
        if kind == "runs":
            if dry_run:
                result.rows = store.count_runs(cutoff)
            else:
                _repeat(db, partial(store.prune_runs, cutoff, batch), batch, step)
        elif kind == "run_requests":
            if dry_run:
                result.rows = store.count_run_requests(cutoff)
            else:
                _repeat(db, partial(store.prune_run_requests, cutoff, batch), batch, step)
        elif kind == "leases":
            if dry_run:
                result.rows = store.count_expired_leases(cutoff)
            else:
                _repeat(db, partial(store.prune_expired_leases, cutoff, batch), batch, step)
        elif kind == "ingest_runs":
            below = store.ingest_runs_bound(cutoff)
            if dry_run:
                result.rows = store.count_ingest_runs(cutoff, below)
            else:
                delete = partial(_ingest_runs_batch, store, cutoff, below, batch)
                _repeat_by_id(db, delete, batch, step)
        else:  # versions
            keep = policy.versions_keep
            below = store.versions_bound(cutoff)
            if dry_run:
                result.rows = store.count_versions(cutoff, keep, below)
            else:
                delete = partial(_versions_batch, store, cutoff, keep, below, batch)
                _repeat_by_id(db, delete, batch, step)
    report.seconds = time.perf_counter() - started
    return report


def _step(result: KindResult, on_batch: Callable[[str, int], None] | None, rows: int) -> None:
    result.rows += rows
    result.batches += 1
    if on_batch is not None:
        on_batch(result.kind, rows)


def _repeat(db: Database, delete: Callable[[], int], batch: int, step: Callable[[int], None]) -> None:
    """One transaction per batch, until a batch deletes fewer rows than asked."""
    while True:
        with db.transaction():
            rows = delete()
        step(rows)
        if rows < batch:
            return


def _repeat_by_id(
    db: Database, delete: Callable[[int], list[int]], batch: int, step: Callable[[int], None]
) -> None:
    """Batches along an id range: each starts after the largest id the previous one deleted."""
    after = 0
    while True:
        with db.transaction():
            ids = delete(after)
        step(len(ids))
        if len(ids) < batch:
            return
        after = max(ids)


def _ingest_runs_batch(
    store: RetentionStore, cutoff: datetime, below: int, batch: int, after: int
) -> list[int]:
    return store.prune_ingest_runs(cutoff, after, below, batch)


def _versions_batch(
    store: RetentionStore, cutoff: datetime, keep: int, below: int, batch: int, after: int
) -> list[int]:
    return store.prune_versions(cutoff, keep, after, below, batch)


def record_prune(db: Database, report: PruneReport, run_id: str | None = None) -> str:
    """Store a finished (not dry) prune as a run report of kind `prune`: what `db prune` printed, and
    what the automatic step counts its interval from. Returns the run id."""
    store = ProcessingStore(db)
    run = RunReport(
        run_id=run_id or f"prune-{uuid.uuid4().hex[:12]}",
        kind="prune",
        started_at=report.started_at,
        params=report.policy.as_dict(),
    )
    store.start_run(run)
    store.finish_run(
        run.model_copy(update={"status": "ok", "counts": report.counts(), "finished_at": datetime.now(UTC)})
    )
    return run.run_id


def auto_prune(db: Database, settings: Settings, *, now: datetime | None = None) -> PruneReport | None:
    """The automatic step of `run` and `worker`: prune when PRUNE_AUTO_HOURS is not 0 and the last prune
    (by anyone, on any host: the latest run report of kind `prune`) started at least that long ago.
    Returns the report, or None when it was not due. Errors are logged, never raised: retention is a
    side job and must not fail a pipeline cycle or stop a worker."""
    if settings.prune_auto_hours <= 0:
        return None
    try:
        store = RetentionStore(db)
        now = now or store.now()
        last = store.last_prune()
        if last is not None and now - last < timedelta(hours=settings.prune_auto_hours):
            return None
        report = prune(db, RetentionPolicy.from_settings(settings), now=now)
        record_prune(db, report)
    except Exception as exc:
        logger.warning("automatic prune failed: {}: {}", type(exc).__name__, redact(str(exc))[:300])
        return None
    if report.total:
        logger.info(
            "automatic prune: {} row(s) deleted ({})",
            report.total,
            ", ".join(f"{kind.kind} {kind.rows}" for kind in report.kinds if kind.rows),
        )
    return report
