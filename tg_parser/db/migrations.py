"""Schema migrations per store and dialect, driven through yoyo's Python API.

`migrations/<dialect>/<store>/NNNN.name.sql` (+ `NNNN.name.rollback.sql`). On SQLite each store is its own
file and yoyo keeps its bookkeeping tables inside it; on PostgreSQL each store is a schema and yoyo's
tables live in that schema (`?schema=<store>`), which therefore must exist before yoyo connects —
otherwise yoyo fails with a misleading `"yoyo_lock" does not exist`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from yoyo import read_migrations
from yoyo.backends.base import DatabaseBackend
from yoyo.connections import DatabaseURI, get_backend_class
from yoyo.exceptions import LockTimeout

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.connect import dialect_of, pg_target
from tg_parser.db.resources import STORES, migrations_dir
from tg_parser.db.sqlite import STORE_FILES, store_path
from tg_parser.errors import ConfigError, LockHeld, SchemaOutdated

STALE_LOCK_AGE = timedelta(minutes=30)


@dataclass
class StoreStatus:
    store: str
    applied: list[str]
    pending: list[str]
    unknown: list[str] = field(default_factory=list)  # applied here, absent from the code (a newer tool ran)
    lock: dict[str, Any] | None = None

    @property
    def current(self) -> str | None:
        return self.applied[-1] if self.applied else None

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["current"] = self.current
        data["up_to_date"] = self.up_to_date
        return data


def expected_ids(dialect: str, store: str) -> list[str]:
    """Migration ids in the code, in order (yoyo's id is the file name without `.sql`)."""
    folder = migrations_dir(dialect, store)
    return sorted(p.name[:-4] for p in folder.glob("*.sql") if not p.name.endswith(".rollback.sql"))


# --- yoyo plumbing ----------------------------------------------------------------------------------


def _ensure_pg_schemas(settings: Settings) -> None:
    """Create the store schemas that are missing (only those: a role without CREATE can still migrate
    an install whose schemas a DBA created)."""
    import psycopg
    from psycopg import sql

    from tg_parser.db.postgres import describe_connect_error

    target = pg_target(settings)
    try:
        # DATABASE_URL's own ?connect_timeout= wins over DB_CONNECT_TIMEOUT (as in the pool).
        kwargs = {"connect_timeout": settings.db_connect_timeout, **target.connect_kwargs()}
        conn = psycopg.connect(**kwargs, autocommit=True)
    except psycopg.Error as exc:
        raise describe_connect_error(target, exc) from None
    with conn:
        present = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        for store in STORES:
            if store in present:
                continue
            try:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(store)))
            except psycopg.errors.InsufficientPrivilege:
                raise ConfigError(
                    f"cannot create schema {store!r} in {target.describe()}: permission denied",
                    f"grant CREATE on the database to {target.user}, or have a DBA run 'CREATE SCHEMA {store}'",
                ) from None


@contextmanager
def _backend(settings: Settings, store: str) -> Iterator[DatabaseBackend]:
    if dialect_of(settings) == "postgres":
        target = pg_target(settings)
        name = target.options.get("application_name", settings.db_application_name)
        args = {
            "connect_timeout": str(settings.db_connect_timeout),
            **target.options,
            "schema": store,
            "application_name": name + "-migrate",
        }
        if settings.db_pool_mode == "session":
            # A migration (an index build, a backfill) legitimately runs long: no statement timeout for
            # this session, whatever DB_STATEMENT_TIMEOUT or the role's default says.
            args["options"] = (args.get("options", "") + " -c statement_timeout=0").strip()
        uri = DatabaseURI(
            "postgresql+psycopg", target.user, target.password, target.host, target.port, target.dbname, args
        )
    else:
        settings.db_sqlite_dir.mkdir(parents=True, exist_ok=True)
        path = store_path(settings.db_sqlite_dir, store).resolve()
        uri = DatabaseURI("sqlite", None, None, None, None, str(path), {})
    try:
        backend = get_backend_class(uri.scheme)(uri, "_yoyo_migration")
        backend.init_database()
    except Exception as exc:
        if dialect_of(settings) == "postgres":
            from tg_parser.db.postgres import describe_connect_error

            raise describe_connect_error(pg_target(settings), exc) from None
        raise
    try:
        yield backend
    finally:
        backend.connection.close()


