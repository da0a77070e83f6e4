"""Import a Telegram Desktop export (`result.json`) into the raw store.

Mapping of an export message (see docs/USER_GUIDE.md, "Importing a Telegram Desktop export"):

* `type: "message"` becomes a post `tg:<chat id>:post:<id>`; `type: "service"` (joins, pins, title
  changes...) is skipped;
* `date_unixtime` is the timestamp (the `date` field is the exporting computer's local time without a
  zone; it is only used, as UTC and flagged, when an old export lacks `date_unixtime`);
  `edited_unixtime` is the edit date;
* `text` (a string, or a list of strings and `{type, text}` pieces) is flattened to plain text;
  `text_entities` and everything else the export says stay in `raw_payload`;
* `from_id` ("channel123", "user456", "chat789") is parsed into `from_peer` {type, id};
* photos and files are never imported: media becomes metadata (`media_type`, `media`), and a placeholder
  such as "(File not included. ...)" is recorded as `exported: false`;
* `reply_to_message_id` becomes `parent_message_id`.

"Nothing half-written": exports reach gigabytes, so one transaction per file would hold the SQLite write
lock (and a WAL as big as the file) for minutes and starve every other writer. Instead the import has
two passes, and only the first one reads the file. Pass 1 reads the whole file and checks it — JSON
syntax (a truncated file fails at its end), shape, and every message of the chosen chat — and does all
the per-message work on the way (mapping, capping and serialising the payload), appending the finished
rows to a spool: an anonymous temporary file, next to the SQLite files or in TMPDIR for PostgreSQL,
about the size of the chat in the export. Pass 1 writes nothing to the database, not even the source;
anything wrong with the content fails here. Only a file that passed is imported, in pass 2, which
reads the spool back and stores it in batches of at most INGEST_BATCH_SIZE committed one by one
(memory stays flat: one batch). The rows stored are exactly the rows checked, even if the file changes
after pass 1 (a change *during* pass 1 stops the import). A crash or kill during pass 2 leaves whole
batches of valid messages; the import is idempotent, so running it again completes it (and a second
run of a finished import inserts nothing).

Pass 1 of a big single-chat export runs on two processors: a forked process checks the messages from a
message start near the middle of the file to its end (`export_reader.split_point`, a guess from
Telegram Desktop's layout) into a second spool, while this process checks the beginning and confirms
the guess by reaching the cut exactly at a message start. Anything else — the cut elsewhere, an error
in either part, the other process gone or never started (a refused fork) — and the file is read again
whole, by one process: outcomes and error messages are the whole read's by construction, never a merge
of two reads that failed. The forked process holds Ctrl-C from its first instant (it never runs this
process's code on) and stops once this process is gone.
"""

from __future__ import annotations

import gc
import marshal
import mmap
import multiprocessing
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tg_parser.db.base import Database
from tg_parser.db.codec import dump_json_bytes, format_timestamp
from tg_parser.db.locks import HeldLock
from tg_parser.domain.ids import make_source_ref
from tg_parser.domain.models import Source
from tg_parser.domain.payload import PAYLOAD_CAP_BYTES, cap_payload_text
from tg_parser.errors import InvalidInput, TgParserError
from tg_parser.ingestion.export_reader import (
    ChatHeader,
    ExportFormatError,
    ExportReader,
    SplitPointReached,
    split_point,
)
from tg_parser.ingestion.locks import source_lock
from tg_parser.stores import IngestionStore, RawStore
from tg_parser.stores.raw import row_of_tuple

_FROM_ID = re.compile(r"^(user|channel|chat|group)(-?\d+)$")
_MEDIA_KINDS = {
    "video_file": "video",
    "voice_message": "voice",
    "audio_file": "audio",
    "video_message": "video_note",
    "sticker": "sticker",
    "animation": "animation",
}
_MEDIA_FIELDS = (
    "mime_type",
    "duration_seconds",
    "width",
    "height",
    "file_size",
    "file_name",
    "sticker_emoji",
    "title",
    "performer",
)

# Every key export_media looks at.
_MEDIA_KEYS = frozenset(
    {
        "photo",
        "file",
        "media_type",
        "poll",
        "location_information",
        "contact_information",
        "game_title",
        "invoice_information",
    }
)

_MAX_ID = 2**63 - 1  # a 64-bit integer column on both dialects: a larger id is checked, not stored half-way
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")  # an odd number of backslashes, then u0000

ProgressCallback = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)


class ExportMessageError(ValueError):
    """One message of the export cannot be understood."""


class ChatNotChosen(InvalidInput):
    """A full export holds several chats and none (or an ambiguous one) was picked."""


# --- one message -----------------------------------------------------------------------------------


