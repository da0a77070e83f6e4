"""Keyset cursors (api/pagination.py): what the API hands out comes back as the same key, exactly; anything
else — forged, truncated, from another list, of the wrong shape — is refused with 422 naming the `cursor`
field, never guessed at and never a 500. (Through the routes: test_api_pagination.py, test_api_hostile.py.)"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from tg_parser.api.errors import ApiError
from tg_parser.api.pagination import decode, encode

SHAPE = (datetime, int, str)


def forged(*parts: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def test_a_cursor_the_api_made_decodes_to_the_same_key():
    when = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    key = [when, -(2**63) + 1, "tg:1:post:9"]
    assert decode("messages", encode("messages", key), SHAPE) == key
    # An offset other than UTC is the same instant, and comes back as it.
    other = datetime(2025, 3, 4, 8, 6, 7, 891011, tzinfo=timezone(timedelta(hours=3)))
    assert decode("messages", encode("messages", [other, 1, "x"]), SHAPE)[0] == when
    assert decode("messages", None, SHAPE) is None
    assert decode("messages", "", SHAPE) is None


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(encode("topics", [datetime(2025, 1, 1, tzinfo=UTC), 1, "x"]), id="another-list"),
        pytest.param(forged("messages", "2025-01-01T00:00:00Z", 1), id="too-few-parts"),
        pytest.param(forged("messages", "2025-01-01T00:00:00Z", 1, "x", 2), id="too-many-parts"),
        pytest.param(forged("messages", 1735689600, 1, "x"), id="date-as-number"),
        pytest.param(forged("messages", "2025-01-01T00:00:00", 1, "x"), id="date-without-zone"),
        pytest.param(forged("messages", "yesterday", 1, "x"), id="not-a-date"),
        pytest.param(forged("messages", "2025-01-01T00:00:00Z", True, "x"), id="bool-as-int"),
        pytest.param(forged("messages", "2025-01-01T00:00:00Z", 1.5, "x"), id="float-as-int"),
        pytest.param(forged("messages", "2025-01-01T00:00:00Z", 2**63, "x"), id="beyond-bigint"),
        pytest.param(forged("messages", "2025-01-01T00:00:00Z", 1, 7), id="number-as-text"),
        pytest.param(forged({"kind": "messages"}), id="an-object"),
        pytest.param(base64.urlsafe_b64encode(b"[1, 2").decode(), id="not-json"),
        pytest.param("***not base64***", id="not-base64"),
        pytest.param("A" * 1001, id="overlong"),
    ],
)
def test_anything_else_is_refused_with_422_on_the_cursor_field(cursor):
    with pytest.raises(ApiError) as caught:
        decode("messages", cursor, SHAPE)
    assert caught.value.status == 422
    assert caught.value.message == "cursor: not a cursor this API returned"
