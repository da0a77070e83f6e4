from tg_parser.stores.ingestion import IngestionStore
from tg_parser.stores.processing import ProcessingStore
from tg_parser.stores.raw import BatchResult, RawStore

__all__ = ["BatchResult", "IngestionStore", "ProcessingStore", "RawStore"]
