"""RetentionStore: the batched deletes of `tg-parser db prune`, one named query per kind and batch."""

from __future__ import annotations

from datetime import datetime

from tg_parser.db.codec import parse_timestamp
from tg_parser.stores.base import Store

# An id above every stored one: the bound of an id range when no row is young enough to bound it.
ABOVE_ALL_IDS = 2**62


class RetentionStore(Store):
    """Each `prune_*` call deletes at most `batch` rows and returns what it deleted; the caller runs each
    call in its own transaction and repeats until a batch comes back short (see tg_parser/retention.py).
    Each `count_*` call says how many rows the deletes would remove, for a dry run."""

    # --- processing -------------------------------------------------------------------------------

    def prune_runs(self, cutoff: datetime, batch: int) -> int:
        return self.db.execute("prune_runs", {"cutoff": cutoff, "batch": batch})

    def count_runs(self, cutoff: datetime) -> int:
        return int(self.db.fetch_scalar("prune_count_runs", {"cutoff": cutoff}) or 0)

    def prune_run_requests(self, cutoff: datetime, batch: int) -> int:
        return self.db.execute("prune_run_requests", {"cutoff": cutoff, "batch": batch})

    def count_run_requests(self, cutoff: datetime) -> int:
        return int(self.db.fetch_scalar("prune_count_run_requests", {"cutoff": cutoff}) or 0)

    def prune_expired_leases(self, now: datetime, batch: int) -> int:
        return self.db.execute("prune_expired_leases", {"now": now, "batch": batch})

    def count_expired_leases(self, now: datetime) -> int:
        return int(self.db.fetch_scalar("prune_count_expired_leases", {"now": now}) or 0)

    def last_prune(self) -> datetime | None:
        """When the last prune (run report of kind `prune`) started, or None."""
        value = self.db.fetch_scalar("prune_last_run")
        if isinstance(value, str):  # MAX() over SQLite's timestamp text has no declared type
            return parse_timestamp(value)
        return value

    # --- raw --------------------------------------------------------------------------------------

    def versions_bound(self, cutoff: datetime) -> int:
        value = self.db.fetch_scalar("prune_versions_bound", {"cutoff": cutoff})
        return ABOVE_ALL_IDS if value is None else int(value)

    def prune_versions(
        self, cutoff: datetime, keep: int, after_id: int, below_id: int, batch: int
    ) -> list[int]:
        rows = self.db.fetch_all(
            "prune_versions",
            {"cutoff": cutoff, "keep": keep, "after_id": after_id, "below_id": below_id, "batch": batch},
        )
        return [int(row["id"]) for row in rows]

    def count_versions(self, cutoff: datetime, keep: int, below_id: int) -> int:
        return int(
            self.db.fetch_scalar(
                "prune_count_versions", {"cutoff": cutoff, "keep": keep, "below_id": below_id}
            )
            or 0
        )

    # --- ingestion --------------------------------------------------------------------------------

    def ingest_runs_bound(self, cutoff: datetime) -> int:
        value = self.db.fetch_scalar("prune_ingest_runs_bound", {"cutoff": cutoff})
        return ABOVE_ALL_IDS if value is None else int(value)

    def prune_ingest_runs(self, cutoff: datetime, after_id: int, below_id: int, batch: int) -> list[int]:
        rows = self.db.fetch_all(
            "prune_ingest_runs",
            {"cutoff": cutoff, "after_id": after_id, "below_id": below_id, "batch": batch},
        )
        return [int(row["id"]) for row in rows]

    def count_ingest_runs(self, cutoff: datetime, below_id: int) -> int:
        return int(
            self.db.fetch_scalar("prune_count_ingest_runs", {"cutoff": cutoff, "below_id": below_id}) or 0
        )
