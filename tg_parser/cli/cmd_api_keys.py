"""tg-parser api-keys: create, list and revoke the HTTP API's keys."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option
from tg_parser.errors import InvalidInput


@click.group("api-keys")
def command() -> None:
    """Create, list and revoke API keys (only a hash of each key is stored).

    \b
    Scopes: read (GET routes), write (also start runs and change sources), admin (also manage keys
    over the API).

    \b
    Examples:
      tg-parser api-keys create dashboards --scope read
      tg-parser api-keys list --json
      tg-parser api-keys revoke dashboards
    """


@command.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True)
@json_option
@pass_app
def create(app: AppContext, name: str, scope: str, as_json: bool) -> None:
    """Create a key named NAME and print it once: store it now, it cannot be shown again.

    \b
    Example:
      tg-parser api-keys create ci-runner --scope write
    """
    from tg_parser.api.keys import create_key

    token, row = create_key(app.database(), name, scope)
    if as_json:
        emit_json({"key": row, "token": token})
        return
    click.echo(token)
    click.echo(f"Created {scope} key {name!r}. This is the only time it is shown.", err=True)


@command.command("list")
@json_option
@pass_app
def list_keys(app: AppContext, as_json: bool) -> None:
    """List keys: name, scope, created, revoked (never the key).

    \b
    Example:
      tg-parser api-keys list
    """
    from tg_parser.stores.api import ApiStore

    rows = ApiStore(app.database()).list_keys()
    if as_json:
        emit_json(rows)
        return
    emit_table(
        [{**r, "revoked_at": r["revoked_at"] or ""} for r in rows],
        ["name", "scope", "created_at", "revoked_at"],
        empty="No API keys yet. Create one with: tg-parser api-keys create NAME",
    )


@command.command("revoke")
@click.argument("name")
@pass_app
def revoke(app: AppContext, name: str) -> None:
    """Revoke the key named NAME (API processes stop accepting it within API_KEY_CACHE_SECONDS).

    \b
    Example:
      tg-parser api-keys revoke dashboards
    """
    from tg_parser.stores.api import ApiStore

    if not ApiStore(app.database()).revoke_key(name):
        raise InvalidInput(f"no active key named {name!r}", "see 'tg-parser api-keys list'")
    click.echo(f"Revoked {name}")
