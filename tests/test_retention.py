"""Retention (`db prune` and the automatic prune), skips apart from failures, on both dialects.

Rows are written "in the past" by moving the stores' clock (store_clock) back, so no test sleeps; a prune
must delete exactly the rows past their age, in batches, and nothing else; a dry run changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from support.cli import db_env
from support.waiting import ShiftedClock

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.domain.models import RawMessage, RunReport
from tg_parser.retention import KINDS, RetentionPolicy, auto_prune, prune, record_prune
from tg_parser.stores import RawStore
from tg_parser.stores.ingestion import IngestionStore
from tg_parser.stores.metrics import MetricsStore
from tg_parser.stores.processing import ProcessingStore
from tg_parser.stores.run_queue import RunQueueStore

DAY = 86_400.0
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def message(message_id: int, text: str = "hello", channel_id: int = -1001) -> RawMessage:
    return RawMessage.build(
        channel_id=channel_id,
        message_type="post",
        message_id=message_id,
        source_id="@chan",
        date=T0 + timedelta(minutes=message_id),
        text=text,
        raw_payload={"id": message_id, "message": text},
    )


def at(clock: ShiftedClock, days_ago: float) -> None:
    """Set the stores' clock `days_ago` days before the real time."""
    clock.offset = timedelta(days=-days_ago)


class Seeded:
    """What `seed` wrote, by kind: the rows a prune (90/90/30/365 days, keep 3) must delete, and keep."""

    def __init__(self) -> None:
        self.doomed: dict[str, set] = {kind: set() for kind in KINDS}
        self.kept: dict[str, set] = {kind: set() for kind in KINDS}


def seed(db: Database, clock: ShiftedClock) -> Seeded:
    seeded = Seeded()
    raw, processing = RawStore(db), ProcessingStore(db)
    ingestion, queue = IngestionStore(db), RunQueueStore(db)

    # runs: three older than 90 days (one still "running": its process is long gone), one recent
    for run_id, days_ago, finished in (("old-1", 100, True), ("old-2", 91, True), ("old-3", 200, False)):
        report = RunReport(run_id=run_id, kind="process", started_at=clock.now() - timedelta(days=days_ago))
        processing.start_run(report)
        if finished:
            processing.finish_run(
                report.model_copy(update={"status": "ok", "finished_at": report.started_at})
            )
        seeded.doomed["runs"].add(run_id)
    processing.start_run(
        RunReport(run_id="new-1", kind="topicize", started_at=clock.now() - timedelta(days=10))
    )
    seeded.kept["runs"].add("new-1")

    # ingest_runs: three attempts 100 days ago, two today
    at(clock, 100)
    for _ in range(3):
        seeded.doomed["ingest_runs"].add(ingestion.start_run("@chan", "r-old"))
    at(clock, 0)
    for _ in range(2):
        seeded.kept["ingest_runs"].add(ingestion.start_run("@chan", "r-new"))

    # run_requests: finished 40 days ago (succeeded, failed) go; queued, running and recent ones stay
    at(clock, 40)
    for run_id, status in (("q-ok", "succeeded"), ("q-failed", "failed")):
        queue.enqueue(run_id, ["process"], source_id=None, options={}, requested_by=None, webhook_url=None)
        assert queue.claim("w1", timedelta(minutes=5))["run_id"] == run_id  # type: ignore[index]
        assert queue.finish(run_id, "w1", status=status, progress={}, counts={}, error=None)
        seeded.doomed["run_requests"].add(run_id)
    queue.enqueue("q-running", ["process"], source_id=None, options={}, requested_by=None, webhook_url=None)
    assert queue.claim("w1", timedelta(days=100))["run_id"] == "q-running"  # type: ignore[index]
    queue.enqueue("q-queued", ["process"], source_id=None, options={}, requested_by=None, webhook_url=None)
    seeded.kept["run_requests"] |= {"q-running", "q-queued"}
    at(clock, 0)
    queue.enqueue("q-recent", ["process"], source_id=None, options={}, requested_by=None, webhook_url=None)
    seeded.kept["run_requests"].add("q-recent")

    # versions: m1 edited 5 times 400 days ago and twice today (keep 3: the two new and the newest old
    # one stay, four old ones go); m2 edited twice 400 days ago (fewer than 3: all stay); m3 today.
    at(clock, 401)
    raw.store_batch([message(1), message(2), message(3)])
    at(clock, 400)
    for n in range(5):
        raw.store_batch([message(1, f"m1 edit {n}")])
    for n in range(2):
        raw.store_batch([message(2, f"m2 edit {n}")])
    at(clock, 0)
    for n in range(2):
        raw.store_batch([message(1, f"m1 new edit {n}")])
    for n in range(4):
        raw.store_batch([message(3, f"m3 edit {n}")])
    m1 = [v.id for v in raw.versions(message(1).source_ref)]
    assert len(m1) == 7
    seeded.doomed["versions"] |= set(m1[:4])
    seeded.kept["versions"] |= set(m1[4:])
    for ref in (message(2).source_ref, message(3).source_ref):
        seeded.kept["versions"] |= {v.id for v in raw.versions(ref)}

    # leases: two taken an hour ago for five minutes (expired), one live
    at(clock, 1 / 24)
    refs = [message(i).source_ref for i in (1, 2, 3)]
    assert processing.claim(refs[:2], "crashed", timedelta(minutes=5)) == refs[:2]
    at(clock, 0)
    assert processing.claim(refs[2:], "alive", timedelta(hours=1)) == refs[2:]
    seeded.doomed["leases"] |= set(refs[:2])
    seeded.kept["leases"].add(refs[2])

    # never pruned: a real failure and a skip from long ago
    at(clock, 500)
    processing.record_failure(
        refs[0], channel_id=-1001, error_class="server_error", error_message="boom", permanent=False
    )
    processing.record_failure(
        refs[1], channel_id=-1001, error_class="no_text", error_message="", permanent=True, skipped=True
    )
    at(clock, 0)
    return seeded


