"""The stores. The common ones are importable from here, loaded on first use (PEP 562): importing one
store module (an export helper process imports only tg_parser.stores.export) does not load the others
and the domain models they pull in (~60 ms of a helper's start)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tg_parser.stores.ingestion import IngestionStore
    from tg_parser.stores.processing import ProcessingStore
    from tg_parser.stores.raw import BatchResult, RawStore

__all__ = ["BatchResult", "IngestionStore", "ProcessingStore", "RawStore"]

_HOMES = {
    "BatchResult": "tg_parser.stores.raw",
    "IngestionStore": "tg_parser.stores.ingestion",
    "ProcessingStore": "tg_parser.stores.processing",
    "RawStore": "tg_parser.stores.raw",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # looked up once
    return value
