"""Token prices per model and the estimated cost of a run, a document or a dry run.

Prices are US dollars per million tokens, standard (non-batch) tier, without prompt-cache discounts:
an estimate, never a bill. DEFAULT_PRICES holds the common OpenAI models as published when
PRICES_AS_OF was written (docs/CONFIGURATION.md says where they come from); LLM_PRICES overrides or
adds models, e.g. `{"my-proxy-model": {"input": 0.5, "output": 1.5}}`. A model with no price (a local
model, a name not listed) has no cost: it is shown as unknown, never as 0.

Output tokens as the API reports them include reasoning tokens, which are billed at the output rate,
so the cost is input x input price + output x output price.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# When DEFAULT_PRICES was compiled (see docs/CONFIGURATION.md for the source).
PRICES_AS_OF = "2026-12-07"


@dataclass(frozen=True)
class TokenPrice:
    """US dollars per million input and output tokens."""

    input: float
    output: float


DEFAULT_PRICES: dict[str, TokenPrice] = {
    "gpt-5.2": TokenPrice(1.75, 14.00),
    "gpt-5.1": TokenPrice(1.25, 10.00),
    "gpt-5": TokenPrice(1.25, 10.00),
    "gpt-5-mini": TokenPrice(0.25, 2.00),
    "gpt-5-nano": TokenPrice(0.05, 0.40),
    "gpt-4.1": TokenPrice(2.00, 8.00),
    "gpt-4.1-mini": TokenPrice(0.40, 1.60),
    "gpt-4.1-nano": TokenPrice(0.10, 0.40),
    "gpt-4o": TokenPrice(2.50, 10.00),
    "gpt-4o-mini": TokenPrice(0.15, 0.60),
    "o3": TokenPrice(2.00, 8.00),
    "o3-mini": TokenPrice(1.10, 4.40),
    "o4-mini": TokenPrice(1.10, 4.40),
    "o1": TokenPrice(15.00, 60.00),
}

# A dated snapshot ("gpt-5-mini-2025-08-07") is priced as its model.
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def price_table(overrides: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, TokenPrice]:
    """DEFAULT_PRICES with LLM_PRICES (model -> {"input": ..., "output": ...}) laid over it."""
    table = dict(DEFAULT_PRICES)
    for model, price in (overrides or {}).items():
        table[model.lower()] = TokenPrice(float(price["input"]), float(price["output"]))
    return table


def price_for(model: str | None, table: Mapping[str, TokenPrice]) -> TokenPrice | None:
    """The model's price: its exact name, else its name without a snapshot date; None when unknown.
    No prefix matching: "gpt-5.2-pro" must not be priced as "gpt-5.2"."""
    if not model:
        return None
    name = model.lower()
    return table.get(name) or table.get(_SNAPSHOT.sub("", name))


def estimate_cost(
    model: str | None, input_tokens: int, output_tokens: int, table: Mapping[str, TokenPrice]
) -> float | None:
    """Estimated US dollars for these tokens; 0 when nothing was sent, None when the model has no price."""
    if not input_tokens and not output_tokens:
        return 0.0
    price = price_for(model, table)
    if price is None:
        return None
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def format_cost(cost: float | None) -> str:
    """'$0.0123', '$12.50', or 'unknown (no price for the model: set LLM_PRICES)'."""
    if cost is None:
        return "unknown (no price for the model: see LLM_PRICES)"
    if cost == 0:
        return "$0"
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.4g}"