def _lock_row(backend: DatabaseBackend) -> dict[str, Any] | None:
    row = backend.execute("SELECT pid, ctime FROM yoyo_lock").fetchone()
    if row is None:
        return None
    pid, ctime = row
    if isinstance(ctime, str):
        ctime = datetime.fromisoformat(ctime)
    started = ctime.replace(tzinfo=UTC) if isinstance(ctime, datetime) and ctime.tzinfo is None else ctime
    alive = _pid_alive(int(pid))
    stale = not alive or (isinstance(started, datetime) and datetime.now(UTC) - started > STALE_LOCK_AGE)
    return {
        "pid": int(pid),
        "since": started.isoformat() if isinstance(started, datetime) else None,
        "stale": stale,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _raise_if_locked(store: str, lock: dict[str, Any] | None) -> None:
    if lock is None:
        return
    if lock["stale"]:
        raise LockHeld(
            f"store {store!r} has a stale migration lock (pid {lock['pid']} since {lock['since']}, no such process here)",
            f"if no other host is migrating, run 'tg-parser db unlock --store {store}'",
        )
    raise LockHeld(
        f"store {store!r} is being migrated by another process (pid {lock['pid']} since {lock['since']})",
        "wait for it to finish, then run the command again",
    )


def _yoyo_migrations(dialect: str, store: str) -> Any:
    return read_migrations(str(migrations_dir(dialect, store)))


# --- public operations ------------------------------------------------------------------------------


def status(settings: Settings, stores: tuple[str, ...] = STORES) -> list[StoreStatus]:
    from tg_parser.db.connect import open_database

    dialect = dialect_of(settings)
    if dialect == "postgres":
        _ensure_pg_schemas(settings)
    result = []
    with open_database(settings, check_migrations=False) as db:
        for store in stores:
            with _backend(settings, store) as backend:  # creates yoyo's tables if missing; reads its lock
                lock = _lock_row(backend)
            have = db.applied_migrations(store) or []
            expected = expected_ids(dialect, store)
            result.append(
                StoreStatus(
                    store=store,
                    applied=[m for m in expected if m in have],
                    pending=[m for m in expected if m not in have],
                    unknown=[m for m in have if m not in expected],
                    lock=lock,
                )
            )
    return result


def upgrade(settings: Settings, stores: tuple[str, ...] = STORES) -> dict[str, list[str]]:
    """Apply pending migrations; returns the ids applied per store."""
    dialect = dialect_of(settings)
    if dialect == "postgres":
        _ensure_pg_schemas(settings)
    applied: dict[str, list[str]] = {}
    for store in stores:
        with _backend(settings, store) as backend:
            _raise_if_locked(store, _lock_row(backend))
            migrations = _yoyo_migrations(dialect, store)
            try:
                with backend.lock(timeout=10):
                    todo = backend.to_apply(migrations)
                    backend.apply_migrations(todo)
            except LockTimeout:
                _raise_if_locked(store, _lock_row(backend) or {"pid": "?", "since": "?", "stale": False})
                raise
            applied[store] = [m.id for m in todo]
    return applied


def rollback(settings: Settings, store: str, steps: int = 1) -> list[str]:
    """Roll back the last `steps` migrations of one store; returns the ids rolled back."""
    dialect = dialect_of(settings)
    if dialect == "postgres":
        _ensure_pg_schemas(settings)
    with _backend(settings, store) as backend:
        _raise_if_locked(store, _lock_row(backend))
        migrations = _yoyo_migrations(dialect, store)
        with backend.lock(timeout=10):
            todo = backend.to_rollback(migrations)
            todo = todo.__class__(list(todo)[:steps], todo.post_apply)
            backend.rollback_migrations(todo)
    return [m.id for m in todo]


def unlock(settings: Settings, store: str) -> dict[str, Any] | None:
    """Remove a (stale) yoyo lock row; returns what it was."""
    with _backend(settings, store) as backend:
        lock = _lock_row(backend)
        backend.break_lock()
    return lock


def require_sqlite_files(directory: Path) -> None:
    missing = [name for name in STORE_FILES.values() if not (directory / name).exists()]
    if missing:
        raise SchemaOutdated(
            f"the SQLite stores in {directory} are not initialised (missing {', '.join(missing)})",
            "run 'tg-parser init'",
        )


def require_current(db: Database) -> None:
    """Refuse to run on a schema whose migrations are behind (or unknown to) this version of the tool."""
    for store in STORES:
        have = db.applied_migrations(store)
        want = expected_ids(db.dialect, store)
        if have is None:
            raise SchemaOutdated(
                f"store {store!r} in {db.describe()} has no schema yet",
                "run 'tg-parser init' (or 'tg-parser db upgrade')",
            )
        missing = [m for m in want if m not in have]
        if missing:
            raise SchemaOutdated(
                f"store {store!r} in {db.describe()} is behind: {len(missing)} migration(s) not applied ({missing[0]} …)",
                "run 'tg-parser db upgrade'",
            )
        extra = [m for m in have if m not in want]
        if extra:
            raise ConfigError(
                f"store {store!r} in {db.describe()} has migrations this tool does not know ({extra[0]} …)",
                "upgrade tg-parser to the version that wrote them",
            )
