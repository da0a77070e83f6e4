"""Benchmark of the bulk migrator (issue 6): SQLite install → PostgreSQL with verification.

Generates a SQLite install (raw messages of ~500 characters of Cyrillic and Latin text with Telegram-like
JSON payloads, plus processed documents), then times, each into a fresh PostgreSQL database migrated by
our own `db upgrade`:

* `tg-parser db migrate-to-postgres` (scan, COPY, checksums of both sides, ANALYZE), in-process;
* a bare `sqlite3 -csv | psql -c "\\copy ..."` pipe of the same tables (no checks at all);
* pgloader, when installed (`apt-get install pgloader`), loading into the same pre-created schema.

Prints a table of wall times, ratios and peak RSS, and the RSS of the migrator at two sizes to show that
memory stays flat. Usage: python3 bench/bench_migrate.py [--rows 200000] [--big-rows 1000000] [--keep]
"""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tg_parser.db.codec import dump_json, format_timestamp

WORDS_RU = [
    "привет",
    "мир",
    "канал",
    "новости",
    "сегодня",
    "вчера",
    "завтра",
    "город",
    "страна",
    "люди",
    "работа",
    "время",
    "жизнь",
    "день",
    "год",
    "компания",
    "рынок",
    "данные",
    "сервер",
    "обновление",
    "выпуск",
    "пользователь",
    "сообщение",
]
WORDS_EN = [
    "hello",
    "world",
    "channel",
    "news",
    "today",
    "telegram",
    "update",
    "release",
    "python",
    "data",
    "server",
    "market",
]


def _text(rng: random.Random, size: int = 500) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS_RU if rng.random() < 0.6 else WORDS_EN)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def _payload(rng: random.Random, channel_id: int, message_id: int, date: datetime, text: str) -> dict:
    return {
        "_": "Message",
        "id": message_id,
        "peer_id": {"_": "PeerChannel", "channel_id": channel_id},
        "date": date.isoformat(),
        "message": text,
        "out": False,
        "mentioned": False,
        "post": True,
        "silent": False,
        "pinned": False,
        "noforwards": False,
        "from_id": None,
        "fwd_from": None,
        "reply_to": None,
        "media": None,
        "entities": [
            {"_": "MessageEntityBold", "offset": rng.randint(0, 100), "length": 5},
            {"_": "MessageEntityUrl", "offset": 3, "length": 20},
        ],
        "views": rng.randint(0, 10**6),
        "forwards": rng.randint(0, 1000),
        "replies": {"_": "MessageReplies", "replies": rng.randint(0, 50), "comments": True, "channel_id": 77},
        "edit_date": None,
        "post_author": None,
        "grouped_id": None,
        "reactions": {
            "_": "MessageReactions",
            "results": [
                {"_": "ReactionCount", "reaction": {"_": "ReactionEmoji", "emoticon": "👍"}, "count": 3}
            ],
        },
        "score": round(rng.random(), 6),
    }