def present(db: Database) -> dict[str, set]:
    """The rows of each prunable kind that exist now."""
    raw, processing = RawStore(db), ProcessingStore(db)
    queue = RunQueueStore(db)
    return {
        "runs": {run.run_id for run in processing.recent_runs(limit=1000) if run.kind != "prune"},
        "ingest_runs": {run.id for run in IngestionStore(db).recent_runs("@chan", limit=1000)},
        "run_requests": {
            run_id
            for run_id in ("q-ok", "q-failed", "q-running", "q-queued", "q-recent")
            if queue.get(run_id) is not None
        },
        "versions": {v.id for i in (1, 2, 3) for v in raw.versions(message(i).source_ref)},
        "leases": {lease.source_ref for lease in processing.leases()},
    }


POLICY = RetentionPolicy(
    runs_days=90, ingest_runs_days=90, run_requests_days=30, versions_days=365, versions_keep=3, batch_size=2
)


def test_prune_deletes_exactly_the_rows_past_their_age_in_batches(
    db: Database, store_clock: ShiftedClock
) -> None:
    seeded = seed(db, store_clock)
    before = present(db)
    for kind in KINDS:  # not vacuous: every kind has rows to delete and rows to keep
        assert seeded.doomed[kind] and seeded.kept[kind], kind
        assert before[kind] == seeded.doomed[kind] | seeded.kept[kind], kind

    dry = prune(db, POLICY, dry_run=True)
    assert dry.counts() == {kind: len(seeded.doomed[kind]) for kind in KINDS}
    assert present(db) == before  # a dry run changes nothing

    batches: list[tuple[str, int]] = []
    report = prune(db, POLICY, on_batch=lambda kind, rows: batches.append((kind, rows)))
    assert report.counts() == dry.counts()
    after = present(db)
    for kind in KINDS:
        assert after[kind] == seeded.kept[kind], kind
    # batches of 2: 3 runs → 2 + 1; 4 versions → 2 + 2 + 0 (the last batch finds the range empty)
    assert [rows for kind, rows in batches if kind == "runs"] == [2, 1]
    assert [rows for kind, rows in batches if kind == "versions"] == [2, 2, 0]
    assert all(rows <= POLICY.batch_size for _, rows in batches)

    # never pruned: raw messages, the failure journal and the skip marker (each kept apart)
    processing = ProcessingStore(db)
    assert RawStore(db).count() == 3
    assert [f.error_class for f in processing.failures()] == ["server_error"]
    assert processing.count_skipped() == 1
    assert prune(db, POLICY).total == 0  # nothing left to delete


def test_an_age_of_zero_keeps_that_kind_and_only_asks_for_kinds_given(
    db: Database, store_clock: ShiftedClock
) -> None:
    seeded = seed(db, store_clock)
    keep_versions = RetentionPolicy(versions_days=0, batch_size=100)
    report = prune(db, keep_versions, kinds=("versions", "leases"))
    assert [k.kind for k in report.kinds] == ["versions", "leases"]
    assert not report.kinds[0].enabled and report.kinds[0].rows == 0
    after = present(db)
    assert after["versions"] == seeded.doomed["versions"] | seeded.kept["versions"]
    assert after["leases"] == seeded.kept["leases"]
    assert after["runs"] == seeded.doomed["runs"] | seeded.kept["runs"]


