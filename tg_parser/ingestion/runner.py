"""Incremental ingestion of channel posts and comments through the Telegram gateway.

Per source, one *attempt* (a row in `ingest_runs`) under the source's lock:

1. reach the channel (stored id + access hash, or resolve the username once and store the identity);
2. re-read the newest posts at or below the cursor (one request) so edits reach the versions journal and
   reply counters are fresh;
3. page forward from `last_post_id`, oldest → newest (the first run starts at the source's `since` date
   and stops at `until`), committing rows and then the cursor every batch (≤ INGEST_BATCH_SIZE);
4. with comments on: page the linked discussion group's own history forward from the source's stream
   cursor (`discussion_cursors`), attaching each reply to its channel post through its thread root (the
   group's forwarded copy of the post: `fwd_from.channel_post`, remembered in `discussion_threads`, or
   looked up 100 roots a request); chatter, service messages and the copies themselves are skipped and
   counted. A new stream starts after the group's newest message (its floor); the threads of posts seen
   this run that may hold comments below the floor are read thread by thread once, up to it (their own
   cursors in `comment_cursors`). A group whose history cannot be read (a private group this account has
   not joined) is read thread by thread for the posts seen this run, and the history tried again after a
   day. A post without a thread (MsgIdInvalidError) is marked and skipped from then on, a channel without
   a discussion group is marked `comments_unavailable`.

The cursor never gets ahead of stored rows: a batch's rows are committed first (raw store), the cursor
after them (ingestion store). On PostgreSQL both go in one transaction; on SQLite the stores are separate
files whose joint commit is not atomic across files in WAL mode, so the two commits are sequential. A
crash between them leaves the cursor *behind*, the next run re-reads that batch and `store_batch` finds
it unchanged: the same set of rows, no duplicates. Every batch's transaction checks, before it commits,
that the run still holds its source lock and the Telegram session lock (a PostgreSQL lock is lost when the
connection holding it breaks): a run that lost one stops with `LockLost` (the source fails, exit 1) and
the batch rolls back, so a second run that took the lock meanwhile never writes alongside it.

Failures are classified by exception type (ingestion/errors.py): short FloodWaits are slept (through the
injectable `sleep`) after committing what was fetched, long ones set `rate_limit_until` and end the
attempt — the next run resumes from the committed cursor; retryable errors back off with jitter;
permanent ones put the source in `error` status. Three exceptions to the last rule:

* CHANNEL_INVALID on a stored access hash (hashes belong to one account; another login makes them
  stale) re-resolves the source's username once and stores the new identity; a source without a
  username goes to `error` with the command that fixes it;
* a permanent error while reading a comment thread marks that thread unavailable, or — when the
  discussion group itself is out of reach (banned, private, unlinked) — the source's comments; the posts
  are never parked for it;
* a lost connection that the gateway could not re-establish (`ConnectionLost`) ends the attempt and the
  run as "unavailable" without charging the source a failure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from loguru import logger
from telethon import errors as tg_errors
from telethon.tl import types

from tg_parser.backoff import Backoff
from tg_parser.db.base import Database
from tg_parser.db.locks import HeldLock, LockLost
from tg_parser.domain.channels import ChannelRef
from tg_parser.domain.models import DiscussionCursor, RawMessage, Source
from tg_parser.ingestion import convert
from tg_parser.ingestion.client import PAGE_SIZE, ChannelInfo, Page, TelegramGateway
from tg_parser.ingestion.errors import (
    ChannelNotFound,
    ErrorKind,
    RateLimited,
    SourceLocked,
    classify,
    describe,
)
from tg_parser.ingestion.locks import source_lock
from tg_parser.stores import IngestionStore, RawStore
from tg_parser.stores.raw import BatchResult

T = TypeVar("T")

OutcomeStatus = Literal["ok", "failed", "rate_limited", "locked", "skipped", "unavailable"]

RECHECK_POSTS = PAGE_SIZE  # newest stored posts re-read every run (one request)
MAX_FLOOD_SLEEPS = 10  # short FloodWaits slept per attempt before the source is parked instead
HISTORY_RETRY = timedelta(days=1)  # a discussion history found unreadable is tried again after this


@dataclass
class RunCounts:
    posts_fetched: int = 0
    posts_inserted: int = 0
    posts_rechecked: int = 0
    comments_fetched: int = 0
    comments_inserted: int = 0
    versions_recorded: int = 0
    threads_read: int = 0
    threads_unavailable: int = 0
    discussion_read: int = 0  # messages read from the discussion group's history
    discussion_skipped: int = 0  # of those, not comments on a channel post (chatter, service, post copies)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class SourceOutcome:
    source_id: str
    status: OutcomeStatus
    counts: RunCounts = field(default_factory=RunCounts)
    message: str = ""
    retry_at: datetime | None = None
    auth_failed: bool = False
    session_lock_lost: bool = False

    @property
    def stops_run(self) -> bool:
        """Every later source would fail the same way: the session is dead, Telegram is unreachable, or
        this run lost the Telegram session lock (another run may be using the session)."""
        return self.auth_failed or self.session_lock_lost or self.status == "unavailable"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "status": self.status,
            "message": self.message,
            "retry_at": self.retry_at,
            **self.counts.as_dict(),
        }


@dataclass
class Policy:
    """Knobs of one ingestion run; tests inject `sleep`, `rng` and `clock` so nothing really waits."""

    batch_size: int = 500
    flood_sleep_threshold: int = 60
    backoff: Backoff = field(default_factory=Backoff)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    recheck_posts: int = RECHECK_POSTS


class Ingestor:
    """Runs attempts for sources, one at a time, over one gateway and one database."""

    def __init__(
        self,
        db: Database,
        gateway: TelegramGateway,
        *,
        run_id: str,
        policy: Policy | None = None,
        sqlite_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.run_id = run_id
        self.policy = policy or Policy()
        self.sqlite_dir = sqlite_dir
        self.sources = IngestionStore(db)
        self.raw = RawStore(db)

    def run(self, sources: Sequence[Source], *, limit: int | None = None) -> list[SourceOutcome]:
        """Attempt each source in turn; an authorization failure stops the run (all would fail alike)."""
        outcomes: list[SourceOutcome] = []
        for source in sources:
            outcome = self.run_source(source, limit=limit)
            outcomes.append(outcome)
            logger.debug(  # the CLI prints the outcome; the log keeps the details
                "ingest {source}: {status} {counts}{message}",
                source=outcome.source_id,
                status=outcome.status,
                counts=outcome.counts.as_dict(),
                message=f" — {outcome.message}" if outcome.message else "",
            )
            if outcome.stops_run:
                break
        return outcomes

    def run_source(self, source: Source, *, limit: int | None = None) -> SourceOutcome:
        now = self.policy.clock()
        if source.status == "paused":
            return SourceOutcome(source.source_id, "skipped", message="paused")
        if source.kind == "export":
            return SourceOutcome(
                source.source_id, "skipped", message="an export source (fed by 'ingest --from-export')"
            )
        if source.rate_limit_until is not None and source.rate_limit_until > now:
            return SourceOutcome(
                source.source_id,
                "rate_limited",
                message=f"rate-limited by Telegram until {source.rate_limit_until:%Y-%m-%d %H:%M:%S}Z",
                retry_at=source.rate_limit_until,
            )
        try:
            with source_lock(self.db, source.source_id) as lock:
                return self._attempt(source, limit, lock)
        except SourceLocked as exc:
            return SourceOutcome(source.source_id, "locked", message=exc.one_line())

    # --- one attempt -----------------------------------------------------------------------------

    def _attempt(self, source: Source, limit: int | None, lock: HeldLock) -> SourceOutcome:
        # Re-read under the lock: a run that finished since the sources were listed may have moved the cursor.
        fresh = self.sources.get_source(source.source_id) or source
        run_pk = self.sources.start_run(fresh.source_id, self.run_id)
        self.sources.record_attempt(fresh.source_id)
        attempt = _Attempt(self, fresh, lock)
        try:
            attempt.execute(limit)
        except RateLimited as exc:
            cause = exc.__cause__ or exc
            until = self.policy.clock() + timedelta(seconds=exc.seconds)
            self.sources.record_rate_limit(fresh.source_id, until, describe(cause))
            self.sources.finish_run(run_pk, success=False, counts=attempt.counts.as_dict(), error=cause)
            return SourceOutcome(
                fresh.source_id,
                "rate_limited",
                attempt.counts,
                message=f"Telegram asked to wait {exc.seconds}s; skipped until {until:%Y-%m-%d %H:%M:%S}Z "
                "(the next run resumes from the stored cursor)",
                retry_at=until,
            )
        except Exception as exc:
            kind = classify(exc).kind
            if kind is ErrorKind.UNAVAILABLE:
                # Telegram failed, not the source: journal the attempt, charge nothing, stop the run.
                self.sources.finish_run(run_pk, success=False, counts=attempt.counts.as_dict(), error=exc)
                return SourceOutcome(
                    fresh.source_id,
                    "unavailable",
                    attempt.counts,
                    message=describe(exc),
                )
            permanent = kind in (ErrorKind.PERMANENT, ErrorKind.AUTH)
            self.sources.record_failure(fresh.source_id, describe(exc), permanent=permanent)
            self.sources.finish_run(run_pk, success=False, counts=attempt.counts.as_dict(), error=exc)
            what = "permanent error, source set to 'error'" if permanent else "will retry on the next run"
            return SourceOutcome(
                fresh.source_id,
                "failed",
                attempt.counts,
                message=f"{describe(exc)} ({what})",
                auth_failed=kind is ErrorKind.AUTH,
                session_lock_lost=isinstance(exc, LockLost) and exc.name != lock.name,
            )
        self.sources.record_success(fresh.source_id)
        self.sources.finish_run(run_pk, success=True, counts=attempt.counts.as_dict())
        return SourceOutcome(fresh.source_id, "ok", attempt.counts, message="; ".join(attempt.notes))


class _Attempt:
    """The state of one attempt on one source: where paging stands and what is waiting to be committed."""

    def __init__(self, ingestor: Ingestor, source: Source, lock: HeldLock) -> None:
        self.ingestor = ingestor
        self.lock = lock
        self.db = ingestor.db
        self.gateway = ingestor.gateway
        self.policy = ingestor.policy
        self.source = source
        self.counts = RunCounts()
        self.channel_id: int = source.channel_id or 0
        self.flood_sleeps = 0
        self.failures = 0  # consecutive retryable failures of the current request
        # post id → its MessageReplies, for posts seen this run (new or re-read); None for a thread an
        # earlier, interrupted attempt may have left unread
        self.threads: dict[int, Any] = {}
        self.thread_dates: dict[int, datetime | None] = {}
        # discussion-group thread root id → (channel post id or None for chatter, post date), this run
        self.roots: dict[int, tuple[int | None, datetime | None]] = {}
        self._new_roots: dict[int, tuple[int | None, datetime | None]] = {}  # not stored yet
        self.re_resolved = False
        self.notes: list[str] = []  # shown with an "ok" outcome (identity refreshed, comments unavailable)

    # --- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        # PostgreSQL: rows and cursor in one transaction. SQLite: two sequential commits, rows first (the
        # stores are separate files and a transaction spanning attached WAL files is not atomic as a set).
        # Before the commit, the locks this run holds are checked (one round trip each on PostgreSQL, once
        # a batch; SQLite's file locks cannot be lost): a run that lost one raises LockLost, and the
        # batch rolls back.
        with self.db.transaction() if self.db.atomic_across_stores else nullcontext():
            yield
            self.gateway.check_locks()  # first: a lost session lock stops the whole run
            self.lock.check()

    def _retry_or_raise(self, error: BaseException) -> None:
        """Decide what to do about a failed request: return to retry it, or raise to end the attempt."""
        classified = classify(error)
        if classified.kind is ErrorKind.RATE_LIMIT:
            if (
                classified.seconds <= self.policy.flood_sleep_threshold
                and self.flood_sleeps < MAX_FLOOD_SLEEPS
            ):
                self.flood_sleeps += 1
                logger.info(
                    "FloodWait {seconds}s on {source}: sleeping, then resuming from the cursor",
                    seconds=classified.seconds,
                    source=self.source.source_id,
                )
                self.policy.sleep(classified.seconds + 1)
                return
            raise RateLimited(classified.seconds) from error
        if classified.kind is ErrorKind.RETRYABLE and self.failures + 1 < self.policy.backoff.max_attempts:
            delay = self.policy.backoff.delay(self.failures, self.policy.rng)
            self.failures += 1
            logger.warning(
                "{error} on {source}; retry {n} in {delay:.1f}s",
                error=describe(error),
                source=self.source.source_id,
                n=self.failures,
                delay=delay,
            )
            self.policy.sleep(delay)
            return
        raise error

    def _call(self, fn: Callable[[], T]) -> T:
        """A single request (not a page) under the retry policy."""
        while True:
            try:
                result = fn()
            except Exception as exc:
                self._retry_or_raise(exc)
                continue
            self.failures = 0
            return result

    def _page(self, fn: Callable[[], Page]) -> Page:
        try:
            page = fn()
        except Exception as exc:  # the gateway failed before paging (a lost connection): same path
            page = Page(error=exc)
        if page.error is None:
            self.failures = 0
        return page

    # --- the attempt -----------------------------------------------------------------------------

    def execute(self, limit: int | None) -> None:
        peer = self._peer()
        try:
            self._steps(peer, limit)
        except tg_errors.ChannelInvalidError as exc:
            if self.re_resolved or not self.source.access_hash:
                raise
            peer = self._re_resolve(exc)
            self._steps(peer, limit)

    def _steps(self, peer: Any, limit: int | None) -> None:
        self._recheck(peer)
        self._posts(peer, limit)
        if self.source.include_comments:
            self._threads_left_unread()
            self._comments(peer)

    def _re_resolve(self, error: BaseException) -> Any:
        """CHANNEL_INVALID on the stored access hash: reach the channel again by its username, once."""
        source = self.source
        if not source.username:
            raise ChannelNotFound(
                f"the stored access hash of channel {source.channel_id} is no longer valid "
                f"({describe(error)}; access hashes belong to one account) and source {source.source_id!r} "
                "has no username to resolve it again",
                f"run 'tg-parser sources add https://t.me/<username> --id {source.source_id}' (or @username), "
                f"then 'tg-parser sources resume {source.source_id}'",
            ) from error
        self.re_resolved = True
        logger.info(
            "{source}: stored access hash rejected ({error}); resolving @{username} again",
            source=source.source_id,
            error=describe(error),
            username=source.username,
        )
        # Resume from what is committed, with the identity Telegram gives for the username now.
        self.source = self.ingestor.sources.get_source(source.source_id) or source
        self.source = self.source.model_copy(update={"access_hash": None})
        peer = self._peer()
        self.notes.append(f"access hash refreshed through @{source.username}")
        return peer

    def _peer(self) -> Any:
        source = self.source
        if source.channel_id and source.access_hash is not None:
            return self.gateway.input_peer(source.channel_id, source.access_hash)
        if not source.username and not source.channel_id:
            raise ChannelNotFound(f"source {source.source_id!r} names no channel", "re-add it with @username")
        info = self._call(
            lambda: self.gateway.resolve(ChannelRef(channel_id=source.channel_id, username=source.username))
        )
        if source.channel_id and info.channel_id != source.channel_id:
            raise ChannelNotFound(
                f"@{source.username} now belongs to channel {info.channel_id}, not {source.channel_id}",
                "the username moved to another channel; add the new one as a separate source",
            )
        self.ingestor.sources.update_identity(
            source.source_id,
            channel_id=info.channel_id,
            username=info.username,
            title=info.title,
            access_hash=info.access_hash,
        )
        self.channel_id = info.channel_id
        if info.access_hash is None:
            raise ChannelNotFound(
                f"Telegram gave no access hash for {source.source_id!r}", "join the channel"
            )
        return self.gateway.input_peer(info.channel_id, info.access_hash)

    def _in_window(self, date: datetime | None) -> bool:
        if date is None:
            return True
        if self.source.since_date is not None and date < self.source.since_date:
            return False
        return not (self.source.until_date is not None and date > self.source.until_date)

    def _note_thread(self, message: Any) -> None:
        if convert.comments_channel(getattr(message, "replies", None)) and self._in_window(message.date):
            self.threads[message.id] = message.replies
            self.thread_dates[message.id] = message.date

    def _threads_left_unread(self) -> None:
        """After attempts that did not finish (killed, crashed, rate-limited, Telegram gone), add the
        threads they may have left unread: the post cursor is committed before the comments are read, so
        threads of posts those attempts stored or re-read are otherwise only seen again while the posts
        are among the newest re-read ones (and a cursor an attempt moved shifts that window). Possibly
        unread, since the first of those attempts began: a stored post announcing comments without a
        thread cursor, a thread whose cursor moved (the attempt may have stopped inside it), a post whose
        counters changed (re-read with new replies). Only after such attempts, so a run after a successful
        one reads nothing more; each thread costs one request when nothing is new."""
        since = None
        for run in self.ingestor.sources.recent_runs(self.source.source_id)[1:]:  # [0] is this attempt
            if run.success:
                break
            since = run.started_at
        if since is None:
            return
        cursors = {
            c.thread_id: c.updated_at for c in self.ingestor.sources.comment_cursors(self.source.source_id)
        }
        for post_id, date, counted in self.ingestor.raw.posts_with_replies(self.channel_id):
            moved = cursors.get(post_id)
            changed = moved is None or moved >= since or (counted is not None and counted >= since)
            if changed and self._in_window(date):
                self.threads.setdefault(post_id, None)  # no MessageReplies at hand: read from the cursor
                self.thread_dates.setdefault(post_id, date)

    # --- posts -----------------------------------------------------------------------------------

    def _recheck(self, peer: Any) -> None:
        """Re-read the newest stored posts: edits go to the journal, reply counters are refreshed."""
        cursor = self.source.last_post_id
        if cursor <= 0 or self.policy.recheck_posts <= 0:
            return
        while True:
            page = self._page(
                lambda: self.gateway.history_recent(peer, up_to_id=cursor, limit=self.policy.recheck_posts)
            )
            if page.error is not None:
                self._retry_or_raise(page.error)
                continue
            break
        records = []
        for message in page.messages:
            if convert.is_content(message) and self._in_window(message.date):
                records.append(self._post(message))
                self._note_thread(message)
        if records:
            result = self.ingestor.raw.store_batch(records)
            self.counts.posts_rechecked += len(records)
            self.counts.versions_recorded += result.versions
            self.counts.posts_inserted += result.inserted  # a post the cursor passed but never stored

    def _post(self, message: Any) -> RawMessage:
        return convert.post_record(message, channel_id=self.channel_id, source_id=self.source.source_id)

    def _posts(self, peer: Any, limit: int | None) -> None:
        position = self.source.last_post_id
        since = self.source.since_date if position == 0 else None
        until = self.source.until_date
        pending: list[RawMessage] = []
        committed = position
        page_size = min(PAGE_SIZE, self.policy.batch_size)
        done = False
        while not done:
            page = self._page(
                lambda p=position: self.gateway.history_after(peer, after_id=p, since=since, limit=page_size)
            )
            for message in page.messages:
                if message.id <= position:
                    continue  # defensive: never go backwards
                if until is not None and message.date is not None and message.date > until:
                    done = True  # past the window: stop, and leave the cursor before this message
                    break
                position = message.id
                if convert.is_content(message) and self._in_window(message.date):
                    pending.append(self._post(message))
                    self._note_thread(message)
                    self.counts.posts_fetched += 1
                    if limit is not None and self.counts.posts_fetched >= limit:
                        done = True
                        break
            # Telethon keeps asking until a page is full or Telegram answers empty: a short page is the end.
            exhausted = page.error is None and len(page.messages) < page_size
            if (
                page.error is not None
                or done
                or exhausted
                or len(pending) + page_size > self.policy.batch_size
            ):
                self._commit_posts(pending, position, committed)
                pending, committed = [], position
            if page.error is not None:
                self._retry_or_raise(page.error)
                continue
            if exhausted:
                break

    def _commit_posts(self, records: list[RawMessage], position: int, committed: int) -> None:
        for chunk, cursor in _chunks(records, position, self.policy.batch_size):
            if not chunk and cursor <= committed:
                continue
            with self._atomic():
                result = self.ingestor.raw.store_batch(chunk) if chunk else BatchResult()
                self.ingestor.sources.advance_post_cursor(self.source.source_id, cursor)
            self._count(result, comments=False)

    def _count(self, result: BatchResult, *, comments: bool) -> None:
        if comments:
            self.counts.comments_inserted += result.inserted
        else:
            self.counts.posts_inserted += result.inserted
        self.counts.versions_recorded += result.versions

    # --- comments --------------------------------------------------------------------------------

    def _comments(self, peer: Any) -> None:
        """Comments through the discussion group's history (one stream from one cursor per source), with
        per-thread reads where the stream cannot reach: the first backfill of a thread older than the
        stream's floor, and groups whose history this account cannot read."""
        sources = self.ingestor.sources
        source_id = self.source.source_id
        if self.source.comments_unavailable and not self.threads:
            return  # no discussion group (or out of reach), and no post seen this run announces a thread
        cursor = sources.discussion_cursor(source_id)
        if (
            cursor is None
            or cursor.chat_id is None
            or self.source.comments_unavailable
            or self._relinked(cursor.chat_id)
        ):
            info = self._call(lambda: self.gateway.discussion_group(peer))
            if info is None:
                if not self.source.comments_unavailable:
                    sources.set_comments_unavailable(source_id, True)
                    self.notes.append("comments unavailable: the channel has no discussion group")
                return
            if self.source.comments_unavailable:
                # Posts carry comment threads again: the channel has (re)linked a discussion group.
                sources.set_comments_unavailable(source_id, False)
            cursor = self._open_stream(info, cursor)
        elif cursor.history_error is not None and self._history_retry_due(cursor):
            cursor = self._open_stream(ChannelInfo(cursor.chat_id, cursor.access_hash, None, None), cursor)
        if cursor.history_error is None:
            try:
                self._stream(cursor)
            except _HistoryUnreadable as unreadable:
                if not isinstance(unreadable.error, tg_errors.ChannelInvalidError):
                    self._history_unreadable(unreadable.error, cursor.chat_id, cursor.access_hash)
                    self._threads(peer, floor=0)
                    return
                # The stored access hash of the group went stale (another login): ask for it again, once.
                info = self._call(lambda: self.gateway.discussion_group(peer))
                cursor = self._open_stream(info, cursor) if info is not None else cursor
                if info is None or cursor.history_error is not None:
                    self._threads(peer, floor=0)
                    return
                try:
                    self._stream(cursor)
                except _HistoryUnreadable as again:
                    self._history_unreadable(again.error, cursor.chat_id, cursor.access_hash)
                    self._threads(peer, floor=0)
                    return
            self._threads(peer, floor=cursor.floor_id)
            return
        self._threads(peer, floor=0)  # the history cannot be read: thread by thread, as posts show them

    def _relinked(self, chat_id: int) -> bool:
        """Do posts seen this run name another discussion group than the one the stream reads?"""
        return any(
            getattr(replies, "channel_id", None) not in (None, chat_id) for replies in self.threads.values()
        )

    def _history_retry_due(self, cursor: DiscussionCursor) -> bool:
        checked = cursor.checked_at  # stamped by the store's clock: compared with the same clock
        return checked is None or self.ingestor.sources.now() - checked >= HISTORY_RETRY

    def _open_stream(self, info: ChannelInfo, cursor: DiscussionCursor | None) -> DiscussionCursor:
        """Point the stream at the group. A new stream starts after the group's newest message (one
        request): only the threads of posts older than that are read one by one, once."""
        sources = self.ingestor.sources
        source_id = self.source.source_id
        if info.access_hash is None:
            self._history_unreadable("the discussion group is not accessible", info.channel_id, None)
        else:
            restart = (
                cursor is None
                or cursor.last_message_id == 0
                or (cursor.chat_id is not None and cursor.chat_id != info.channel_id)
            )
            group = self.gateway.input_peer(info.channel_id, info.access_hash)
            try:
                top = self._call(lambda: self.gateway.newest_id(group)) if restart else 0
            except _GROUP_UNREACHABLE as exc:
                self._history_unreadable(exc, info.channel_id, info.access_hash)
            else:
                sources.open_discussion(
                    source_id,
                    chat_id=info.channel_id,
                    access_hash=info.access_hash,
                    top_id=top,
                    restart=restart,
                )
        fresh = sources.discussion_cursor(source_id)
        assert fresh is not None
        return fresh

    def _history_unreadable(
        self, error: BaseException | str, chat_id: int | None, access_hash: int | None
    ) -> None:
        reason = error if isinstance(error, str) else describe(error)
        self.ingestor.sources.mark_discussion_unreadable(
            self.source.source_id, reason, chat_id=chat_id, access_hash=access_hash
        )
        self.notes.append(f"discussion history unreadable ({reason}): comments read thread by thread")
        logger.info(
            "{source}: the discussion group's history cannot be read ({reason}); reading comments thread "
            "by thread",
            source=self.source.source_id,
            reason=reason,
        )

    # --- the discussion group's history ------------------------------------------------------------

    def _stream(self, cursor: DiscussionCursor) -> None:
        """Page the group's history forward from the cursor, committing comments, then the cursor."""
        assert cursor.chat_id is not None and cursor.access_hash is not None
        group = self.gateway.input_peer(cursor.chat_id, cursor.access_hash)
        position = committed = cursor.last_message_id
        pending: list[Any] = []
        page_size = min(PAGE_SIZE, self.policy.batch_size)
        while True:
            page = self._page(
                lambda p=position: self.gateway.history_after(group, after_id=p, limit=page_size)
            )
            for message in page.messages:
                if message.id <= position:
                    continue
                position = message.id
                self.counts.discussion_read += 1
                if self._classify(message):
                    pending.append(message)
                else:
                    self.counts.discussion_skipped += 1
            exhausted = page.error is None and len(page.messages) < page_size
            if page.error is not None or exhausted or len(pending) + page_size > self.policy.batch_size:
                if pending or position > committed:
                    self._commit_stream(group, pending, position, committed, cursor.floor_id)
                pending, committed = [], position
            if page.error is not None:
                if isinstance(page.error, _GROUP_UNREACHABLE):
                    raise _HistoryUnreadable(page.error)  # what was read before is committed above
                self._retry_or_raise(page.error)
                continue
            if exhausted:
                return

    def _classify(self, message: Any) -> bool:
        """True for a candidate comment (a reply in the group); a forwarded copy of one of the channel's
        posts is remembered as a thread root. Everything else is skipped."""
        if not convert.is_content(message):
            return False  # service messages (joins, pins...) and empty slots
        copy = self._post_copy(message)
        if copy is not None:
            self.roots[message.id] = self._new_roots[message.id] = copy
            return False
        reply = message.reply_to
        return isinstance(reply, types.MessageReplyHeader) and bool(reply.reply_to_msg_id)

    def _post_copy(self, message: Any) -> tuple[int, datetime | None] | None:
        """(post id, post date) when the message is the group's forwarded copy of one of this channel's
        posts (a thread root), else None."""
        forward = getattr(message, "fwd_from", None)
        if (
            isinstance(forward, types.MessageFwdHeader)
            and forward.channel_post
            and isinstance(forward.from_id, types.PeerChannel)
            and forward.from_id.channel_id == self.channel_id
        ):
            return forward.channel_post, forward.date
        return None

    def _resolve_roots(self, group: Any, messages: list[Any]) -> None:
        """Learn which channel post each thread root stands for: this run's cache, the store, and for
        the roots still unknown one request per 100 (the root is the post's forwarded copy)."""
        wanted = {_root(m) for m in messages} - self.roots.keys()
        if not wanted:
            return
        known = self.ingestor.sources.discussion_threads(self.source.source_id, sorted(wanted))
        self.roots.update(known)
        unknown = sorted(wanted - known.keys())
        for start in range(0, len(unknown), PAGE_SIZE):
            ids = unknown[start : start + PAGE_SIZE]
            try:
                found = self._call(lambda ids=ids: self.gateway.messages_by_id(group, ids))
            except _GROUP_UNREACHABLE as exc:
                raise _HistoryUnreadable(exc) from exc
            for root in ids:
                self._new_roots[root] = (None, None)  # deleted, or the group's own chatter
            for message in found:
                copy = self._post_copy(message)
                if copy is not None:
                    self._new_roots[message.id] = copy
            self.roots.update({root: self._new_roots[root] for root in ids})

    def _commit_stream(
        self, group: Any, messages: list[Any], position: int, committed: int, floor: int
    ) -> None:
        self._resolve_roots(group, messages)
        records: list[RawMessage] = []
        for message in messages:
            post_id, post_date = self.roots.get(_root(message), (None, None))
            if post_id is None or not self._in_window(post_date):
                self.counts.discussion_skipped += 1  # a reply in the group's chatter, or outside the window
                continue
            records.append(
                convert.comment_record(
                    message, channel_id=self.channel_id, post_id=post_id, source_id=self.source.source_id
                )
            )
            self.counts.comments_fetched += 1
        self._flush_roots(floor)
        sources = self.ingestor.sources
        source_id = self.source.source_id
        for chunk, cursor in _chunks(records, position, self.policy.batch_size):
            if not chunk and cursor <= committed:
                continue
            with self._atomic():
                result = self.ingestor.raw.store_batch(chunk) if chunk else BatchResult()
                sources.advance_discussion_cursor(source_id, cursor)
            self._count(result, comments=True)

    # --- thread by thread --------------------------------------------------------------------------

    def _threads(self, peer: Any, *, floor: int) -> None:
        """Read the threads of posts seen this run that the stream does not cover (their cursor is below
        the stream's floor; floor 0 when there is no stream) and that announce comments past it."""
        sources = self.ingestor.sources
        if not self.threads:
            return
        skipped = sources.unavailable_threads(self.source.source_id)
        for post_id in sorted(self.threads):
            if post_id in skipped:
                continue
            replies = self.threads[post_id]
            cursor = sources.comment_cursor(self.source.source_id, post_id)
            if floor > 0 and cursor >= floor:
                continue  # the stream covers this thread
            if replies is not None and replies.max_id is not None and replies.max_id <= cursor:
                # Nothing new in this thread since the last run. Below the floor, every comment is stored
                # (up to the cursor, the newest there is): the cursor moves to the floor as a read to the
                # end would (an attempt killed between the last rows and that move left it behind).
                if floor > cursor:
                    sources.advance_comment_cursor(self.source.source_id, post_id, floor)
                continue
            try:
                self._thread(peer, post_id, cursor, floor)
            except _DiscussionUnreachable as unreachable:
                # The group itself is out of reach: the comments are, the posts are not. Later runs try
                # once more (one request) while posts still announce threads, so an unban heals it.
                sources.set_comments_unavailable(self.source.source_id, True)
                self.notes.append(
                    f"comments unavailable: the discussion group refused reading ({describe(unreachable.error)})"
                )
                logger.warning(
                    "{source}: discussion group unreachable ({error}); comments marked unavailable, "
                    "posts kept",
                    source=self.source.source_id,
                    error=describe(unreachable.error),
                )
                return

    def _thread(self, peer: Any, post_id: int, cursor: int, floor: int = 0) -> None:
        position = committed = cursor
        pending: list[RawMessage] = []
        page_size = min(PAGE_SIZE, self.policy.batch_size)
        self.counts.threads_read += 1
        while True:
            page = self._page(
                lambda p=position: self.gateway.replies_after(
                    peer, post_id=post_id, after_id=p, limit=page_size, up_to_id=floor or None
                )
            )
            for message in page.messages:
                if message.id <= position:
                    continue
                position = message.id
                if convert.is_content(message):
                    if (
                        isinstance(message.reply_to, types.MessageReplyHeader)
                        and _root(message) not in self.roots
                    ):
                        # what the stream needs to attach later comments on this thread to its post
                        self.roots[_root(message)] = self._new_roots[_root(message)] = (
                            post_id,
                            self.thread_dates.get(post_id),
                        )
                    pending.append(
                        convert.comment_record(
                            message,
                            channel_id=self.channel_id,
                            post_id=post_id,
                            source_id=self.source.source_id,
                        )
                    )
                    self.counts.comments_fetched += 1
            exhausted = page.error is None and len(page.messages) < page_size
            if page.error is not None or exhausted or len(pending) + page_size > self.policy.batch_size:
                self._commit_comments(post_id, pending, position, committed, floor)
                pending, committed = [], position
            if page.error is not None:
                kind = classify(page.error).kind
                if isinstance(page.error, _GROUP_UNREACHABLE):
                    raise _DiscussionUnreachable(page.error)
                if kind in (ErrorKind.NO_THREAD, ErrorKind.PERMANENT):
                    # This thread cannot be read (no thread, or a permanent refusal of this one): mark it
                    # and go on with the others; the source and its posts are fine.
                    self.ingestor.sources.mark_thread_unavailable(
                        self.source.source_id, post_id, describe(page.error)
                    )
                    self.counts.threads_unavailable += 1
                    return
                self._retry_or_raise(page.error)
                continue
            if exhausted:
                if floor > position:
                    # Read to the end after the floor was fixed: every comment below it is stored.
                    self.ingestor.sources.advance_comment_cursor(self.source.source_id, post_id, floor)
                return

    def _commit_comments(
        self, post_id: int, records: list[RawMessage], position: int, committed: int, floor: int
    ) -> None:
        self._flush_roots(floor)
        for chunk, cursor in _chunks(records, position, self.policy.batch_size):
            if not chunk and cursor <= committed:
                continue
            with self._atomic():
                result = self.ingestor.raw.store_batch(chunk) if chunk else BatchResult()
                self.ingestor.sources.advance_comment_cursor(self.source.source_id, post_id, cursor)
            self._count(result, comments=True)

    def _flush_roots(self, floor: int) -> None:
        """Store what the thread roots learnt since the last commit stand for. A thread whose root is
        above the stream's floor holds nothing below it: its cursor moves to the floor (the stream alone
        covers it), so it is never read thread by thread."""
        if not self._new_roots:
            return
        sources = self.ingestor.sources
        source_id = self.source.source_id
        with self._atomic():
            sources.remember_discussion_threads(source_id, self._new_roots)
            for root, (post_id, _date) in self._new_roots.items():
                if post_id is not None and floor > 0 and root > floor:
                    sources.advance_comment_cursor(source_id, post_id, floor)
        self._new_roots = {}


