"""How many counter refreshes are HOT updates on PostgreSQL (not a test; prints figures).

A re-read of posts refreshes their views/forwards/replies. Before raw migration 0003 that was an UPDATE of
the wide raw_messages row; now it is an upsert of the narrow raw_message_counters row. This fills a scratch
database with N messages through RawStore, then refreshes every message's counters PASSES times through
RawStore.store_rows (the path ingestion takes), and reads n_tup_upd / n_tup_hot_upd of the table the
refreshes update from pg_stat_user_tables. The first pass inserts the counter rows; the later passes are
the updates measured. With --before, the same refreshes run the statement the tool used before 0003 (an
UPDATE of raw_messages) on the same data, for the comparison.

    python bench/bench_counters_hot.py [--messages 20000] [--passes 2] [--batch 500] [--keep]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PG, drop_pg, fresh_install

from tg_parser.db.connect import open_database
from tg_parser.domain.models import RawMessage
from tg_parser.stores.raw import RawStore

# The refresh of tg-parser before raw migration 0003, for --before (the wide-row update it measured).
OLD_REFRESH = (
    "UPDATE raw.raw_messages SET views = COALESCE(%(views)s, views), forwards = COALESCE(%(forwards)s, forwards),"
    " replies = COALESCE(%(replies)s, replies) WHERE source_ref = %(source_ref)s"
)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def message(i: int, views: int) -> RawMessage:
    return RawMessage.build(
        channel_id=-1000 - (i % 20),
        message_type="post",
        message_id=i + 1,
        source_id=f"chan{i % 20}",
        date=T0 + timedelta(minutes=i),
        text=f"post {i} " + "lorem ipsum " * 40,
        views=views,
        forwards=1,
        replies=0,
        raw_payload={"id": i + 1, "message": "x" * 400, "views": views},
        inserted_at=T0,
    )


def stats(conn: psycopg.Connection, table: str, want_updates: int) -> tuple[int, int]:
    """n_tup_upd, n_tup_hot_upd of raw.<table>, waiting (with a deadline) for the writers' stats flush."""
    deadline = time.monotonic() + 30
    while True:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        upd, hot = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = 'raw' AND relname = %s",
            (table,),
        ).fetchone()  # type: ignore[misc]
        if upd >= want_updates or time.monotonic() > deadline:
            return upd, hot
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=2, help="refresh passes (the first inserts the rows)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--before", action="store_true", help="also measure the pre-0003 wide-row update")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    name = "tgp_bench_counters_hot"
    settings, _ = fresh_install("postgres", Path("."), name)
    rng = random.Random(17)
    try:
        db = open_database(settings)
        store = RawStore(db)
        for start in range(0, args.messages, args.batch):
            store.store_batch([message(i, 10) for i in range(start, min(start + args.batch, args.messages))])
        with psycopg.connect(**PG, dbname=name, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE raw.raw_messages")
            base_upd, base_hot = stats(conn, "raw_messages", 0)
            print(
                f"{args.messages:,} messages stored; refreshing their counters {args.passes}× (batches of {args.batch})"
            )
            started = time.perf_counter()
            for n in range(args.passes):
                for start in range(0, args.messages, args.batch):
                    rows = [
                        store.row_of(message(i, 100 * (n + 1) + rng.randrange(5)))
                        for i in range(start, min(start + args.batch, args.messages))
                    ]
                    store.store_rows(rows)
            elapsed = time.perf_counter() - started
            want = args.messages * (args.passes - 1)
            upd, hot = stats(conn, "raw_message_counters", want)
            wide_upd, _ = stats(conn, "raw_messages", 0)
            size = conn.execute("SELECT pg_total_relation_size('raw.raw_message_counters')").fetchone()[0]  # type: ignore[index]
            print(
                f"after 0003: raw_message_counters {upd:,} updates, {hot:,} HOT ({hot / max(upd, 1):.1%}); "
                f"raw_messages updates {wide_upd - base_upd:,}; counters table {size / 1024:.0f} KiB; "
                f"{elapsed:.1f} s for {args.passes} passes"
            )
        db.close()
        if args.before:
            with psycopg.connect(**PG, dbname=name, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE raw.raw_messages")
                base_upd, base_hot = stats(conn, "raw_messages", 0)
                for start in range(0, args.messages, args.batch):
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(
                            OLD_REFRESH,
                            [
                                {
                                    "source_ref": f"tg:{-1000 - (i % 20)}:post:{i + 1}",
                                    "views": 100 + rng.randrange(5),
                                    "forwards": None,
                                    "replies": None,
                                }
                                for i in range(start, min(start + args.batch, args.messages))
                            ],
                        )
                upd, hot = stats(conn, "raw_messages", base_upd + args.messages)
                print(
                    f"before 0003 (UPDATE raw_messages): {upd - base_upd:,} updates, {hot - base_hot:,} HOT "
                    f"({(hot - base_hot) / max(upd - base_upd, 1):.1%})"
                )
    finally:
        if not args.keep:
            drop_pg(name)


if __name__ == "__main__":
    main()
