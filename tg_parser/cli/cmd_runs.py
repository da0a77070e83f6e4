"""tg-parser runs: past runs (process, topicize, pipeline runs, prunes) with their tokens and cost."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option
from tg_parser.errors import InvalidInput
from tg_parser.prices import format_cost, price_table
from tg_parser.run_reports import detail, started_by_text, summarize

STATUSES = ("running", "ok", "partial", "failed", "interrupted")
KINDS = ("process", "topicize", "export", "run", "ingest", "prune")


@click.group("runs")
def command() -> None:
    """Past runs: status, who started them, duration, documents, tokens and estimated cost.

    \b
    Every process, topicize and pipeline run (`tg-parser run`, runs queued through the API) and every
    prune leaves a run report. The cost is estimated from the tokens with the prices of
    LLM_PRICES over the built-in table (docs/CONFIGURATION.md): an estimate, not a bill.

    \b
    Examples:
      tg-parser runs list
      tg-parser runs list --status failed --limit 5
      tg-parser runs show RUN_ID --json
    """


@command.command("list")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="At most N runs."
)
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--kind", type=click.Choice(KINDS), help="Only runs of this kind.")
@json_option
@pass_app
def list_runs(app: AppContext, limit: int, status: str | None, kind: str | None, as_json: bool) -> None:
    """List runs, newest first.

    \b
    Examples:
      tg-parser runs list
      tg-parser runs list --kind process --json
    """
    from tg_parser.stores import ProcessingStore

    prices = price_table(app.settings.llm_prices)
    store = ProcessingStore(app.database())
    now = datetime.now(UTC)
    rows = [summarize(r, prices, now) for r in store.recent_runs(kind, limit, status)]
    if as_json:
        emit_json(rows)
        return
    emit_table(
        [_row(r) for r in rows],
        ["run_id", "kind", "status", "started_at", "duration", "documents", "tokens", "cost", "started_by"],
        empty="No runs recorded yet." if status is None and kind is None else "No runs match.",
    )


@command.command("show")
@click.argument("run_id")
@json_option
@pass_app
def show_run(app: AppContext, run_id: str, as_json: bool) -> None:
    """Show one run: its counts, tokens, cost (in all and per document), steps and errors.

    \b
    Example:
      tg-parser runs show 46276ad56a62
    """
    from tg_parser.stores import ProcessingStore

    prices = price_table(app.settings.llm_prices)
    report = ProcessingStore(app.database()).get_run(run_id)
    if report is None:
        raise InvalidInput(f"no run {run_id!r}", "see 'tg-parser runs list' for the run ids")
    shown = detail(report, prices, datetime.now(UTC))
    if as_json:
        emit_json(shown)
        return
    _print_detail(shown)


def _tokens(row: dict[str, Any]) -> str:
    return f"{row['input_tokens']:,} / {row['output_tokens']:,}"


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "duration": f"{row['duration_s']:.1f} s",
        "tokens": _tokens(row),
        "cost": "?" if row["estimated_cost_usd"] is None else format_cost(row["estimated_cost_usd"]),
        "started_by": started_by_text(row["started_by"]),
    }


def _print_detail(shown: dict[str, Any]) -> None:
    cost = shown["estimated_cost_usd"]
    per_document = shown["cost_per_document_usd"]
    lines = [
        ("Run", f"{shown['run_id']} ({shown['kind']})"),
        ("Status", shown["status"]),
        ("Started", f"{_ts(shown['started_at'])} by {started_by_text(shown['started_by']) or 'unknown'}"),
        ("Finished", _ts(shown["finished_at"]) or "not yet"),
        ("Duration", f"{shown['duration_s']:.1f} s"),
        ("Model", shown["model"] or ""),
        ("Documents", "" if shown["documents"] is None else f"{shown['documents']:,}"),
        ("Tokens", f"in {shown['input_tokens']:,} / out {shown['output_tokens']:,}"),
        (
            "Est. cost",
            format_cost(cost) + (f" ({format_cost(per_document)} per document)" if per_document else ""),
        ),
    ]
    if shown["error"]:
        lines.append(("Error", shown["error"]))
    for name, value in lines:
        click.echo(f"{name + ':':<11}{value}")
    if shown["failures_by_class"]:
        by_class = ", ".join(f"{name}: {n}" for name, n in shown["failures_by_class"].items())
        click.echo(f"{'Failures:':<11}{by_class} (details: tg-parser process --list-failures)")
    if shown["steps"] is not None:
        click.echo("Steps:")
        emit_table(
            [
                {
                    **step,
                    "source": step.get("source_id") or "(all)",
                    "ok": bool(step.get("ok")),
                    "tokens": f"{step.get('input_tokens', 0):,} / {step.get('output_tokens', 0):,}",
                    "cost": format_cost(step["estimated_cost_usd"]) if step.get("run_id") else "",
                }
                for step in shown["steps"]
            ],
            ["source", "step", "ok", "run_id", "tokens", "cost", "detail"],
            empty="(no step ran)",
        )
    counts = {k: v for k, v in shown["counts"].items() if k not in ("failures_by_class",)}
    if counts:
        click.echo("Counts:    " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _ts(value: datetime | None) -> str:
    if value is None:
        return ""
    from tg_parser.db.codec import format_timestamp

    return format_timestamp(value)
