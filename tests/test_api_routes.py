"""Every route of the HTTP API on both dialects, against an in-process uvicorn on a loopback port: the
probes, sources (the rules and errors of `tg-parser sources`), messages, documents and topics with their
filters, the streamed export (byte for byte what `tg-parser export` writes), runs and keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from support.api_server import (
    EXAMPLE_CHANNEL,
    EXAMPLE_SOURCE,
    ThreadedApi,
    cli,
    scoped_keys,
    seed_example,
)

from tg_parser.db.connect import open_database
from tg_parser.stores import IngestionStore, ProcessingStore, RawStore
from tg_parser.stores.topics import TopicStore


@pytest.fixture
def install(settings, tmp_path):
    """The example channel processed offline, and one key of each scope."""
    seed_example(settings, tmp_path / "run-out")
    keys = scoped_keys(settings)
    return settings, keys


@pytest.fixture
def api(install):
    settings, keys = install
    with ThreadedApi(settings) as server:
        server.keys = keys
        yield server


def _all(client, path: str, **params) -> list[dict]:
    items, cursor = [], None
    for _ in range(1000):
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status == 200, answer
        page = answer.json()
        items += page["items"]
        cursor = page["next"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


# --- probes -----------------------------------------------------------------------------------------


def test_probes(api):
    client = api.client()  # probes are open to loopback callers by default
    health = client.get("/health")
    assert health.status == 200 and health.json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status == 200, ready
    report = ready.json()
    assert report["ready"] is True
    assert all(store["ok"] for store in report["stores"].values())
    reader = api.client(api.keys["read"])
    assert reader.get("/api/v1/sources").status == 200
    assert reader.get("/api/v1/nowhere").status == 404
    metrics = client.get("/metrics")
    assert metrics.status == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.body.decode()
    assert 'tg_parser_http_requests_total{method="GET",route="/api/v1/sources",status="200"} 1.0' in text
    assert 'tg_parser_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'tg_parser_http_request_duration_seconds_count{method="GET",route="/ready"} 1.0' in text
    db = open_database(api.state.settings)
    try:
        messages = RawStore(db).count()
        documents = ProcessingStore(db).count_documents()
    finally:
        db.close()
    assert f"tg_parser_messages {float(messages)}" in text
    assert f"tg_parser_documents {float(documents)}" in text
    assert "tg_parser_topics 2.0" in text
    assert 'tg_parser_runs{status="queued"} 0.0' in text
    assert "tg_parser_live_leases 0.0" in text
    if api.state.settings.db_type == "postgres":
        assert "tg_parser_db_pool_size" in text


# --- sources ----------------------------------------------------------------------------------------


def test_sources_list_matches_the_cli(api):
    answer = api.client(api.keys["read"]).get("/api/v1/sources")
    assert answer.status == 200
    listed = answer.json()["items"]
    result = cli(api.state.settings, "sources", "list", "--json")
    expected = json.loads(result.stdout)
    for source in expected:
        source.pop("access_hash", None)
    assert listed == expected
    assert [s["source_id"] for s in listed] == [EXAMPLE_SOURCE]
    assert all("access_hash" not in s for s in listed)
    assert api.client(api.keys["read"]).get("/api/v1/sources", params={"status": "paused"}).json() == {
        "items": []
    }
    assert api.client(api.keys["read"]).get("/api/v1/sources", params={"status": "gone"}).status == 422


def test_sources_add_pause_resume_remove(api):
    writer = api.client(api.keys["write"])
    added = writer.post("/api/v1/sources", {"channel": "@durov", "title": "Durov", "comments": True})
    assert added.status == 201, added
    body = added.json()
    assert body["created"] is True
    assert body["source"]["source_id"] == "durov"
    assert body["source"]["username"] == "durov"
    assert body["source"]["include_comments"] is True
    # Adding it again only changes its options, like `tg-parser sources add`.
    again = writer.post("/api/v1/sources", {"channel": "@durov", "since": "2025-01-01"})
    assert again.status == 200, again
    assert again.json()["created"] is False
    assert again.json()["source"]["include_comments"] is False
    assert again.json()["source"]["since_date"].startswith("2025-01-01T00:00:00")

    paused = writer.post("/api/v1/sources/durov/pause")
    assert paused.status == 200 and paused.json()["source"]["status"] == "paused"
    listed = writer.get("/api/v1/sources", params={"status": "paused"}).json()["items"]
    assert [s["source_id"] for s in listed] == ["durov"]
    resumed = writer.post("/api/v1/sources/durov/resume")
    assert resumed.status == 200 and resumed.json()["source"]["status"] == "active"

    removed = writer.delete("/api/v1/sources/durov")
    assert removed.status == 200 and removed.json() == {"removed": "durov"}
    db = open_database(api.state.settings)
    try:
        assert IngestionStore(db).get_source("durov") is None
        assert IngestionStore(db).get_source(EXAMPLE_SOURCE) is not None
    finally:
        db.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/sources/nope/pause"),
        ("POST", "/api/v1/sources/nope/resume"),
        ("DELETE", "/api/v1/sources/nope"),
    ],
)
def test_unknown_source_is_404_with_the_cli_message(api, method, path):
    answer = api.client(api.keys["write"]).request(method, path)
    assert answer.status == 404, answer
    error = answer.json()["error"]
    assert error["code"] == "not_found"
    verb = path.rsplit("/", 1)[-1] if method == "POST" else "remove"
    args = ["sources", verb, "nope"] + (["--yes"] if verb == "remove" else [])
    result = cli(api.state.settings, *args)
    assert result.exit_code != 0
    assert error["message"] in result.output


@pytest.mark.parametrize(
    ("body", "cli_args"),
    [
        ({"channel": "not a channel!"}, ["not a channel!"]),
        ({"channel": "@durov", "source_id": " "}, ["@durov", "--id", " "]),
        (
            {"channel": "@durov", "since": "2025-02-01", "until": "2025-01-01"},
            ["@durov", "--since", "2025-02-01", "--until", "2025-01-01"],
        ),
    ],
)
def test_invalid_source_is_422_with_the_cli_message(api, body, cli_args):
    answer = api.client(api.keys["write"]).post("/api/v1/sources", body)
    assert answer.status == 422, answer
    result = cli(api.state.settings, "sources", "add", *cli_args)
    assert result.exit_code == 2
    assert answer.json()["error"]["message"] in result.output


# --- messages, documents, topics ------------------------------------------------------------------


def test_messages_and_their_filters(api):
    reader = api.client(api.keys["read"])
    db = open_database(api.state.settings)
    try:
        total = RawStore(db).count()
    finally:
        db.close()
    everything = _all(reader, "/api/v1/messages", limit=5)
    assert len(everything) == total == 17
    keys = [(m["channel_id"], m["date"], m["source_ref"]) for m in everything]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all("raw_payload" not in m for m in everything)
    for channel in (str(EXAMPLE_CHANNEL), f"-100{EXAMPLE_CHANNEL}", EXAMPLE_SOURCE):
        assert _all(reader, "/api/v1/messages", channel=channel) == everything
    assert _all(reader, "/api/v1/messages", source=EXAMPLE_SOURCE) == everything
    assert _all(reader, "/api/v1/messages", source="other") == []
    dates = sorted(m["date"] for m in everything)
    middle = dates[len(dates) // 2]
    since = [m for m in everything if m["date"] >= middle]
    until = [m for m in everything if m["date"] < middle]
    assert _all(reader, "/api/v1/messages", since=middle) == since
    assert _all(reader, "/api/v1/messages", until=middle) == until
    assert _all(reader, "/api/v1/messages", since=middle, until=middle) == []
    unknown = reader.get("/api/v1/messages", params={"channel": "424242"})
    assert unknown.status == 422 and "no source and no stored message" in unknown.json()["error"]["message"]
    assert reader.get("/api/v1/messages", params={"since": "2025-02-01", "until": "2025-01-01"}).status == 422


def test_documents_and_their_filters(api):
    reader = api.client(api.keys["read"])
    db = open_database(api.state.settings)
    try:
        documents = list(ProcessingStore(db).stream_documents())
    finally:
        db.close()
    everything = _all(reader, "/api/v1/documents", limit=4)
    assert sorted(d["source_ref"] for d in everything) == sorted(d.source_ref for d in documents)
    keys = [(d["channel_id"], d["message_date"], d["source_ref"]) for d in everything]
    assert keys == sorted(keys)
    assert _all(reader, "/api/v1/documents", channel=EXAMPLE_SOURCE) == everything
    assert _all(reader, "/api/v1/documents", source=EXAMPLE_SOURCE) == everything
    assert _all(reader, "/api/v1/documents", source="other") == []
    middle = sorted(d["message_date"] for d in everything)[len(everything) // 2]
    assert _all(reader, "/api/v1/documents", since=middle) == [
        d for d in everything if d["message_date"] >= middle
    ]
    assert _all(reader, "/api/v1/documents", until=middle) == [
        d for d in everything if d["message_date"] < middle
    ]
    topics = _all(reader, "/api/v1/topics")
    assert len(topics) == 2
    for topic in topics:
        anchors = {a["source_ref"] for a in topic["anchors"]}
        selected = _all(reader, "/api/v1/documents", topic=topic["topic_id"])
        assert {d["source_ref"] for d in selected} == anchors
        assert selected == [d for d in everything if d["source_ref"] in anchors]
    assert _all(reader, "/api/v1/documents", topic="topic:none") == []


def test_topics_and_one_topic(api):
    reader = api.client(api.keys["read"])
    topics = _all(reader, "/api/v1/topics", limit=1)
    ids = [t["topic_id"] for t in topics]
    assert len(ids) == 2 and ids == sorted(ids)
    assert _all(reader, "/api/v1/topics", channel=str(EXAMPLE_CHANNEL)) == topics
    db = open_database(api.state.settings)
    try:
        card = TopicStore(db).get_topic(ids[0])
        bundle = TopicStore(db).get_bundle(ids[0])
    finally:
        db.close()
    one = reader.get(f"/api/v1/topics/{ids[0]}")
    assert one.status == 200, one
    assert one.json()["topic"] == json.loads(card.model_dump_json())
    assert one.json()["bundle"] == (json.loads(bundle.model_dump_json()) if bundle else None)
    missing = reader.get("/api/v1/topics/topic:none")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"


# --- export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"channel": EXAMPLE_SOURCE},
        {"channel": str(EXAMPLE_CHANNEL)},
        {"topic": "FIRST_TOPIC"},
        {"since": "2024-01-15", "until": "2024-03-01T00:00:00Z"},
        {"channel": EXAMPLE_SOURCE, "since": "2024-02-01"},
    ],
)
def test_export_is_byte_identical_to_the_cli(api, tmp_path, filters):
    reader = api.client(api.keys["read"])
    if filters.get("topic") == "FIRST_TOPIC":
        filters = {"topic": reader.get("/api/v1/topics").json()["items"][0]["topic_id"]}
    answer = reader.get("/api/v1/export/kb.ndjson", params=filters)
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    out = tmp_path / "cli-export"
    args = [f"--{name}={value}" for name, value in filters.items()]
    result = cli(api.state.settings, "export", "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    expected = (out / "kb_entries.ndjson").read_bytes()
    assert answer.body == expected
    if not filters:
        assert expected.count(b"\n") == 15


def test_export_refuses_what_the_cli_refuses(api):
    reader = api.client(api.keys["read"])
    for params, cli_args, words in (
        ({"topic": "topic:none"}, ["--topic", "topic:none"], "unknown topic 'topic:none'"),
        (
            {"since": "2024-02-01", "until": "2024-02-01"},
            ["--since", "2024-02-01", "--until", "2024-02-01"],
            "not before",
        ),
        (
            {"channel": "424242"},
            ["--channel", "424242"],
            "no source and no stored message for channel 424242",
        ),
    ):
        answer = reader.get("/api/v1/export/kb.ndjson", params=params)
        assert answer.status == 422, (params, answer)
        assert words in answer.json()["error"]["message"]
        result = cli(api.state.settings, "export", "--out", "/nonexistent/never-written", *cli_args)
        assert result.exit_code == 2, result.output
        assert words in result.output


# --- runs -------------------------------------------------------------------------------------------


def test_runs_are_queued_and_listed(api):
    writer = api.client(api.keys["write"])
    reader = api.client(api.keys["read"])
    created = writer.post(
        "/api/v1/runs",
        {
            "steps": ["process", "export", "process"],
            "source": EXAMPLE_SOURCE,
            "options": {"processor": "extractive"},
        },
    )
    assert created.status == 202, created
    run = created.json()["run"]
    assert created.headers["location"] == f"/api/v1/runs/{run['run_id']}"
    assert run["status"] == "queued"
    assert run["steps"] == ["process", "export"]
    assert run["source_id"] == EXAMPLE_SOURCE
    assert run["options"] == {"processor": "extractive", "concurrency": 4}
    assert run["requested_by"] == "write"
    assert "worker_id" not in run
    second = writer.post("/api/v1/runs", {}).json()["run"]
    assert second["steps"] == ["ingest", "process", "topicize", "export"]

    got = reader.get(created.headers["location"])
    assert got.status == 200 and got.json()["run"] == run
    listed = reader.get("/api/v1/runs").json()
    assert [r["run_id"] for r in listed["items"]] == [second["run_id"], run["run_id"]]
    assert reader.get("/api/v1/runs", params={"status": "running"}).json()["items"] == []
    assert len(reader.get("/api/v1/runs", params={"status": "queued"}).json()["items"]) == 2
    assert reader.get("/api/v1/runs/api-nope").status == 404

    bad_source = writer.post("/api/v1/runs", {"source": "nope"})
    assert bad_source.status == 422 and "source" in bad_source.json()["error"]["message"]
    no_secret = writer.post("/api/v1/runs", {"webhook_url": "http://127.0.0.1:9/hook"})
    assert no_secret.status == 422 and "WEBHOOK_SECRET" in no_secret.json()["error"]["message"]
    bad_step = writer.post("/api/v1/runs", {"steps": ["ingest", "rm -rf"]})
    assert bad_step.status == 422
    assert reader.post("/api/v1/runs", {}).status == 403


def test_runs_execute_in_the_api_process(install, tmp_path, monkeypatch):
    """`serve --execute-runs`: the API process's own worker thread executes a queued run."""
    settings, keys = install
    monkeypatch.chdir(tmp_path)  # the worker's default export folder is ./out
    fast = settings.model_copy(update={"worker_poll_seconds": 0.05})
    with ThreadedApi(fast, execute_runs=True) as server:
        writer = server.client(keys["write"])
        created = writer.post("/api/v1/runs", {"steps": ["export"]})
        assert created.status == 202
        location = created.headers["location"]
        from support.api_server import wait_for

        run = wait_for(
            lambda: (r := writer.get(location).json()["run"])["status"] in ("succeeded", "failed") and r,
            20,
            what="the run to finish",
        )
    assert run["status"] == "succeeded", run
    assert run["counts"] == {
        "sources": 0,
        "steps_ok": 1,
        "steps_failed": 0,
        "documents": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "estimated_cost_usd": 0.0,
    }
    assert (tmp_path / "out" / "kb_entries.ndjson").exists()


