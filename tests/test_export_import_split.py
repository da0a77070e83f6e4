"""A big single-chat export checked in two parts at once (ExportImporter._read_split): the same rows,
counts and errors as the file read whole, whatever the cut — both dialects."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from support.cli import db_env as cli_env
from test_export_import import all_rows, chat, importer, message, nothing_written, write

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.ingestion import export_import
from tg_parser.ingestion.export_import import ExportImporter
from tg_parser.ingestion.export_reader import (
    ExportFormatError,
    ExportReader,
    SplitPointReached,
    split_point,
)
from tg_parser.stores import IngestionStore

CHAT = 42

# The split read forks; where a system cannot (Windows), the import always reads the file whole.
pytestmark = pytest.mark.skipif(export_import._FORK is None, reason="no fork on this system")


def export_messages(count: int) -> list[dict[str, Any]]:
    """Messages of every kind the checks look at: service ones, edits, replies, media, structured text."""
    out: list[dict[str, Any]] = []
    for i in range(1, count + 1):
        if i % 17 == 0:
            out.append({"id": i, "type": "service", "date_unixtime": "1735722000", "action": "pin_message"})
            continue
        extra: dict[str, Any] = {}
        if i % 5 == 0:
            extra["edited_unixtime"] = str(1735722000 + i * 60 + 30)
        if i % 7 == 0:
            extra.update(photo="(File not included. Change data exporting settings to download.)", width=9)
        if i % 3 == 0:
            extra["reply_to_message_id"] = i - 1
        text: Any = f"message {i} PLACEHOLDER" if i % 2 else ["plain ", {"type": "bold", "text": f"{i}"}]
        out.append(message(i, text, **extra))
    return out


def big_export(path: Path, count: int = 900, *, indent: int | None = 1, **extra: Any) -> Path:
    body = json.dumps(chat(CHAT, messages=export_messages(count), **extra), ensure_ascii=False, indent=indent)
    # Telegram Desktop's `\xNN` escapes, in both halves of the file (repaired while reading).
    path.write_text(body.replace("PLACEHOLDER", r"a\x07b"), encoding="utf-8")
    return path


def stored(db: Database, channel_id: int = CHAT) -> dict[int, dict[str, Any]]:
    return {
        k: v.model_dump(exclude={"inserted_at", "source_id", "source_ref", "channel_id"})
        for k, v in all_rows(db, channel_id).items()
    }


def split_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record whether each split read stood for the whole read (True) or was discarded (False)."""
    seen: list[bool] = []
    original = ExportImporter._read_split

    def spy(self: ExportImporter, *args: Any) -> Any:
        outcome = original(self, *args)
        seen.append(outcome is not None)
        return outcome

    monkeypatch.setattr(ExportImporter, "_read_split", spy)
    return seen


def run_whole_and_split(
    db: Database, settings: Settings, path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any, list[bool]]:
    """Import `path` read whole (into chat CHAT+1, a copy) and in two parts (chat CHAT)."""
    data = path.read_text(encoding="utf-8").replace(f'"id": {CHAT},', f'"id": {CHAT + 1},', 1)
    copy = path.with_name("copy.json")
    copy.write_text(data, encoding="utf-8")
    whole = importer(db, settings, batch_size=64)
    whole.split_min_bytes = None
    whole_result = whole.run(copy)
    seen = split_outcomes(monkeypatch)
    split = importer(db, settings, batch_size=64)
    split.split_min_bytes = 0
    return whole_result, split.run(path), seen


def errors_whole_and_split(db: Database, settings: Settings, path: Path, **kw: Any) -> list[str]:
    """The one-line error of importing `path` read whole, then of importing it in two parts."""
    errors = []
    for split_min_bytes in (None, 0):
        imp = importer(db, settings, **kw)
        imp.split_min_bytes = split_min_bytes
        with pytest.raises(ExportFormatError) as caught:
            imp.run(path)
        errors.append(caught.value.one_line())
    return errors


