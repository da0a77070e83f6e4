"""The LLM client against a local OpenAI-compatible server: the real openai SDK code path runs.

No database is involved here, so these tests run once (not per dialect).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from support import llm_server as srv
from support.llm_server import LlmServer

from tg_parser.config import load_settings
from tg_parser.errors import EXIT_CONFIG, EXIT_RATE_LIMITED, ConfigError
from tg_parser.llm import errors as E
from tg_parser.llm.client import (
    LlmClient,
    LlmConfig,
    ReplyText,
    Usage,
    decode_output,
    model_traits,
    read_responses_reply,
    resolve_api,
    retry_after_seconds,
)
from tg_parser.processing.processor import LlmDocumentProcessor
from tg_parser.processing.schema import ProcessedDocumentOutput, processed_document_format

MESSAGE = {
    "source_ref": "tg:100:post:7",
    "channel_id": 100,
    "message_type": "post",
    "date": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    "text": "Привет! Новый релиз #python от @pyteam",
}


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def make_client(
    server: LlmServer, *, api: str = "responses", model: str = "gpt-5-mini", **overrides
) -> LlmClient:
    values = {"llm_max_retries": 2, "llm_timeout": 5.0, **overrides}
    settings = load_settings(
        _env_file=None, openai_base_url=server.base_url, llm_api=api, llm_model=model, **values
    )
    return LlmClient(LlmConfig.from_settings(settings), backoff_base=0.01)


def complete(client: LlmClient, text: str = "hello", stop: threading.Event | None = None):
    return client.complete(
        processed_document_format(), "instructions", f"<message>\n{text}\n</message>", stop=stop
    )


# --- request bodies -----------------------------------------------------------------------------------


def test_responses_gpt5_body_has_reasoning_verbosity_strict_schema_and_no_temperature(server):
    client = make_client(
        server, llm_reasoning_effort="low", llm_verbosity="medium", llm_max_output_tokens=1234
    )
    document = LlmDocumentProcessor.load(client).process(MESSAGE)
    assert document.text_clean.startswith("Привет!")
    (request,) = server.requests
    body = request.body
    assert request.path == "/v1/responses"
    assert body["model"] == "gpt-5-mini"
    assert body["reasoning"] == {"effort": "low"}
    assert body["text"]["verbosity"] == "medium"
    assert body["text"]["format"] == {
        "type": "json_schema",
        "name": "processed_document",
        "schema": processed_document_format().schema,
        "strict": True,
    }
    assert body["max_output_tokens"] == 1234
    assert body["store"] is False
    assert "temperature" not in body and "top_p" not in body
    assert body["instructions"].startswith("You turn one Telegram channel message")
    assert "<message>\nПривет! Новый релиз #python от @pyteam\n</message>" in body["input"]
    assert "2025-01-02T03:04:05Z" in body["input"]
    assert request.headers.get("authorization") == "Bearer not-needed"


def test_responses_non_reasoning_model_gets_temperature_zero_only(server):
    complete(make_client(server, model="gpt-4.1-mini"))
    body = server.requests[0].body
    assert body["temperature"] == 0
    assert "reasoning" not in body and "verbosity" not in body["text"]
    assert body["text"]["format"]["strict"] is True


def test_o_series_gets_effort_without_verbosity_or_temperature(server):
    complete(make_client(server, model="o4-mini"))
    body = server.requests[0].body
    assert body["reasoning"] == {"effort": "low"}  # the default `auto`: o-series models reject `minimal`
    assert "verbosity" not in body["text"] and "temperature" not in body


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize(
    ("model", "configured", "sent"),
    [
        ("o3", "auto", "low"),
        ("o4-mini", "auto", "low"),
        ("o1", "high", "high"),
        ("gpt-5-mini", "auto", "minimal"),
        ("gpt-5", "minimal", "minimal"),
        ("gpt-5.1", "auto", "none"),
        ("gpt-5.1", "none", "none"),
        ("gpt-5.2", "xhigh", "xhigh"),
        ("openai/o3-mini", "medium", "medium"),
        ("o3", "omit", None),
        ("gpt-4.1-mini", "auto", None),
        ("gpt-5-chat-latest", "auto", None),
        ("llama3.1:8b", "high", None),  # not a reasoning model: the setting does not apply
    ],
)
def test_each_model_family_is_sent_an_effort_it_accepts(server, api, model, configured, sent):
    complete(make_client(server, api=api, model=model, llm_reasoning_effort=configured))
    body = server.requests[0].body
    if api == "responses":
        assert body.get("reasoning") == ({"effort": sent} if sent else None)
    else:
        assert body.get("reasoning_effort") == sent


@pytest.mark.parametrize(
    ("model", "configured", "accepted"),
    [
        ("o3", "minimal", "low, medium, high"),
        ("o4-mini", "none", "low, medium, high"),
        ("gpt-5-mini", "none", "minimal, low, medium, high"),
        ("gpt-5", "xhigh", "minimal, low, medium, high"),
        ("gpt-5.1", "minimal", "none, low, medium, high"),
    ],
)
def test_an_effort_the_model_rejects_is_a_config_error_before_any_request(
    server, model, configured, accepted
):
    with pytest.raises(ConfigError) as raised:
        make_client(server, model=model, llm_reasoning_effort=configured)
    line = raised.value.one_line()
    assert f"LLM_REASONING_EFFORT={configured} is not accepted by {model}" in line
    assert accepted in line and "\n" not in line
    assert raised.value.exit_code == EXIT_CONFIG
    assert server.requests == []


def test_chat_body_for_a_local_model_sends_strict_response_format_and_temperature_zero(server):
    client = make_client(server, api="chat", model="llama3.1:8b", llm_max_output_tokens=900)
    result = complete(client)
    assert isinstance(result.output, ProcessedDocumentOutput)
    (request,) = server.requests
    body = request.body
    assert request.path == "/v1/chat/completions"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "processed_document",
            "schema": processed_document_format().schema,
            "strict": True,
        },
    }
    assert body["temperature"] == 0
    assert body["max_tokens"] == 900
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    for absent in ("reasoning_effort", "verbosity", "max_completion_tokens"):
        assert absent not in body


def test_chat_body_for_gpt5_sends_reasoning_effort_verbosity_and_no_temperature(server):
    complete(make_client(server, api="chat", model="gpt-5-nano", llm_max_output_tokens=700))
    body = server.requests[0].body
    assert body["reasoning_effort"] == "minimal"
    assert body["verbosity"] == "low"
    assert body["max_completion_tokens"] == 700
    assert "temperature" not in body and "max_tokens" not in body
    assert body["response_format"]["json_schema"]["strict"] is True


@pytest.mark.parametrize(
    ("model", "reasoning", "verbosity"),
    [
        ("gpt-5", True, True),
        ("gpt-5-mini", True, True),
        ("GPT-5.1", True, True),
        ("openai/gpt-5-nano", True, True),
        ("gpt-5-chat-latest", False, False),
        ("o3", True, False),
        ("o4-mini", True, False),
        ("gpt-4.1-mini", False, False),
        ("llama3.1:8b", False, False),
        ("qwen2.5", False, False),
    ],
)
def test_model_traits(model, reasoning, verbosity):
    traits = model_traits(model)
    assert (traits.reasoning, traits.verbosity) == (reasoning, verbosity)


def test_auto_api_is_responses_on_openai_and_chat_elsewhere():
    assert resolve_api("auto", None) == "responses"
    assert resolve_api("auto", "https://api.openai.com/v1") == "responses"
    assert resolve_api("auto", "http://localhost:11434/v1") == "chat"
    assert resolve_api("auto", "https://gateway.example.com/openai/v1") == "chat"
    assert resolve_api("responses", "http://localhost:8000/v1") == "responses"
    assert resolve_api("chat", None) == "chat"


def test_a_key_is_required_on_openai_but_not_on_a_local_server():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        LlmConfig.from_settings(load_settings(_env_file=None))
    local = LlmConfig.from_settings(
        load_settings(_env_file=None, openai_base_url="http://localhost:11434/v1")
    )
    assert local.api == "chat" and local.api_key
    keyed = LlmConfig.from_settings(load_settings(_env_file=None, openai_api_key="sk-secret-123"))
    assert keyed.api == "responses" and "sk-secret-123" not in repr(keyed)


def test_strict_schema_is_closed_fully_required_and_inlined():
    schema = processed_document_format().schema

    def walk(node):
        if isinstance(node, dict):
            assert "$ref" not in node and "$defs" not in node and "minLength" not in node
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert node["required"] == list(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert schema["required"] == ["text_clean", "summary", "topics", "entities", "language"]
    entity = schema["properties"]["entities"]["items"]
    assert entity["properties"]["confidence"] == {
        "description": "How sure you are, from 0 to 1.",
        "maximum": 1.0,
        "minimum": 0.0,
        "type": "number",
    }


# --- replies and usage --------------------------------------------------------------------------------


def test_token_usage_is_captured_from_the_reply(server):
    server.on("hello", lambda r: srv.structured(r, srv.processed_document_content(r), usage=(321, 45)))
    result = complete(make_client(server))
    assert (result.usage.input_tokens, result.usage.output_tokens) == (321, 45)
    assert result.attempts == 1 and result.api == "responses"


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_refusal_is_a_permanent_typed_error_without_retry(server, api):
    server.on("hello", lambda r: srv.refusal(r, "I cannot help with that."))
    with pytest.raises(E.LlmRefusal, match="I cannot help") as caught:
        complete(make_client(server, api=api))
    assert caught.value.permanent and not caught.value.retryable
    assert len(server.requests) == 1


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_length_cut_off_is_a_permanent_typed_error(server, api):
    server.on("hello", srv.cut_off)
    with pytest.raises(E.LlmLengthCutoff, match="token limit") as caught:
        complete(make_client(server, api=api))
    assert "LLM_MAX_OUTPUT_TOKENS" in caught.value.one_line()
    assert len(server.requests) == 1


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_invalid_json_is_retried_then_permanent(server, api):
    server.on("hello", srv.not_json)
    with pytest.raises(E.LlmInvalidJson) as caught:
        complete(make_client(server, api=api))
    # retried once (LLM_BAD_OUTPUT_RETRIES=1), though LLM_MAX_RETRIES=2 would allow two retries
    assert caught.value.permanent and caught.value.attempts == 2
    assert len(server.requests) == 2
    assert caught.value.input_tokens > 0  # tokens of failed attempts are still counted


def test_schema_violation_is_retried_and_a_good_retry_wins(server):
    server.on("hello", srv.schema_violation, times=1)
    result = complete(make_client(server))
    assert result.attempts == 2 and len(server.requests) == 2


def test_schema_violation_after_retries_names_the_fields(server):
    server.on("hello", srv.schema_violation)
    with pytest.raises(E.LlmSchemaViolation, match="processed_document schema") as caught:
        complete(make_client(server))
    assert "text_clean" in caught.value.message and caught.value.permanent
    assert caught.value.attempts == 2 and len(server.requests) == 2


def test_bad_output_retries_are_configurable_and_bounded_by_max_retries(server):
    server.on("hello", srv.schema_violation)
    with pytest.raises(E.LlmSchemaViolation):
        complete(make_client(server, llm_bad_output_retries=0))
    assert len(server.requests) == 1
    with pytest.raises(E.LlmSchemaViolation) as caught:
        complete(make_client(server, llm_max_retries=1, llm_bad_output_retries=5))
    assert caught.value.attempts == 2 and len(server.requests) == 3  # never more than 1 + LLM_MAX_RETRIES


def test_a_server_error_then_bad_output_still_gets_its_one_bad_output_retry(server):
    server.on("hello", srv.error(500, "boom"), times=1)
    server.on("hello", srv.not_json)
    with pytest.raises(E.LlmInvalidJson) as caught:
        complete(make_client(server, llm_max_retries=3))
    assert caught.value.attempts == 3  # 500, bad JSON, bad JSON


def test_reply_that_is_not_json_at_http_level_is_a_bad_reply(server):
    server.on("hello", srv.broken_http_body())
    with pytest.raises(E.LlmBadReply, match="not JSON"):
        complete(make_client(server))
    assert len(server.requests) == 3


def test_fenced_json_from_a_local_model_is_accepted():
    reply = ReplyText(
        '```json\n{"text_clean": "x", "summary": "", "topics": [], "entities": [], "language": "en"}\n```',
        Usage(),
    )
    output = decode_output(reply, processed_document_format(), 100)
    assert output.text_clean == "x"


def test_responses_reader_skips_reasoning_items_and_reads_filters():
    data = {
        "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "{}"}]},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3}},
    }
    reply = read_responses_reply(data)
    assert reply.text == "{}" and reply.usage == Usage(5, 7, 3)
    filtered = read_responses_reply(
        {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}, "output": []}
    )
    with pytest.raises(E.LlmContentFiltered):
        decode_output(filtered, processed_document_format(), 100)


# --- HTTP errors, retries and backoff ------------------------------------------------------------------


def test_429_honours_retry_after_then_succeeds(server):
    server.on("hello", srv.error(429, "slow down", retry_after=1), times=1)
    result = complete(make_client(server))
    first, second = server.requests
    assert result.attempts == 2
    assert second.received_at - first.received_at >= 0.95


def test_a_429_pauses_every_thread_of_the_client(server, monkeypatch):
    server.on("first", srv.error(429, "slow down", retry_after=1), times=1)
    client = make_client(server)
    paused, pause = threading.Event(), client.gate.pause

    def pause_and_tell(seconds: float) -> None:
        pause(seconds)
        paused.set()

    monkeypatch.setattr(client.gate, "pause", pause_and_tell)
    worker = threading.Thread(target=complete, args=(client, "first"))
    worker.start()
    assert paused.wait(30), "the 429 never paused the client"
    complete(client, "second")  # must wait for the shared pause, not hit the server at once
    worker.join()
    limited = server.requests[0]
    other = next(r for r in server.requests if "second" in r.user_text)
    assert other.received_at - limited.received_at >= 0.9


def test_each_sending_thread_keeps_one_connection_of_its_own_and_close_ends_them_all(server):
    client = make_client(server)
    together = threading.Barrier(4)

    def send(thread: int) -> None:
        together.wait(timeout=30)  # all four in flight at once: a shared pool would mix connections
        for n in range(3):
            complete(client, f"thread {thread} message {n}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ports = [{r.peer_port for r in server.requests_for(f"thread {i} ")} for i in range(4)]
    assert all(len(used) == 1 for used in ports), ports  # each thread reuses its connection
    assert len(set().union(*ports)) == 4  # and no two threads share one
    sdks = list(client._clients)
    assert len(sdks) == 5  # the four threads' and the constructing thread's
    client.close()
    assert all(sdk.is_closed() for sdk in sdks)  # shut, not just forgotten


def test_requests_after_close_end_as_cancelled_not_as_errors(server):
    """A run closes its client while requests it abandoned may still be in flight in worker threads (a
    fatal 401 on one of them, Ctrl-C): those end as cancelled, with no traceback in the run's log."""
    client = make_client(server)
    complete(client, "before")  # the constructing thread's connection is open
    client.close()
    with pytest.raises(E.LlmCancelled):
        complete(client, "same thread, after close")
    outcome: list[BaseException] = []

    def other_thread() -> None:
        try:
            complete(client, "new thread, after close")
        except BaseException as exc:  # the test inspects what was raised
            outcome.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], E.LlmCancelled)
    assert client._clients == []  # the new thread's client was closed, not kept
    assert [r.user_text for r in server.requests if "after close" in r.user_text] == []


