"""Benchmark the hot queries at scale on PostgreSQL: the pending-work queue, topicize's catalogue, counters.

For each size, a database `tgp_scale_<size>` is filled in SQL (generate_series, not the ingestion path)
with N messages over 200 channels, 99.9 % of them processed: their documents exist and they are not
queued; every 1000th message is queued (raw.pending_work) and has no document. The fill takes long (10M:
8 minutes on a quiet 2-core machine, ~17 GB), so `--keep` keeps the database and `--reuse` measures a kept
one again (a marker table records the fill; the queue is put back as filled before and after, what
processing wrote deleted and vacuumed, the documents' index entries included: see `reset`). Then:

- claim page: EXPLAIN (ANALYZE, BUFFERS) of the claim statement (`pending_claim`, 500 rows, FOR UPDATE
  SKIP LOCKED; in a transaction rolled back) for the first page and a page in the middle: buffers
  (shared hit + read) and milliseconds. Target: O(page), flat from 1M to 10M;
- process 1k: `tg-parser process --processor extractive --limit 1000` (the real CLI and coordinator):
  the run's own duration from its JSON report and the tg-parser process's CPU seconds, against 1,000
  messages in an empty install (holding only those). Both sides run the same number of rounds,
  interleaved (A/B, B/A, ...), each database put back before each of its later runs (the same work
  again). Before the rounds the fill's write-back is settled (CHECKPOINT, sync, the kernel's dirty pages
  drained), or round 1 measures the disk writing the fill. Round 1 is reported as cold: before each
  side's round 1 the server's shared buffers are cycled (a scratch table 1.25 times their size written
  and dropped: the server is shared and is not restarted), and with --drop-caches the OS page cache is
  emptied too, so the run reads from storage what it needs (the tool's own files too, on both sides
  alike; its report's duration starts after its imports); with --warm-os-cache the big database's
  files are read into the OS page cache first instead (the pages in memory, as on a machine with the
  RAM for them). The median of the other rounds is reported as warm. Each round also
  prints what the machine read from storage during each run (/proc/vmstat). Target: within 2x. The
  rounds run once per queue layout (`--layouts`, both by default, reported side by side): `spread`, the
  fill's queue (0.1 % of every channel, evenly over its ten years: each message's pages are its own,
  the worst case), and `newest`, as many messages queued but each channel's newest (what fresh
  ingestion leaves: the end of the heap, the right edge of every index). The kept fill is switched to a
  layout and back (switch_layout: the other layout's messages get their documents, the queue is
  refilled, the documents' dead index entries vacuumed; a marker table records a layout other than
  the fill's). A layout's cold round follows its switch, which deletes its messages' documents
  through shared buffers: the cycle before round 1 is what keeps those pages out. Then the whole queue
  once;
- with --claimers 1,4,8: 1,000 queued (spread) cold, by that many coordinators at once (threads of the
  bench, started together), in the big database and in the empty install, one measurement each: what
  several `process` workers gain when each message's pages come from storage one read at a time;
- topicize catalogue: `topics_document_channels` (once per run) and `topics_document_channel` (one
  channel): milliseconds and buffers;
- counter refresh: the raw store's refresh (RawStore.store_batch of 20,000 stored messages whose views
  changed), twice (the first writes each message's counters row); of the second pass, n_tup_hot_upd /
  n_tup_upd of the tables it updated (pg_stat_user_tables);
- with --compare-old, the anti-join selection this queue replaces (`processing_select_candidates`, one
  page of 500), for the record.

    python bench/bench_scale.py                          # 1M and 10M, filled and dropped
    python bench/bench_scale.py --sizes 10M --keep       # fill once and keep tgp_scale_10m ...
    python bench/bench_scale.py --sizes 10M --reuse --keep --rounds 9   # ... and measure it again
    python bench/bench_scale.py --sizes 10M --reuse --keep --drop-caches   # cold from storage (root)
    python bench/bench_scale.py --sizes 10M --reuse --keep --warm-os-cache   # the pages in the OS cache (root)
    python bench/bench_scale.py --sizes 10M --reuse --keep --layouts newest --rounds-only   # one layout's rounds
    python bench/bench_scale.py --sizes 10M --reuse --keep --drop-caches --read-ahead 0   # runs without reading ahead
    python bench/bench_scale.py --sizes 1M --compare-old

Prints one table (a column per size, and the ratio of the last size to the first), every round's pair,
and the load average. The machine is rarely idle: compare ratios from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from loguru import logger
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import PG, drop_pg, fresh_install, pg_settings, tg_parser_cmd  # noqa: E402

from tg_parser.db import migrations  # noqa: E402
from tg_parser.db.catalog import SqlCatalog  # noqa: E402
from tg_parser.db.codec import adapt_pg_params  # noqa: E402
from tg_parser.db.connect import open_database  # noqa: E402
from tg_parser.db.params import to_pyformat  # noqa: E402
from tg_parser.domain.models import RawMessage  # noqa: E402
from tg_parser.processing import ProcessCoordinator, ProcessOptions  # noqa: E402
from tg_parser.processing.selection import build_document_processor  # noqa: E402
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

# The documents of the messages g(i, c, t) (processed by the extractive processor, as it would).
DOCUMENT_ROWS = """
INSERT INTO processing.processed_documents (source_ref, id, channel_id, message_date, processed_at, text_clean,
                                            summary, topics, entities, language, model, prompt_id,
                                            pipeline_version, metadata)
