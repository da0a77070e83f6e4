"""The migration run: preflight, one-transaction load with a concurrent scan, verification, commit or
rollback, report.

Order of work (DESIGN.md §8):

1. Open the SQLite files and take their write lock (see `source.py`); connect to PostgreSQL.
2. Preflight, before anything is written: migration ids equal on both sides per store, server encoding
   UTF8, the same tables/columns/keys on both sides, target tables empty (unless `--truncate`); each
   table is counted and cut into key ranges.
3. The scan starts in helper processes (`parallel.Scan`): every value is checked for what PostgreSQL
   would reject or change, and every clean row is rendered canonically and hashed (the source
   checksums, per key range). It reads the locked files, so it sees exactly the rows the load copies.
4. Meanwhile, one PostgreSQL transaction for the whole run (all stores): TRUNCATE when asked, COPY each
   table in foreign-key order, sequences restarted after the largest id (ALTER SEQUENCE … RESTART, which
   — unlike setval — rolls back with the transaction). Between COPY blocks the scan's results are read:
   the first offender stops the load. The scan still runs to its end, so the report lists every
   offender, and the transaction is rolled back: nothing was written.
5. Verification inside the same transaction: every table's checksum read back from the target (while
   the scan may still run), then compared with the source's; on a mismatch the differing keys are found
   by key ranges.
6. Everything matches and this is not a dry run: ANALYZE, COMMIT. Otherwise ROLLBACK: the target is
   exactly as before (a dry run thus proves the whole load and verification would succeed).

The scan and the load overlap because each is CPU-bound on a different side (Python rendering JSON the
way jsonb prints it; PostgreSQL parsing COPY), so together they take about as long as the slower one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from tg_parser.db.bulk_postgres import PgStatementFailed
from tg_parser.db.postgres import PgTarget
from tg_parser.db.resources import STORES
from tg_parser.errors import StoreNotInitialised, TgParserError
from tg_parser.transfer.canonical import format_checksum
from tg_parser.transfer.checksum import RangedSum, Sum
from tg_parser.transfer.errors import HelperFailed, MigrationError, PreflightRefused
from tg_parser.transfer.loader import load_table
from tg_parser.transfer.parallel import Scan, check_source, default_workers
from tg_parser.transfer.report import TableReport, TransferReport
from tg_parser.transfer.scan import ScanResult
from tg_parser.transfer.schema import Table
from tg_parser.transfer.source import SqliteSource
from tg_parser.transfer.tables import matched_tables
from tg_parser.transfer.target import PostgresTarget
from tg_parser.transfer.verify import narrow, target_sum

Tick = Callable[[int], None]
# progress(label, total) -> context manager yielding a function that advances the bar by n rows
Progress = Callable[[str, int], AbstractContextManager[Tick]]


@dataclass
class TransferOptions:
    source_dir: Path
    target: PgTarget
    stores: tuple[str, ...] = STORES
    dry_run: bool = False
    truncate: bool = False
    verify_only: bool = False
    on_nul: str = "fail"  # fail | strip
    batch_size: int = 500  # rows read from SQLite per fetch (and written between looks at the scan)
    busy_timeout_ms: int = 10_000
    connect_timeout: int = 10
    offender_limit: int = 1000
    workers: int = field(default_factory=default_workers)  # processes scanning the source (see _helpers)
    difference_limit: int = 50
    progress: Progress | None = None
    # Called after each table is loaded, before the next one (the tests inject failures there).
    after_table: Callable[[Table, PostgresTarget], None] | None = field(default=None, repr=False)

    @property
    def strip_nul(self) -> bool:
        return self.on_nul == "strip"

    @property
    def mode(self) -> str:
        return "verify" if self.verify_only else ("dry-run" if self.dry_run else "migrate")


def _no_progress(label: str, total: int) -> AbstractContextManager[Tick]:
    return nullcontext(lambda n: None)


@contextmanager
def _phase(report: TransferReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        report.phases[name] = report.phases.get(name, 0.0) + time.perf_counter() - started


def _warn_if_pure_python() -> None:
    """One log line when the C fast path is missing: the run is correct, only slower, and says why."""
    from tg_parser.transfer import canonical

    if canonical._jsonb is None:
        logger.warning(
            "the migrator runs its pure-Python path: the C fast path (_jsonb.c) is not built (same results, "
            "slower) — install a C compiler and the Python headers, then reinstall tg-parser (pip install -e .)"
        )


def run_transfer(options: TransferOptions) -> TransferReport:
    """Run the migration (or dry run, or verification) and return its report; never raises for
    expected failures — the report carries the status, the error line and the exit code."""
    _warn_if_pure_python()
    report = TransferReport(
        mode=options.mode,
        source=f"SQLite in {options.source_dir}",
        target=options.target.describe(),
        stores=list(options.stores),
    )
    source: SqliteSource | None = None
    target: PostgresTarget | None = None
    try:
        source = SqliteSource(options.source_dir, options.stores, options.busy_timeout_ms)
        report.source = source.describe()
        report.consistency = source.hold()
        target = PostgresTarget(options.target, connect_timeout=options.connect_timeout)
        with _phase(report, "preflight"):
            tables = _preflight(source, target, options, report)
        if options.verify_only:
            _verify_only(source, target, tables, options, report)
        else:
            _load_and_verify(source, target, tables, options, report)
    except PreflightRefused as exc:
        report.status, report.error, report.error_exit_code = "refused", exc.one_line(), exc.exit_code
        _rollback(target)
    except TgParserError as exc:
        report.status, report.error = "failed", exc.one_line()
        report.error_exit_code = exc.exit_code  # e.g. 3 for an unreachable database, 4 for a busy source
        _rollback(target)
    except PgStatementFailed as exc:  # the server's own message, already on one line
        report.status = "failed"
        report.error = _safe(str(exc), options.target)
        _rollback(target)
    except Exception as exc:  # reported as one line; the target is rolled back
        report.status = "failed"
        report.error = _safe(f"{type(exc).__name__}: {' '.join(str(exc).split())}", options.target)
        _rollback(target)
    finally:
        if target is not None:
            target.close()
        if source is not None:
            source.close()
    totals = report.totals()
    logger.bind(
        mode=report.mode, status=report.status, committed=report.committed, rows=totals["rows_source"]
    ).info(
        "migration {} {}: {} rows, {} → {}{}",
        report.mode,
        report.status,
        totals["rows_source"],
        report.source,
        report.target,
        f" ({report.error})" if report.error else "",
    )
    return report


def _safe(message: str, target: PgTarget) -> str:
    return message.replace(target.password, "***") if target.password else message


def _rollback(target: PostgresTarget | None) -> None:
    if target is None:
        return
    with contextlib.suppress(Exception):  # the connection may be gone; the server rolled back then
        target.rollback()


def _preflight(
    source: SqliteSource, target: PostgresTarget, options: TransferOptions, report: TransferReport
) -> list[Table]:
    """Everything that can be decided from the catalogs, before anything is written or scanned."""
    for store in options.stores:
        ours, theirs = source.migration_ids(store), target.migration_ids(store)
        if ours is None:
            raise PreflightRefused(
                f"the SQLite store {store!r} has no migrations applied", "run 'tg-parser init' for the source"
            )
        if theirs is None:
            raise PreflightRefused(
                f"the PostgreSQL schema {store!r} was not created by tg-parser",
                "run 'tg-parser db upgrade' with DB_TYPE=postgres against the target first",
            )
        if ours != theirs:
            raise PreflightRefused(
                f"store {store!r} is at migration {ours[-1] if ours else '(none)'} in SQLite but at "
                f"{theirs[-1] if theirs else '(none)'} in PostgreSQL ({len(ours)} vs {len(theirs)} applied)",
                "run 'tg-parser db upgrade' on both sides with the same tg-parser version",
            )
    encoding = target.server_encoding()
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise PreflightRefused(
            f"the target database's encoding is {encoding}, not UTF8; text would not survive",
            "create the database with ENCODING 'UTF8'",
        )
    tables = matched_tables(source, target, options.stores)
    if not options.verify_only:
        busy = [t.qualified for t in tables if target.has_rows(t)]
        if busy and not options.truncate:
            raise PreflightRefused(
                f"the target already holds rows in {', '.join(busy[:4])}{' …' if len(busy) > 4 else ''}",
                "migrate into an empty, freshly upgraded database, or pass --truncate to replace its contents",
            )
    target.rollback()  # end the catalog reads' transaction; the load opens its own
    return tables


def _helpers(options: TransferOptions) -> int:
    """Scan helpers beside this process: `workers` processes scan in all, but at least one helper
    runs during a load, so the scan overlaps the COPY."""
    return max(1, options.workers - 1)


class _Offenders(Exception):
    """The scan found values that cannot be loaded: stop the COPY (the transaction is rolled back)."""


def _start_scan(
    source: SqliteSource,
    tables: list[Table],
    options: TransferOptions,
    helpers: int,
    *,
    check_utf8: bool = True,
) -> Scan:
    return Scan(
        source,
        tables,
        strip_nul=options.strip_nul,
        helpers=helpers,
        limit=options.offender_limit,
        check_utf8=check_utf8,
    )


def _table_entries(report: TransferReport, tables: list[Table], scan: Scan) -> dict[str, TableReport]:
    """One report row per table, with the source's row count from the preflight; by table name."""
    for table in tables:
        report.tables.append(TableReport(table.qualified, scan.result.rows[table.qualified], ""))
    return {entry.table: entry for entry in report.tables}


