"""The tool through a real PgBouncer in transaction pooling mode (DB_POOL_MODE=transaction).

PgBouncer is started for the test on a free port in front of the test PostgreSQL, with a pool of two
server connections, so consecutive transactions of one client land on different server connections. The
test is skipped when the `pgbouncer` binary is not installed (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import PG_HOST, PG_PORT, PG_USER, pg_settings
from support.api_server import free_port, wait_for

from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.locks import LockBusy
from tg_parser.domain.models import ProcessedDocument, RawMessage
from tg_parser.errors import DatabaseUnavailable
from tg_parser.stores import ProcessingStore, RawStore
from tg_parser.stores.export import ExportStore

PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
)
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed")

T0 = datetime(2025, 5, 1, tzinfo=UTC)


@pytest.fixture
def bouncer(pg_dbname: str) -> Iterator[int]:
    """A PgBouncer in transaction mode on a free port; yields the port."""
    port = free_port()
    # Not under pytest's tmp_path: PgBouncer runs as postgres, which cannot enter pytest's private folders.
    folder = Path(tempfile.mkdtemp(prefix="tgp-pgbouncer-"))
    (folder / "userlist.txt").write_text(f'"{PG_USER}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{pg_dbname} = host={PG_HOST} port={PG_PORT} dbname={pg_dbname}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    shutil.chown(folder, "postgres")
    for child in folder.iterdir():
        shutil.chown(child, "postgres")
    command = [str(PGBOUNCER), str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def accepting() -> bool:
        try:
            psycopg.connect(
                host="127.0.0.1", port=port, user=PG_USER, dbname=pg_dbname, connect_timeout=2
            ).close()
        except psycopg.Error:
            assert process.poll() is None, process.stderr.read() if process.stderr else "pgbouncer exited"
            return False
        return True

    try:
        wait_for(accepting, 20, what="pgbouncer to accept connections")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)


def _through(settings: Settings, port: int, **update: object) -> Settings:
    return settings.model_copy(update={"db_port": port, **update})


def _seed(settings: Settings) -> None:
    db = open_database(settings)
    try:
        messages = [
            RawMessage.build(
                channel_id=5, message_type="post", message_id=i, date=T0 + timedelta(minutes=i), text="t"
            )
            for i in range(1, 2501)
        ]
        RawStore(db).store_batch(messages)
        ProcessingStore(db).upsert_documents(
            [
                ProcessedDocument(
                    source_ref=m.source_ref,
                    channel_id=5,
                    message_date=m.date,
                    text_clean=f"text {m.message_id}",
                    model="m",
                    prompt_id="p",
                    pipeline_version="1",
                )
                for m in messages
            ]
        )
    finally:
        db.close()


def test_session_mode_through_a_transaction_pooler_is_refused_at_startup(
    pg_dbname: str, bouncer: int
) -> None:
    settings = _through(pg_settings(pg_dbname), bouncer)
    with pytest.raises(DatabaseUnavailable) as caught:
        open_database(settings)
    assert "options" in caught.value.one_line()  # PgBouncer: unsupported startup parameter


def test_the_tool_works_through_pgbouncer_in_transaction_mode(pg_dbname: str, bouncer: int) -> None:
    direct = pg_settings(pg_dbname)
    _seed(direct)
    settings = _through(direct, bouncer, db_pool_mode="transaction", db_pool_min_size=2, db_pool_max_size=6)
    db = open_database(settings)
    other = open_database(settings)
    try:
        # Reads and writes, keyset batches across many transactions (server connections change between).
        rows = [
            row
            for batch in ExportStore(db).document_batches(None, T0, T0 + timedelta(days=9), 700)
            for row in batch
        ]
        assert len(rows) == 2500 and [r[0] for r in rows] == sorted(
            (r[0] for r in rows), key=lambda ref: int(ref.rsplit(":", 1)[1])
        )
        assert sum(1 for _ in ProcessingStore(db).stream_documents(channel_id=5)) == 2500
        with db.transaction():
            ProcessingStore(db).upsert_documents(
                [
                    ProcessedDocument(
                        source_ref="tg:5:post:1",
                        channel_id=5,
                        message_date=T0,
                        text_clean="rewritten",
                        model="m",
                        prompt_id="p",
                        pipeline_version="1",
                    )
                ]
            )
        document = ProcessingStore(db).get_document("tg:5:post:1")
        assert document is not None and document.text_clean == "rewritten"
        assert document.message_date.tzinfo is not None and document.message_date.utcoffset() == timedelta(0)
        # Named locks exclude each other between two pools (two processes' worth of sessions).
        with db.hold_lock("ingest:bounced"):
            with pytest.raises(LockBusy), other.hold_lock("ingest:bounced"):
                pass
            for _ in range(20):  # the block's own work goes on, through the pooler
                assert db.fetch_one("processing_get_document", {"source_ref": "tg:5:post:2"}) is not None
        with other.hold_lock("ingest:bounced"):
            pass
    finally:
        other.close()
        db.close()
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_dbname) as conn:
        assert conn.execute("SELECT count(*) FROM ingestion.named_locks").fetchone() == (0,)