SELECT 'tg:' || c || ':post:' || i, 'doc:tg:' || c || ':post:' || i, c, %(base)s + i * interval '30 seconds',
       %(base)s + i * interval '1 second', t, NULL, '["python","release"]',
       '[{"type":"hashtag","value":"#python"}]', 'en', 'extractive', 'extractive:1', 'extractive-1', '{}'
FROM g
"""
DOCUMENTS = (
    f"""
WITH g AS (
    SELECT i, {FIRST_CHANNEL} + mod(i, {CHANNELS}) AS c, (%(texts)s::text[])[1 + mod(i, 4)] || ' (#' || i || ')' AS t
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
    WHERE mod(i / {CHANNELS}, {PENDING_EVERY}) <> 0
)"""
    + DOCUMENT_ROWS
)

# Which messages are queued (not processed yet), per layout; the fill queues the spread one, and
# `--layouts` measures the others on the same fill by moving the queue (switch_layout):
# - spread: i = k * CHANNELS * PENDING_EVERY + j for j < CHANNELS (every message whose
#   (i / CHANNELS) % PENDING_EVERY is 0), generated directly rather than by testing every i: 0.1 % of
#   each channel, evenly over its ten years, the worst case for the caches (each message's pages are
#   its own);
# - newest: the newest messages, as many (queued_count): per channel its newest 50 at 10M, what fresh
#   ingestion leaves to process (the end of the heap, the right edge of every index).
QUEUED = {
    "spread": f"""
SELECT i, {FIRST_CHANNEL} + mod(i, {CHANNELS}) AS c
FROM generate_series(0, %(n)s::bigint / ({CHANNELS} * {PENDING_EVERY})) AS k,
     generate_series(0, {CHANNELS} - 1) AS j,
     LATERAL (SELECT k * {CHANNELS} * {PENDING_EVERY} + j AS i) AS x
WHERE i BETWEEN 1 AND %(n)s::bigint
""",
    "newest": f"""
SELECT i, {FIRST_CHANNEL} + mod(i, {CHANNELS}) AS c
FROM generate_series(%(n)s::bigint - %(q)s::bigint + 1, %(n)s::bigint) AS i
""",
}
LAYOUTS = tuple(QUEUED)


def queue_sql(layout: str) -> str:
    """Queue the layout's messages (parameters: base, n, q)."""
    return f"""
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
SELECT 'tg:' || c || ':post:' || i, c, %(base)s + i * interval '30 seconds', 'src' || c
FROM ({QUEUED[layout]}) AS q
ON CONFLICT (source_ref) DO NOTHING
"""


def documents_of(layout: str) -> str:
    """Write the documents of the layout's queued messages, as the fill writes the others' (texts, base,
    n, q): what switch_layout does before it queues another layout's."""
    return (
        f"""
WITH g AS (
    SELECT i, c, (%(texts)s::text[])[1 + mod(i, 4)] || ' (#' || i || ')' AS t FROM ({QUEUED[layout]}) AS q
)"""
        + DOCUMENT_ROWS
        + " ON CONFLICT (source_ref) DO NOTHING"
    )


def reset_sql(layout: str) -> list[str]:
    """Put a filled database back as the fill left it, with the layout's messages queued: what
    processing did to them (their documents, journal rows and leases) is undone and they are queued
    again. Reads the queue's refs only."""
    refs = f"SELECT 'tg:' || c || ':post:' || i FROM ({QUEUED[layout]}) AS q"
    return [
        f"DELETE FROM processing.processed_documents WHERE source_ref IN ({refs})",
        f"DELETE FROM processing.processing_failures WHERE source_ref IN ({refs})",
        "DELETE FROM processing.work_leases",
        "TRUNCATE raw.raw_message_counters",  # the counter refresh measures one update per counters row
        queue_sql(layout),
    ]


