"""A small threaded OpenAI-compatible HTTP server for tests and benchmarks.

It serves ``POST /v1/responses`` and ``POST /v1/chat/completions`` (and ``GET /v1/models``), so the real
`openai` SDK code path runs end to end against it. It records every request body, and it can be told,
per request, to answer with a rate limit (429 + Retry-After), a server error, malformed JSON, JSON that
violates the schema, a refusal, a length cut-off, or to be slow.

How a request is answered, first match wins:

1. the rules added with :meth:`LlmServer.on` (match on a substring of the user input or a predicate;
   optionally only the first ``times`` matching requests);
2. otherwise the content handler registered for the request's schema name (``server.handlers``; the
   ``processed_document`` handler is built in and derives a document from the message text). Other
   schema names (``topics``, ``supporting_items``, ...) are plugged in by the tests that need them;
   a request whose schema has no handler gets a 400 so the gap shows.

Each response is written with a single ``sendall`` (headers and body together) and the socket has
``TCP_NODELAY``: headers and body sent separately meet Nagle's algorithm and delayed ACKs and add about
40 ms per request, which would make a concurrency benchmark measure this server instead of the code.

Run it stand-alone (used by bench/bench_process.py so the server does not share the benchmarked
process's GIL)::

    python tests/support/llm_server.py --latency 0.1 --no-record
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)
_HASHTAG = re.compile(r"#(\w+)", re.UNICODE)
_MENTION = re.compile(r"@(\w{4,32})", re.UNICODE)
_MESSAGE = re.compile(r"<message>\n?(.*?)\n?</message>", re.DOTALL)


# --- requests ---------------------------------------------------------------------------------------


@dataclass
class LlmRequest:
    """One request as received: the path, the JSON body and a few derived views of it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # names in lower case
    received_at: float  # time.monotonic() at arrival
    peer_port: int = 0  # the client's port: one per connection

    @property
    def api(self) -> str:
        return "chat" if self.path.endswith("/chat/completions") else "responses"

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def schema_format(self) -> dict[str, Any]:
        """The structured-output format sent: Responses `text.format` or Chat `response_format.json_schema`."""
        if self.api == "responses":
            return dict((self.body.get("text") or {}).get("format") or {})
        return dict((self.body.get("response_format") or {}).get("json_schema") or {})

    @property
    def schema_name(self) -> str | None:
        return self.schema_format.get("name")

    @property
    def instructions(self) -> str:
        if self.api == "responses":
            return str(self.body.get("instructions") or "")
        return "\n".join(
            _content_text(m.get("content"))
            for m in self.body.get("messages", [])
            if m.get("role") in ("system", "developer")
        )

    @property
    def user_text(self) -> str:
        if self.api == "responses":
            given = self.body.get("input")
            if isinstance(given, str):
                return given
            items = given or []
        else:
            items = self.body.get("messages", [])
        return "\n".join(_content_text(m.get("content")) for m in items if m.get("role") == "user")

    @property
    def message_text(self) -> str:
        """The Telegram message inside the user input (between <message> tags), or the whole input."""
        match = _MESSAGE.search(self.user_text)
        return match.group(1) if match else self.user_text


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


# --- replies ----------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What to send back. `body` is raw bytes or a JSON-able object; `delay` is slept before sending."""

    status: int = 200
    body: bytes | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def completion(
    request: LlmRequest,
    text: str,
    *,
    refusal: str | None = None,
    cut_off: bool = False,
    usage: tuple[int, int] | None = None,
) -> Reply:
    """A successful HTTP reply carrying `text` as the model's output, in the shape of the request's API.

    `refusal` replaces the output by a refusal; `cut_off` marks it as stopped by the output token limit.
    """
    input_tokens, output_tokens = usage or (_tokens(json.dumps(request.body)), _tokens(text))
    created = int(time.time())
    if request.api == "responses":
        content: dict[str, Any]
        if refusal is not None:
            content = {"type": "refusal", "refusal": refusal}
        else:
            content = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        body: dict[str, Any] = {
            "id": f"resp_{next(_ids)}",
            "object": "response",
            "created_at": created,
            "status": "incomplete" if cut_off else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if cut_off else None,
            "error": None,
            "model": request.model,
            "instructions": request.body.get("instructions"),
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{next(_ids)}",
                    "status": "incomplete" if cut_off else "completed",
                    "role": "assistant",
                    "content": [content],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
    else:
        body = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None if refusal is not None else text,
                        "refusal": refusal,
                    },
                    "finish_reason": "length" if cut_off else "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
    return Reply(200, body)


def structured(request: LlmRequest, content: dict[str, Any], **kwargs: Any) -> Reply:
    """A reply whose output is `content` serialised as JSON (what a structured-output model returns)."""
    return completion(request, json.dumps(content, ensure_ascii=False), **kwargs)


def error(
    status: int, message: str = "error", *, retry_after: float | None = None, code: str | None = None
) -> Reply:
    """An OpenAI-style error body with the given status (and Retry-After when given)."""
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    kind = (
        "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    )
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)


def refusal(request: LlmRequest, text: str = "I can't help with that.") -> Reply:
    return completion(request, "", refusal=text)


def cut_off(request: LlmRequest) -> Reply:
    """Output stopped by the token limit: half a JSON object."""
    return completion(request, '{"text_clean": "half a sent', cut_off=True)


def not_json(request: LlmRequest) -> Reply:
    """A completed reply whose output text is not JSON at all."""
    return completion(request, "Sure! Here is the document: text_clean=...")


