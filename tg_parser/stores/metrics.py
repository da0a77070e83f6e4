"""MetricsStore: the pipeline gauges `/metrics` reads from the database on each scrape."""

from __future__ import annotations

from typing import Any

from tg_parser.stores.base import Store


class MetricsStore(Store):
    def gauges(self) -> dict[str, Any]:
        """Messages, documents, failures by class (skips apart), live leases and topics, as plain numbers."""
        failures = [
            {"error_class": row["error_class"], "permanent": bool(row["permanent"]), "n": int(row["n"])}
            for row in self.db.fetch_all("metrics_failures_by_class")
        ]
        return {
            "messages": int(self.db.fetch_scalar("metrics_raw_messages") or 0),
            "documents": int(self.db.fetch_scalar("metrics_documents") or 0),
            "failures": failures,
            "skipped": int(self.db.fetch_scalar("metrics_skipped") or 0),
            "live_leases": int(self.db.fetch_scalar("metrics_live_leases", {"now": self.now()}) or 0),
            "topics": int(self.db.fetch_scalar("metrics_topics") or 0),
        }
