"""A streaming reader for Telegram Desktop's `result.json` exports.

Exports reach gigabytes, so the file is never loaded whole: the reader walks the top-level structure
itself and hands each message to the caller as soon as it is decoded. Memory stays flat — one read chunk
plus one message — whatever the file size.

How: the structural walk (objects, keys, arrays) is done here; every *value* that is small — a message,
a chat's name, an `about` text — is decoded by the C JSON decoder (`json.JSONDecoder.raw_decode`) straight
from the buffer. When a value runs past the end of the buffer, more of the file is read and the decode is
repeated; a single value larger than `MAX_VALUE_CHARS` is refused as malformed, which bounds memory.

Two shapes are understood:

* a single-chat export: `{"name": ..., "type": ..., "id": ..., "messages": [...]}`;
* a full account export: `{..., "chats": {"list": [chat, ...]}, "left_chats": {"list": [...]}}`.

Telegram Desktop's known defect — control characters written as `\\xNN`, which JSON does not allow —
is repaired on the fly: when the decoder reports an invalid escape at a `\\x`, exactly that escape is
rewritten to `\\u00NN` and the value decoded again. The decoder itself says where the escape is, so an
escaped backslash followed by `x` (`\\\\x41`, legal JSON) is never touched.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tg_parser.errors import InvalidInput

CHUNK_BYTES = 1 << 20
MAX_VALUE_CHARS = 16 << 20  # one message (or other value) longer than this is not a real export
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_WS = " \t\r\n"


class ExportFormatError(InvalidInput):
    """The file is not a well-formed Telegram Desktop JSON export."""


class SplitPointReached(Exception):
    """A walk limited to the file's first part (`ExportReader(stop_at=...)`) reached its end exactly at
    the start of a message of a single-chat export: the messages from there on are the other part's."""


@dataclass
class ChatHeader:
    """A chat's identity as the export states it (everything that precedes its messages)."""

    name: str | None = None
    type: str | None = None
    id: int | None = None
    index: int = 0  # position in the export (0 for a single-chat export)
    section: str = ""  # "" for a single-chat export, else "chats" or "left_chats"
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name or '(no name)'} (id {self.id}, {self.type or 'unknown type'})"


