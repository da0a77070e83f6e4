"""`tg-parser process` through click, on both dialects, against the local OpenAI-compatible server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from support import llm_server as srv
from support.llm_server import LlmServer
from support.process_data import cli_env, seed_messages

from tg_parser.cli.main import cli
from tg_parser.domain.models import Source
from tg_parser.stores import IngestionStore, ProcessingStore


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, ["process", *args], env=env, catch_exceptions=False)


def test_process_writes_documents_and_prints_the_report(db, settings, server):
    seed_messages(db, 8)
    result = invoke(cli_env(settings, server.base_url), "--concurrency", "3")
    assert result.exit_code == 0, result.output
    assert "ok. 8 document(s) written, 0 failed" in result.stdout
    assert "tokens in" in result.stdout and "requests 8 (retries 0)" in result.stdout
    assert ProcessingStore(db).count_documents() == 8
    (stored,) = ProcessingStore(db).recent_runs("process")
    assert stored.status == "ok" and stored.counts["processed"] == 8
    assert stored.params["api"] == "responses" and stored.params["pipeline_version"]


def test_json_report(db, settings, server):
    seed_messages(db, 3)
    result = invoke(cli_env(settings, server.base_url), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["kind"] == "process"
    assert report["counts"]["processed"] == 3 and report["counts"]["input_tokens"] > 0
    assert report["counts"]["duration_s"] >= 0 and report["started_at"].endswith("Z")
    assert report["params"]["model"] == "gpt-5-mini"


def test_exit_status_is_1_when_a_message_failed(db, settings, server):
    seed_messages(db, 4, text=lambda i: "please refuse" if i == 2 else f"fine {i}")
    server.on("please refuse", srv.refusal)
    result = invoke(cli_env(settings, server.base_url))
    assert result.exit_code == 1
    assert "partial. 3 document(s) written, 1 failed" in result.stdout
    assert "refusal: 1" in result.stdout


def test_a_bad_key_exits_3_with_one_line_and_no_secret(db, settings, server):
    seed_messages(db, 5)
    server.on("Message", srv.error(401, "Incorrect API key provided"))
    result = invoke(cli_env(settings, server.base_url, OPENAI_API_KEY="sk-do-not-print-me"))
    assert result.exit_code == 3
    assert "Error: the LLM endpoint refused the credentials (401)" in result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    assert "sk-do-not-print-me" not in result.output + result.stderr
    assert "Traceback" not in result.stderr


def test_missing_key_for_openai_is_a_configuration_error(db, settings):
    seed_messages(db, 1)
    result = invoke(cli_env(settings), "--processor", "llm")
    assert result.exit_code == 3
    assert "OPENAI_API_KEY is not set" in result.stderr


def test_without_an_endpoint_the_extractive_processor_runs_and_says_so(db, settings):
    seed_messages(db, 3)
    result = invoke(cli_env(settings))
    assert result.exit_code == 0, result.output
    assert "processor: extractive (no LLM endpoint configured" in result.stderr
    assert {d.model for d in ProcessingStore(db).stream_documents()} == {"extractive"}


def test_dry_run_counts_and_estimates_without_calling_anything(db, settings, server):
    seed_messages(db, 6)
    seed_messages(db, 1, first_id=50, text=lambda i: "")
    result = invoke(cli_env(settings, server.base_url), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.stdout)
    assert estimate["messages"] == 6 and estimate["skipped_no_text"] == 1
    assert estimate["estimated_input_tokens"] > 6 * 300  # instructions and schema go with every message
    assert estimate["max_output_tokens"] == 6 * 2000
    assert server.requests == []
    assert ProcessingStore(db).leases() == [] and ProcessingStore(db).recent_runs() == []


def test_dry_run_needs_no_key_and_respects_limit(db, settings):
    seed_messages(db, 6)
    result = invoke(cli_env(settings), "--dry-run", "--limit", "4", "--processor", "llm")
    assert result.exit_code == 0, result.output
    assert "Would process 4 message(s) with gpt-5-mini" in result.stdout
    assert "Nothing was sent." in result.stdout


def test_channel_by_username_and_source_filters(db, settings, server):
    IngestionStore(db).add_source(Source(source_id="news", username="newsroom", channel_id=200))
    seed_messages(db, 2, channel_id=100)
    seed_messages(db, 3, channel_id=200, source_id="news", text=lambda i: f"news item {i}")
    env = cli_env(settings, server.base_url)
    result = invoke(env, "--channel", "@newsroom", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["processed"] == 3
    assert invoke(env, "--source", "news").exit_code == 0
    assert invoke(env, "--channel", "100", "--json").exit_code == 0
    assert ProcessingStore(db).count_documents() == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nope"], "no source 'nope'"),
        (["--channel", "@unknown_channel"], "no source with username @unknown_channel"),
        (["--source", "a", "--channel", "1"], "--source and --channel are exclusive"),
        (["--channel", "t.me/+invite"], "invite link"),
    ],
)
def test_bad_filters_are_usage_errors(settings, server, args, message):
    result = invoke(cli_env(settings, server.base_url), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_list_failures(db, settings, server):
    seed_messages(db, 2, text=lambda i: "bad one" if i == 1 else "good one")
    server.on("bad one", srv.error(400, "context_length_exceeded"))
    env = cli_env(settings, server.base_url)
    assert invoke(env).exit_code == 1
    table = invoke(env, "--list-failures")
    assert table.exit_code == 0
    assert "bad_request" in table.stdout and "context_length_exceeded" in table.stdout
    rows = json.loads(invoke(env, "--list-failures", "--json").stdout)
    assert [(r["source_ref"], r["permanent"]) for r in rows] == [("tg:100:post:1", True)]


def test_prompts_dir_overrides_the_packaged_prompt_and_changes_prompt_id(db, settings, server, tmp_path):
    seed_messages(db, 2)
    env = cli_env(settings, server.base_url)
    assert invoke(env, "--limit", "1").exit_code == 0
    (tmp_path / "process_document.system.md").write_text("Custom instructions.\n", encoding="utf-8")
    result = invoke({**env, "PROMPTS_DIR": str(tmp_path)}, "--json")
    assert result.exit_code == 0, result.output
    documents = list(ProcessingStore(db).stream_documents())
    assert len({d.prompt_id for d in documents}) == 2
    assert server.requests[-1].instructions == "Custom instructions."
    assert server.requests[0].instructions.startswith("You turn one Telegram channel message")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"process_document.user.md": "$text and $unknown_field"}, "unknown placeholder(s): $unknown_field"),
        ({"process_document.user.md": "cost: $5"}, "invalid placeholder"),
    ],
)
def test_a_broken_prompt_override_is_a_configuration_error(settings, server, tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = invoke({**cli_env(settings, server.base_url), "PROMPTS_DIR": str(tmp_path)})
    assert result.exit_code == 3
    assert message in result.stderr


def test_a_missing_prompts_dir_is_a_configuration_error(settings, server, tmp_path):
    result = invoke({**cli_env(settings, server.base_url), "PROMPTS_DIR": str(tmp_path / "nope")})
    assert result.exit_code == 3
    assert "PROMPTS_DIR" in result.stderr and "is not a directory" in result.stderr


@pytest.mark.slow
def test_extractive_run_over_several_batches_writes_every_document_once(db, settings):
    # More messages than one claim/page/write batch of the extractive processor (EXTRACTIVE_BATCH): every
    # document is written once, exactly as the processor builds it, media-only posts are journaled and
    # no lease is left behind.
    from datetime import UTC, datetime

    from tg_parser.processing.extractive import EXTRACTIVE_BATCH, ExtractiveDocumentProcessor

    count = EXTRACTIVE_BATCH + 150
    texts = {
        i: "" if i % 500 == 0 else f"**Item {i}** https://ex.com/{i}?utm_source=tg @chan_{i % 7} #tag{i % 3}"
        for i in range(1, count + 1)
    }
    refs = seed_messages(db, count, text=texts.__getitem__)
    result = invoke(cli_env(settings), "--processor", "extractive", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    empty = sum(1 for text in texts.values() if not text)
    assert report["counts"]["processed"] == count - empty
    assert report["counts"]["skipped_no_text"] == empty
    store = ProcessingStore(db)
    assert store.leases() == []
    documents = {d.source_ref: d for d in store.stream_documents()}
    assert len(documents) == count - empty
    processor = ExtractiveDocumentProcessor()
    fixed = datetime(2025, 1, 1, tzinfo=UTC)
    for i, ref in enumerate(refs, start=1):
        if not texts[i]:
            assert ref not in documents
            continue
        message = {
            "source_ref": ref,
            "channel_id": 100,
            "date": documents[ref].message_date,
            "text": texts[i],
            "message_type": "post",
        }
        expected = processor.process(message).model_copy(update={"processed_at": fixed})
        assert documents[ref].model_copy(update={"processed_at": fixed}) == expected
    again = invoke(cli_env(settings), "--processor", "extractive", "--json")
    assert json.loads(again.stdout)["counts"]["processed"] == 0
