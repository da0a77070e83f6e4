"""Benchmark `tg-parser process` against a local OpenAI-compatible server with a fixed latency.

For each dialect and concurrency level: a fresh install with N raw messages, then one real
`tg-parser process --concurrency C --json` run (or K processes with C/K each, `--processes`). Prints
documents/s (from the run reports, so interpreter start-up is not counted), the ratio to the ideal
`C / latency`, the CPU time the process spent per document (start-up included, then within the run's
span only: importing the openai SDK alone costs about 0.5 s) and the server's, the
process's RSS sampled during the run (a fifth of the way in and at the peak: flat memory keeps them
close) and the load average when the row started. The server runs in its own process so that it does
not share the benchmarked process's GIL.

    python bench/bench_process.py                       # 5,000 messages, C = 1, 8, 32, both dialects
    python bench/bench_process.py --levels 32 --dialects sqlite --messages 2000
    python bench/bench_process.py --levels 32 --processes 1,2   # also 2 processes x 16 on one database
    python bench/bench_process.py --extractive 200000   # offline processor: docs/s (target ≥ 5,000/s)
                                                        # and the extractors' CPU per message

Target: at C = 32, at least 85 % of ideal on both dialects and at most 2.5 ms of CPU per document.
Also prints the request body of one Responses call (GPT-5) and one Chat Completions call as sent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import drop_pg, fresh_install, sample_backends, tg_parser_cmd  # noqa: E402
from support.llm_server import LlmServer  # noqa: E402

from tg_parser.db.connect import open_database  # noqa: E402
from tg_parser.domain.models import RawMessage  # noqa: E402
from tg_parser.stores import ProcessingStore, RawStore  # noqa: E402

CHANNEL = 1234567890
TEXTS = [
    "Новый релиз библиотеки: ускорение парсинга в 3 раза, поддержка Python 3.13. #python #release",
    "We are hiring a backend engineer (Go, PostgreSQL). Remote, EU time zones. Apply via @jobs_bot",
    "Курс доллара на сегодня 92,4 ₽; евро 99,1 ₽. Подробнее: https://example.com/rates?utm_source=tg",
    "Conference report: three talks on LLM evaluation, slides inside. #ml #conference",
]


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "llm_server.py"),
            "--latency",
            str(latency),
            "--no-record",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _cpu_seconds(handle: psutil.Process) -> float:
    times = handle.cpu_times()
    return times.user + times.system


def seed(settings, count: int) -> None:
    db = open_database(settings)
    try:
        store = RawStore(db)
        start = datetime(2025, 1, 1, tzinfo=UTC)
        batch: list[RawMessage] = []
        for i in range(1, count + 1):
            batch.append(
                RawMessage.build(
                    channel_id=CHANNEL,
                    message_type="post",
                    message_id=i,
                    date=start + timedelta(minutes=i),
                    text=f"{TEXTS[i % len(TEXTS)]} (#{i})",
                    views=i * 10,
                )
            )
            if len(batch) == 500:
                store.store_batch(batch)
                batch = []
        if batch:
            store.store_batch(batch)
    finally:
        db.close()


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_process(
    env: dict[str, str],
    concurrency: int,
    expected: int,
    processes: int = 1,
    extra: tuple[str, ...] = (),
    pg_db: str | None = None,
) -> dict:
    """Run `processes` CLI workers on the same install, `concurrency` requests in flight in all.

    Samples each worker's RSS and CPU time, and with `pg_db` the CPU time of the PostgreSQL backends
    serving that database (the server must run on this machine; a backend's last ~0.05 s before it
    exits can be missed); returns documents/s over the span from the first run's start to the last
    run's end (from the run reports, so interpreter start-up is not counted).
    """
    command = tg_parser_cmd(
        "process", "--concurrency", str(concurrency // processes), "--json", "--silent", *extra
    )
    workers = [
        subprocess.Popen(
            command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    handles = [psutil.Process(worker.pid) for worker in workers]
    rss: list[list[int]] = [[] for _ in workers]
    cpu = [0.0 for _ in workers]
    # (wall clock, CPU seconds) per worker, to tell the CPU spent inside its run from start-up and exit.
    cpu_at: list[list[tuple[float, float]]] = [[] for _ in workers]
    server_cpu: dict[int, float] = {}  # backend pid -> its CPU seconds, last seen
    stop = threading.Event()

    def sample() -> None:
        polls = 0
        while not stop.is_set():
            if pg_db is not None:
                sample_backends(pg_db, server_cpu, find=polls % 5 == 0)
            polls += 1
            for i, handle in enumerate(handles):
                try:
                    rss[i].append(handle.memory_info().rss)
                    times = handle.cpu_times()
                    cpu[i] = times.user + times.system
                    cpu_at[i].append((time.time(), cpu[i]))
                except psutil.Error:
                    pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {worker.returncode}:\n{stderr[-3000:]}")
        reports.append(json.loads(stdout))
    stop.set()
    sampler.join()
    processed = sum(r["counts"]["processed"] for r in reports)
    if processed != expected:
        raise SystemExit(f"expected {expected} documents, got {[r['counts'] for r in reports]}")
    span = (
        max(_timestamp(r["finished_at"]) for r in reports) - min(_timestamp(r["started_at"]) for r in reports)
    ).total_seconds()
    in_run = sum(
        _cpu_between(
            samples, _timestamp(r["started_at"]).timestamp(), _timestamp(r["finished_at"]).timestamp()
        )
        for samples, r in zip(cpu_at, reports, strict=True)
    )
    # RSS once a run is warm (a fifth of its samples in) versus its peak: flat memory keeps them close.
    return {
        "seconds": span,
        "docs_per_s": processed / span,
        "cpu_ms_per_doc": sum(cpu) * 1000 / processed,
        "run_cpu_ms_per_doc": in_run * 1000 / processed,
        "server_cpu_ms_per_doc": sum(server_cpu.values()) * 1000 / processed,
        "rss_warm_mb": max((s[len(s) // 5] for s in rss if s), default=0) / 2**20,
        "rss_peak_mb": max((max(s) for s in rss if s), default=0) / 2**20,
    }


def _cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds a worker spent between two wall-clock times, from its samples (20 a second)."""
    before = [cpu for at, cpu in samples if at <= start]
    after = [cpu for at, cpu in samples if at >= end]
    first = before[-1] if before else 0.0
    last = after[0] if after else (samples[-1][1] if samples else 0.0)
    return last - first