def test_split_read_stores_what_the_whole_read_stores(db, settings, tmp_path, monkeypatch):
    path = big_export(tmp_path / "result.json")
    whole, split, seen = run_whole_and_split(db, settings, path, monkeypatch)
    assert seen == [True]  # the file really was read in two parts
    for key in ("messages", "inserted", "service_skipped", "escapes_fixed"):
        assert getattr(split, key) == getattr(whole, key), key
    assert split.escapes_fixed == 424 and split.service_skipped == 52 and split.inserted == 848
    assert stored(db, CHAT) == stored(db, CHAT + 1)
    # Rows in file order, whatever part spooled them (rowids follow the order of the messages).
    assert list(all_rows(db, CHAT)) == sorted(all_rows(db, CHAT))
    sources = {s.channel_id: s for s in IngestionStore(db).list_sources()}
    assert sources[CHAT].last_post_id == sources[CHAT + 1].last_post_id == 900
    again = importer(db, settings)
    again.split_min_bytes = 0
    assert again.run(path).inserted == 0


def test_one_message_per_line_is_split_too(db, settings, tmp_path, monkeypatch):
    # bench_import's shape: the messages array holds one compact message per line.
    lines = [json.dumps(m, ensure_ascii=False) for m in export_messages(600)]
    path = tmp_path / "result.json"
    head = '{\n "name": "Chan",\n "type": "public_channel",\n "id": 42,\n "messages": [\n'
    path.write_text(head + ",\n".join(lines) + "\n ]\n}\n", encoding="utf-8")
    whole, split, seen = run_whole_and_split(db, settings, path, monkeypatch)
    assert seen == [True]
    assert (split.inserted, split.service_skipped) == (whole.inserted, whole.service_skipped) == (565, 35)
    assert stored(db, CHAT) == stored(db, CHAT + 1)


@pytest.mark.parametrize("where", ["first part", "second part"])
def test_a_bad_message_in_either_part_is_the_whole_reads_error(db, settings, tmp_path, where):
    messages = export_messages(900)
    bad = 100 if where == "first part" else 800
    messages[bad - 1] = {**messages[bad - 1], "date_unixtime": "soon", "type": "message"}
    path = write(tmp_path / "bad.json", chat(CHAT, messages=messages))
    errors = errors_whole_and_split(db, settings, path)
    assert errors[0] == errors[1]
    assert f"message {bad}: 'date_unixtime' is 'soon'" in errors[0]
    nothing_written(db)


