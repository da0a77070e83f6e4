"""Logging (DESIGN.md §11): text and JSON lines, a run id on every line (also from stdlib loggers such as
psycopg.pool and yoyo), and secrets — above all a DSN password — never reaching the log or the terminal.

The failed-login path needs a server that checks passwords; the test PostgreSQL trusts 127.0.0.1, so a
small fake server speaks the start of the PostgreSQL protocol: it asks for a cleartext password,
records what the client sent (which proves the password arrives byte for byte) and refuses it the way
a real server does (SQLSTATE 28P01).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner
from loguru import logger
from psycopg_pool import ConnectionPool, PoolTimeout

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db import migrations
from tg_parser.errors import EXIT_CONFIG
from tg_parser.logging import new_run_id, redact, register_secrets, setup_logging

PASSWORD = "p@ss:w/rd%;'\""
ENCODED = quote(PASSWORD, safe="")
DSN = f"postgresql://bob:{ENCODED}@db.example:5432/tgp"
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \| (?P<level>[A-Z]+) *\| (?P<run>[0-9a-z_-]+) \| (?P<name>\S+) \| (?P<msg>.*)$"
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """setup_logging reconfigures process-wide state; put back what other tests expect."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("yoyo", "psycopg", "psycopg.pool")}
    yield
    logger.remove()
    logger.configure(extra={}, patcher=None)
    logger.add(sys.stderr)
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _leaks(text: str) -> list[str]:
    """Which forms of the password appear in `text` (raw, percent-encoded, libpq-escaped)."""
    forms = {PASSWORD, ENCODED, PASSWORD.replace("'", "\\'"), "p@ss:w/rd"}
    return [form for form in forms if form in text]


# --- formats and run id -----------------------------------------------------------------------------


def test_text_lines_carry_the_run_id_including_stdlib_loggers() -> None:
    sink = io.StringIO()
    run_id = setup_logging("DEBUG", "text", run_id="run-abc123", sink=sink)
    assert run_id == "run-abc123"
    logger.info("own line")
    logger.bind(store="raw").warning("with {braces} and <tags>")
    logging.getLogger("psycopg.pool").info("pool %r is ready to use", "tg-parser")
    logging.getLogger("yoyo.migrations").debug("applying 0001.initial")
    logging.getLogger("some.library").error("library said %s", "no")
    # Only this test's lines: a thread another test left behind (a pool, a server) may log meanwhile.
    mine = (
        "own line",
        "with {braces}",
        "pool 'tg-parser' is ready",
        "applying 0001.initial",
        "library said no",
    )
    lines = [line for line in sink.getvalue().splitlines() if any(text in line for text in mine)]
    assert len(lines) == 5
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert {m["run"] for m in parsed if m} == {"run-abc123"}
    assert [(m["level"], m["name"]) for m in parsed if m] == [
        ("INFO", __name__),
        ("WARNING", __name__),
        ("INFO", "psycopg.pool"),
        ("DEBUG", "yoyo.migrations"),
        ("ERROR", "some.library"),
    ]
    assert parsed[1]["msg"] == "with {braces} and <tags>"  # type: ignore[index]
    assert parsed[2]["msg"] == "pool 'tg-parser' is ready to use"  # type: ignore[index]


def test_a_libpq_message_over_several_lines_is_one_log_line() -> None:
    """The pool logs each failed reconnect attempt with libpq's message, which runs over two lines."""
    sink = io.StringIO()
    setup_logging("INFO", "text", run_id="run-pq", sink=sink)
    refused = (
        'connection failed: connection to server at "127.0.0.1", port 5999 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", "tg-parser", refused)
    lines = [line for line in sink.getvalue().splitlines() if "run-pq" in line or line.startswith("\t")]
    assert len(lines) == 1, lines
    match = TEXT_LINE.match(lines[0])
    assert match and match["name"] == "psycopg.pool", lines
    assert match["msg"].endswith(
        "Connection refused Is the server running on that host and accepting TCP/IP connections?"
    )


def test_json_lines_are_objects_with_run_id_logger_and_utc_time() -> None:
    sink = io.StringIO()
    setup_logging("INFO", "json", run_id="run-json1", sink=sink)
    logger.bind(source_id="chan", count=3).info("stored")
    logging.getLogger("psycopg.pool").warning("error connecting in %r", "pool-1")
    lines = sink.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["run_id"] for r in records] == ["run-json1", "run-json1"]
    assert [r["logger"] for r in records] == [__name__, "psycopg.pool"]
    assert records[0]["extra"] == {"source_id": "chan", "count": 3}
    assert records[1]["message"] == "error connecting in 'pool-1'" and records[1]["level"] == "WARNING"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["time"]) for r in records)


