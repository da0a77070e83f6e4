"""A lean HTTP/1.1 transport for the SDK's HTTP client: one keep-alive connection, one thread.

The `openai` SDK sends through an httpx client, whose default transport is a connection pool (httpcore)
speaking HTTP/1.1 through h11's event machinery: about a third of the CPU a request costs this process
(pool bookkeeping, per-request locks, h11 events and header validation), and the LLM client already
gives every sending thread an SDK client, and so a pool, of its own. This transport is what such a pool
of one does, in a few socket calls: the request head and body in one `sendall`, the reply read through a
buffered reader (status line, headers, then Content-Length, chunked or read-to-close body). The SDK's own
request building, auth, headers, timeouts and typed errors are unchanged: the transport only moves bytes,
and raises httpx's exceptions (ConnectError, ReadTimeout, RemoteProtocolError, ...) so the SDK maps them
as it always does.

Framing follows RFC 9112 section 6.3 (no body on 204/304/HEAD, chunked over Content-Length, HTTP/1.0
closes unless keep-alive); the read timeout applies to each receive, as httpx's does. Error messages
quote only the server's bytes, with credential-shaped text elided.

A reused connection that fails before any byte of the reply arrived (the server closed it while idle)
is reconnected once and the request sent again, as a pool would. Used only without a proxy in the
environment (`lean_transport_applies`): proxies keep httpx's own transports.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import urllib.request
from typing import BinaryIO

import httpx2

_MAX_LINE = 65536
_MAX_HEADERS = 200


def lean_transport_applies() -> bool:
    """False when a proxy is configured in the environment (httpx would route through it); NO_PROXY
    alone configures none."""
    return not {"http", "https", "all"} & set(urllib.request.getproxies())


class _Stale(Exception):
    """A reused connection was found closed before the reply began: reconnect and send again."""


class LeanTransport(httpx2.BaseTransport):
    """HTTP/1.1 over one keep-alive connection (plain or TLS); not shared between threads."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._origin: tuple[bytes, str, int] | None = None
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None
        self._connecting: socket.socket | None = None  # during the TLS handshake: for close() to end it
        self._closed = False

    # --- httpx's transport interface ------------------------------------------------------------------

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.raw_scheme, url.host, url.port or (443 if url.raw_scheme == b"https" else 80))
        head = self._head(request)
        body = request.read()
        for fresh in (False, True):
            reused = self._ready(origin, timeouts.get("connect"), fresh)
            try:
                return self._exchange(head, body, timeouts, request, reused)
            except _Stale:
                self._drop()
        raise httpx2.RemoteProtocolError("the server closed the connection twice", request=request)

    def close(self) -> None:
        """Close for good; may be called from another thread while a request waits on its reply (the LLM
        client closes every thread's SDK client when a run stops): the shutdown ends that wait, and the
        request is not sent again."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            _shutdown(connecting)  # the handshake's wait ends
        self._drop()

    def _drop(self) -> None:
        sock, reader = self._sock, self._reader
        self._sock = self._reader = None
        self._origin = None
        if sock is not None:
            _shutdown(sock)
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    # --- one exchange -----------------------------------------------------------------------------------

    @staticmethod
    def _head(request: httpx2.Request) -> bytes:
        url = request.url
        lines = [request.method.encode("ascii") + b" " + url.raw_path + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in request.headers.raw]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _ready(self, origin: tuple[bytes, str, int], connect_timeout: float | None, fresh: bool) -> bool:
        """Connect unless an open connection to `origin` can be reused; True if it was reused."""
        if self._closed:
            raise httpx2.ConnectError("the transport is closed")
        if self._sock is not None and (fresh or self._origin != origin or _readable(self._sock)):
            self._drop()  # another origin, or the server closed it (or sent junk) while it was idle
        if self._sock is not None:
            return True
        scheme, host, port = origin
        sock = None
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == b"https":
                sock = self._ssl.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
                self._connecting = sock
                if self._closed:  # closed while connecting: no handshake
                    raise OSError("the transport is closed")
                sock.do_handshake()
        except OSError as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise httpx2.ConnectTimeout(str(exc) or "connect timed out") from exc
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        finally:
            self._connecting = None
        self._sock, self._origin = sock, origin
        self._reader = sock.makefile("rb")
        if self._closed:  # closed while connecting; set after the socket, so one of us drops it
            self._drop()
            raise httpx2.ConnectError("the transport is closed")
        return False

    def _exchange(
        self,
        head: bytes,
        body: bytes,
        timeouts: dict[str, float | None],
        request: httpx2.Request,
        reused: bool,
    ) -> httpx2.Response:
        sock, reader = self._sock, self._reader
        assert sock is not None and reader is not None
        try:
            sock.settimeout(timeouts.get("write"))
            sock.sendall(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                sock.sendall(body)
        except TimeoutError as exc:
            self._drop()
            raise httpx2.WriteTimeout(str(exc) or "write timed out", request=request) from exc
        except OSError as exc:
            early = _early_reply(reader, request)
            self._drop()
            if early is not None:
                return early
            if reused:
                raise _Stale from exc
            raise httpx2.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        status_line = b""
        try:
            sock.settimeout(timeouts.get("read"))
            status_line = reader.readline(_MAX_LINE + 1)
            if not status_line:
                self._drop()
                if reused:
                    raise _Stale
                raise httpx2.RemoteProtocolError(
                    "the server closed the connection without a reply", request=request
                )
            status, http10, headers = _read_head(status_line, reader, request)
            while 100 <= status < 200:  # interim replies (100 Continue) precede the real one
                status, http10, headers = _read_head(reader.readline(_MAX_LINE + 1), reader, request)
            content, keep = _read_body(reader, status, http10, headers, request)
        except TimeoutError as exc:
            self._drop()
            raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except OSError as exc:
            self._drop()
            if reused and not status_line and isinstance(exc, ConnectionResetError):  # nothing came back
                raise _Stale from exc
            raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        except httpx2.RemoteProtocolError:
            self._drop()
            raise
        if not keep:
            self._drop()
        return _response(status, headers, content)


def _response(status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> httpx2.Response:
    return httpx2.Response(
        status, headers=headers, stream=httpx2.ByteStream(content), extensions={"http_version": b"HTTP/1.1"}
    )


def _early_reply(reader: BinaryIO, request: httpx2.Request) -> httpx2.Response | None:
    """The reply a server sent before it stopped reading the request's body (a 413, a 401), which is why
    sending failed; None if there is none. Read with the socket's current (write) timeout."""
    try:
        status_line = reader.readline(_MAX_LINE + 1)
        if not status_line:
            return None
        status, http10, headers = _read_head(status_line, reader, request)
        content, _ = _read_body(reader, status, http10, headers, request)
    except (OSError, httpx2.RemoteProtocolError):
        return None
    return _response(status, headers, content)


