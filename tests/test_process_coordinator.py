"""The process coordinator on both dialects, against the local OpenAI-compatible server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from support import llm_server as srv
from support.llm_server import LlmServer
from support.process_data import llm_settings, message_text, seed_messages
from support.waiting import wait_for

from tg_parser.db.connect import open_database
from tg_parser.llm import LlmClient, LlmConfig
from tg_parser.llm import errors as E
from tg_parser.processing import LlmDocumentProcessor, ProcessCoordinator, ProcessOptions
from tg_parser.processing.processor import PROCESSOR_VERSION
from tg_parser.stores import ProcessingStore
from tg_parser.stores.base import FAR_PAST


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def make_coordinator(db, settings, server, *, stop=None, **options) -> ProcessCoordinator:
    config = LlmConfig.from_settings(llm_settings(settings, server.base_url))
    client = LlmClient(config, backoff_base=0.01)
    return ProcessCoordinator(db, LlmDocumentProcessor.load(client), ProcessOptions(**options), stop=stop)


def run(db, settings, server, **options):
    coordinator = make_coordinator(db, settings, server, **options)
    try:
        return coordinator.run()
    finally:
        coordinator.processor.client.close()


# --- documents ----------------------------------------------------------------------------------------


def test_documents_are_written_once_with_model_prompt_version_and_tokens(db, settings, server):
    refs = seed_messages(db, 12)
    report = run(db, settings, server, concurrency=4, write_batch=5)
    store = ProcessingStore(db)
    assert report.status == "ok" and report.counts.processed == 12 and report.counts.failed == 0
    assert report.counts.requests == 12 and report.counts.claimed == 12
    assert store.count_documents() == 12
    document = store.get_document(refs[2])
    assert document.id == f"doc:{refs[2]}"
    assert document.channel_id == 100
    assert document.message_date == datetime(2025, 3, 1, 12, 3, tzinfo=UTC)
    assert document.text_clean == message_text(3)
    assert document.summary == "Message number 3: release notes for version 3.0 #python #release"
    assert document.topics == ["python", "release"]
    assert [(e.type, e.value) for e in document.entities] == [("hashtag", "#python"), ("hashtag", "#release")]
    assert document.language == "en"
    assert document.model == "gpt-5-mini"
    assert document.prompt_id.startswith("process_document:")
    assert document.pipeline_version == PROCESSOR_VERSION
    assert document.input_tokens > 0 and document.output_tokens > 0
    assert document.metadata["api"] == "responses" and document.metadata["attempts"] == 1
    assert set(server.counts_by_message().values()) == {1}
    assert store.leases() == []
    stored = store.get_run(report.run_id)
    assert stored.status == "ok" and stored.kind == "process"
    assert stored.counts["processed"] == 12 and stored.counts["input_tokens"] == report.counts.input_tokens
    assert stored.params["concurrency"] == 4 and stored.params["prompt_id"] == document.prompt_id


def test_a_second_run_selects_nothing(db, settings, server):
    seed_messages(db, 5)
    run(db, settings, server)
    report = run(db, settings, server)
    assert report.status == "ok" and report.counts.selected == 0 and report.counts.processed == 0
    assert len(server.requests) == 5


def test_force_reprocesses_and_replaces_the_documents(db, settings, server):
    refs = seed_messages(db, 4)
    run(db, settings, server)
    before = ProcessingStore(db).get_document(refs[0]).processed_at
    report = run(db, settings, server, force=True)
    assert report.counts.processed == 4
    assert ProcessingStore(db).count_documents() == 4
    assert ProcessingStore(db).get_document(refs[0]).processed_at > before
    assert set(server.counts_by_message().values()) == {2}


def test_limit_caps_the_messages_sent(db, settings, server):
    seed_messages(db, 10)
    report = run(db, settings, server, limit=3, concurrency=2)
    assert report.counts.processed == 3 and len(server.requests) == 3
    assert run(db, settings, server).counts.processed == 7


def test_source_and_channel_filters(db, settings, server):
    seed_messages(db, 3, channel_id=100, source_id="alpha")
    seed_messages(db, 2, channel_id=200, source_id="beta", text=lambda i: f"beta message {i}")
    assert run(db, settings, server, channel_id=200).counts.processed == 2
    assert all(r.message_text.startswith("beta") for r in server.requests)
    assert run(db, settings, server, source_id="alpha").counts.processed == 3
    assert ProcessingStore(db).count_documents() == 5


def test_candidates_are_paged_once_in_order(db, settings, server):
    refs = seed_messages(db, 11)
    report = run(db, settings, server, page_size=3, concurrency=2)
    assert report.counts.selected == 11 and report.counts.processed == 11
    seen = []
    after = None
    store = ProcessingStore(db)
    while True:
        page = store.select_candidates(limit=4, force=True, after=after)
        seen += [row["source_ref"] for row in page]
        if len(page) < 4:
            break
        after = (page[-1]["channel_id"], page[-1]["date"], page[-1]["source_ref"])
    assert seen == refs


# --- failures -----------------------------------------------------------------------------------------


def test_failures_are_journaled_and_permanence_decides_the_next_runs(db, settings, server):
    texts = {
        1: "rejected by the server",
        2: "server keeps failing",
        3: "model refuses this",
        4: "model breaks the schema",
        5: "a good message",
        6: "   ",
    }
    refs = seed_messages(db, 6, text=lambda i: texts[i])
    server.on("rejected by", srv.error(400, "context_length_exceeded"))
    server.on("keeps failing", srv.error(500, "boom"))
    server.on("refuses", srv.refusal)
    server.on("breaks the schema", srv.schema_violation)
    report = run(db, settings, server, concurrency=3)
    counts = report.counts
    assert report.status == "partial"
    assert (counts.processed, counts.failed, counts.skipped_no_text) == (1, 4, 1)
    assert counts.failures_by_class == {
        "bad_request": 1,
        "refusal": 1,
        "schema_invalid": 1,
        "server_error": 1,
    }
    assert (counts.failed_permanent, counts.failed_transient) == (3, 1)
    journal = {f.source_ref: f for f in ProcessingStore(db).failures()}
    # the media-only message is a skip, journaled apart: not in the failure list
    assert set(journal) == {refs[0], refs[1], refs[2], refs[3]}
    assert ProcessingStore(db).count_skipped() == 1
    assert journal[refs[0]].error_class == "bad_request" and journal[refs[0]].permanent
    assert "context_length_exceeded" in journal[refs[0]].error_message
    assert journal[refs[1]].error_class == "server_error" and not journal[refs[1]].permanent
    assert journal[refs[2]].permanent and journal[refs[3]].permanent
    assert all(f.run_id == report.run_id for f in journal.values())
    assert len(server.requests_for("keeps failing")) == 3  # 1 + LLM_MAX_RETRIES
    assert journal[refs[1]].attempts == 3  # the journal counts requests, not runs
    assert len(server.requests_for("breaks the schema")) == 2  # 1 + LLM_BAD_OUTPUT_RETRIES
    assert journal[refs[3]].attempts == 2
    assert len(server.requests_for("rejected by")) == 1  # permanent: not retried within the run
    assert not server.requests_for("   \n")  # an empty message is never sent
    assert ProcessingStore(db).leases() == []

    server.clear_rules()
    again = run(db, settings, server)
    assert again.counts.processed == 1  # only the transient failure is selected again
    assert ProcessingStore(db).get_document(refs[1]) is not None
    journal = {f.source_ref: f for f in ProcessingStore(db).failures()}
    assert refs[1] not in journal  # success deletes the failure row

    retried = run(db, settings, server, retry_failed=True)
    # --retry-failed takes the permanent failures again, not the media-only skip
    assert retried.counts.processed == 3 and retried.counts.skipped_no_text == 0
    assert ProcessingStore(db).failures() == [] and ProcessingStore(db).count_skipped() == 1


def test_a_rejected_key_stops_the_run_and_its_messages_stay_selectable(db, settings, server):
    seed_messages(db, 30)
    server.on("Message", srv.error(401, "invalid api key"))
    report = run(db, settings, server, concurrency=2)
    assert report.status == "failed" and isinstance(report.fatal, E.LlmAuthError)
    assert len(server.requests) <= 4  # stopped at once, not 30 rejected requests
    assert ProcessingStore(db).count_documents() == 0
    assert ProcessingStore(db).leases() == []
    assert all(not f.permanent for f in ProcessingStore(db).failures())
    assert ProcessingStore(db).get_run(report.run_id).status == "failed"
    server.clear_rules()
    assert run(db, settings, server).counts.processed == 30


def test_when_every_request_is_rejected_the_run_stops(db, settings, server):
    seed_messages(db, 40)
    server.on("Message", srv.error(400, "Unsupported parameter: 'reasoning.effort'"))
    report = run(db, settings, server, concurrency=2)
    assert report.status == "failed" and isinstance(report.fatal, E.LlmRejectedEverything)
    assert 10 <= len(server.requests) <= 14
    assert "reasoning.effort" in report.error


def run_with(db, settings, server, *, retry_failed=False, **overrides):
    config = LlmConfig.from_settings(llm_settings(settings, server.base_url, **overrides))
    client = LlmClient(config, backoff_base=0.01)
    coordinator = ProcessCoordinator(
        db, LlmDocumentProcessor.load(client), ProcessOptions(retry_failed=retry_failed, concurrency=2)
    )
    try:
        return coordinator.run()
    finally:
        client.close()


@pytest.mark.parametrize("bad_output_retries", [0, 1, 2])
def test_bad_output_costs_a_bounded_number_of_requests_per_message(db, settings, server, bad_output_retries):
    texts = {i: f"garbled answer {i}" if i <= 3 else f"off-schema answer {i}" for i in range(1, 7)}
    refs = seed_messages(db, 6, text=lambda i: texts[i])
    server.on("garbled answer", srv.not_json)
    server.on("off-schema answer", srv.schema_violation)
    per_message = 1 + bad_output_retries
    overrides = {"llm_max_retries": 3, "llm_bad_output_retries": bad_output_retries}
    report = run_with(db, settings, server, **overrides)
    assert report.counts.failed_permanent == 6 and report.counts.requests == 6 * per_message
    for i in range(1, 7):
        assert len(server.requests_for(texts[i])) == per_message
    journal = {f.source_ref: f for f in ProcessingStore(db).failures()}
    assert {journal[r].error_class for r in refs[:3]} == {"invalid_json"}
    assert {journal[r].error_class for r in refs[3:]} == {"schema_invalid"}
    assert all(f.permanent and f.attempts == per_message for f in journal.values())
    # A plain run leaves permanent failures alone; --retry-failed pays the same bounded price again and
    # the journal adds the requests up.
    assert run_with(db, settings, server, **overrides).counts.selected == 0
    assert len(server.requests) == 6 * per_message
    run_with(db, settings, server, retry_failed=True, **overrides)
    assert len(server.requests) == 12 * per_message
    assert all(f.attempts == 2 * per_message for f in ProcessingStore(db).failures())


def test_retry_failed_leaves_media_only_skips_alone(db, settings, server):
    texts = {1: "model breaks the schema", 2: "   ", 3: "a good message"}
    refs = seed_messages(db, 3, text=lambda i: texts[i])
    server.on("breaks the schema", srv.schema_violation, times=2)  # fails for good: 1 + 1 retry
    first = run_with(db, settings, server)
    assert first.counts.skipped_no_text == 1 and first.counts.failed_permanent == 1
    assert ProcessingStore(db).count_skipped() == 1
    server.clear_rules()
    retried = run_with(db, settings, server, retry_failed=True)
    assert retried.counts.processed == 1 and len(server.requests_for("breaks the schema")) == 3
    assert retried.counts.skipped_no_text == 0  # the skip is not selected, not journaled again
    assert ProcessingStore(db).count_skipped() == 1 and ProcessingStore(db).failures() == []
    assert ProcessingStore(db).get_document(refs[0]) is not None
    assert ProcessingStore(db).get_document(refs[1]) is None
    assert not server.requests_for("   \n")  # the empty message was never sent


# --- leases -------------------------------------------------------------------------------------------


def test_live_leases_of_another_worker_are_respected_and_lapsed_ones_taken_over(db, settings, server):
    refs = seed_messages(db, 5)
    store = ProcessingStore(db)
    now = datetime.now(UTC)
    assert store.claim(refs[:2], "live-worker", timedelta(hours=1)) == refs[:2]
    assert (
        store.claim(refs[2:3], "dead-worker", timedelta(seconds=5), now=now - timedelta(minutes=1))
        == refs[2:3]
    )
    report = run(db, settings, server)
    assert report.counts.processed == 3  # the lapsed lease of a dead worker is taken over
    assert {r.message_text for r in server.requests} == {message_text(3), message_text(4), message_text(5)}
    assert {lease.source_ref for lease in store.leases()} == set(refs[:2])
    store.release(refs[:2], "live-worker")
    assert run(db, settings, server).counts.processed == 2


def test_unclaim_done_gives_back_leases_on_documents_already_written(db, settings, server):
    refs = seed_messages(db, 2)
    run(db, settings, server, limit=1)
    store = ProcessingStore(db)
    claimed = store.claim(refs, "w1", timedelta(minutes=5), force=True)
    assert claimed == refs
    assert store.unclaim_done(claimed, "w1", FAR_PAST) == [refs[0]]
    assert [lease.source_ref for lease in store.leases()] == [refs[1]]
    assert store.unclaim_done([refs[1]], "w1", FAR_PAST) == []


def test_in_flight_leases_are_renewed_so_a_second_worker_never_takes_them(db, settings, server, store_clock):
    seed_messages(db, 4)
    server.latency = 1.0
    first = make_coordinator(db, settings, server, concurrency=4, lease_ttl=0.4)
    thread = threading.Thread(target=first.run)
    thread.start()
    store = ProcessingStore(db)
    wait_for(lambda: len(server.requests) >= 4, what="the first worker's requests")
    store_clock.advance(0.6)  # longer than the TTL: only renewal keeps the leases alive

    def renewed() -> bool:
        leases = store.leases()
        return len(leases) == 4 and all(lease.expires_at > store_clock.now() for lease in leases)

    wait_for(renewed, timeout=10, what="the first worker to renew its leases")
    second_db = open_database(settings)
    try:
        report = run(second_db, settings, server, concurrency=4, lease_ttl=0.4)
    finally:
        second_db.close()
    thread.join()
    assert report.counts.claimed == 0
    assert set(server.counts_by_message().values()) == {1}
    assert ProcessingStore(db).count_documents() == 4


# --- stopping -----------------------------------------------------------------------------------------


def test_stop_keeps_finished_documents_and_releases_in_flight_ones(db, settings, server):
    seed_messages(db, 12)
    server.latency = 0.3
    stop = threading.Event()
    coordinator = make_coordinator(db, settings, server, stop=stop, concurrency=2, flush_interval=0.05)
    store = ProcessingStore(db)

    def stop_after_two() -> None:
        probe = open_database(settings)
        try:
            wait_for(lambda: ProcessingStore(probe).count_documents() >= 2, what="two documents")
        finally:
            probe.close()
            stop.set()

    threading.Thread(target=stop_after_two, daemon=True).start()
    report = coordinator.run()
    coordinator.processor.client.close()
    written = store.count_documents()
    assert report.status == "interrupted"
    assert 2 <= written < 12 and report.counts.processed == written
    assert report.counts.discarded >= 1
    assert store.leases() == []
    assert store.get_run(report.run_id).status == "interrupted"
    for document in store.stream_documents():
        assert document.text_clean and document.model == "gpt-5-mini"
    server.latency = 0.0
    rest = run(db, settings, server)
    assert rest.counts.processed == 12 - written
    assert store.count_documents() == 12


def test_progress_is_reported(db, settings, server):
    seed_messages(db, 6)
    seen = []
    coordinator = make_coordinator(db, settings, server, concurrency=2)
    coordinator.on_progress = lambda counts: seen.append(counts.claimed)
    coordinator.run()
    coordinator.processor.client.close()
    assert seen and max(seen) == 6


# --- chunked hand-off (a fast processor) ---------------------------------------------------------------


def test_chunked_hand_off_processes_each_message_once_and_restores_the_collector(db):
    # Work goes to the workers `hand_off` messages at a time, in chunks that do not divide the claims
    # nor the writes; a media-only message inside a chunk is journaled alone, the rest are written.
    import gc

    from tg_parser.processing.extractive import ExtractiveDocumentProcessor

    texts = {i: "" if i % 7 == 0 else f"**Item {i}** #tag{i % 3} https://ex.com/{i}" for i in range(1, 41)}
    refs = seed_messages(db, 40, text=texts.__getitem__)
    before = gc.get_threshold()
    options = ProcessOptions(
        concurrency=2, claim_batch=9, write_batch=4, hand_off=3, gc_thresholds=(before[0] + 123, 5, 5)
    )
    report = ProcessCoordinator(db, ExtractiveDocumentProcessor(), options).run()
    assert gc.get_threshold() == before
    empty = [ref for i, ref in enumerate(refs, start=1) if not texts[i]]
    assert report.status == "ok"
    assert report.counts.processed == 40 - len(empty) and report.counts.skipped_no_text == len(empty)
    assert report.counts.claimed == 40 and report.counts.requests == 40 - len(empty)
    store = ProcessingStore(db)
    documents = {d.source_ref: d for d in store.stream_documents()}
    assert sorted(documents) == sorted(set(refs) - set(empty))
    assert documents[refs[0]].text_clean == "Item 1 #tag1 https://ex.com/1"
    assert [e.value for e in documents[refs[0]].entities] == ["#tag1", "https://ex.com/1"]
    assert store.leases() == [] and store.count_pending() == 0
