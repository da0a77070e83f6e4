"""Capped exponential backoff with jitter: the one retry-delay rule for Telegram and LLM requests."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Attempt n waits a random time between (1 - jitter) and all of min(cap, base·2ⁿ) seconds.

    Jitter spreads the retries of many workers that failed at once, so they do not return together.
    """

    base: float = 1.0
    cap: float = 60.0
    max_attempts: int = 5  # tries of one request before the caller gives up
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2**attempt))
        draw = (rng or random).random()
        return ceiling * (1 - self.jitter) + draw * ceiling * self.jitter