def flatten_text(value: Any) -> str:
    """`text` as Telegram Desktop writes it: a string, or a list of strings and {type, text} objects."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for piece in value:
            if isinstance(piece, str):
                parts.append(piece)
            elif isinstance(piece, dict) and isinstance(piece.get("text"), str):
                parts.append(piece["text"])
            else:
                raise ExportMessageError(f"a text piece of unexpected shape: {str(piece)[:80]!r}")
        return "".join(parts)
    raise ExportMessageError(f"'text' is a {type(value).__name__}, expected a string or a list")


def parse_from_id(value: Any) -> dict[str, Any] | None:
    """ "channel123" → {"type": "channel", "id": 123}; older exports wrote a bare number (a user)."""
    if type(value) is str:
        # A chat's messages come from a few senders: the parsed form of each is kept (a copy is given).
        known = _FROM_PEERS.get(value)
        if known is None:
            known = _parse_from_id(value)
            if len(_FROM_PEERS) >= 4096:
                _FROM_PEERS.clear()
            _FROM_PEERS[value] = known
        return dict(known)
    return _parse_from_id(value)


_FROM_PEERS: dict[str, dict[str, Any]] = {}


def _parse_from_id(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return {"type": "user", "id": value}
    if isinstance(value, str):
        match = _FROM_ID.match(value)
        if match:
            return {"type": match.group(1), "id": int(match.group(2))}
        if value.lstrip("-").isdigit():
            return {"type": "user", "id": int(value)}
    return {"type": "unknown", "raw": str(value)}


def _unixtime(message: dict[str, Any], key: str) -> str | None:
    """The Unix time at `key` as canonical UTC text (db.codec.format_timestamp), or None if absent."""
    value = message.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise ExportMessageError(f"'{key}' is {value!r}, not a Unix time") from None
    # format_timestamp(datetime.fromtimestamp(seconds, UTC)), with the date part formatted once per
    # day (a chat's messages share few days) and the time of day looked up.
    day, second = divmod(seconds, 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        try:
            prefix = format_timestamp(datetime.fromtimestamp(day * 86400, UTC))[:11]  # "YYYY-MM-DDT"
        except (OverflowError, OSError, ValueError):
            raise ExportMessageError(f"'{key}' {seconds} is out of range") from None
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        _DAYS[day] = prefix
    return prefix + _HOURS[second // 3600] + _MINUTES_SECONDS[second % 3600]


_DAYS: dict[int, str] = {}
# The time of day in two lookups: "HH:" of each hour, "MM:SS.000000Z" of each second of an hour.
_HOURS = tuple(f"{hour:02d}:" for hour in range(24))
_MINUTES_SECONDS = tuple(f"{second // 60:02d}:{second % 60:02d}.000000Z" for second in range(3600))


def _local_date(message: dict[str, Any], key: str) -> str | None:
    """The local date at `key` (taken as UTC when it has no zone) as canonical UTC text, or None."""
    value = message.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ExportMessageError(f"'{key}' is {value!r}, not a date") from None
    return format_timestamp(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def export_media(message: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """Media of an export message as metadata; files themselves are never read."""
    if _MEDIA_KEYS.isdisjoint(message):
        return None, None  # most messages: one pass over the keys instead of a lookup per kind
    if "photo" in message:
        meta = _file_meta("photo", message.get("photo"))
        for key in ("width", "height"):
            if key in message:
                meta[key] = message[key]
        if "photo_file_size" in message:
            meta["file_size"] = message["photo_file_size"]
        return "photo", meta
    if "file" in message or "media_type" in message:
        kind = _MEDIA_KINDS.get(str(message.get("media_type")), "document")
        meta = _file_meta(kind, message.get("file"))
        meta.update({key: message[key] for key in _MEDIA_FIELDS if key in message})
        if "media_type" in message:
            meta["export_media_type"] = message["media_type"]
        return kind, meta
    if isinstance(message.get("poll"), dict):
        poll = message["poll"]
        answers = [a.get("text") for a in poll.get("answers", []) if isinstance(a, dict)]
        return "poll", {"type": "poll", "question": poll.get("question"), "answers": answers}
    if "location_information" in message:
        location = (
            message["location_information"] if isinstance(message["location_information"], dict) else {}
        )
        kind = "venue" if "place_name" in message else "geo"
        meta = {"type": kind, "lat": location.get("latitude"), "long": location.get("longitude")}
        if kind == "venue":
            meta.update({"title": message.get("place_name"), "address": message.get("address")})
        return kind, meta
    if "contact_information" in message:
        return "contact", {"type": "contact", **(message["contact_information"] or {})}
    if "game_title" in message:
        return "game", {"type": "game", "title": message.get("game_title")}
    if "invoice_information" in message:
        return "invoice", {"type": "invoice"}
    return None, None


def _file_meta(kind: str, value: Any) -> dict[str, Any]:
    """A file reference: a relative path when the export includes the file, else a placeholder text."""
    if isinstance(value, str) and value and not value.startswith("("):
        return {"type": kind, "exported": True, "file": value}
    return {"type": kind, "exported": False, "placeholder": value if isinstance(value, str) else None}


def message_id_of(message: Any) -> int:
    if not isinstance(message, dict):
        raise ExportMessageError("a message that is not a JSON object")
    value = message.get("id")
    if type(value) is not int or value <= 0:  # `type` also rules out bool
        raise ExportMessageError(f"message id {value!r} is not a positive integer")
    if value > _MAX_ID:
        raise ExportMessageError(f"message id {value} is out of range")
    return value


def export_fields(message: Any, message_id: int | None = None) -> dict[str, Any] | None:
    """The raw-record fields of one export message, or None for a service message; dates are canonical
    UTC text (db.codec.format_timestamp). `message_id`: what `message_id_of(message)` returned, if the
    caller has it already.

    Raises ExportMessageError when the message cannot be understood (pass 1 reports it and imports
    nothing).
    """
    if message_id is None:
        message_id = message_id_of(message)
    kind = message.get("type", "message")
    if kind != "message":
        return None  # service messages (and any future non-message kinds) carry no post content
    payload = dict(message)
    date = _unixtime(message, "date_unixtime")
    if date is None:
        date = _local_date(message, "date")
        if date is None:
            raise ExportMessageError(f"message {message_id} has neither 'date_unixtime' nor 'date'")
        payload["date_assumed_utc"] = True
    edit_date = _unixtime(message, "edited_unixtime")
    if edit_date is None and "edited" in message:
        edit_date = _local_date(message, "edited")
    reply_to = message.get("reply_to_message_id")
    if reply_to is not None:
        if type(reply_to) is not int:
            raise ExportMessageError(
                f"message {message_id}: reply_to_message_id {reply_to!r} is not an integer"
            )
        if not -_MAX_ID <= reply_to <= _MAX_ID:
            raise ExportMessageError(f"message {message_id}: reply_to_message_id {reply_to} is out of range")
    try:
        media_type, media = export_media(message)
    except (TypeError, AttributeError, ValueError):
        raise ExportMessageError(f"message {message_id} has media fields of an unexpected shape") from None
    if isinstance(message.get("text_entities"), list):
        # `text` is the flattened column; its structured form is exactly the pieces of text_entities.
        payload.pop("text", None)
    if "from_id" in message:
        payload["from_peer"] = parse_from_id(message["from_id"])
    payload["media_type"] = media_type
    return {
        "message_id": message_id,
        "date": date,
        "edit_date": edit_date,
        "text": flatten_text(message.get("text")),
        "parent_message_id": reply_to,
        "media_type": media_type,
        "media": media,
        "raw_payload": payload,
    }


# One checked message between the passes: (message_id, date, edit_date, text, parent_message_id,
# media_type, media JSON, payload JSON, payload truncated?, payload size), dates as canonical UTC text
# (db.codec.format_timestamp, what the raw store keeps), texts and JSON as UTF-8 (marshal copies bytes
# as they are but would encode and decode a str again), so the tuple is made of builtins only and is
# most of a stored row already (`export_tuple`).
SpooledRow = tuple[int, str, str | None, bytes, int | None, str | None, bytes | None, bytes, bool, int]


def spool_row(fields: dict[str, Any], *, nul_allowed: bool = True) -> SpooledRow:
    """Everything of one message that costs work or can fail — payload capped and serialised, media
    serialised, dates formatted, texts checked — done once, while the file is checked, so that storing
    it cannot fail on its content. `nul_allowed=False` (PostgreSQL) refuses NUL characters, which
    PostgreSQL text and jsonb cannot hold (Telegram Desktop writes one as `\\x00`)."""
    message_id = fields["message_id"]
    try:
        text = fields["text"].encode("utf-8")
        payload = dump_json_bytes(fields["raw_payload"])
        media = None if fields["media"] is None else dump_json_bytes(fields["media"])
    except UnicodeEncodeError:
        raise ExportMessageError(
            f"message {message_id} holds text that is not valid Unicode (a lone surrogate escape)"
        ) from None
    if len(payload) <= PAYLOAD_CAP_BYTES:
        truncated, size = False, len(payload)
    else:
        capped = cap_payload_text(fields["raw_payload"], dump_json_bytes)
        payload, truncated, size = capped.text.encode("utf-8"), True, capped.original_size
    if not nul_allowed and (b"\x00" in text or _json_has_nul(payload) or (media and _json_has_nul(media))):
        raise ExportMessageError(f"message {message_id} holds a NUL character, which PostgreSQL cannot store")
    return (
        message_id,
        fields["date"],
        fields["edit_date"],
        text,
        fields["parent_message_id"],
        fields["media_type"],
        media,
        payload,
        truncated,
        size,
    )


def _json_has_nul(data: bytes) -> bool:
    """Whether serialised JSON holds a NUL character: a `\\u0000` escape not itself escaped."""
    return b"\\u0000" in data and _JSON_NUL.search(data) is not None


def export_tuple(
    spooled: SpooledRow, ref_prefix: str, channel_id: int, source_id: str, inserted_at: str
) -> tuple[Any, ...]:
    """The raw-store row in tuple form (stores.raw.RAW_COLUMNS) of one checked export message;
    `ref_prefix` is "tg:<channel id>:post:" and `inserted_at` canonical text (format_timestamp)."""
    message_id, date, edit_date, text, parent, media_type, media, payload, truncated, size = spooled
    return (
        ref_prefix + str(message_id),
        source_id,
        channel_id,
        message_id,
        "post",
        date,
        edit_date,
        text,
        None,
        parent,
        None,
        None,
        None,
        None,
        media_type,
        media,
        payload,
        truncated,
        size,
        inserted_at,
    )


def export_row(
    spooled: SpooledRow, *, channel_id: int, source_id: str, inserted_at: datetime
) -> dict[str, Any]:
    """The raw-store row (`raw_row`, for RawStore.store_rows) of one checked export message: the same
    values `RawStore.row_of(RawMessage.build(...))` gives, without a pydantic model per message (what
    a model would check is already checked by `export_fields`: a positive 64-bit id, aware dates,
    flattened text, a dict or None for media)."""
    values = export_tuple(
        spooled, ref_prefix(channel_id), channel_id, source_id, format_timestamp(inserted_at)
    )
    return row_of_tuple(values)


def ref_prefix(channel_id: int) -> str:
    """The source_ref of a post of this chat, up to its message id (domain.ids.make_source_ref)."""
    return make_source_ref(channel_id, "post", 1)[:-1]


# --- the import ------------------------------------------------------------------------------------


@dataclass
class ChatScan:
    header: ChatHeader
    messages: int = 0  # content messages
    service: int = 0
    max_id: int = 0
    checked: bool = False


@dataclass
class ImportResult:
    source_id: str
    chat: ChatHeader
    source_created: bool
    messages: int = 0
    inserted: int = 0
    versions: int = 0
    unchanged: int = 0
    service_skipped: int = 0
    escapes_fixed: int = 0
    bytes: int = 0
    chats_in_file: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "chat": {"name": self.chat.name, "type": self.chat.type, "id": self.chat.id},
            "source_created": self.source_created,
            "messages": self.messages,
            "inserted": self.inserted,
            "versions": self.versions,
            "unchanged": self.unchanged,
            "service_skipped": self.service_skipped,
            "escapes_fixed": self.escapes_fixed,
            "bytes": self.bytes,
            "chats_in_file": self.chats_in_file,
        }


def _matches(header: ChatHeader, wanted: str | None) -> bool:
    if wanted is None:
        return True
    text = wanted.strip()
    if text.lstrip("-").isdigit():
        number = int(text)
        if text.startswith("-100") and len(text) > 4:
            number = int(text[4:])  # Bot-API form of a channel id
        return header.id == number
    return (header.name or "").strip().casefold() == text.casefold()


def _message_checker(
    path: Path,
    scan: ChatScan,
    candidate: bool,
    add: Callable[[SpooledRow], None] | None,
    nul_allowed: bool,
    reader: ExportReader,
    progress: ProgressCallback | None,
    total: int,
) -> Callable[[dict[str, Any]], None]:
    """The per-message callback of pass 1 for one chat: check the message (all of it for a
    `candidate` chat, its id and type for another), count it in `scan`, and `add` its row to the
    spool if the chat's rows are kept."""
    header = scan.header
    report_every = 2000

    def on_message(message: dict[str, Any]) -> None:
        try:
            message_id = message_id_of(message)
            if candidate:
                fields = export_fields(message, message_id)
                if add is not None and fields is not None:
                    add(spool_row(fields, nul_allowed=nul_allowed))
            else:
                fields = message if message.get("type", "message") == "message" else None
        except ExportMessageError as exc:
            raise ExportFormatError(
                f"{path}: chat {header.describe()}, message {message.get('id', '?')}: {exc}",
                "the export is damaged; export the chat again with Telegram Desktop",
            ) from None
        if fields is None:
            scan.service += 1
        else:
            scan.messages += 1
        if message_id > scan.max_id:
            scan.max_id = message_id
        if progress and (scan.messages + scan.service) % report_every == 0:
            progress("checking", reader.bytes_read, total)

    return on_message


