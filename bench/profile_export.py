"""Profile: where an export's time goes, per entry, stage by stage, in CPU seconds.

Stages, each measured on its own with time.process_time (CPU of this process, all its threads), so the
figures hold on a loaded machine where wall clock does not:

* read    — the keyset batches of `export_stream_documents` (ExportStore.document_batches), client side;
            on PostgreSQL the server backends' CPU for the same reads is sampled from /proc beside it;
* format  — the writer's loop over those rows into an in-memory buffer (titles, links, orjson);
* write   — the same bytes written line by line to a file through a 1 MiB buffer (the kernel's copy);
* start   — the `tg-parser export` command on an empty install (interpreter, imports, settings, schema
            check), once per export whatever its size.

    python bench/profile_export.py [--documents 50000] [--dialects sqlite,postgres] [--repeat 2]
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import populate
from common import backend_pids, drop_pg, fresh_install, process_cpu, run_measured, tg_parser_cmd

from tg_parser.db.connect import open_database
from tg_parser.export.writer import ExportFilters, _write_message_entries
from tg_parser.stores.base import FAR_FUTURE, FAR_PAST
from tg_parser.stores.export import ExportStore


class _Replay:
    """The document batches read once, handed to the writer again without a database."""

    def __init__(self, batches: list[list[tuple[Any, ...]]]) -> None:
        self.batches = batches

    def document_batches(self, *_: Any, **__: Any) -> Any:
        return (batch for batch in self.batches)


def _stages(settings: Any, pg_db: str | None) -> dict[str, float]:
    db = open_database(settings)
    try:
        store = ExportStore(db)
        usernames = store.channel_usernames()  # also opens the connection the reads then use
        servers = backend_pids(pg_db) if pg_db else []
        server_start = {pid: process_cpu(pid) or 0.0 for pid in servers}
        started = time.process_time()
        with closing(store.document_batches(None, FAR_PAST, FAR_FUTURE)) as reading:
            batches = list(reading)
        read = time.process_time() - started
        server = sum((process_cpu(pid) or 0.0) - server_start[pid] for pid in servers)
    finally:
        db.close()
    buffer = io.BytesIO()
    started = time.process_time()
    entries = _write_message_entries(
        _Replay(batches),  # type: ignore[arg-type]
        buffer,
        ExportFilters(),
        usernames,
        {},
        None,
        set(),
        {},
        None,
    )
    formatted = time.process_time() - started
    lines = buffer.getvalue().splitlines(keepends=True)
    with tempfile.TemporaryFile() as raw, open(raw.fileno(), "wb", buffering=1 << 20, closefd=False) as out:
        started = time.process_time()
        for line in lines:
            out.write(line)
        out.flush()
        written = time.process_time() - started
    return {"entries": entries, "read": read, "server": server, "format": formatted, "write": written}


def _start_cpu(work: Path, dialect: str) -> float:
    """CPU seconds of `tg-parser export` on an empty install (client only)."""
    name = "tgp_bench_profile_empty"
    _, env = fresh_install(dialect, work, name)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run_measured(tg_parser_cmd("export", "--out", str(work / "empty_out"), "--silent"), env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        if dialect == "postgres":
            drop_pg(name)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=50_000)
    parser.add_argument("--dialects", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=2, help="runs per stage (median reported)")
    args = parser.parse_args()
    print(f"{'dialect':<9} {'stage':<8} {'CPU s':>7} {'us/entry':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for dialect in args.dialects.split(","):
            name = "tgp_bench_profile_export"
            settings, env = fresh_install(dialect, work, name)
            populate(settings, args.documents)
            pg_db = env.get("DB_NAME") if dialect == "postgres" else None
            runs = [_stages(settings, pg_db) for _ in range(max(args.repeat, 1))]
            start = statistics.median(_start_cpu(work, dialect) for _ in range(max(args.repeat, 1)))
            if dialect == "postgres":
                drop_pg(name)
            entries = runs[0]["entries"]
            stages = ["read", "server", "format", "write"] if pg_db else ["read", "format", "write"]
            for stage in stages:
                cpu = statistics.median(run[stage] for run in runs)
                print(f"{dialect:<9} {stage:<8} {cpu:>7.2f} {cpu / entries * 1e6:>9.1f}")
            print(f"{dialect:<9} {'start':<8} {start:>7.2f} {'(once)':>9}")


if __name__ == "__main__":
    main()
