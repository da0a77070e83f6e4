"""Telegram Desktop export import: streaming reader, mapping, idempotency, malformed files, CLI — both dialects."""

from __future__ import annotations

import json
import traceback
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.cli import db_env as cli_env

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database
from tg_parser.domain.models import Source
from tg_parser.errors import EXIT_LOCKED, EXIT_OK, EXIT_USAGE, TgParserError
from tg_parser.ingestion.export_import import (
    ChatNotChosen,
    ExportImporter,
    flatten_text,
    parse_from_id,
)
from tg_parser.ingestion.export_reader import ExportFormatError, ExportReader
from tg_parser.ingestion.locks import source_lock
from tg_parser.stores import IngestionStore, RawStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "channel_export" / "result.json"
CHANNEL = 1500000001


def importer(db: Database, settings: Settings, **kw: Any) -> ExportImporter:
    return ExportImporter(
        db,
        run_id="test",
        batch_size=kw.pop("batch_size", 500),
        sqlite_dir=settings.db_sqlite_dir if db.dialect == "sqlite" else None,
        **kw,
    )


def message(mid: int, text: Any = "hello", **fields: Any) -> dict[str, Any]:
    stamp = 1735722000 + mid * 60
    m = {
        "id": mid,
        "type": "message",
        "date": datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "date_unixtime": str(stamp),
        "from": "Chan",
        "from_id": "channel42",
        "text": text,
    }
    m.update(fields)
    return m


def chat(chat_id: int = 42, name: str = "Chan", messages: list[dict] | None = None, **extra: Any) -> dict:
    return {"name": name, "type": "public_channel", "id": chat_id, **extra, "messages": messages or []}


def write(path: Path, data: Any, *, indent: int | None = 1) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=indent), encoding="utf-8")
    return path


def all_rows(db: Database, channel_id: int = CHANNEL) -> dict[int, Any]:
    return {m.message_id: m for m in RawStore(db).stream_channel(channel_id)}


def nothing_written(db: Database) -> None:
    assert IngestionStore(db).list_sources() == []
    assert RawStore(db).count() == 0


# --- the shipped example -------------------------------------------------------------------------------


def test_example_import_maps_every_field_and_is_idempotent(db, settings):
    result = importer(db, settings).run(EXAMPLE)
    assert result.source_id == f"export-{CHANNEL}" and result.source_created
    assert (result.messages, result.inserted, result.service_skipped) == (17, 17, 3)
    rows = all_rows(db)
    assert sorted(rows) == [
        2,
        3,
        4,
        5,
        6,
        7,
        9,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        18,
        19,
        20,
    ]  # 1, 8, 17 are service

    assert rows[2].text.startswith("Добро пожаловать в канал!")
    assert rows[2].date == datetime(2025, 3, 3, 10, 0, tzinfo=UTC)  # date_unixtime, not the local `date`
    welcome = rows[3]
    assert welcome.text == (
        "Welcome! This channel covers technology and science. Read our about page."
    )  # flattened from a list
    entities = welcome.raw_payload["text_entities"]
    assert {"type": "text_link", "text": "about page", "href": "https://example.org/about"} in entities
    assert rows[4].media_type == "photo" and rows[4].media["exported"] is False
    assert rows[4].media["placeholder"].startswith("(File not included")
    assert rows[5].edit_date == datetime(2025, 3, 3, 15, 15, tzinfo=UTC)  # edited_unixtime
    assert rows[6].media_type == "video" and rows[6].media["duration_seconds"] == 94
    assert rows[7].parent_message_id == 5  # reply_to_message_id kept
    assert rows[9].media_type == "voice" and rows[9].text == ""  # media-only post kept
    assert rows[10].media_type == "poll" and rows[10].media["answers"] == ["Rust", "Go", "Python"]
    assert rows[13].raw_payload["author"] == "Анна Смирнова"
    assert rows[14].media_type == "sticker" and rows[14].media["sticker_emoji"] == "🚀"
    assert rows[2].raw_payload["from_peer"] == {"type": "channel", "id": CHANNEL}
    source = IngestionStore(db).get_source(result.source_id)
    assert (source.kind, source.channel_id, source.title, source.last_post_id) == (
        "export",
        CHANNEL,
        "Tech & Наука",
        20,
    )
    assert source.last_success_at is not None

    again = importer(db, settings).run(EXAMPLE)
    assert (again.inserted, again.versions, again.unchanged) == (0, 0, 17)
    assert not again.source_created and again.source_id == result.source_id
    runs = IngestionStore(db).recent_runs(result.source_id)
    assert [r.posts_inserted for r in reversed(runs)] == [17, 0] and all(r.success for r in runs)


