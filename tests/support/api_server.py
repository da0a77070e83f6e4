"""Helpers for the HTTP API tests: an in-process uvicorn server on a loopback port, a `tg-parser serve`
subprocess, a small HTTP client on http.client (no extra dependencies), a TCP proxy that can be cut and
restored, and a webhook receiver.

Every wait here has a deadline; nothing sleeps for time to pass.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvicorn

from tg_parser.api.app import create_app
from tg_parser.api.keys import create_key
from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database

ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a client ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:300]!r})"


@dataclass
class Client:
    """A minimal HTTP client for one server: raw paths go out exactly as given."""

    host: str
    port: int
    key: str | None = None
    timeout: float = 15.0

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        key: str | bool | None = True,
        chunked: bool = False,
    ) -> Answer:
        sent = {"Connection": "close"}
        token = self.key if key is True else (key or None)
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            if chunked:
                connection.putrequest(method, path, skip_accept_encoding=True)
                for name, value in sent.items():
                    connection.putheader(name, value)
                connection.putheader("Transfer-Encoding", "chunked")
                connection.endheaders()
                data = body or b""
                try:
                    for start in range(0, len(data), 8192):
                        piece = data[start : start + 8192]
                        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    connection.send(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered early and closed; read its answer
            else:
                # The server may answer a large body early (413) and close: read its answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Answer:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        return self.request("DELETE", path, **kwargs)

    def with_key(self, key: str | None) -> Client:
        return Client(self.host, self.port, key, self.timeout)


def new_key(db: Database, name: str, scope: str = "read") -> str:
    token, _ = create_key(db, name, scope)
    return token


def scoped_keys(settings: Settings) -> dict[str, str]:
    """One key per scope, each named after its scope: {"read": token, "write": token, "admin": token}."""
    db = open_database(settings)
    try:
        return {scope: new_key(db, scope, scope) for scope in ("read", "write", "admin")}
    finally:
        db.close()


# --- an in-process server ---------------------------------------------------------------------------


class ThreadedApi:
    """The API app on uvicorn in a thread, on a free loopback port; `with ThreadedApi(settings) as api`."""

    def __init__(self, settings: Settings, *, execute_runs: bool = False, db: Database | None = None) -> None:
        self.app = create_app(settings, db=db, execute_runs=execute_runs)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)
        self.port = 0

    @property
    def state(self) -> Any:
        return self.app.state.api

    def client(self, key: str | None = None) -> Client:
        return Client("127.0.0.1", self.port, key)

    def start(self) -> ThreadedApi:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 20, what="uvicorn to start")
        assert self.server.started, "uvicorn did not start"
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def __enter__(self) -> ThreadedApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- `tg-parser serve` as a process -----------------------------------------------------------------


class ServeProcess:
    """`python -m tg_parser serve` (or any tg-parser command) as a child process with a test environment."""

    def __init__(
        self, env: Mapping[str, str], *args: str, port: int | None = None, log: Path, cwd: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.log = log
        full = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "API_", "LOG_"))}
        full.update(env)
        full.setdefault("PYTHONUNBUFFERED", "1")
        self.command = [sys.executable, "-m", "tg_parser", *args]
        if args and args[0] == "serve" and "--port" not in args:
            self.command += ["--port", str(self.port)]
        self._log_file = open(log, "wb")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            self.command,
            env=full,
            cwd=str(cwd or ROOT),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def client(self, key: str | None = None) -> Client:
        return Client("127.0.0.1", self.port, key)

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        client = self.client()

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                return client.get("/health").status == 200
            except OSError:
                return False

        wait_for(up, timeout, interval=0.1, what=f"/health on port {self.port}")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        """SIGKILL the process group (uvicorn's worker processes too)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        if not self._log_file.closed:
            self._log_file.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()
        elif not self._log_file.closed:
            self._log_file.close()


# --- a TCP proxy that can be cut ----------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `stop()` refuses new connections and cuts open ones,
    `start()` serves again on the same port."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                with self._lock:
                    if a not in self._sockets:
                        return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.discard(a)
                self._sockets.discard(b)

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets = list(self._sockets)
            self._sockets.clear()
        if listener is not None:
            listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


# --- a webhook receiver -------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class WebhookReceiver:
    """Records every POST; answers with the statuses in `script` first, then 200."""

    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    before_answer: Callable[[int], None] | None = None  # called with the request's index, may block
    gets: list[str] = field(default_factory=list)  # paths of GET requests (a followed redirect makes one)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    index = len(receiver.received) - 1
                    status = receiver.script.pop(0) if receiver.script else 200
                if receiver.before_answer is not None:
                    receiver.before_answer(index)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/moved")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def serving(settings: Settings, **kwargs: Any) -> Iterator[ThreadedApi]:
    with ThreadedApi(settings, **kwargs) as api:
        yield api


# --- data -------------------------------------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "channel_export" / "result.json"
EXAMPLE_CHANNEL = 1500000001
EXAMPLE_SOURCE = "export-1500000001"


def cli(settings: Settings, *args: str, **env: str) -> Any:
    """Run `tg-parser ARGS` in this process against the test install; returns click's Result."""
    from click.testing import CliRunner

    from support.cli import db_env
    from tg_parser.cli.main import cli as tg_parser

    return CliRunner().invoke(
        tg_parser, list(args), env={**db_env(settings), "LOG_LEVEL": "WARNING", **env}, catch_exceptions=False
    )


def seed_example(settings: Settings, out: Path) -> None:
    """The example channel export ingested and run offline: sources, messages, documents and topics."""
    result = cli(settings, "ingest", "--from-export", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    result = cli(settings, "run", "--out", str(out))
    assert result.exit_code == 0, result.output


def checksums(settings: Settings) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table (`tg-parser db checksum --json`), without the rate-limit
    counters, which every authenticated request bumps."""
    result = cli(settings, "db", "checksum", "--json")
    assert result.exit_code == 0, result.output
    tables = json.loads(result.stdout)["tables"]
    return {
        t["table"]: (t["rows"], t["checksum"]) for t in tables if t["table"] != "processing.api_rate_windows"
    }
