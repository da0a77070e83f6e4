"""Run reports as `tg-parser runs list|show` shows them: status, who started it, duration, documents,
tokens and the estimated cost (tg_parser.prices), the steps of a pipeline run and its errors.

A report's cost is estimated when it is shown, from its tokens and the current price table, so an
LLM_PRICES correction applies to past runs too. A pipeline run (`kind` run: `tg-parser run`, a run
queued through the API) lists its steps, each with the run id of its own report (process, topicize).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tg_parser.domain.models import RunReport
from tg_parser.prices import TokenPrice, estimate_cost


def _cost(model: str | None, counts: Mapping[str, Any], prices: Mapping[str, TokenPrice]) -> float | None:
    return estimate_cost(
        model, int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0), prices
    )


def _documents(report: RunReport) -> int | None:
    """Documents written: a process run's, or the sum of a pipeline run's process steps."""
    key = {"process": "processed", "run": "documents"}.get(report.kind)
    value = report.counts.get(key) if key else None
    return None if value is None else int(value)


def summarize(report: RunReport, prices: Mapping[str, TokenPrice], now: datetime) -> dict[str, Any]:
    """One run for `runs list`: what it was, who started it, how long, what it did and cost."""
    counts = report.counts
    steps = counts.get("steps") if report.kind == "run" else None
    if steps is not None:  # a pipeline run: each step priced by its own model
        costs = [_cost(step.get("model"), step, prices) for step in steps]
        cost = None if None in costs else sum(c or 0.0 for c in costs)
        models = sorted({step["model"] for step in steps if step.get("model")})
        model = ", ".join(models) or None
    else:
        model = report.params.get("model")
        cost = _cost(model, counts, prices)
    documents = _documents(report)
    end = report.finished_at or now
    return {
        "run_id": report.run_id,
        "kind": report.kind,
        "status": report.status,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "duration_s": round((end - report.started_at).total_seconds(), 3),
        "started_by": report.params.get("started_by"),
        "model": model,
        "documents": documents,
        "input_tokens": int(counts.get("input_tokens") or 0),
        "output_tokens": int(counts.get("output_tokens") or 0),
        "estimated_cost_usd": _rounded(cost),
        "cost_per_document_usd": round(cost / documents, 8) if cost is not None and documents else None,
        "error": report.error,
    }


def detail(report: RunReport, prices: Mapping[str, TokenPrice], now: datetime) -> dict[str, Any]:
    """One run for `runs show`: the summary, its steps (a pipeline run), failures by class, and the
    stored params and counts as they are."""
    shown = summarize(report, prices, now)
    steps = report.counts.get("steps") if report.kind == "run" else None
    shown["steps"] = (
        [{**step, "estimated_cost_usd": _rounded(_cost(step.get("model"), step, prices))} for step in steps]
        if steps is not None
        else None
    )
    shown["failures_by_class"] = report.counts.get("failures_by_class") or {}
    shown["params"] = {k: v for k, v in report.params.items() if k != "started_by"}
    shown["counts"] = {k: v for k, v in report.counts.items() if k != "steps"}
    return shown


def _rounded(cost: float | None) -> float | None:
    return None if cost is None else round(cost, 6)


def started_by_text(started_by: Mapping[str, Any] | None) -> str:
    """'cli process, alice@host pid 123' / 'api (key ci), worker@host pid 9'; '' for older reports."""
    if not started_by:
        return ""
    origin = str(started_by.get("origin") or "?")
    if started_by.get("command"):
        origin += f" {started_by['command']}"
    if started_by.get("requested_by"):
        origin += f" (key {started_by['requested_by']})"
    who = f"{started_by.get('user') or '?'}@{started_by.get('host') or '?'}"
    return f"{origin}, {who} pid {started_by.get('pid')}"
