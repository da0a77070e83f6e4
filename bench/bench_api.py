"""Benchmark: the HTTP API against a bare FastAPI + psycopg_pool baseline on the same data.

Fills a PostgreSQL database with 200k generated documents (200 channels) and 1,000 topics, starts
`tg-parser serve --workers 2` (keys and rate limits on; the limit set high enough never to answer 429)
and the baseline app (bench/api_baseline.py, also 2 workers), then drives each route with `wrk`
(50 connections, 2 threads, a fixed duration; Debian's `wrk` package) and prints requests/s, p50 and
p99 latency and errors for both, with ratios, plus the pool's average wait per connection request.

    python bench/bench_api.py [--documents 200000] [--seconds 10] [--connections 50] [--keep]

Targets (issue 19): ≥ 0.9 of the baseline on every route, 0 errors, a deep page as fast as the first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import psycopg
from common import PG, drop_pg, fresh_install

from tg_parser.api.keys import create_key
from tg_parser.db.connect import open_database

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "tgp_bench_api"

FILL = """
INSERT INTO processing.processed_documents (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata)
SELECT 'tg:' || c || ':post:' || m, 'doc:tg:' || c || ':post:' || m, c,
       timestamptz '2024-01-01' + m * interval '7 minutes', now(),
       repeat('Generated message text number ' || m || ' of channel ' || c || '. ', 6),
       'Summary of message ' || m || '.', jsonb_build_array('topic-' || (m %% 17), 'news'),
       jsonb_build_array(jsonb_build_object('type', 'hashtag', 'value', '#t' || (m %% 17), 'confidence', 1.0)),
       'en', 'extractive', 'extractive:1', 'extractive-1', 0, 0, '{"message_type": "post"}'::jsonb
FROM generate_series(1, %(channels)s) AS c, generate_series(1, %(per_channel)s) AS m
"""
TOPICS = """
INSERT INTO processing.topic_cards (
    topic_id, channel_id, title, summary, kind, anchors, tags, model, prompt_id, created_at, updated_at, metadata)
SELECT 'topic:tg:' || (1 + t % 200) || ':post:' || t, 1 + t % 200, 'Topic ' || t, 'About topic ' || t, 'cluster',
       jsonb_build_array(jsonb_build_object('source_ref', 'tg:' || (1 + t % 200) || ':post:' || t, 'score', 0.9)),
       '["news"]'::jsonb, 'extractive', 'extractive:1', now(), now(), '{}'::jsonb
FROM generate_series(1, 1000) AS t
"""


def wait_ready(url: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {deadline:.0f} s")


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": errors,
    }


def pool_wait(port: int, key: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ready", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        import json

        pool = json.load(answer).get("pool", {})
    num, wait = pool.get("requests_num", 0), pool.get("requests_wait_ms", 0)
    return f"{wait / num:.2f} ms avg over {num} requests (one process)" if num else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    settings, env = fresh_install("postgres", Path("."), DB_NAME)
    channels = 200
    per_channel = max(1, args.documents // channels)
    dsn = f"host={PG['host']} port={PG['port']} user={PG['user']} dbname={DB_NAME}"
    print(f"filling {channels * per_channel:,} documents and 1,000 topics …", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FILL, {"channels": channels, "per_channel": per_channel})
        conn.execute(TOPICS)
        conn.execute("VACUUM ANALYZE processing.processed_documents")
        conn.execute("VACUUM ANALYZE processing.topic_cards")
        deep = conn.execute(
            "SELECT channel_id, message_date, source_ref FROM processing.processed_documents "
            "ORDER BY channel_id, message_date, source_ref OFFSET %s LIMIT 1",
            (channels * per_channel * 9 // 10,),
        ).fetchone()
    db = open_database(settings)
    try:
        key, _ = create_key(db, "bench", "read")
    finally:
        db.close()

    from tg_parser.api.pagination import encode

    deep_cursor = encode("d", [deep[0], deep[1], deep[2]])
    ours_port, base_port = args.port, args.port + 1
    run_env = {
        **os.environ,
        **env,
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT_READ": str(10**9),
        "API_PROBES_OPEN": "keys",
        "DB_POOL_MAX_SIZE": "10",
    }
    ours = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tg_parser",
            "serve",
            "--workers",
            "2",
            "--port",
            str(ours_port),
            "--no-execute-runs",
        ],
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.api_baseline:create_app",
            "--workers",
            "2",
            "--port",
            str(base_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env={**os.environ, "BENCH_DSN": dsn},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    auth = [f"Authorization: Bearer {key}"]
    try:
        wait_ready(f"http://127.0.0.1:{base_port}/ready")
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{ours_port}/health", headers={"Authorization": f"Bearer {key}"}
                )
                urllib.request.urlopen(request, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("tg-parser serve did not start") from None
                time.sleep(0.2)
        deep_base = f"{deep[1].isoformat()}|{deep[2]}"
        routes = [
            ("documents limit=100, first page", "/api/v1/documents?limit=100", "/documents?limit=100"),
            (
                "documents limit=100, deep page",
                f"/api/v1/documents?limit=100&cursor={deep_cursor}",
                f"/documents?limit=100&channel={deep[0]}&after={urllib.parse.quote(deep_base)}",
            ),
            ("documents limit=20", "/api/v1/documents?limit=20", "/documents?limit=20"),
            ("topics limit=100", "/api/v1/topics", "/topics?limit=100"),
            ("ready", "/ready", "/ready"),
        ]
        print(
            f"\nwrk: {args.connections} connections, 2 threads, {args.seconds} s per run; 2 API workers each\n"
        )
        header = f"{'route':<34}{'ours req/s':>11}{'base req/s':>11}{'ratio':>7}{'ours p50/p99 ms':>18}{'base p50/p99 ms':>18}{'errors':>8}"
        print(header)
        print("-" * len(header))
        for name, ours_path, base_path in routes:
            for warm in (
                f"http://127.0.0.1:{ours_port}{ours_path}",
                f"http://127.0.0.1:{base_port}{base_path}",
            ):
                wrk(warm, 2, args.connections, auth)
            mine = wrk(f"http://127.0.0.1:{ours_port}{ours_path}", args.seconds, args.connections, auth)
            theirs = wrk(f"http://127.0.0.1:{base_port}{base_path}", args.seconds, args.connections, [])
            ratio = mine["rps"] / theirs["rps"] if theirs["rps"] else float("nan")
            print(
                f"{name:<34}{mine['rps']:>11.0f}{theirs['rps']:>11.0f}{ratio:>7.2f}"
                f"{mine['p50']:>9.1f}/{mine['p99']:<8.1f}{theirs['p50']:>9.1f}/{theirs['p99']:<8.1f}"
                f"{mine['errors']:>5}/{theirs['errors']}",
                flush=True,
            )
        print(f"\npool wait (ours): {pool_wait(ours_port, key)}")
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        for process in (ours, base):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in (ours, base):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if not args.keep:
            drop_pg(DB_NAME)


if __name__ == "__main__":
    main()