def generate(directory: Path, rows: int, *, seed: int = 7) -> dict[str, int]:
    """Fill a migrated (empty) SQLite install with `rows` raw messages, half as many processed documents
    and a few rows in every other table, in the exact encodings the application writes."""
    rng = random.Random(seed)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for store, name in (
        ("ingestion", "ingestion_state.sqlite"),
        ("raw", "raw_storage.sqlite"),
        ("processing", "processing_storage.sqlite"),
    ):
        conn.execute(f"ATTACH DATABASE ? AS {store}", (str(directory / name),))
        conn.execute(f"PRAGMA {store}.journal_mode = WAL")
        conn.execute(f"PRAGMA {store}.synchronous = OFF")
    base = datetime(2024, 1, 1, tzinfo=UTC)
    now = format_timestamp(datetime(2025, 6, 1, tzinfo=UTC))
    channels = [1_000_000_000 + i for i in range(20)]
    conn.execute("BEGIN")
    for i, channel_id in enumerate(channels):
        conn.execute(
            "INSERT INTO ingestion.sources (source_id, channel_id, username, title, kind, include_comments,"
            " last_post_id, created_at, updated_at) VALUES (?, ?, ?, ?, 'telegram', ?, ?, ?, ?)",
            (f"chan{i}", channel_id, f"chan{i}", f"Канал {i}", i % 2, rows, now, now),
        )
        conn.execute(
            "INSERT INTO ingestion.comment_cursors (source_id, thread_id, last_comment_id, updated_at)"
            " VALUES (?, ?, ?, ?)",
            (f"chan{i}", 1, 10, now),
        )
        conn.execute(
            "INSERT INTO ingestion.ingest_runs (source_id, run_id, started_at, finished_at, success,"
            " posts_fetched, posts_inserted) VALUES (?, ?, ?, ?, 1, ?, ?)",
            (f"chan{i}", f"run{i}", now, now, rows // 20, rows // 20),
        )
    batch: list[tuple] = []
    docs: list[tuple] = []

    def flush() -> None:
        conn.executemany(
            "INSERT INTO raw.raw_messages (source_ref, source_id, channel_id, message_id, message_type, date,"
            " text, views, forwards, replies, raw_payload, payload_truncated, payload_size, inserted_at)"
            " VALUES (?, ?, ?, ?, 'post', ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            batch,
        )
        conn.executemany(
            "INSERT INTO processing.processed_documents (source_ref, id, channel_id, message_date,"
            " processed_at, text_clean, summary, topics, entities, language, model, prompt_id,"
            " pipeline_version, input_tokens, output_tokens, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ru', 'gpt-5-mini', 'p1', '1', ?, ?, ?)",
            docs,
        )
        batch.clear()
        docs.clear()

    for n in range(rows):
        channel_id = channels[n % len(channels)]
        message_id = n // len(channels) + 1
        date = base + timedelta(seconds=n * 37)
        text = _text(rng)
        ref = f"tg:{channel_id}:post:{message_id}"
        payload = dump_json(_payload(rng, channel_id, message_id, date, text))
        batch.append(
            (
                ref,
                f"chan{n % len(channels)}",
                channel_id,
                message_id,
                format_timestamp(date),
                text,
                rng.randint(0, 10**6),
                rng.randint(0, 1000),
                rng.randint(0, 50),
                payload,
                len(payload.encode()),
                now,
            )
        )
        if n % 2 == 0:
            docs.append(
                (
                    ref,
                    "doc:" + ref,
                    channel_id,
                    format_timestamp(date),
                    now,
                    text,
                    text[:120],
                    dump_json(["новости", "data"]),
                    dump_json([{"type": "org", "value": "Telegram", "confidence": 0.9}]),
                    rng.randint(100, 900),
                    rng.randint(10, 90),
                    dump_json({"tokens": {"in": 1, "out": 2}, "score": 0.5}),
                )
            )
        if len(batch) >= 2000:
            flush()
    if batch:
        flush()
    refs = [r[0] for r in conn.execute("SELECT source_ref FROM raw.raw_messages LIMIT 100")]
    for i, ref in enumerate(refs):
        conn.execute(
            "INSERT INTO raw.raw_message_versions (source_ref, observed_at, text, raw_payload)"
            " VALUES (?, ?, ?, ?)",
            (ref, now, "edited " + str(i), dump_json({"id": i, "message": "edited"})),
        )
        conn.execute(
            "INSERT INTO processing.processing_failures (source_ref, channel_id, error_class, error_message,"
            " first_failed_at, last_failed_at) VALUES (?, 1, 'Timeout', 'slow', ?, ?)",
            (ref + ":f", now, now),
        )
        conn.execute(
            "INSERT INTO processing.work_leases (source_ref, worker_id, leased_at, expires_at)"
            " VALUES (?, 'w1', ?, ?)",
            (ref, now, now),
        )
        topic = "topic:" + ref
        conn.execute(
            "INSERT INTO processing.topic_cards (topic_id, channel_id, title, kind, anchors, tags, created_at,"
            " updated_at, metadata) VALUES (?, 1, ?, 'cluster', ?, ?, ?, ?, '{}')",
            (topic, f"Тема {i}", dump_json([{"source_ref": ref, "score": 0.5}]), '["a"]', now, now),
        )
        conn.execute("INSERT INTO processing.topic_channels (topic_id, channel_id) VALUES (?, 1)", (topic,))
        conn.execute(
            "INSERT INTO processing.topic_bundles (topic_id, channel_id, items, updated_at) VALUES (?, 1, ?, ?)",
            (topic, dump_json([{"source_ref": ref, "score": 0.5, "reason": None}]), now),
        )
        conn.execute(
            "INSERT INTO processing.runs (run_id, kind, started_at, status, params, counts)"
            " VALUES (?, 'process', ?, 'ok', '{}', ?)",
            (f"run-{i}", now, json.dumps({"ok": i})),
        )
    tables = {r[0] for r in conn.execute("SELECT name FROM ingestion.sqlite_master WHERE type = 'table'")}
    if "comment_threads_unavailable" in tables:  # added by migration 0002
        for i in range(len(channels)):
            conn.execute(
                "INSERT INTO ingestion.comment_threads_unavailable (source_id, thread_id, reason, marked_at)"
                " VALUES (?, ?, 'MSG_ID_INVALID', ?)",
                (f"chan{i}", 7, now),
            )
    tables = {r[0] for r in conn.execute("SELECT name FROM processing.sqlite_master WHERE type = 'table'")}
    if "topic_channel_state" in tables:  # added by processing migration 0002
        for channel_id in channels:
            conn.execute(
                "INSERT INTO processing.topic_channel_state (channel_id, corpus_as_of, computed_at, strategy)"
                " VALUES (?, ?, ?, 'llm')",
                (channel_id, now, now),
            )
    conn.execute("COMMIT")
    counts = {
        "raw_messages": rows,
        "processed_documents": (rows + 1) // 2,
    }
    conn.close()
    return counts


# --- the benchmark ----------------------------------------------------------------------------------

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
GENERATOR_VERSION = "4"


def _dsn(dbname: str) -> str:
    return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}"


