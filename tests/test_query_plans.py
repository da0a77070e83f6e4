"""The query-plan gate: every named query, with its `-- example:` values, on a realistically sized database.

A generated data set (200k raw messages over a few large channels and many small ones, a third of them
comments; processed documents for the older 90 %, the newest 10 % queued; counters, versions, failures,
leases, topics, runs) is loaded with SQL, analysed, and every query of the dialect's catalog is
explained with its example values. A query fails the gate when its plan

- on PostgreSQL: reads a large table with a Seq Scan, or sorts (an explicit Sort node) the rows of a
  large table, more than SORT_ROWS of them;
- on SQLite: SCANs a large table without an index (`SCAN x`, not `SCAN x USING ... INDEX`);

unless its header declares the exception with the reason (`-- plan: seqscan-ok <why>`,
`-- plan: sort-ok <why>`). A query with parameters and no `-- example:` line fails too. A table is large
when the data set gives it LARGE_ROWS rows or more.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import PG_HOST, PG_PORT, PG_USER, sqlite_settings

from tg_parser.config import Settings
from tg_parser.db.catalog import Query, SqlCatalog
from tg_parser.db.codec import adapt_pg_params
from tg_parser.db.connect import open_database
from tg_parser.db.params import parameter_names, typed_value

LARGE_ROWS = 10_000
SORT_ROWS = 1_000
MESSAGES = 200_000

STORE_TABLES = {
    "raw": ["raw_messages", "raw_message_counters", "raw_message_versions", "pending_work"],
    "processing": [
        "processed_documents",
        "processing_failures",
        "work_leases",
        "topic_cards",
        "topic_channels",
        "topic_bundles",
        "topic_channel_state",
        "runs",
        "run_requests",
        "api_keys",
        "api_rate_windows",
    ],
    "ingestion": ["sources", "ingest_runs", "comment_cursors", "comment_threads_unavailable"],
}


def _data_set(ts: Callable[[str], str], js: Callable[[str], str], nums: str) -> list[str]:
    """The generating statements; `ts(seconds)` and `js(text)` write a timestamp and a JSON value in the
    dialect, `nums` creates the temporary table nums(n) holding 1..MESSAGES."""
    # Channels 1-3 are large (40k messages each); 297 small ones share the other 80k.
    chan = "(CASE WHEN n <= 120000 THEN 1 + (n - 1) % 3 ELSE 4 + (n - 120001) % 297 END)"
    typ = "(CASE WHEN n % 3 = 0 THEN 'comment' ELSE 'post' END)"

    def source(c: str) -> str:
        return f"(CASE WHEN {c} = 1 THEN 'durov' ELSE 'channel_' || CAST({c} AS TEXT) END)"

    src = source(chan)
    cid = f"(1500000000 + {chan})"
    ref = f"('tg:' || CAST({cid} AS TEXT) || ':' || {typ} || ':' || CAST(n AS TEXT))"
    date = "(1704067200 + n * 150)"  # 2024-01-01 on, one message every 150 s: ~a year
    payload = js('\'{"_": "Message", "id": \' || CAST(n AS TEXT) || \'}\'')
    subjects = js("'[\"subject ' || CAST(n % 97 AS TEXT) || '\"]'")
    steps = js('\'["ingest", "process"]\'')
    return [
        nums,
        f"""INSERT INTO ingestion.sources (source_id, channel_id, username, title, kind, status, include_comments,
                last_post_id, fail_count, comments_unavailable, created_at, updated_at)
            SELECT {source("n")}, 1500000000 + n, {source("n")}, 'Channel ' || CAST(n AS TEXT), 'telegram',
                   CASE WHEN n % 50 = 0 THEN 'paused' ELSE 'active' END, TRUE, n, 0, FALSE,
                   {ts("1704067200")}, {ts("1704067200")}
            FROM nums WHERE n <= 300""",
        f"""INSERT INTO raw.raw_messages (source_ref, source_id, channel_id, message_id, message_type, date,
                edit_date, text, thread_id, parent_message_id, grouped_id, views, forwards, replies, media_type,
                media, raw_payload, payload_truncated, payload_size, inserted_at)
            SELECT {ref}, {src}, {cid}, n, {typ}, {ts(date)},
                   CASE WHEN n % 40 = 0 THEN {ts(date + " + 3600")} END,
                   'Message ' || CAST(n AS TEXT) || ' about subject ' || CAST(n % 97 AS TEXT),
                   CASE WHEN n % 3 = 0 THEN n - 1 END, CASE WHEN n % 3 = 0 THEN n - 1 END,
                   CASE WHEN n % 25 = 0 THEN n END, n % 10007, n % 13, n % 31,
                   CASE WHEN n % 10 = 0 THEN 'photo' END, CASE WHEN n % 10 = 0 THEN {js("'{}'")} END,
                   {payload}, FALSE, 180,
                   {ts(date + " + 60")}
            FROM nums""",
        f"""INSERT INTO raw.raw_message_counters (source_ref, views, forwards, replies, observed_at)
            SELECT {ref}, n % 10007 + 100, n % 13, n % 31, {ts(date + " + 7200")} FROM nums WHERE n % 2 = 0""",
        f"""INSERT INTO raw.raw_message_versions (source_ref, observed_at, edit_date, text, raw_payload)
            SELECT {ref}, {ts(date + " + 3600")}, {ts(date + " + 3600")}, 'Edited ' || CAST(n AS TEXT),
                   {js("'{}'")}
            FROM nums WHERE n % 40 = 0""",
        f"""INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
            SELECT {ref}, {cid}, {ts(date)}, {src} FROM nums WHERE n > 180000""",
        f"""INSERT INTO processing.processed_documents (source_ref, id, channel_id, message_date, processed_at,
                text_clean, summary, topics, entities, language, model, prompt_id, pipeline_version,
                input_tokens, output_tokens, metadata)
            SELECT {ref}, 'doc:' || {ref}, {cid}, {ts(date)}, {ts(date + " + 600")},
                   'Message ' || CAST(n AS TEXT), 'Summary ' || CAST(n AS TEXT),
                   {subjects}, {js("'[]'")},
                   'en', 'gpt-4o-mini', 'extract-v1', '1', 400, 80, {js("'{}'")}
            FROM nums WHERE n <= 180000""",
        f"""INSERT INTO processing.processing_failures (source_ref, channel_id, error_class, error_message,
                permanent, attempts, first_failed_at, last_failed_at, run_id, skipped)
            SELECT {ref}, {cid}, 'LlmRefusal', 'the model refused', n % 200 = 0, 1, {ts(date)}, {ts(date)},
                   'run-1', FALSE
            FROM nums WHERE n > 180000 AND n % 100 = 0""",
        f"""INSERT INTO processing.work_leases (source_ref, worker_id, leased_at, expires_at)
            SELECT {ref}, 'worker-1', {ts("1748779200")}, {ts("1748779500")}
            FROM nums WHERE n > 180000 AND n <= 180500""",
        f"""INSERT INTO processing.topic_cards (topic_id, channel_id, title, summary, kind, anchors, tags, model,
                prompt_id, created_at, updated_at, metadata)
            SELECT 't_' || CAST(n AS TEXT), 1500000000 + 1 + n % 300, 'Topic ' || CAST(n AS TEXT), 'About it',
                   CASE WHEN n % 4 = 0 THEN 'singleton' ELSE 'cluster' END, {js("'[]'")}, {js("'[]'")},
                   'gpt-4o-mini', 'topics-v1', {ts("1748779200")}, {ts("1748779200")}, {js("'{}'")}
            FROM nums WHERE n <= 3000""",
        """INSERT INTO processing.topic_channels (topic_id, channel_id)
            SELECT topic_id, channel_id FROM processing.topic_cards""",
        f"""INSERT INTO processing.topic_bundles (topic_id, channel_id, items, updated_at)
            SELECT topic_id, channel_id, {js("'[]'")}, updated_at FROM processing.topic_cards""",
        f"""INSERT INTO processing.topic_channel_state (channel_id, corpus_as_of, computed_at, strategy)
            SELECT channel_id, {ts("1748779200")}, {ts("1748779200")}, 'llm' FROM ingestion.sources""",
        f"""INSERT INTO processing.runs (run_id, kind, started_at, finished_at, status, params, counts)
            SELECT 'run-' || CAST(n AS TEXT), CASE WHEN n % 2 = 0 THEN 'process' ELSE 'ingest' END,
                   {ts("1704067200 + n * 6000")}, {ts("1704067200 + n * 6000 + 60")}, 'ok', {js("'{}'")},
                   {js("'{}'")}
            FROM nums WHERE n <= 5000""",
        f"""INSERT INTO processing.run_requests (run_id, steps, source_id, options, requested_by, status,
                progress, counts, created_at, webhook_attempts)
            SELECT 'req-' || CAST(n AS TEXT), {steps}, NULL, {js("'{}'")}, 'k_1',
                   CASE WHEN n > 1990 THEN 'queued' ELSE 'succeeded' END, {js("'{}'")}, {js("'{}'")},
                   {ts("1704067200 + n * 15000")}, 0
            FROM nums WHERE n <= 2000""",
        f"""INSERT INTO ingestion.ingest_runs (source_id, run_id, started_at, finished_at, success,
                posts_fetched, posts_inserted, comments_fetched, comments_inserted, versions_recorded)
            SELECT CASE WHEN n % 300 = 0 THEN 'durov' ELSE 'channel_' || CAST(1 + n % 300 AS TEXT) END,
                   'run-' || CAST(n AS TEXT), {ts("1704067200 + n * 1500")}, {ts("1704067200 + n * 1500 + 30")},
                   TRUE, 10, 8, 5, 4, 0
            FROM nums WHERE n <= 20000""",
        f"""INSERT INTO ingestion.comment_cursors (source_id, thread_id, last_comment_id, updated_at)
            SELECT {src}, n, n + 2, {ts(date)} FROM nums WHERE n % 3 = 1 AND n <= 3000""",
    ]


def _pg_data_set() -> list[str]:
    return _data_set(
        lambda seconds: f"to_timestamp({seconds})",
        lambda text: f"CAST({text} AS jsonb)",
        f"CREATE TEMP TABLE nums AS SELECT n FROM generate_series(1, {MESSAGES}) AS n",
    )


def _sqlite_data_set() -> list[str]:
    return _data_set(
        lambda seconds: f"(strftime('%Y-%m-%dT%H:%M:%f', {seconds}, 'unixepoch') || '000Z')",
        lambda text: text,
        "CREATE TEMP TABLE nums AS WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        f"WHERE n < {MESSAGES}) SELECT n FROM s",
    )


def example_values(query: Query) -> dict[str, object]:
    """The query's `-- example:` values, typed as `tg-parser sql explain` types them."""
    assert query.example is not None or not parameter_names(query.sql), f"{query.location}: no example"
    return {key: typed_value(value) for key, value in (query.example or {}).items()}


