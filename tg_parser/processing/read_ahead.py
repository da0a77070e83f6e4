"""Reading the next claims' pages ahead, from a few database sessions at once.

A queued message costs the claim and the document write one B-tree descent per big index: the raw
row's primary key, the documents' primary key and their (channel, date) index. A server session reads
the leaf a descent reaches only then, one read at a time, so when the queue's messages are spread over a
big archive whose pages are not in memory, each of those leaves is a random read from storage and the
coordinator's one session waits for them in turn (at 10M messages about 3.5 reads a message, which made
a run three to five times slower than in an empty database). While the coordinator claims and processes,
a few threads, each with its own pooled connection, touch the same pages for the queue's next keys (read
without locking), a small slice per statement: their reads overlap, and the claim and the write find the
pages in shared buffers.

It starts with FIRST_SESSIONS sessions and opens the others once a slice shows slow reads. Where the
claim would not wait long for its reads anyway (the pages are cached, as in a small or a warm
database; or few of them come from storage, as for a queue of each channel's newest messages, which
share their leaves; or storage answers fast) reading ahead only costs CPU and smaller claims, so it stops
by itself after `sessions` slices in a row that did not take long: the time the server spent on a slice
(the statement reports it), not the time the thread waited, which the other threads' work lengthens (the
GIL, the pool).
Nothing depends on it: a slice read for a message another worker takes costs a few probes, and an error
stops the reading ahead (logged at debug level), never the run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence

from loguru import logger

from tg_parser.stores.base import MessageKey
from tg_parser.stores.processing import ProcessingStore

# Keys per statement: small enough that the sessions go through a window together, in the claims'
# order, ahead of a claim that reads the same keys one at a time; big enough that the statements' own
# cost stays small (measured at 10M from storage, 1,000 messages: 0.19-0.21 s a run with 32, 0.20-0.26
# with 16, 0.27-0.29 with 8).
SLICE = 32
# A slice on which the server spent less than this per key is not worth reading ahead: a key's probes
# cost 5-15 µs from shared buffers or the OS page cache. Measured on a VM disk (8 sessions at once, from
# storage): 400-1,200 µs a key for a queue spread over 10M messages (three or four reads each), 10-390 µs
# for each channel's newest messages (most of their leaves shared), where reading ahead made a run of
# 1,000 slower (0.20 against 0.18 s: its CPU and smaller claims cost more than the reads it overlapped).
SLOW_SECONDS_PER_KEY = 0.0003

# Sessions started with the first slices; the others once a slice shows slow reads (each is a new
# connection: opening eight costs an in-memory run of 1,000 messages about 30 ms of its 130).
FIRST_SESSIONS = 2


class ReadAhead:
    """Up to `sessions` threads touching the pages of the keys given to `ahead`, a slice per statement,
    in order. `active` turns False once reading ahead turns out not worth it, on an error, or on close."""

    def __init__(self, store: ProcessingStore, sessions: int) -> None:
        if sessions < 1:
            raise ValueError("read-ahead needs at least one session")
        self.store = store
        self.sessions = sessions
        self.slices_read = 0
        self._slices: queue.SimpleQueue[Sequence[MessageKey] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._fast_in_a_row = 0
        self._passed: MessageKey | None = None  # the claims' position: slices behind it are dropped unread
        self._threads: list[threading.Thread] = []
        self._start_threads(min(sessions, FIRST_SESSIONS))  # the others once a slice shows slow reads

    @property
    def active(self) -> bool:
        return not self._stopped.is_set()

    def wait_stopped(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds for the reading ahead to stop; whether it has."""
        return self._stopped.wait(timeout)

    def passed(self, key: MessageKey) -> None:
        """The claims have passed `key`: a slice whose keys are all behind it is dropped, not read (when
        the sessions fall behind, they catch up instead of reading pages the claims have read)."""
        self._passed = key

    def stop(self, reason: str) -> None:
        """Stop reading ahead (the slices queued are dropped); the threads end at `close`."""
        if not self._stopped.is_set():
            self._stopped.set()
            logger.debug("reading ahead stopped: {}", reason)

    def ahead(self, keys: Sequence[MessageKey]) -> None:
        """Read these keys' pages, a slice at a time, in this order."""
        if self._stopped.is_set():
            return
        for start in range(0, len(keys), SLICE):
            self._slices.put(keys[start : start + SLICE])

    def close(self, timeout: float = 5.0) -> None:
        """Stop: slices not started are dropped; the running ones are waited for (at most `timeout` s)."""
        self._stopped.set()
        with self._lock:  # no thread starts after this (_note starts them under the lock, not once stopped)
            threads = list(self._threads)
        for _ in threads:
            self._slices.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _start_threads(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._read, name=f"read-ahead-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read(self) -> None:
        while True:
            keys = self._slices.get()
            if keys is None:
                return
            if self._stopped.is_set():
                continue  # drain: close() puts the stops behind what is queued
            passed = self._passed
            if passed is not None and keys[-1] <= passed:
                continue
            try:
                seconds = self.store.read_ahead(keys)
            except Exception as exc:  # an optimisation: the claim reads what it needs anyway
                self.stop(f"{type(exc).__name__}: {exc}")
                continue
            if seconds is not None:
                self._note(seconds, len(keys))

    def _note(self, seconds: float, keys: int) -> None:
        with self._lock:
            self.slices_read += 1
            if seconds >= SLOW_SECONDS_PER_KEY * keys:
                self._fast_in_a_row = 0
                if len(self._threads) < self.sessions and not self._stopped.is_set():
                    self._start_threads(self.sessions - len(self._threads))
                return
            self._fast_in_a_row += 1
            if self._fast_in_a_row < self.sessions:
                return
            read = self.slices_read
        self.stop(f"the pages came fast, not worth reading ahead ({read} slices read)")