class _Buffer:
    """A window over the decoded text of the file with just enough lexing for the structural walk."""

    def __init__(self, handle: BinaryIO, path: Path, chunk_bytes: int, limit: int | None = None) -> None:
        self.handle = handle
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.limit = limit  # read no further than this byte offset (the end of a split walk's part)
        self.at_limit = False
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.text = ""
        self.pos = 0
        self.eof = False
        self.bytes_read = 0
        self.consumed_chars = 0  # characters dropped from the front of `text` (for error positions)
        self.escapes_fixed = 0
        self._json = json.JSONDecoder(strict=False)
        self._first = True

    # --- input -----------------------------------------------------------------------------------

    def _read_more(self) -> bool:
        if self.eof:
            return False
        size = self.chunk_bytes
        if self.limit is not None:
            size = min(size, self.limit - self.bytes_read)
            self.at_limit = size <= 0
        raw = self.handle.read(size) if size > 0 else b""
        self.bytes_read += len(raw)
        try:
            if not raw:
                self.eof = True
                piece = self.decoder.decode(b"", final=True)
            else:
                piece = self.decoder.decode(raw)
        except UnicodeDecodeError as exc:
            raise ExportFormatError(
                f"{self.path} is not UTF-8 text (byte {self.bytes_read - len(raw) + exc.start}): "
                "not a Telegram Desktop JSON export",
                "export the chat again with Telegram Desktop, format 'Machine-readable JSON'",
            ) from None
        if self._first and piece:
            self._first = False
            piece = piece.removeprefix("\ufeff")  # a BOM some editors add
        if self.pos > len(self.text) // 2:
            self.consumed_chars += self.pos
            self.text = self.text[self.pos :]
            self.pos = 0
        self.text += piece
        return True

    def where(self, offset: int | None = None) -> str:
        at = self.consumed_chars + (self.pos if offset is None else offset)
        return f"at character {at:,}"

    def fail(self, what: str, offset: int | None = None) -> ExportFormatError:
        return ExportFormatError(
            f"{self.path} is not a valid Telegram Desktop JSON export: {what} {self.where(offset)}",
            "the file may be truncated or damaged; export it again (format 'Machine-readable JSON')",
        )

    # --- lexing ----------------------------------------------------------------------------------

    def peek(self) -> str:
        """The next significant character ('' at the end of the file), skipping whitespace."""
        while True:
            text, pos, n = self.text, self.pos, len(self.text)
            while pos < n and text[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < n:
                return text[pos]
            if not self._read_more():
                return ""

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            shown = repr(found) if found else "the end of the file"
            raise self.fail(f"expected {what} but found {shown}")
        self.pos += 1

    def value(self) -> Any:
        """Decode one complete JSON value at the current position."""
        if not self.peek():
            raise self.fail("unexpected end of the file")
        while True:
            start = self.pos  # reading more may compact the buffer, so take the start afresh each time
            try:
                value, end = self._json.raw_decode(self.text, start)
            except json.JSONDecodeError as exc:
                if exc.msg.startswith("Invalid \\escape") and self._fix_escape(exc.pos - start):
                    continue
                if self._grow():
                    continue
                if exc.msg.startswith("Unterminated") or exc.pos >= len(self.text.rstrip()) - 1:
                    raise self.fail("unexpected end of the file inside a value starting", start) from None
                raise self.fail(exc.msg.lower().removesuffix(" at"), exc.pos) from None
            except RecursionError:  # the C decoder's depth is Python's recursion limit
                raise self.fail("a value nested too deeply, starting", start) from None
            except ValueError:  # an integer longer than sys.get_int_max_str_digits()
                what = f"a number of more digits than {sys.get_int_max_str_digits():,} in a value starting"
                raise self.fail(what, start) from None
            if end == len(self.text) and self._grow():
                continue  # a number or literal may go on in the next chunk: decode it again whole
            self.pos = end
            return value

    def _grow(self) -> bool:
        """Read more of the file for the value starting at `pos`; False at the end of the file."""
        if len(self.text) - self.pos > MAX_VALUE_CHARS:
            raise self.fail(f"a single value longer than {MAX_VALUE_CHARS:,} characters")
        return self._read_more()

    def _fix_escape(self, relative: int) -> bool:
        """Rewrite Telegram Desktop's `\\xNN` (`relative` to `pos`) into the JSON escape `\\u00NN`."""
        while len(self.text) < self.pos + relative + 4 and self._read_more():
            pass
        offset = self.pos + relative
        text = self.text
        if text[offset : offset + 2] != "\\x" or not _HEX2.fullmatch(text[offset + 2 : offset + 4]):
            return False
        self.text = text[:offset] + "\\u00" + text[offset + 2 :]
        self.escapes_fixed += 1
        return True


class ExportReader:
    """Walks an export once. Use `chats()`; each chat's messages are streamed, not collected."""

    def __init__(self, path: Path, *, chunk_bytes: int = CHUNK_BYTES, stop_at: int | None = None) -> None:
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.stop_at = stop_at  # `walk` reads up to this byte offset only (see `split_point`)
        self.kind: str | None = None  # "single" or "full" once known
        self._buffer: _Buffer | None = None

    @property
    def bytes_read(self) -> int:
        return self._buffer.bytes_read if self._buffer else 0

    @property
    def escapes_fixed(self) -> int:
        return self._buffer.escapes_fixed if self._buffer else 0

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")  # the caller closes it (a with block)
        except OSError as exc:
            raise ExportFormatError(
                f"cannot read {self.path}: {exc.strerror or exc}", "check the path and permissions"
            ) from None

    def walk(
        self,
        on_chat: Callable[[ChatHeader], Callable[[dict[str, Any]], None] | None],
    ) -> None:
        """Walk the whole file. For each chat, `on_chat(header)` returns a per-message callback, or None
        to skip that chat's messages (they are still decoded, to validate the file)."""
        with self._open() as handle:
            buf = self._buffer = _Buffer(handle, self.path, self.chunk_bytes, self.stop_at)
            first = buf.peek()
            if first != "{":
                what = "an empty file" if first == "" else f"{first!r} where a JSON object should start"
                raise ExportFormatError(
                    f"{self.path} is not a Telegram Desktop JSON export: found {what}",
                    "give the result.json written by Telegram Desktop (format 'Machine-readable JSON')",
                )
            self._top(buf, on_chat)
            if buf.peek() != "":
                raise buf.fail("unexpected data after the end of the export object")

    # --- structure -------------------------------------------------------------------------------

    def _keys(self, buf: _Buffer, what: str) -> Iterator[str]:
        """Iterate the keys of an object whose '{' is next; the caller consumes each value."""
        buf.expect("{", f"the start of {what}")
        if buf.peek() == "}":
            buf.pos += 1
            return
        while True:
            if buf.peek() != '"':
                raise buf.fail(f"expected a key in {what}")
            key = buf.value()
            buf.expect(":", "':' after a key")
            yield key
            char = buf.peek()
            if char == ",":
                buf.pos += 1
                continue
            if char == "}":
                buf.pos += 1
                return
            raise buf.fail(
                f"expected ',' or '}}' in {what}" if char else f"unexpected end of the file inside {what}"
            )

    def _items(self, buf: _Buffer, what: str) -> Iterator[None]:
        """Iterate the elements of an array whose '[' is next; the caller consumes each element."""
        buf.expect("[", f"the start of {what}")
        if buf.peek() == "]":
            buf.pos += 1
            return
        while True:
            yield None
            char = buf.peek()
            if char == ",":
                buf.pos += 1
                continue
            if char == "]":
                buf.pos += 1
                return
            raise buf.fail(
                f"expected ',' or ']' in {what}" if char else f"unexpected end of the file inside {what}"
            )

    def _top(self, buf: _Buffer, on_chat: Callable[[ChatHeader], Any]) -> None:
        header = ChatHeader()
        seen_chat_data = False
        for key in self._keys(buf, "the export"):
            if key == "messages":
                if self.kind == "single":  # a duplicate key: which array would be the chat's?
                    raise buf.fail("a second 'messages' array in the export")
                self.kind = "single"
                seen_chat_data = True
                self._messages(buf, header, on_chat)
            elif key in ("chats", "left_chats"):
                if self.kind == "single":
                    raise buf.fail(f"a single-chat export with a '{key}' section")
                self.kind = "full"
                seen_chat_data = True
                self._chat_list(buf, key, on_chat)
            elif key in ("name", "type", "id") and self.kind != "full":
                self._header_field(buf, header, key)
            else:
                buf.value()
        if not seen_chat_data:
            raise ExportFormatError(
                f"{self.path} is JSON but not a Telegram Desktop export: it has neither 'messages' nor 'chats'",
                "give the result.json written by Telegram Desktop (format 'Machine-readable JSON')",
            )

    def _header_field(self, buf: _Buffer, header: ChatHeader, key: str) -> None:
        value = buf.value()
        if key == "id":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | str)
                or not str(value).lstrip("-").isdigit()
            ):
                raise buf.fail(f"the chat id {value!r} is not a number")
            digits = str(value).lstrip("-")
            if len(digits) > sys.get_int_max_str_digits():  # what int() refuses (4,300 by default)
                raise buf.fail(f"the chat id is a number of {len(digits):,} digits")
            header.id = int(value)
        elif key == "name":
            header.name = value if isinstance(value, str) else None
        else:
            header.type = value if isinstance(value, str) else None

    def _chat_list(self, buf: _Buffer, section: str, on_chat: Callable[[ChatHeader], Any]) -> None:
        for key in self._keys(buf, f"'{section}'"):
            if key != "list":
                buf.value()
                continue
            for index, _ in enumerate(self._items(buf, f"'{section}.list'")):
                header = ChatHeader(index=index, section=section)
                saw_messages = False
                for chat_key in self._keys(buf, f"chat #{index + 1} of '{section}'"):
                    if chat_key == "messages":
                        if saw_messages:
                            raise buf.fail(f"a second 'messages' array in chat #{index + 1} of '{section}'")
                        saw_messages = True
                        self._messages(buf, header, on_chat)
                    elif chat_key in ("name", "type", "id"):
                        self._header_field(buf, header, chat_key)
                    else:
                        buf.value()
                if not saw_messages:
                    on_chat(header)  # a chat exported without messages still exists

    def _messages(self, buf: _Buffer, header: ChatHeader, on_chat: Callable[[ChatHeader], Any]) -> None:
        if header.id is None:
            raise buf.fail("a chat's messages come before its 'id'")
        handler = on_chat(header)
        for _ in self._items(buf, f"the messages of {header.describe()}"):
            if buf.peek() != "{":
                if buf.at_limit and self.kind == "single" and buf.pos == len(buf.text):
                    raise SplitPointReached  # the rest of the messages is `walk_tail`'s
                raise buf.fail("a message that is not a JSON object")
            message = buf.value()
            if handler is not None:
                handler(message)

    def walk_tail(self, offset: int, handler: Callable[[dict[str, Any]], None]) -> None:
        """Walk the messages of a single-chat export from byte `offset` (the start of a message, see
        `split_point`) to the end of the file, which must be the end of the messages array and of the
        export object. The part before `offset` is another walk's (`stop_at=offset`); only that walk
        can tell whether `offset` really is where a message starts, so whoever runs this one must
        discard what it did unless the other walk raised SplitPointReached."""
        with self._open() as handle:
            handle.seek(offset)
            buf = self._buffer = _Buffer(handle, self.path, self.chunk_bytes)
            buf.bytes_read = offset
            self.kind = "single"
            while True:
                if buf.peek() != "{":
                    raise buf.fail("a message that is not a JSON object")
                handler(buf.value())
                char = buf.peek()
                if char == ",":
                    buf.pos += 1
                elif char == "]":
                    buf.pos += 1
                    break
                else:
                    raise buf.fail("expected ',' or ']' in the messages")
            buf.expect("}", "the end of the export after its messages")
            if buf.peek() != "":
                raise buf.fail("unexpected data after the end of the export object")


