"""Hostile input on both dialects: SQL metacharacters, quotes, backslashes, NUL, broken UTF-8 and lone
surrogates in every query and path parameter, invalid dates, absurd page sizes, unknown and hostile
JSON, oversized bodies. Every answer is clean JSON (never a 500, never a traceback) and the data is
unchanged afterwards."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from pydantic import SecretStr
from support.api_server import ThreadedApi, checksums, new_key, seed_example

from tg_parser.db.connect import open_database
from tg_parser.ingestion.sources import MAX_SOURCE_ID, MAX_TITLE

# Already percent-encoded, so broken UTF-8 and NUL reach the server as bytes.
PAYLOADS = [
    quote("' OR '1'='1"),
    quote("1; DROP TABLE raw.raw_messages; --"),
    quote('"; DELETE FROM processing.api_keys; --'),
    quote("back\\slash\\"),
    quote("%_*?[]"),
    "%00",
    "a%00b",
    "%ED%A0%80",  # a lone surrogate, as CESU bytes
    "%FF%FE%FD",  # not UTF-8 at all
    "%C0%AF",  # overlong '/'
    quote("\u2028\u0000\ufeff"),
    quote("x" * 600),
    quote("../../etc/passwd"),
    quote("-1"),
    quote("99999999999999999999999999"),
    quote("1e309"),
    quote("NaN"),
    quote("@"),
    quote("tg:1:post:1' --"),
]

QUERY_ROUTES = {
    "/api/v1/sources": ["status"],
    "/api/v1/messages": ["channel", "source", "since", "until", "limit", "cursor"],
    "/api/v1/documents": ["channel", "source", "since", "until", "topic", "limit", "cursor"],
    "/api/v1/topics": ["channel", "limit", "cursor"],
    "/api/v1/export/kb.ndjson": ["channel", "topic", "since", "until"],
    "/api/v1/runs": ["status", "limit", "cursor"],
}
PATH_ROUTES = [
    ("GET", "/api/v1/topics/{}"),
    ("GET", "/api/v1/runs/{}"),
    ("POST", "/api/v1/sources/{}/pause"),
    ("POST", "/api/v1/sources/{}/resume"),
    ("DELETE", "/api/v1/sources/{}"),
    ("DELETE", "/api/v1/keys/{}"),
]


@pytest.fixture
def hostile(settings):
    db = open_database(settings)
    try:
        admin = new_key(db, "admin", "admin")
    finally:
        db.close()
    generous = settings.model_copy(
        update={
            "api_rate_limit_read": 100_000,
            "api_rate_limit_write": 100_000,
            "webhook_secret": SecretStr("s3cret"),
        }
    )
    with ThreadedApi(generous) as server:
        yield server, server.client(admin)


def _clean(answer, allowed: set[int]) -> str | None:
    """Why an answer is not clean, or None."""
    if answer.status not in allowed:
        return f"status {answer.status}"
    if b"Traceback" in answer.body or b'File "' in answer.body:
        return "a traceback"
    if answer.status != 200 or answer.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(answer.body)
        except ValueError:
            return "not JSON"
        if answer.status >= 400:
            if set(body) != {"error", "request_id"} or set(body["error"]) != {"code", "message"}:
                return "not the error shape"
            if body["request_id"] != answer.headers.get("x-request-id"):
                return "request id missing"
    return None


@pytest.mark.slow
def test_hostile_parameters_get_clean_answers_and_change_nothing(settings, tmp_path):
    seed_example(settings, tmp_path / "out")
    before = checksums(settings)
    db = open_database(settings)
    try:
        admin = new_key(db, "admin", "admin")
    finally:
        db.close()
    generous = settings.model_copy(update={"api_rate_limit_read": 100_000, "api_rate_limit_write": 100_000})
    with ThreadedApi(generous) as server:
        problems = _sweep(server.client(admin))
    assert not problems, "\n".join(problems)
    after = checksums(settings)
    assert after.pop("processing.api_keys") != before.pop("processing.api_keys")  # the admin key
    assert after == before


def _sweep(client) -> list[str]:
    problems = []
    for route, params in QUERY_ROUTES.items():
        for param in params:
            for payload in PAYLOADS:
                answer = client.get(f"{route}?{param}={payload}")
                why = _clean(answer, {200, 422})
                if why:
                    problems.append(f"GET {route}?{param}={payload}: {why}: {answer.body[:200]!r}")
    for method, template in PATH_ROUTES:
        for payload in PAYLOADS:
            path = template.format(payload)
            answer = client.request(method, path)
            why = _clean(answer, {404, 422})
            if why:
                problems.append(f"{method} {path}: {why}: {answer.body[:200]!r}")
    return problems


BAD_DATES = [
    "2025-02-30",
    "2025-13-01",
    "yesterday",
    "0000-01-01",
    "0001-01-01T00:00:00+01:00",
    "1969-12-31",
    "10000-01-01",
    "9999-12-31T23:59:59",
    "2025-01-01T25:00:00",
    "2025-01-01T00:00:00+25:00",
    "2025-01-01 00:00:00 UTC",
    " ",
]


def test_invalid_dates_are_422(hostile):
    _, client = hostile
    problems = []
    for value in BAD_DATES:
        for route in ("/api/v1/messages", "/api/v1/documents", "/api/v1/export/kb.ndjson"):
            for name in ("since", "until"):
                answer = client.get(route, params={name: value})
                if answer.status != 422 or not answer.json()["error"]["message"].startswith(f"{name}: "):
                    problems.append(f"{route} {name}={value!r}: {answer}")
        added = client.post("/api/v1/sources", {"channel": "@durov", "since": value})
        if added.status != 422:
            problems.append(f"POST /sources since={value!r}: {added}")
    assert not problems, "\n".join(problems)


def test_absurd_page_sizes_are_422(hostile):
    _, client = hostile
    problems = []
    for limit in ("0", "-1", "-9223372036854775809", "501", str(10**30), "1.5", "abc", "", "1%00"):
        for route in ("/api/v1/messages", "/api/v1/documents", "/api/v1/topics", "/api/v1/runs"):
            answer = client.get(f"{route}?limit={limit}")
            if answer.status != 422 or "limit" not in answer.json()["error"]["message"]:
                problems.append(f"{route}?limit={limit}: {answer}")
    assert not problems, "\n".join(problems)


def test_unknown_json_fields_are_422_naming_the_field(hostile):
    _, client = hostile
    for path, body, field in (
        ("/api/v1/sources", {"channel": "@durov", "evil": 1}, "evil"),
        ("/api/v1/runs", {"stepz": ["export"]}, "stepz"),
        ("/api/v1/runs", {"options": {"procesor": "llm"}}, "options.procesor"),
        ("/api/v1/runs", {"options": {"out_dir": "/etc"}}, "options.out_dir"),
        ("/api/v1/keys", {"name": "x", "role": "admin"}, "role"),
    ):
        answer = client.post(path, body)
        assert answer.status == 422, (path, answer)
        assert answer.json()["error"]["message"].startswith(f"{field}: "), answer


HOSTILE_BODIES = [
    ("/api/v1/sources", b'{"channel": "@du\\u0000rov"}'),
    ("/api/v1/sources", b'{"channel": "@durov", "title": "\\ud800"}'),
    ("/api/v1/sources", b'{"channel": "@durov", "source_id": "a\\u0000b"}'),
    ("/api/v1/sources", b'{"channel": "@durov", "\\udfff": 1}'),
    ("/api/v1/sources", b'{"channel": 12345678}'),
    ("/api/v1/sources", b'{"channel": ["@durov"]}'),
    ("/api/v1/sources", b'{"channel": "@durov", "comments": "maybe"}'),
    ("/api/v1/sources", b"[]"),
    ("/api/v1/sources", b"null"),
    ("/api/v1/sources", b"not json"),
    ("/api/v1/sources", b'{"channel": "@durov"'),
    ("/api/v1/sources", b"[" * 20_000 + b"]" * 20_000),
    ("/api/v1/sources", b'{"channel": "' + b"x" * 600 + b'"}'),
    ("/api/v1/runs", b'{"source": "\\ud800"}'),
    ("/api/v1/runs", b'{"source": "x\\u0000"}'),
    ("/api/v1/runs", b'{"steps": []}'),
    ("/api/v1/runs", b'{"steps": ["export", "export", "export", "export", "export"]}'),
    ("/api/v1/runs", b'{"options": {"concurrency": 100000000000000000000000}}'),
    ("/api/v1/runs", b'{"options": {"concurrency": -1}}'),
    ("/api/v1/runs", b'{"webhook_url": "javascript:alert(1)"}'),
    ("/api/v1/runs", b'{"webhook_url": "file:///etc/passwd"}'),
    ("/api/v1/runs", b'{"webhook_url": "http://\\ud800/"}'),
    ("/api/v1/runs", b'{"webhook_url": "http://127.0.0.1/\\u0000"}'),
    ("/api/v1/keys", b'{"name": "\\ud800"}'),
    ("/api/v1/keys", b'{"name": "a\\u0000"}'),
    ("/api/v1/keys", b'{"name": "x\'; DROP TABLE processing.api_keys; --"}'),
]


def test_hostile_json_bodies_are_refused_cleanly(hostile):
    server, client = hostile
    before = checksums(server.state.settings)
    problems = []
    for path, raw in HOSTILE_BODIES:
        answer = client.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        # JSON nested deeper than the parser goes is FastAPI's 400 "error parsing the body"; the rest is 422.
        why = _clean(answer, {400, 422} if raw.startswith(b"[[[") else {422})
        if why:
            problems.append(f"POST {path} {raw[:80]!r}: {why}: {answer}")
    assert not problems, "\n".join(problems)
    assert checksums(server.state.settings) == before


def test_source_ids_and_titles_up_to_the_cli_limits_are_accepted_and_longer_ones_are_422(hostile):
    """The API's field limits are the ones `tg-parser sources add` applies (one constant each)."""
    _, client = hostile
    for field, limit in (("source_id", MAX_SOURCE_ID), ("title", MAX_TITLE)):
        refused = client.post("/api/v1/sources", {"channel": "@durov", field: "a" * (limit + 1)})
        assert refused.status == 422, (field, refused)
        assert refused.json()["error"]["message"].startswith(f"{field}: "), refused
    longest = {"channel": "@durov", "source_id": "s" * MAX_SOURCE_ID, "title": "t" * MAX_TITLE}
    assert client.post("/api/v1/sources", longest).status == 201
    listed = client.get("/api/v1/sources").json()["items"]
    assert [(s["source_id"], s["title"]) for s in listed] == [("s" * MAX_SOURCE_ID, "t" * MAX_TITLE)]
    assert client.post("/api/v1/runs", {"source": "s" * (MAX_SOURCE_ID + 1)}).status == 422
    assert client.post("/api/v1/runs", {"source": "s" * MAX_SOURCE_ID, "steps": ["export"]}).status == 202