def _differing(report: TransferReport) -> str:
    return ", ".join(entry.table for entry in report.tables if not entry.match)


def _finish_scan(
    scan: Scan, tables: list[Table], options: TransferOptions, report: TransferReport
) -> dict[str, RangedSum] | None:
    """Wait for the scan (this process helps); fills the report's source side. None if offenders."""
    progress = options.progress or _no_progress
    total = sum(scan.result.rows.values())
    with _phase(report, "scan"), progress("scan + source checksums", total) as tick:
        if scan.rows_done:
            tick(scan.rows_done)
        scan.finish(parent_works=True, tick=tick)
    _report_scan(scan.result, scan.sums, tables, report)
    if scan.result.offenders:
        report.status = "offenders"
        report.offenders = scan.result.offenders
        report.offenders_total = scan.result.offenders_total
        for entry in report.tables:
            entry.checksum_source = ""  # rows with offences were not hashed
        report.error = f"{report.offenders_total} value(s) in the source cannot be loaded as they are; nothing was written"
        return None
    return scan.sums


def _report_scan(
    result: ScanResult, sums: dict[str, RangedSum], tables: list[Table], report: TransferReport
) -> None:
    report.repairs = result.repairs
    if result.repairs:
        cells = sum(sum(c.values()) for c in result.repairs.values())
        report.notes.append(
            f"--on-nul strip: {cells} cell(s) lose their NUL characters; the source checksums are computed "
            "over the repaired values, so they verify that exactly the repaired data arrived"
        )
    entries = {entry.table: entry for entry in report.tables}
    for table in tables:
        total = sums[table.qualified].total
        entry = entries.get(table.qualified)
        if entry is None:
            entry = TableReport(table.qualified, result.rows.get(table.qualified, 0), "")
            report.tables.append(entry)
        entry.checksum_source = format_checksum(total.checksum)
        entry.repaired_cells = sum(result.repairs.get(table.qualified, {}).values())


