"""Naming the rows that differ after a load (transfer/verify.py `narrow`), beyond what
test_transfer_roundtrip.py covers:

* a key range too big to compare row by row is cut again (16 ways) at keys sampled from the side holding
  more rows: the source when the target lost rows, the target when it gained them;
* the number of differences named stops at the limit, inside one range and across ranges;
* the differences reach the JSON report (`--verify-only --json`).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from tests.test_transfer_roundtrip import _dsn, options, populated  # noqa: F401 - a fixture
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import pg_target
from tg_parser.transfer import run_transfer
from tg_parser.transfer import verify as verify_module


def pg(settings: Settings, statement: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(**pg_target(settings).connect_kwargs()) as conn:
        conn.execute(statement, params)


def message_id(ref: str) -> int:
    return int(ref.rsplit(":", 1)[1])


def gain_rows_after(settings: Settings, ref: str, n: int) -> list[str]:
    """Rows only the target holds, all in `ref`'s key range: message ids ref·10 + 0..n-1 sort (bytewise)
    between `ref` and the next existing key."""
    pg(
        settings,
        """
        INSERT INTO raw.raw_messages
            (source_ref, channel_id, message_id, message_type, date, text, raw_payload, inserted_at)
        SELECT 'tg:' || channel_id || ':' || message_type || ':' || (message_id * 10 + g),
               channel_id, message_id * 10 + g, message_type, date, text, raw_payload, inserted_at
        FROM raw.raw_messages, generate_series(0, %s) AS g WHERE source_ref = %s
        """,
        (n - 1, ref),
    )
    prefix = ref.rsplit(":", 1)[0]
    return [f"{prefix}:{message_id(ref) * 10 + g}" for g in range(n)]


def differences(report) -> set[tuple[str, tuple[Any, ...], str]]:
    return {(e.table, tuple(d.key.values()), d.problem) for e in report.tables for d in e.differences}


@pytest.mark.slow
def test_big_ranges_are_cut_at_keys_of_the_side_holding_more_rows(
    populated,  # noqa: F811 - the fixture
    sqlite_dir,
    pg_only_settings,
    monkeypatch,
):
    assert run_transfer(options(sqlite_dir, pg_only_settings)).status == "ok"
    refs = populated["refs"]
    lost = refs[40:46]  # ids 41..46, consecutive keys: one or two ranges, now short in the target
    pg(pg_only_settings, "DELETE FROM raw.raw_messages WHERE source_ref = ANY(%s)", (lost,))
    gained = gain_rows_after(pg_only_settings, refs[200], 12)  # one range, now long in the target
    pg(pg_only_settings, "UPDATE raw.raw_messages SET views = -1 WHERE source_ref = %s", (refs[290],))
    # A range of ~5 rows a side is more than a leaf of 2: each is cut again (step 1) before comparing.
    cuts: list[str] = []
    for side in ("source", "target"):
        module_cls = verify_module.SqliteSource if side == "source" else verify_module.PostgresTarget
        real = module_cls.boundaries

        def spy(self, table, bounds, step, real=real, side=side):
            cuts.append(side)
            return real(self, table, bounds, step)

        monkeypatch.setattr(module_cls, "boundaries", spy)
    monkeypatch.setattr(verify_module, "LEAF_ROWS", 2)

    report = run_transfer(options(sqlite_dir, pg_only_settings, verify_only=True))
    assert report.status == "mismatch" and report.exit_code == 1
    raw = {(key, problem) for table, key, problem in differences(report) if table == "raw.raw_messages"}
    assert raw == {
        *(((ref,), "missing in target") for ref in lost),
        *(((ref,), "only in target") for ref in gained),
        ((refs[290],), "differs"),
    }
    assert "source" in cuts and "target" in cuts  # both sides were asked where to cut


@pytest.mark.slow
def test_differences_stop_at_the_limit_and_reach_the_json_report(
    populated,  # noqa: F811 - the fixture
    sqlite_dir,
    pg_only_settings,
):
    assert run_transfer(options(sqlite_dir, pg_only_settings)).status == "ok"
    refs = populated["refs"]
    # Message ids 61..69 are consecutive keys (bytewise: no id 610..699 exists): a run of ranges
    # with several changes each; ids 201..205 another run further on.
    changed = refs[60:69] + refs[200:205]
    pg(pg_only_settings, "UPDATE raw.raw_messages SET views = -1 WHERE source_ref = ANY(%s)", (changed,))

    report = run_transfer(options(sqlite_dir, pg_only_settings, verify_only=True, difference_limit=3))
    assert report.status == "mismatch"
    (entry,) = [e for e in report.tables if not e.match]
    assert entry.table == "raw.raw_messages"
    assert len(entry.differences) == 3  # stopped inside a range
    assert {tuple(d.key.values()) for d in entry.differences} <= {(ref,) for ref in changed}

    report = run_transfer(options(sqlite_dir, pg_only_settings, verify_only=True, difference_limit=6))
    (entry,) = [e for e in report.tables if not e.match]
    assert len(entry.differences) == 6  # across ranges, then stopped

    env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir), "LOG_LEVEL": "WARNING"}
    args = ["db", "migrate-to-postgres", "--verify-only", "--json", "--to", _dsn(pg_only_settings)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["status"] == "mismatch"
    (table,) = [t for t in data["tables"] if t["differences"]]
    assert table["table"] == "raw.raw_messages"
    named = {(d["key"]["source_ref"], d["problem"]) for d in table["differences"]}
    assert named == {(ref, "differs") for ref in changed}  # the default limit (50) names all 14
