"""`tg-parser runs list|show` and the estimated cost, through click on both dialects: a process run
against the local OpenAI-compatible server, a pipeline run and its steps, the --json shapes, price
overrides, `process --dry-run`'s estimate, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from click.testing import CliRunner
from support.llm_server import LlmServer
from support.process_data import cli_env, llm_settings, seed_messages

from tg_parser.cli.main import cli
from tg_parser.domain.models import Source
from tg_parser.pipeline.queue import QueueWorker
from tg_parser.prices import DEFAULT_PRICES, estimate_cost, price_table
from tg_parser.stores import IngestionStore
from tg_parser.stores.run_queue import RunQueueStore

SUMMARY_KEYS = {
    "run_id",
    "kind",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "started_by",
    "model",
    "documents",
    "input_tokens",
    "output_tokens",
    "estimated_cost_usd",
    "cost_per_document_usd",
    "error",
}


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def tg(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def as_json(env: dict[str, str], *args: str):
    result = tg(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def gpt5_mini_cost(input_tokens: int, output_tokens: int) -> float:
    price = DEFAULT_PRICES["gpt-5-mini"]
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def test_a_process_run_is_listed_and_shown_with_tokens_cost_and_who_started_it(db, settings, server):
    seed_messages(db, 5)
    env = cli_env(settings, server.base_url)
    assert tg(env, "process", "--concurrency", "2").exit_code == 0

    (listed,) = as_json(env, "runs", "list")
    assert set(listed) == SUMMARY_KEYS
    assert (listed["kind"], listed["status"], listed["model"], listed["documents"]) == (
        "process",
        "ok",
        "gpt-5-mini",
        5,
    )
    assert listed["input_tokens"] > 0 and listed["output_tokens"] > 0
    cost = gpt5_mini_cost(listed["input_tokens"], listed["output_tokens"])
    assert listed["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert listed["cost_per_document_usd"] == pytest.approx(cost / 5, abs=1e-8)
    assert listed["duration_s"] >= 0 and listed["finished_at"] >= listed["started_at"]
    who = listed["started_by"]
    assert (who["origin"], who["command"], who["pid"], who["host"]) == (
        "cli",
        "process",
        os.getpid(),
        socket.gethostname(),
    )

    shown = as_json(env, "runs", "show", listed["run_id"])
    assert set(shown) == SUMMARY_KEYS | {"steps", "failures_by_class", "params", "counts"}
    assert {k: shown[k] for k in SUMMARY_KEYS} == listed
    assert shown["steps"] is None and shown["failures_by_class"] == {}
    assert shown["counts"]["processed"] == 5 and shown["counts"]["requests"] == 5
    assert shown["params"]["concurrency"] == 2 and "started_by" not in shown["params"]

    text = tg(env, "runs", "show", listed["run_id"])
    assert text.exit_code == 0, text.output
    assert f"Run:       {listed['run_id']} (process)" in text.stdout
    assert "by cli process, " in text.stdout and f"pid {os.getpid()}" in text.stdout
    assert f"Tokens:    in {listed['input_tokens']:,} / out {listed['output_tokens']:,}" in text.stdout
    assert "per document)" in text.stdout

    table = tg(env, "runs", "list")
    assert table.exit_code == 0 and listed["run_id"] in table.stdout and "cli process" in table.stdout


def test_prices_from_the_settings_replace_the_built_in_ones_and_unknown_models_have_no_cost(
    db, settings, server
):
    seed_messages(db, 2)
    env = cli_env(settings, server.base_url)
    assert tg(env, "process").exit_code == 0
    (default,) = as_json(env, "runs", "list")
    doubled = {**env, "LLM_PRICES": json.dumps({"GPT-5-mini": {"input": 0.5, "output": 4}})}
    (listed,) = as_json(doubled, "runs", "list")
    assert listed["estimated_cost_usd"] == pytest.approx(2 * default["estimated_cost_usd"], abs=1e-6)

    seed_messages(db, 1, first_id=10)
    local = {**env, "LLM_MODEL": "my-local-model"}
    assert tg(local, "process").exit_code == 0
    newest = as_json(local, "runs", "list", "--limit", "1")[0]
    assert newest["model"] == "my-local-model" and newest["input_tokens"] > 0
    assert newest["estimated_cost_usd"] is None and newest["cost_per_document_usd"] is None
    text = tg(local, "runs", "show", newest["run_id"])
    assert "Est. cost: unknown (no price for the model: see LLM_PRICES)" in text.stdout


def test_list_filters_by_status_and_kind_and_limits(db, settings, server):
    seed_messages(db, 3)
    env = cli_env(settings, server.base_url)
    assert tg(env, "process", "--limit", "1").exit_code == 0
    assert tg(env, "process").exit_code == 0
    runs = as_json(env, "runs", "list")
    assert [r["documents"] for r in runs] == [2, 1]  # newest first
    assert [r["run_id"] for r in as_json(env, "runs", "list", "--limit", "1")] == [runs[0]["run_id"]]
    assert len(as_json(env, "runs", "list", "--status", "ok", "--kind", "process")) == 2
    assert as_json(env, "runs", "list", "--status", "failed") == []
    assert as_json(env, "runs", "list", "--kind", "topicize") == []
    empty = tg(env, "runs", "list", "--status", "failed")
    assert empty.exit_code == 0 and empty.stdout.strip() == "No runs match."


def test_a_pipeline_run_lists_its_steps_each_with_its_own_report(db, settings, tmp_path):
    IngestionStore(db).add_source(Source(source_id="news", kind="export", channel_id=100))
    seed_messages(db, 4, source_id="news")
    env = cli_env(settings, PROCESSOR="extractive")
    result = tg(env, "run", "--source", "news", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    (run,) = as_json(env, "runs", "list", "--kind", "run")
    shown = as_json(env, "runs", "show", run["run_id"])
    assert shown["status"] == "ok" and shown["documents"] == 4 and shown["estimated_cost_usd"] == 0.0
    assert shown["started_by"]["command"] == "run"
    steps = shown["steps"]
    assert [(s["source_id"], s["step"], s["ok"]) for s in steps] == [
        ("news", "ingest", True),
        ("news", "process", True),
        ("news", "topicize", True),
        (None, "export", True),
    ]
    assert [s.get("run_id") for s in steps] == [
        None,
        f"{run['run_id']}-process-news",
        f"{run['run_id']}-topicize-news",
        None,
    ]
    process = next(s for s in steps if s["step"] == "process")
    assert process["run_id"] == f"{run['run_id']}-process-news" and process["documents"] == 4
    child = as_json(env, "runs", "show", process["run_id"])
    assert child["kind"] == "process" and child["documents"] == 4
    assert child["started_by"]["command"] == "run"


def test_a_queued_run_counts_its_tokens_and_cost_and_names_the_key_that_queued_it(
    db, settings, server, tmp_path
):
    IngestionStore(db).add_source(Source(source_id="news", kind="export", channel_id=100))
    seed_messages(db, 3, source_id="news")
    RunQueueStore(db).enqueue(
        "api-q1",
        ["process"],
        source_id="news",
        options={"processor": "llm"},
        requested_by="ci",
        webhook_url=None,
    )
    worker = QueueWorker(
        db, llm_settings(settings, server.base_url), out_dir=tmp_path / "out", worker_id="w-1"
    )
    assert worker.drain() == 1
    row = RunQueueStore(db).get("api-q1")
    assert row is not None and row["status"] == "succeeded", row
    counts = row["counts"]  # what GET /api/v1/runs/api-q1 shows
    assert counts["input_tokens"] > 0 and counts["output_tokens"] > 0 and counts["documents"] == 3
    cost = gpt5_mini_cost(counts["input_tokens"], counts["output_tokens"])
    assert counts["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)

    shown = as_json(cli_env(settings, server.base_url), "runs", "show", "api-q1")
    assert (shown["kind"], shown["status"], shown["documents"]) == ("run", "ok", 3)
    who = shown["started_by"]
    assert (who["origin"], who["requested_by"], who["worker_id"]) == ("api", "ci", "w-1")
    assert (shown["input_tokens"], shown["output_tokens"]) == (
        counts["input_tokens"],
        counts["output_tokens"],
    )
    assert shown["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)
    (step,) = shown["steps"]
    assert (step["step"], step["run_id"], step["model"]) == ("process", "api-q1-process-news", "gpt-5-mini")
    assert step["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)
    child = as_json(cli_env(settings, server.base_url), "runs", "show", step["run_id"])
    assert (
        child["started_by"]["origin"] == "api" and child["estimated_cost_usd"] == shown["estimated_cost_usd"]
    )


def test_process_prints_its_estimated_cost(db, settings, server):
    seed_messages(db, 2)
    env = cli_env(settings, server.base_url)
    report = as_json(env, "process")
    cost = gpt5_mini_cost(report["counts"]["input_tokens"], report["counts"]["output_tokens"])
    assert report["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)
    seed_messages(db, 1, first_id=10)
    text = tg(env, "process")
    assert text.exit_code == 0 and "est. cost $" in text.stdout


def test_process_dry_run_estimates_the_cost(db, settings, server):
    seed_messages(db, 6)
    env = cli_env(settings, server.base_url)
    estimate = as_json(env, "process", "--dry-run")
    assert estimate["estimated_output_tokens_per_message"] == 400
    assert estimate["estimated_output_tokens"] == 6 * 400
    cost = gpt5_mini_cost(estimate["estimated_input_tokens"], 6 * 400)
    assert estimate["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert estimate["estimated_cost_per_message_usd"] == pytest.approx(cost / 6, abs=1e-8)
    fewer = as_json({**env, "LLM_ESTIMATED_OUTPUT_TOKENS": "50"}, "process", "--dry-run")
    assert fewer["estimated_output_tokens"] == 6 * 50
    capped = as_json({**env, "LLM_MAX_OUTPUT_TOKENS": "100"}, "process", "--dry-run")
    assert capped["estimated_output_tokens_per_message"] == 100  # never more than the model may write
    text = tg(env, "process", "--dry-run")
    assert text.exit_code == 0 and "Estimated cost: $" in text.stdout
    assert server.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "no-such-run"), "Error: no run 'no-such-run' — see 'tg-parser runs list' for the run ids"),
        (("list", "--status", "bogus"), "Invalid value for '--status'"),
        (("list", "--limit", "0"), "Invalid value for '--limit'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(settings, args, message):
    result = tg(cli_env(settings), "runs", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_price_setting_is_a_configuration_error(settings):
    result = tg(cli_env(settings, LLM_PRICES='{"gpt-5-mini": {"input": 1}}'), "runs", "list")
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: invalid setting LLM_PRICES: the price of 'gpt-5-mini' must be")


def test_prices_match_snapshots_but_not_other_variants():
    table = price_table({"Local": {"input": 1, "output": 2}})
    assert estimate_cost("gpt-5-mini-2025-08-07", 1_000_000, 0, table) == DEFAULT_PRICES["gpt-5-mini"].input
    assert estimate_cost("gpt-5.2-pro", 1, 1, table) is None  # not priced as gpt-5.2
    assert estimate_cost("local", 1_000_000, 1_000_000, table) == 3.0
    assert estimate_cost("unknown", 0, 0, table) == 0.0  # nothing sent, nothing spent
