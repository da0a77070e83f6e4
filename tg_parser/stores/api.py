"""ApiStore: the HTTP API's keys (a hash of each secret, never the secret) and its shared rate-limit
counters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tg_parser.stores.base import Store

Row = dict[str, Any]


class ApiStore(Store):
    # --- keys -------------------------------------------------------------------------------------

    def add_key(self, key_id: str, name: str, scope: str, secret_hash: str) -> None:
        self.db.execute(
            "api_keys_insert",
            {
                "key_id": key_id,
                "name": name,
                "scope": scope,
                "secret_hash": secret_hash,
                "created_at": self.now(),
            },
        )

    def get_key(self, key_id: str) -> Row | None:
        return self.db.fetch_one("api_keys_get", {"key_id": key_id})

    def get_key_by_name(self, name: str) -> Row | None:
        return self.db.fetch_one("api_keys_get_by_name", {"name": name})

    def list_keys(self) -> list[Row]:
        return self.db.fetch_all("api_keys_list")

    def revoke_key(self, name: str, now: datetime | None = None) -> bool:
        """Revoke a key by name; False when there is no such active key."""
        return self.db.execute("api_keys_revoke", {"name": name, "now": now or self.now()}) > 0

    # --- rate limits ------------------------------------------------------------------------------

    def hit(self, key_id: str, route_group: str, window_start: int, n: int = 1) -> int:
        """Reserve `n` requests in the window; returns the window's count including them (all processes)."""
        row = self.db.fetch_one(
            "api_rate_hit",
            {"key_id": key_id, "route_group": route_group, "window_start": window_start, "n": n},
        )
        return int(row["hits"]) if row else n

    def prune_rate_windows(self, before: int) -> int:
        return self.db.execute("api_rate_prune", {"before": before})