def test_every_query_with_parameters_has_a_complete_example() -> None:
    problems = []
    for dialect in ("sqlite", "postgres"):
        for query in SqlCatalog.load(dialect):
            params = set(parameter_names(query.sql))
            if not params:
                continue
            if query.example is None:
                problems.append(f"{query.location} {query.name}: no '-- example:' line")
            elif set(query.example) != params:
                missing, extra = sorted(params - set(query.example)), sorted(set(query.example) - params)
                problems.append(
                    f"{query.location} {query.name}: example misses {missing}, names unknown {extra}"
                )
    assert not problems, "\n".join(problems)


# --- PostgreSQL --------------------------------------------------------------------------------------


def _pg_nodes(node: dict, parents: tuple[dict, ...] = ()) -> Iterator[tuple[dict, tuple[dict, ...]]]:
    yield node, parents
    for child in node.get("Plans", ()):
        yield from _pg_nodes(child, (*parents, node))


def _pg_relations(node: dict) -> set[str]:
    return {
        f"{n['Schema']}.{n['Relation Name']}"
        for n, _ in _pg_nodes(node)
        if "Relation Name" in n and "Schema" in n
    }


def pg_plan_problems(plan: dict, large: set[str]) -> list[tuple[str, str]]:
    """(kind, what) for each Seq Scan of a large table and each Sort of many rows of one."""
    problems = []
    for node, parents in _pg_nodes(plan):
        relation = f"{node.get('Schema')}.{node.get('Relation Name')}"
        # An unfiltered scan under a LIMIT reads the first rows only (a liveness probe's LIMIT 1).
        bounded = "Filter" not in node and any(p["Node Type"] == "Limit" for p in parents)
        if node["Node Type"] == "Seq Scan" and relation in large and not bounded:
            problems.append(("seqscan-ok", f"Seq Scan on {relation}"))
        if node["Node Type"] == "Sort":
            child = node["Plans"][0]
            touched = sorted(_pg_relations(child) & large)
            if touched and child.get("Plan Rows", 0) > SORT_ROWS:
                problems.append(("sort-ok", f"Sort of ~{child['Plan Rows']} rows of {', '.join(touched)}"))
    return problems


