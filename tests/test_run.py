"""`tg-parser run` end to end on both dialects: the offline quick start, the LLM path against the local
OpenAI-compatible server, a failing source, and a clean stop of --every."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from support.cli import db_env
from support.llm_server import LlmServer
from test_topicize import supporting_handler

from tg_parser.cli.main import cli
from tg_parser.db.connect import open_database
from tg_parser.export.validation import load_schema, schema_for_entry
from tg_parser.stores import ProcessingStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "channel_export" / "result.json"


def invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def validate_export(out: Path) -> list[dict]:
    entries = [
        json.loads(line)
        for line in (out / "kb_entries.ndjson").read_text(encoding="utf-8").split("\n")
        if line
    ]
    for entry in entries:
        jsonschema.validate(entry, load_schema(schema_for_entry(entry)))
    jsonschema.validate(json.loads((out / "topics.json").read_text(encoding="utf-8")), load_schema("topics"))
    for path in out.glob("topic_*.json"):
        jsonschema.validate(json.loads(path.read_text(encoding="utf-8")), load_schema("topic_file"))
    return entries


def test_quick_start_offline_is_deterministic(settings, tmp_path):
    env = db_env(settings)
    assert invoke(env, "ingest", "--from-export", str(EXAMPLE)).exit_code == 0
    first = invoke(env, "run", "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    assert "processor: extractive (no LLM endpoint configured" in first.stderr
    entries = validate_export(tmp_path / "a")
    assert sum(e["type"] == "message" for e in entries) >= 10
    assert sum(e["type"] == "topic" for e in entries) >= 1  # hashtags shared by 3+ posts
    assert all(e["metadata"]["model"] == "extractive" for e in entries if e["type"] == "message")
    second = invoke(env, "run", "--out", str(tmp_path / "b"))
    assert second.exit_code == 0, second.output
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.fixture
def llm_server():
    def topics(request):
        refs = [line.split("]")[0][1:] for line in request.user_text.splitlines() if line.startswith("[tg:")]
        anchors = [{"source_ref": ref, "score": 0.9 - i * 0.1} for i, ref in enumerate(refs[:3])]
        return {
            "topics": [
                {
                    "title": "All about SCIENCE",
                    "summary": "Science news.",
                    "tags": ["science"],
                    "anchors": anchors,
                }
            ]
        }

    with LlmServer() as server:
        server.handlers["topics"] = topics
        server.handlers["supporting_items"] = supporting_handler
        yield server


def test_run_with_the_llm_then_switch_back_and_forth(settings, tmp_path, llm_server):
    env = {
        **db_env(settings),
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "LLM_MODEL": "gpt-5-mini",
    }
    assert invoke(env, "ingest", "--from-export", str(EXAMPLE)).exit_code == 0
    result = invoke(env, "run", "--out", str(tmp_path / "llm"))
    assert result.exit_code == 0, result.output
    assert "processor: llm (gpt-5-mini" in result.stderr
    entries = validate_export(tmp_path / "llm")
    messages = [e for e in entries if e["type"] == "message"]
    assert messages and all(e["metadata"]["model"] == "gpt-5-mini" for e in messages)
    assert [e["title"] for e in entries if e["type"] == "topic"] == ["All about SCIENCE"]
    schemas = {r.schema_name for r in llm_server.requests}
    assert schemas == {"processed_document", "topics", "supporting_items"}
    # Extractive documents replace the LLM ones cleanly with --force, and back again.
    assert invoke(env, "process", "--force", "--processor", "extractive").exit_code in (0, 1)
    db = open_database(settings)
    try:
        models = {d.model for d in ProcessingStore(db).stream_documents()}
        assert models == {"extractive"}
        assert invoke(env, "process", "--force", "--processor", "llm").exit_code in (0, 1)
        assert {d.model for d in ProcessingStore(db).stream_documents()} == {"gpt-5-mini"}
    finally:
        db.close()


def test_one_failing_source_does_not_stop_the_others(settings, tmp_path):
    env = db_env(settings)
    assert invoke(env, "ingest", "--from-export", str(EXAMPLE)).exit_code == 0
    # A Telegram source with no Telegram credentials configured: its ingest step fails.
    assert invoke(env, "sources", "add", "1234567", "--id", "live").exit_code == 0
    result = invoke(env, "run", "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    by_id = {s["source_id"]: s for s in report["sources"]}
    assert by_id["live"]["ok"] is False and by_id["live"]["steps"][0]["step"] == "ingest"
    exported = next(s for s in report["sources"] if s["source_id"] != "live")
    assert exported["ok"] is True
    assert report["export"]["ok"] is True
    assert validate_export(tmp_path / "out")


@pytest.mark.slow
@pytest.mark.timeout(420)  # a real process's first cycle; minutes on a loaded machine
def test_every_stops_cleanly_on_sigterm(sqlite_dir, tmp_path):
    env = {**os.environ, "DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    subprocess.run(
        [sys.executable, "-m", "tg_parser", "ingest", "--from-export", str(EXAMPLE)],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "run", "--every", "1h", "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    sleeping = threading.Event()  # the first cycle is done: the process now waits for the next one

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("Next cycle in"):
                sleeping.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert sleeping.wait(180), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)  # a stop that did not cut the 1 h sleep short fails here
        reader.join(timeout=30)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "Next cycle in 1h" in err and "Stopped." in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text", ["0s", "5", "abc", "1x"])
def test_bad_interval_is_one_clear_line(sqlite_dir, text):
    result = CliRunner().invoke(
        cli, ["run", "--every", text], env={"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: --every") and "Traceback" not in result.output


def test_an_effort_the_model_rejects_stops_process_before_any_request(settings, llm_server):
    env = {
        **db_env(settings),
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "LLM_MODEL": "o3",
        "LLM_REASONING_EFFORT": "minimal",
    }
    assert invoke(env, "ingest", "--from-export", str(EXAMPLE)).exit_code == 0
    result = invoke(env, "process", "--processor", "llm")
    assert result.exit_code == 3, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "LLM_REASONING_EFFORT=minimal is not accepted by o3" in line and "low, medium, high" in line
    assert "Traceback" not in result.output
    dry = invoke(env, "process", "--processor", "llm", "--dry-run")
    assert dry.exit_code == 3 and "is not accepted by o3" in dry.stderr
    assert llm_server.requests == []
    # The default (auto) sends o3 the cheapest effort it accepts (Chat API on a local server).
    env.pop("LLM_REASONING_EFFORT")
    assert invoke(env, "process", "--processor", "llm").exit_code == 0
    assert llm_server.requests and {r.body["reasoning_effort"] for r in llm_server.requests} == {"low"}