# --- keys -------------------------------------------------------------------------------------------


def test_admin_manages_keys(api):
    admin = api.client(api.keys["admin"])
    listed = admin.get("/api/v1/keys")
    assert listed.status == 200
    assert [k["name"] for k in listed.json()["items"]] == ["read", "write", "admin"]
    assert all("secret_hash" not in k for k in listed.json()["items"])
    created = admin.post("/api/v1/keys", {"name": "dashboards", "scope": "read"})
    assert created.status == 201, created
    token = created.json()["token"]
    assert created.json()["key"]["name"] == "dashboards" and "secret_hash" not in created.json()["key"]
    assert api.client(token).get("/api/v1/sources").status == 200
    duplicate = admin.post("/api/v1/keys", {"name": "dashboards"})
    assert duplicate.status == 422
    assert admin.post("/api/v1/keys", {"name": "no spaces allowed"}).status == 422
    assert admin.post("/api/v1/keys", {"name": "x", "scope": "root"}).status == 422
    revoked = admin.delete("/api/v1/keys/dashboards")
    assert revoked.status == 200 and revoked.json() == {"revoked": "dashboards"}
    assert admin.delete("/api/v1/keys/dashboards").status == 404
    listed = {k["name"]: k for k in admin.get("/api/v1/keys").json()["items"]}
    assert listed["dashboards"]["revoked_at"] is not None
    for scope in ("read", "write"):
        client = api.client(api.keys[scope])
        assert client.get("/api/v1/keys").status == 403
        assert client.post("/api/v1/keys", {"name": "mine"}).status == 403
        assert client.delete("/api/v1/keys/read").status == 403


