"""Benchmark of the bulk migrator (issue 6): SQLite install → PostgreSQL with verification.

Generates a SQLite install (raw messages of ~500 characters of Cyrillic and Latin text with Telegram-like
JSON payloads, plus processed documents), then times, each into a fresh PostgreSQL database migrated by
our own `db upgrade`:

* `tg-parser db migrate-to-postgres` (scan, COPY, checksums of both sides, ANALYZE), as a subprocess;
* a bare `sqlite3 -csv | psql -c "\\copy ..."` pipe of the same tables (no checks at all);
* pgloader, when installed (`apt-get install pgloader`), loading into the same pre-created schema.

Prints a table of wall times, ratios, CPU seconds, peak RSS/PSS and the load average around each run
(the machine may be shared), and the memory of the migrator at two sizes to show that it stays flat.
On a shared machine, use `--repeat 3` or more: the contenders then run in turn, round after round, and
each one's median run is reported. `--tree before=DIR` adds the migrator of another source tree as a
contender (e.g. the commit before a change), so two versions run in turn. Usage:
python3 bench/bench_migrate.py [--rows 200000] [--big-rows 1000000] [--repeat N] [--migrator-only]
                               [--tree LABEL=DIR ...] [--keep]
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable
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
import resource  # noqa: E402
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
    """A process and its descendants, sampled from /proc every 0.1 s: peak RSS (the largest process by its
    VmHWM, and the sum), peak PSS (the sum with shared pages split between their processes, so a forkserver and the
    helpers forked from it are not counted twice), and the CPU seconds of the processes getrusage does
    not see: multiprocessing's forkserver, which the migrator never waits for, and everything below its
    children (the scan helpers). A process's last 0.1 s before it exits may be missed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_sum = 0
        self.peak_pss = 0
        self.peak_largest = 0
        self.cpu: dict[int, float] = {}  # descendant pid → CPU seconds last seen
        self._tick = os.sysconf("SC_CLK_TCK")
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
    def _field(path: str, name: str) -> int:
        """A `Name:   N kB` line of a /proc file, in bytes (0 when the process is gone)."""
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(name):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def _is_forkserver(pid: int) -> bool:
        """The one child of the migrator it never waits for (its other children it would)."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"multiprocessing.forkserver" in f.read()
        except OSError:
            return False

    def _own_cpu(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def _run(self) -> None:
        while not self._stop.is_set():
            todo, total, pss = [(self.pid, 0)], 0, 0
            while todo:
                pid, depth = todo.pop()
                rss = self._field(f"/proc/{pid}/status", "VmRSS:")
                total += rss
                pss += self._field(f"/proc/{pid}/smaps_rollup", "Pss:")
                # VmHWM: the process's own peak since it started, so a spike between samples counts
                hwm = self._field(f"/proc/{pid}/status", "VmHWM:")
                self.peak_largest = max(self.peak_largest, rss, hwm)
                if depth > 1 or (depth == 1 and self._is_forkserver(pid)):
                    cpu = self._own_cpu(pid)
                    if cpu is not None:
                        self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
                todo += [(child, depth + 1) for child in self._children(pid)]
            self.peak_sum = max(self.peak_sum, total)
            self.peak_pss = max(self.peak_pss, pss)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ServerCpu:
    """CPU seconds of the PostgreSQL processes serving one database (backends and their parallel
    workers), sampled from /proc: wall-clock alone says little on a shared machine."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        procs = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    command = f.read().decode(errors="replace")
                if not command.startswith("postgres:"):
                    continue
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs.append((int(name), command, (int(fields[11]) + int(fields[12])) / tick))
        backends = {pid for pid, command, _ in procs if f" {self.dbname} " in command}
        for pid, command, cpu in procs:
            if pid in backends or any(f"parallel worker for PID {b}" in command for b in backends):
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.seen.values())


def timed(dbname: str, run: Callable[[], dict[str, object] | None]) -> dict[str, object] | None:
    """Run one contender, adding its load average, client CPU (this process's waited-for children, plus
    the helpers `run_measured` sampled) and server CPU to its figures."""
    loads = _load()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = ServerCpu(dbname)
    result = run()
    server_cpu = server.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result is not None:
        result["load"] = f"{loads}→{_load()}"
        result["server_cpu"] = server_cpu
        waited = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        result["client_cpu"] = waited + float(result.get("unwaited_cpu", 0.0))  # type: ignore[arg-type]
    return result


def warm(directory: Path) -> None:
    """Read the SQLite files once, so that no contender pays for a cold page cache."""
    for path in sorted(directory.glob("*.sqlite*")):
        with path.open("rb") as f:
            while f.read(16 << 20):
                pass