def fresh_database(name: str) -> str:
    """A new database upgraded by our own migrations (dropped first if a previous bench left it)."""
    import psycopg

    from tg_parser.config import load_settings
    from tg_parser.db import migrations

    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrations.upgrade(
        load_settings(
            _env_file=None, db_type="postgres", db_host=PG["host"], db_user=PG["user"], db_name=name
        )
    )
    return name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def install(directory: Path, rows: int) -> Path:
    """The generated SQLite install for `rows` messages (kept between runs)."""
    from tg_parser.config import load_settings
    from tg_parser.db import migrations

    marker = directory / "GENERATED"
    if marker.exists() and marker.read_text() == f"{GENERATOR_VERSION}:{rows}":
        migrations.upgrade(load_settings(_env_file=None, db_type="sqlite", db_sqlite_dir=directory))
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    migrations.upgrade(load_settings(_env_file=None, db_type="sqlite", db_sqlite_dir=directory))
    started = time.perf_counter()
    generate(directory, rows)
    print(f"  generated {rows} messages in {time.perf_counter() - started:.0f}s", flush=True)
    marker.write_text(f"{GENERATOR_VERSION}:{rows}")
    return directory


class TreeRss:
    """Peak RSS of a process and its descendants: largest single process and the sum, sampled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_sum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    found += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return found

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            todo, total = [self.pid], 0
            while todo:
                pid = todo.pop()
                total += self._rss(pid)
                todo += self._children(pid)
            self.peak_sum = max(self.peak_sum, total)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(command: list[str], **kwargs: object) -> dict[str, object]:
    started = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)  # type: ignore[call-overload]
    sampler = TreeRss(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - started,
        "rc": process.returncode,
        "peak_rss_largest": usage.ru_maxrss * 1024,  # largest process of the tree (Linux: KiB)
        "peak_rss_sum": sampler.peak_sum,
    }


def run_migrator(
    source: Path, dbname: str, report: Path, extra: list[str] | None = None
) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "tg_parser",
        "db",
        "migrate-to-postgres",
        "--from-sqlite",
        str(source),
        "--to",
        _dsn(dbname),
        "--silent",
        "--report",
        str(report),
        *(extra or []),
    ]
    result = run_measured(command, stdout=subprocess.DEVNULL, env={**os.environ, "DB_TYPE": "sqlite"})
    data = json.loads(report.read_text())
    result["status"] = data["status"]
    result["phases"] = data["phases_seconds"]
    result["rows"] = data["totals"]["rows_source"]
    result["bytes"] = data["totals"]["bytes"]
    return result


VARIANT_SCRIPT = """
import sys, json
from pathlib import Path
from tg_parser.db.connect import parse_database_url
from tg_parser.migrate import MigrateOptions, migrate
if __name__ == "__main__":
    source, dsn, fmt, rebuild, out = sys.argv[1:6]
    report = migrate(MigrateOptions(source_dir=Path(source), target=parse_database_url(dsn),
                                    copy_format=fmt, rebuild_indexes=rebuild == "1"))
    Path(out).write_text(json.dumps(report.as_dict()))