def test_reimport_of_an_edited_export_journals_the_edit(db, settings, tmp_path):
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    importer(db, settings).run(write(tmp_path / "a.json", data))
    edited = next(m for m in data["messages"] if m["id"] == 2)
    edited["text"] = "Добро пожаловать! (исправлено)"
    edited["edited_unixtime"] = "1741000000"
    result = importer(db, settings).run(write(tmp_path / "b.json", data))
    assert (result.inserted, result.versions) == (0, 1)
    ref = f"tg:{CHANNEL}:post:2"
    assert RawStore(db).get(ref).text.startswith("Добро пожаловать в канал!")  # snapshot kept
    assert RawStore(db).versions(ref)[0].text == "Добро пожаловать! (исправлено)"


def test_import_into_a_chosen_source_id(db, settings):
    result = importer(db, settings).run(EXAMPLE, source_id="tech")
    assert result.source_id == "tech" and result.source_created
    assert RawStore(db).get(f"tg:{CHANNEL}:post:2").source_id == "tech"
    IngestionStore(db).add_source(Source(source_id="other", channel_id=7))
    with pytest.raises(Exception, match="source 'other' is channel 7"):
        importer(db, settings).run(EXAMPLE, source_id="other")


# --- Telegram Desktop's quirks --------------------------------------------------------------------------


def test_xnn_control_character_escapes_are_repaired(db, settings, tmp_path):
    body = json.dumps(
        chat(messages=[message(1, "PLACEHOLDER"), message(2, "plain")]), ensure_ascii=False, indent=1
    )
    # Telegram Desktop writes control characters as \xNN (invalid JSON); a literal backslash-x stays as is.
    body = body.replace("PLACEHOLDER", r"1=412\x012=97\x1F end \\x41 kept")
    path = tmp_path / "result.json"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)  # the file really is invalid JSON
    result = importer(db, settings).run(path)
    assert result.inserted == 2 and result.escapes_fixed == 2
    assert all_rows(db, 42)[1].text == "1=412\x012=97\x1f end \\x41 kept"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_reader_gives_the_same_messages_whatever_the_chunk_size(tmp_path, chunk):
    messages = [
        message(1, r"bell\x07 and \x0b" + "я" * 30),
        message(2, ["mixed ", {"type": "bold", "text": "ёж"}, " 🚀"]),
        message(3, "x", reply_to_message_id=1, views=12345678901234),
    ]
    body = json.dumps(chat(messages=messages), ensure_ascii=False).replace("\\\\x", "\\x")
    path = tmp_path / "r.json"
    path.write_text(body, encoding="utf-8")
    seen: list[dict] = []
    reader = ExportReader(path, chunk_bytes=chunk)
    reader.walk(lambda header: seen.append)
    assert [m["id"] for m in seen] == [1, 2, 3]
    assert seen[0]["text"] == "bell\x07 and \x0b" + "я" * 30
    assert seen[2]["views"] == 12345678901234  # a number split across chunks is read whole
    assert reader.escapes_fixed == 2


def test_date_unixtime_text_flattening_and_from_id_parsing():
    assert flatten_text(["a ", {"type": "link", "text": "b"}, " c"]) == "a b c"
    assert flatten_text("plain") == "plain" and flatten_text(None) == ""
    assert parse_from_id("user123") == {"type": "user", "id": 123}
    assert parse_from_id("channel1500000001") == {"type": "channel", "id": 1500000001}
    assert parse_from_id("chat77") == {"type": "chat", "id": 77}
    assert parse_from_id(99) == {"type": "user", "id": 99}
    first = parse_from_id("user123")
    assert first is not None
    first["id"] = 0  # each call gives its own dict: a caller changing one changes no later result
    assert parse_from_id("user123") == {"type": "user", "id": 123}
    assert parse_from_id("someone") == {"type": "unknown", "raw": "someone"}


@pytest.mark.parametrize(
    "seconds",
    [0, 1, -1, 59, 86399, 86400, -86400, -86401, 951782400, 1735722000, 253402300799, -62135596800],
)
def test_unix_times_become_the_canonical_text_of_their_instant(seconds):
    """Dates are formatted from the Unix time by day and arithmetic: the text must be exactly what the
    raw store writes for that instant (format_timestamp), at day, leap-day and calendar edges."""
    from tg_parser.db.codec import format_timestamp
    from tg_parser.ingestion.export_import import _unixtime

    expected = format_timestamp(datetime.fromtimestamp(seconds, UTC))
    assert _unixtime({"at": str(seconds)}, "at") == expected
    assert _unixtime({"at": seconds}, "at") == expected  # a number too, and the day now known


