"""The HTTP API: FastAPI over the same stores, named SQL and pool as the CLI.

Routes are plain `def` functions (FastAPI runs them in its thread pool, where the synchronous stores
belong); each one checks its caller first (`gate.require`), then calls a store or a pipeline function
and shapes the answer. No SQL and no business rule lives here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from tg_parser import __version__
from tg_parser.api.auth import Gatekeeper
from tg_parser.api.errors import ApiError, error_response
from tg_parser.api.metrics import HttpMetrics
from tg_parser.config import Settings, load_settings
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database
from tg_parser.errors import TgParserError
from tg_parser.health import collect_health
from tg_parser.ingestion.sources import SourceNotFound
from tg_parser.logging import redact, setup_logging
from tg_parser.stores.api import ApiStore

if TYPE_CHECKING:
    from tg_parser.pipeline.queue import QueueWorker

# Seconds a healthy report is reused by /ready (an unhealthy one is recomputed every time).
HEALTH_TTL = 5.0
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ApiState:
    """What the routes share: settings, the process's one database (opened lazily, reopened after a
    failed start), the gate and the metrics."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self._db = db
        self._owns_db = db is None
        self._lock = threading.Lock()
        self.http = HttpMetrics()
        self.worker: RunWorkerThread | None = None
        self._health: tuple[float, dict[str, Any]] | None = None

    def database(self) -> Database:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = open_database(self.settings)
        return self._db

    def database_if_open(self) -> Database | None:
        return self._db

    def health(self, db: Database) -> dict[str, Any]:
        """The health report, recomputed at most every HEALTH_TTL seconds (a readiness probe answers many
        times a second; migrations do not change that often). Pool figures are always current."""
        now = time.monotonic()
        with self._lock:
            cached = self._health
        if cached is None or now - cached[0] > HEALTH_TTL or not cached[1]["ok"]:
            report = collect_health(self.settings, lambda: db)
            cached = (now, report)
            with self._lock:
                self._health = cached
        report = dict(cached[1])
        if db.dialect == "postgres":
            report["pool"] = db.stats()
        return report

    @property
    def gate(self) -> Gatekeeper:
        gate = getattr(self, "_gate", None)
        if gate is None:
            gate = self._gate = Gatekeeper(self.settings, ApiStore(self.database()))
        return gate

    def close(self) -> None:
        if self._owns_db and self._db is not None:
            self._db.close()
            self._db = None


