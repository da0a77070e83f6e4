"""The message entries of an export written by more than one process (`tg-parser export --jobs N`).

The export's order (channel_id, message_date, source_ref) is cut into N contiguous key ranges of about
equal size (`ExportStore.split_keys`). The exporting process writes the first range straight into
kb_entries.ndjson while helper processes each write one of the others into a spool file beside it; then
the spools are appended in order and removed. The result is byte for byte the file one process writes:
the ranges are disjoint and in order, and every entry is formatted by the same code.

Helpers are fresh interpreters (multiprocessing's spawn: no helper inherits the exporting process's
database connection) that open their own connection from the settings and read in short keyset batches,
as the exporting process does. They need nothing else from the exporting process than what the entries
are formatted with (the links' usernames and the topic membership, decided before the stream starts).

Failure: a helper's error (or a helper that dies) fails the export with one error line, the helpers
still running are killed and every temporary file is removed, so no partial kb_entries.ndjson is ever
renamed into place. A helper whose exporting process is gone (killed) removes its spool and exits at its
next batch.

What the export sees of a database that changes while it runs is what one process sees (each batch is its
own short read, see `ExportStore.document_batches`): every document that exists and keeps its date for
the whole export is written exactly once, in order; no document is written twice; a document added,
removed or re-dated meanwhile may or may not be in it.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, BinaryIO

from tg_parser.config import Settings
from tg_parser.errors import TgParserError
from tg_parser.stores.export import ExportKey, ExportStore

# An export of fewer documents runs in one process by default: below this a helper's start (a fresh
# interpreter, its imports and its database connection: ~0.3 s of CPU) costs about what it saves.
AUTO_MIN_DOCUMENTS = 20_000
AUTO_JOBS = 2
# The exporting process's part is this many documents larger than a helper's (at most half a part): a
# helper starts ~0.45 s of CPU later (a fresh interpreter, its imports, its connection), in which the
# exporting process writes 15-20k entries on PostgreSQL (~20 us of client and server CPU each), so the
# parts end about together instead of the exporting process waiting for the last helper.
HELPER_HEAD_START = 15_000
_RETRY_HINT = "re-run the export; --jobs 1 runs it in one process"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs(documents: int) -> int:
    """The processes an export of `documents` uses when --jobs is not given."""
    return min(AUTO_JOBS, usable_cpus()) if documents >= AUTO_MIN_DOCUMENTS else 1


def head_start(documents: int, jobs: int) -> int:
    """How many documents more than a helper's the exporting process's own part holds
    (`ExportStore.split_keys`' first_extra): HELPER_HEAD_START, at most half a part."""
    return min(HELPER_HEAD_START, documents // (2 * jobs))


@dataclass(frozen=True)
class EntryContext:
    """What every part needs to format its entries: the writer's arguments other than the stream."""

    filters: Any  # writer.ExportFilters
    usernames: dict[int, str]
    membership: dict[str, list[str]]
    allowed: set[str] | None
    cited: set[str]


# The writer's loop: (store, out, context, after, upto, docs for topics, on_entry) -> entries written.
PartWriter = Callable[
    [Any, BinaryIO, EntryContext, ExportKey | None, ExportKey | None, dict[str, Any], Any], int
]


@dataclass
class _Helper:
    process: BaseProcess
    results: Connection
    spool: Path


def write_parts(
    store: ExportStore,
    out: BinaryIO,
    context: EntryContext,
    keys: list[ExportKey],
    *,
    settings: Settings,
    spool: Callable[[int], Path],
    write_part: PartWriter,
    docs_for_topics: dict[str, Any],
    on_entry: Callable[[], None] | None,
) -> int:
    """Write the entries of the len(keys) + 1 ranges that `keys` cut the export into: the first here,
    the others by helper processes (spooled to the path `spool(i)` gives for range i, appended in
    order). Returns the entries written."""
    spawn = multiprocessing.get_context("spawn")
    helpers: list[_Helper] = []
    try:
        bounds = list(zip(keys, [*keys[1:], None], strict=True))
        for index, (after, upto) in enumerate(bounds, start=1):
            results, sender = spawn.Pipe(duplex=False)
            path = spool(index)
            process = spawn.Process(
                target=_run_part,
                args=(settings, context, after, upto, str(path), write_part, os.getpid(), sender),
                name=f"tgp-export-part-{index}",
                daemon=True,
            )
            process.start()
            sender.close()  # the helper holds the only sending end: its death is an EOF here
            helpers.append(_Helper(process, results, path))
        count = write_part(store, out, context, None, keys[0], docs_for_topics, on_entry)
        for helper in helpers:
            written, docs = _result(helper)
            out.flush()
            with helper.spool.open("rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
            helper.spool.unlink()
            docs_for_topics.update(docs)
            count += written
            if on_entry:
                for _ in range(written):
                    on_entry()
        return count
    finally:
        for helper in helpers:
            if helper.process.is_alive():
                helper.process.kill()
            helper.process.join()
            helper.results.close()
            helper.spool.unlink(missing_ok=True)


def _result(helper: _Helper) -> tuple[int, dict[str, Any]]:
    """The helper's (entries, cited documents), once it is done; its failure raised here."""
    try:
        outcome = helper.results.recv()
    except EOFError:
        helper.process.join()
        raise TgParserError(
            f"an export helper process ended without finishing its part (exit code {helper.process.exitcode})",
            _RETRY_HINT,
        ) from None
    helper.process.join()
    if outcome[0] == "ok":
        return outcome[1], outcome[2]
    _, kind, message, hint = outcome
    error = kind.__new__(kind)
    TgParserError.__init__(error, message, hint)
    raise error


def _run_part(
    settings: Settings,
    context: EntryContext,
    after: ExportKey,
    upto: ExportKey | None,
    spool: str,
    write_part: PartWriter,
    parent_pid: int,
    results: Connection,
) -> None:
    """A helper process: write the entries after `after` up to `upto` (inclusive; None: to the end)
    into `spool`, send back (entries, cited documents) or the error."""
    from tg_parser.db.connect import open_database

    try:
        db = open_database(settings, check_migrations=False)
        try:
            docs: dict[str, Any] = {}
            with open(spool, "wb", buffering=1 << 20) as out:
                guarded = _OrphanGuard(ExportStore(db), parent_pid, Path(spool))
                count = write_part(guarded, out, context, after, upto, docs, None)
        finally:
            db.close()
        results.send(("ok", count, docs))
    except TgParserError as exc:
        results.send(("error", type(exc), exc.message, exc.hint))
    except Exception as exc:
        results.send(("error", TgParserError, f"an export helper process failed: {exc!r}", _RETRY_HINT))
    finally:
        results.close()


class _OrphanGuard:
    """The store's document batches, ended (spool removed, process gone) once the exporting process is:
    a helper of a killed export does not write its part for nobody."""

    def __init__(self, store: ExportStore, parent_pid: int, spool: Path) -> None:
        self.store, self.parent_pid, self.spool = store, parent_pid, spool

    def document_batches(self, *args: Any, **kwargs: Any) -> Iterator[list[tuple[Any, ...]]]:
        with closing(self.store.document_batches(*args, **kwargs)) as batches:
            for batch in batches:
                if os.getppid() != self.parent_pid:
                    self.spool.unlink(missing_ok=True)
                    os._exit(1)
                yield batch