@pytest.mark.parametrize("seconds", [253402300800, -62135596801, 10**20])
def test_unix_times_beyond_the_calendar_are_refused(seconds):
    from tg_parser.ingestion.export_import import ExportMessageError, _unixtime

    with pytest.raises(ExportMessageError, match="out of range"):
        _unixtime({"at": str(seconds)}, "at")


def test_sqlite_stores_the_spooled_bytes_as_text(db, settings, tmp_path):
    """The import binds text, media and payload as UTF-8 bytes on SQLite: they must land as TEXT (what
    every other writer stores, and what readers and exports compare), never as BLOBs."""
    if db.dialect != "sqlite":
        pytest.skip("SQLite storage classes")
    import sqlite3

    photo = message(2, "фото", photo="(File not included.)", width=10, height=20)
    importer(db, settings).run(write(tmp_path / "b.json", chat(messages=[message(1, "привет"), photo])))
    with sqlite3.connect(settings.db_sqlite_dir / "raw_storage.sqlite") as conn:
        kinds = conn.execute(
            "SELECT message_id, typeof(text), typeof(media), typeof(raw_payload) FROM raw_messages"
            " ORDER BY message_id"
        ).fetchall()
        assert kinds == [(1, "text", "null", "text"), (2, "text", "text", "text")]
        assert conn.execute("SELECT text FROM raw_messages WHERE message_id = 2").fetchone() == ("фото",)


def test_old_export_without_unixtime_falls_back_to_date_as_utc(db, settings, tmp_path):
    old = message(1, "old")
    del old["date_unixtime"]
    importer(db, settings).run(write(tmp_path / "old.json", chat(messages=[old])))
    row = all_rows(db, 42)[1]
    assert row.date.tzinfo is not None and row.raw_payload["date_assumed_utc"] is True


# --- full exports ------------------------------------------------------------------------------------


def full_export(tmp_path: Path) -> Path:
    data = {
        "about": "Here is the data you requested.",
        "personal_information": {"user_id": 1, "first_name": "Me"},
        "contacts": {"about": "contacts", "list": [{"first_name": "A", "phone_number": "+1"}]},
        "chats": {
            "about": "chats",
            "list": [
                chat(10, "Family", [message(1, "hi mom")], type="personal_chat"),
                chat(20, "Tech News", [message(1, "news one"), message(2, "news two")]),
                chat(30, "Empty"),
            ],
        },
        "left_chats": {"about": "left", "list": [chat(40, "Old channel", [message(5, "bye")])]},
    }
    return write(tmp_path / "full.json", data)


def test_full_export_needs_a_chat_and_imports_only_that_one(db, settings, tmp_path):
    path = full_export(tmp_path)
    with pytest.raises(ChatNotChosen) as caught:
        importer(db, settings).run(path)
    assert "holds 4 chats" in caught.value.message and "Tech News (id 20" in caught.value.hint
    nothing_written(db)

    result = importer(db, settings).run(path, chat="tech news")
    assert result.chat.id == 20 and result.inserted == 2 and result.chats_in_file == 4
    assert {m.message_id for m in RawStore(db).stream_channel(20)} == {1, 2}
    assert RawStore(db).count() == 2

    result = importer(db, settings).run(path, chat="40")
    assert result.chat.name == "Old channel" and result.inserted == 1  # left chats are importable too

    with pytest.raises(ChatNotChosen, match="no chat 'nope'"):
        importer(db, settings).run(path, chat="nope")