def test_a_revoked_key_stops_working_once_the_cache_lapses(install):
    settings, keys = install
    with ThreadedApi(settings.model_copy(update={"api_key_cache_seconds": 0})) as server:
        reader = server.client(keys["read"])
        assert reader.get("/api/v1/sources").status == 200
        assert server.client(keys["admin"]).delete("/api/v1/keys/read").status == 200
        assert reader.get("/api/v1/sources").status == 401


def test_dates_in_answers_are_utc(api):
    reader = api.client(api.keys["read"])
    first = reader.get("/api/v1/messages", params={"limit": 1}).json()["items"][0]
    parsed = datetime.fromisoformat(first["date"].replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0) and parsed.tzinfo is not None
    assert parsed < datetime.now(UTC)


def test_openapi_lists_every_route(api):
    spec = api.client().get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/health",
        "/ready",
        "/metrics",
        "/api/v1/sources",
        "/api/v1/sources/{source_id}/pause",
        "/api/v1/sources/{source_id}/resume",
        "/api/v1/sources/{source_id}",
        "/api/v1/messages",
        "/api/v1/documents",
        "/api/v1/topics",
        "/api/v1/topics/{topic_id}",
        "/api/v1/export/kb.ndjson",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/keys",
        "/api/v1/keys/{name}",
    } <= paths


def test_cors_when_origins_are_configured(install):
    settings, keys = install
    configured = settings.model_copy(update={"api_cors_origins": "https://dash.example, https://ops.example"})
    with ThreadedApi(configured) as server:
        client = server.client(keys["read"])
        preflight = client.request(
            "OPTIONS",
            "/api/v1/sources",
            key=None,
            headers={
                "Origin": "https://dash.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert preflight.status == 200, preflight
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
        answer = client.get("/api/v1/sources", headers={"Origin": "https://ops.example"})
        assert answer.status == 200
        assert answer.headers["access-control-allow-origin"] == "https://ops.example"
        other = client.get("/api/v1/sources", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with ThreadedApi(settings) as server:  # off by default
        answer = server.client(keys["read"]).get(
            "/api/v1/sources", headers={"Origin": "https://dash.example"}
        )
        assert "access-control-allow-origin" not in answer.headers
