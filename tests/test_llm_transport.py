"""The lean HTTP/1.1 transport under the SDK's client, against servers that frame replies every legal way.

The LLM client (the real openai SDK) talks to a small raw TCP server here, so each test controls the
bytes on the wire: connections closed while idle, chunked and close-delimited bodies, broken replies, a
proxy. No database is involved, so these tests run once.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from support import llm_server as srv
from support.llm_server import LlmRequest, LlmServer

from tg_parser.config import load_settings
from tg_parser.llm import errors as E
from tg_parser.llm.client import LlmClient, LlmConfig
from tg_parser.llm.transport import LeanTransport
from tg_parser.processing.schema import processed_document_format

# What the raw server does with one request: the bytes to send (None: send nothing) and whether to close
# the connection afterwards.
Step = Callable[[LlmRequest], tuple[bytes | None, bool]]


@dataclass
class RawServer:
    """Answers the requests it receives, on whatever connection, with `steps` in order (the last one
    repeats); records each request's target and which connection carried it."""

    steps: list[Step]
    targets: list[str] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)  # per request: its connection's number

    def __post_init__(self) -> None:
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with owner._lock:
                    owner._accepted += 1
                    number = owner._accepted
                while owner._answer(self.rfile, self.connection, number):
                    pass

        self._accepted = 0
        self._lock = threading.Lock()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, reader, conn: socket.socket, number: int) -> bool:
        """Read one request and answer it; False when the connection is done."""
        line = reader.readline()
        if not line:
            return False
        target = line.split()[1].decode()
        length = 0
        while (header := reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = json.loads(reader.read(length) or b"{}")
        with self._lock:
            self.targets.append(target)
            self.connections.append(number)
            step = self.steps[min(len(self.targets), len(self.steps)) - 1]
        data, close = step(LlmRequest(target, body, {}, 0.0))
        if data is not None:
            conn.sendall(data)
        return not close


def answer(request: LlmRequest) -> bytes:
    """A valid reply body for `request` (what the test LLM server would say)."""
    return srv.structured(request, srv.processed_document_content(request)).payload()


def sized(request: LlmRequest, *, close: bool = False) -> tuple[bytes, bool]:
    body = answer(request)
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body, close


def chunked(request: LlmRequest) -> tuple[bytes, bool]:
    body = answer(request)
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    data = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + data, False


def close_delimited(request: LlmRequest) -> tuple[bytes, bool]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    return head + answer(request), True


def make_client(base_url: str, **overrides) -> LlmClient:
    values = {"llm_api": "responses", "llm_max_retries": 0, "llm_timeout": 10.0, **overrides}
    settings = load_settings(_env_file=None, openai_base_url=base_url, llm_model="gpt-5-mini", **values)
    return LlmClient(LlmConfig.from_settings(settings), backoff_base=0.01)


def complete(client: LlmClient, text: str):
    return client.complete(processed_document_format(), "instructions", f"<message>\n{text}\n</message>")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def start(*steps: Step) -> RawServer:
        servers.append(RawServer(list(steps)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_the_sdk_client_sends_through_the_lean_transport_without_a_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "localhost")  # bypasses for no proxy: not a proxy
    client = make_client("http://127.0.0.1:9/v1")
    try:
        assert isinstance(client._sdk._client._transport, LeanTransport)
    finally:
        client.close()


def test_replies_framed_by_length_chunks_or_close_are_read_whole(raw):
    server = raw(sized, chunked, close_delimited, sized)
    client = make_client(server.url)
    try:
        outputs = [complete(client, f"message #{n} #python").output for n in range(4)]
    finally:
        client.close()
    assert [o.text_clean for o in outputs] == [f"message #{n} #python" for n in range(4)]
    # keep-alive until the server closed the connection after the third reply: then a new one
    assert server.connections == [1, 1, 1, 2]
    assert server.targets == ["/v1/responses"] * 4


def test_a_connection_the_server_closed_while_idle_is_reopened(raw):
    server = raw(lambda request: sized(request, close=True))
    client = make_client(server.url)
    try:
        results = [complete(client, f"message {n}") for n in range(3)]
    finally:
        client.close()
    assert [r.attempts for r in results] == [1, 1, 1]  # no retry of ours was needed
    assert server.connections == [1, 2, 3]  # each request sent once, on a fresh connection


def test_a_reused_connection_dropped_before_the_reply_is_sent_again_once(raw):
    """A server that drops a kept-alive connection as the request arrives (its idle timeout racing the
    request): the request goes again on a new connection, as a connection pool does."""
    server = raw(sized, lambda request: (None, True), sized)
    client = make_client(server.url)
    try:
        complete(client, "first")
        result = complete(client, "second")
    finally:
        client.close()
    assert result.attempts == 1
    assert server.connections == [1, 1, 2]


@pytest.mark.parametrize(
    "reply",
    [
        b"SMTP ready\r\n\r\n",  # not HTTP
        b'HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{"id"',  # cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk size
        b"HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n",
    ],
)
def test_a_broken_reply_is_a_transient_connection_error(raw, reply):
    server = raw(lambda request: (reply, True))
    client = make_client(server.url)
    try:
        with pytest.raises(E.LlmConnectionError) as caught:
            complete(client, "hello")
    finally:
        client.close()
    assert caught.value.transient
    assert len(server.targets) == 1  # a fresh connection's failure is not resent by the transport


def test_a_proxy_in_the_environment_is_used(raw, monkeypatch):
    """With HTTP_PROXY set the SDK's client keeps httpx's own transports, which send through the proxy
    (the request target is then the absolute URL)."""
    proxy = raw(sized)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))
    client = make_client("http://127.0.0.1:9/v1")
    try:
        result = complete(client, "via the proxy")
    finally:
        client.close()
    assert result.output.text_clean == "via the proxy"
    assert proxy.targets == ["http://127.0.0.1:9/v1/responses"]


def test_close_from_another_thread_ends_a_request_in_flight_as_cancelled():
    with LlmServer() as server:
        server.on("slow", srv.Reply(delay=60.0, body=b"{}"))
        client = make_client(server.base_url, llm_timeout=120.0)
        outcome: list[BaseException] = []
        sending = threading.Event()

        def send() -> None:
            try:
                complete(client, "ready")  # this thread's connection is open
                sending.set()
                complete(client, "slow")
            except BaseException as exc:  # the test inspects what was raised
                outcome.append(exc)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        assert sending.wait(timeout=30)
        while len(server.requests) < 2:  # the slow request has reached the server
            thread.join(timeout=0.01)
        client.close()
        thread.join(timeout=30)  # the reply would take a minute: the close ends the wait
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], E.LlmCancelled)