class _ParentGone(Exception):
    """The process that forked `_check_tail` has ended: nobody will read what it checks."""


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _check_tail(
    path: Path, cut: int, tail: _Spool, nul_allowed: bool, answer: Connection, parent: int, beat: _Beat
) -> None:
    """The forked half of a split read (ExportImporter._read_split): check the messages from byte
    `cut` to the end of the file as the chosen chat's, spool their rows to `tail`, and send back
    ("ok", messages, service messages, highest id, escapes repaired, spool bytes), or ("failed",) for
    anything wrong: the parent then reads the file whole, which reports it as a whole read does."""
    # Ctrl-C reaches the whole process group: the parent stops this process itself (no traceback here).
    # A SIGTERM ends it at once, whatever handler the parent had installed (its stop message is its own).
    # Both were held over the fork (`_start_tail`); a Ctrl-C that came meanwhile is dropped here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def parent_alive(_phase: str, _done: int, _total: int) -> None:
        # Every 2,000 messages (the progress callback's pace): a parent killed (SIGKILL, or a SIGTERM
        # to it alone) would otherwise leave this process reading the rest of a file of gigabytes
        # into a scratch file that nobody reads. Its parent gone, a process is given another one.
        if os.getppid() != parent:
            raise _ParentGone
        beat.advance()  # the parent's sign that this process advances (`_await_answer`)

    try:
        scan = ChatScan(ChatHeader())
        reader = ExportReader(path)
        checker = _message_checker(path, scan, True, tail.add, nul_allowed, reader, parent_alive, 0)
        reader.walk_tail(cut, checker)
        tail.finish()
        outcome: tuple[Any, ...] = ("ok", scan.messages, scan.service, scan.max_id)
        outcome += (reader.escapes_fixed, tail.size)
    except Exception:  # the parent's whole read reports the error
        outcome = ("failed",)
    with suppress(OSError), answer:  # a parent gone (killed) reads no answer
        answer.send(outcome)


