"""Build the table specs from the catalogs and check that source and target describe the same schema."""

from __future__ import annotations

from tg_parser.transfer.errors import PreflightRefused
from tg_parser.transfer.schema import PG_KINDS, SQLITE_KINDS, Column, Table, load_order
from tg_parser.transfer.source import SqliteSource
from tg_parser.transfer.target import PostgresTarget

# The PostgreSQL type a SQLite column is rendered as when there is no PostgreSQL side (db checksum).
_DEFAULT_PG = {
    "int": "bigint",
    "bool": "boolean",
    "text": "text",
    "ts": "timestamp with time zone",
    "json": "jsonb",
    "real": "double precision",
}


def _sqlite_kind(store: str, table: str, name: str, declared: str) -> str:
    kind = SQLITE_KINDS.get(declared)
    if kind is None:
        raise PreflightRefused(
            f"column {store}.{table}.{name} has SQLite type {declared or '(none)'}, which the migrator does not know",
            "use INTEGER, TEXT, REAL, TIMESTAMP_TEXT, JSON_TEXT or BOOLEAN_INT in migrations",
        )
    return kind


def _pg_kind(store: str, table: str, name: str, data_type: str) -> str:
    kind = PG_KINDS.get(data_type)
    if kind is None:
        raise PreflightRefused(
            f"column {store}.{table}.{name} has PostgreSQL type {data_type}, which the migrator does not know",
            "use bigint/integer, text, double precision, timestamptz, jsonb or boolean in migrations",
        )
    return kind


def source_tables(source: SqliteSource, stores: tuple[str, ...]) -> list[Table]:
    tables = []
    for store in stores:
        for name in source.tables(store):
            cols = source.columns(store, name)
            columns = [
                Column(n, kind := _sqlite_kind(store, name, n, t), t, _DEFAULT_PG[kind], nn)
                for n, t, nn, _ in cols
            ]
            tables.append(
                Table(
                    store, name, columns, _sqlite_key(store, name, cols), parents=source.parents(store, name)
                )
            )
    return load_order(tables)


def _sqlite_key(store: str, table: str, cols: list[tuple[str, str, bool, int]]) -> list[str]:
    key = [n for n, _, _, position in sorted(cols, key=lambda c: c[3]) if position > 0]
    if not key:
        raise PreflightRefused(
            f"table {store}.{table} has no primary key",
            "every table needs one: the migrator orders, compares and names rows by it",
        )
    return key


def target_tables(target: PostgresTarget, stores: tuple[str, ...]) -> list[Table]:
    tables = []
    for store in stores:
        for name in target.tables(store):
            cols = target.columns(store, name)
            columns = [Column(n, _pg_kind(store, name, n, t), "", t, nn) for n, t, nn, _ in cols]
            key = target.primary_key(store, name)
            if not key:
                raise PreflightRefused(f"table {store}.{name} has no primary key", "add one in a migration")
            tables.append(
                Table(
                    store,
                    name,
                    columns,
                    key,
                    identity=[n for n, _, _, seq in cols if seq],
                    parents=target.parents(store, name),
                )
            )
    return load_order(tables)


def matched_tables(source: SqliteSource, target: PostgresTarget, stores: tuple[str, ...]) -> list[Table]:
    """The tables to copy, with both sides' types; refuses any difference between the two schemas."""
    problems: list[str] = []
    result: list[Table] = []
    for store in stores:
        src_names, dst_names = source.tables(store), target.tables(store)
        for name in sorted(set(src_names) - set(dst_names)):
            problems.append(f"{store}.{name} exists in SQLite but not in PostgreSQL")
        for name in sorted(set(dst_names) - set(src_names)):
            problems.append(f"{store}.{name} exists in PostgreSQL but not in SQLite")
        for name in src_names:
            if name not in dst_names:
                continue
            src_cols = source.columns(store, name)
            dst_cols = {n: (t, nn, seq) for n, t, nn, seq in target.columns(store, name)}
            columns = []
            for col_name, declared, not_null, _ in src_cols:
                if col_name not in dst_cols:
                    problems.append(f"column {store}.{name}.{col_name} is missing in PostgreSQL")
                    continue
                pg_type = dst_cols[col_name][0]
                src_kind = _sqlite_kind(store, name, col_name, declared)
                dst_kind = _pg_kind(store, name, col_name, pg_type)
                if src_kind != dst_kind:
                    problems.append(
                        f"column {store}.{name}.{col_name} is {declared} in SQLite but {pg_type} in PostgreSQL"
                    )
                    continue
                columns.append(Column(col_name, src_kind, declared, pg_type, not_null))
            for col_name in dst_cols:
                if col_name not in {c[0] for c in src_cols}:
                    problems.append(f"column {store}.{name}.{col_name} is missing in SQLite")
            src_key = _sqlite_key(store, name, src_cols)
            dst_key = target.primary_key(store, name)
            if src_key != dst_key:
                problems.append(
                    f"{store}.{name} has primary key ({', '.join(src_key)}) in SQLite but ({', '.join(dst_key)}) in PostgreSQL"
                )
            result.append(
                Table(
                    store,
                    name,
                    columns,
                    src_key,
                    identity=[n for n, (_, _, seq) in dst_cols.items() if seq],
                    parents=target.parents(store, name),
                )
            )
    if problems:
        raise PreflightRefused(
            "the SQLite and PostgreSQL schemas differ: "
            + "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
            "run 'tg-parser db upgrade' on both sides with the same tg-parser version",
        )
    return load_order(result)
