"""Benchmark: export N processed documents to kb_entries.ndjson on SQLite and PostgreSQL.

Prints entries/s and the peak RSS of the export process at 50k and 200k documents, and the RSS ratio
between the two (flat memory means a ratio near 1.0). Target: ≥ 50,000 entries/s. The rate is wall
clock of the whole command (start-up included). A shared machine moves the wall clock a lot, so each
export runs --repeat times (the median is reported, and the largest RSS) and the CPU seconds of the
command (the client's, start-up included, also per entry) and the load average are printed beside
it; on PostgreSQL the CPU seconds of the server backends serving the export are sampled from /proc (the
server must run on this machine) and "entries/CPU s" counts client plus server CPU. The client's CPU
includes the helper processes of a split export (they are its children, waited for); --jobs is passed
to the command (default: the command's own choice, 2 processes at these sizes on 2 or more CPUs).

    python bench/bench_export.py [--sizes 50000,200000] [--dialects sqlite,postgres] [--repeat 3] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend_pids, drop_pg, fresh_install, process_cpu, run_measured, tg_parser_cmd

from tg_parser.db.connect import open_database
from tg_parser.domain.models import Source
from tg_parser.stores import IngestionStore, ProcessingStore

CHANNELS = 4
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def populate(settings, count: int) -> None:
    db = open_database(settings)
    try:
        for c in range(CHANNELS):
            IngestionStore(db).add_source(
                Source(source_id=f"chan{c}", channel_id=100 + c, username=f"chan_{c}")
            )
        batch_raw, batch_doc = [], []
        for i in range(count):
            channel = 100 + i % CHANNELS
            message_id = i // CHANNELS + 1
            ref = f"tg:{channel}:post:{message_id}"
            date = T0 + timedelta(minutes=i)
            text = (
                f"Сообщение {i}: новости о запуске ракет и спутников. Post {i} about launches and satellites. "
                * 3
            )
            batch_raw.append(
                {
                    "source_ref": ref,
                    "source_id": f"chan{channel - 100}",
                    "channel_id": channel,
                    "message_id": message_id,
                    "message_type": "post",
                    "date": date,
                    "edit_date": None,
                    "text": text,
                    "thread_id": None,
                    "parent_message_id": None,
                    "grouped_id": None,
                    "views": i,
                    "forwards": 1,
                    "replies": 0,
                    "media_type": None,
                    "media": None,
                    "raw_payload": {"id": message_id},
                    "payload_truncated": False,
                    "payload_size": 20,
                    "inserted_at": date,
                }
            )
            batch_doc.append(
                {
                    "source_ref": ref,
                    "id": f"doc:{ref}",
                    "channel_id": channel,
                    "message_date": date,
                    "processed_at": date,
                    "text_clean": text,
                    "summary": f"Сводка {i}. Summary of post {i}.",
                    "topics": ["space", "rockets"],
                    "entities": [{"type": "org", "value": "Roscosmos", "confidence": 0.9}],
                    "language": "ru",
                    "model": "bench",
                    "prompt_id": "p",
                    "pipeline_version": "1",
                    "input_tokens": 100,
                    "output_tokens": 50,
                    "metadata": {},
                }
            )
            if len(batch_raw) == 5000:
                db.execute_many("raw_insert_message", batch_raw, batch_size=5000)
                db.execute("processing_upsert_documents", {"rows": ProcessingStore.batch_json(batch_doc)})
                batch_raw, batch_doc = [], []
        if batch_raw:
            db.execute_many("raw_insert_message", batch_raw, batch_size=5000)
            db.execute("processing_upsert_documents", {"rows": ProcessingStore.batch_json(batch_doc)})
    finally:
        db.close()


def _measure_export(
    out: Path, env: dict[str, str], jobs: int | None = None
) -> tuple[float, int, float, float, float]:
    """One export command: (wall seconds, peak RSS bytes, CPU seconds, PostgreSQL backend CPU seconds
    (0 on SQLite), 1-minute load before it)."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server: dict[int, float] = {}
    pg_db = env.get("DB_NAME") if env.get("DB_TYPE") == "postgres" else None
    # Backends already connected (none: the command opens its own) would count from their start.
    start_cpu = {pid: process_cpu(pid) or 0.0 for pid in backend_pids(pg_db)} if pg_db else {}
    seconds, peak = run_measured(
        tg_parser_cmd("export", "--out", str(out), "--silent", *(["--jobs", str(jobs)] if jobs else [])),
        env,
        pg_db=pg_db,
        server_cpu=server,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    server_cpu = sum(value - start_cpu.get(pid, 0.0) for pid, value in server.items())
    return seconds, peak, cpu, server_cpu, load


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50000,200000")
    parser.add_argument("--dialects", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=3, help="exports per size (median reported)")
    parser.add_argument("--jobs", type=int, default=None, help="export --jobs (default: the command's)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for dialect in args.dialects.split(","):
            for size in sizes:
                name = f"tgp_bench_export_{size}"
                settings, env = fresh_install(dialect, work, name)
                populate(settings, size)
                out = work / f"out_{dialect}_{size}"
                runs = [_measure_export(out, env, args.jobs) for _ in range(max(args.repeat, 1))]
                seconds = statistics.median(r[0] for r in runs)
                peak = max(r[1] for r in runs)
                cpu = statistics.median(r[2] for r in runs)
                server_cpu = statistics.median(r[3] for r in runs)
                load = statistics.median(r[4] for r in runs)
                with (out / "kb_entries.ndjson").open("rb") as handle:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
                rows.append(
                    (dialect, size, lines, seconds, lines / seconds, peak / 2**20, cpu, server_cpu, load)
                )
                if dialect == "postgres":
                    drop_pg(name)
    print(
        f"{'dialect':<9} {'documents':>9} {'entries':>9} {'seconds':>8} {'entries/s':>10} {'peak RSS MB':>12}"
        f" {'CPU s':>6} {'us/entry':>9} {'server s':>9} {'srv us/e':>9} {'entries/CPU s':>14} {'load':>5}"
    )
    for dialect, size, lines, seconds, rate, rss, cpu, server_cpu, load in rows:
        print(
            f"{dialect:<9} {size:>9} {lines:>9} {seconds:>8.2f} {rate:>10.0f} {rss:>12.1f}"
            f" {cpu:>6.2f} {cpu / lines * 1e6:>9.1f} {server_cpu:>9.2f} {server_cpu / lines * 1e6:>9.1f}"
            f" {lines / (cpu + server_cpu):>14,.0f} {load:>5.2f}"
        )
    for dialect in args.dialects.split(","):
        mine = [r for r in rows if r[0] == dialect]
        if len(mine) >= 2:
            print(
                f"{dialect}: RSS {mine[-1][1]} vs {mine[0][1]} documents = {mine[-1][5] / mine[0][5]:.2f}x "
                f"(flat ≈ 1.0); rate at {mine[-1][1]}: {mine[-1][4]:.0f}/s (target ≥ 50,000/s)"
            )


if __name__ == "__main__":
    main()
