"""Shared helpers for the benchmarks: fresh installs on either dialect and peak-RSS measurement."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from tg_parser.config import Settings, load_settings
from tg_parser.db import migrations

PG = {
    "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
    "user": os.environ.get("BENCH_PG_USER", "postgres"),
}


def fresh_install(dialect: str, workdir: Path, name: str) -> tuple[Settings, dict[str, str]]:
    """A migrated, empty install; returns its settings and the environment that selects it."""
    if dialect == "sqlite":
        directory = workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        settings = load_settings(_env_file=None, db_type="sqlite", db_sqlite_dir=directory)
        env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(directory)}
    else:
        with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        settings, env = pg_settings(name)
    migrations.upgrade(settings)
    return settings, env


def pg_settings(name: str) -> tuple[Settings, dict[str, str]]:
    """The settings of the PostgreSQL database `name` on the bench server, and the environment that
    selects it."""
    settings = load_settings(
        _env_file=None,
        db_type="postgres",
        db_host=PG["host"],
        db_port=PG["port"],
        db_user=PG["user"],
        db_name=name,
    )
    env = {
        "DB_TYPE": "postgres",
        "DB_HOST": PG["host"],
        "DB_PORT": str(PG["port"]),
        "DB_USER": PG["user"],
        "DB_NAME": name,
    }
    return settings, env


def drop_pg(name: str) -> None:
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def backend_pids(dbname: str) -> list[int]:
    """Process ids of the PostgreSQL backends connected to `dbname` (the server must be on this machine)."""
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
        ).fetchall()
    return [row[0] for row in rows]


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process of this machine, from /proc (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample_backends(pg_db: str, server_cpu: dict[int, float], *, find: bool) -> None:
    """One sample of the CPU seconds of the backends serving `pg_db` into `server_cpu` (pid → last value
    seen); with `find`, first look for backends that connected since (a query of pg_stat_activity)."""
    if find:
        for pid in backend_pids(pg_db):
            server_cpu.setdefault(pid, 0.0)
    for pid in server_cpu:
        cpu = process_cpu(pid)
        if cpu is not None:
            server_cpu[pid] = cpu


def run_measured(
    args: list[str], env: dict[str, str], pg_db: str | None = None, server_cpu: dict[int, float] | None = None
) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in bytes of it and its children).

    With `pg_db`, the CPU seconds of each PostgreSQL backend serving that database are sampled while
    the command runs (`server_cpu`: pid → last value seen; a backend's last ~0.1 s before it exits can
    be missed, so the sum is a slight underestimate)."""
    full_env = {**os.environ, **env}
    started = time.perf_counter()
    process = subprocess.Popen(args, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    handle = psutil.Process(process.pid)
    peak = 0
    polls = 0
    while process.poll() is None:
        try:
            rss = handle.memory_info().rss + sum(c.memory_info().rss for c in handle.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if pg_db is not None and server_cpu is not None:
            sample_backends(pg_db, server_cpu, find=polls % 5 == 0)
        polls += 1
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(
            f"{' '.join(args)} failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}"
        )
    return elapsed, peak


def tg_parser_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tg_parser", *args]
