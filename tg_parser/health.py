"""The health report: is every store reachable and its schema current? Shared by `tg-parser health` and
the HTTP API's readiness check, so both judge an install the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tg_parser import __version__
from tg_parser.config import Settings
from tg_parser.db import migrations
from tg_parser.db.base import Database
from tg_parser.db.connect import dialect_of
from tg_parser.db.resources import STORES
from tg_parser.errors import TgParserError


def collect_health(settings: Settings, open_db: Callable[[], Database]) -> dict[str, Any]:
    """Report on every store; `open_db` gives the (already open or newly opened) database, unchecked.

    `ok` is true only when every store answers a query and has no pending migration. Nothing raises:
    a failure is a finding, reported per store (or under `error` when the database cannot be opened).
    """
    report: dict[str, Any] = {
        "ok": False,
        "version": __version__,
        "database": dialect_of(settings),
        "stores": {},
    }
    try:
        db = open_db()  # refuses a missing SQLite file (not initialised) without creating it
    except TgParserError as exc:
        report["error"] = exc.one_line()
        return report
    report["where"] = db.describe()
    ok = True
    for store in STORES:
        entry: dict[str, Any] = {}
        try:
            have = db.applied_migrations(store)
            applied = have or []
            expected = migrations.expected_ids(db.dialect, store)
            entry["current"] = applied[-1] if applied else None
            entry["pending"] = [m for m in expected if m not in applied]
            if have is None:  # a PostgreSQL schema (or its bookkeeping) never created
                entry["error"] = "not initialised (no schema yet) — run 'tg-parser init'"
            elif not entry["pending"]:
                # With migrations pending the tables may not exist yet: the pending list is the finding.
                db.fetch_one(f"health_{store}")
            entry["reachable"] = True
        except Exception as exc:  # report every store, whatever failed
            entry["reachable"] = False
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            entry["error"] = f"{type(exc).__name__}: {first}"
        entry["ok"] = bool(entry.get("reachable")) and not entry.get("pending")
        ok = ok and entry["ok"]
        report["stores"][store] = entry
    report["pool" if db.dialect == "postgres" else "files"] = (
        db.stats() if db.dialect == "postgres" else db.stats()["files"]
    )
    report["ok"] = ok
    return report
