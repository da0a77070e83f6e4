"""The API's gatekeeper (api/auth.py) below the HTTP server: its key cache stays bounded under a flood of
unknown keys (yet still admits real ones), and the probes' "loopback" rule knows every spelling of a
loopback client, including an IPv4 address mapped into IPv6, and no other. Store-backed parts run on
both dialects; the routes themselves are tested through a real server in test_api_*.py.
"""

from __future__ import annotations

import pytest
from starlette.requests import Request

from tg_parser.api import auth
from tg_parser.api.auth import Gatekeeper, probe_open
from tg_parser.api.errors import ApiError
from tg_parser.api.keys import create_key
from tg_parser.stores.api import ApiStore


def request(client: str = "203.0.113.5", key: str | None = None) -> Request:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (client, 1)})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def unknown_key(i: int) -> str:
    return f"tgp_{i:012x}_{'s' * 40}"


def refused(gate: Gatekeeper, key: str) -> int:
    with pytest.raises(ApiError) as caught:
        gate.caller(request(key=key))
    return caught.value.status


def test_a_flood_of_unknown_keys_keeps_the_key_cache_bounded(db, settings, monkeypatch):
    monkeypatch.setattr(auth, "MAX_CACHED_KEYS", 4)
    token, _ = create_key(db, "real", "read")
    clock = Clock()
    gate = Gatekeeper(settings, ApiStore(db), clock=clock)
    ttl = settings.api_key_cache_seconds

    for i in range(2):
        assert refused(gate, unknown_key(i)) == 401
    clock.now += ttl + 1  # those two lapse
    for i in range(2, 4):
        assert refused(gate, unknown_key(i)) == 401
    assert len(gate._cache) == 4
    assert refused(gate, unknown_key(4)) == 401  # full: the lapsed two are dropped first
    assert len(gate._cache) == 3
    assert refused(gate, unknown_key(5)) == 401
    assert len(gate._cache) == 4
    assert refused(gate, unknown_key(6)) == 401  # full and nothing lapsed: everything is dropped
    assert len(gate._cache) == 1

    caller = gate.caller(request(key=token))  # a real key still gets in (read from the store again)
    assert (caller.name, caller.scope) == ("real", "read")
    assert len(gate._cache) <= 4


@pytest.mark.parametrize(
    ("client", "open_"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4 loopback seen by a dual-stack socket
        ("localhost", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("testclient", False),  # not an address at all
        ("", False),
    ],
)
def test_loopback_probes_are_open_to_loopback_clients_only(settings, client, open_):
    assert probe_open(settings.model_copy(update={"api_probes_open": "loopback"}), request(client)) is open_
    assert probe_open(settings.model_copy(update={"api_probes_open": "all"}), request(client))
    assert not probe_open(settings.model_copy(update={"api_probes_open": "keys"}), request(client))


def test_a_probe_from_elsewhere_needs_a_key(db, settings):
    token, _ = create_key(db, "probe", "read")
    gate = Gatekeeper(settings, ApiStore(db))
    remote = "198.51.100.7"
    with pytest.raises(ApiError) as caught:
        gate.probe_allowed(request(remote))
    assert caught.value.status == 401
    gate.probe_allowed(request(remote, key=token))  # admitted
    gate.probe_allowed(request("127.0.0.1"))  # loopback: no key needed
