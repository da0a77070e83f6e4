"""Benchmark the hot queries at scale on PostgreSQL: the pending-work queue, topicize's catalogue, counters.

For each size, a scratch database (created, migrated, and dropped at the end unless --keep) is filled
in SQL (generate_series, not the ingestion path) with N messages over 200 channels, 99.9 % of them
processed: their documents exist and they are not queued; every 1000th message is queued
(raw.pending_work) and has no document. Then:

- claim page: EXPLAIN (ANALYZE, BUFFERS) of the claim statement (`pending_claim`, 500 rows, FOR UPDATE
  SKIP LOCKED; in a transaction rolled back) for the first page and a page in the middle: buffers
  (shared hit + read) and milliseconds. Target: O(page), flat from 1M to 10M;
- reconcile: the same for `pending_reconcile` (the step at the start of every run; reads the queue);
- process 1k: `tg-parser process --processor extractive --limit 1000` (the real CLI and coordinator),
  the run's own duration from its JSON report; against the same 1,000 messages in an empty database.
  Target: within 2x. Then the rest of the queue, if any;
- topicize catalogue: `topics_document_channels` (once per run) and `topics_document_channel` (one
  channel): milliseconds and buffers;
- counter refresh: the raw store's refresh (RawStore.store_batch of 20,000 stored messages whose views
  changed), twice (the first writes each message's counters row); of the second pass, n_tup_hot_upd /
  n_tup_upd of the tables it updated (pg_stat_user_tables);
- with --compare-old, the anti-join selection this queue replaces (`processing_select_candidates`, one
  page of 500), for the record.

    python bench/bench_scale.py                     # 1M and 10M (10M: ~30 min and ~17 GB of disk here)
    python bench/bench_scale.py --sizes 1M --compare-old
    python bench/bench_scale.py --sizes 1M,3M --keep

Prints one table (a column per size, and the ratio of the last size to the first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import PG, drop_pg, fresh_install, tg_parser_cmd  # noqa: E402

from tg_parser.db.catalog import SqlCatalog  # noqa: E402
from tg_parser.db.codec import adapt_pg_params  # noqa: E402
from tg_parser.db.connect import open_database  # noqa: E402
from tg_parser.db.params import to_pyformat  # noqa: E402
from tg_parser.domain.models import RawMessage  # noqa: E402
from tg_parser.stores import RawStore  # noqa: E402

CHANNELS = 200
FIRST_CHANNEL = 1000
# One message in 1000 is not processed yet (99.9 % processed): message i is queued when
# (i / CHANNELS) % PENDING_EVERY == 0, a run of one message per channel every 200,000, so every channel
# has its 0.1 % (a test on i % 1000 alone would put them all in one channel).
PENDING_EVERY = 1000
CHUNK = 500_000  # rows per INSERT while filling
PAGE = 500
COUNTER_ROWS = 20_000
BASE = datetime(2020, 1, 1, tzinfo=UTC)
FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
TEXTS = [
    "Новый релиз библиотеки: ускорение парсинга в 3 раза, поддержка Python 3.13. #python #release",
    "We are hiring a backend engineer (Go, PostgreSQL). Remote, EU time zones. Apply via @jobs_bot",
    "Курс доллара на сегодня 92,4 ₽; евро 99,1 ₽. Подробнее: https://example.com/rates?utm_source=tg",
    "Conference report: three talks on LLM evaluation, slides inside. #ml #conference",
]
BIG_TABLES = ("raw.raw_messages", "raw.pending_work", "processing.processed_documents")

# One message per i: channel FIRST_CHANNEL + i % CHANNELS, a date 30 s after the previous message, a
# payload shaped like a stored Telegram message (~600 bytes of JSON).
MESSAGES = f"""
WITH g AS (
    SELECT i, {FIRST_CHANNEL} + mod(i, {CHANNELS}) AS c, (%(texts)s::text[])[1 + mod(i, 4)] || ' (#' || i || ')' AS t
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
)
INSERT INTO raw.raw_messages (source_ref, source_id, channel_id, message_id, message_type, date, text, views,
                              forwards, replies, raw_payload, payload_size, inserted_at)