def test_retry_after_longer_than_a_run_should_wait_stops_the_run(server):
    server.on("hello", srv.error(429, "quota exceeded", retry_after=3600))
    with pytest.raises(E.LlmRateLimitPause) as caught:
        complete(make_client(server))
    assert caught.value.fatal and caught.value.exit_code == EXIT_RATE_LIMITED
    assert len(server.requests) == 1


def test_server_error_is_retried_with_backoff(server):
    server.on("hello", srv.error(500, "boom"), times=2)
    result = complete(make_client(server))
    assert result.attempts == 3


def test_server_errors_past_the_retries_are_transient(server):
    server.on("hello", srv.error(503, "overloaded"))
    with pytest.raises(E.LlmServerError, match="overloaded") as caught:
        complete(make_client(server, llm_max_retries=1))
    assert caught.value.transient and not caught.value.permanent and caught.value.attempts == 2


@pytest.mark.parametrize(
    ("status", "kind"), [(401, E.LlmAuthError), (403, E.LlmAuthError), (404, E.LlmNotFound)]
)
def test_auth_and_not_found_are_fatal_configuration_errors(server, status, kind):
    server.on("hello", srv.error(status, "nope"))
    with pytest.raises(kind) as caught:
        complete(make_client(server, openai_api_key="sk-very-secret-key"))
    assert caught.value.fatal and caught.value.exit_code == EXIT_CONFIG
    assert "sk-very-secret-key" not in caught.value.one_line()
    assert len(server.requests) == 1


