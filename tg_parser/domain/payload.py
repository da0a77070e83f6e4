"""The raw_payload size cap: a message's payload is kept whole up to 256 KiB; above that the key fields
are kept, the rest dropped, and the cut is recorded (flag + original size) so nothing is lost silently.

The size is that of the JSON the raw store writes, so these functions measure with the serialiser they
are given: the store's, `db.codec.dump_json_bytes` (the domain holds the rule, not an encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PAYLOAD_CAP_BYTES = 256 * 1024

KEY_FIELDS = (
    "id",
    "date",
    "edit_date",
    "views",
    "forwards",
    "replies",
    "grouped_id",
    "post_author",
    "from_id",
    "reply_to",
    "media",
    "media_type",
    "fwd_from",
    "via_bot_id",
    "type",
)


Dumps = Callable[[Any], bytes]  # compact UTF-8 JSON of a value


def payload_size(payload: dict[str, Any], dumps: Dumps) -> int:
    return len(dumps(payload))


@dataclass(frozen=True)
class CappedPayload:
    payload: dict[str, Any]
    text: str  # the JSON of `payload`, serialised once for storage
    truncated: bool
    original_size: int


def cap_payload_text(payload: dict[str, Any], dumps: Dumps, cap: int = PAYLOAD_CAP_BYTES) -> CappedPayload:
    """The payload to store, already serialised, with the cut recorded when it was over the cap."""
    encoded = dumps(payload)
    if len(encoded) <= cap:
        return CappedPayload(payload, encoded.decode("utf-8"), False, len(encoded))
    kept, _, size = cap_payload(payload, dumps, cap)
    return CappedPayload(kept, dumps(kept).decode("utf-8"), True, size)


def cap_payload(
    payload: dict[str, Any], dumps: Dumps, cap: int = PAYLOAD_CAP_BYTES
) -> tuple[dict[str, Any], bool, int]:
    """Return (payload to store, truncated?, original size in bytes)."""
    size = payload_size(payload, dumps)
    if size <= cap:
        return payload, False, size
    kept = {key: payload[key] for key in KEY_FIELDS if key in payload}
    if (
        payload_size(kept, dumps) > cap
    ):  # even the key fields are huge (e.g. a giant media dict): keep scalars only
        kept = {
            k: v for k, v in kept.items() if isinstance(v, int | float | str | bool) and len(str(v)) < 1024
        }
    kept["_truncated"] = True
    kept["_original_bytes"] = size
    return kept, True, size
