"""Opaque keyset cursors: the last row's key, base64url-encoded JSON. A client passes `next` back as
`cursor`; anything it did not get from us is refused with 422, never guessed at."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson

from tg_parser.api.errors import bad_request


def encode(kind: str, key: list[Any]) -> str:
    raw = orjson.dumps([kind, *key], option=orjson.OPT_UTC_Z)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, cursor: str | None, shape: tuple[type, ...]) -> list[Any] | None:
    """The key inside a cursor of `kind` whose parts have the types in `shape` (datetime from text)."""
    if cursor is None or cursor == "":
        return None
    try:
        if len(cursor) > 1000:
            raise ValueError
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, list) or len(data) != len(shape) + 1 or data[0] != kind:
            raise ValueError
        key = []
        for value, wanted in zip(data[1:], shape, strict=True):
            if wanted is datetime:
                if not isinstance(value, str):
                    raise ValueError
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if value.tzinfo is None:
                    raise ValueError
            elif wanted is int:
                if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 2**63:
                    raise ValueError
            elif not isinstance(value, wanted):
                raise ValueError
            key.append(value)
        return key
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad_request("not a cursor this API returned", "cursor") from None