def _load_and_verify(
    source: SqliteSource,
    target: PostgresTarget,
    tables: list[Table],
    options: TransferOptions,
    report: TransferReport,
) -> None:
    progress = options.progress or _no_progress
    # Text that is not UTF-8 is refused by the COPY itself; the scan leaves that check to it.
    # The helpers scan while this process feeds the COPY; it joins them once the COPY is done.
    scan = _start_scan(source, tables, options, helpers=_helpers(options), check_utf8=False)
    try:
        entries = _table_entries(report, tables, scan)

        def look_at_scan() -> None:
            scan.poll()
            if scan.offences:
                raise _Offenders

        failure: BaseException | None = None
        with _phase(report, "load"):
            try:
                _load(source, target, tables, entries, options, progress, look_at_scan)
            except _Offenders:
                pass
            except HelperFailed:
                raise  # the scan itself broke: scanning again would not name anything
            except Exception as exc:  # maybe caused by an offender the scan has not reached yet
                failure = exc
        if failure is not None or scan.offences:
            # Nothing is loaded: roll back, then scan everything again, with every check, so the
            # report names every offender (including text that is not UTF-8, which stopped the COPY).
            _rollback(target)
            scan.close()
            scan = _start_scan(source, tables, options, helpers=_helpers(options))
            sums = _finish_scan(scan, tables, options, report)
            if sums is None or failure is None:
                return
            raise failure
        with _phase(report, "verify"):
            theirs = _target_sums(target, tables, entries)
        if not options.dry_run:
            # While the scan finishes; wasted only if the checksums then differ (all is rolled back).
            with _phase(report, "analyze"):
                target.analyze(tables)
        sums = _finish_scan(scan, tables, options, report)
    finally:
        scan.close()
    if sums is None:
        target.rollback()
        return
    with _phase(report, "verify"):
        _compare_all(source, target, tables, entries, sums, theirs, options)
    all_match = all(entries[t.qualified].match for t in tables)
    if all_match and not options.dry_run:
        with _phase(report, "commit"):
            target.commit()
        report.committed = True
        report.status = "ok"
        return
    target.rollback()
    if not all_match:
        report.status = "mismatch"
        report.error = f"checksums differ in {_differing(report)}; rolled back, the target is as it was"
    else:
        report.status = "ok"
        report.notes.append("dry run: everything was loaded and verified, then rolled back")