def _shutdown(sock: socket.socket) -> None:
    """End any wait on `sock` in another thread. The plain socket's shutdown, also for a TLS socket: its
    own drops its TLS state first, which a thread reading or shaking hands on it may be using."""
    with contextlib.suppress(OSError):  # not connected (any more)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _readable(sock: socket.socket) -> bool:
    """An idle connection with something to read was closed (or broken) by the server. poll, not
    select: select refuses descriptors past 1023, which would reconnect every request of a busy process."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _read_head(
    status_line: bytes, reader: BinaryIO, request: httpx2.Request
) -> tuple[int, bool, list[tuple[bytes, bytes]]]:
    """The status, whether the reply is HTTP/1.0, and the header fields (an obs-fold continuation line
    joined to its field with a space, as RFC 9112 section 5.2 asks of a user agent)."""
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx2.RemoteProtocolError(f"malformed status line: {_quote(status_line)}", request=request)
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return int(parts[1]), parts[0] == b"HTTP/1.0", headers
        if not line or len(line) > _MAX_LINE or len(headers) >= _MAX_HEADERS:
            raise httpx2.RemoteProtocolError("malformed or truncated reply headers", request=request)
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            if line[:1] in (b" ", b"\t") and headers:  # obs-fold: the previous field goes on
                name, value = headers.pop()
                headers.append((name, (value + b" " + line.strip()).strip()))
                continue
            raise httpx2.RemoteProtocolError(f"malformed header line: {_quote(line)}", request=request)
        headers.append((name, value.strip()))


_SECRET = re.compile(rb"(?i)(bearer\s+|sk-|key[=:]\s*)\S+")


def _quote(raw: bytes) -> str:
    """The start of a line the server sent, for an error message: a server or proxy echoing the request
    back could quote our API key, so anything shaped like a credential is elided."""
    return repr(_SECRET.sub(rb"\1<redacted>", raw[:80]))


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value if found is None else found + b"," + value
    return found


def _read_body(
    reader: BinaryIO, status: int, http10: bool, headers: list[tuple[bytes, bytes]], request: httpx2.Request
) -> tuple[bytes, bool]:
    """The reply body (RFC 9112 section 6.3), and whether the connection can be reused after it."""
    connection = (_header(headers, b"connection") or b"").lower()
    keep = b"keep-alive" in connection if http10 else b"close" not in connection
    if request.method == "HEAD" or status in (204, 304):  # never a body, whatever the headers say
        return b"", keep
    encoding = (_header(headers, b"transfer-encoding") or b"").lower()
    if encoding:
        if encoding.rsplit(b",", 1)[-1].strip() != b"chunked":
            return reader.read(), False  # an encoding we do not frame: the body runs to the close
        # chunked wins over a Content-Length, but such a reply may be a smuggling attempt: not reused
        return _read_chunked(reader, request), keep and _header(headers, b"content-length") is None
    length = _header(headers, b"content-length")
    if length is None:
        return reader.read(), False
    if not length.isdigit():
        values = {value.strip() for value in length.split(b",")}  # repeated but equal values are one
        if len(values) != 1 or not (length := values.pop()).isdigit():
            raise httpx2.RemoteProtocolError(f"bad Content-Length: {_quote(length)}", request=request)
    size = int(length)
    content = reader.read(size)
    if len(content) < size:
        raise httpx2.RemoteProtocolError("the server closed the connection mid-reply", request=request)
    return content, keep


def _read_chunked(reader: BinaryIO, request: httpx2.Request) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = reader.readline(_MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx2.RemoteProtocolError(f"bad chunk size: {_quote(line)}", request=request) from None
        if size == 0:
            while reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers: not used
            return b"".join(chunks)
        chunk = reader.read(size)
        if len(chunk) < size or reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise httpx2.RemoteProtocolError("the server closed the connection mid-chunk", request=request)
        chunks.append(chunk)