def create_app(
    settings: Settings | None = None, *, db: Database | None = None, execute_runs: bool | None = None
) -> FastAPI:
    settings = settings or load_settings()
    state = ApiState(settings, db)
    if execute_runs is None:
        execute_runs = settings.db_type == "sqlite"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state.database()
        except TgParserError as exc:  # start anyway: /ready says what is wrong until it is fixed
            logger.warning("database not available at start-up: {}", exc.one_line())
        if execute_runs:
            _start_run_worker(state)
        yield
        if state.worker is not None:
            state.worker.stop.set()
            state.worker.thread.join(timeout=30)
        state.close()

    app = FastAPI(
        title="tg-parser API",
        version=__version__,
        summary="Telegram channels collected, enriched and grouped into topics, as a knowledge base.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.api = state
    _install_error_handlers(app)
    from tg_parser.api import routes

    # The routes go straight into the app's route list instead of through include_router: FastAPI then
    # keeps each included router as a nested matcher that every request walks (~30 µs a request here,
    # a tenth of a readiness probe). The routes already carry their full paths and tags.
    app.router.routes.extend([*routes.probes.routes, *routes.v1.routes])
    origins = [o.strip() for o in (settings.api_cors_origins or "").split(",") if o.strip()]
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(RequestContext, state=state)
    return app


def app_from_environment() -> FastAPI:
    """The factory `tg-parser serve` hands to uvicorn (each worker process calls it)."""
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    execute = os.environ.get("TG_PARSER_EXECUTE_RUNS")
    return create_app(settings, execute_runs=None if execute is None else execute == "1")


class RunWorkerThread:
    """The API process's own run worker (`serve --execute-runs`): a thread that waits for the database
    (the API may start while it is away), then runs a QueueWorker, which outlives later outages."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.stop = threading.Event()
        self.queue: QueueWorker | None = None  # once the database has opened
        self.thread = threading.Thread(target=self._loop, name="run-worker", daemon=True)

    def _loop(self) -> None:
        from tg_parser.pipeline.queue import QueueWorker

        while not self.stop.is_set():
            try:
                db = self.state.database()
            except TgParserError as exc:
                logger.warning("run worker: {}", exc.one_line())
                self.stop.wait(self.state.settings.worker_poll_seconds)
                continue
            self.queue = QueueWorker(db, self.state.settings, stop=self.stop)
            self.queue.run_forever()


def _start_run_worker(state: ApiState) -> None:
    state.worker = RunWorkerThread(state)
    state.worker.thread.start()


# --- errors ---------------------------------------------------------------------------------------


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, REQUEST_ID.get(), exc.headers)

    @app.exception_handler(TgParserError)
    async def _tool_error(request: Request, exc: TgParserError) -> Response:
        status = {2: 422, 3: 503, 4: 409, 5: 503}.get(exc.exit_code, 500)
        if isinstance(exc, SourceNotFound):
            status = 404
        code = {404: "not_found", 409: "locked", 422: "invalid", 503: "unavailable"}.get(status, "failed")
        return error_response(status, code, redact(exc.one_line()), REQUEST_ID.get())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(
                str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path")
            )
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return error_response(422, "invalid", "; ".join(problems), REQUEST_ID.get())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, code, message, REQUEST_ID.get(), getattr(exc, "headers", None))


# --- the request context --------------------------------------------------------------------------


class KeyName:
    """The name of the key a request presented, once verified: a log line's `key` (never the key itself).

    The request context puts one on every log line of the request before the key is known; the gate
    fills it in, and lines logged after that (in any thread serving the request) carry the name.
    """

    name = "-"

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


class RequestContext:
    """Pure ASGI middleware: a request id on every request (and every log line it causes), the body
    size limit (413), metrics by route template, one access log line, and a 500 with the request id
    for anything unexpected — never a traceback, DSN or key in the answer."""

    def __init__(self, app: Any, state: ApiState) -> None:
        self.app = app
        self.state = state
        self.limit = state.settings.api_max_body_bytes
        # The access line is INFO: with a higher LOG_LEVEL it is not built at all (loguru would build a
        # bound logger and the arguments first, then drop the line).
        self.access_log = state.settings.log_level in ("TRACE", "DEBUG", "INFO")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and set(incoming) <= _SAFE_ID else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status_holder = [500]
        response_started = [False]

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._reply(send, 413, "too_large", f"request body over {self.limit} bytes", request_id)
            self._finish(scope, 413, started, request_id)
            REQUEST_ID.reset(token)
            return

        received = [0]
        too_large = [False]

        async def limited_receive() -> Any:
            if too_large[0]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > self.limit:
                    # A body without Content-Length (chunked) that grew too large. Raising here would reach
                    # FastAPI's body reader, which turns any error into a 400: answer 413 now instead, and
                    # tell the app the client is gone (whatever it answers then is dropped).
                    too_large[0] = True
                    if not response_started[0]:
                        response_started[0] = True
                        status_holder[0] = 413
                        await self._reply(
                            send, 413, "too_large", f"request body over {self.limit} bytes", request_id
                        )
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Any) -> None:
            if too_large[0]:
                return
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        holder = KeyName()
        scope.setdefault("state", {})["key_name"] = holder
        try:
            with logger.contextualize(request_id=request_id, key=holder):
                await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            if too_large[0]:
                return  # the 413 is sent; `finally` records it
            cause = exc.__cause__
            if response_started[0] and isinstance(cause, TgParserError):
                # A known failure after the headers went out (a streamed export whose database went
                # away): the stream was cut, which is all the client can be told; the log gets one line.
                logger.bind(request_id=request_id).error(
                    "request failed after its answer started: {}", redact(cause.one_line())
                )
            else:
                logger.bind(request_id=request_id).opt(exception=exc).error(
                    "request failed: {}", type(exc).__name__
                )
            if not response_started[0]:
                await self._reply(
                    send, 500, "internal", f"internal error; request id {request_id}", request_id
                )
            status_holder[0] = 500
        finally:
            self._finish(scope, status_holder[0], started, request_id)
            REQUEST_ID.reset(token)

    def _finish(self, scope: dict[str, Any], status: int, started: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        seconds = time.perf_counter() - started
        self.state.http.observe(template, scope["method"], status, seconds)
        if not self.access_log:
            return
        caller = (
            getattr(scope.get("state", {}).get("caller"), "name", None)
            if isinstance(scope.get("state"), dict)
            else None
        )
        logger.bind(request_id=request_id, key=caller).info(
            "{} {} -> {} in {:.1f} ms", scope["method"], template, status, seconds * 1000
        )

    @staticmethod
    async def _reply(send: Any, status: int, code: str, message: str, request_id: str) -> None:
        response = error_response(status, code, message, request_id)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": response.body})


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
