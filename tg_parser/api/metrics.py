"""Prometheus metrics: HTTP requests and latency by route and status, the pool, and pipeline gauges read
from the database on each scrape.

With several API worker processes the HTTP counters are shared through prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `tg-parser serve`); the database gauges are read
by whichever process answers the scrape, and the pool figures are that process's pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from loguru import logger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tg_parser.db.base import Database
from tg_parser.errors import DatabaseUnavailable, TgParserError
from tg_parser.stores.metrics import MetricsStore
from tg_parser.stores.run_queue import RunQueueStore

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # the *_created series only double what Prometheus stores
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tg_parser_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tg_parser_http_request_duration_seconds",
            "Time to answer an HTTP request (until the response started), by route template and method.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

        # The labelled children, looked up once per (route, method, status): `labels()` takes a lock
        # and builds a key on every call, which a hot route pays per request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            if len(self._children) < 1000:  # route templates × methods × statuses: a bounded set
                self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)


class _DatabaseCollector(Collector):
    def __init__(self, db: Callable[[], Database | None]) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "tg_parser_database_up", "1 when the database answered this scrape (a ping of at most 2 s)."
        )
        db = self.db()
        try:
            if db is None:
                raise DatabaseUnavailable("the database is not open")
            # A short ping first: with the database down a scrape answers at once with the HTTP metrics
            # and database_up 0, instead of waiting DB_POOL_TIMEOUT for a connection and failing whole.
            db.ping(timeout=2.0)
            gauges = MetricsStore(db).gauges()
            runs_by_status = RunQueueStore(db).count_by_status()
        except Exception as exc:  # a scrape must answer even so: HTTP metrics, and database_up 0
            if not isinstance(exc, TgParserError):
                logger.warning("metrics: database gauges failed: {}", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, key, text in (
            ("tg_parser_messages", "messages", "Raw messages stored."),
            ("tg_parser_documents", "documents", "Processed documents stored."),
            ("tg_parser_live_leases", "live_leases", "Messages leased by a processing worker right now."),
            ("tg_parser_skipped", "skipped", "Messages skipped: nothing to process (media only)."),
            ("tg_parser_topics", "topics", "Topic cards."),
        ):
            yield GaugeMetricFamily(name, text, value=gauges[key])
        failures = GaugeMetricFamily(
            "tg_parser_failures",
            "Journaled processing failures (skips not counted).",
            labels=["error_class", "permanent"],
        )
        for row in gauges["failures"]:
            failures.add_metric([row["error_class"], str(row["permanent"]).lower()], row["n"])
        yield failures
        runs = GaugeMetricFamily("tg_parser_runs", "Queued runs by status.", labels=["status"])
        for status, count in runs_by_status.items():
            runs.add_metric([status], count)
        yield runs
        if db.dialect == "postgres":
            stats = db.stats()
            for name, key, text in (
                ("tg_parser_db_pool_size", "pool_size", "Connections in this process's pool."),
                ("tg_parser_db_pool_available", "pool_available", "Idle connections in this process's pool."),
                (
                    "tg_parser_db_pool_waiting",
                    "requests_waiting",
                    "Requests waiting for a pooled connection.",
                ),
            ):
                yield GaugeMetricFamily(name, text, value=stats.get(key, 0))


def render(http: HttpMetrics, db: Callable[[], Database | None]) -> bytes:
    """The text exposition: HTTP metrics (of every worker process when they share a directory) and the
    database gauges."""
    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(http.registry)
    db_registry = CollectorRegistry(auto_describe=False)
    db_registry.register(_DatabaseCollector(db))
    return text + generate_latest(db_registry)