def test_channel_ids_beyond_a_bigint_are_422(hostile):
    _, client = hostile
    for channel in (
        "99999999999999999999999",
        "-10099999999999999999999",
        "https://t.me/c/99999999999999999999/1",
    ):
        added = client.post("/api/v1/sources", {"channel": channel})
        assert added.status == 422, added
        assert "not a valid channel id" in added.json()["error"]["message"]
        for route in ("/api/v1/messages", "/api/v1/documents", "/api/v1/topics", "/api/v1/export/kb.ndjson"):
            answer = client.get(route, params={"channel": channel})
            assert answer.status == 422, (route, answer)


def test_sql_metacharacters_are_stored_and_read_back_verbatim(hostile):
    _, client = hostile
    title = "Robert'); DROP TABLE ingestion.sources; -- \\ \" % _ \u2028 ✓"
    added = client.post("/api/v1/sources", {"channel": "@bobby_tables", "title": title})
    assert added.status == 201, added
    listed = {s["source_id"]: s for s in client.get("/api/v1/sources").json()["items"]}
    assert listed["bobby_tables"]["title"] == title
    assert list(listed) == ["bobby_tables"]
    assert client.post("/api/v1/sources/bobby_tables/pause").status == 200


def test_oversized_bodies_are_413(hostile):
    server, client = hostile
    limit = server.state.settings.api_max_body_bytes
    big = json.dumps({"channel": "@durov", "title": "x" * (limit + 10)}).encode()
    headers = {"Content-Type": "application/json"}
    declared = client.request("POST", "/api/v1/sources", body=big, headers=headers)
    assert declared.status == 413, declared
    assert declared.json()["error"]["code"] == "too_large"
    chunked = client.request("POST", "/api/v1/sources", body=big, headers=headers, chunked=True)
    assert chunked.status == 413, chunked
    assert chunked.json()["error"]["code"] == "too_large"
    assert chunked.json()["request_id"] == chunked.headers["x-request-id"]
    lying = client.request(
        "POST", "/api/v1/runs", body=b"{}", headers={**headers, "Content-Length": "99999999999"}
    )
    assert lying.status in (400, 413), lying
    # A body under the limit still works, chunked or not.
    small = json.dumps({"steps": ["export"]}).encode()
    assert client.request("POST", "/api/v1/runs", body=small, headers=headers, chunked=True).status == 202
    metrics = server.client().get("/metrics").body.decode()
    assert 'status="413"' in metrics


def test_hostile_headers(hostile):
    _, client = hostile
    odd = client.get("/api/v1/sources", headers={"X-Request-ID": "x" * 65})
    assert odd.status == 200 and odd.headers["x-request-id"] != "x" * 65
    injected = client.get("/api/v1/sources", headers={"X-Request-ID": "abc def<script>"})
    assert injected.headers["x-request-id"] != "abc def<script>"
    kept = client.get("/api/v1/sources", headers={"X-Request-ID": "req-123_ok.1"})
    assert kept.headers["x-request-id"] == "req-123_ok.1"
    for value in ("Bearer \u00e9\u00e8", "Bearer tgp_" + "a" * 5000, "Bearer tgp_aaaaaaaaaaaa_' OR 1=1 --"):
        answer = client.get("/api/v1/sources", headers={"Authorization": value.encode().decode("latin-1")})
        assert answer.status == 401, (value[:30], answer)
