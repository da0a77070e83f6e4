"""tg-parser telegram …: log a Telegram account in (the only interactive command) and check the session."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option
from tg_parser.logging import register_secrets


@click.group("telegram")
def command() -> None:
    """Log in to Telegram and check the stored session.

    \b
    Examples:
      tg-parser telegram login
      tg-parser telegram status
    """


@command.command("login")
@click.option("--phone", help="The account's phone number in international format (asked if omitted).")
@pass_app
def login(app: AppContext, phone: str | None) -> None:
    """Log in interactively (phone, code, two-step password) and print how to store the session.

    With TELEGRAM_SESSION_FILE set, the session is written to that file. Otherwise a string session is
    printed once: put it in .env as TELEGRAM_SESSION (keep it secret — it grants access to the account).
    Every other command runs unattended with that session.

    \b
    Examples:
      tg-parser telegram login
      tg-parser telegram login --phone +41791234567
    """
    from tg_parser.ingestion.login import login as do_login

    settings = app.settings
    result = do_login(
        settings,
        ask_phone=lambda: phone or click.prompt("Phone number (international format, e.g. +41791234567)"),
        ask_code=lambda: click.prompt("Login code Telegram sent you"),
        ask_password=lambda: click.prompt("Two-step verification password", hide_input=True),
        say=click.echo,
    )
    state = "Already logged in" if result.already else "Logged in"
    click.echo(f"{state} as {result.display_name}.")
    if result.session_file:
        click.echo(f"The session is stored in {result.session_file} (TELEGRAM_SESSION_FILE).")
        return
    if result.string_session:
        register_secrets([result.string_session])  # never let it reach a log line from here on
        if settings.telegram_session is not None:
            click.echo("The session in TELEGRAM_SESSION is valid; nothing to change.")
            return
        click.echo("Add this line to .env (or the service's secrets); it is shown only now:")
        click.echo("")
        click.echo(f"TELEGRAM_SESSION={result.string_session}")
        click.echo("")
        click.echo("Keep it secret: anyone holding it can use this Telegram account.")


@command.command("status")
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Check without prompting that the configured session is logged in (exit 3 if not).

    It needs no database, so it takes no session lock; a session file in use by a run is reported as
    such (exit 4).

    \b
    Examples:
      tg-parser telegram status
      tg-parser telegram status --json
    """
    from tg_parser.ingestion.client import TelegramGateway

    with TelegramGateway.from_settings(app.settings) as gateway:
        gateway.open()
        me = gateway.run(gateway.client.get_me())
    name = " ".join(p for p in (getattr(me, "first_name", None), getattr(me, "last_name", None)) if p)
    username = getattr(me, "username", None)
    if as_json:
        emit_json({"logged_in": True, "name": name, "username": username})
        return
    click.echo(f"Logged in as {name or '(no name)'}" + (f" (@{username})" if username else ""))