def _load(
    source: SqliteSource,
    target: PostgresTarget,
    tables: list[Table],
    entries: dict[str, TableReport],
    options: TransferOptions,
    progress: Progress,
    between_blocks: Callable[[], None],
) -> None:
    """The COPY of every table, in one transaction, with what surrounds it."""
    target.lock(tables)
    if options.truncate:
        target.truncate(tables)
    if target.has_lz4():  # measured: large values compressed with LZ4 rather than pglz (see the guide)
        target.compress_with_lz4()
    for table in tables:
        entry = entries[table.qualified]
        with progress(f"copy {table.qualified}", entry.rows_source) as tick:
            result = load_table(
                source,
                target,
                table,
                strip_nul=options.strip_nul,
                batch_size=options.batch_size,
                on_rows=tick,
                between_blocks=between_blocks,
            )
        if result.rows != entry.rows_source:
            raise MigrationError(
                f"{table.qualified}: {result.rows} rows streamed but {entry.rows_source} counted in preflight",
                "the source changed during the run; stop every writer and run again",
            )
        entry.bytes = result.bytes
        entry.seconds = result.seconds
        if options.after_table is not None:
            options.after_table(table, target)
    target.restart_identities(tables)


def _target_sums(
    target: PostgresTarget, tables: list[Table], entries: dict[str, TableReport]
) -> dict[str, Sum]:
    """Every table's checksum, computed by the server from what it stored."""
    sums = {}
    for table in tables:
        started = time.perf_counter()
        sums[table.qualified] = target_sum(target, table)
        entries[table.qualified].seconds += time.perf_counter() - started
    return sums


def _compare_all(
    source: SqliteSource,
    target: PostgresTarget,
    tables: list[Table],
    entries: dict[str, TableReport],
    sums: dict[str, RangedSum],
    theirs: dict[str, Sum],
    options: TransferOptions,
) -> None:
    """Compare every table's source and target sums, filling its report entry (and naming differences)."""
    for table in tables:
        q = table.qualified
        _compare(source, target, table, entries[q], sums[q], theirs[q], options)