def test_level_filtering_and_chatty_libraries() -> None:
    sink = io.StringIO()
    setup_logging("INFO", "text", sink=sink)
    logger.debug("hidden debug")
    logging.getLogger("yoyo.migrations").info("yoyo narrates a step")  # quiet unless debugging
    logging.getLogger("psycopg.pool").info("connection given by 'tg-parser'")  # per checkout: quiet
    logging.getLogger("psycopg.pool").warning("pool warning")
    logger.info("shown")
    out = sink.getvalue()
    assert "hidden debug" not in out and "yoyo narrates" not in out and "connection given" not in out
    assert "pool warning" in out and "shown" in out


def test_each_setup_gets_a_new_run_id() -> None:
    first, second = new_run_id(), new_run_id()
    assert first != second and re.fullmatch(r"[0-9a-f]{12}", first)
    sink = io.StringIO()
    a = setup_logging("INFO", "text", sink=sink)
    logger.info("one")
    b = setup_logging("INFO", "text", sink=sink)
    logger.info("two")
    assert a != b
    assert [m["run"] for m in map(TEXT_LINE.match, sink.getvalue().splitlines()) if m] == [a, b]


def test_yoyo_and_psycopg_lines_from_real_work_carry_the_run_id(tmp_path: Path, pg_dbname: str) -> None:
    """Real library log records (not hand-made ones) arrive through loguru with the run id."""
    from conftest import pg_settings, sqlite_settings

    sink = io.StringIO()
    setup_logging("DEBUG", "json", run_id="run-real", sink=sink)
    migrations.upgrade(sqlite_settings(tmp_path / "fresh"))
    from tg_parser.db.connect import open_database

    db = open_database(pg_settings(pg_dbname))
    try:
        db.fetch_one("health_raw")
    finally:
        db.close()
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    loggers = {r["logger"] for r in records}
    assert any(name.startswith("yoyo") for name in loggers), loggers
    assert "psycopg.pool" in loggers, loggers
    assert {r["run_id"] for r in records} == {"run-real"}


# --- redaction --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"connecting to {DSN}", "connecting to postgresql://bob:***@db.example:5432/tgp"),
        ("postgres+psycopg://u:plainpw@h/db?schema=raw", "postgres+psycopg://u:***@h/db?schema=raw"),
        ("host=h password=plainpw dbname=x", "host=h password=*** dbname=x"),
        ("host=h password='it\\'s a pw' dbname=x", "host=h password=*** dbname=x"),
        ("api_key: sk-123456789", "api_key: ***"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
    ],
)
def test_redact_shapes_of_credentials(text: str, kept: str) -> None:
    assert redact(text) == kept


def test_registered_secrets_are_masked_anywhere() -> None:
    register_secrets(["tok-registered-123", "ab"])  # too short values are not registered
    assert redact("x tok-registered-123 y") == "x *** y"
    assert redact("abc") == "abc"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_dsn_password_never_reaches_the_log(fmt: str) -> None:
    settings = Settings(_env_file=None, db_type="postgres", database_url=DSN)  # type: ignore[call-arg]
    register_secrets(settings.secrets())
    sink = io.StringIO()
    setup_logging("DEBUG", fmt, sink=sink)

    logger.info(f"connecting to {DSN}")
    logger.info("raw password in a message: {}", PASSWORD)
    logger.bind(dsn=DSN).warning("dsn in extra fields")
    logging.getLogger("psycopg").warning("conninfo: password='%s'", PASSWORD.replace("'", "\\'"))
    # A real driver error that quotes the DSN it was given, logged with its traceback.
    bad_dsn = f"postgresql://bob:{ENCODED}@[broken/db"
    with pytest.raises(psycopg.ProgrammingError) as caught:
        psycopg.connect(bad_dsn)
    assert ENCODED in str(caught.value)  # the driver does quote it: this is what we must hide
    try:
        raise caught.value
    except psycopg.Error:
        logger.exception("connect failed")
        logging.getLogger("psycopg.pool").exception("pool connect failed")
    try:
        raise RuntimeError(f"wrapped: {PASSWORD}")
    except RuntimeError:
        logger.opt(exception=True).error("wrapped error")

    out = sink.getvalue()
    assert _leaks(out) == [], out
    assert out.count("***") >= 6
    assert "Traceback" in out  # the tracebacks are still there, only masked
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines()]
        assert sum("exception" in r for r in records) == 3
        # DATABASE_URL as a whole is a registered secret, so the configured DSN is masked entirely.
        assert records[2]["extra"]["dsn"] == "***"


# --- the failed-login path, end to end --------------------------------------------------------------


