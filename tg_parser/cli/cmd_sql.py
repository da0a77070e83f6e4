"""tg-parser sql …: browse the named queries and explain them on the configured database."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option
from tg_parser.cli.types import KEY_VALUE
from tg_parser.db.connect import load_catalog
from tg_parser.db.params import parameter_names, typed_value
from tg_parser.db.resources import STORES
from tg_parser.errors import InvalidInput


@click.group("sql")
def command() -> None:
    """The hand-written SQL: list, show and explain named queries.

    \b
    Examples:
      tg-parser sql list --store raw
      tg-parser sql show sources_get
      tg-parser sql explain sources_get -p source_id=durov
    """


@command.command("list")
@click.option("--store", type=click.Choice(STORES), help="Only this store's queries.")
@json_option
@pass_app
def list_queries(app: AppContext, store: str | None, as_json: bool) -> None:
    """List every named query for the configured dialect, with where it comes from.

    \b
    Examples:
      tg-parser sql list
      tg-parser sql list --store processing --json
    """
    catalog = load_catalog(app.settings)
    queries = [q for q in catalog if store is None or q.store == store]
    rows = [
        {
            "name": q.name,
            "store": q.store,
            "origin": q.origin,
            "params": ", ".join(parameter_names(q.sql)),
            "summary": q.doc.split("\n")[0][:80],
            "file": str(q.path),
            "line": q.line,
        }
        for q in queries
    ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["name", "store", "origin", "summary"])


@command.command("show")
@click.argument("name")
@pass_app
def show(app: AppContext, name: str) -> None:
    """Print a query with its documentation and origin file.

    \b
    Example:
      tg-parser sql show sources_get
    """
    query = load_catalog(app.settings).get(name)
    click.echo(f"-- name: {query.name}")
    for line in query.doc.splitlines():
        click.echo(f"-- {line}".rstrip())
    click.echo(f"-- store: {query.store}; origin: {query.origin}; file: {query.location}")
    params = parameter_names(query.sql)
    click.echo(f"-- parameters: {', '.join(':' + p for p in params) if params else '(none)'}")
    click.echo(query.sql + ";")


@command.command("explain")
@click.argument("name")
@click.option(
    "-p", "--param", "params", multiple=True, type=KEY_VALUE, help="A parameter as key=value (repeatable)."
)
@pass_app
def explain(app: AppContext, name: str, params: tuple[tuple[str, str], ...]) -> None:
    """Show the plan of a named query on the configured database.

    Without -p the query's `-- example:` values are used. Values are typed: integers, true/false,
    null, JSON arrays/objects and ISO dates are recognised; anything else is text. With -p, parameters
    not given are NULL.

    \b
    Examples:
      tg-parser sql explain raw_count_messages
      tg-parser sql explain processing_select_candidates -p limit=100
      tg-parser sql explain sources_get -p source_id=durov
    """
    db = app.database()
    query = db.query(name)
    if params:
        given = {key: typed_value(value) for key, value in params}
    else:
        given = {key: typed_value(value) for key, value in (query.example or {}).items()}
    unknown = sorted(set(given) - set(parameter_names(query.sql)))
    if unknown:
        raise InvalidInput(
            f"query {name!r} has no parameter {', '.join(unknown)}",
            f"its parameters are: {', '.join(parameter_names(query.sql)) or '(none)'}",
        )
    values = {p: given.get(p) for p in parameter_names(query.sql)}
    try:
        plan = db.explain(name, values)
    except Exception as exc:  # the database's own complaint about a value (bad number, bad date, ...)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidInput(
            f"the database rejected query {name!r} with these parameters: {detail}",
            "check the -p values: integers, true/false, null, JSON or ISO dates are typed, the rest is text",
        ) from None
    for line in plan:
        click.echo(line)