@pytest.fixture
def pg_loaded(pg_only_settings: Settings) -> Iterator[tuple[str, set[str]]]:
    """A PostgreSQL test database with the data set, analysed; and its large tables."""
    settings = pg_only_settings
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=settings.db_name) as conn:
        for statement in _pg_data_set():
            conn.execute(statement)
        conn.commit()
        conn.autocommit = True
        # VACUUM too: a table autovacuum has visited has its visibility map set, which is what makes
        # an index-only scan (the plan of the counting queries) cheaper than reading the heap.
        conn.execute("VACUUM ANALYZE")
        large = {
            f"{schema}.{table}"
            for schema, table, rows in conn.execute(
                "SELECT n.nspname, c.relname, c.reltuples FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('raw', 'processing', 'ingestion') AND c.relkind = 'r'"
            )
            if rows >= LARGE_ROWS
        }
    yield settings.db_name, large


# Loading the data set costs ~10 s of CPU per dialect; on a shared machine the wall time is several times that.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_postgres_plans_use_indexes_on_large_tables(pg_loaded: tuple[str, set[str]]) -> None:
    dbname, large = pg_loaded
    assert {"raw.raw_messages", "processing.processed_documents", "raw.pending_work"} <= large
    problems = []
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True) as conn:
        for query in SqlCatalog.load("postgres"):
            try:
                params = adapt_pg_params(example_values(query))
                (plan,) = conn.execute(
                    "EXPLAIN (FORMAT JSON, VERBOSE) " + query.pyformat, params or None
                ).fetchone()
            except (psycopg.Error, AssertionError) as exc:
                problems.append(f"{query.location} {query.name}: cannot explain: {str(exc).splitlines()[0]}")
                continue
            for kind, what in pg_plan_problems(plan[0]["Plan"], large):
                if kind not in query.plan_exceptions:
                    problems.append(f"{query.location} {query.name}: {what} (no '-- plan: {kind} <why>')")
    assert not problems, "\n".join(problems)


