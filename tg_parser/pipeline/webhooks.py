"""Completion webhooks: a JSON POST signed with HMAC-SHA256 over the exact body, retried with backoff.

The receiver checks `X-TG-Parser-Signature: sha256=<hex>` against HMAC-SHA256(WEBHOOK_SECRET, body)
(docs/API.md has a snippet). Delivery is at least once: a receiver may see a run twice (after a retry
whose first answer was lost) and should treat `run_id` as the idempotency key.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from tg_parser import __version__
from tg_parser.backoff import Backoff

SIGNATURE_HEADER = "X-TG-Parser-Signature"
WEBHOOK_BACKOFF = Backoff(base=1.0, cap=60.0)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def valid_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= 2000


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    error: str | None


def deliver(
    url: str,
    body: bytes,
    secret: str,
    *,
    event: str,
    timeout: float,
    max_attempts: int,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
) -> Delivery:
    """POST `body` until a 2xx answer, a 4xx that retrying cannot fix, `max_attempts` or a stop."""
    stop = stop or threading.Event()
    backoff = backoff or WEBHOOK_BACKOFF
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"tg-parser/{__version__}",
        "X-TG-Parser-Event": event,
        SIGNATURE_HEADER: sign(secret, body),
    }
    error = None
    for attempt in range(1, max_attempts + 1):
        retry = True
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                answer.read(65_536)
            return Delivery(True, attempt, None)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            retry = exc.code >= 500 or exc.code in (408, 425, 429)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"{type(exc).__name__}: {reason}"[:300]
        if not retry or attempt == max_attempts or stop.wait(backoff.delay(attempt - 1)):
            return Delivery(False, attempt, error)
    return Delivery(False, max_attempts, error)
