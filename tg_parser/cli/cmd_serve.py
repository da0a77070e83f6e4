"""tg-parser serve: the HTTP API (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import tempfile
from typing import Any

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.errors import ConfigError, InvalidInput


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on."
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="API worker processes."
)
@click.option(
    "--execute-runs/--no-execute-runs",
    default=None,
    help="Also execute queued runs in this process (default: on with SQLite, off with PostgreSQL, "
    "where 'tg-parser worker' does it).",
)
@pass_app
def command(app: AppContext, host: str, port: int, workers: int, execute_runs: bool | None) -> None:
    """Serve the HTTP API: OpenAPI docs at /docs, probes at /health, /ready and /metrics.

    \b
    API keys are required (create one with 'tg-parser api-keys create NAME'); with
    API_REQUIRE_KEYS=false the API serves without keys and refuses a non-loopback --host.
    See docs/API.md for routes, scopes, rate limits, pagination, runs and webhooks.

    \b
    Examples:
      tg-parser serve
      tg-parser serve --host 0.0.0.0 --port 8080 --workers 2
    """
    settings = app.settings
    if not settings.api_require_keys and not _loopback(host):
        raise ConfigError(
            f"API_REQUIRE_KEYS is false, so the API will not listen on {host}",
            "listen on 127.0.0.1 (a reverse proxy can face the network), or require keys",
        )
    _check_listen(host, port)
    app.database()  # fail now, with one line, if the database is unreachable or behind
    app.close()
    import uvicorn

    if execute_runs is not None:
        os.environ["TG_PARSER_EXECUTE_RUNS"] = "1" if execute_runs else "0"
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Worker processes share their HTTP counters through files in one directory (removed on exit).
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tg-parser-metrics-")
    click.echo(
        f"Serving the tg-parser API on http://{host}:{port} ({workers} worker(s)); docs at /docs", err=True
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then raises the signal again with the handler
    # that was there before it started: this one, so a requested stop exits 0 (as `worker` does), not 143.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(
            "tg_parser.api.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_listen(host: str, port: int) -> None:
    """Fail now, with one line, when --host names no address or the port cannot be bound (uvicorn would
    log its own error and exit 1 or 3 after announcing that it serves)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:  # no such name; a label too long for IDNA
        raise InvalidInput(
            f"--host {host[:100]!r} is not an address: {exc}",
            "give an IP address or a name of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "give an address of this machine and a free --port",
        ) from None


def _stopped(signum: int, frame: Any) -> None:
    raise SystemExit(0)