# Forked processes read the second part of a big export (ExportImporter._read_split); where fork is
# missing (Windows) the file is read by one process.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


class _Beat:
    """A counter in anonymous shared memory (no file, no descriptor): the forked reader advances it,
    the parent watches it move. Only the child writes it; the parent only compares readings."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 8)

    @property
    def value(self) -> int:
        return int.from_bytes(self._map[:8], "little")

    def advance(self) -> None:
        self._map[:8] = (self.value + 1).to_bytes(8, "little")

    def close(self) -> None:
        self._map.close()


# How long the forked reader may go without advancing (it counts every 2,000 messages it checks,
# milliseconds apart even on a loaded machine) before the parent stops it and reads the file whole.
STALL_SECONDS = 60.0


def _await_answer(receive: Connection, beat: _Beat) -> Any:
    """The forked reader's answer; None when it stopped advancing for STALL_SECONDS (hung: say, on a
    lock another thread held at the fork), so a hung reader costs a whole read, never a hung import.
    EOFError when it died without answering (its end of the pipe closed: `poll` sees that at once)."""
    seen, since = beat.value, time.monotonic()
    while not receive.poll(min(1.0, STALL_SECONDS)):
        if beat.value != seen:
            seen, since = beat.value, time.monotonic()
        elif time.monotonic() - since >= STALL_SECONDS:
            return None  # the caller stops and reaps it, as on every way out of a split read
    return receive.recv()


def _in_daemon() -> bool:
    return bool(multiprocessing.current_process().daemon)


# A file smaller than this is read by one process: checking 1 MB takes about 17 ms of CPU, so the part
# saved on a small file is not worth a process and a second scratch file.
SPLIT_MIN_BYTES = 8 << 20


class _Spool:
    """The chosen chat's checked rows between the two passes, in an anonymous temporary file.

    Pass 1 does all the per-message work (decode, check, map, cap and serialise the payload) and
    appends each batch here, marshalled; pass 2 only reads the batches back and stores them. So the
    export is parsed once, and what is stored is exactly what was checked. Memory holds one batch;
    the file (about the size of the chat in the export) has no name, so it disappears when closed or
    when the process dies.
    """

    def __init__(self, directory: Path | None, batch_size: int) -> None:
        self.directory = directory
        self.batch_size = batch_size
        self.owner: ChatScan | None = None
        self.size = 0
        self._pending: list[SpooledRow] = []
        self._discarded = False
        self._tails: list[_Spool] = []  # spools of other processes, read after this one
        try:
            self._file = tempfile.TemporaryFile(prefix="tg-parser-import-", dir=directory)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise self._failure(exc) from None

    def claim(self, scan: ChatScan) -> bool:
        """Keep this chat's rows; False (and nothing kept from now on) if another chat claimed first."""
        if self.owner is None:
            self.owner = scan
            return True
        self._discarded = True
        self._pending.clear()
        return False

    def add(self, row: SpooledRow) -> None:
        if self._discarded:
            return
        self._pending.append(row)
        if len(self._pending) >= self.batch_size:
            self._write()

    def _write(self) -> None:
        data = marshal.dumps(self._pending)
        try:
            self._file.write(len(data).to_bytes(8, "little"))
            self._file.write(data)
        except OSError as exc:
            raise self._failure(exc) from None
        self._pending.clear()

    def finish(self) -> None:
        if self._pending and not self._discarded:
            self._write()
        try:
            self._file.flush()
            self.size = self._file.tell()
            self._file.seek(0)
        except OSError as exc:
            raise self._failure(exc) from None

    def append(self, other: _Spool, size: int) -> None:
        """Take `other` (of `size` bytes, written by another process) as the rest of this spool: its
        rows come after these ones, and closing this spool closes it."""
        other.size = size
        self._tails.append(other)

    def batches(self) -> Iterator[tuple[list[SpooledRow], int]]:
        """Each batch of rows, with the spool bytes read so far (for progress): batches of
        `batch_size` rows, the last one smaller, also across appended spools (whose first batch
        follows a last one of this spool that may be short)."""
        size = self.batch_size
        pending: list[SpooledRow] = []
        done = 0
        for spool in (self, *self._tails):
            for rows, read in spool._batches():
                if not pending and len(rows) == size:
                    yield rows, done + read
                    continue
                pending.extend(rows)
                while len(pending) >= size:
                    yield pending[:size], done + read
                    pending = pending[size:]
            done += spool.size
        if pending:
            yield pending, done

    def _batches(self) -> Iterator[tuple[list[SpooledRow], int]]:
        read = self._file.read
        self._file.seek(0)
        while header := read(8):
            rows = marshal.loads(read(int.from_bytes(header, "little")))
            yield rows, self._file.tell()

    @property
    def total_size(self) -> int:
        return self.size + sum(other.size for other in self._tails)

    def close(self) -> None:
        self._file.close()
        for other in self._tails:
            other.close()

    def _failure(self, exc: OSError) -> TgParserError:
        where = self.directory or Path(tempfile.gettempdir())
        return TgParserError(
            f"cannot write the import's scratch file in {where}: {exc.strerror or exc}",
            "it needs about the size of the export in free space there"
            + ("" if self.directory else "; point TMPDIR at a roomier directory"),
        )


