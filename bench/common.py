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


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in bytes of it and its children)."""
    full_env = {**os.environ, **env}
    started = time.perf_counter()
    process = subprocess.Popen(args, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    handle = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            rss = handle.memory_info().rss + sum(c.memory_info().rss for c in handle.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(
            f"{' '.join(args)} failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}"
        )
    return elapsed, peak


def tg_parser_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tg_parser", *args]