# --- malformed files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("truncated", None, "unexpected end of the file"),
        ("top-level array", b'[{"id": 1}]', "found '['"),
        ("no messages", b'{"name": "x", "id": 1, "list": []}', "neither 'messages' nor 'chats'"),
        ("binary garbage", bytes(range(256)) * 50, "not"),
        ("empty", b"", "an empty file"),
        ("garbage after", None, "unexpected data after the end"),
        ("bad message id", None, "message id 'seven' is not a positive integer"),
        ("message not an object", None, "a message that is not a JSON object"),
        ("bad unixtime", None, "'date_unixtime' is 'soon', not a Unix time"),
        ("messages before id", b'{"name": "x", "messages": [], "id": 5}', "messages come before its 'id'"),
    ],
)
def test_malformed_files_fail_with_one_error_and_write_nothing(
    db, settings, tmp_path, name, content, expected
):
    good = json.dumps(chat(messages=[message(i, f"m{i}") for i in range(1, 1500)]), indent=1).encode()
    if name == "truncated":
        content = good[: len(good) * 3 // 4]  # most messages are complete: still nothing may be stored
    elif name == "garbage after":
        content = good + b"\n{}"
    elif name == "bad message id":
        content = json.dumps(chat(messages=[message(1), {**message(2), "id": "seven"}])).encode()
    elif name == "message not an object":
        content = json.dumps(chat(messages=[message(1), "oops"])).encode()
    elif name == "bad unixtime":
        content = json.dumps(chat(messages=[message(1), message(2, date_unixtime="soon")])).encode()
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ExportFormatError) as caught:
        importer(db, settings, batch_size=100).run(path)
    assert expected in caught.value.one_line()
    assert "\n" not in caught.value.one_line()
    nothing_written(db)


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("lone surrogate", {"text": "\\ud83d alone"}, "not valid Unicode"),
        ("message id beyond 64 bits", {"id": 2**63}, "message id 9223372036854775808 is out of range"),
        ("reply beyond 64 bits", {"reply_to_message_id": -(2**64)}, "reply_to_message_id"),
        (
            "contact of the wrong shape",
            {"contact_information": ["a", "b"]},
            "media fields of an unexpected shape",
        ),
    ],
)
def test_content_that_cannot_be_stored_fails_while_checking(db, settings, tmp_path, name, change, expected):
    # Each of these would only fail when stored; the checking pass catches them, so nothing is written.
    bad = {**message(700, "bad"), **change}
    body = json.dumps(chat(messages=[*[message(i) for i in range(1, 600)], bad]), ensure_ascii=False)
    path = tmp_path / "bad.json"
    path.write_text(body.replace("\\\\ud83d", "\\ud83d"), encoding="utf-8")
    with pytest.raises(ExportFormatError) as caught:
        importer(db, settings, batch_size=100).run(path)
    assert expected in caught.value.one_line() and "\n" not in caught.value.one_line()
    nothing_written(db)


def test_chat_id_beyond_64_bits_fails_while_checking(db, settings, tmp_path):
    path = write(tmp_path / "huge.json", chat(2**63, messages=[message(1)]))
    with pytest.raises(ExportFormatError, match="chat id 9223372036854775808 is out of range"):
        importer(db, settings).run(path)
    nothing_written(db)


def test_nul_characters_are_kept_on_sqlite_and_refused_whole_on_postgres(db, settings, tmp_path):
    # Telegram Desktop writes U+0000 as \x00; PostgreSQL text and jsonb cannot hold it.
    body = json.dumps(chat(messages=[message(1, "ok"), message(2, "PLACEHOLDER")]), indent=1)
    path = tmp_path / "nul.json"
    path.write_text(body.replace("PLACEHOLDER", r"a\x00b"), encoding="utf-8")
    if db.dialect == "postgres":
        with pytest.raises(ExportFormatError, match="message 2 holds a NUL character"):
            importer(db, settings).run(path)
        nothing_written(db)
    else:
        assert importer(db, settings).run(path).inserted == 2
        assert all_rows(db, 42)[2].text == "a\x00b"


def test_the_file_changing_while_it_is_read_stops_the_import(db, settings, tmp_path):
    path = write(tmp_path / "growing.json", chat(messages=[message(i) for i in range(1, 5000)]))

    appended: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "checking" and not appended:  # called while the file is being read
            appended.append(done)
            with path.open("a") as handle:
                handle.write(" ")  # someone still writing the export

    with pytest.raises(ExportFormatError, match="changed while it was being read"):
        importer(db, settings, progress=progress).run(path)
    nothing_written(db)


def test_batches_of_any_size_store_the_same_rows(db, settings, tmp_path):
    importer(db, settings, batch_size=3).run(EXAMPLE, source_id="small")
    small = {k: v.model_dump(exclude={"inserted_at", "source_id"}) for k, v in all_rows(db).items()}
    again = importer(db, settings, batch_size=3).run(EXAMPLE, source_id="small")
    assert (again.inserted, again.unchanged) == (0, 17)
    assert len(small) == 17
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["id"] = CHANNEL + 1  # the same messages under another chat: one batch of 500 this time
    importer(db, settings, batch_size=500).run(write(tmp_path / "copy.json", data))
    large = {
        k: {**v.model_dump(exclude={"inserted_at", "source_id"}), "source_ref": "", "channel_id": 0}
        for k, v in all_rows(db, CHANNEL + 1).items()
    }
    assert {k: {**v, "source_ref": "", "channel_id": 0} for k, v in small.items()} == large


def test_scratch_file_that_cannot_be_written_is_one_clear_error(db, settings, tmp_path):
    imp = importer(db, settings)
    imp.spool_dir = tmp_path / "no such directory"
    with pytest.raises(TgParserError, match=r"cannot write the import's scratch file in .*no such directory"):
        imp.run(EXAMPLE)
    nothing_written(db)


