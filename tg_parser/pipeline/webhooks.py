"""Completion webhooks: a JSON POST signed with HMAC-SHA256 over the exact body, retried with backoff.

The receiver checks `X-TG-Parser-Signature: sha256=<hex>` against HMAC-SHA256(WEBHOOK_SECRET, body)
(docs/API.md has a snippet). Delivery is at least once: a receiver may see a run twice (after a retry
whose first answer was lost) and should treat `run_id` as the idempotency key.

A webhook URL is a request the server makes on a caller's behalf, so by default it may only reach public
addresses: a URL naming (or resolving to) a loopback, private, link-local or otherwise non-global address
is refused (WEBHOOK_ALLOW_PRIVATE=true lifts that, for receivers on the operator's own network).
Redirects are not followed: a 3xx is a failed delivery, never a GET somewhere else counted as delivered.
The name is resolved and checked right before each attempt; a DNS answer that changes between that check
and urllib's own connection (DNS rebinding) is not caught: pinning the checked address would need a
connection class of our own for HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
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
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= 2000
    except ValueError:  # an unclosed "[" of an IPv6 host, a port that is no number
        return False


def _non_global(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    return not (mapped or ip).is_global


def literal_destination_refused(url: str) -> str | None:
    """Why a webhook URL is refused without resolving it (a request answers at once): its host is
    `localhost` or a non-global IP literal. None when it may be tried."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback name"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked when it is resolved, before each delivery
    return f"{host} is not a public address" if _non_global(host) else None


def destination_refused(url: str) -> str | None:
    """Why a delivery to `url` is refused: its host names or resolves to a non-global address."""
    literal = literal_destination_refused(url)
    if literal:
        return literal
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        return f"{parts.hostname} does not resolve ({exc.strerror or exc})"
    for info in infos:
        address = str(info[4][0])
        if _non_global(address):
            return f"{parts.hostname} resolves to {address}, not a public address"
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


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
    allow_private: bool = False,
) -> Delivery:
    """POST `body` until a 2xx answer, a 3xx or 4xx that retrying cannot fix, `max_attempts` or a stop.
    A destination that is not public (unless `allow_private`) is not contacted at all."""
    stop = stop or threading.Event()
    if not allow_private:
        refused = destination_refused(url)
        if refused:
            return Delivery(False, 0, f"refused: {refused} (WEBHOOK_ALLOW_PRIVATE=true allows it)")
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
            with _OPENER.open(request, timeout=timeout) as answer:
                answer.read(65_536)
            return Delivery(True, attempt, None)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 300 <= exc.code < 400:
                error += " (redirects are not followed: give the final URL)"
            retry = exc.code >= 500 or exc.code in (408, 425, 429)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"{type(exc).__name__}: {reason}"[:300]
        if not retry or attempt == max_attempts or stop.wait(backoff.delay(attempt - 1)):
            return Delivery(False, attempt, error)
    return Delivery(False, max_attempts, error)