SELECT 'tg:' || c || ':post:' || i, 'src' || c, c, i, 'post', %(base)s + i * interval '30 seconds', t,
       mod(i, 50000), mod(i, 300), mod(i, 40),
       jsonb_build_object(
           '_', 'Message', 'id', i, 'peer_id', jsonb_build_object('_', 'PeerChannel', 'channel_id', c),
           'date', %(base)s + i * interval '30 seconds', 'message', t, 'out', false, 'mentioned', false,
           'media_unread', false, 'silent', false, 'post', true, 'from_scheduled', false, 'legacy', false,
           'edit_hide', false, 'pinned', false, 'noforwards', false, 'views', mod(i, 50000),
           'forwards', mod(i, 300), 'replies', jsonb_build_object('_', 'MessageReplies', 'replies', mod(i, 40)),
           'entities', jsonb_build_array(jsonb_build_object('_', 'MessageEntityHashtag', 'offset', 0,
                                                            'length', 7)),
           'post_author', NULL, 'grouped_id', NULL, 'ttl_period', NULL),
       600, now()
FROM g
"""

DOCUMENTS = f"""
WITH g AS (
    SELECT i, {FIRST_CHANNEL} + mod(i, {CHANNELS}) AS c, (%(texts)s::text[])[1 + mod(i, 4)] || ' (#' || i || ')' AS t
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
    WHERE mod(i / {CHANNELS}, {PENDING_EVERY}) <> 0
)
INSERT INTO processing.processed_documents (source_ref, id, channel_id, message_date, processed_at, text_clean,
                                            summary, topics, entities, language, model, prompt_id,
                                            pipeline_version, metadata)
SELECT 'tg:' || c || ':post:' || i, 'doc:tg:' || c || ':post:' || i, c, %(base)s + i * interval '30 seconds',
       %(base)s + i * interval '1 second', t, NULL, '["python","release"]',
       '[{{"type":"hashtag","value":"#python"}}]', 'en', 'extractive', 'extractive:1', 'extractive-1', '{{}}'
FROM g
"""

QUEUE = f"""
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
SELECT 'tg:' || ({FIRST_CHANNEL} + mod(i, {CHANNELS})) || ':post:' || i, {FIRST_CHANNEL} + mod(i, {CHANNELS}),
       %(base)s + i * interval '30 seconds', 'src' || ({FIRST_CHANNEL} + mod(i, {CHANNELS}))
