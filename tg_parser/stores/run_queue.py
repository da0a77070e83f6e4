"""RunQueueStore: runs requested through the API, queued until a worker claims and executes them.

A run is a row: queued → running (leased by one worker, renewed while it works) → succeeded or failed.
A worker that dies stops renewing; once its lease lapses any worker marks the run failed, so a run is
never left running. Claiming takes the oldest queued run with `FOR UPDATE SKIP LOCKED` on PostgreSQL
(any number of workers and hosts) and inside one write transaction on SQLite (one writer).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tg_parser.stores.base import FAR_FUTURE, Store

Row = dict[str, Any]
STATUSES = ("queued", "running", "succeeded", "failed")


class RunQueueStore(Store):
    def enqueue(
        self,
        run_id: str,
        steps: list[str],
        *,
        source_id: str | None,
        options: dict[str, Any],
        requested_by: str | None,
        webhook_url: str | None,
    ) -> Row:
        self.db.execute(
            "run_requests_insert",
            {
                "run_id": run_id,
                "steps": steps,
                "source_id": source_id,
                "options": options,
                "requested_by": requested_by,
                "webhook_url": webhook_url,
                "progress": {},
                "counts": {},
                "created_at": self.now(),
                "webhook_status": "pending" if webhook_url else None,
            },
        )
        row = self.get(run_id)
        assert row is not None
        return row

    def get(self, run_id: str) -> Row | None:
        return self.db.fetch_one("run_requests_get", {"run_id": run_id})

    def page(self, status: str | None, before: tuple[datetime, str] | None, limit: int) -> list[Row]:
        created, run_id = before if before is not None else (FAR_FUTURE, "")
        return self.db.fetch_all(
            "run_requests_page",
            {"status": status, "before_created": created, "before_id": run_id, "limit": limit},
        )

    def claim(self, worker_id: str, lease: timedelta) -> Row | None:
        """Lease the oldest queued run to this worker, or None when the queue is empty."""
        now = self.now()
        with self.db.transaction():
            return self.db.fetch_one(
                "run_requests_claim", {"worker_id": worker_id, "now": now, "expires_at": now + lease}
            )

    def renew(
        self, run_id: str, worker_id: str, lease: timedelta, progress: dict[str, Any], counts: dict[str, Any]
    ) -> bool:
        """Extend the lease and record progress; False when this worker no longer holds the run."""
        row = self.db.fetch_one(
            "run_requests_renew",
            {
                "run_id": run_id,
                "worker_id": worker_id,
                "expires_at": self.now() + lease,
                "progress": progress,
                "counts": counts,
            },
        )
        return row is not None

    def finish(
        self,
        run_id: str,
        worker_id: str,
        *,
        status: str,
        progress: dict[str, Any],
        counts: dict[str, Any],
        error: str | None,
    ) -> bool:
        row = self.db.fetch_one(
            "run_requests_finish",
            {
                "run_id": run_id,
                "worker_id": worker_id,
                "status": status,
                "finished_at": self.now(),
                "progress": progress,
                "counts": counts,
                "error": error,
            },
        )
        return row is not None

    def fail_lapsed(self) -> list[str]:
        """Fail the running runs whose lease lapsed (their worker died); returns their ids."""
        return [row["run_id"] for row in self.db.fetch_all("run_requests_fail_lapsed", {"now": self.now()})]

    def webhooks_due(self, limit: int = 20) -> list[Row]:
        """Finished runs whose webhook is pending and not being delivered by a worker."""
        return self.db.fetch_all("run_requests_webhook_due", {"limit": limit, "now": self.now()})

    def claim_webhook(self, run_id: str, lease: timedelta) -> Row | None:
        """Take a pending webhook for delivery (the run's row), or None when another worker has it."""
        now = self.now()
        return self.db.fetch_one(
            "run_requests_webhook_claim", {"run_id": run_id, "now": now, "expires_at": now + lease}
        )

    def record_webhook(self, run_id: str, status: str, error: str | None, attempts: int = 1) -> None:
        """Record a delivery's outcome after `attempts` POSTs, and release its claim."""
        self.db.execute(
            "run_requests_webhook_result",
            {"run_id": run_id, "webhook_status": status, "webhook_error": error, "attempts": attempts},
        )

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.db.fetch_all("run_requests_count_by_status"):
            counts[row["status"]] = int(row["n"])
        return counts
