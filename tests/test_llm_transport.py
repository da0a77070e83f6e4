"""The lean HTTP/1.1 transport under the SDK's client, against servers that frame replies every legal way.

The LLM client (the real openai SDK) talks to a small raw TCP server here, so each test controls the
bytes on the wire: connections closed while idle, chunked and close-delimited bodies, broken replies, a
proxy. No database is involved, so these tests run once.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx2
import pytest
from httpx2._decoders import SUPPORTED_DECODERS
from support import llm_server as srv
from support.llm_server import LlmRequest, LlmServer
from support.waiting import wait_for

from tg_parser.config import load_settings
from tg_parser.llm import errors as E
from tg_parser.llm.client import LlmClient, LlmConfig
from tg_parser.llm.transport import LeanTransport
from tg_parser.processing.schema import processed_document_format

# What the raw server does with one request: the bytes to send (None: send nothing) and whether to close
# the connection afterwards (True, or "reset" to close it with a TCP reset).
Step = Callable[[LlmRequest], tuple[bytes | None, bool | str]]


@dataclass
class RawServer:
    """Answers the requests it receives, on whatever connection, with `steps` in order (the last one
    repeats); records each request's target and which connection carried it."""

    steps: list[Step]
    tls: ssl.SSLContext | None = None  # serve HTTPS with this context
    targets: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # per request, names in lower case
    connections: list[int] = field(default_factory=list)  # per request: its connection's number
    handshakes_failed: int = 0

    def __post_init__(self) -> None:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                if owner.tls is not None:
                    try:
                        conn = owner.tls.wrap_socket(conn, server_side=True)
                    except OSError:  # the client refused the certificate
                        with owner._lock:
                            owner.handshakes_failed += 1
                        return
                with owner._lock:
                    owner._accepted += 1
                    number = owner._accepted
                with conn.makefile("rb") as reader:
                    while owner._answer(reader, conn, number):
                        pass

        self._accepted = 0
        self._lock = threading.Lock()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return self.url_for("127.0.0.1")

    def url_for(self, host: str) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, reader, conn: socket.socket, number: int) -> bool:
        """Read one request and answer it; False when the connection is done."""
        line = reader.readline()
        if not line:
            return False
        target = line.split()[1].decode()
        headers: dict[str, str] = {}
        while (header := reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            headers[name.strip().lower().decode()] = value.strip().decode()
        body = json.loads(reader.read(int(headers.get("content-length", 0))) or b"{}")
        with self._lock:
            self.targets.append(target)
            self.headers.append(headers)
            self.connections.append(number)
            step = self.steps[min(len(self.targets), len(self.steps)) - 1]
        data, close = step(LlmRequest(target, body, headers, 0.0))
        if data is not None:
            conn.sendall(data)
        if close == "reset":  # close now, with a TCP reset rather than a FIN (no shutdown first)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(conn.detach())
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

    def start(*steps: Step, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(list(steps), tls))
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


# --- TLS: a self-signed certificate for "localhost", trusted the way a user trusts a custom CA ------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, ssl.SSLContext]:
    """The certificate file (its own CA, for DNS:localhost only) and a TLS 1.3 server context serving
    it (TLS 1.3 servers send session tickets after the handshake: the idle check must not take them for a
    close)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"]
    command += ["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:TRUE"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    return str(cert), context


@pytest.fixture
def trust(monkeypatch):
    """SSL_CERT_FILE as a user sets it for a gateway with its own CA (read when the LLM client starts)."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    return lambda path: monkeypatch.setenv("SSL_CERT_FILE", path)


def test_tls_with_a_custom_ca_keeps_one_connection_alive(raw, certificate, trust):
    path, context = certificate
    trust(path)
    server = raw(sized, chunked, sized, tls=context)
    client = make_client(server.url_for("localhost"))
    try:
        outputs = [complete(client, f"over TLS #{n}").output for n in range(6)]
    finally:
        client.close()
    assert [o.text_clean for o in outputs] == [f"over TLS #{n}" for n in range(6)]
    assert server.connections == [1] * 6  # the session tickets did not make the idle connection "closed"


def test_an_untrusted_certificate_is_refused_with_the_reason_and_not_retried(raw, certificate, trust):
    server = raw(sized, tls=certificate[1])  # SSL_CERT_FILE unset: the system's CAs only
    client = make_client(server.url_for("localhost"), llm_max_retries=3)
    try:
        with pytest.raises(E.LlmCertificateRefused) as caught:
            complete(client, "hello")
    finally:
        client.close()
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    message = str(caught.value)
    assert message.startswith(f"the TLS certificate of localhost:{port} was refused")
    assert "certificate verify failed: self-signed certificate" in message and "\n" not in message
    assert "SSL_CERT_FILE" in caught.value.hint and "CA" in caught.value.hint
    # a configuration problem: the run stops (exit status 3), and the message is not blamed for it
    assert caught.value.fatal and not caught.value.retryable and not caught.value.permanent
    assert caught.value.exit_code == 3 and caught.value.attempts == 1
    # the server counts the refused handshake in its own thread, after the client gave up
    wait_for(lambda: server.handshakes_failed, timeout=10, what="the refused handshake")
    assert server.handshakes_failed == 1 and server.targets == []


def test_a_certificate_for_another_host_is_refused(raw, certificate, trust):
    path, context = certificate
    trust(path)
    server = raw(sized, tls=context)
    client = make_client(server.url_for("127.0.0.1"), llm_max_retries=2)  # it names localhost only
    try:
        with pytest.raises(E.LlmCertificateRefused) as caught:
            complete(client, "hello")
    finally:
        client.close()
    assert "mismatch, certificate is not valid for '127.0.0.1'" in str(caught.value)
    assert "OPENAI_BASE_URL" in caught.value.hint and caught.value.attempts == 1
    wait_for(lambda: server.handshakes_failed, timeout=10, what="the refused handshake")
    assert server.handshakes_failed == 1 and server.targets == []


def test_close_from_another_thread_ends_a_tls_handshake_in_progress():
    """A server that accepts the connection but never answers the TLS hello: close() ends the wait."""
    with socket.create_server(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:
        listener.settimeout(30)
        client = make_client(f"https://127.0.0.1:{listener.getsockname()[1]}/v1", llm_timeout=120.0)
        sent = pool.submit(complete, client, "hello")
        accepted, _ = listener.accept()  # the client is connected: its hello waits for an answer
        with accepted:
            client.close()
            # the handshake would wait two minutes: the close ends it
            assert isinstance(sent.exception(timeout=30), E.LlmCancelled)


# --- framing edge cases (RFC 9112), through the real SDK and through httpx's client --------------------


@pytest.mark.parametrize("coding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_reply_is_decoded(raw, coding, compress):
    def compressed(request: LlmRequest) -> tuple[bytes, bool]:
        body = compress(answer(request))
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\n"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body, False

    server = raw(compressed)
    client = make_client(server.url)
    try:
        outputs = [complete(client, f"packed #{n}").output for n in range(2)]
    finally:
        client.close()
    assert [o.text_clean for o in outputs] == ["packed #0", "packed #1"]
    assert server.connections == [1, 1]


def encoded(coding: str, status: int = 200) -> Step:
    """A reply whose body claims the content coding `coding` (its bytes are not in any coding)."""

    def step(request: LlmRequest) -> tuple[bytes, bool]:
        body = b"\x1b\x00\x00\x00 not JSON in any coding"
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\n"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body, False

    return step


@pytest.mark.parametrize("via", ["lean", "proxy"])
def test_the_client_asks_only_for_the_codings_it_decodes(raw, monkeypatch, via):
    server = raw(sized)
    url = server.url
    if via == "proxy":  # httpx's own transports
        monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/v1"))
        url = "http://127.0.0.1:9/v1"
    client = make_client(url)
    try:
        complete(client, "hello")
    finally:
        client.close()
    asked = [c.strip() for c in server.headers[0]["accept-encoding"].split(",")]
    assert asked == ["gzip", "deflate"]  # not br or zstd, even where their packages are installed
    assert set(asked) <= set(SUPPORTED_DECODERS)


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, br", "x-custom"])
@pytest.mark.parametrize("via", ["lean", "proxy"])
def test_a_reply_in_a_coding_not_asked_for_is_refused_at_once_naming_it(raw, monkeypatch, via, coding):
    server = raw(encoded(coding))
    url = server.url
    if via == "proxy":
        monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/v1"))
        url = "http://127.0.0.1:9/v1"
    client = make_client(url, llm_max_retries=3)
    try:
        with pytest.raises(E.LlmUnexpectedEncoding) as caught:
            complete(client, "hello")
    finally:
        client.close()
    unexpected = coding.removeprefix("gzip, ")
    assert f"is encoded as {unexpected} (Content-Encoding)" in str(caught.value)
    assert "127.0.0.1:" in str(caught.value) and "gzip, deflate" in (caught.value.hint or "")
    assert caught.value.permanent and not caught.value.retryable and caught.value.attempts == 1
    assert len(server.targets) == 1


def test_an_error_reply_in_a_coding_not_asked_for_keeps_its_status(raw):
    """The status decides an error reply (a 429 still pauses and is retried): its body is only a message."""
    server = raw(encoded("br", status=503), sized)
    client = make_client(server.url, llm_max_retries=1)
    try:
        result = complete(client, "after a 503")
    finally:
        client.close()
    assert result.output.text_clean == "after a 503" and result.attempts == 2


def reply(head: bytes, body: bytes = b"", *, close: bool = False) -> Step:
    return lambda request: (head + b"\r\n\r\n" + body, close)


def send(server: RawServer, count: int) -> list[httpx2.Response]:
    """`count` requests through httpx's client on one lean transport."""
    with httpx2.Client(transport=LeanTransport(ssl.create_default_context()), timeout=30) as client:
        return [client.post(f"{server.url}/responses", json={"n": n}) for n in range(count)]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234",  # the length of what was not sent
    ],
)
def test_a_reply_that_has_no_body_is_not_read_to_the_close(raw, head):
    server = raw(reply(head), reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2", b"ok"))
    first, second = send(server, 2)  # hung until the read timeout when the body was read to the close
    assert (first.content, second.content) == (b"", b"ok")
    assert server.connections == [1, 1]


@pytest.mark.parametrize(
    "head, reused",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2", False),  # HTTP/1.0 closes unless it says keep-alive
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2", True),  # repeated, equal
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2", True),
    ],
)
def test_when_a_connection_is_reused(raw, head, reused):
    server = raw(reply(head, b"ok"))  # the server never closes: the client decides
    assert [r.content for r in send(server, 2)] == [b"ok", b"ok"]
    assert server.connections == ([1, 1] if reused else [1, 2])


def test_chunked_wins_over_a_content_length_and_the_connection_is_not_reused(raw):
    server = raw(
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", b"2\r\nok\r\n0\r\n\r\n")
    )
    assert [r.content for r in send(server, 2)] == [b"ok", b"ok"]
    assert server.connections == [1, 2]


def test_differing_content_lengths_are_refused(raw):
    server = raw(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3", b"ok!"))
    with pytest.raises(httpx2.RemoteProtocolError, match="Content-Length"):
        send(server, 1)


def test_an_obs_fold_continues_the_header_field(raw):
    server = raw(reply(b"HTTP/1.1 200 OK\r\nX-Note: one\r\n  two\r\nContent-Length: 2", b"ok"))
    (response,) = send(server, 1)
    assert response.headers["x-note"] == "one two" and response.content == b"ok"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_reply_far_bigger_than_the_read_buffer_is_read_whole(raw, framing):
    body = bytes(range(256)) * 8192  # 2 MiB
    if framing == "length":
        step = reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % len(body), body)
    else:
        pieces = b"".join(b"%x\r\n%s\r\n" % (65536, body[i : i + 65536]) for i in range(0, len(body), 65536))
        step = reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", pieces + b"0\r\n\r\n")
    server = raw(step)
    assert [r.content == body for r in send(server, 2)] == [True, True]
    assert server.connections == [1, 1]


@pytest.mark.parametrize(
    "answer_line",
    [
        b"POST /v1/responses HTTP/1.1 Authorization: Bearer sk-proj-SECRET1234\r\n\r\n",  # status line
        b"HTTP/1.1 400 Bad Request\r\nAuthorization Bearer sk-proj-SECRET1234\r\n\r\n",  # header line
        b"HTTP/1.1 200 OK\r\nContent-Length: sk-proj-SECRET1234\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nBearer sk-proj-SECRET1234\r\n",
    ],
)
def test_an_error_quoting_the_server_never_shows_an_api_key_it_echoed(raw, answer_line):
    server = raw(lambda request: (answer_line, True))
    with pytest.raises(httpx2.RemoteProtocolError) as caught:
        send(server, 1)
    assert "SECRET1234" not in str(caught.value) and "<redacted>" in str(caught.value)


def test_a_reply_sent_before_the_body_was_read_is_returned():
    """A server that answers 413 after the request head and closes with the body unread: the send
    fails (connection reset), and the reply it had sent is what the caller gets."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                received = b""
                while b"\r\n\r\n" not in received:
                    received += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with httpx2.Client(transport=LeanTransport(ssl.create_default_context()), timeout=30) as client:
            response = client.post(
                f"http://127.0.0.1:{listener.getsockname()[1]}/v1", content=b"x" * 8_000_000
            )
        thread.join(timeout=30)
    assert (response.status_code, response.content) == (413, b"too large")


def test_a_connection_on_a_descriptor_past_1023_is_kept_alive(raw):
    """select() refuses descriptors past FD_SETSIZE (1024): the idle check must not take that for a
    close, which would reconnect every request of a process with many files open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:  # a default limit of 1024: raise it for this process, as a busy server would
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"the hard limit on open files ({hard}) is below the 1,100 this test opens")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    server = raw(sized)
    copies = [os.dup(0)]
    try:
        while copies[-1] < 1100:  # every descriptor up to 1100 taken (the lowest free one comes next)
            copies.append(os.dup(0))
        for fd in copies[-40:]:  # the client's sockets get 1061..1100
            os.close(fd)
        del copies[-40:]
        client = make_client(server.url)
        try:
            outputs = [complete(client, f"high fd #{n}").output for n in range(3)]
            assert client._sdk._client._transport._sock.fileno() > 1023
        finally:
            client.close()
    finally:
        for fd in copies:
            os.close(fd)
    assert [o.text_clean for o in outputs] == [f"high fd #{n}" for n in range(3)]
    assert server.connections == [1, 1, 1]


