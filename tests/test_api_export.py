"""The streamed export with a client that stops reading, on both dialects: other requests go on being
answered, and once the client is gone nothing of the export is left running."""

from __future__ import annotations

import socket
import threading

import pytest
from support.api_server import ThreadedApi, new_key, wait_for
from support.process_data import seed_documents

from tg_parser.db.connect import open_database
from tg_parser.export.writer import write_kb_entries


def _export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "export-stream"]


@pytest.mark.slow
def test_a_stalled_export_client_blocks_nothing(settings, tmp_path):
    db = open_database(settings)
    try:
        seed_documents(
            db, 1500, words=800
        )  # ~6 MB: more than the socket buffers between server and a stalled client
        token = new_key(db, "reader")
        with open(tmp_path / "expected.ndjson", "wb") as out:
            write_kb_entries(db, out)
    finally:
        db.close()
    expected = (tmp_path / "expected.ndjson").read_bytes()
    assert len(expected) > 5_000_000
    with ThreadedApi(settings) as api:
        client = api.client(token)
        client.timeout = 10
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", api.port))
        stalled.settimeout(10)
        stalled.sendall(
            b"GET /api/v1/export/kb.ndjson HTTP/1.1\r\nHost: t\r\n"
            + f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        assert stalled.recv(64).startswith(b"HTTP/1.1 200")
        # The client reads nothing more. Everybody else is still answered, promptly.
        assert client.get("/api/v1/sources").status == 200
        assert client.get("/api/v1/messages", params={"limit": 1}).status == 200
        # The whole export is made regardless, and its database work ends.
        wait_for(lambda: not _export_threads(), 20, what="the export to be written")
        # A second, reading client gets it all meanwhile.
        full = client.get("/api/v1/export/kb.ndjson")
        assert full.status == 200 and full.body == expected
        stalled.close()
        assert client.get("/api/v1/sources").status == 200
    wait_for(lambda: not _export_threads(), 10, what="no export thread left")
