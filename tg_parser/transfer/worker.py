"""A scan helper process: `python -m tg_parser.transfer.worker DIR STORES FILES`.

Reads length-prefixed pickled `(Unit, strip_nul, limit, check_utf8)` requests on stdin and answers each with a
pickled `UnitResult` on stdout. A plain subprocess rather than `multiprocessing`: spawn re-imports the
parent's main module (the whole CLI), fork would inherit the parent's PostgreSQL socket; this module
imports only the SQLite half of the migrator. Pickle is safe here: both ends are this program.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import IO, Any

from tg_parser.transfer.scan import check_unit
from tg_parser.transfer.source import SqliteSource

HEADER = 8


def send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(HEADER, "big") + data)
    while view:  # an unbuffered pipe may take less than offered
        written = stream.write(view)
        view = view[written or 0 :]
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None  # the other end closed the pipe
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def receive(stream: IO[bytes]) -> Any:
    """One message, or None at end of stream. The parent reads unbuffered pipes: a buffered reader
    could swallow the next answer too, and select() would then wait for data already read."""
    header = _read_exactly(stream, HEADER)
    if header is None:
        return None
    data = _read_exactly(stream, int.from_bytes(header, "big"))
    return None if data is None else pickle.loads(data)


def main(argv: list[str]) -> int:
    directory, stores, files = Path(argv[0]), tuple(argv[1].split(",")), json.loads(argv[2])
    source = SqliteSource(directory, stores, readonly=True, files=files)
    try:
        while (request := receive(sys.stdin.buffer)) is not None:
            unit, strip_nul, limit, check_utf8 = request
            result = check_unit(source, unit, strip_nul=strip_nul, limit=limit, check_utf8=check_utf8)
            send(sys.stdout.buffer, result)
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