RESET_EMPTY = [
    "DELETE FROM processing.processed_documents",
    "DELETE FROM processing.processing_failures",
    "DELETE FROM processing.work_leases",
    "TRUNCATE raw.raw_message_counters",
    "INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id) "
    "SELECT source_ref, channel_id, date, source_id FROM raw.raw_messages ON CONFLICT (source_ref) DO NOTHING",
]


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
    params = {"texts": TEXTS, "base": BASE, "n": n, "q": queued_count(n)}
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
        conn.execute(queue_sql("spread"), params)
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
    """One `tg-parser process` run; its JSON report's counts, plus `cpu_s`: the CPU seconds of the
    tg-parser process (user + system; the server's backend is not counted)."""
    args = ["process", "--processor", "extractive", "--json", "--silent"]
    if limit is not None:
        args += ["--limit", str(limit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(tg_parser_cmd(*args), env=env_of(env), capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"process failed ({done.returncode}): {done.stderr[-2000:]}")
    counts = json.loads(done.stdout)["counts"]
    counts["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return counts


def env_of(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env}


def reset(dbname: str, n: int | None, final: bool = False, layout: str = "spread") -> None:
    """Queue the layout's messages again and drop what processing them wrote (see reset_sql; n=None:
    the empty install, whose every message is queued); then VACUUM (ANALYZE) the queue, as autovacuum
    would, so every run starts from the same queue (`final`: the documents too, whatever their number,
    for the next invocation with --reuse or the next layout)."""
    with connect(dbname, autocommit=True) as conn:
        for statement in reset_sql(layout) if n is not None else RESET_EMPTY:
            conn.execute(statement, {"base": BASE, "n": n, "q": queued_count(n) if n else 0})
        # What processing wrote, vacuumed as autovacuum would (the documents of a 10M fill only once,
        # at the end: the big side of the rounds then takes new rows instead, see rounds_of_1k).
        tables = ["raw.pending_work", "processing.work_leases", "raw.raw_message_counters"]
        if n is None or queued_count(n) < 10_000 or final:
            tables.append("processing.processed_documents")
        for table in tables:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        if "processing.processed_documents" in tables:
            # The deleted documents' index entries too: a VACUUM skips the indexes when few heap pages
            # hold dead rows (PostgreSQL 14+), which left the next run's probes of the primary key
            # visiting the dead rows' heap pages and marking them (some 2,000 buffers per 1,000 at 1M,
            # on whichever round came after such a VACUUM).
            conn.execute("VACUUM (INDEX_CLEANUP ON) processing.processed_documents")


FILL_MARK = "bench_scale_fill"
LAYOUT_MARK = "bench_scale_layout"  # the queued layout when not the fill's (spread)


def current_layout(name: str) -> str:
    with connect(name) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{LAYOUT_MARK}",)).fetchone()[0] is None:
            return "spread"
        return str(conn.execute(f"SELECT layout FROM public.{LAYOUT_MARK}").fetchone()[0])


def switch_layout(name: str, n: int, to: str) -> None:
    """Queue the layout `to` instead of the current one on a kept fill: the current layout's queued
    messages get their documents (processed, as the fill leaves the others), the queue is emptied, then
    `to`'s messages lose theirs and are queued (reset, the documents' dead index entries vacuumed)."""
    was = current_layout(name)
    if was == to:
        return
    started = time.perf_counter()
    params = {"texts": TEXTS, "base": BASE, "n": n, "q": queued_count(n)}
    with connect(name, autocommit=True) as conn:
        conn.execute(documents_of(was), params)
        conn.execute("DELETE FROM raw.pending_work")
        conn.execute("DELETE FROM processing.work_leases")
        conn.execute(f"DROP TABLE IF EXISTS public.{LAYOUT_MARK}")
        if to != "spread":
            conn.execute(f"CREATE TABLE public.{LAYOUT_MARK} (layout text NOT NULL)")
            conn.execute(f"INSERT INTO public.{LAYOUT_MARK} VALUES (%s)", (to,))
    reset(name, n, final=True, layout=to)
    print(f"{label(n)}: queue layout {was} -> {to} ({time.perf_counter() - started:.0f} s)", flush=True)


def attach_or_fill(name: str, n: int, workdir: Path, reuse: bool) -> tuple[Any, dict[str, str], float | None]:
    """A database holding the fill of n messages: the one left by an earlier run with --keep when reuse
    and it was filled completely (a marker table records n), else a new one. (settings, env, fill s)."""
    if reuse and filled_with(name) == n:
        settings, env = pg_settings(name)
        migrations.upgrade(settings)  # the code under test may have gained a migration since the fill
        print(f"{label(n)}: reusing {name}", flush=True)
        if current_layout(name) != "spread":  # an invocation that did not finish
            switch_layout(name, n, "spread")
        elif not as_filled(name, n):  # the same; else leave the pages untouched (cold)
            reset(name, n)
        return settings, env, None
    print(f"{label(n)}: filling {name} ...", flush=True)
    settings, env = fresh_install("postgres", workdir, name)
    seconds = fill(name, n)
    with connect(name, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.{FILL_MARK} (n bigint NOT NULL)")
        conn.execute(f"INSERT INTO public.{FILL_MARK} VALUES (%s)", (n,))
    return settings, env, seconds


def as_filled(name: str, n: int) -> bool:
    """Whether the queue is as the fill left it (every run of this bench ends with a reset): checked on
    the queue and the leases only, so that the big tables' pages stay unread until the first round."""
    with connect(name) as conn:
        queued = conn.execute("SELECT count(*) FROM raw.pending_work").fetchone()[0]
        leased = conn.execute("SELECT count(*) FROM processing.work_leases").fetchone()[0]
    expected = queued_count(n)
    return queued == expected and leased == 0


def queued_count(n: int) -> int:
    """How many messages the fill queues (see QUEUED)."""
    return sum(
        1
        for k in range(n // (CHANNELS * PENDING_EVERY) + 1)
        for j in range(CHANNELS)
        if 1 <= k * CHANNELS * PENDING_EVERY + j <= n
    )


def filled_with(name: str) -> int | None:
    with connect("postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            return None
    with connect(name) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{FILL_MARK}",)).fetchone()[0] is None:
            return None
        return int(conn.execute(f"SELECT n FROM public.{FILL_MARK}").fetchone()[0])


Run = tuple[float, float, int, int]  # run seconds, tg-parser CPU seconds, buffers hit, buffers read


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def settle_writeback(deadline_s: float = 900.0) -> float:
    """CHECKPOINT, then wait until the kernel's dirty and write-back pages are below 64 MB (deadline
    `deadline_s`); seconds waited. A fill leaves gigabytes to write: a round run while the disk writes
    them measures the fill's write-back, not the work (the first runs of this bench did, at 2.6-4.6x)."""
    started = time.monotonic()
    with connect("postgres", autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    os.sync()
    while time.monotonic() - started < deadline_s:
        if dirty_kb() < 64 * 1024:
            break
        time.sleep(1)
    return time.monotonic() - started


def dirty_kb() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(fields["Dirty"].split()[0]) + int(fields["Writeback"].split()[0])


def paged_in_kb() -> int:
    """KB the kernel read from storage since boot (/proc/vmstat pgpgin): machine-wide."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("pgpgin "):
            return int(line.split()[1])
    return 0


def drop_os_cache() -> None:
    """Empty the kernel's page cache (root only): a cold round then reads from storage what shared
    buffers do not hold (see cycle_shared_buffers)."""
    os.sync()
    DROP_CACHES.write_text("1\n")


def cycle_shared_buffers(dbname: str) -> None:
    """Push the server's shared buffers out: write a scratch unlogged table 1.25 times their size in
    `dbname` (an INSERT goes through shared buffers, not a ring as a scan or COPY would) and drop it.
    The server is shared and cannot be restarted; without this a cold round would find what the
    previous step read (switch_layout deletes the newest layout's documents through them)."""
    with connect(dbname, autocommit=True) as conn:
        pages = int(
            conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[
                0
            ]
        )
        conn.execute("DROP TABLE IF EXISTS public.bench_cycle_buffers")
        conn.execute("CREATE UNLOGGED TABLE public.bench_cycle_buffers (filler text)")
        # Four rows of 1,800 bytes fill an 8 KB page (the filler is stored plain: repeat() compresses
        # well, so STORAGE PLAIN keeps it out of TOAST compression).
        conn.execute("ALTER TABLE public.bench_cycle_buffers ALTER COLUMN filler SET STORAGE PLAIN")
        conn.execute(
            "INSERT INTO public.bench_cycle_buffers SELECT repeat('x', 1800) FROM generate_series(1, %s)",
            (pages * 5,),
        )
        conn.execute("DROP TABLE public.bench_cycle_buffers")


def warm_os_cache(dbname: str) -> float:
    """Read every file of the database's raw and processing relations (root: the server's data
    directory), so the OS page cache holds them as after a fill on a machine with the RAM for it; MB read."""
    with connect(dbname) as conn:
        base = Path(conn.execute("SHOW data_directory").fetchone()[0])
        files = [
            base / row[0]
            for row in conn.execute(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('raw', 'processing') AND c.relkind IN ('r', 'i', 't', 'm') "
                "AND pg_relation_filepath(c.oid) IS NOT NULL"
            ).fetchall()
        ]
    total = 0
    for first in files:
        for path in [first, *sorted(first.parent.glob(first.name + ".*"))]:  # and its other 1 GB segments
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
    return total / 2**20


def rounds_of_1k(
    big: tuple[str, int, dict[str, str]],
    empty: tuple[str, dict[str, str]],
    rounds: int,
    drop_caches: bool = False,
    layout: str = "spread",
) -> dict[str, list[Run]]:
    """Process 1,000 queued messages in the big database and 1,000 in the empty one, `rounds` times,
    interleaved (A/B, then B/A, ...). The empty install is reset before each of its later runs (the same
    work again). The big one takes the next 1,000 of its queue each round when it holds enough (10M:
    10,000 queued; each round's rows are new to the cache, as new work is), else it is reset too (1M:
    1,000 queued; the same rows again). The first round is the cold one: each side's shared buffers
    are cycled first (cycle_shared_buffers) and, with `drop_caches`, the OS page cache dropped. Per
    side and run: the run's seconds (from its report), the tg-parser
    process's CPU seconds, and the shared buffers the database served (hit) and read (pg_stat_database:
    the server's work, which the machine's load does not change)."""
    big_name, n, big_env = big
    empty_name, empty_env = empty
    big_resets = queued_count(n) < rounds * 1000
    out: dict[str, list[Run]] = {"big": [], "empty": []}
    storage_kb: dict[str, list[int]] = {"big": [], "empty": []}
    reset(empty_name, None)  # the previous layout's rounds processed its queue
    for index in range(rounds):
        order = [("big", big_name, n, big_env), ("empty", empty_name, None, empty_env)]
        if index % 2:
            order.reverse()
        for side, name, size, env in order:
            if index and (side == "empty" or big_resets):
                reset(name, size, layout=layout)
            if index == 0:
                cycle_shared_buffers(name)
            before = settled_blocks(name)
            if index == 0 and drop_caches:
                drop_os_cache()
            paged_in = paged_in_kb()
            counts = process(env, 1000)
            paged_in = paged_in_kb() - paged_in
            after = settled_blocks(name)
            storage_kb[side].append(paged_in)
            if counts["processed"] != 1000:
                raise SystemExit(f"{side}: processed {counts['processed']} of 1,000 queued messages")
            out[side].append(
                (counts["duration_s"], counts["cpu_s"], after[0] - before[0], after[1] - before[1])
            )
        big_run, empty_run = out["big"][-1], out["empty"][-1]
        print(
            f"  round {index + 1}: {big_run[0]:.3f} s, {big_run[2] + big_run[3]:,} buffers ({big_run[3]:,} read) "
            f"vs empty {empty_run[0]:.3f} s, {empty_run[2] + empty_run[3]:,} ({empty_run[3]:,} read) "
            f"(load {os.getloadavg()[0]:.1f}; read from storage: {storage_kb['big'][-1] / 1024:.1f} MB "
            f"vs {storage_kb['empty'][-1] / 1024:.1f} MB)",
            flush=True,
        )
    out["storage_kb"] = storage_kb  # type: ignore[assignment]
    return out


def settled_blocks(dbname: str) -> tuple[int, int]:
    """(blks_hit, blks_read) of a database once the counters stop moving: backends report them when they
    go idle or exit, a moment after their client is done (deadline 10 s)."""
    query = "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = %s"
    deadline = time.monotonic() + 10
    with connect("postgres", autocommit=True) as conn:
        last = conn.execute(query, (dbname,)).fetchone()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            conn.execute("SELECT pg_stat_clear_snapshot()")
            now = conn.execute(query, (dbname,)).fetchone()
            if now == last:
                break
            last = now
    return int(last[0]), int(last[1])


def claimers_1k(dbname: str, claimers: int, drop_caches: bool) -> float:
    """Process 1,000 queued messages cold with `claimers` coordinators at once (threads of this process,
    one pool, 1,000 / claimers each), as that many `process` workers would, started together once built
    (separate processes start seconds apart under load, which hid the overlap); wall seconds."""
    settings, _ = pg_settings(dbname)
    db = open_database(settings)
    barrier = threading.Barrier(claimers + 1, timeout=120)
    processed: list[int] = []

    def work() -> None:
        with build_document_processor(settings, "extractive") as built:
            options = ProcessOptions(limit=1000 // claimers, concurrency=2, lease_ttl=60)
            built.tune(options)
            coordinator = ProcessCoordinator(db, built.processor, options)
            barrier.wait()
            processed.append(coordinator.run().counts.processed)

    try:
        threads = [threading.Thread(target=work) for _ in range(claimers)]
        for thread in threads:
            thread.start()
        cycle_shared_buffers(dbname)
        if drop_caches:
            drop_os_cache()
        barrier.wait()  # every coordinator built: the run starts for all of them at once
        started = time.perf_counter()
        for thread in threads:
            thread.join(timeout=300)
        seconds = time.perf_counter() - started
    finally:
        db.close()
    if sum(processed) != 1000:
        raise SystemExit(f"{dbname}: {claimers} claimers processed {sum(processed)} of 1,000 queued messages")
    return seconds


def claimers_rounds(
    big: tuple[str, int], empty_name: str, counts: list[int], drop_caches: bool
) -> list[tuple[int, float, float]]:
    """For each count of claimers: 1,000 queued messages cold in the big database (spread queue, the
    next 1,000 of it, or the same again after a reset when it holds fewer) and in the empty install;
    (claimers, big s, empty s)."""
    name, n = big
    logger.remove()  # the coordinators' run lines (the CLI shows none with --silent either)
    out = []
    for index, claimers in enumerate(counts):
        if queued_count(n) < 1000 * (index + 1):
            reset(name, n)
        big_s = claimers_1k(name, claimers, drop_caches)
        reset(empty_name, None)
        empty_s = claimers_1k(empty_name, claimers, drop_caches)
        print(f"  {claimers} claimer(s): {big_s:.3f} s vs empty {empty_s:.3f} s", flush=True)
        out.append((claimers, big_s, empty_s))
    return out


EMPTY_N = 1000  # the empty database holds exactly the 1,000 messages it processes, all queued


def empty_install(workdir: Path) -> tuple[str, dict[str, str]]:
    """An install holding only EMPTY_N queued messages (the fill's shape, one per channel and date)."""
    name = "tgp_bench_scale_empty"
    _, env = fresh_install("postgres", workdir, name)
    with connect(name, autocommit=True) as conn:
        conn.execute(MESSAGES, {"texts": TEXTS, "base": BASE, "lo": 1, "hi": EMPTY_N})
        conn.execute(RESET_EMPTY[-1])
        conn.execute("VACUUM (ANALYZE)")
    return name, env


def counter_refresh(dbname: str, settings: Any) -> dict[str, tuple[int, int]]:
    """Refresh the counters of COUNTER_ROWS stored messages through the raw store; per table of the raw
    schema that was updated: (HOT updates, updates)."""
    with connect(dbname, row_factory=dict_row, autocommit=True) as conn:
        conn.execute("TRUNCATE raw.raw_message_counters")  # a kept fill's earlier refreshes
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


def measure(
    n: int, workdir: Path, empty: tuple[str, dict[str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    name = f"tgp_scale_{label(n).lower()}"
    settings, env, fill_s = attach_or_fill(name, n, workdir, args.reuse)
    out: dict[str, Any] = {"fill_s": fill_s}
    try:
        out["db_size"] = table_sizes(name)
        out["queued"] = queued_count(n)
        # The runs first: the EXPLAINs below would read the pages of the first round's work (cold).
        if args.drop_caches and not os.access(DROP_CACHES, os.W_OK):
            raise SystemExit("--drop-caches: /proc/sys/vm/drop_caches is not writable (run as root)")
        out["rounds"] = {}
        for layout in args.layouts:
            switch_layout(name, n, layout)
            print(
                f"{label(n)}: processing 1,000 queued messages ({layout} queue), against the empty install, "
                f"{args.rounds} rounds",
                flush=True,
            )
            waited = settle_writeback()
            print(f"  write-back settled after {waited:.0f} s (CHECKPOINT, sync)", flush=True)
            if args.warm_os_cache:
                print(f"  read {warm_os_cache(name):,.0f} MB of {name} into the OS page cache", flush=True)
            out["rounds"][layout] = rounds_of_1k((name, n, env), empty, args.rounds, args.drop_caches, layout)
        switch_layout(name, n, "spread")
        reset(name, n)
        if args.claimers:
            print(f"{label(n)}: 1,000 queued (spread) by several claimers at once, cold", flush=True)
            out["claimers"] = claimers_rounds((name, n), empty[0], args.claimers, args.drop_caches)
            reset(name, n)
        if args.rounds_only:
            reset(name, n, final=True)
            return out
        out["claim_first"] = explain(name, "pending_claim", claim_params())
        out["claim_middle"] = explain(name, "pending_claim", claim_params(middle_key(name)))
        if args.compare_old:
            print(f"{label(n)}: the old anti-join selection ...", flush=True)
            out["old_select"] = explain(
                name,
                "processing_select_candidates",
                {**claim_params(), "force": False},
            )
        out["catalogue"] = explain(name, "topics_document_channels", {})
        out["catalogue_one"] = explain(name, "topics_document_channel", {"channel_id": FIRST_CHANNEL + 3})
        rest = process(env, None)
        out["process_rest"] = (rest["processed"], rest["duration_s"])
        print(f"{label(n)}: counter refresh ...", flush=True)
        out["hot"] = counter_refresh(name, settings)
        reset(name, n, final=True)  # as filled, for the next invocation with --reuse
    finally:
        if not args.keep:
            drop_pg(name)
    return out


def fmt_explain(value: tuple[float, int]) -> str:
    return f"{value[1]:,} buf, {value[0]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1M,10M", help="message counts, e.g. 1M,10M (default) or 1M,3M")
    parser.add_argument("--keep", action="store_true", help="keep the filled databases (tgp_scale_<size>)")
    parser.add_argument(
        "--reuse", action="store_true", help="use a database kept by an earlier --keep run instead of filling"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 1,000 (the first is the cold one)")
    parser.add_argument(
        "--compare-old", action="store_true", help="also time one page of the old anti-join selection"
    )
    parser.add_argument("--plans", action="store_true", help="print each EXPLAIN (ANALYZE, BUFFERS) plan")
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="empty the OS page cache before each side's cold round (root): round 1 reads from storage",
    )
    parser.add_argument(
        "--warm-os-cache",
        action="store_true",
        help="read the big database's files into the OS page cache before each layout's rounds (root)",
    )
    parser.add_argument(
        "--layouts",
        default="spread,newest",
        help="which queued messages the rounds process, one set of rounds each: spread (0.1 %% of each "
        "channel evenly over its history, as filled) and newest (each channel's newest, as fresh "
        "ingestion leaves them); default both",
    )
    parser.add_argument(
        "--claimers",
        default="",
        help="also process 1,000 queued (spread) cold with this many coordinators at once, in threads, "
        "e.g. 1,4,8 (one measurement each, against the empty install alike)",
    )
    parser.add_argument(
        "--rounds-only",
        action="store_true",
        help="measure the rounds of 1,000 only (no EXPLAINs, whole queue or counter refresh)",
    )
    parser.add_argument(
        "--read-ahead",
        type=int,
        default=None,
        help="PROCESS_READ_AHEAD for every process run, both sides (default: the setting's default, 8); "
        "0 measures runs without reading ahead",
    )
    args = parser.parse_args()
    if args.read_ahead is not None:
        if args.read_ahead < 0:
            parser.error("--read-ahead: 0 or more sessions")
        os.environ["PROCESS_READ_AHEAD"] = str(args.read_ahead)  # env_of passes it to every run
    print(f"PROCESS_READ_AHEAD={os.environ.get('PROCESS_READ_AHEAD', 'default (8)')}", flush=True)
    if args.warm_os_cache and args.drop_caches:
        parser.error("--warm-os-cache and --drop-caches contradict each other")
    try:
        args.claimers = [int(c) for c in args.claimers.split(",") if c.strip()]
    except ValueError:
        parser.error("--claimers: counts separated by commas, e.g. 1,4,8")
    if any(c < 1 or 1000 % c for c in args.claimers):
        parser.error("--claimers: each count must divide 1,000")
    args.layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    if not args.layouts or any(layout not in LAYOUTS for layout in args.layouts):
        parser.error(f"--layouts: one or more of {', '.join(LAYOUTS)}")
    global SHOW_PLANS
    SHOW_PLANS = args.plans
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        empty = empty_install(workdir)
        try:
            results = {n: measure(n, workdir, empty, args) for n in sizes}
        finally:
            drop_pg(empty[0])
    heads = [label(n) for n in sizes]
    rows: list[tuple[str, list[str], str]] = []

    def add(what: str, cells: list[str], ratio: str = "") -> None:
        rows.append((what, cells, ratio))

    def ratio_of(values: list[float]) -> str:
        return f"{values[-1] / values[0]:.2f}x" if len(values) > 1 and values[0] else ""

    r = [results[n] for n in sizes]
    add(
        "fill (SQL), s / database size",
        [("reused" if x["fill_s"] is None else f"{x['fill_s']:.0f} s") + f" / {x['db_size']}" for x in r],
    )
    add("queued (pending) messages", [f"{x['queued']:,}" for x in r])
    for key, what in (
        ("claim_first", f"claim page of {PAGE} (first)"),
        ("claim_middle", f"claim page of {PAGE} (middle of the queue)"),
        ("old_select", f"old anti-join selection, page of {PAGE}"),
        ("catalogue", "topicize catalogue (all channels)"),
        ("catalogue_one", "topicize catalogue (one channel)"),
    ):
        if all(key in x for x in r):
            add(what, [fmt_explain(x[key]) for x in r], ratio_of([float(x[key][1]) for x in r]) + " buffers")

    def side(x: dict[str, Any], layout: str, which: str, cold: bool) -> list[Any]:
        runs = x["rounds"][layout][which]
        return runs[:1] if cold else runs[1:]

    def median_of(x: dict[str, Any], layout: str, which: str, cold: bool, field: int) -> float:
        return statistics.median(run[field] for run in side(x, layout, which, cold))

    def storage_mb(x: dict[str, Any], layout: str, which: str, cold: bool) -> float:
        kb = x["rounds"][layout]["storage_kb"][which]
        return statistics.median(kb[:1] if cold else kb[1:]) / 1024

    for layout in args.layouts:
        for cold, what in ((True, "cold (round 1)"), (False, "warm (median of the other rounds)")):
            if not cold and not all(len(x["rounds"][layout]["big"]) > 1 for x in r):
                continue
            big = [median_of(x, layout, "big", cold, 0) for x in r]
            small = [median_of(x, layout, "empty", cold, 0) for x in r]
            add(
                f"process 1,000 queued ({layout}), {what}: run s (CPU s) vs empty",
                [
                    f"{b:.2f} ({median_of(x, layout, 'big', cold, 1):.2f}) vs {e:.2f} "
                    f"({median_of(x, layout, 'empty', cold, 1):.2f})"
                    for b, e, x in zip(big, small, r, strict=True)
                ],
                ", ".join(f"{b / e:.2f}x" for b, e in zip(big, small, strict=True)) + " of empty",
            )
            big_buf = [median_of(x, layout, "big", cold, 2) + median_of(x, layout, "big", cold, 3) for x in r]
            small_buf = [
                median_of(x, layout, "empty", cold, 2) + median_of(x, layout, "empty", cold, 3) for x in r
            ]
            add(
                "  the same: buffers (read) vs empty; MB read from storage",
                [
                    f"{b:,.0f} ({median_of(x, layout, 'big', cold, 3):,.0f}) vs {e:,.0f} "
                    f"({median_of(x, layout, 'empty', cold, 3):,.0f}); "
                    f"{storage_mb(x, layout, 'big', cold):.0f} vs {storage_mb(x, layout, 'empty', cold):.0f} MB"
                    for b, e, x in zip(big_buf, small_buf, r, strict=True)
                ],
                ", ".join(f"{b / e:.2f}x" for b, e in zip(big_buf, small_buf, strict=True)) + " of empty",
            )
    for index, claimers in enumerate(r[0].get("claimers", [])):
        if all(len(x.get("claimers", [])) > index for x in r):
            pairs = [x["claimers"][index] for x in r]
            add(
                f"process 1,000 queued (spread), cold, {claimers[0]} claimer(s) at once: s vs empty",
                [f"{big_s:.2f} vs {empty_s:.2f}" for _, big_s, empty_s in pairs],
                ", ".join(f"{big_s / empty_s:.2f}x" for _, big_s, empty_s in pairs) + " of empty",
            )
    if all("process_rest" in x for x in r):
        add(
            "process the whole queue (after a reset)",
            [f"{p[0]:,} in {p[1]:.2f} s" for p in (x["process_rest"] for x in r)],
        )
    if all("hot" in x for x in r):
        add(
            f"counter refresh of {COUNTER_ROWS:,}: HOT / updates",
            [
                ", ".join(f"{t} {h:,}/{u:,} ({h / u:.0%})" for t, (h, u) in x["hot"].items()) or "none"
                for x in r
            ],
        )
    print()
    for n, x in zip(sizes, r, strict=True):
        for layout in args.layouts:
            runs = x["rounds"][layout]
            pairs = ", ".join(
                f"{b[0]:.2f}/{e[0]:.2f}" for b, e in zip(runs["big"], runs["empty"], strict=True)
            )
            print(f"{label(n)}: process 1,000 ({layout}), every round (this size / empty, s): {pairs}")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
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