def run_measured(command: list[str], **kwargs: object) -> dict[str, object]:
    started = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)  # type: ignore[call-overload]
    sampler = TreeRss(process.pid)
    _, status = os.waitpid(process.pid, 0)
    sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - started,
        "rc": process.returncode,
        # Largest process of the tree, from each one's VmHWM. Not getrusage's ru_maxrss: it also counts
        # this process's own peak (the child shares its memory until the exec), e.g. after generating
        # an install, which made a migrator of 63 MB look like one of 92 MB.
        "peak_rss_largest": sampler.peak_largest,
        "peak_rss_sum": sampler.peak_sum,
        "peak_pss_sum": sampler.peak_pss,
        # CPU of descendants nobody here waits for (the forkserver's helpers); see TreeRss
        "unwaited_cpu": sum(sampler.cpu.values()),
    }


def run_migrator(
    source: Path, dbname: str, report: Path, extra: list[str] | None = None, tree: Path | None = None
) -> dict[str, object]:
    """`tg-parser db migrate-to-postgres` in a subprocess; from the source tree `tree` when given."""
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
    env = {**os.environ, "DB_TYPE": "sqlite"}
    if tree is not None:  # and run there: `python -m` puts the working directory before PYTHONPATH
        env["PYTHONPATH"] = str(tree)
    result = run_measured(command, stdout=subprocess.DEVNULL, env=env, cwd=tree)
    data = json.loads(report.read_text())
    result["status"] = data["status"]
    result["phases"] = data["phases_seconds"]
    result["rows"] = data["totals"]["rows_source"]
    result["bytes"] = data["totals"]["bytes"]
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


def _load() -> str:
    """The 1-minute load average: the machine is shared, so every wall-clock figure carries it."""
    return f"{os.getloadavg()[0]:.2f}"


def _mb(value: object) -> str:
    return f"{int(value) / 2**20:.0f} MB"  # type: ignore[call-overload]