@pytest.mark.parametrize(
    "content",
    [
        "truncated",  # the second part ends inside a message
        "data after the end",
        "a key after the messages",  # valid, but not what the second part's walk accepts: read whole
    ],
)
def test_files_the_second_part_does_not_accept_are_read_whole(db, settings, tmp_path, content, monkeypatch):
    path = big_export(tmp_path / "result.json")
    data = path.read_bytes()
    if content == "truncated":
        path.write_bytes(data[: len(data) * 9 // 10])
    elif content == "data after the end":
        path.write_bytes(data + b"\n{}")
    else:
        path.write_bytes(data.rstrip().removesuffix(b"}") + b', "about": "after"\n}')
    seen = split_outcomes(monkeypatch)
    outcomes = []
    for split_min_bytes in (None, 0):
        imp = importer(db, settings)
        imp.split_min_bytes = split_min_bytes
        try:
            result = imp.run(path, source_id=f"s{split_min_bytes}")
            outcomes.append(("ok", result.inserted + result.unchanged, result.escapes_fixed))
        except ExportFormatError as exc:
            outcomes.append(("error", exc.one_line(), 0))
    assert seen == [False]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == ("ok" if content == "a key after the messages" else "error")


def test_a_cut_anywhere_gives_the_whole_reads_rows(db, settings, tmp_path, monkeypatch):
    # The cut is a guess; one inside a message, inside a string or in the chat's header is discarded.
    path = big_export(tmp_path / "result.json", 300)
    data = path.read_bytes()
    starts = [i + 3 for i in range(len(data)) if data[i : i + 4] == b"\n  {"]  # each message's `{`
    cuts = [
        10,  # in the header
        data.index(b"message 151") + 3,  # inside a string
        starts[150] + 1,  # one byte after a message start
        starts[150] - 3,  # the line break before a message: whitespace up to it, so a good cut too
        starts[150],
    ]
    seen = split_outcomes(monkeypatch)
    reference = None
    for number, cut in enumerate(cuts):
        monkeypatch.setattr(export_import, "split_point", lambda _path, _min, cut=cut: cut)
        imp = importer(db, settings)
        imp.split_min_bytes = 0
        result = imp.run(path, source_id=f"cut{number}")
        assert (result.inserted if number == 0 else result.unchanged) == 283
        if reference is None:
            reference = stored(db)
        assert stored(db) == reference
    assert seen == [False, False, False, True, True]


def assert_read_whole(db: Database, settings: Settings, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Import `path` offered for a split read: the split is given up and the file read whole, in full."""
    seen = split_outcomes(monkeypatch)
    imp = importer(db, settings)
    imp.split_min_bytes = 0
    assert imp.run(path).inserted == 848
    assert seen == [False]


def test_a_second_process_that_dies_leaves_the_whole_read(db, settings, tmp_path, monkeypatch):
    path = big_export(tmp_path / "result.json")
    monkeypatch.setattr(export_import, "_check_tail", lambda *args: os._exit(3))
    assert_read_whole(db, settings, path, monkeypatch)


def test_a_second_process_that_hangs_is_stopped_and_the_file_read_whole(db, settings, tmp_path, monkeypatch):
    # A forked reader that stops advancing (say, a lock another thread held at the fork) must not hang
    # the import: once it has not advanced for STALL_SECONDS it is stopped and the file read whole.
    path = big_export(tmp_path / "result.json")
    pids: list[int] = []

    def hung(*args: Any) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, export_import._STOP_SIGNALS)
        select.select([], [], [])  # blocks until killed

    original = export_import.ExportImporter._start_tail

    def start(self: ExportImporter, *args: Any) -> Any:
        started = original(self, *args)
        pids.append(started[0].pid)
        return started

    monkeypatch.setattr(export_import, "_check_tail", hung)
    monkeypatch.setattr(export_import.ExportImporter, "_start_tail", start)
    monkeypatch.setattr(export_import, "STALL_SECONDS", 0.2)
    assert_read_whole(db, settings, path, monkeypatch)
    assert len(pids) == 1
    with pytest.raises(ChildProcessError):  # stopped and reaped, not left running
        os.waitpid(pids[0], os.WNOHANG)


def test_split_point_is_a_message_start_near_the_middle(tmp_path):
    path = big_export(tmp_path / "result.json")
    size = path.stat().st_size
    cut = split_point(path, 0)
    assert cut is not None and size // 2 <= cut < size // 2 + 200
    data = path.read_bytes()
    assert data[cut - 3 : cut + 1] == b"\n  {"
    assert split_point(path, size + 1) is None  # smaller than the threshold
    compact = big_export(tmp_path / "compact.json", indent=None)
    assert split_point(compact, 0) is None  # one line: no place to cut
    full = write(tmp_path / "full.json", {"chats": {"list": [chat(CHAT, messages=export_messages(50))]}})
    assert split_point(full, 0) is None  # only single-chat exports are cut


def test_the_two_walks_together_give_every_message_once(tmp_path):
    path = big_export(tmp_path / "result.json")
    cut = split_point(path, 0)
    assert cut is not None
    whole: list[dict] = []
    ExportReader(path).walk(lambda header: whole.append)
    first: list[dict] = []
    with pytest.raises(SplitPointReached):
        ExportReader(path, stop_at=cut).walk(lambda header: first.append)
    rest: list[dict] = []
    ExportReader(path).walk_tail(cut, rest.append)
    assert 0 < len(first) < len(whole) and first + rest == whole


@pytest.mark.parametrize("shape", ["single", "full"])
def test_a_chat_with_two_messages_arrays_is_refused(db, settings, tmp_path, shape):
    # Duplicate keys: a second "messages" array of the same chat was taken for a second chat, whose
    # claim on the spool dropped the first array's last, unwritten batch: 256 of 288 rows were stored.
    first = json.dumps(export_messages(300), indent=1)
    second = json.dumps([message(1000 + i, "late") for i in range(5)], indent=1)
    body = f'{{"name": "Chan", "type": "public_channel", "id": {CHAT}, "messages": {first}, "messages": {second}}}'
    if shape == "full":
        body = f'{{"chats": {{"list": [{body}]}}}}'
    path = tmp_path / "twice.json"
    path.write_text(body, encoding="utf-8")
    errors = errors_whole_and_split(db, settings, path, batch_size=64)
    assert errors[0] == errors[1]
    assert "a second 'messages' array" in errors[0]
    nothing_written(db)


def test_a_refused_fork_leaves_the_whole_read(db, settings, tmp_path, monkeypatch):
    # A process limit (EAGAIN) or no memory to copy the page tables (ENOMEM): the import must go on
    # by one process, not fail where the whole read succeeds.
    path = big_export(tmp_path / "result.json")

    def refused() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    assert_read_whole(db, settings, path, monkeypatch)


def test_ctrl_c_as_the_second_process_starts_is_held_until_it_ignores_it(db, settings, tmp_path, monkeypatch):
    # Between fork and `_check_tail`'s SIG_IGN, a Ctrl-C (sent to the whole process group) raised
    # KeyboardInterrupt in the child: in multiprocessing's bootstrap (a traceback on the terminal) or,
    # right after fork, in the parent's own code, which the child then went on running (its `Interrupted.`,
    # its exit handlers on the parent's database connections).
    path = big_export(tmp_path / "result.json")
    fork = os.fork

    def fork_then_ctrl_c() -> int:
        pid = fork()
        if pid == 0:
            try:
                signal.raise_signal(signal.SIGINT)
            except BaseException:
                os._exit(99)  # the child would run the parent's code from here: stop it in the test
        return pid

    monkeypatch.setattr(os, "fork", fork_then_ctrl_c)
    seen = split_outcomes(monkeypatch)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    imp = importer(db, settings)
    imp.split_min_bytes = 0
    assert imp.run(path).inserted == 848
    assert seen == [True]  # the second process ignored the Ctrl-C that reached it as it started
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == held  # the parent's mask is as it was


def test_a_file_replaced_between_the_two_opens_is_refused(db, settings, tmp_path, monkeypatch):
    # The two parts open the file each; one replaced in between by another of the same size and time
    # (a copy kept its time, a sync tool) gave rows of two files. Its identity is checked too.
    path = big_export(tmp_path / "result.json")
    data = path.read_bytes()
    other = tmp_path / "other.json"
    other.write_bytes(data.replace(b'"message 801 ', b'"MESSAGE 801 '))
    assert other.stat().st_size == len(data) and b"MESSAGE 801" in other.read_bytes()
    info = path.stat()
    os.utime(other, ns=(info.st_atime_ns, info.st_mtime_ns))
    gate_read, gate_write = os.pipe()
    check_tail, open_file = export_import._check_tail, ExportReader._open

    def tail_after_the_swap(*args: Any) -> None:  # the forked part, once the first has opened the file
        ready, _, _ = select.select([gate_read], [], [], 60)
        assert ready
        check_tail(*args)

    def open_then_swap(self: ExportReader) -> Any:
        handle = open_file(self)
        if self.stop_at is not None:  # the first part's walk has the old file open: replace it
            os.replace(other, path)
            os.write(gate_write, b"x")
        return handle

    monkeypatch.setattr(export_import, "_check_tail", tail_after_the_swap)
    monkeypatch.setattr(ExportReader, "_open", open_then_swap)
    imp = importer(db, settings)
    imp.split_min_bytes = 0
    try:
        with pytest.raises(ExportFormatError, match="changed while it was being read"):
            imp.run(path)
    finally:
        os.close(gate_read)
        os.close(gate_write)
    nothing_written(db)


ORPHAN = """
import os, sys
from tg_parser.ingestion import export_import
from tg_parser.cli.main import main

export_import.SPLIT_MIN_BYTES = 0
first, rows = os.getpid(), os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
gate_read, gate_write = os.pipe()
spool_row, gated = export_import.spool_row, []

def counted(fields, **kw):
    if os.getpid() == first:
        os.read(0, 1)  # the first part never ends: the test kills this process
    elif not gated:
        gated.append(True)
        os.close(gate_write)
        os.write(1, b"ready\\n")
        os.read(gate_read, 1)  # the end of the file: the first process is gone
    if os.getpid() != first:
        os.write(rows, b".")
    return spool_row(fields, **kw)

export_import.spool_row = counted
sys.argv = ["tg-parser", "ingest", "--from-export", sys.argv[2], "--silent"]
main()
"""


def read_until(stream: Any, *, eof: bool, deadline: float = 60) -> bytes:
    """A line (or everything up to the end) from a subprocess's pipe, within `deadline` seconds."""
    out = b""
    while eof or not out.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], deadline)
        assert ready, f"nothing from the process within {deadline} s"
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    return out


def test_the_second_process_stops_when_the_first_is_gone(settings, tmp_path):
    # Killed (SIGKILL, or SIGTERM, whose default ends the CLI at once), the first process left the
    # second one reading the rest of a file of gigabytes into a scratch file nobody would read.
    path = big_export(tmp_path / "result.json", 12000)
    rows = tmp_path / "rows"
    rows.write_bytes(b"")
    env = {**os.environ, **cli_env(settings), "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(rows), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert read_until(proc.stdout, eof=False) == b"ready\n"
        proc.kill()
        proc.wait(timeout=60)
        # The pipe ends when the second process (which holds a copy of it) has gone too.
        read_until(proc.stdout, eof=True)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdin.close()
        proc.stdout.close()
    # It stops at its next look at the first process (every 2,000 messages), not after ~5,650 rows.
    assert 0 < rows.stat().st_size <= 2000


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ('"x": ' + "[" * 100_000 + "]" * 100_000, "a value nested too deeply"),
        ('"x": ' + "7" * 5000, "a number of more digits than"),
    ],
    ids=["deep nesting", "long number"],
)
@pytest.mark.parametrize("where", ["first part", "second part"])
def test_values_python_cannot_decode_are_one_clear_error(db, settings, tmp_path, bad, said, where):
    # Were 'unexpected error: RecursionError ...' / 'ValueError: Exceeds the limit (4300 digits)'.
    path = big_export(tmp_path / "result.json")
    number = 100 if where == "first part" else 800
    data = path.read_text(encoding="utf-8").replace(f'"id": {number},', f'"id": {number}, {bad},', 1)
    path.write_text(data, encoding="utf-8")
    errors = errors_whole_and_split(db, settings, path)
    assert errors[0] == errors[1] and said in errors[0]
    nothing_written(db)