def test_a_reply_that_stalls_times_out_and_the_retry_goes_on_a_new_connection(raw):
    """The read timeout bounds each wait for bytes (as httpx's does): a reply that stops mid-body ends as
    our timeout, which the client retries, on a fresh connection (the stalled one is dropped)."""
    stalled = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5000", b'{"id": "resp_')
    server = raw(stalled, sized)
    client = make_client(server.url, llm_timeout=0.5, llm_max_retries=1)
    try:
        result = complete(client, "after a stall")
    finally:
        client.close()
    assert result.output.text_clean == "after a stall"
    assert result.attempts == 2
    assert server.connections == [1, 2]


def test_a_stalled_reply_without_retries_is_a_transient_timeout(raw):
    server = raw(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5000", b'{"id": "resp_'))
    client = make_client(server.url, llm_timeout=0.5)
    try:
        with pytest.raises(E.LlmTimeout) as caught:
            complete(client, "stalls")
    finally:
        client.close()
    assert caught.value.transient and len(server.targets) == 1


def test_a_reused_connection_reset_mid_reply_is_not_sent_again(raw):
    """Once the reply has begun the server has done the work: a reset then is an error (the client's
    retries decide), not a stale connection to send the request on again."""
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b'{"id": "resp_' * 2000
    server = raw(sized, lambda request: (cut, "reset"))
    client = make_client(server.url)
    try:
        complete(client, "first")
        with pytest.raises(E.LlmConnectionError):
            complete(client, "second")
    finally:
        client.close()
    assert server.connections == [1, 1]  # sent once
