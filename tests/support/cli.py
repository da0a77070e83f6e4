"""The environment that points the CLI at a test install (what an operator or cron would set)."""

from __future__ import annotations

from tg_parser.config import Settings


def db_env(settings: Settings) -> dict[str, str]:
    if settings.db_type == "sqlite":
        return {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(settings.db_sqlite_dir)}
    return {
        "DB_TYPE": "postgres",
        "DB_HOST": settings.db_host,
        "DB_PORT": str(settings.db_port),
        "DB_USER": settings.db_user,
        "DB_NAME": settings.db_name,
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
    }