FROM generate_series(1, %(n)s::bigint) AS i
WHERE mod(i / {CHANNELS}, {PENDING_EVERY}) = 0
"""


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * factor)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def connect(dbname: str, **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(**PG, dbname=dbname, **kwargs)


def fill(dbname: str, n: int) -> float:
    """N messages, their documents but for every PENDING_EVERY-th, and the queue of those; seconds."""
    started = time.perf_counter()
    params = {"texts": TEXTS, "base": BASE, "n": n}
    with connect(dbname, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        for table in BIG_TABLES:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        # The secondary indexes of the two big tables are built once after the fill (a sorted build),
        # not row by row; the primary keys stay (foreign keys need them).
        secondary = [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes i JOIN pg_index x ON x.indexrelid = "
                "(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass "
                "WHERE (i.schemaname, i.tablename) IN (('raw', 'raw_messages'), "
                "('processing', 'processed_documents')) AND NOT x.indisprimary AND NOT x.indisunique"
            ).fetchall()
        ]
        for definition in secondary:
            name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
            schema = "raw" if " raw." in definition else "processing"
            conn.execute(f"DROP INDEX {schema}.{name}")
        for lo in range(1, n + 1, CHUNK):
            hi = min(n, lo + CHUNK - 1)
            conn.execute(MESSAGES, {**params, "lo": lo, "hi": hi})
            conn.execute(DOCUMENTS, {**params, "lo": lo, "hi": hi})
            print(f"  filled {hi:,} / {n:,} ({time.perf_counter() - started:.0f} s)", flush=True)
        conn.execute(QUEUE, params)
        for definition in secondary:
            conn.execute(definition)
        print(f"  indexes built ({time.perf_counter() - started:.0f} s)", flush=True)
        for table in BIG_TABLES:
            conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
            conn.execute(f"VACUUM (ANALYZE) {table}")
        conn.execute("ANALYZE")
    return time.perf_counter() - started


SHOW_PLANS = False


def explain(dbname: str, name: str, params: dict[str, Any]) -> tuple[float, int]:
    """(ms, shared buffers hit + read) of one execution of a named query, in a rolled-back transaction."""
    text, _ = to_pyformat(SqlCatalog.load("postgres").get(name).sql)
    with connect(dbname) as conn:
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, adapt_pg_params(params)
        ).fetchone()
        conn.rollback()
        if SHOW_PLANS:
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, adapt_pg_params(params)).fetchall()
            conn.rollback()
            print(f"--- {name}\n" + "\n".join(line for (line,) in plan), flush=True)
    plan = row[0][0]
    top = plan["Plan"]
    return plan["Execution Time"], int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


def claim_params(after: tuple[int, datetime, str] | None = None) -> dict[str, Any]:
    channel, date, ref = after or (-(2**63), FAR_PAST, "")
    return {
        "limit": PAGE,
        "source_id": None,
        "channel_id": None,
        "retry_failed": False,
        "now": datetime.now(UTC),
        "after_channel_id": channel,
        "after_date": date,
        "after_ref": ref,
    }


def middle_key(dbname: str) -> tuple[int, datetime, str]:
    with connect(dbname) as conn:
        row = conn.execute(
            "SELECT channel_id, date, source_ref FROM raw.pending_work ORDER BY channel_id, date, source_ref "
            "OFFSET (SELECT count(*) / 2 FROM raw.pending_work) LIMIT 1"
        ).fetchone()
    return row[0], row[1], row[2]


def process(env: dict[str, str], limit: int | None) -> dict[str, Any]:
    args = ["process", "--processor", "extractive", "--json", "--silent"]
    if limit is not None:
        args += ["--limit", str(limit)]
    done = subprocess.run(tg_parser_cmd(*args), env=env_of(env), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"process failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)["counts"]


def env_of(env: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, **env}


def baseline(workdir: Path) -> list[float]:
    """Seconds to process 1,000 messages in an otherwise empty database (three runs of 1,000)."""
    name = "tgp_bench_scale_empty"
    _, env = fresh_install("postgres", workdir, name)
    try:
        with connect(name, autocommit=True) as conn:
            conn.execute(MESSAGES, {"texts": TEXTS, "base": BASE, "lo": 1, "hi": 3000})
            conn.execute(
                "INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id) "
                "SELECT source_ref, channel_id, date, source_id FROM raw.raw_messages"
            )
            conn.execute("VACUUM (ANALYZE)")
        return [process(env, 1000)["duration_s"] for _ in range(3)]
    finally:
        drop_pg(name)


def counter_refresh(dbname: str, settings: Any) -> dict[str, tuple[int, int]]:
    """Refresh the counters of COUNTER_ROWS stored messages through the raw store; per table of the raw
    schema that was updated: (HOT updates, updates)."""
    with connect(dbname, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT * FROM raw.raw_messages ORDER BY source_ref LIMIT %s",  # the primary key's order
            (COUNTER_ROWS,),
        ).fetchall()

    def refreshed(bump: int) -> list[RawMessage]:
        return [
            RawMessage.model_validate(row).model_copy(update={"views": (row["views"] or 0) + bump})
            for row in rows
        ]

    db = open_database(settings)
    try:
        store = RawStore(db)
        # A message's first refresh writes its counters row (an insert into raw_message_counters); the
        # second is the update whose HOT ratio is measured, as every later re-read of a post is.
        first = refreshed(1)
        for start in range(0, len(first), 500):
            store.store_batch(first[start : start + 500])
        time.sleep(1)  # let the first pass's statistics land before the baseline is read
        before = hot_stats(dbname)
        messages = refreshed(2)
        for start in range(0, len(messages), 500):
            store.store_batch(messages[start : start + 500])
    finally:
        db.close()
    deadline = time.monotonic() + 30  # the statistics reach pg_stat_user_tables within a second or so
    while True:
        after = hot_stats(dbname)
        changed = {
            t: (after[t][0] - before.get(t, (0, 0))[0], after[t][1] - before.get(t, (0, 0))[1]) for t in after
        }
        changed = {t: v for t, v in changed.items() if v[1] > 0}
        if sum(v[1] for v in changed.values()) >= len(messages) or time.monotonic() > deadline:
            return changed
        time.sleep(0.2)


def hot_stats(dbname: str) -> dict[str, tuple[int, int]]:
    with connect(dbname) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'raw'"
        ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def table_sizes(dbname: str) -> str:
    with connect(dbname) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    return row[0]


def measure(n: int, workdir: Path, compare_old: bool, keep: bool) -> dict[str, Any]:
    name = f"tgp_bench_scale_{label(n).lower()}"
    print(f"{label(n)}: filling {name} ...", flush=True)
    settings, env = fresh_install("postgres", workdir, name)
    out: dict[str, Any] = {}
    try:
        out["fill_s"] = fill(name, n)
        out["db_size"] = table_sizes(name)
        out["queued"] = n // PENDING_EVERY
        out["claim_first"] = explain(name, "pending_claim", claim_params())
        out["claim_middle"] = explain(name, "pending_claim", claim_params(middle_key(name)))
        out["reconcile"] = explain(name, "pending_reconcile", {"retry_failed": False})
        if compare_old:
            print(f"{label(n)}: the old anti-join selection ...", flush=True)
            out["old_select"] = explain(
                name,
                "processing_select_candidates",
                {**claim_params(), "force": False},
            )
        out["catalogue"] = explain(name, "topics_document_channels", {})
        out["catalogue_one"] = explain(name, "topics_document_channel", {"channel_id": FIRST_CHANNEL + 3})
        print(f"{label(n)}: processing ...", flush=True)
        first = process(env, 1000)
        out["process_1k"] = first["duration_s"]
        out["process_1k_n"] = first["processed"]
        rest = process(env, None)
        out["process_rest"] = (rest["processed"], rest["duration_s"])
        print(f"{label(n)}: counter refresh ...", flush=True)
        out["hot"] = counter_refresh(name, settings)
    finally:
        if not keep:
            drop_pg(name)
    return out


def fmt_explain(value: tuple[float, int]) -> str:
    return f"{value[1]:,} buf, {value[0]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1M,10M", help="message counts, e.g. 1M,10M (default) or 1M,3M")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases (tgp_bench_scale_*)")
    parser.add_argument(
        "--compare-old", action="store_true", help="also time one page of the old anti-join selection"
    )
    parser.add_argument("--plans", action="store_true", help="print each EXPLAIN (ANALYZE, BUFFERS) plan")
    args = parser.parse_args()
    global SHOW_PLANS
    SHOW_PLANS = args.plans
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        print("empty database: processing 1,000 messages x 3 ...", flush=True)
        empty = baseline(workdir)
        results = {n: measure(n, workdir, args.compare_old, args.keep) for n in sizes}
    empty_s = statistics.median(empty)
    heads = [label(n) for n in sizes]
    rows: list[tuple[str, list[str], str]] = []

    def add(what: str, cells: list[str], ratio: str = "") -> None:
        rows.append((what, cells, ratio))

    def ratio_of(values: list[float]) -> str:
        return f"{values[-1] / values[0]:.2f}x" if len(values) > 1 and values[0] else ""

    r = [results[n] for n in sizes]
    add("fill (SQL), s / database size", [f"{x['fill_s']:.0f} s / {x['db_size']}" for x in r])
    add("queued (pending) messages", [f"{x['queued']:,}" for x in r])
    for key, what in (
        ("claim_first", f"claim page of {PAGE} (first)"),
        ("claim_middle", f"claim page of {PAGE} (middle of the queue)"),
        ("reconcile", "run-start reconcile (whole queue)"),
        ("old_select", f"old anti-join selection, page of {PAGE}"),
        ("catalogue", "topicize catalogue (all channels)"),
        ("catalogue_one", "topicize catalogue (one channel)"),
    ):
        if all(key in x for x in r):
            add(what, [fmt_explain(x[key]) for x in r], ratio_of([float(x[key][1]) for x in r]) + " buffers")
    add(
        "process 1,000 pending (extractive, CLI)",
        [f"{x['process_1k']:.2f} s ({x['process_1k_n']})" for x in r],
        ", ".join(f"{x['process_1k'] / empty_s:.2f}x of empty" for x in r),
    )
    add(
        "process the rest of the queue", [f"{p[0]:,} in {p[1]:.2f} s" for p in (x["process_rest"] for x in r)]
    )
    add(
        f"counter refresh of {COUNTER_ROWS:,}: HOT / updates",
        [", ".join(f"{t} {h:,}/{u:,} ({h / u:.0%})" for t, (h, u) in x["hot"].items()) or "none" for x in r],
    )
    print()
    print(
        f"empty database, 1,000 messages: {empty_s:.2f} s (median of {', '.join(f'{e:.2f}' for e in empty)})"
    )
    width = max(len(w) for w, _, _ in rows)
    cols = [max(len(h), *(len(c[i]) for _, c, _ in rows)) for i, h in enumerate(heads)]
    print(f"| {'':{width}} | " + " | ".join(f"{h:{cols[i]}}" for i, h in enumerate(heads)) + " | ratio |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (c + 2) for c in cols) + "|-------|")
    for what, cells, ratio in rows:
        print(
            f"| {what:{width}} | "
            + " | ".join(f"{c:{cols[i]}}" for i, c in enumerate(cells))
            + f" | {ratio} |"
        )


if __name__ == "__main__":
    main()
