"""One PostgreSQL database per test process, cloned from the migrated template once and reset between tests.

Cloning the template for every test (CREATE DATABASE ... TEMPLATE, then DROP DATABASE) costs the server
0.3-0.5 s of file copies and fsyncs per test, several times that on a busy machine. Instead a test process
clones the template once and, after each test, puts that database back into the state of a fresh clone:

1. it ends the sessions the test left behind (their locks, advisory locks and transactions go with them);
2. it compares everything but table rows and sequence positions (schemas, tables, columns, indexes,
   constraints, functions, grants, database settings, ...) and the rows the migrations wrote (yoyo's
   bookkeeping) with the fresh clone's. Tables the test created are dropped; any other difference (DDL,
   a migration rollback, a GRANT) and the database itself is dropped, so the next test gets a new clone;
3. otherwise it truncates the tables the test wrote to (any table with pages: a rolled-back insert
   leaves some) and rewinds the sequences it moved.

Each test therefore starts from an empty migrated schema, as with a clone per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from pytest_postgresql.janitor import DatabaseJanitor

_USER_SCHEMAS = """
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
      AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'
"""

# Everything a test could change besides table rows and sequence positions, as comparable text rows.
# Objects are named, never identified by OID, so an equal schema compares equal.
_SCHEMA_STATE = f"""
WITH ns AS ({_USER_SCHEMAS}),
rel AS (
    SELECT c.*, ns.nspname FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
)
SELECT 'schema ' || n.nspname || ' ' || pg_get_userbyid(n.nspowner) || ' ' || coalesce(n.nspacl::text, '')
FROM pg_namespace n JOIN ns ON ns.oid = n.oid
UNION ALL
SELECT 'relation ' || r.nspname || '.' || r.relname || ' ' || r.relkind::text || r.relpersistence::text
    || ' ' || pg_get_userbyid(r.relowner) || ' ' || coalesce(r.relacl::text, '')
    || ' ' || coalesce(r.reloptions::text, '') || ' ' || r.relrowsecurity || r.relforcerowsecurity
    || r.relreplident::text || r.relispartition || ' ' || coalesce(pg_get_expr(r.relpartbound, r.oid), '')
    || CASE WHEN r.relkind = 'i' THEN ' ' || pg_get_indexdef(r.oid)
            WHEN r.relkind IN ('v', 'm') THEN ' ' || pg_get_viewdef(r.oid) ELSE '' END
FROM rel r
UNION ALL
SELECT 'column ' || r.nspname || '.' || r.relname || '.' || a.attname || ' ' || a.attnum
    || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || a.attisdropped
    || a.attidentity::text || a.attgenerated::text || ' ' || a.attcollation || ' ' || coalesce(a.attacl::text, '')
    || ' ' || coalesce(a.attoptions::text, '') || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a JOIN rel r ON r.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0
UNION ALL
SELECT 'constraint ' || ns.nspname || '.' || con.conname || ' ' || coalesce(r.relname, '')
    || ' ' || coalesce(con.contypid::regtype::text, '') || ' ' || pg_get_constraintdef(con.oid)
    || ' ' || con.condeferrable || con.condeferred || con.convalidated
FROM pg_constraint con JOIN ns ON ns.oid = con.connamespace LEFT JOIN pg_class r ON r.oid = con.conrelid
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'function ' || ns.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
    || ') ' || p.prokind::text || ' ' || pg_get_userbyid(p.proowner) || ' ' || md5(coalesce(p.prosrc, ''))
    || ' ' || coalesce(p.proacl::text, '') || ' ' || coalesce(p.proconfig::text, '')
FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
UNION ALL
SELECT 'type ' || ns.nspname || '.' || t.typname || ' ' || t.typtype::text || ' ' || coalesce(t.typacl::text, '')
    || ' ' || coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                        FROM pg_enum e WHERE e.enumtypid = t.oid), '')
FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
UNION ALL
SELECT 'sequence ' || r.nspname || '.' || r.relname || ' ' || s.seqtypid::regtype::text || ' '
    || s.seqstart || ' ' || s.seqincrement || ' ' || s.seqmax || ' ' || s.seqmin || ' ' || s.seqcache
    || ' ' || s.seqcycle
FROM pg_sequence s JOIN rel r ON r.oid = s.seqrelid
UNION ALL
SELECT 'policy ' || r.nspname || '.' || r.relname || ' ' || p.polname || ' ' || p.polcmd::text || p.polpermissive
    || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ' '
    || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