def test_a_chat_id_of_too_many_digits_is_one_clear_error(tmp_path):
    path = tmp_path / "id.json"
    path.write_text('{"name": "C", "id": "' + "9" * 5000 + '", "messages": []}', encoding="utf-8")
    with pytest.raises(ExportFormatError, match="the chat id is a number of 5,000 digits"):
        ExportReader(path).walk(lambda header: None)


def open_files() -> list[str] | None:
    """This process's open files and pipes (Linux), not its sockets: the PostgreSQL pool opens and
    closes connections in its own threads, at any time."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the listing's own descriptor, gone once listed
            links.append(f"{fd} {os.readlink(f'/proc/self/fd/{fd}')}")
    return sorted(link for link in links if " socket:" not in link)


@pytest.mark.parametrize("when", ["as the second process starts", "while the parts are checked"])
def test_ctrl_c_during_a_split_read_stops_both_processes(db, settings, tmp_path, monkeypatch, when):
    # A Ctrl-C reaches the first process as it forks (held until then, raised once the fork is done:
    # the second process was left running), while it checks its part or waits for the second's answer
    # (sent by the second process once it has spooled a message): the import stops, the second process
    # is stopped and reaped, no file or pipe stays open, nothing is written.
    path = big_export(tmp_path / "result.json")
    first, spool_row, fork, sent = os.getpid(), export_import.spool_row, os.fork, []

    def interrupting(fields: dict[str, Any], **kw: Any) -> Any:
        if os.getpid() != first and not sent:
            sent.append(True)  # one Ctrl-C (this list is the second process's own copy)
            os.kill(first, signal.SIGINT)
        return spool_row(fields, **kw)

    def fork_then_ctrl_c() -> int:
        pid = fork()
        if pid != 0:
            signal.raise_signal(signal.SIGINT)
        return pid

    if when == "as the second process starts":
        monkeypatch.setattr(os, "fork", fork_then_ctrl_c)
    else:
        monkeypatch.setattr(export_import, "spool_row", interrupting)
    before = open_files()
    imp = importer(db, settings)
    imp.split_min_bytes = 0
    with pytest.raises(KeyboardInterrupt):
        imp.run(path)
    assert multiprocessing.active_children() == []
    assert open_files() == before
    nothing_written(db)
