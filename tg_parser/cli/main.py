"""The `tg-parser` command group.

Each `cmd_*.py` module in this package exposes `command` (a click command or group); they are added
here automatically, so a new command is one new module. Errors meant for the operator print one line
and exit with the code of their kind; anything unexpected prints one line too unless --debug is given.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

from tg_parser import __version__
from tg_parser.cli.context import AppContext
from tg_parser.cli.output import log_format, say, say_error
from tg_parser.errors import EXIT_FAILURE, TgParserError


class TgParserGroup(click.Group):
    """Commands are imported when used, so `tg-parser export` does not pay for importing the LLM SDK
    and Telethon (about a second of start-up, which cron pays on every run)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name not in _COMMAND_MODULES:
            return found
        command = importlib.import_module(_COMMAND_MODULES[cmd_name]).command
        self.add_command(command, cmd_name)
        return command

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except (click.ClickException, click.Abort) as exc:
            _click_failure(exc)  # an unknown option of the root command itself
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TgParserError as exc:
            _fail(ctx, exc.one_line(), exc.exit_code, exc)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort) as exc:
            _click_failure(exc)
            raise
        except BrokenPipeError:
            # Output piped into `head` or similar that stopped reading: not an error of ours.
            sys.stderr.close()
            sys.exit(0)
        except KeyboardInterrupt:
            say("Interrupted.", "WARNING")
            sys.exit(130)
        except Exception as exc:
            _fail(
                ctx,
                f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                EXIT_FAILURE,
                exc,
            )


def _fail(ctx: click.Context, message: str, code: int, exc: BaseException) -> None:
    app = ctx.find_object(AppContext)
    if app is not None and app.debug:
        raise exc
    say_error(message)
    ctx.exit(code)


def _click_failure(exc: click.ClickException | click.Abort) -> None:
    """With LOG_FORMAT=json, click's own usage errors (and "Aborted!") are JSON lines too; in text mode
    click prints them as usual (usage, hint, error)."""
    if log_format() != "json":
        return
    if isinstance(exc, click.Abort):
        say("aborted", "ERROR")
        raise click.exceptions.Exit(1)
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        message = "missing command"
    else:
        message = exc.format_message().rstrip(".")
    if ctx is not None:
        message += f" — see '{ctx.command_path} --help'"
    say(message, "ERROR")
    raise click.exceptions.Exit(exc.exit_code)


@click.group(
    cls=TgParserGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, "--version", prog_name="tg-parser", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Collect Telegram channel posts and comments, enrich them with an LLM, group them into topics
    and export knowledge-base entries for RAG systems.

    Storage is SQLite in ./data by default (DB_TYPE=sqlite) or PostgreSQL (DB_TYPE=postgres).
    Settings come from the environment and .env; see docs/CONFIGURATION.md.

    \b
    Examples (the quick start, on the example channel shipped in examples/):
      tg-parser init
      tg-parser ingest --from-export examples/channel_export/result.json
      tg-parser run

    \b
    Exit codes (the same for every command; docs/USER_GUIDE.md):
      0  ok
      1  the work ran and something failed (a source, a step, a health check)
      2  bad usage or input: wrong options, an unknown source id or query name,
         a malformed export file
      3  configuration: a setting, the database, the Telegram session,
         a schema behind the code ('tg-parser db upgrade')
      4  a lock is held by another run; the work was skipped
      5  Telegram rate-limited a source; it is skipped until then

    Errors print one line (what, why, what to do); --debug shows the traceback.
    """
    ctx.obj = AppContext(debug=debug)
    from tg_parser.provenance import reset_origin, set_origin

    token = set_origin("cli", command=ctx.invoked_subcommand)  # who started the runs of this command
    ctx.call_on_close(lambda: reset_origin(token))


@cli.command()
def version() -> None:
    """Print the version.

    \b
    Example:
      tg-parser version
    """
    click.echo(f"tg-parser {__version__}")


def _command_modules() -> dict[str, str]:
    package = importlib.import_module("tg_parser.cli")
    return {
        info.name.removeprefix("cmd_").replace("_", "-"): f"tg_parser.cli.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.startswith("cmd_")
    }


_COMMAND_MODULES = _command_modules()


def main() -> None:
    cli(prog_name="tg-parser")
