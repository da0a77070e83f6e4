"""The migration report: one row per table plus totals, printable and as JSON (no secrets in either)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tg_parser.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from tg_parser.transfer.scan import Offender
from tg_parser.transfer.verify import Difference

COLUMNS = (
    "table",
    "rows_source",
    "rows_target",
    "bytes",
    "checksum_source",
    "checksum_target",
    "match",
    "seconds",
    "rows_per_s",
)


@dataclass
class TableReport:
    table: str
    rows_source: int
    checksum_source: str
    rows_target: int | None = None
    checksum_target: str | None = None
    match: bool | None = None
    bytes: int = 0
    seconds: float = 0.0
    repaired_cells: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows_source / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows_source": self.rows_source,
            "rows_target": self.rows_target,
            "bytes": self.bytes,
            "checksum_source": self.checksum_source,
            "checksum_target": self.checksum_target,
            "match": self.match,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "repaired_cells": self.repaired_cells,
            "differences": [d.as_dict() for d in self.differences],
        }


@dataclass
class TransferReport:
    mode: str  # "migrate" | "dry-run" | "verify"
    source: str
    target: str
    stores: list[str]
    status: str = "running"  # ok | mismatch | offenders | refused | failed
    committed: bool = False
    consistency: str = ""
    tables: list[TableReport] = field(default_factory=list)
    offenders: list[Offender] = field(default_factory=list)
    offenders_total: int = 0
    repairs: dict[str, dict[str, int]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_exit_code: int = EXIT_FAILURE

    @property
    def exit_code(self) -> int:
        """0 when every table matches; the error's own code when refused or failed; 1 otherwise."""
        if self.status == "ok":
            return EXIT_OK
        if self.status in ("refused", "failed"):
            return self.error_exit_code or (EXIT_CONFIG if self.status == "refused" else EXIT_FAILURE)
        return EXIT_FAILURE

    def totals(self) -> dict[str, Any]:
        seconds = sum(t.seconds for t in self.tables)
        rows = sum(t.rows_source for t in self.tables)
        return {
            "table": "TOTAL",
            "rows_source": rows,
            "rows_target": sum(t.rows_target or 0 for t in self.tables),
            "bytes": sum(t.bytes for t in self.tables),
            "checksum_source": "",
            "checksum_target": "",
            "match": all(t.match for t in self.tables) if self.tables else None,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.status,
            "committed": self.committed,
            "source": self.source,
            "target": self.target,
            "stores": self.stores,
            "consistency": self.consistency,
            "tables": [t.as_dict() for t in self.tables],
            "totals": self.totals(),
            "offenders": [o.as_dict() for o in self.offenders],
            "offenders_total": self.offenders_total,
            "repairs": self.repairs,
            "repaired_cells": sum(sum(c.values()) for c in self.repairs.values()),
            "phases_seconds": {k: round(v, 3) for k, v in self.phases.items()},
            "notes": self.notes,
            "error": self.error,
        }

    def table_rows(self, checksum_width: int = 16) -> list[dict[str, Any]]:
        """Rows for a terminal table (checksums shortened; the JSON report has them in full)."""

        def short(value: str | None) -> str:
            if not value:
                return "-" if value is None else ""
            return value if len(value) <= checksum_width else value[:checksum_width] + "…"

        def match(value: bool | None) -> str:
            return "-" if value is None else ("yes" if value else "NO")

        rows = []
        for t in [*(t.as_dict() for t in self.tables), self.totals()]:
            rows.append(
                {
                    "table": t["table"],
                    "rows_source": str(t["rows_source"]),
                    "rows_target": "-" if t["rows_target"] is None else str(t["rows_target"]),
                    "bytes": _human_bytes(t["bytes"]),
                    "checksum_source": short(t["checksum_source"]),
                    "checksum_target": short(t["checksum_target"]),
                    "match": match(t["match"]),
                    "seconds": f"{t['seconds']:.2f}",
                    "rows_per_s": f"{t['rows_per_s']:.0f}",
                }
            )
        return rows


def _human_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"