class FakePostgres:
    """Accepts TCP connections, asks for a cleartext password, records it and refuses the login."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.passwords: list[str] = []
        self.users: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    (length,) = struct.unpack("!I", self._read(conn, 4))
                    body = self._read(conn, length - 4)
                    (code,) = struct.unpack("!I", body[:4])
                    if code in (80877103, 80877104):  # SSLRequest / GSSENCRequest: not here
                        conn.sendall(b"N")
                        continue
                    break
                fields = body[4:].split(b"\0")
                params = dict(zip(fields[0::2], fields[1::2], strict=False))
                user = params.get(b"user", b"").decode()
                self.users.append(user)
                conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
                tag = self._read(conn, 1)
                (length,) = struct.unpack("!I", self._read(conn, 4))
                payload = self._read(conn, length - 4)
                if tag == b"p":
                    self.passwords.append(payload.rstrip(b"\0").decode())
                message = f'password authentication failed for user "{user}"'.encode()
                error = b"SFATAL\0VFATAL\0C28P01\0M" + message + b"\0\0"
                conn.sendall(b"E" + struct.pack("!I", len(error) + 4) + error)
            except (ConnectionError, OSError, struct.error):
                return


@pytest.fixture
def fake_pg() -> Iterator[FakePostgres]:
    server = FakePostgres()
    yield server
    server.close()


def _bad_login_envs(port: int) -> list[dict[str, str]]:
    return [
        {
            "DB_TYPE": "postgres",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(port),
            "DB_USER": "bob",
            "DB_NAME": "tgp",
            "DB_PASSWORD": PASSWORD,
        },
        {"DB_TYPE": "postgres", "DATABASE_URL": f"postgresql://bob:{ENCODED}@127.0.0.1:{port}/tgp"},
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("variant", ["parts", "url"])
@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["health"], 1),
        (["health", "--json"], 1),
        (["sources", "list"], EXIT_CONFIG),
        (["db", "status"], EXIT_CONFIG),
        (["init"], EXIT_CONFIG),
        (["sql", "explain", "sources_get", "-p", "source_id=x"], EXIT_CONFIG),
    ],
)
def test_wrong_password_one_clear_line_and_no_password_anywhere(
    fake_pg: FakePostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    variant: str,
    log_format: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    env = _bad_login_envs(fake_pg.port)[0 if variant == "parts" else 1]
    env.update({"LOG_LEVEL": "DEBUG", "LOG_FORMAT": log_format})
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    # The password reached the server intact (so a failure is about the value, not its encoding)…
    assert fake_pg.passwords and set(fake_pg.passwords) == {PASSWORD}
    assert set(fake_pg.users) == {"bob"}
    # …and never the terminal or the log, in any form.
    assert _leaks(result.output) == [], result.output
    assert "Traceback" not in result.output
    where = f"127.0.0.1:{fake_pg.port}"
    if args[0] == "health":
        report = result.stdout
        assert where in report and "password authentication failed" in report
        if "--json" in args:
            assert json.loads(report)["ok"] is False
    elif log_format == "json":  # the error is a JSON line like the others
        records = [json.loads(line) for line in result.stderr.splitlines()]
        errors = [r["message"] for r in records if r["level"] == "ERROR"]
        assert len(errors) == 1
        assert where in errors[0] and 'password authentication failed for user "bob"' in errors[0]
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1
        assert where in errors[0] and 'password authentication failed for user "bob"' in errors[0]
        assert errors[0].endswith("DB_HOST/DB_PORT/DB_USER/DB_PASSWORD are right")
    if log_format == "json":  # everything logged on the way is well-formed and carries a run id
        for line in result.stderr.splitlines():
            assert json.loads(line)["run_id"]


@pytest.mark.slow
def test_wrong_password_in_a_real_process_even_with_debug(fake_pg: FakePostgres, tmp_path: Path) -> None:
    """All of stderr of a real process, with --debug (tracebacks and debug logs on)."""
    for env_extra in _bad_login_envs(fake_pg.port):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "LOG_"))}
        env.update(env_extra)
        for args in (["sources", "list"], ["--debug", "sources", "list"], ["--debug", "health"]):
            proc = subprocess.run(
                [sys.executable, "-m", "tg_parser", *args],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode != 0
            assert _leaks(proc.stdout + proc.stderr) == [], proc.stderr
            assert f"127.0.0.1:{fake_pg.port}" in proc.stdout + proc.stderr
            if "--debug" not in args:
                assert proc.returncode == EXIT_CONFIG
                assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert set(fake_pg.passwords) == {PASSWORD}


def test_pool_failures_logged_by_psycopg_pool_carry_run_id_and_no_password(fake_pg: FakePostgres) -> None:
    """psycopg.pool's own warnings about failed connections go through our redaction and run id."""
    sink = io.StringIO()
    register_secrets([PASSWORD])
    setup_logging("INFO", "json", run_id="run-pool", sink=sink)
    pool = ConnectionPool(
        conninfo=f"postgresql://bob:{ENCODED}@127.0.0.1:{fake_pg.port}/tgp",
        min_size=1,
        open=False,
        reconnect_timeout=1,
    )
    try:
        pool.open(wait=False)
        with pytest.raises(PoolTimeout):
            pool.wait(timeout=1.0)
    finally:
        pool.close()
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    pool_lines = [r for r in records if r["logger"] == "psycopg.pool"]
    assert pool_lines, records
    assert {r["run_id"] for r in records} == {"run-pool"}
    assert any("password authentication failed" in r["message"] for r in pool_lines)
    assert _leaks(sink.getvalue()) == []
