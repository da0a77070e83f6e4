"""Click parameter types shared by commands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click


class UtcDateTime(click.ParamType):
    """A date (2025-01-31) or ISO date-time; without a zone it is taken as UTC."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            self.fail(
                f"{text!r} is not a date; use YYYY-MM-DD or an ISO date-time like 2025-01-31T12:00:00Z",
                param,
                ctx,
            )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


UTC_DATETIME = UtcDateTime()


class KeyValue(click.ParamType):
    """key=value, for query parameters."""

    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key.strip(), val


KEY_VALUE = KeyValue()
