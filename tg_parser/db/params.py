"""Translate `:name` parameters into psycopg's `%(name)s` without touching anything else.

A small scanner walks the statement once and leaves alone: `::casts`, '…' string literals (with ''
escapes), E'…' strings with backslash escapes, "quoted identifiers", $tag$ dollar-quoted bodies $tag$,
-- line comments and /* nested block comments */. Every literal `%` outside parameters is doubled so
psycopg does not read it as a placeholder. SQLite understands `:name` natively and needs none of this.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

_NAME_START = re.compile(r"[A-Za-z_]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def to_pyformat(sql: str) -> tuple[str, list[str]]:
    """Return the psycopg form of `sql` and the parameter names it uses, in order of appearance."""
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        if ch == "-" and nxt == "-":
            end = sql.find("\n", i)
            end = n if end == -1 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "/" and nxt == "*":
            end = _block_comment_end(sql, i)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "'":
            backslashes = (
                i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            )
            end = _quoted_end(sql, i, "'", backslashes)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == '"':
            end = _quoted_end(sql, i, '"', False)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif (
            ch == "$" and (match := _DOLLAR_TAG.match(sql, i)) and not (i > 0 and _is_ident_char(sql[i - 1]))
        ):
            tag = match.group(0)
            close = sql.find(tag, match.end())
            end = n if close == -1 else close + len(tag)
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == ":" and nxt == ":":
            out.append("::")
            i += 2
        elif ch == ":" and _NAME_START.match(nxt) and not (i > 0 and sql[i - 1] == ":"):
            match = _NAME.match(sql, i + 1)
            assert match is not None
            name = match.group(0)
            names.append(name)
            out.append(f"%({name})s")
            i = match.end()
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), names


_PLACEHOLDER = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s|%%")


def to_numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with numbered placeholders (`:name` → `?N`, N the 1-based position of the name among the
    distinct names in order of first appearance) and those names: SQLite binds a plain tuple to it.

    Built from the psycopg form, where every literal `%` is doubled, so `%(name)s` can only be a
    parameter and `%%` is put back as `%`."""
    pyformat, names = to_pyformat(sql)
    order = {name: None for name in names}
    position = {name: index for index, name in enumerate(order, 1)}

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        return "%" if name is None else f"?{position[name]}"

    return _PLACEHOLDER.sub(placeholder, pyformat), tuple(order)


def parameter_names(sql: str) -> list[str]:
    """The distinct `:name` parameters of a statement, in order of first appearance."""
    seen: dict[str, None] = {}
    for name in to_pyformat(sql)[1]:
        seen.setdefault(name, None)
    return list(seen)


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _quoted_end(sql: str, start: int, quote: str, backslashes: bool) -> int:
    i, n = start + 1, len(sql)
    while i < n:
        ch = sql[i]
        if backslashes and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _block_comment_end(sql: str, start: int) -> int:
    depth, i, n = 0, start, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def typed_value(value: str) -> object:
    """A parameter value written as text (`-p key=value`, a query's `-- example:` line), typed.

    Integers, true/false, null/none, JSON arrays and objects, and ISO dates or date-times (UTC when no
    zone is given) are recognised; anything else stays text.
    """
    lowered = value.lower()
    if lowered in ("null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(value)
    except ValueError:
        pass
    if value.startswith(("[", "{")):
        try:
            return json.loads(value)
        except ValueError:
            pass
    if len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-":
        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return value
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return value