def test_missing_file(db, settings, tmp_path):
    with pytest.raises(ExportFormatError, match="cannot read"):
        importer(db, settings).run(tmp_path / "missing.json")


# --- memory -----------------------------------------------------------------------------------------


def test_reader_memory_stays_flat(tmp_path):
    """A ~25 MB export is walked with a bounded buffer: peak memory far below the file size."""
    path = tmp_path / "big.json"
    text = "Сообщение о технологиях и науке " * 20
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"name": "Big", "type": "public_channel", "id": 9, "messages": [\n')
        for i in range(1, 30001):
            if i > 1:
                handle.write(",\n")
            handle.write(json.dumps(message(i, text), ensure_ascii=False))
        handle.write("\n]}\n")
    size = path.stat().st_size
    assert size > 20_000_000
    count = 0

    def on_message(_: dict) -> None:
        nonlocal count
        count += 1

    tracemalloc.start()
    try:
        ExportReader(path).walk(lambda header: on_message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30000
    assert peak < 12_000_000, f"peak {peak:,} bytes for a {size:,}-byte file"


# --- CLI ---------------------------------------------------------------------------------------------


def invoke(settings: Settings, *args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env=cli_env(settings), prog_name="tg-parser")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result


def test_cli_import_twice_second_inserts_nothing(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    first = invoke(settings, "ingest", "--from-export", str(EXAMPLE))
    assert first.exit_code == EXIT_OK, first.stderr
    assert "into new source 'export-1500000001': 17 message(s), 17 new" in first.stdout
    second = invoke(settings, "ingest", "--from-export", str(EXAMPLE), "--json")
    assert second.exit_code == EXIT_OK
    data = json.loads(second.stdout)
    assert data["inserted"] == 0 and data["unchanged"] == 17 and data["source_created"] is False
    assert second.stderr == ""  # no progress bar outside a terminal


def test_cli_malformed_file_is_one_line_exit_2(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_bytes(EXAMPLE.read_bytes()[:5000])
    result = invoke(settings, "ingest", "--from-export", str(bad))
    assert result.exit_code == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "unexpected end of the file" in lines[0]
    db = open_database(settings)
    try:
        nothing_written(db)
    finally:
        db.close()
    missing = invoke(settings, "ingest", "--from-export", str(tmp_path / "nope.json"))
    assert missing.exit_code == EXIT_USAGE and "does not exist" in missing.stderr


def test_cli_import_waits_for_nobody_when_the_source_is_locked(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert invoke(settings, "ingest", "--from-export", str(EXAMPLE)).exit_code == 0
    db = open_database(settings)
    try:
        with source_lock(db, f"export-{CHANNEL}"):
            result = invoke(settings, "ingest", "--from-export", str(EXAMPLE))
    finally:
        db.close()
    assert result.exit_code == EXIT_LOCKED and "being ingested by another run" in result.stderr


def test_progress_is_reported_per_phase(db, settings):
    calls: list[tuple[str, int, int]] = []
    importer(db, settings, progress=lambda *a: calls.append(a)).run(EXAMPLE)
    phases = [c[0] for c in calls]
    assert phases[0] == "checking" and phases[-1] == "importing"
    total = EXAMPLE.stat().st_size
    assert calls[-1] == ("importing", total, total)


def test_export_rows_equal_the_rows_of_raw_message_records() -> None:
    """export_row builds the raw-store row without a RawMessage per message; it must give exactly what
    RawStore.row_of(RawMessage.build(...)) gives, so both ingestion paths store the same thing."""
    from tg_parser.domain.models import RawMessage
    from tg_parser.ingestion.export_import import export_fields, export_row, spool_row

    data = json.loads((Path(__file__).parents[1] / "examples" / "channel_export" / "result.json").read_text())
    inserted_at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    compared = with_media = 0
    for message in data["messages"]:
        fields = export_fields(message)
        if fields is None:
            continue
        ours = export_row(spool_row(fields), channel_id=1500000001, source_id="s", inserted_at=inserted_at)
        rest = {k: v for k, v in fields.items() if k != "message_id"}
        record = RawMessage.build(
            channel_id=1500000001,
            message_type="post",
            message_id=fields["message_id"],
            source_id="s",
            inserted_at=inserted_at,
            **rest,
        )
        assert ours == RawStore.row_of(record), fields["message_id"]
        compared += 1
        with_media += fields["media"] is not None
    assert compared >= 10 and with_media >= 5
