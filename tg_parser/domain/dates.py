"""Parsing the dates an operator or an API client types: one rule for `--since`/`--until` and the API."""

from __future__ import annotations

from datetime import UTC, datetime

# Telegram has no message older than 1970, and a year past 9998 cannot be shifted into UTC (or stored
# by every driver) without overflowing.
MIN_YEAR, MAX_YEAR = 1970, 9998


def parse_utc(text: str) -> datetime:
    """A date (2025-01-31) or ISO date-time in UTC; without a zone it is taken as UTC.

    Raises ValueError with what is wrong, worded to follow the value ("'x' is not a date; ...").
    """
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError("not a date; use YYYY-MM-DD or an ISO date-time like 2025-01-31T12:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(f"out of range ({MIN_YEAR}-{MAX_YEAR})")
    return parsed.astimezone(UTC)
