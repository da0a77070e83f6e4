"""Who is calling: the API key in `Authorization: Bearer` or `X-API-Key`, its scope, and its rate limit.

A verified key is trusted for API_KEY_CACHE_SECONDS (so a revocation takes effect within that time)
instead of a database read per request; the rate-limit counter is one upsert per request, in the
database, so every API process shares it.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

from tg_parser.api import keys
from tg_parser.api.errors import ApiError, forbidden, unauthorized
from tg_parser.config import Settings
from tg_parser.stores.api import ApiStore

# The most requests one process reserves from a window at once (one database round trip per block).
BLOCK_MAX = 32


@dataclass(frozen=True)
class Caller:
    key_id: str | None
    name: str
    scope: str


ANONYMOUS_ADMIN = Caller(None, "anonymous", "admin")  # API_REQUIRE_KEYS=false (loopback only)
MAX_CACHED_KEYS = 10_000  # verified (or unknown) key ids remembered for API_KEY_CACHE_SECONDS


class Gatekeeper:
    def __init__(self, settings: Settings, store: ApiStore, clock=time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._cache: dict[str, tuple[float, Caller | None, str | None]] = {}
        self._lock = threading.Lock()
        self._last_prune = 0.0
        # (key id, group) -> [window start, reserved requests not yet used, the window's last known total]
        self._buckets: dict[tuple[str, str], list[int]] = {}

    # --- identity ---------------------------------------------------------------------------------

    def caller(self, request: Request) -> Caller:
        """The caller a request's key identifies; 401 when there is no valid key."""
        if not self.settings.api_require_keys:
            return ANONYMOUS_ADMIN
        token = _presented_key(request)
        if token is None:
            raise unauthorized()
        parts = keys.split(token)
        if parts is None:
            raise unauthorized()
        key_id, secret = parts
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is None or now - cached[0] > self.settings.api_key_cache_seconds:
            row = self.store.get_key(key_id)
            caller = None
            secret_hash = None
            if row is not None and row["revoked_at"] is None:
                caller = Caller(key_id, row["name"], row["scope"])
                secret_hash = row["secret_hash"]
            cached = (now, caller, secret_hash)
            with self._lock:
                if len(self._cache) >= MAX_CACHED_KEYS:
                    self._evict(now)
                self._cache[key_id] = cached
        _, caller, secret_hash = cached
        # Compare even when the key is unknown, so timing does not tell an unknown key from a wrong secret.
        matches = keys.secret_matches(secret, secret_hash or "0" * 64)
        if caller is None or not matches:
            raise unauthorized()
        return caller

    def _evict(self, now: float) -> None:
        # Unknown key ids are cached too (so a flood of them costs one read each per cache period): drop
        # what has lapsed, and everything if that is not enough, so the cache cannot grow without bound.
        ttl = self.settings.api_key_cache_seconds
        for key_id in [k for k, (at, _, _) in self._cache.items() if now - at > ttl]:
            del self._cache[key_id]
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache.clear()

    def require(self, request: Request, scope: str, group: str) -> Caller:
        """The caller, if its scope allows `scope` and its `group` rate limit is not exhausted."""
        caller = self.caller(request)
        if not keys.allows(caller.scope, scope):
            raise forbidden()
        holder = getattr(request.state, "key_name", None)
        if holder is not None:
            holder.name = caller.name
        self.count(caller, group)
        request.state.caller = caller
        return caller

    def probe_allowed(self, request: Request) -> None:
        """/health, /ready and /metrics: open to loopback clients (by default), else a key is needed."""
        if not probe_open(self.settings, request):
            self.require(request, "read", "read")

    # --- rate limits ------------------------------------------------------------------------------

    def count(self, caller: Caller, group: str) -> None:
        """Admit one request of the caller's `group`, or answer 429 with Retry-After.

        The counter is in the database, shared by every process. A process reserves requests in
        blocks and admits from its block without a round trip; a block is at most a twentieth of what
        the window has left (so 1 near the limit, where every request asks the database). What a
        process reserved beyond the limit is never admitted, so a key never gets more than the limit
        per window, whatever the number of processes.
        """
        if caller.key_id is None:
            return
        limit = self.settings.api_rate_limit_write if group == "write" else self.settings.api_rate_limit_read
        window = self.settings.api_rate_window
        now = self.clock()
        start = int(now // window * window)
        slot = (caller.key_id, group)
        with self._lock:
            bucket = self._buckets.get(slot)
            if bucket is None or bucket[0] != start:
                bucket = self._buckets[slot] = [start, 0, 0]  # window, admitted-but-unused, last total seen
            if bucket[1] > 0:
                bucket[1] -= 1
                return
            block = max(1, min(BLOCK_MAX, (limit - bucket[2]) // 20))
        total = self.store.hit(caller.key_id, group, start, block)
        granted = max(0, min(block, limit - (total - block)))
        with self._lock:
            bucket = self._buckets.setdefault(slot, [start, 0, 0])
            if bucket[0] == start:
                bucket[1] += max(0, granted - 1)
                bucket[2] = total
        self._maybe_prune(now, window)
        if granted == 0:
            retry_after = max(1, int(start + window - now + 0.999))
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {limit} {group} requests per {window} s reached for this key",
                {"Retry-After": str(retry_after)},
            )

    def _maybe_prune(self, now: float, window: int) -> None:
        # Old windows are dead weight: drop them about once a window, from whichever process notices.
        if now - self._last_prune < window:
            return
        self._last_prune = now
        self.store.prune_rate_windows(int(now - 2 * window))


def probe_open(settings: Settings, request: Request) -> bool:
    """Whether a probe may answer this caller without a key (API_PROBES_OPEN); needs no database, so
    /health answers while the database is down."""
    mode = settings.api_probes_open
    if mode == "all":
        return True
    return mode == "loopback" and _is_loopback(request.client.host if request.client else "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    value = request.headers.get("x-api-key")
    return value.strip() if value else None