"""


def run_variant(source: Path, dbname: str, fmt: str, rebuild: bool, workdir: Path) -> dict[str, object]:
    script = workdir / "variant.py"
    script.write_text(VARIANT_SCRIPT)
    out = workdir / f"variant-{fmt}-{int(rebuild)}.json"
    result = run_measured(
        [sys.executable, str(script), str(source), _dsn(dbname), fmt, "1" if rebuild else "0", str(out)],
        stdout=subprocess.DEVNULL,
    )
    data = json.loads(out.read_text())
    result["status"] = data["status"]
    result["phases"] = data["phases_seconds"]
    return result


def tables_of(source: Path) -> list[tuple[str, str, list[str]]]:
    from tg_parser.db.sqlite import STORE_FILES

    found = []
    for store, name in STORE_FILES.items():
        conn = sqlite3.connect(source / name)
        for (table,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            " AND name NOT LIKE '%yoyo%' ORDER BY name"
        ):
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            found.append((store, table, cols))
        conn.close()
    return found


def bare_pipe(source: Path, dbname: str) -> dict[str, object]:
    """`sqlite3 -csv | psql -c "\\copy …"` for every table, parents first (no checks of any kind)."""
    from tg_parser.db.sqlite import STORE_FILES

    order = {"sources": 0, "raw_messages": 0, "topic_cards": 0}
    started = time.perf_counter()
    failures = []
    for store, table, cols in sorted(tables_of(source), key=lambda t: (t[0], order.get(t[1], 1), t[1])):
        col_list = ", ".join(f'"{c}"' for c in cols)
        pipe = (
            f"sqlite3 -csv {source / STORE_FILES[store]} 'SELECT {col_list} FROM \"{table}\"' | "
            f"psql -q -h {PG['host']} -p {PG['port']} -U {PG['user']} -d {dbname} -v ON_ERROR_STOP=1 "
            f"-c '\\copy {store}.{table} ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)'"
        )
        done = subprocess.run(["bash", "-o", "pipefail", "-c", pipe], capture_output=True, text=True)
        if done.returncode:
            failures.append(f"{store}.{table}: {done.stderr.strip()[:200]}")
    return {"seconds": time.perf_counter() - started, "failures": failures}


def run_pgloader(source: Path, dbname: str, workdir: Path) -> dict[str, object] | None:
    from tg_parser.db.sqlite import STORE_FILES

    if shutil.which("pgloader") is None:
        return None
    started = time.perf_counter()
    failures = []
    for store, name in STORE_FILES.items():
        load = workdir / f"{store}.load"
        load.write_text(
            f"LOAD DATABASE\n  FROM sqlite://{source / name}\n  INTO {_dsn(dbname)}\n"
            "  WITH data only, create no tables, create no indexes, reset sequences,\n"
            "       prefetch rows = 10000, batch rows = 10000\n"
            f"  SET PostgreSQL PARAMETERS search_path to '{store}'\n"
            "  EXCLUDING TABLE NAMES LIKE '%yoyo%';\n"
        )
        # SBCL's default 1 GiB heap is exhausted by ~1 KB JSON rows; give it room.
        done = subprocess.run(
            ["pgloader", "--dynamic-space-size", "4096", str(load)], capture_output=True, text=True
        )
        if done.returncode:
            failures.append(f"{store}: {done.stdout[-300:]} {done.stderr[-300:]}")
    return {"seconds": time.perf_counter() - started, "failures": failures}


def _mb(value: object) -> str:
    return f"{int(value) / 2**20:.0f} MB"  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument(
        "--big-rows", type=int, default=1_000_000, help="second size for RSS growth (0: skip)"
    )
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "tgp_bench_migrate")
    parser.add_argument("--variants", action="store_true", help="also time binary COPY and index rebuild")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    args = parser.parse_args()
    work = args.data / "work"
    work.mkdir(parents=True, exist_ok=True)
    prefix = f"tgp_bench_migrate_{os.getpid()}"
    created: list[str] = []

    def db(name: str) -> str:
        created.append(fresh_database(f"{prefix}_{name}"))
        return created[-1]

    try:
        print(f"SQLite install with {args.rows} raw messages …", flush=True)
        source = install(args.data / f"src_{args.rows}", args.rows)
        size = sum(f.stat().st_size for f in source.glob("*.sqlite"))
        print(f"  {size / 2**20:.0f} MB of SQLite files", flush=True)

        print("migrator (scan + COPY + checksums of both sides + ANALYZE) …", flush=True)
        ours = run_migrator(source, db("ours"), work / "ours.json")
        print(f"  {ours['seconds']:.1f}s {ours['status']} phases {ours['phases']}", flush=True)
        print("bare sqlite3 -csv | psql \\copy pipe …", flush=True)
        pipe = bare_pipe(source, db("pipe"))
        print(f"  {pipe['seconds']:.1f}s failures: {pipe['failures'] or 'none'}", flush=True)
        print("pgloader …", flush=True)
        loader = run_pgloader(source, db("pgloader"), work)
        print(
            f"  {loader['seconds']:.1f}s failures: {loader['failures'] or 'none'}"
            if loader
            else "  not installed"
        )

        variants = {}
        if args.variants:
            for fmt, rebuild in (("binary", False), ("text", True)):
                label = f"{fmt} COPY" + (", indexes dropped+rebuilt" if rebuild else "")
                print(f"variant: {label} …", flush=True)
                variants[label] = run_variant(source, db(f"{fmt}{int(rebuild)}"), fmt, rebuild, work)
                print(f"  {variants[label]['seconds']:.1f}s {variants[label]['phases']}", flush=True)

        big = None
        if args.big_rows:
            print(f"SQLite install with {args.big_rows} raw messages (RSS growth) …", flush=True)
            big_source = install(args.data / f"src_{args.big_rows}", args.big_rows)
            big = run_migrator(big_source, db("big"), work / "big.json")
            print(f"  {big['seconds']:.1f}s {big['status']} phases {big['phases']}", flush=True)

        print()
        print(
            f"Figures ({args.rows} raw messages, {ours['rows']} rows in all tables, {size / 2**20:.0f} MB SQLite):"
        )
        rows = [
            (
                "migrator (verified)",
                ours["seconds"],
                "1.00",
                _mb(ours["peak_rss_largest"]),
                _mb(ours["peak_rss_sum"]),
            ),
            ("bare sqlite3|psql pipe", pipe["seconds"], f"{ours['seconds'] / pipe['seconds']:.2f}", "-", "-"),
        ]
        if loader:
            rows.append(
                ("pgloader", loader["seconds"], f"{ours['seconds'] / loader['seconds']:.2f}", "-", "-")
            )
        for label, result in variants.items():
            rows.append(
                (
                    f"variant: {label}",
                    result["seconds"],
                    "-",
                    _mb(result["peak_rss_largest"]),
                    _mb(result["peak_rss_sum"]),
                )
            )
        print(
            f"{'run':<44} {'seconds':>8} {'migrator/run':>13} {'peak RSS (largest)':>19} {'peak RSS (tree)':>16}"
        )
        for label, seconds, ratio, rss, tree in rows:
            print(f"{label:<44} {seconds:>8.1f} {ratio:>13} {rss:>19} {tree:>16}")
        print()
        print(f"migrator vs bare pipe: {ours['seconds'] / pipe['seconds']:.2f}x (target <= 1.5)")
        if loader:
            print(f"migrator vs pgloader: {ours['seconds'] / loader['seconds']:.2f}x (target <= 0.6)")
        print(
            f"peak RSS: {_mb(ours['peak_rss_largest'])} largest process, {_mb(ours['peak_rss_sum'])} whole tree"
            " (target < 150 MB)"
        )
        if big:
            growth = big["peak_rss_largest"] / ours["peak_rss_largest"] - 1  # type: ignore[operator]
            tree = big["peak_rss_sum"] / ours["peak_rss_sum"] - 1  # type: ignore[operator]
            print(
                f"RSS growth {args.rows} → {args.big_rows} rows: {growth:+.1%} largest process, {tree:+.1%} tree "
                f"({_mb(big['peak_rss_largest'])} / {_mb(big['peak_rss_sum'])}; target < +20%); "
                f"{args.big_rows} rows took {big['seconds']:.0f}s"
            )
    finally:
        if not args.keep:
            for name in created:
                drop_database(name)


if __name__ == "__main__":
    main()