def schema_violation(request: LlmRequest) -> Reply:
    """Valid JSON that breaks the processed_document schema (empty text, wrong types, missing fields)."""
    return structured(request, {"text_clean": "", "topics": "not a list", "confidence": 2})


def broken_http_body() -> Reply:
    """An HTTP 200 whose body is not JSON (a broken proxy or server)."""
    return Reply(200, b'{"id": "resp_1", "output": [')


# --- built-in content -------------------------------------------------------------------------------


def processed_document_content(request: LlmRequest) -> dict[str, Any]:
    """A plausible processed_document derived from the message text, deterministic for a given text."""
    text = request.message_text
    clean = " ".join(text.split()) or "(empty message)"
    first = re.split(r"(?<=[.!?])\s", clean, maxsplit=1)[0][:200]
    tags = list(dict.fromkeys(t.lower() for t in _HASHTAG.findall(text)))
    mentions = list(dict.fromkeys(_MENTION.findall(text)))
    entities = [{"type": "hashtag", "value": f"#{t}", "confidence": 1.0} for t in tags]
    entities += [{"type": "mention", "value": f"@{m}", "confidence": 0.9} for m in mentions]
    cyrillic = sum(1 for ch in text if "\u0400" <= ch <= "\u04ff")
    return {
        "text_clean": clean,
        "summary": first,
        "topics": tags[:5],
        "entities": entities,
        "language": "ru" if cyrillic > len(text) / 4 else "en",
    }


# --- the server -------------------------------------------------------------------------------------

Matcher = str | Callable[[LlmRequest], bool]
Responder = Reply | Callable[[LlmRequest], Reply]


@dataclass
class _Rule:
    match: Matcher
    reply: Responder
    times: int | None

    def matches(self, request: LlmRequest) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if isinstance(self.match, str):
            return self.match in request.user_text
        return bool(self.match(request))


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    owner: LlmServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a killed worker, a closed connection pool) is normal here.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses connections, as with a real endpoint
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(Reply(200, {"object": "list", "data": [{"id": "local", "object": "model"}]}))
        else:
            self._send(error(404, f"no route {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.owner.handle(
            self.path, {k.lower(): v for k, v in self.headers.items()}, raw, peer_port=self.client_address[1]
        )
        owner = self.server.owner
        wait = owner.latency + reply.delay
        if wait > 0 and owner.stopped.wait(wait):
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        body = reply.payload()
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Status"
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body)  # one sendall: see the module docstring
        except OSError:
            self.close_connection = True


class LlmServer:
    """Start with ``with LlmServer() as server:``; ``server.base_url`` goes into OPENAI_BASE_URL."""

    def __init__(self, *, latency: float = 0.0, record: bool = True, host: str = "127.0.0.1", port: int = 0):
        self.latency = latency
        self.record = record
        self.stopped = threading.Event()
        self.handlers: dict[str, Callable[[LlmRequest], dict[str, Any]]] = {
            "processed_document": processed_document_content
        }
        self._rules: list[_Rule] = []
        self._requests: list[LlmRequest] = []
        self._served = 0
        self._lock = threading.Lock()
        self._http = _HttpServer((host, port), _Handler)
        self._http.owner = self
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> LlmServer:
        # serve_forever notices shutdown() only between polls: its default half-second poll made every
        # test using this server wait up to 0.5 s at teardown.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, name="llm-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()  # wakes handlers sleeping on latency
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> LlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting ---------------------------------------------------------------------------------

    def on(self, match: Matcher, reply: Responder, *, times: int | None = None) -> None:
        """Answer requests whose user input contains `match` (or for which it returns True) with `reply`.

        `reply` is a Reply or a function of the request returning one; with `times`, only the first
        `times` matching requests get it, later ones fall through to the next rule or the default.
        """
        with self._lock:
            self._rules.append(_Rule(match, reply, times))

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    # --- what was received -------------------------------------------------------------------------

    @property
    def requests(self) -> list[LlmRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def served(self) -> int:
        with self._lock:
            return self._served

    def requests_for(self, text: str) -> list[LlmRequest]:
        return [r for r in self.requests if text in r.user_text]

    def counts_by_message(self) -> Counter[str]:
        """How many requests each message text received (to prove exactly-once processing)."""
        return Counter(r.message_text for r in self.requests)

    # --- answering ---------------------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], raw: bytes, *, peer_port: int = 0) -> Reply:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return error(400, "request body is not JSON")
        request = LlmRequest(path, body, headers, time.monotonic(), peer_port)
        with self._lock:
            self._served += 1
            if self.record:
                self._requests.append(request)
            rule = next((r for r in self._rules if r.matches(request)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
        if not path.rstrip("/").endswith(("/responses", "/chat/completions")):
            return error(404, f"no route {path}")
        if rule is not None:
            return rule.reply(request) if callable(rule.reply) else rule.reply
        handler = self.handlers.get(request.schema_name or "")
        if handler is None:
            return error(400, f"the test server has no handler for schema {request.schema_name!r}")
        return structured(request, handler(request))


def main() -> None:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible server for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before each reply")
    parser.add_argument("--no-record", action="store_true", help="do not keep request bodies (flat memory)")
    args = parser.parse_args()
    server = LlmServer(latency=args.latency, record=not args.no_record, host=args.host, port=args.port)
    server.start()
    print(server.base_url, flush=True)
    try:
        sys.stdin.read()  # run until the parent closes our stdin (or dies)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
