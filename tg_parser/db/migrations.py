"""Schema migrations per store and dialect, driven through yoyo's Python API.

`migrations/<dialect>/<store>/NNNN.name.sql` (+ `NNNN.name.rollback.sql`). On SQLite each store is its own
file and yoyo keeps its bookkeeping tables inside it; on PostgreSQL each store is a schema and yoyo's
tables live in that schema (`?schema=<store>`), which therefore must exist before yoyo connects —
otherwise yoyo fails with a misleading `"yoyo_lock" does not exist`.

Besides yoyo's own bookkeeping, each store keeps:

* `_yoyo_tg_compat`: the compatibility each applied migration declares in its file
  (`-- compatibility: additive|breaking`), written in the transaction where yoyo marks it applied, so a
  worker whose code predates a migration (and so lacks its file) can read whether it may keep running
  (rolling upgrades; see `require_current`).
* two more columns in yoyo's `yoyo_lock`: the host and (PostgreSQL) the backend pid of the migrating
  session, which also holds a session advisory lock for as long as it migrates, so staleness is decided
  by the database (is that lock still held?) and never by the local process table alone.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from yoyo import read_migrations
from yoyo.backends.base import DatabaseBackend
from yoyo.connections import DatabaseURI, get_backend_class
from yoyo.exceptions import LockTimeout

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.connect import dialect_of, migration_target
from tg_parser.db.locks import lock_key, pid_alive
from tg_parser.db.resources import STORES, migrations_dir
from tg_parser.db.sqlite import store_path
from tg_parser.errors import ConfigError, LockHeld, SchemaOutdated, StoreNotInitialised, TgParserError

COMPAT_TABLE = "_yoyo_tg_compat"
# Tables of migration bookkeeping (yoyo's and ours) inside every store: not part of the logical schema,
# never copied by the bulk migrator.
BOOKKEEPING_TABLES = frozenset({"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", COMPAT_TABLE})
COMPATIBILITIES = ("additive", "breaking")
# `-- compatibility: additive` or `-- compatibility: breaking`, optionally followed by a reason.
_COMPAT_LINE = re.compile(r"^\s*--\s*compatibility\s*:\s*([^\s(]*)", re.IGNORECASE)


@dataclass
class StoreStatus:
    store: str
    applied: list[str]
    pending: list[str]
    unknown: list[str] = field(default_factory=list)  # applied here, absent from the code (a newer tool ran)
    lock: dict[str, Any] | None = None
    # What the unknown migrations declared when they were applied: additive ones let this version run.
    unknown_compatibility: dict[str, str] = field(default_factory=dict)
    invalid_indexes: list[str] = field(default_factory=list)  # PostgreSQL: failed concurrent builds
    # False when the store has no file (SQLite) or no schema / migration bookkeeping (PostgreSQL) yet.
    created: bool = True

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


def expected_ids(dialect: str, store: str, root: Path | None = None) -> list[str]:
    """Migration ids in the code, in order (yoyo's id is the file name without `.sql`)."""
    if root is None:
        return list(_shipped_ids(dialect, store))  # long-running processes check before every poll
    return _list_ids(_folder(dialect, store, root))


@cache
def _shipped_ids(dialect: str, store: str) -> tuple[str, ...]:
    return tuple(_list_ids(migrations_dir(dialect, store)))


def _list_ids(folder: Path) -> list[str]:
    return sorted(p.name[:-4] for p in folder.glob("*.sql") if not p.name.endswith(".rollback.sql"))


def _folder(dialect: str, store: str, root: Path | None) -> Path:
    return migrations_dir(dialect, store) if root is None else root / dialect / store


def compatibility_of(path: Path) -> str:
    """The compatibility a migration file declares in its leading comments (`-- compatibility: additive`);
    `breaking` when it declares none, so a migration nobody thought about never lets old code run."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("--"):
            break
        match = _COMPAT_LINE.match(line)
        if match:
            value = match.group(1).lower()
            if value not in COMPATIBILITIES:
                raise ConfigError(
                    f"migration {path.name} declares 'compatibility: {match.group(1)}', which is not a known value",
                    "write '-- compatibility: additive' or '-- compatibility: breaking' at the top of the file",
                )
            return value
    return "breaking"


# --- yoyo plumbing ----------------------------------------------------------------------------------


def _ensure_pg_schemas(settings: Settings) -> None:
    """Create the store schemas that are missing (only those: a role without CREATE can still migrate
    an install whose schemas a DBA created)."""
    import psycopg
    from psycopg import sql

    from tg_parser.db.postgres import describe_connect_error

    target = migration_target(settings)
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


class _Bookkeeping:
    """Mixed in front of yoyo's backend class: a lock that records host and session, and the compatibility
    of each migration recorded in the same transaction as yoyo's mark."""

    tg_dialect = "sqlite"
    tg_store = ""
    _is_locked: bool

    def mark_one(self, migration: Any, log: bool = True) -> None:
        super().mark_one(migration, log)  # type: ignore[misc]
        self.execute(f"DELETE FROM {COMPAT_TABLE} WHERE migration_id = :id", {"id": migration.id})  # type: ignore[attr-defined]
        self.execute(  # type: ignore[attr-defined]
            f"INSERT INTO {COMPAT_TABLE} (migration_id, compatibility, recorded_at_utc) VALUES (:id, :c, :when)",
            {"id": migration.id, "c": compatibility_of(Path(migration.path)), "when": _utc_naive()},
        )

    def unmark_one(self, migration: Any, log: bool = True) -> None:
        super().unmark_one(migration, log)  # type: ignore[misc]
        self.execute(f"DELETE FROM {COMPAT_TABLE} WHERE migration_id = :id", {"id": migration.id})  # type: ignore[attr-defined]

    @contextmanager
    def lock(self, timeout: int = 10) -> Iterator[None]:
        """Take the store's migration lock at once or raise LockTimeout (the caller reports the holder)."""
        if self._is_locked:  # yoyo re-enters it while updating its own tables
            yield
            return
        self._take_lock()
        self._is_locked = True
        try:
            yield
        finally:
            self._is_locked = False
            self._release_lock()

    def _take_lock(self) -> None:
        backend: Any = self
        db_pid = None
        if self.tg_dialect == "postgres":
            # Held by this session until it ends: the database itself knows whether the migration lives.
            taken, db_pid = backend.execute(
                "SELECT pg_try_advisory_lock(:key), pg_backend_pid()", {"key": _advisory_key(self.tg_store)}
            ).fetchone()
            if not taken:
                raise LockTimeout(f"store {self.tg_store!r} is locked")
        try:
            with backend.transaction():
                backend.execute(
                    "INSERT INTO yoyo_lock (locked, ctime, pid, host, db_pid) VALUES (1, :when, :pid, :host, :db_pid)",
                    {
                        "when": _utc_naive(),
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "db_pid": db_pid,
                    },
                )
        except backend.DatabaseError as exc:
            self._unlock_advisory()
            if isinstance(exc, backend.driver.IntegrityError):  # the row is there: someone holds the lock
                raise LockTimeout(f"store {self.tg_store!r} is locked") from None
            raise

    def _release_lock(self) -> None:
        backend: Any = self
        try:
            with backend.transaction():
                backend.execute(
                    "DELETE FROM yoyo_lock WHERE pid = :pid AND host = :host",
                    {"pid": os.getpid(), "host": socket.gethostname()},
                )
        finally:
            self._unlock_advisory()

    def _unlock_advisory(self) -> None:
        if self.tg_dialect == "postgres":
            self.execute("SELECT pg_advisory_unlock(:key)", {"key": _advisory_key(self.tg_store)})  # type: ignore[attr-defined]


@cache
def _backend_class(scheme: str) -> type[DatabaseBackend]:
    base = get_backend_class(scheme)
    return type(f"TgParser{base.__name__}", (_Bookkeeping, base), {})


def _advisory_key(store: str) -> int:
    return lock_key(f"migrate:{store}")


def _utc_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # yoyo's own convention for its TIMESTAMP columns


@contextmanager
def _backend(settings: Settings, store: str) -> Iterator[DatabaseBackend]:
    dialect = dialect_of(settings)
    if dialect == "postgres":
        target = migration_target(settings)
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
        # yoyo opens `file:<database>?cache=shared` as an SQLite URI, where '?', '#' and '%' in the path
        # would end it or be decoded: the path goes in percent-encoded, which SQLite decodes back.
        uri = DatabaseURI("sqlite", None, None, None, None, quote(str(path), safe="/"), {})
    try:
        backend: Any = _backend_class(uri.scheme)(uri, "_yoyo_migration")
        backend.tg_dialect = dialect
        backend.tg_store = store
        backend.init_database()
    except Exception as exc:
        if dialect == "postgres":
            from tg_parser.db.postgres import describe_connect_error

            raise describe_connect_error(migration_target(settings), exc) from None
        raise
    try:
        if dialect == "postgres":
            _require_bookkeeping(backend, settings, store)
        yield backend
    except backend.DatabaseError as exc:
        if dialect == "postgres" and getattr(exc, "sqlstate", None) == "42501":  # insufficient_privilege
            raise _not_owner(settings, store, exc) from None
        raise
    finally:
        backend.connection.close()


def _not_owner(settings: Settings, store: str, exc: BaseException | None = None) -> ConfigError:
    target = migration_target(settings)
    reason = f" ({' '.join(str(exc).split())[:160]})" if exc is not None else ""
    return ConfigError(
        f"role {target.user!r} may not change the schema of store {store!r} in {target.describe()}{reason}",
        "migrate as the owner role: set DATABASE_MIGRATION_URL to it (docs/SQL.md, section Roles)",
    )


def _require_bookkeeping(backend: DatabaseBackend, settings: Settings, store: str) -> None:
    """yoyo swallows the failure to create its lock table; a role without CREATE then meets a confusing
    'relation "yoyo_lock" does not exist' later. Say what it is instead."""
    try:
        with backend.transaction():
            backend.execute("SELECT 1 FROM yoyo_lock WHERE 1 = 0")
    except backend.DatabaseError:
        raise _not_owner(settings, store) from None


def _columns(backend: DatabaseBackend, table: str) -> list[str]:
    cursor = backend.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [d[0] for d in cursor.description]


def _prepare_bookkeeping(backend: DatabaseBackend) -> None:
    """Our additions to yoyo's bookkeeping, created by the first upgrade or rollback of this version."""
    with backend.transaction():
        backend.execute(
            f"CREATE TABLE IF NOT EXISTS {COMPAT_TABLE} ("
            " migration_id VARCHAR(255) NOT NULL PRIMARY KEY,"
            " compatibility VARCHAR(16) NOT NULL,"
            " recorded_at_utc TIMESTAMP NOT NULL)"
        )
        have = _columns(backend, "yoyo_lock")
        for column, kind in (("host", "VARCHAR(255)"), ("db_pid", "INT")):
            if column not in have:
                guard = "IF NOT EXISTS " if getattr(backend, "tg_dialect", "") == "postgres" else ""
                backend.execute(f"ALTER TABLE yoyo_lock ADD COLUMN {guard}{column} {kind}")


def _record_compatibility(backend: DatabaseBackend, migrations: Any) -> None:
    """Record the compatibility of applied migrations that have none yet (applied by an older version)."""
    applied = set(backend.get_applied_migration_hashes())
    with backend.transaction():
        known = {row[0] for row in backend.execute(f"SELECT migration_id FROM {COMPAT_TABLE}").fetchall()}
        for migration in migrations:
            if migration.hash in applied and migration.id not in known:
                backend.execute(
                    f"INSERT INTO {COMPAT_TABLE} (migration_id, compatibility, recorded_at_utc) VALUES (:id, :c, :when)",
                    {"id": migration.id, "c": compatibility_of(Path(migration.path)), "when": _utc_naive()},
                )


# Who holds a store's migration advisory lock in this database (a bigint key shows as classid:objid, 1).
_PG_ADVISORY_HOLDER = """
SELECT l.pid FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = CAST(:classid AS oid) AND l.objid = CAST(:objid AS oid)
"""
# Sessions of an older tg-parser (or of yoyo) that may be migrating: they take no advisory lock.
_PG_OTHER_MIGRATORS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE :pattern
"""


def _lock_row(backend: DatabaseBackend, settings: Settings) -> dict[str, Any] | None:
    """The store's migration lock, and whether it is stale, decided without trusting the local process
    table for a lock taken elsewhere:

    * PostgreSQL, a lock taken by this version (it records the session's backend pid): stale exactly when
      no session holds the store's migration advisory lock, i.e. the migrating session is gone. Its host,
      its pid and how long it has been running (a long index build) do not matter.
    * PostgreSQL, a lock row without a session (yoyo's own, or an older tg-parser): stale when it is older
      than DB_MIGRATION_LOCK_STALE_AFTER and no other `*-migrate` session is connected to the database.
    * SQLite (files on one host): stale when it was taken on this host and its pid no longer runs. A lock
      recorded by another host is never called stale.
    """
    cursor = backend.execute("SELECT * FROM yoyo_lock")
    row = cursor.fetchone()
    if row is None:
        return None
    data = dict(zip([d[0] for d in cursor.description], row, strict=True))
    pid = int(data["pid"])
    host = data.get("host")
    ctime = data.get("ctime")
    if isinstance(ctime, str):
        ctime = datetime.fromisoformat(ctime)
    started = ctime.replace(tzinfo=UTC) if isinstance(ctime, datetime) and ctime.tzinfo is None else ctime
    age = datetime.now(UTC) - started if isinstance(started, datetime) else None
    stale_after = timedelta(seconds=settings.db_migration_lock_stale_after)
    if dialect_of(settings) == "postgres":
        store = getattr(backend, "tg_store", "")
        unsigned = _advisory_key(store) & 0xFFFF_FFFF_FFFF_FFFF
        holder = backend.execute(
            _PG_ADVISORY_HOLDER, {"classid": unsigned >> 32, "objid": unsigned & 0xFFFF_FFFF}
        ).fetchone()
        if data.get("db_pid") is not None:
            stale = holder is None
            reason = (
                "its database session is gone (nobody holds the migration's advisory lock)"
                if stale
                else f"database session {holder[0]} is migrating"
            )
        else:
            others = backend.execute(_PG_OTHER_MIGRATORS, {"pattern": "%-migrate"}).fetchone()[0]
            stale = holder is None and others == 0 and age is not None and age > stale_after
            reason = (
                f"no migrating session is connected and the lock is older than {stale_after}"
                if stale
                else "a lock row without a session, younger than "
                f"{stale_after} or with a migrating session connected"
            )
    else:
        local = host in (None, socket.gethostname())
        stale = local and not pid_alive(pid)
        reason = (
            "no such process on this host"
            if stale
            else ("the process runs on this host" if local else f"taken on another host ({host})")
        )
    return {
        "pid": pid,
        "host": host,
        "db_pid": data.get("db_pid"),
        "since": started.isoformat() if isinstance(started, datetime) else None,
        "stale": stale,
        "reason": reason,
    }


def _holder(lock: dict[str, Any]) -> str:
    return (
        f"pid {lock['pid']}" + (f" on {lock['host']}" if lock.get("host") else "") + f" since {lock['since']}"
    )


def _raise_if_locked(store: str, lock: dict[str, Any] | None) -> None:
    if lock is None:
        return
    if lock["stale"]:
        raise LockHeld(
            f"store {store!r} has a stale migration lock ({_holder(lock)}: {lock['reason']})",
            f"if no other host is migrating, run 'tg-parser db unlock --store {store}'",
        )
    raise LockHeld(
        f"store {store!r} is being migrated by another process ({_holder(lock)})",
        "wait for it to finish, then run the command again",
    )


def _yoyo_migrations(dialect: str, store: str, root: Path | None = None) -> Any:
    migrations = read_migrations(str(_folder(dialect, store, root)))
    for migration in migrations:
        compatibility_of(Path(migration.path))  # a bad marker stops the command before anything runs
    return migrations


# Indexes a failed `CREATE INDEX CONCURRENTLY` left behind: invalid and not being built right now.
_PG_INVALID_INDEXES = """
SELECT n.nspname || '.' || c.relname FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND n.nspname = :schema
  AND i.indexrelid NOT IN (SELECT index_relid FROM pg_stat_progress_create_index)
ORDER BY 1
"""


def _invalid_indexes(backend: DatabaseBackend, settings: Settings, store: str) -> list[str]:
    if dialect_of(settings) != "postgres":
        return []
    return [row[0] for row in backend.execute(_PG_INVALID_INDEXES, {"schema": store}).fetchall()]


class SchemaIncompatible(ConfigError):
    """The database has a migration this code does not know and that is not additive: stop, do not retry."""


class InvalidIndex(TgParserError):
    """A `CREATE INDEX CONCURRENTLY` failed and left an INVALID index: it costs writes and serves nothing."""


def _invalid_index_error(store: str, names: list[str], cause: str | None = None) -> InvalidIndex:
    drops = "; ".join(f"DROP INDEX CONCURRENTLY {name}" for name in names)
    what = f"store {store!r} has {len(names)} invalid index(es) left by a failed CREATE INDEX CONCURRENTLY: {', '.join(names)}"
    if cause:
        what = f"{cause}; {what}"
    return InvalidIndex(
        what, f"fix the cause (e.g. duplicate rows), run '{drops}' in psql, then 'tg-parser db upgrade'"
    )


# --- public operations ------------------------------------------------------------------------------


def status(settings: Settings, stores: tuple[str, ...] = STORES) -> list[StoreStatus]:
    """Applied and pending migrations per store. Reads only: a store that was never created (no SQLite
    file; no schema or bookkeeping on PostgreSQL) is reported as not created, and is not created here."""
    from tg_parser.db.connect import open_database

    dialect = dialect_of(settings)
    present = stores
    if dialect == "sqlite":
        present = tuple(s for s in stores if store_path(settings.db_sqlite_dir, s).exists())
    result = []
    with open_database(settings, check_migrations=False, stores=present) as db:
        for store in stores:
            expected = expected_ids(dialect, store)
            have = db.applied_migrations(store)
            if have is None:
                result.append(StoreStatus(store=store, applied=[], pending=expected, created=False))
                continue
            with _backend(settings, store) as backend:  # the bookkeeping exists: yoyo creates nothing
                lock = _lock_row(backend, settings)
                invalid = _invalid_indexes(backend, settings, store)
            unknown = [m for m in have if m not in expected]
            compat = db.migration_compatibility(store) if unknown else {}
            result.append(
                StoreStatus(
                    store=store,
                    applied=[m for m in expected if m in have],
                    pending=[m for m in expected if m not in have],
                    unknown=unknown,
                    lock=lock,
                    unknown_compatibility={m: compat.get(m, "unrecorded") for m in unknown},
                    invalid_indexes=invalid,
                )
            )
    return result


def _require_created(settings: Settings, store: str) -> None:
    """Refuse a store that was never created, before yoyo's connection would create its file (SQLite) or
    its bookkeeping tables: rolling back or unlocking it has nothing to act on."""
    from tg_parser.db.connect import open_database

    with open_database(settings, check_migrations=False, stores=(store,)) as db:
        if db.applied_migrations(store) is None:
            raise _not_initialised(db, store)


def _not_initialised(db: Database, store: str) -> StoreNotInitialised:
    return StoreNotInitialised(
        f"store {store!r} in {db.describe()} is not initialised (no schema yet)",
        "run 'tg-parser init' (or 'tg-parser db upgrade')",
    )


def upgrade(
    settings: Settings, stores: tuple[str, ...] = STORES, *, root: Path | None = None
) -> dict[str, list[str]]:
    """Apply pending migrations; returns the ids applied per store. `root` replaces the shipped
    `migrations/` folder (same layout: <dialect>/<store>/)."""
    dialect = dialect_of(settings)
    if dialect == "postgres":
        _ensure_pg_schemas(settings)
    applied: dict[str, list[str]] = {}
    for store in stores:
        migrations = _yoyo_migrations(dialect, store, root)
        with _backend(settings, store) as backend:
            _raise_if_locked(store, _lock_row(backend, settings))
            _prepare_bookkeeping(backend)
            try:
                with backend.lock():
                    _record_compatibility(backend, migrations)
                    todo = backend.to_apply(migrations)
                    if todo and (invalid := _invalid_indexes(backend, settings, store)):
                        raise _invalid_index_error(store, invalid)
                    try:
                        backend.apply_migrations(todo)
                    except backend.DatabaseError as exc:
                        invalid = _invalid_indexes(backend, settings, store)
                        if invalid:
                            first = " ".join(str(exc).split())[:200]
                            raise _invalid_index_error(
                                store, invalid, f"a migration failed ({first})"
                            ) from None
                        raise
            except LockTimeout:
                _raise_if_locked(store, _lock_row(backend, settings) or _unknown_holder())
                raise
            applied[store] = [m.id for m in todo]
    return applied


def _unknown_holder() -> dict[str, Any]:
    return {"pid": "?", "host": None, "since": "?", "stale": False, "reason": ""}


def rollback_plan(settings: Settings, store: str, steps: int = 1, *, root: Path | None = None) -> list[str]:
    """The ids `rollback` would roll back now, latest first (fewer than `steps` when fewer are applied):
    for the confirmation prompt. Touches the store no more than `rollback` does."""
    dialect = dialect_of(settings)
    _require_created(settings, store)
    migrations = _yoyo_migrations(dialect, store, root)
    with _backend(settings, store) as backend:
        _raise_if_locked(store, _lock_row(backend, settings))  # refused before the prompt, as it will be
        _prepare_bookkeeping(backend)
        return [m.id for m in list(backend.to_rollback(migrations))[:steps]]


def rollback(settings: Settings, store: str, steps: int = 1, *, root: Path | None = None) -> list[str]:
    """Roll back the last `steps` migrations of one store; returns the ids rolled back."""
    dialect = dialect_of(settings)
    _require_created(settings, store)
    migrations = _yoyo_migrations(dialect, store, root)
    with _backend(settings, store) as backend:
        _raise_if_locked(store, _lock_row(backend, settings))
        _prepare_bookkeeping(backend)
        try:
            with backend.lock():
                todo = backend.to_rollback(migrations)
                todo = todo.__class__(list(todo)[:steps], todo.post_apply)
                backend.rollback_migrations(todo)
        except LockTimeout:
            _raise_if_locked(store, _lock_row(backend, settings) or _unknown_holder())
            raise
    return [m.id for m in todo]


def unlock(settings: Settings, store: str, *, force: bool = False) -> dict[str, Any] | None:
    """Remove a stale migration lock; returns what it was. A lock that is not stale (its migration may be
    running, here or on another host) is only removed with `force`."""
    _require_created(settings, store)
    with _backend(settings, store) as backend:
        lock = _lock_row(backend, settings)
        if lock is not None and not lock["stale"] and not force:
            raise LockHeld(
                f"store {store!r} is locked by a migration that may still be running ({_holder(lock)}: {lock['reason']})",
                "wait for it to finish; only if you know that process is gone, "
                f"run 'tg-parser db unlock --store {store} --force'",
            )
        backend.break_lock()
    return lock


def require_current(db: Database) -> None:
    """Refuse to run on a schema whose migrations are behind this version of the tool, or ahead of it by a
    migration not marked additive. Migrations that are applied, unknown to this code and recorded as
    `additive` are accepted: that is a rolling upgrade, the database already migrated by a newer version
    while this process (on another host, say) still runs the older code."""
    for store in STORES:
        have = db.applied_migrations(store)
        want = expected_ids(db.dialect, store)
        if have is None:  # never created: the fix is init, not an upgrade of a schema that is not there
            raise _not_initialised(db, store)
        missing = [m for m in want if m not in have]
        if missing:
            raise SchemaOutdated(
                f"store {store!r} in {db.describe()} is behind: {len(missing)} migration(s) not applied ({missing[0]} …)",
                "run 'tg-parser db upgrade'",
            )
        extra = [m for m in have if m not in want]
        if not extra:
            continue
        compat = db.migration_compatibility(store)
        refused = [m for m in extra if compat.get(m) != "additive"]
        if refused:
            first = refused[0]
            why = (
                "is recorded as breaking (its file says so, or declares nothing)"
                if compat.get(first) == "breaking"
                else "has no compatibility record"
            )
            raise SchemaIncompatible(
                f"store {store!r} in {db.describe()} has migration {first} applied, which this tool does not know"
                f" and which {why}: this version cannot run against it",
                "stop this process and upgrade tg-parser to the version that wrote it (older versions keep "
                "running only across migrations marked '-- compatibility: additive')",
            )
