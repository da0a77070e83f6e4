"""API keys, scopes and rate limits on both dialects: one 401 for every kind of bad key, 403 for a scope
too small, hashed storage, and per-key rate limits counted in the database."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from support.api_server import ROOT, ThreadedApi, new_key, scoped_keys
from support.cli import db_env

from tg_parser.api.auth import Gatekeeper
from tg_parser.db.connect import open_database
from tg_parser.stores.api import ApiStore


@pytest.fixture
def keyed(settings):
    keys = scoped_keys(settings)
    db = open_database(settings)
    try:
        keys["revoked"] = new_key(db, "revoked", "admin")
        assert ApiStore(db).revoke_key("revoked")
    finally:
        db.close()
    return settings, keys


@pytest.fixture
def api(keyed):
    settings, keys = keyed
    with ThreadedApi(settings) as server:
        server.keys = keys
        yield server


def _wrong_secret(token: str) -> str:
    _, key_id, secret = token.split("_", 2)
    return f"tgp_{key_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"


def test_every_bad_key_gets_the_same_401(api):
    read = api.keys["read"]
    _, key_id, secret = read.split("_", 2)
    presented = {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "basic scheme": {"Authorization": "Basic " + read},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "malformed id": {"X-API-Key": "tgp_XYZ_" + secret},
        "short secret": {"Authorization": f"Bearer tgp_{key_id}_short"},
        "unknown": {"Authorization": f"Bearer tgp_{'0' * 12}_{secret}"},
        "revoked": {"Authorization": f"Bearer {api.keys['revoked']}"},
        "wrong secret": {"Authorization": f"Bearer {_wrong_secret(read)}"},
        "wrong secret header": {"X-API-Key": _wrong_secret(read)},
    }
    answers = {}
    for name, headers in presented.items():
        answer = api.client().get("/api/v1/sources", headers=headers, key=None)
        assert answer.status == 401, (name, answer)
        assert answer.headers["www-authenticate"] == "Bearer"
        body = answer.json()
        assert body["request_id"] == answer.headers["x-request-id"]
        answers[name] = body["error"]
    assert len({tuple(sorted(e.items())) for e in answers.values()}) == 1, answers
    assert answers["none"] == {"code": "unauthorized", "message": "a valid API key is required"}


def test_bearer_and_x_api_key_both_work(api):
    token = api.keys["read"]
    assert api.client().get("/api/v1/sources", headers={"Authorization": f"Bearer {token}"}).status == 200
    assert api.client().get("/api/v1/sources", headers={"Authorization": f"bearer  {token} "}).status == 200
    assert api.client().get("/api/v1/sources", headers={"X-API-Key": token}, key=None).status == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/runs", {}),
        ("POST", "/api/v1/sources", {"channel": "@durov"}),
        ("POST", "/api/v1/sources/durov/pause", None),
        ("POST", "/api/v1/sources/durov/resume", None),
        ("DELETE", "/api/v1/sources/durov", None),
        ("GET", "/api/v1/keys", None),
        ("POST", "/api/v1/keys", {"name": "x"}),
        ("DELETE", "/api/v1/keys/read", None),
    ],
)
def test_a_read_key_is_refused_on_write_routes(api, method, path, body):
    answer = api.client(api.keys["read"]).request(method, path, json_body=body)
    assert answer.status == 403, answer
    assert answer.json()["error"]["code"] == "forbidden"


def test_scopes(api):
    writer = api.client(api.keys["write"])
    assert writer.post("/api/v1/sources", {"channel": "@durov"}).status == 201
    assert writer.post("/api/v1/sources/durov/pause").status == 200
    assert writer.post("/api/v1/runs", {"steps": ["export"]}).status == 202
    assert writer.get("/api/v1/runs").status == 200  # write includes read
    assert writer.get("/api/v1/keys").status == 403
    admin = api.client(api.keys["admin"])
    assert admin.get("/api/v1/keys").status == 200
    assert admin.post("/api/v1/runs", {"steps": ["export"]}).status == 202  # admin includes write
    assert admin.delete("/api/v1/sources/durov").status == 200


def test_keys_are_stored_hashed(keyed, tmp_path):
    settings, keys = keyed
    # Also a key made by the CLI and one made over the API.
    env = {**db_env(settings), "LOG_LEVEL": "WARNING"}
    made = subprocess.run(
        [sys.executable, "-m", "tg_parser", "api-keys", "create", "cron", "--scope", "write"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    keys["cron"] = made.stdout.strip()
    with ThreadedApi(settings) as server:
        answer = server.client(keys["admin"]).post("/api/v1/keys", {"name": "api-made"})
        assert answer.status == 201
        keys["api-made"] = answer.json()["token"]
        assert server.client(keys["cron"]).get("/api/v1/sources").status == 200
    db = open_database(settings)
    try:
        rows = db.fetch_all("api_keys_list")
        stored = [ApiStore(db).get_key(row["key_id"]) for row in rows]
    finally:
        db.close()
    everything = repr(stored)
    assert len(stored) == len(keys) == 6
    for token in keys.values():
        _, key_id, secret = token.split("_", 2)
        assert token not in everything and secret not in everything
        row = next(r for r in stored if r["key_id"] == key_id)
        assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    # And the raw table holds nothing else that could carry a secret.
    if settings.db_type == "sqlite":
        for path in settings.db_sqlite_dir.glob("*.sqlite*"):
            data = path.read_bytes()
            for token in keys.values():
                assert token.split("_", 2)[2].encode() not in data, path


def test_without_keys_the_api_refuses_a_public_address(tmp_path):
    # Refused before the database is touched, so one dialect is enough.
    env = {
        "DB_TYPE": "sqlite",
        "DB_SQLITE_DIR": str(tmp_path),
        "API_REQUIRE_KEYS": "false",
        "LOG_LEVEL": "WARNING",
    }
    for host in ("0.0.0.0", "::"):
        refused = subprocess.run(
            [sys.executable, "-m", "tg_parser", "serve", "--host", host, "--port", "8"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 3, (host, refused.stderr)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, refused.stderr
        assert "API_REQUIRE_KEYS is false" in lines[0] and host in lines[0]
        assert refused.stdout == ""


def test_without_keys_loopback_callers_are_admin(settings):
    with ThreadedApi(settings.model_copy(update={"api_require_keys": False})) as server:
        client = server.client()
        assert client.get("/api/v1/keys").status == 200
        assert client.post("/api/v1/runs", {"steps": ["export"]}).status == 202


def test_probes_need_a_key_when_so_configured(keyed):
    settings, keys = keyed
    with ThreadedApi(settings.model_copy(update={"api_probes_open": "keys"})) as server:
        for path in ("/health", "/ready", "/metrics"):
            assert server.client().get(path).status == 401, path
            assert server.client(keys["read"]).get(path).status == 200, path


# --- rate limits ----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_limits_per_key_and_group(keyed):
    settings, keys = keyed
    limited = settings.model_copy(
        update={"api_rate_limit_read": 3, "api_rate_limit_write": 2, "api_rate_window": 60}
    )
    with ThreadedApi(limited) as server:
        clock = Clock(1_700_000_040 + 10.25)  # 10.25 s into a 60 s window
        server.state._gate = Gatekeeper(limited, ApiStore(server.state.database()), clock=clock)
        reader, other = server.client(keys["read"]), server.client(keys["write"])
        assert [reader.get("/api/v1/sources").status for _ in range(3)] == [200, 200, 200]
        refused = reader.get("/api/v1/sources")
        assert refused.status == 429, refused
        assert refused.headers["retry-after"] == "50"
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "3 read requests per 60 s" in refused.json()["error"]["message"]
        # Another key has its own budget; the same key's write budget is separate from its reads.
        assert other.get("/api/v1/sources").status == 200
        writes = [other.post("/api/v1/runs", {"steps": ["export"]}).status for _ in range(3)]
        assert writes == [202, 202, 429]
        # Probes from loopback do not count.
        assert reader.get("/health").status == 200
        # The next window starts afresh.
        clock.now += 50
        assert reader.get("/api/v1/sources").status == 200


def test_the_key_cache_stays_bounded_under_a_flood_of_unknown_keys(keyed, monkeypatch):
    """Unknown key ids are cached like known ones; a flood of them must not grow the cache forever."""
    from types import SimpleNamespace

    from tg_parser.api import auth

    settings, keys = keyed
    monkeypatch.setattr(auth, "MAX_CACHED_KEYS", 50)
    db = open_database(settings)
    try:
        clock = Clock(1_000.0)
        gate = Gatekeeper(settings, ApiStore(db), clock=clock)

        def presenting(token: str):
            return SimpleNamespace(headers={"authorization": f"Bearer {token}"}, state=SimpleNamespace())

        secret = keys["read"].split("_", 2)[2]
        for i in range(400):
            with pytest.raises(auth.ApiError):
                gate.caller(presenting(f"tgp_{i:012x}_{secret}"))
            assert len(gate._cache) <= 50
        assert gate.caller(presenting(keys["read"])).name == "read"
        clock.now += settings.api_key_cache_seconds + 1
        assert gate.caller(presenting(keys["read"])).name == "read"
    finally:
        db.close()


def test_two_admins_creating_one_key_name_at_once_get_201_and_422(keyed, monkeypatch):
    """The name check and the insert are two statements: the loser of a race meets the unique index."""
    settings, keys = keyed
    with ThreadedApi(settings) as server:
        admin = server.client(keys["admin"])
        assert admin.post("/api/v1/keys", {"name": "raced"}).status == 201
        # The other admin's name check ran before the first insert committed.
        monkeypatch.setattr(ApiStore, "get_key_by_name", _first_call_sees_nothing(ApiStore.get_key_by_name))
        lost = admin.post("/api/v1/keys", {"name": "raced"})
    assert lost.status == 422, lost
    assert "exists already" in lost.json()["error"]["message"]


def _first_call_sees_nothing(original):
    calls = []

    def patched(self, name):
        calls.append(name)
        return None if len(calls) == 1 else original(self, name)

    return patched
