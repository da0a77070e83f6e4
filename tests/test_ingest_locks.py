"""Cron safety: one ingestion per source at a time, across processes (and, on PostgreSQL, hosts)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tg_parser.db.connect import open_database
from tg_parser.db.locks import lock_file, lock_key
from tg_parser.ingestion.errors import SourceLocked
from tg_parser.ingestion.locks import lock_name, source_lock


def test_lock_excludes_a_second_holder_and_is_released(db, settings):
    other = open_database(settings)  # another process's connection pool / file handle
    try:
        with source_lock(db, "chan"):
            with pytest.raises(SourceLocked) as caught, source_lock(other, "chan"):
                pass
            assert "being ingested by another run" in caught.value.one_line()
            assert caught.value.exit_code == 4
            with source_lock(other, "another-source"):
                pass  # locks are per source
        with source_lock(other, "chan"):
            pass  # released when the holder's block ended
    finally:
        other.close()


def test_lock_is_released_when_the_block_fails(db, settings):
    with pytest.raises(RuntimeError), source_lock(db, "chan"):
        raise RuntimeError("boom")
    with source_lock(db, "chan"):
        pass


@pytest.mark.slow
def test_lock_held_by_another_process(settings, tmp_path):
    """A real second process holds the lock; this one is refused at once, then succeeds after it exits."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from tg_parser.config import load_settings
        from tg_parser.db.connect import open_database
        from tg_parser.ingestion.locks import source_lock
        settings = load_settings(_env_file=None, **{settings.model_dump(mode="json", include={"db_type", "db_sqlite_dir", "db_host", "db_port", "db_user", "db_name"})!r})
        db = open_database(settings)
        with source_lock(db, "chan"):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        db = open_database(settings)
        try:
            with pytest.raises(SourceLocked) as caught, source_lock(db, "chan"):
                pass
            if settings.db_type == "sqlite":
                assert f"pid {holder.pid}" in caught.value.message
            else:
                assert "PostgreSQL backend pid" in caught.value.message
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(timeout=30)
            with source_lock(db, "chan"):
                pass
        finally:
            db.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_killed_holder_leaves_no_lock(settings):
    script = textwrap.dedent(
        f"""
        import os
        from tg_parser.config import load_settings
        from tg_parser.db.connect import open_database
        from tg_parser.ingestion.locks import source_lock
        settings = load_settings(_env_file=None, **{settings.model_dump(mode="json", include={"db_type", "db_sqlite_dir", "db_host", "db_port", "db_user", "db_name"})!r})
        db = open_database(settings)
        with source_lock(db, "chan"):
            os._exit(9)  # no finally, no cleanup: like kill -9
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    db = open_database(settings)
    try:
        with source_lock(db, "chan"):
            pass
    finally:
        db.close()


def test_lock_keys_and_file_names_are_stable_and_safe(tmp_path):
    assert lock_key(lock_name("durov")) == lock_key(lock_name("durov")) != lock_key(lock_name("Durov"))
    assert -(2**63) <= lock_key("x") < 2**63
    path = lock_file(tmp_path, lock_name("../../etc/passwd:evil name"))
    assert path.parent == tmp_path / "locks" and path.name.startswith("ingest_") and "/" not in path.name
    assert lock_file(tmp_path, "a/b") != lock_file(tmp_path, "a_b")


def test_lock_key_is_the_one_earlier_versions_used():
    # A host still on the previous release takes the same advisory lock during a rolling upgrade.
    import hashlib

    digest = hashlib.blake2b(b"tg-parser:ingest:durov", digest_size=8).digest()
    assert lock_key(lock_name("durov")) == int.from_bytes(digest, "big", signed=True)