class ExportImporter:
    def __init__(
        self,
        db: Database,
        *,
        run_id: str,
        batch_size: int = 500,
        sqlite_dir: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.batch_size = batch_size
        self.sqlite_dir = sqlite_dir
        # The spool sits next to the SQLite files (where the rows are going anyway), or in TMPDIR.
        self.spool_dir = sqlite_dir
        self.progress = progress
        # A single-chat export at least this big is checked in two parts at once (`read`); None: never.
        self.split_min_bytes: int | None = SPLIT_MIN_BYTES
        self.sources = IngestionStore(db)
        self.raw = RawStore(db)

    # --- pass 1: read and check the whole file, spool the chosen chat ------------------------------

    def read(self, path: Path, chat: str | None = None) -> tuple[ChatScan, list[ChatScan], int, _Spool]:
        """Read and check the whole file, writing nothing to the database; return the chosen chat,
        every chat seen, the number of `\\xNN` escapes repaired and the spool of the chosen chat's rows.

        A big single-chat export is read in two parts at once, on two processors (`_read_split`): this
        process checks the first part while a forked one checks the rest. The outcome is the one
        reading it whole gives, or the file is read whole: when the cut turns out not to be at a message
        start, or either part finds anything wrong (the error is the whole read's, word for word)."""
        spool = _Spool(self.spool_dir, self.batch_size)
        try:
            with _no_cycle_collection():
                cut = None
                # (A daemonic multiprocessing worker may not start processes of its own.)
                if _FORK is not None and self.split_min_bytes is not None and not _in_daemon():
                    cut = split_point(path, self.split_min_bytes)
                outcome = self._read_split(path, chat, spool, cut) if cut is not None else None
                if outcome is None:
                    if cut is not None:  # the parts were discarded: start again with an empty spool
                        spool.close()
                        spool = _Spool(self.spool_dir, self.batch_size)
                    outcome = self._read(path, chat, spool)
            chosen, scans, escapes = outcome
            spool.finish()
        except BaseException:
            spool.close()
            raise
        return chosen, scans, escapes, spool

    def _read(self, path: Path, chat: str | None, spool: _Spool) -> tuple[ChatScan, list[ChatScan], int]:
        reader = ExportReader(path)
        scans = self._walk(reader, path, chat, spool)
        return self._chosen(path, scans, chat, reader.kind), scans, reader.escapes_fixed

    def _walk(
        self,
        reader: ExportReader,
        path: Path,
        chat: str | None,
        spool: _Spool,
        scans: list[ChatScan] | None = None,
    ) -> list[ChatScan]:
        """Walk the file, checking every message and spooling the chosen chat's; return every chat
        seen. A walk that stops at `reader.stop_at` ends with SplitPointReached (`scans` is the
        caller's then, to collect the chats seen so far)."""
        scans = [] if scans is None else scans
        total = _size(path)
        nul_allowed = self.db.text_holds_nul
        progress = self.progress
        if progress is not None and reader.stop_at:
            report, part = progress, reader.stop_at

            def progress(phase: str, done: int, whole: int) -> None:
                report(phase, done * whole // part, whole)  # the other part advances at the same pace

        def on_chat(header: ChatHeader) -> Callable[[dict[str, Any]], None] | None:
            scan = ChatScan(header)
            scans.append(scan)
            candidate = _matches(header, chat)
            scan.checked = candidate
            # Only one chat can be imported: a second candidate means the import will stop at
            # `_choose` (once the whole file is checked), so nothing more needs keeping.
            keep = candidate and spool.claim(scan)
            return _message_checker(
                path, scan, candidate, spool.add if keep else None, nul_allowed, reader, progress, total
            )

        reader.walk(on_chat)  # SplitPointReached ends the first part of a split read
        if self.progress:
            self.progress("checking", total, total)
        return scans

    def _chosen(self, path: Path, scans: list[ChatScan], chat: str | None, kind: str | None) -> ChatScan:
        chosen = self._choose(path, scans, chat, kind)
        if chosen.header.id is None:
            raise ExportFormatError(f"{path}: chat {chosen.header.describe()} has no id", "export it again")
        if not -_MAX_ID <= chosen.header.id <= _MAX_ID:
            raise ExportFormatError(
                f"{path}: the chat id {chosen.header.id} is out of range", "export it again"
            )
        return chosen

    def _read_split(
        self, path: Path, chat: str | None, spool: _Spool, cut: int
    ) -> tuple[ChatScan, list[ChatScan], int] | None:
        """Check the file in two parts at once: bytes before `cut` here, the rest (from the message
        that starts at `cut`) in a forked process that spools its rows to a second scratch file.
        None when the parts cannot stand for the whole (the caller reads the file whole instead)."""
        assert _FORK is not None
        tail = _Spool(self.spool_dir, self.batch_size)  # opened here so the child's writes reach us
        try:
            worker, receive, beat = self._start_tail(path, cut, tail)
        except OSError:  # no process to be had (a process limit, no memory for one): read it whole
            tail.close()
            return None
        except BaseException:
            tail.close()
            raise
        try:
            reader = ExportReader(path, stop_at=cut)
            scans: list[ChatScan] = []
            answer = None
            try:
                self._walk(reader, path, chat, spool, scans)
            except SplitPointReached:
                answer = _await_answer(receive, beat)  # EOFError if the child died
            except TgParserError:
                pass  # the file read whole tells which error comes first
            if answer is None or answer[0] != "ok" or len(scans) != 1:
                tail.close()
                return None
            worker.join()
            _, messages, service, max_id, escapes, size = answer
            scan = scans[0]
            scan.messages += messages
            scan.service += service
            scan.max_id = max(scan.max_id, max_id)
            spool.append(tail, size)
            if self.progress:
                total = _size(path)
                self.progress("checking", total, total)
            return self._chosen(path, scans, chat, reader.kind), scans, reader.escapes_fixed + escapes
        except EOFError:
            tail.close()
            return None
        except BaseException:
            tail.close()
            raise
        finally:
            receive.close()
            if worker.is_alive():
                worker.kill()
            worker.join()
            beat.close()

    def _start_tail(self, path: Path, cut: int, tail: _Spool) -> tuple[BaseProcess, Connection, _Beat]:
        """Fork the process that checks the file from `cut` on (`_check_tail`); its process, the end
        of the pipe its answer comes through and the counter it advances as it reads (shared memory).
        OSError (nothing left open) if it cannot start."""
        assert _FORK is not None
        receive, send = _FORK.Pipe(duplex=False)
        beat = _Beat()
        worker = _FORK.Process(
            target=_check_tail,
            args=(path, cut, tail, self.db.text_holds_nul, send, os.getpid(), beat),
            name="tg-parser-import-check",
            daemon=True,
        )
        # Ctrl-C and SIGTERM are held over the fork: the child has them held until `_check_tail` has
        # set its own handlers (a KeyboardInterrupt there would run this process's code, or print a
        # traceback); here one that came meanwhile is raised once `worker` can be stopped.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            worker.start()
        except BaseException:
            send.close()
            receive.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        send.close()
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # raises a Ctrl-C that came meanwhile
        except BaseException:
            receive.close()
            worker.kill()
            worker.join()
            raise
        return worker, receive, beat

    @staticmethod
    def _choose(path: Path, scans: list[ChatScan], chat: str | None, kind: str | None) -> ChatScan:
        matching = [s for s in scans if _matches(s.header, chat)]
        listing = "; ".join(s.header.describe() for s in scans[:8]) + (" ..." if len(scans) > 8 else "")
        if kind == "single":
            if chat is not None and not matching:
                raise ChatNotChosen(
                    f"{path} is the export of {scans[0].header.describe()}, not of {chat!r}",
                    "drop --chat, or give this chat's name or id",
                )
            return scans[0]
        if not scans:
            raise ExportFormatError(f"{path} is a full export with no chats in it", "export the chat itself")
        if not matching:
            raise ChatNotChosen(f"no chat {chat!r} in {path}", f"pick one of: {listing}")
        if len(matching) > 1:
            raise ChatNotChosen(
                f"{path} holds {len(matching)} chats"
                + (f" named {chat!r}" if chat else "")
                + "; pick one with --chat NAME|ID",
                f"chats: {'; '.join(s.header.describe() for s in matching[:8])}",
            )
        return matching[0]

    # --- pass 2: store the spooled rows in batches ---------------------------------------------

    def run(self, path: Path, *, chat: str | None = None, source_id: str | None = None) -> ImportResult:
        before = _stat(path)
        chosen, scans, escapes_fixed, spool = self.read(path, chat)
        with closing(spool):
            if _stat(path) != before:
                raise ExportFormatError(f"{path} changed while it was being read", "import it again")
            header = chosen.header
            source, created = self._source(header, source_id)
            result = ImportResult(
                source_id=source.source_id,
                chat=header,
                source_created=created,
                service_skipped=chosen.service,
                escapes_fixed=escapes_fixed,
                chats_in_file=len(scans),
            )
            with source_lock(self.db, source.source_id) as lock:
                run_pk = self.sources.start_run(source.source_id, self.run_id)
                self.sources.record_attempt(source.source_id)
                counts: dict[str, int] = {}
                try:
                    self._store(spool, int(header.id or 0), source.source_id, result, before[0], lock)
                except Exception as exc:
                    counts = {"posts_fetched": result.messages, "posts_inserted": result.inserted}
                    counts["versions_recorded"] = result.versions
                    self.sources.record_failure(
                        source.source_id, f"{type(exc).__name__}: {exc}", permanent=False
                    )
                    self.sources.finish_run(run_pk, success=False, counts=counts, error=exc)
                    raise
                if chosen.max_id:
                    self.sources.advance_post_cursor(source.source_id, chosen.max_id)
                self.sources.record_success(source.source_id)
                counts = {
                    "posts_fetched": result.messages,
                    "posts_inserted": result.inserted,
                    "versions_recorded": result.versions,
                }
                self.sources.finish_run(run_pk, success=True, counts=counts)
        result.bytes = before[0]
        return result

    def _store(
        self,
        spool: _Spool,
        channel_id: int,
        source_id: str,
        result: ImportResult,
        total: int,
        lock: HeldLock,
    ) -> None:
        """Store the spooled rows, one transaction per batch (the write lock is held only that long). Each
        batch checks the source lock before it commits (`LockLost`: nothing more is written)."""
        prefix = ref_prefix(channel_id)
        for rows, done in spool.batches():
            inserted_at = format_timestamp(datetime.now(UTC))
            with self.db.transaction() if self.db.atomic_across_stores else nullcontext():
                stored = self.raw.store_tuples(
                    [export_tuple(r, prefix, channel_id, source_id, inserted_at) for r in rows]
                )
                lock.check()
            result.messages += len(rows)
            result.inserted += stored.inserted
            result.versions += stored.versions
            result.unchanged += stored.unchanged
            if self.progress:
                self.progress("importing", total * done // max(spool.total_size, 1), total)
        if self.progress:
            self.progress("importing", total, total)

    def _source(self, header: ChatHeader, source_id: str | None) -> tuple[Source, bool]:
        """Create or reuse the source the export feeds (kind `export`)."""
        channel_id = int(header.id or 0)
        if source_id is not None:
            existing = self.sources.get_source(source_id)
            if existing is not None:
                if existing.channel_id not in (None, channel_id):
                    raise InvalidInput(
                        f"source {source_id!r} is channel {existing.channel_id}, but the export is of "
                        f"{header.describe()}",
                        "use another --source-id, or drop it to let tg-parser pick one",
                    )
                if existing.channel_id is None or existing.title is None:
                    self.sources.update_identity(source_id, channel_id=channel_id, title=header.name)
                return self.sources.get_source(source_id) or existing, False
        else:
            for candidate in self.sources.sources_for_channel(channel_id):
                if candidate.kind == "export":
                    return candidate, False
            source_id = f"export-{channel_id}"
            existing = self.sources.get_source(source_id)
            if existing is not None:
                if existing.channel_id not in (None, channel_id):
                    raise InvalidInput(
                        f"source {source_id!r} exists for channel {existing.channel_id}",
                        "pass --source-id to choose a free source id",
                    )
                return existing, False
        source = Source(source_id=source_id, kind="export", channel_id=channel_id, title=header.name)
        created = self.sources.add_source(source)
        return self.sources.get_source(source_id) or source, created


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pass 1 without Python's cycle collector. Each message allocates a dozen dicts and lists (the
    decoded JSON, the payload, the fields), so the collector ran every few messages for nothing: none
    of them is part of a cycle (decoded JSON cannot be), reference counting frees each message's
    objects as before, and memory stays flat. (Pass 2 allocates far less: measured, no gain there.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _stat(path: Path) -> tuple[int, int, int, int]:
    """What tells that the file changed while it was read: its size and time, and which file it is (a
    split read opens it more than once, so another put in its place with the same size and time, a
    copy that kept its time, would otherwise give rows of two files)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ExportFormatError(
            f"cannot read {path}: {exc.strerror or exc}", "check the path and permissions"
        ) from None
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