UNION ALL
SELECT 'rule ' || schemaname || '.' || tablename || ' ' || definition
FROM pg_rules WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'extension ' || e.extname || ' ' || e.extversion || ' ' || e.extnamespace::regnamespace::text
FROM pg_extension e
UNION ALL
SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtenabled::text FROM pg_event_trigger
UNION ALL
SELECT 'default acl ' || pg_get_userbyid(defaclrole) || ' ' || defaclnamespace::regnamespace::text
    || ' ' || defaclobjtype::text || ' ' || defaclacl::text
FROM pg_default_acl
UNION ALL
SELECT 'comment ' || pg_describe_object(classoid, objoid, objsubid) || ' ' || md5(description)
FROM pg_description WHERE objoid >= 16384
UNION ALL
SELECT 'object ' || pg_describe_object(o.classid, o.objid, 0) FROM (
    SELECT 'pg_cast'::regclass AS classid, oid AS objid FROM pg_cast
    UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator
    UNION ALL SELECT 'pg_opclass'::regclass, oid FROM pg_opclass
    UNION ALL SELECT 'pg_opfamily'::regclass, oid FROM pg_opfamily
    UNION ALL SELECT 'pg_collation'::regclass, oid FROM pg_collation
    UNION ALL SELECT 'pg_conversion'::regclass, oid FROM pg_conversion
    UNION ALL SELECT 'pg_language'::regclass, oid FROM pg_language
    UNION ALL SELECT 'pg_am'::regclass, oid FROM pg_am
    UNION ALL SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config
    UNION ALL SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict
    UNION ALL SELECT 'pg_foreign_data_wrapper'::regclass, oid FROM pg_foreign_data_wrapper
    UNION ALL SELECT 'pg_foreign_server'::regclass, oid FROM pg_foreign_server
    UNION ALL SELECT 'pg_user_mapping'::regclass, oid FROM pg_user_mapping
    UNION ALL SELECT 'pg_statistic_ext'::regclass, oid FROM pg_statistic_ext
    UNION ALL SELECT 'pg_publication'::regclass, oid FROM pg_publication
    UNION ALL SELECT 'pg_transform'::regclass, oid FROM pg_transform
) AS o WHERE o.objid >= 16384
UNION ALL
SELECT 'large objects ' || count(*) FROM pg_largeobject_metadata
UNION ALL
SELECT 'database ' || coalesce(datacl::text, '') || ' ' || datconnlimit || ' ' || datallowconn
    || ' ' || pg_get_userbyid(datdba)