def _median(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run of median wall time (the lower middle one of an even count), with every run's seconds."""
    ordered = sorted(runs, key=lambda r: r["seconds"])  # type: ignore[arg-type, return-value]
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = [r["seconds"] for r in runs]
    return chosen


def _show(result: dict[str, object]) -> str:
    text = f"  {result['seconds']:.1f}s"
    if "status" in result:
        text += f" {result['status']} phases {result['phases']}"
    if result.get("failures"):
        text += f" failures: {result['failures']}"
    return text + f" (load {result['load']})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="raw messages in the install")
    parser.add_argument(
        "--big-rows", type=int, default=1_000_000, help="second size for RSS growth (0: skip)"
    )
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "tgp_bench_migrate")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds: each runs every contender once, in turn; the figures are each one's median run",
    )
    parser.add_argument(
        "--migrator-only", action="store_true", help="time only the migrator (no pipe, no pgloader)"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also time the migrator of another source tree (run with PYTHONPATH=DIR, its C extensions"
        " built or copied in place), e.g. a `git worktree` of the commit before a change; repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    args = parser.parse_args()
    work = args.data / "work"
    work.mkdir(parents=True, exist_ok=True)
    prefix = f"tgp_bench_migrate_{os.getpid()}"
    created: list[str] = []

    def db(name: str) -> str:
        name = f"{prefix}_{name}"
        if name in created:
            drop_database(name)
            created.remove(name)
        created.append(fresh_database(name))
        return created[-1]

    try:
        print(f"SQLite install with {args.rows} raw messages …", flush=True)
        source = install(args.data / f"src_{args.rows}", args.rows)
        size = sum(f.stat().st_size for f in source.glob("*.sqlite"))
        print(f"  {size / 2**20:.0f} MB of SQLite files", flush=True)
        warm(source)

        contenders: list[tuple[str, str, Callable[[str], dict[str, object] | None]]] = [
            (
                "migrator (scan + COPY + checksums of both sides + ANALYZE)",
                "ours",
                lambda name: run_migrator(source, name, work / "ours.json"),
            )
        ]
        for spec in args.tree:
            label, _, directory = spec.partition("=")
            tree = Path(directory).resolve()
            contenders.append(
                (
                    f"migrator from {tree} ({label})",
                    label,
                    lambda name, label=label, tree=tree: run_migrator(  # type: ignore[misc]
                        source, name, work / f"{label}.json", tree=tree
                    ),
                )
            )
        if not args.migrator_only:
            contenders.append(
                ("bare sqlite3 -csv | psql \\copy pipe", "pipe", lambda name: bare_pipe(source, name))
            )
            if shutil.which("pgloader"):
                contenders.append(("pgloader", "pgloader", lambda name: run_pgloader(source, name, work)))
            else:
                print("pgloader: not installed", flush=True)
        runs: dict[str, list[dict[str, object]]] = {key: [] for _, key, _ in contenders}
        for round_ in range(args.repeat):
            for label, key, run in contenders:
                print(f"{label}{f', round {round_ + 1}' if args.repeat > 1 else ''} …", flush=True)
                name = db(key)
                result = timed(name, lambda name=name, run=run: run(name))  # type: ignore[misc]
                assert result is not None
                runs[key].append(result)
                print(_show(result), flush=True)
        ours = _median(runs["ours"])
        pipe = _median(runs["pipe"]) if runs.get("pipe") else None
        loader = _median(runs["pgloader"]) if runs.get("pgloader") else None

        big = None
        if args.big_rows:
            print(f"SQLite install with {args.big_rows} raw messages (RSS growth) …", flush=True)
            big_source = install(args.data / f"src_{args.big_rows}", args.big_rows)
            warm(big_source)
            name = db("big")
            big = timed(name, lambda: run_migrator(big_source, name, work / "big.json"))
            assert big is not None
            print(_show(big), flush=True)

        print()
        print(
            f"Figures ({args.rows} raw messages, {ours['rows']} rows in all tables, {size / 2**20:.0f} MB SQLite"
            + (f"; median of {args.repeat} runs each" if args.repeat > 1 else "")
            + "):"
        )

        def row(label: str, result: dict[str, object], ratio: str, rss: bool) -> tuple[str, ...]:
            return (
                label,
                f"{result['seconds']:.1f}",
                ratio,
                f"{result['client_cpu']:.1f} + {result['server_cpu']:.1f}",
                _mb(result["peak_rss_largest"]) if rss else "-",
                _mb(result["peak_rss_sum"]) if rss else "-",
                _mb(result["peak_pss_sum"]) if rss else "-",
                str(result["load"]),
            )

        rows = [row("migrator (verified)", ours, "1.00", True)]
        if pipe:
            rows.append(
                row("bare sqlite3|psql pipe", pipe, f"{ours['seconds'] / pipe['seconds']:.2f}", False)
            )  # type: ignore[operator]
        if loader:
            rows.append(row("pgloader", loader, f"{ours['seconds'] / loader['seconds']:.2f}", False))  # type: ignore[operator]
        for spec in args.tree:
            label = spec.partition("=")[0]
            other = _median(runs[label])
            rows.append(row(f"migrator of {label}", other, f"{ours['seconds'] / other['seconds']:.2f}", True))  # type: ignore[operator]
        if big:
            rows.append(row(f"migrator, {args.big_rows} messages", big, "-", True))
        header = (
            "run",
            "seconds",
            "migrator/run",
            "CPU s client + server",
            "RSS largest",
            "RSS tree",
            "PSS tree",
            "load average",
        )
        widths = (44, 8, 13, 22, 12, 10, 10, 14)
        print(
            " ".join(
                f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
                for i, (h, w) in enumerate(zip(header, widths, strict=True))
            )
        )
        for values in rows:
            print(
                " ".join(
                    f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
                    for i, (v, w) in enumerate(zip(values, widths, strict=True))
                )
            )
        if args.repeat > 1:
            print()
            for key, results in runs.items():
                seconds = ", ".join(f"{r['seconds']:.1f}" for r in results)
                print(f"{key} runs (s): {seconds}")
        print()
        if pipe:
            print(f"migrator vs bare pipe: {ours['seconds'] / pipe['seconds']:.2f}x (target <= 1.5)")  # type: ignore[operator]
        if loader:
            print(f"migrator vs pgloader: {ours['seconds'] / loader['seconds']:.2f}x (target <= 0.6)")  # type: ignore[operator]
        print(
            f"peak RSS: {_mb(ours['peak_rss_largest'])} largest process, {_mb(ours['peak_rss_sum'])} whole tree"
            f" (PSS {_mb(ours['peak_pss_sum'])}; target < 150 MB)"
        )
        if big:
            growth = big["peak_rss_largest"] / ours["peak_rss_largest"] - 1  # type: ignore[operator]
            tree = big["peak_pss_sum"] / ours["peak_pss_sum"] - 1  # type: ignore[operator]
            print(
                f"RSS growth {args.rows} → {args.big_rows} rows: {growth:+.1%} largest process, {tree:+.1%} tree PSS "
                f"({_mb(big['peak_rss_largest'])} / {_mb(big['peak_pss_sum'])}; target < +20%); "
                f"{args.big_rows} rows took {big['seconds']:.0f}s"
            )
    finally:
        if not args.keep:
            for name in created:
                drop_database(name)


if __name__ == "__main__":
    main()