def sample_bodies() -> None:
    """One Responses (GPT-5) and one Chat Completions request body, as the SDK sends them."""
    from tg_parser.config import load_settings
    from tg_parser.llm import LlmClient
    from tg_parser.processing import LlmDocumentProcessor

    message = {
        "source_ref": f"tg:{CHANNEL}:post:1",
        "channel_id": CHANNEL,
        "message_type": "post",
        "date": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "text": TEXTS[0],
    }
    with LlmServer() as server:
        for api, model in (("responses", "gpt-5-mini"), ("chat", "llama3.1:8b")):
            settings = load_settings(
                _env_file=None,
                openai_base_url=server.base_url,
                llm_api=api,
                llm_model=model,
                openai_api_key="sk-bench",
            )
            client = LlmClient.from_settings(settings)
            try:
                LlmDocumentProcessor.load(client).process(message)
            finally:
                client.close()
        for request in server.requests:
            print(f"\n--- {request.path} ({request.model}) request body as sent:")
            print(json.dumps(request.body, ensure_ascii=False, indent=2))


# A long message with every kind of markup and entity (~560 characters), for the extractor cost.
LONG_TEXT = (
    "**Новости недели**: вышел релиз 2.0 библиотеки, подробности "
    "https://example.com/news/2025/05?utm_source=tg&id=7. Главное — ускорение в 3 раза и поддержка "
    "Python 3.13!!! 🔥🔥🔥 Обсуждение в чате @dev_chat, вопросы на info@example.com. Также: __новый__ CLI, "
    "`tg-parser run`, исправлены ошибки с кодировками. Звоните +7 (999) 123-45-67 до 18:00. We also "
    "published an English summary for the international audience, see www.example.org/en. #python "
    "#release #новости $BTC. Подписывайтесь на канал, чтобы не пропустить следующие обзоры и новости."
)


def extractor_cost() -> None:
    """CPU per message of the extractors alone (no database): the benchmark's texts and a long one."""
    from tg_parser.processing.extractive import extract

    for label, texts in (
        ("short (the benchmark's texts)", [f"{TEXTS[i % len(TEXTS)]} (#{i})" for i in range(1, 20001)]),
        (f"long ({len(LONG_TEXT)} chars, markup)", [f"{LONG_TEXT} (#{i})" for i in range(1, 5001)]),
    ):
        best = float("inf")
        for _ in range(3):  # the best of three: other processes only ever add time
            started = time.process_time()
            for text in texts:
                extract(text)
            best = min(best, time.process_time() - started)
        print(f"extractors, {label}: {best / len(texts) * 1e6:.0f} µs CPU per message", flush=True)


