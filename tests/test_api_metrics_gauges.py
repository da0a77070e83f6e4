"""The database gauges of /metrics (api/metrics.py), on both dialects: journaled failures by class and
permanence (skips left out), queued runs by status, and the pool gauges where there is a pool
(PostgreSQL). The HTTP side and database_up through a real server are in test_api_probes.py."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tg_parser.api.metrics import HttpMetrics, render
from tg_parser.stores import ProcessingStore
from tg_parser.stores.run_queue import RunQueueStore


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_failures_and_runs_are_counted_per_label(db):
    processing = ProcessingStore(db)
    for i, (error_class, permanent) in enumerate(
        [("rate_limited", True), ("rate_limited", True), ("timeout", False)]
    ):
        processing.record_failure(
            f"tg:1:post:{i + 1}",
            channel_id=1,
            error_class=error_class,
            error_message="x",
            permanent=permanent,
        )
    processing.record_failure(
        "tg:1:post:9", channel_id=1, error_class="no_text", error_message="", permanent=True, skipped=True
    )
    runs = RunQueueStore(db)
    for run_id in ("r1", "r2"):
        runs.enqueue(run_id, ["export"], source_id=None, options={}, requested_by="test", webhook_url=None)

    got = samples(render(HttpMetrics(), lambda: db))
    assert got[("tg_parser_database_up", ())] == 1.0
    failures = {labels: value for (name, labels), value in got.items() if name == "tg_parser_failures"}
    assert failures == {
        (("error_class", "rate_limited"), ("permanent", "true")): 2.0,
        (("error_class", "timeout"), ("permanent", "false")): 1.0,
    }  # the skipped message is not a failure
    queued = {labels: value for (name, labels), value in got.items() if name == "tg_parser_runs"}
    assert queued[(("status", "queued"),)] == 2.0
    pool = {name for name, _ in got if name.startswith("tg_parser_db_pool_")}
    if db.dialect == "postgres":
        assert pool == {"tg_parser_db_pool_size", "tg_parser_db_pool_available", "tg_parser_db_pool_waiting"}
        assert got[("tg_parser_db_pool_size", ())] >= 1
    else:
        assert pool == set()  # one shared connection, no pool to report


def test_without_a_database_the_scrape_still_answers():
    got = samples(render(HttpMetrics(), lambda: None))
    assert got[("tg_parser_database_up", ())] == 0.0
    assert not any(name == "tg_parser_failures" for name, _ in got)