def _compare(
    source: SqliteSource,
    target: PostgresTarget,
    table: Table,
    entry: TableReport,
    sums: RangedSum,
    theirs: Sum,
    options: TransferOptions,
) -> None:
    started = time.perf_counter()
    entry.rows_target = theirs.rows
    entry.checksum_target = format_checksum(theirs.checksum)
    entry.match = sums.total.same(theirs)
    if not entry.match:
        entry.differences = narrow(
            source, target, table, sums, strip_nul=options.strip_nul, limit=options.difference_limit
        )
    entry.seconds += time.perf_counter() - started


def _verify_only(
    source: SqliteSource,
    target: PostgresTarget,
    tables: list[Table],
    options: TransferOptions,
    report: TransferReport,
) -> None:
    scan = _start_scan(source, tables, options, helpers=_helpers(options) if options.workers > 1 else 0)
    try:
        entries = _table_entries(report, tables, scan)
        with _phase(report, "verify"):  # the server sums while the helpers scan
            theirs = _target_sums(target, tables, entries)
        sums = _finish_scan(scan, tables, options, report)
    finally:
        scan.close()
    if sums is None:
        target.rollback()
        return
    with _phase(report, "verify"):
        _compare_all(source, target, tables, entries, sums, theirs, options)
    target.rollback()
    if all(t.match for t in report.tables):
        report.status = "ok"
    else:
        report.status = "mismatch"
        report.error = f"checksums differ in {_differing(report)}"


def database_checksums(
    settings: Any, stores: tuple[str, ...] = STORES, progress: Progress | None = None, workers: int = 0
) -> dict[str, Any]:
    """Row count and checksum of every table of the configured database (either dialect).

    The same canonical rendering on both dialects: a SQLite install and the PostgreSQL database it was
    migrated to print the same figures. SQLite is read from one snapshot (writers are not blocked);
    PostgreSQL from one REPEATABLE READ, READ ONLY transaction. SQLite is read under its write lock
    (writers wait, as during a migration), so the figures describe one state of the files.
    """
    from tg_parser.db.connect import dialect_of, pg_target
    from tg_parser.transfer.tables import source_tables, target_tables

    progress = progress or _no_progress
    rows: list[dict[str, Any]] = []
    if dialect_of(settings) == "sqlite":
        source = SqliteSource(settings.db_sqlite_dir, stores, settings.db_sqlite_busy_timeout)
        try:
            source.hold()
            where = source.describe()
            tables = source_tables(source, stores)
            with progress("checksums", sum(source.count(t) for t in tables)) as tick:
                sums, result = check_source(
                    source, tables, strip_nul=False, workers=workers or default_workers(), tick=tick
                )
            if result.offenders:
                first = result.offenders[0]
                raise MigrationError(
                    f"{len(result.offenders)} value(s) cannot be rendered, e.g. {first.one_line()}",
                    "run 'tg-parser db migrate-to-postgres --dry-run' to list every offender",
                )
            for table in tables:
                total = sums[table.qualified].total
                rows.append(
                    {
                        "table": table.qualified,
                        "rows": total.rows,
                        "checksum": format_checksum(total.checksum),
                    }
                )
        finally:
            source.close()
    else:
        target = PostgresTarget(pg_target(settings), connect_timeout=settings.db_connect_timeout)
        try:
            target.snapshot()
            where = target.describe()
            missing = [store for store in stores if not target.initialised(store)]
            if missing:  # as on SQLite (a missing file): an empty list of tables would read as a match
                raise StoreNotInitialised(
                    f"store(s) {', '.join(missing)} in {where} are not initialised (no schema yet)",
                    "run 'tg-parser init' (or 'tg-parser db upgrade')",
                )
            for table in target_tables(target, stores):
                count, value = target.checksum(table)
                rows.append({"table": table.qualified, "rows": count, "checksum": format_checksum(value)})
            target.rollback()
        finally:
            target.close()
    return {"database": where, "tables": rows}
