"""A preflight worker process: `python -m tg_parser.migrate.worker DIR STORES FILES`.

Reads length-prefixed pickled `(Unit, strip_nul, limit)` requests on stdin and answers each with a
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

from tg_parser.migrate.scan import check_unit
from tg_parser.migrate.source import SqliteSource

HEADER = 8


def send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(HEADER, "big") + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    header = stream.read(HEADER)
    if len(header) < HEADER:
        return None
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def main(argv: list[str]) -> int:
    directory, stores, files = Path(argv[0]), tuple(argv[1].split(",")), json.loads(argv[2])
    source = SqliteSource(directory, stores, readonly=True, files=files)
    try:
        while (request := receive(sys.stdin.buffer)) is not None:
            unit, strip_nul, limit = request
            send(sys.stdout.buffer, check_unit(source, unit, strip_nul=strip_nul, limit=limit))
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