def test_the_newest_version_is_always_kept(db: Database, store_clock: ShiftedClock) -> None:
    raw = RawStore(db)
    at(store_clock, 800)
    raw.store_batch([message(1)])
    raw.store_batch([message(1, "edited once")])
    at(store_clock, 0)
    (only,) = raw.versions(message(1).source_ref)
    prune(db, RetentionPolicy(versions_days=1, versions_keep=1), kinds=("versions",))
    assert [v.id for v in raw.versions(message(1).source_ref)] == [only.id]
    # and the next observation is still compared with it: the same text again is no new version
    assert raw.store_batch([message(1, "edited once")]).unchanged == 1


def test_auto_prune_runs_when_due_and_records_itself(
    db: Database, settings: Settings, store_clock: ShiftedClock
) -> None:
    seeded = seed(db, store_clock)
    assert auto_prune(db, settings.model_copy(update={"prune_auto_hours": 0})) is None
    assert present(db)["runs"] == seeded.doomed["runs"] | seeded.kept["runs"]  # off: nothing pruned

    first = auto_prune(db, settings)  # never pruned before: due
    assert first is not None and first.total > 0
    assert present(db)["leases"] == seeded.kept["leases"]
    (recorded,) = ProcessingStore(db).recent_runs(kind="prune")
    assert recorded.status == "ok" and recorded.counts["leases"] == 2
    assert auto_prune(db, settings) is None  # 24 h have not passed

    store_clock.advance(25 * 3600)
    assert auto_prune(db, settings) is not None
    assert len(ProcessingStore(db).recent_runs(kind="prune")) == 2


def test_skips_are_kept_apart_from_failures_in_the_journal_and_metrics(db: Database) -> None:
    processing = ProcessingStore(db)
    raw = RawStore(db)
    raw.store_batch([message(1), message(2, "")])
    refs = [message(i).source_ref for i in (1, 2)]
    processing.record_failure(
        refs[0], channel_id=-1001, error_class="server_error", error_message="x", permanent=True
    )
    processing.record_failure(
        refs[1], channel_id=-1001, error_class="no_text", error_message="", permanent=True, skipped=True
    )
    assert [f.source_ref for f in processing.failures()] == [refs[0]]
    assert processing.count_skipped() == 1
    gauges = MetricsStore(db).gauges()
    assert gauges["failures"] == [{"error_class": "server_error", "permanent": True, "n": 1}]
    assert gauges["skipped"] == 1
    # a skip still keeps its message out of the next run's candidates, as the journal row always did
    candidates = processing.select_candidates(limit=10)
    assert [c["source_ref"] for c in candidates] == []


def test_db_prune_cli_dry_run_json_then_prune(
    settings: Settings, db: Database, store_clock: ShiftedClock
) -> None:
    seeded = seed(db, store_clock)
    env = db_env(settings)
    args = ["db", "prune", "--versions-keep", "3", "--batch-size", "2"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.output)
    assert data["dry_run"] and data["run_id"] is None
    assert {k["kind"]: k["rows"] for k in data["kinds"]} == {kind: len(seeded.doomed[kind]) for kind in KINDS}
    assert present(db)["runs"] == seeded.doomed["runs"] | seeded.kept["runs"]

    done = CliRunner().invoke(cli, args, env=env)
    assert done.exit_code == 0, done.output
    assert f"deleted {sum(len(rows) for rows in seeded.doomed.values())} row(s)" in done.output
    assert present(db) == seeded.kept


def test_db_prune_bad_option_is_one_line(settings: Settings) -> None:
    result = CliRunner().invoke(cli, ["db", "prune", "--versions-keep", "0"], env=db_env(settings))
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "--versions-keep" in result.output


def test_record_prune_is_a_run_report(db: Database) -> None:
    report = prune(db, RetentionPolicy(), dry_run=False)
    run_id = record_prune(db, report)
    stored = ProcessingStore(db).get_run(run_id)
    assert stored is not None and stored.kind == "prune" and stored.params["versions_keep"] == 10


@pytest.mark.parametrize("kind", ["runs", "ingest_runs"])
def test_prune_with_nothing_stored_deletes_nothing(db: Database, kind: str) -> None:
    assert prune(db, RetentionPolicy(), kinds=(kind,)).total == 0