# Permanent errors on a thread read that mean the discussion group as a whole is out of reach.
_GROUP_UNREACHABLE: tuple[type[BaseException], ...] = (
    tg_errors.ChannelPrivateError,
    tg_errors.ChannelBannedError,
    tg_errors.ChatForbiddenError,
    tg_errors.ChannelPublicGroupNaError,
    tg_errors.ChannelInvalidError,
)


class _HistoryUnreadable(Exception):
    """The discussion group's history refused reading: comments are read thread by thread instead."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(describe(error))
        self.error = error


def _root(message: Any) -> int:
    """The thread root (the post's copy in the group) a reply hangs under: the top of a reply to a reply."""
    reply = message.reply_to
    return int(reply.reply_to_top_id or reply.reply_to_msg_id)


class _DiscussionUnreachable(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(describe(error))
        self.error = error


def _chunks(records: list[RawMessage], position: int, size: int) -> Iterator[tuple[list[RawMessage], int]]:
    """Split pending rows into batches of at most `size`, each with the cursor it covers.

    Every batch but the last covers up to its own highest message id; the last covers `position`, which
    may be past its rows (trailing service messages or skipped ones need no row to be passed).
    """
    if not records:
        yield [], position
        return
    for start in range(0, len(records), size):
        chunk = records[start : start + size]
        last = start + size >= len(records)
        yield chunk, position if last else max(r.message_id for r in chunk)