_MESSAGES_START = re.compile(rb'"messages"\s*:\s*\[[ \t\r]*\n([ \t]*)\{')


def split_point(path: Path, min_bytes: int) -> int | None:
    """Where a single-chat export of at least `min_bytes` can be cut in two for two walks: the byte
    offset of a message start near the middle of the file, or None.

    Telegram Desktop pretty-prints its JSON, one array element per line start, and a JSON string holds
    no raw line break, so a line that starts with the indentation of the first message followed by
    `{` is, in a file of that shape, the start of a message. That is only a guess (a file may be of
    another shape, or hold raw line breaks in strings, which the reader accepts): the walk of the
    first part confirms it by reaching the offset exactly at a message start (SplitPointReached).
    """
    try:
        size = os.stat(path).st_size
        if size < min_bytes:
            return None
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
            first = _MESSAGES_START.search(head)
            if first is None or b'"chats"' in head[: first.start()]:
                return None  # not a single-chat export (a full one lists its chats under "chats")
            middle = size // 2
            handle.seek(middle)
            window = handle.read(1 << 20)
    except OSError:
        return None
    found = re.search(b"\n" + re.escape(first.group(1)) + b"\\{", window)
    if found is None or middle + found.end() - 1 <= first.end():
        return None
    return middle + found.end() - 1