def bench_extractive(count: int, dialects: list[str], processes: int = 1) -> None:
    """Documents/s of `tg-parser process --processor extractive` (no server, no network)."""
    extractor_cost()
    with tempfile.TemporaryDirectory(prefix="bench-extractive-") as workdir:
        for dialect in dialects:
            name = f"tgp_bench_extractive_{os.getpid()}"
            settings, env = fresh_install(dialect, Path(workdir), name)
            try:
                seed(settings, count)
                env["LOG_LEVEL"] = "WARNING"
                load = os.getloadavg()[0]
                pg_db = name if dialect == "postgres" else None
                extra = ("--processor", "extractive")
                measured = run_process(env, 8, count, processes, extra=extra, pg_db=pg_db)
            finally:
                if dialect == "postgres":
                    drop_pg(name)
            verdict = "meets" if measured["docs_per_s"] >= 5000 else "MISSES"
            shape = "" if processes == 1 else f" ({processes} processes)"
            server = f", server {measured['server_cpu_ms_per_doc']:.3f}" if pg_db else ""
            print(
                f"{dialect:8} extractive{shape} {count} docs in {measured['seconds']:6.1f} s: "
                f"{measured['docs_per_s']:7.0f} docs/s ({verdict} the 5,000/s target); "
                f"CPU {measured['cpu_ms_per_doc']:.3f} ms/doc ({measured['run_cpu_ms_per_doc']:.3f} in the run"
                f"{server}); RSS warm {measured['rss_warm_mb']:.0f} MB, "
                f"peak {measured['rss_peak_mb']:.0f} MB; load {load:.2f} before, "
                f"{os.getloadavg()[0]:.2f} after",
                flush=True,
            )
    print(f"machine: {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--levels", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--dialects", default="sqlite,postgres")
    parser.add_argument("--latency", type=float, default=0.1, help="server latency in seconds")
    parser.add_argument("--api", choices=["responses", "chat"], default="responses")
    parser.add_argument("--model", default="gpt-5-mini")
    parser.add_argument(
        "--processes",
        default="1",
        help="comma-separated numbers of worker processes sharing each level's concurrency (scale-out)",
    )
    parser.add_argument("--no-bodies", action="store_true", help="do not print the sample request bodies")
    parser.add_argument(
        "--extractive",
        type=int,
        metavar="N",
        help="instead: the offline extractive processor on N messages per dialect (issue target ≥ 5,000 docs/s)",
    )
    args = parser.parse_args()
    if args.extractive:
        bench_extractive(args.extractive, args.dialects.split(","), int(args.processes.split(",")[0]))
        return
    levels = [int(level) for level in args.levels.split(",")]
    splits = [int(n) for n in args.processes.split(",")]
    server, url = start_server(args.latency)
    # The server's CPU per document too: on a small machine it competes with the benchmarked process.
    server_handle = psutil.Process(server.pid)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-process-") as workdir:
            for dialect in args.dialects.split(","):
                for level, processes in [(lv, k) for lv in levels for k in splits if lv % k == 0]:
                    name = f"tgp_bench_process_{os.getpid()}_{level}_{processes}"
                    settings, env = fresh_install(dialect, Path(workdir), name)
                    try:
                        seed(settings, args.messages)
                        env.update(
                            {
                                "OPENAI_BASE_URL": url,
                                "OPENAI_API_KEY": "sk-bench",
                                "LLM_API": args.api,
                                "LLM_MODEL": args.model,
                                "LOG_LEVEL": "WARNING",
                            }
                        )
                        load = os.getloadavg()[0]
                        server_cpu = _cpu_seconds(server_handle)
                        measured = run_process(env, level, args.messages, processes)
                        server_ms = (_cpu_seconds(server_handle) - server_cpu) * 1000 / args.messages
                        db = open_database(settings)
                        try:
                            stored = ProcessingStore(db).count_documents()
                        finally:
                            db.close()
                    finally:
                        if dialect == "postgres":
                            drop_pg(name)
                    ideal = level / args.latency
                    row = {
                        "dialect": dialect,
                        "concurrency": level,
                        "processes": processes,
                        "documents": stored,
                        "ideal_per_s": ideal,
                        "ratio": measured["docs_per_s"] / ideal,
                        "server_cpu_ms_per_doc": server_ms,
                        "load_before": load,
                        **measured,
                    }
                    rows.append(row)
                    shape = (
                        f"C={level}" if processes == 1 else f"C={level} ({processes}x{level // processes})"
                    )
                    print(
                        f"{dialect:8} {shape:13} {stored} docs in {row['seconds']:6.1f} s: "
                        f"{row['docs_per_s']:6.1f} docs/s, ideal {ideal:4.0f}/s, ratio {row['ratio']:.3f}; "
                        f"CPU {row['cpu_ms_per_doc']:.2f} ms/doc, {row['run_cpu_ms_per_doc']:.2f} in the run "
                        f"(server {server_ms:.2f}); "
                        f"RSS warm {row['rss_warm_mb']:.0f} MB, peak {row['rss_peak_mb']:.0f} MB; "
                        f"load {load:.2f}",
                        flush=True,
                    )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait()
    for row in rows:
        if row["concurrency"] == 32:
            verdict = "meets" if row["ratio"] >= 0.85 else "MISSES"
            print(
                f"{row['dialect']}: C=32 in {row['processes']} process(es) at {row['ratio']:.1%} of ideal"
                f" — {verdict} the 85 % target"
            )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    if not args.no_bodies:
        sample_bodies()


if __name__ == "__main__":
    main()
