"""Every SQL text the migrator runs, in one module (DESIGN.md §4.1 allows the migrator's catalog queries).

The application's own queries are named SQL files; the migrator instead works on *whatever tables the
migrations created*, so its statements are built here from catalog facts: table and column names come
from `sqlite_master`/`PRAGMA table_info` and `information_schema`/`pg_catalog`, are quoted as
identifiers, and every value is a bound parameter. Nothing else in `tg_parser.transfer` holds SQL, and
nothing here touches a driver: the statements are plain strings, run by `tg_parser.db.bulk_sqlite` and
`tg_parser.db.bulk_postgres`.

SQLite does the cheap per-value work in SQL: a problem bit per column (storage class against the target
column, integer ranges, 0/1 booleans, the fixed timestamp format), and for binary COPY a timestamp's
microseconds. Python renders the canonical fields from the raw values (see `rowcode.py`; Python's
bytes.replace is several times faster than SQLite's replace()). PostgreSQL renders the same fields from
the stored values, hashes them with `md5()` and sums them in SQL, so the target's checksum is read back
from the target without shipping its rows to the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tg_parser.transfer.schema import BOOL, INT, JSON, REAL, TEXT, TS, Column, Table

# Migration bookkeeping (yoyo's and tg-parser's compatibility records): each side records its own.
YOYO_TABLES = frozenset({"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", "_yoyo_tg_compat"})

# SQLite GLOB for the fixed-width UTC timestamp text the stores write.
TS_GLOB = "[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z"
# PostgreSQL rendering of a timestamptz in the same text.
PG_TS_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
# Seconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for binary timestamps.
PG_EPOCH_UNIX = 946_684_800


@dataclass(frozen=True)
class KeyRange:
    """Primary-key range `lo <= key < hi`; None is open."""

    lo: tuple[Any, ...] | None = None
    hi: tuple[Any, ...] | None = None


def q(name: str) -> str:
    """An identifier, for either dialect (both quote with double quotes, doubling inner ones)."""
    return '"' + name.replace('"', '""') + '"'


# --- SQLite ------------------------------------------------------------------------------------------


def sqlite_table(table: Table) -> str:
    return f"{q(table.store)}.{q(table.name)}"


def sqlite_tables_sql(store: str) -> str:
    return (
        f"SELECT name FROM {q(store)}.sqlite_master WHERE type = 'table'"
        " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )


def sqlite_columns_sql(store: str, table: str) -> str:
    return f"PRAGMA {q(store)}.table_info({q(table)})"


def sqlite_parents_sql(store: str, table: str) -> str:
    return f"PRAGMA {q(store)}.foreign_key_list({q(table)})"


def sqlite_foreign_key_check_sql(store: str) -> str:
    return f"PRAGMA {q(store)}.foreign_key_check"


def sqlite_migration_ids_sql(store: str) -> str:
    return f"SELECT migration_id FROM {q(store)}._yoyo_migration ORDER BY applied_at_utc, migration_id"


def _sqlite_problem(column: Column) -> str:
    """1 when the value cannot go into the PostgreSQL column as it is, else 0 (evaluated in SQLite)."""
    c = q(column.name)
    if column.kind == INT:
        low, high = column.int_range or (-(2**63), 2**63 - 1)
        in_range = "" if column.pg_type == "bigint" else f" OR {c} NOT BETWEEN {low} AND {high}"
        return f"(CASE typeof({c}) WHEN 'null' THEN 0 WHEN 'integer' THEN (0{in_range}) ELSE 1 END)"
    if column.kind == BOOL:
        return f"(CASE typeof({c}) WHEN 'null' THEN 0 WHEN 'integer' THEN {c} NOT IN (0, 1) ELSE 1 END)"
    if column.kind in (TEXT, JSON):
        # NUL characters, invalid UTF-8 and JSON are checked in Python, on the bytes it renders anyway
        # (a memchr and a decode there are cheaper than instr() here; the canonicaliser that renders
        # JSON for the checksum is stricter than json_valid(): \u0000, surrogates, NaN).
        return f"(typeof({c}) NOT IN ('null', 'text'))"
    if column.kind == TS:
        # A real calendar date, by string comparisons (twice as fast as a round trip through date()).
        year = f"CAST(substr({c}, 1, 4) AS INTEGER)"
        leap = f"({year} % 4 = 0 AND ({year} % 100 <> 0 OR {year} % 400 = 0))"
        last_day = (
            f"(CASE substr({c}, 6, 2) WHEN '02' THEN (CASE WHEN {leap} THEN '29' ELSE '28' END)"
            " WHEN '04' THEN '30' WHEN '06' THEN '30' WHEN '09' THEN '30' WHEN '11' THEN '30' ELSE '31' END)"
        )
        valid = (
            f"{c} GLOB '{TS_GLOB}' AND substr({c}, 12, 2) <= '23' AND {c} >= '0001'"
            f" AND substr({c}, 6, 2) BETWEEN '01' AND '12' AND substr({c}, 9, 2) BETWEEN '01' AND {last_day}"
        )
        return f"(CASE typeof({c}) WHEN 'null' THEN 0 WHEN 'text' THEN NOT ({valid}) ELSE 1 END)"
    if column.kind == REAL:
        return f"(CASE typeof({c}) WHEN 'null' THEN 0 WHEN 'real' THEN 0 WHEN 'integer' THEN 0 ELSE 1 END)"
    raise ValueError(f"unsupported column kind {column.kind}")


def flag_word_count(table: Table) -> int:
    return (len(table.columns) + 59) // 60


def _flag_words(table: Table) -> list[str]:
    """Bit masks of per-column problems, 60 columns per integer (each term is 0 or 1, never NULL:
    one NULL would turn the whole mask NULL)."""
    words = []
    for start in range(0, len(table.columns), 60):
        terms = [
            f"({_sqlite_problem(col)} << {bit})" for bit, col in enumerate(table.columns[start : start + 60])
        ]
        words.append("(" + " | ".join(terms) + ")")
    return words


def _columns(table: Table) -> list[str]:
    return [q(c.name) for c in table.columns]


def _order(table: Table) -> str:
    return ", ".join(q(k) for k in table.key)


def sqlite_check_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    """The scan over a key range: key columns, problem bit masks, then every raw value.

    Rows with a problem bit are diagnosed one by one; the others are rendered and hashed (which also
    proves their text is UTF-8 without NUL and their JSON acceptable to jsonb). No ORDER BY: a sum
    needs no order.
    """
    select = [q(k) for k in table.key] + _flag_words(table) + _columns(table)
    where, params = _sqlite_range(table, bounds)
    return f"SELECT {', '.join(select)} FROM {sqlite_table(table)}{where}", params


def sqlite_row_sql(table: Table) -> str:
    """One row by key, each value with its storage class: typeof(c1), c1, typeof(c2), c2, …"""
    cols = ", ".join(f"typeof({q(c.name)}), {q(c.name)}" for c in table.columns)
    return f"SELECT {cols} FROM {sqlite_table(table)} WHERE {_sqlite_key_equals(table)}"


def _sqlite_key_equals(table: Table) -> str:
    # Text keys are bound as the exact bytes read; CAST makes them text again, whatever their encoding.
    return " AND ".join(
        f"{q(c.name)} = CAST(? AS TEXT)" if c.kind == TEXT else f"{q(c.name)} = ?" for c in table.key_columns
    )


def _sqlite_range(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    """WHERE clause of a key range. Text keys are bound as UTF-8 bytes and CAST back to text, so a
    bound compares exactly as the stored bytes do (SQLite's BINARY collation)."""
    if bounds is None:
        return "", []
    marks = ["CAST(? AS TEXT)" if c.kind == TEXT else "?" for c in table.key_columns]
    if len(marks) > 1:
        tuple_sql = "(" + ", ".join(q(k) for k in table.key) + ")"
        placeholders = "(" + ", ".join(marks) + ")"
    else:
        tuple_sql, placeholders = q(table.key[0]), marks[0]
    clauses: list[str] = []
    params: list[Any] = []
    for op, bound in ((">=", bounds.lo), ("<", bounds.hi)):
        if bound is not None:
            clauses.append(f"{tuple_sql} {op} {placeholders}")
            params.extend(v.encode() if isinstance(v, str) else v for v in bound)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _nul_check(table: Table) -> str:
    checks = [f"instr(CAST({q(c.name)} AS BLOB), x'00') > 0" for c in table.columns if c.kind == TEXT]
    checks += [f"instr({q(c.name)}, '\\u0000') > 0" for c in table.columns if c.kind == JSON]
    return "(" + (" OR ".join(checks) or "0") + ")"


def _feed_value(column: Column) -> str:
    c = q(column.name)
    if column.kind == TS:
        # Binary timestamptz is microseconds since 2000-01-01 UTC; SQLite computes it from the fixed
        # text (a value of another shape becomes NULL here, and is an offender the scan reports).
        return (
            f"(CAST(strftime('%s', substr({c}, 1, 19)) AS INTEGER) - {PG_EPOCH_UNIX}) * 1000000"
            f" + CAST(substr({c}, 21, 6) AS INTEGER)"
        )
    return c


def sqlite_feed_sql(table: Table, *, nul_flag: bool) -> str:
    """The load pass, in key order: [has-NUL flag,] every value as binary COPY takes it."""
    select = [_nul_check(table)] if nul_flag else []
    select += [_feed_value(c) for c in table.columns]
    return f"SELECT {', '.join(select)} FROM {sqlite_table(table)} ORDER BY {_order(table)}"


def sqlite_hash_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    """Rows of a key range in key order: key columns, has-NUL flag, raw values (narrowing)."""
    select = [q(k) for k in table.key] + [_nul_check(table)] + _columns(table)
    where, params = _sqlite_range(table, bounds)
    return f"SELECT {', '.join(select)} FROM {sqlite_table(table)}{where} ORDER BY {_order(table)}", params


def sqlite_raw_row_sql(table: Table) -> str:
    """One row's raw values by key (for rows repaired or rendered in Python)."""
    return f"SELECT {', '.join(_columns(table))} FROM {sqlite_table(table)} WHERE {_sqlite_key_equals(table)}"


def sqlite_key_by_rowid_sql(table: Table) -> str:
    return f"SELECT {', '.join(q(k) for k in table.key)} FROM {sqlite_table(table)} WHERE rowid = ?"


def sqlite_boundaries_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    """Every `step`-th key of a range in key order (the step is the last parameter)."""
    keys = ", ".join(q(k) for k in table.key)
    where, params = _sqlite_range(table, bounds)
    return (
        f"SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS rn"
        f" FROM {sqlite_table(table)}{where}) WHERE rn % ? = 0 ORDER BY {keys}",
        params,
    )


def sqlite_range_count_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    where, params = _sqlite_range(table, bounds)
    return f"SELECT count(*) FROM {sqlite_table(table)}{where}", params


# --- PostgreSQL -------------------------------------------------------------------------------------
# Statements with parameters use %s placeholders (so a literal % is written %%); the others are sent
# without parameters and taken literally.


def pg_ident(table: Table) -> str:
    return f"{q(table.store)}.{q(table.name)}"


_REGCLASS = "(quote_ident(%s) || '.' || quote_ident(%s))::regclass"

PG_SERVER_ENCODING = "SHOW server_encoding"

PG_TABLES = (
    "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY table_name"
)

# (name, data type, not null, fed by a sequence) per column, in table order.
PG_COLUMNS = (
    "SELECT column_name, data_type, is_nullable = 'NO',"
    " is_identity = 'YES' OR coalesce(column_default, '') LIKE 'nextval(%%'"
    " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
    " ORDER BY ordinal_position"
)

PG_PRIMARY_KEY = (
    "SELECT a.attname FROM pg_index i"
    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
    f" WHERE i.indrelid = {_REGCLASS} AND i.indisprimary"
    " ORDER BY array_position(i.indkey::int2[], a.attnum)"
)

PG_PARENTS = (
    "SELECT DISTINCT p.relname FROM pg_constraint con JOIN pg_class p ON p.oid = con.confrelid"
    f" WHERE con.conrelid = {_REGCLASS} AND con.contype = 'f' ORDER BY 1"
)

PG_HAS_MIGRATIONS = "SELECT to_regclass(quote_ident(%s) || '._yoyo_migration') IS NOT NULL"

# Whether this server was built with LZ4 (then `default_toast_compression` accepts it).
PG_HAS_LZ4 = "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"

PG_SEQUENCE_OF = (
    "SELECT n.nspname, s.relname FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace"
    " WHERE s.oid = pg_get_serial_sequence(quote_ident(%s) || '.' || quote_ident(%s), %s)::regclass"
)


def pg_migration_ids_sql(store: str) -> str:
    return f"SELECT migration_id FROM {q(store)}._yoyo_migration ORDER BY applied_at_utc, migration_id"


def pg_has_rows_sql(table: Table) -> str:
    return f"SELECT EXISTS (SELECT 1 FROM {pg_ident(table)})"


def pg_truncate_sql(tables: Sequence[Table]) -> str:
    # One statement for all tables, so foreign keys between them do not object.
    return "TRUNCATE " + ", ".join(pg_ident(t) for t in tables)


def pg_lock_sql(tables: Sequence[Table]) -> str:
    """Keep other sessions from writing the tables while the load runs (reads still work)."""
    return "LOCK TABLE " + ", ".join(pg_ident(t) for t in tables) + " IN SHARE ROW EXCLUSIVE MODE NOWAIT"


def pg_copy_sql(table: Table) -> str:
    return f"COPY {pg_ident(table)} ({', '.join(_columns(table))}) FROM STDIN (FORMAT BINARY)"


def pg_max_sql(table: Table, column: str) -> str:
    return f"SELECT max({q(column)}) FROM {pg_ident(table)}"


def pg_restart_sql(schema: str, sequence: str, start: int) -> str:
    # ALTER SEQUENCE … RESTART is transactional, unlike setval(): a rollback restores the sequence too.
    return f"ALTER SEQUENCE {q(schema)}.{q(sequence)} RESTART WITH {int(start)}"


def pg_analyze_sql(table: Table) -> str:
    return f"ANALYZE {pg_ident(table)}"


def _pg_field(column: Column) -> str:
    """The field of one stored value (see canonical.py); the value is referenced once, so a jsonb is
    detoasted and printed once per row."""
    c = q(column.name)
    if column.kind == BOOL:
        return f"(CASE WHEN {c} THEN 'B1' WHEN NOT {c} THEN 'B0' ELSE 'N' END)"
    if column.kind == INT:
        value = f"'I' || {c}::text || ';'"
    elif column.kind == TS:
        value = f"'D' || to_char({c} AT TIME ZONE 'UTC', '{PG_TS_FORMAT}')"
    elif column.kind == REAL:
        value = f"'R' || encode(float8send({c}), 'hex')"
    elif column.kind == TEXT:
        value = f"'T' || replace({c}, '\\', '\\\\') || '\\;'"
    elif column.kind == JSON:
        value = f"'J' || replace({c}::text, '\\', '\\\\') || '\\;'"
    else:
        raise ValueError(f"unsupported column kind {column.kind}")
    return f"(CASE WHEN {c} IS NULL THEN 'N' ELSE {value} END)"


def _pg_key_expr(table: Table) -> list[str]:
    # Text keys compare bytewise (COLLATE "C"), which is SQLite's BINARY order for UTF-8.
    return [f'{q(c.name)} COLLATE "C"' if c.kind == TEXT else q(c.name) for c in table.key_columns]


def _pg_range(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    if bounds is None:
        return "", []
    keys = _pg_key_expr(table)
    if len(keys) > 1:
        tuple_sql = "(" + ", ".join(keys) + ")"
        placeholder = "(" + ", ".join("%s" for _ in keys) + ")"
    else:
        tuple_sql, placeholder = keys[0], "%s"
    clauses: list[str] = []
    params: list[Any] = []
    if bounds.lo is not None:
        clauses.append(f"{tuple_sql} >= {placeholder}")
        params.extend(bounds.lo)
    if bounds.hi is not None:
        clauses.append(f"{tuple_sql} < {placeholder}")
        params.extend(bounds.hi)
    if not clauses:
        return "", []
    return " WHERE " + " AND ".join(clauses), params


def _pg_rendering(table: Table) -> str:
    return " || ".join(_pg_field(c) for c in table.columns)


def pg_checksum_sql(table: Table, bounds: KeyRange | None = None) -> tuple[str, list[Any]]:
    """count(*), the exact sums of the two halves of every row's MD5 read as signed bigints, and how
    many low halves were negative (see canonical.combine_pg_sums).

    The MD5 comes from a LATERAL unnest() so it is computed once per row: as a plain subquery column
    the planner would inline it into each of its three uses (and an OFFSET 0 fence would forbid a
    parallel scan). Measured on 200k messages: 4.3 s in parallel, against 20 s inlined.
    """
    where, params = _pg_range(table, bounds)
    return (
        "SELECT count(*), sum(hi), sum(lo), count(*) FILTER (WHERE lo < 0) FROM ("
        "SELECT ('x' || substr(x.tgp_h, 1, 16))::bit(64)::bigint AS hi,"
        " ('x' || substr(x.tgp_h, 17, 16))::bit(64)::bigint AS lo"
        f" FROM {pg_ident(table)} CROSS JOIN LATERAL unnest(ARRAY[md5({_pg_rendering(table)})]) AS x (tgp_h)"
        f"{where}) AS s",
        params,
    )


def pg_row_hashes_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    """Key columns and each row's MD5, in key order (bytewise for text)."""
    where, params = _pg_range(table, bounds)
    keys = ", ".join(q(k) for k in table.key)
    return (
        f"SELECT {keys}, md5({_pg_rendering(table)}) FROM {pg_ident(table)}{where}"
        f" ORDER BY {', '.join(_pg_key_expr(table))}",
        params,
    )


def pg_boundaries_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    """Every `step`-th key of a range in key order (the step is the last parameter)."""
    where, params = _pg_range(table, bounds)
    keys = ", ".join(q(k) for k in table.key)
    order = ", ".join(_pg_key_expr(table))
    return (
        f"SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {order}) AS rn"
        f" FROM {pg_ident(table)}{where}) AS s WHERE rn %% %s = 0 ORDER BY {order}",
        params,
    )


def pg_count_sql(table: Table, bounds: KeyRange | None) -> tuple[str, list[Any]]:
    where, params = _pg_range(table, bounds)
    return f"SELECT count(*) FROM {pg_ident(table)}{where}", params
