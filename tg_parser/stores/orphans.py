"""Orphan checks: rows that point into another store at something that is not there.

References between stores are deliberately not foreign keys (on SQLite the stores are separate files; each
store can be rolled back, pruned or rebuilt on its own), so nothing stops them from dangling. Each check is
a named query (`sql/*/orphans.sql`) that reads one keyset page of the referencing table; the pages are read
one after another, each its own statement, so no transaction stays open across the whole table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tg_parser.stores.base import Store


@dataclass(frozen=True)
class OrphanCheck:
    name: str
    query: str
    describes: str  # what an orphan of this check is
    severity: str  # "error": should never happen; "info": kept on purpose, reported for the record
    first_key: Any  # keys start above this value
    fix: str


CHECKS: tuple[OrphanCheck, ...] = (
    OrphanCheck(
        "documents_without_raw",
        "orphans_documents_without_raw",
        "processed documents whose raw message is missing",
        "error",
        "",
        "restore the raw store, or delete the documents: DELETE FROM processing.processed_documents d "
        "WHERE NOT EXISTS (SELECT 1 FROM raw.raw_messages r WHERE r.source_ref = d.source_ref)",
    ),
    OrphanCheck(
        "failures_without_raw",
        "orphans_failures_without_raw",
        "processing failures of a raw message that is missing",
        "error",
        "",
        "DELETE FROM processing.processing_failures f "
        "WHERE NOT EXISTS (SELECT 1 FROM raw.raw_messages r WHERE r.source_ref = f.source_ref)",
    ),
    OrphanCheck(
        "leases_without_raw",
        "orphans_leases_without_raw",
        "work leases on a raw message that is missing",
        "info",
        "",
        "none needed: a lease lapses on its own",
    ),
    OrphanCheck(
        "topics_without_documents",
        "orphans_topics_without_documents",
        "topic cards of a channel without processed documents",
        "error",
        "",
        "run 'tg-parser topicize' (it removes the topics of channels that have no documents)",
    ),
    OrphanCheck(
        "raw_without_source",
        "orphans_raw_without_source",
        "raw messages of a removed source",
        "info",
        "",
        "none needed: 'tg-parser sources remove' keeps the messages on purpose",
    ),
    OrphanCheck(
        "ingest_runs_without_source",
        "orphans_ingest_runs_without_source",
        "ingestion attempts of a removed source",
        "info",
        0,
        "none needed: attempts are history",
    ),
)


@dataclass
class OrphanResult:
    check: str
    describes: str
    severity: str
    scanned: int
    orphans: int
    example: Any
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class OrphanStore(Store):
    def check(self, check: OrphanCheck, *, batch: int = 5000) -> OrphanResult:
        after, scanned, orphans, example = check.first_key, 0, 0, None
        while True:
            row = self.db.fetch_one(check.query, {"after": after, "batch": batch}) or {}
            if row.get("last_key") is None:
                break
            scanned += int(row["scanned"])
            orphans += int(row["orphans"])
            if example is None and row.get("example") is not None:
                example = row["example"]
            after = row["last_key"]
            if int(row["scanned"]) < batch:
                break
        return OrphanResult(check.name, check.describes, check.severity, scanned, orphans, example, check.fix)

    def check_all(self, *, batch: int = 5000) -> list[OrphanResult]:
        return [self.check(c, batch=batch) for c in CHECKS]
