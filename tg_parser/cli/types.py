"""Click parameter types shared by commands."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import click

from tg_parser.domain.dates import parse_utc


class UtcDateTime(click.ParamType):
    """A date (2025-01-31) or ISO date-time; without a zone it is taken as UTC."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            return parse_utc(text)
        except ValueError as exc:
            self.fail(f"{text!r} is {exc}", param, ctx)


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


class FiniteFloatRange(click.FloatRange):
    """A float range that also refuses nan (which compares false to both bounds) and infinities."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
