"""The only package that touches sqlite3 and psycopg: named-SQL catalog, executors, migrations."""

from tg_parser.db.base import Database
from tg_parser.db.catalog import Query, SqlCatalog
from tg_parser.db.connect import open_database

__all__ = ["Database", "Query", "SqlCatalog", "open_database"]
