"""Orphan checks for the references between stores that are not foreign keys: planted orphans are found on
both dialects, page after page, and `tg-parser db check-orphans` reports them (exit 1 on an error-level one)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from support.cli import db_env
from support.process_data import seed_messages
from test_first_hour import invoke

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.domain.models import ProcessedDocument, Source, TopicCard
from tg_parser.stores import IngestionStore, ProcessingStore
from tg_parser.stores.orphans import CHECKS, OrphanStore
from tg_parser.stores.topics import TopicStore

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def _document(ref: str, channel_id: int) -> ProcessedDocument:
    return ProcessedDocument(
        source_ref=ref,
        channel_id=channel_id,
        message_date=NOW,
        text_clean="text",
        model="extractive",
        prompt_id="p",
        pipeline_version="1",
    )


def _plant(db: Database) -> dict[str, object]:
    ingestion = IngestionStore(db)
    ingestion.add_source(Source(source_id="kept", username="kept"))
    ingestion.add_source(Source(source_id="removed", username="removed"))
    kept = seed_messages(db, 5, channel_id=100, source_id="kept")
    gone = seed_messages(db, 3, channel_id=200, source_id="removed")
    ingestion.start_run("removed", "run-1")
    ingestion.remove_source("removed")  # its messages and attempts stay, on purpose

    processing = ProcessingStore(db)
    missing = (
        "tg:100:post:999"  # a document whose raw message is not there (a raw store restored from backup)
    )
    processing.upsert_documents([_document(ref, 100) for ref in kept] + [_document(missing, 100)])
    processing.record_failure(
        "tg:300:post:1", channel_id=300, error_class="x", error_message="no raw row", permanent=True
    )
    topics = TopicStore(db)
    topics.replace_channel_topics(
        100, [TopicCard(topic_id="t-100", channel_id=100, title="kept", anchors=[])], []
    )
    # Channel 555's documents are gone (reprocessed elsewhere, pruned): its topic card is an orphan.
    topics.replace_channel_topics(
        555, [TopicCard(topic_id="t-555", channel_id=555, title="stale", anchors=[])], []
    )
    return {"missing_doc": missing, "raw_of_removed": sorted(gone)[0]}


def test_planted_orphans_are_found_with_small_and_large_pages(db: Database) -> None:
    planted = _plant(db)
    store = OrphanStore(db)
    for batch in (2, 5000):  # 2: every check crosses several pages
        results = {r.check: r for r in store.check_all(batch=batch)}
        assert set(results) == {c.name for c in CHECKS}
        docs = results["documents_without_raw"]
        assert (docs.scanned, docs.orphans, docs.example) == (6, 1, planted["missing_doc"]), batch
        failures = results["failures_without_raw"]
        assert (failures.scanned, failures.orphans, failures.example) == (1, 1, "tg:300:post:1")
        raw = results["raw_without_source"]
        assert (raw.scanned, raw.orphans, raw.example, raw.severity) == (
            8,
            3,
            planted["raw_of_removed"],
            "info",
        )
        runs = results["ingest_runs_without_source"]
        assert (runs.scanned, runs.orphans, runs.severity) == (1, 1, "info")
        assert results["leases_without_raw"].orphans == 0
        topics = results["topics_without_documents"]
        assert (topics.scanned, topics.orphans, topics.example) == (2, 1, "t-555")


def test_a_clean_install_has_no_orphans(db: Database) -> None:
    IngestionStore(db).add_source(Source(source_id="kept", username="kept"))
    refs = seed_messages(db, 3, channel_id=100, source_id="kept")
    ProcessingStore(db).upsert_documents([_document(ref, 100) for ref in refs])
    assert all(r.orphans == 0 for r in OrphanStore(db).check_all(batch=2))


def test_check_orphans_command_reports_and_exits_1_on_an_error_level_orphan(
    settings: Settings, db: Database
) -> None:
    env = db_env(settings)
    clean = invoke(["db", "check-orphans", "--json"], env)
    assert clean.exit_code == 0, clean.output
    assert all(r["orphans"] == 0 for r in json.loads(clean.stdout))

    planted = _plant(db)
    result = invoke(["db", "check-orphans", "--json", "--batch", "3"], env)
    assert result.exit_code == 1, result.output
    rows = {r["check"]: r for r in json.loads(result.stdout)}
    assert rows["documents_without_raw"]["orphans"] == 1
    assert rows["documents_without_raw"]["example"] == planted["missing_doc"]
    assert "DELETE FROM processing.processed_documents" in rows["documents_without_raw"]["fix"]

    text = invoke(["db", "check-orphans"], env)
    assert text.exit_code == 1
    assert "documents_without_raw: 1 processed documents whose raw message is missing" in text.stdout