FROM pg_database WHERE datname = current_database()
UNION ALL
SELECT 'setting ' || setrole || ' ' || setconfig::text
FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
UNION ALL
SELECT 'prepared transaction ' || gid FROM pg_prepared_xacts WHERE database = current_database()
"""


# The ordinary tables of the user schemas, and whether each has pages (rows, or dead ones).
_TABLES = f"""
WITH ns AS ({_USER_SCHEMAS})
SELECT c.oid::int AS oid, format('%I.%I', ns.nspname, c.relname) AS name, pg_relation_size(c.oid) > 0
FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
ORDER BY 2
"""

# Where the sequences stand: NULL until the first nextval().
_SEQUENCES = f"""
WITH ns AS ({_USER_SCHEMAS})
SELECT format('%I.%I', ns.nspname, c.relname), pg_sequence_last_value(c.oid)
FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
WHERE c.relkind = 'S'
ORDER BY 1
"""

# Foreign keys between tables: TRUNCATE ... CASCADE empties the referencing tables too.
_FOREIGN_KEYS = "SELECT confrelid::int, conrelid::int FROM pg_constraint WHERE contype = 'f'"


@dataclass
class _Pristine:
    """What a fresh clone looks like."""

    schema: list[str]
    tables: set[str]
    seeded: dict[str, str]  # table -> digest of its rows, for the tables the migrations wrote rows into
    sequences: dict[str, int | None]
    referenced_by: dict[int, set[int]] = field(default_factory=dict)
    seeded_oids: set[int] = field(default_factory=set)


class ReusedDatabase:
    def __init__(
        self, *, host: str, port: int, user: str, password: str | None, dbname: str, template: str
    ) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.dbname = dbname
        self.template = template
        self._exists = False
        self._pristine: _Pristine | None = None

    def _janitor(self) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            dbname=self.dbname,
            template_dbname=self.template,
        )

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            autocommit=True,
            connect_timeout=10,
            # The resets need no durability: not waiting for the WAL flush saves a disk sync per test.
            options="-c synchronous_commit=off",
        ) as conn:
            yield conn

    def checkout(self) -> str:
        """The database's name, cloned from the template if the last test did not leave it reusable."""
        if not self._exists:
            self._janitor().init()
            self._exists = True
            with self._connect() as conn:
                self._pristine = self._read_pristine(conn)
        return self.dbname

    def checkin(self, *, reuse: bool = True) -> None:
        """After a test: reset the database for the next one, or drop it when it cannot be reset."""
        if not self._exists:
            return
        try:
            reset = reuse and self._reset()
        except psycopg.Error:
            reset = False
        if not reset:
            self.drop()

    def drop(self) -> None:
        self._exists = False
        self._pristine = None
        self._janitor().drop()

    # --- the state of a fresh clone -----------------------------------------------------------------

    def _read_pristine(self, conn: psycopg.Connection) -> _Pristine:
        tables = conn.execute(_TABLES).fetchall()
        seeded = {name for _, name, has_pages in tables if has_pages and self._has_rows(conn, name)}
        # Tables that are empty but have pages (the migrations' lock table): emptied now, so any table with
        # pages after a test is one the test wrote to.
        self._truncate(conn, [name for _, name, has_pages in tables if has_pages and name not in seeded])
        referenced_by: dict[int, set[int]] = {}
        for referenced, referencing in conn.execute(_FOREIGN_KEYS).fetchall():
            referenced_by.setdefault(referenced, set()).add(referencing)
        return _Pristine(
            schema=self._schema(conn),
            tables={name for _, name, _ in tables},
            seeded=self._digests(conn, sorted(seeded)),
            sequences=dict(conn.execute(_SEQUENCES).fetchall()),
            referenced_by=referenced_by,
            seeded_oids={oid for oid, name, _ in tables if name in seeded},
        )

    @staticmethod
    def _schema(conn: psycopg.Connection) -> list[str]:
        return sorted(row[0] for row in conn.execute(_SCHEMA_STATE).fetchall())

    @staticmethod
    def _has_rows(conn: psycopg.Connection, table: str) -> bool:
        return conn.execute(f"SELECT EXISTS (SELECT FROM {table})").fetchone()[0]  # type: ignore[index]

    @staticmethod
    def _digests(conn: psycopg.Connection, tables: list[str]) -> dict[str, str]:
        if not tables:
            return {}
        query = " UNION ALL ".join(
            f"SELECT {sql.quote(name)}, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
            f"FROM {name} AS t"
            for name in tables
        )
        return dict(conn.execute(query).fetchall())

    @staticmethod
    def _truncate(conn: psycopg.Connection, tables: list[str]) -> None:
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")

    # --- back to it after a test --------------------------------------------------------------------

    def _reset(self) -> bool:
        pristine = self._pristine
        assert pristine is not None
        with self._connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if self._schema(conn) != pristine.schema:
                # Tables the test created (the executor tests' probe table) can go; anything else cannot.
                tables = [name for _, name, _ in conn.execute(_TABLES).fetchall()]
                extra = [name for name in tables if name not in pristine.tables]
                if not extra:
                    return False
                conn.execute(f"DROP TABLE {', '.join(extra)} CASCADE")
                if self._schema(conn) != pristine.schema:
                    return False
            if self._digests(conn, list(pristine.seeded)) != pristine.seeded:
                return False
            written = [(oid, name) for oid, name, has_pages in conn.execute(_TABLES).fetchall() if has_pages]
            written = [(oid, name) for oid, name in written if name not in pristine.seeded]
            # TRUNCATE ... CASCADE empties every table referencing these: none may hold the migrations' rows.
            reached, todo = set(), [oid for oid, _ in written]
            while todo:
                oid = todo.pop()
                if oid not in reached:
                    reached.add(oid)
                    todo.extend(pristine.referenced_by.get(oid, ()))
            if reached & pristine.seeded_oids:
                return False
            self._truncate(conn, [name for _, name in written])
            for name, last_value in conn.execute(_SEQUENCES).fetchall():
                wanted = pristine.sequences.get(name, last_value)
                if last_value == wanted:
                    continue
                if wanted is None:
                    conn.execute(f"ALTER SEQUENCE {name} RESTART")
                else:
                    conn.execute("SELECT setval(%s::regclass, %s, true)", (name, wanted))
            return True
