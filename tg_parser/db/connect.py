"""Open the configured database: SQLite files or a PostgreSQL pool, checked against the migrations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.catalog import SqlCatalog
from tg_parser.db.resources import STORES
from tg_parser.errors import ConfigError

if TYPE_CHECKING:
    # Imported where used: psycopg costs ~60 ms of start-up that a SQLite command never needs.
    from tg_parser.db.postgres import PgTarget


_PG_PARTS = {"db_host", "db_port", "db_name", "db_user", "db_password"}


def pg_target(settings: Settings) -> PgTarget:
    """Connection parameters from DATABASE_URL or the DB_* parts, passed as keywords (never a built URL)."""
    from tg_parser.db.postgres import PgTarget

    if settings.database_url is not None:
        return parse_database_url(settings.database_url.get_secret_value())
    if not settings.model_fields_set & _PG_PARTS:
        # The parts' defaults (tg_parser@localhost) are a guess, not a configuration: connecting to them
        # would only report a login failure for a role nobody asked for.
        raise ConfigError(
            "PostgreSQL is not configured: DATABASE_URL is not set (nor DB_HOST, DB_NAME, DB_USER, DB_PASSWORD)",
            "set DATABASE_URL=postgresql://USER@HOST:5432/DBNAME (USER:PASSWORD@ if the role has a password) "
            "in the environment or .env",
        )
    options: dict[str, str] = {}
    if settings.db_sslmode:
        options["sslmode"] = settings.db_sslmode
    return PgTarget(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=settings.db_user,
        password=settings.db_password.get_secret_value() if settings.db_password else None,
        options=options,
    )


def migration_target(settings: Settings) -> PgTarget:
    """Where migrations connect: DATABASE_MIGRATION_URL when set (an owner role that may run DDL), else the
    same target as the application (DATABASE_URL or the DB_* parts)."""
    if settings.database_migration_url is not None:
        return parse_database_url(
            settings.database_migration_url.get_secret_value(), "DATABASE_MIGRATION_URL"
        )
    return pg_target(settings)


def parse_database_url(url: str, variable: str = "DATABASE_URL") -> PgTarget:
    """Accept postgresql://, postgres:// and postgresql+psycopg:// URLs; the password stays percent-decoded."""
    from tg_parser.db.postgres import PgTarget

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed "[" of an IPv6 host, for one
        raise ConfigError(
            f"{variable} is not a URL ({exc})", "use postgresql://user:password@host:5432/dbname"
        ) from None
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{variable} must start with postgresql:// (got {parts.scheme or 'no scheme'}://)",
            "use postgresql://user:password@host:5432/dbname",
        )
    options: dict[str, str] = {}
    for pair in filter(None, parts.query.split("&")):
        key, _, value = pair.partition("=")
        options[unquote(key)] = unquote(value)
    try:
        port = parts.port or 5432
    except ValueError:
        raise ConfigError(f"{variable} has an invalid port", "use a number between 1 and 65535") from None
    return PgTarget(
        host=unquote(parts.hostname or "localhost"),
        port=port,
        dbname=unquote(parts.path.lstrip("/")) or "postgres",
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password is not None else None,
        options=options,
    )


def load_catalog(settings: Settings, dialect: str | None = None) -> SqlCatalog:
    return SqlCatalog.load(dialect or dialect_of(settings), settings.tg_parser_sql_dir)


def dialect_of(settings: Settings) -> str:
    return "postgres" if settings.db_type == "postgres" else "sqlite"


def open_database(
    settings: Settings, *, check_migrations: bool = True, stores: Sequence[str] = STORES
) -> Database:
    """The configured database. With `check_migrations`, refuse to work on a schema that is behind.

    Opening never creates a store: a missing SQLite file is refused (StoreNotInitialised) before
    sqlite3 could create it; only migrations (`init`, `db upgrade`) create stores. `stores` narrows the
    SQLite files attached (`db status` reads the present ones); a PostgreSQL connection sees every schema.
    """
    catalog = load_catalog(settings)
    db: Database
    if settings.db_type == "postgres":
        from tg_parser.db.postgres import PostgresDatabase

        db = PostgresDatabase(
            pg_target(settings),
            catalog,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_pool_timeout,
            max_idle=settings.db_pool_max_idle,
            max_lifetime=settings.db_pool_max_lifetime,
            statement_timeout_ms=settings.db_statement_timeout,
            lock_timeout_ms=settings.db_lock_timeout,
            idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout,
            application_name=settings.db_application_name,
            prepare_threshold=None if settings.db_disable_prepared_statements else 5,
            connect_timeout=settings.db_connect_timeout,
            pool_mode=settings.db_pool_mode,
        )
    else:
        from tg_parser.db.sqlite import SqliteDatabase

        db = SqliteDatabase(settings.db_sqlite_dir, catalog, settings.db_sqlite_busy_timeout, stores=stores)
    if check_migrations:
        from tg_parser.db.migrations import require_current

        try:
            require_current(db)
        except BaseException:
            db.close()
            raise
    return db