# --- SQLite ------------------------------------------------------------------------------------------

_TABLE_REF = re.compile(r"\b(raw|processing|ingestion)\.(\w+)(?:\s+(?:AS\s+)?(\w+))?", re.IGNORECASE)
_SCAN = re.compile(r"^SCAN (?:(\w+)\.)?(\w+)(.*)$")


def sqlite_plan_problems(query: Query, details: list[str], large: set[str]) -> list[tuple[str, str]]:
    """(kind, what) for each SCAN of a large table that uses no index."""
    names: dict[str, str] = {}
    for schema, table, alias in _TABLE_REF.findall(query.sql):
        names[table] = f"{schema}.{table}"
        if alias:
            names.setdefault(alias, f"{schema}.{table}")
    problems = []
    for detail in details:
        match = _SCAN.match(detail.strip())
        if not match or "INDEX" in match.group(3):
            continue
        schema, name = match.group(1), match.group(2)
        table = f"{schema}.{name}" if schema else names.get(name)
        if table in large:
            problems.append(("seqscan-ok", f"{detail.strip()} ({table}, no index)"))
    return problems


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sqlite_plans_use_indexes_on_large_tables(sqlite_dir: Path) -> None:
    db = open_database(sqlite_settings(sqlite_dir))
    try:
        conn = db.raw_connection()
        for statement in _sqlite_data_set():
            conn.execute(statement)
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
        large = {
            f"{schema}.{table}"
            for schema, tables in STORE_TABLES.items()
            for table in tables
            if conn.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0] >= LARGE_ROWS
        }
        assert {"raw.raw_messages", "processing.processed_documents", "raw.pending_work"} <= large
        problems = []
        for query in db.catalog:
            try:
                details = db.explain(query.name, example_values(query))
            except Exception as exc:
                problems.append(f"{query.location} {query.name}: cannot explain: {exc}")
                continue
            for kind, what in sqlite_plan_problems(query, details, large):
                if kind not in query.plan_exceptions:
                    problems.append(f"{query.location} {query.name}: {what} (no '-- plan: {kind} <why>')")
    finally:
        db.close()
    assert not problems, "\n".join(problems)