def test_not_found_hints_at_the_other_api(server):
    server.on("hello", srv.error(404, "no such route"))
    with pytest.raises(E.LlmNotFound) as caught:
        complete(make_client(server))
    assert "LLM_API=chat" in caught.value.one_line()


def test_bad_request_is_permanent_without_retry(server):
    server.on("hello", srv.error(400, "Unsupported parameter: 'temperature'"))
    with pytest.raises(E.LlmBadRequest, match="Unsupported parameter") as caught:
        complete(make_client(server))
    assert caught.value.permanent and len(server.requests) == 1


def test_timeout_is_transient(server):
    # The answer would come after a minute: the 0.3 s timeout ends the wait long before, on any machine.
    server.on("hello", srv.Reply(delay=60.0, body=b"{}"))
    started = time.monotonic()
    with pytest.raises(E.LlmTimeout) as caught:
        complete(make_client(server, llm_timeout=0.3, llm_max_retries=0))
    assert caught.value.transient and time.monotonic() - started < 30


def test_unreachable_server_is_a_transient_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(_env_file=None, openai_base_url=f"http://127.0.0.1:{port}/v1", llm_max_retries=0)
    client = LlmClient(LlmConfig.from_settings(settings))
    with pytest.raises(E.LlmConnectionError, match="cannot reach") as caught:
        complete(client)
    assert caught.value.transient


def test_stop_cuts_a_retry_wait_short(server):
    server.on("hello", srv.error(500, "boom"))
    client = make_client(server, llm_max_retries=3)
    # The retry would wait 7.5-10 minutes; the stop ends the wait long before, on any machine.
    client.backoff = dataclasses.replace(client.backoff, base=600.0, cap=600.0)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(E.LlmCancelled):
        complete(client, stop=stop)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_retry_after_as_an_http_date():
    value = retry_after_seconds(
        {"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))}
    )
    assert value is not None and 25 <= value <= 31
