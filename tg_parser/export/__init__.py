from tg_parser.export.writer import (
    ExportFilters,
    ExportResult,
    count_documents,
    export,
    make_title,
    topic_file_name,
)

__all__ = ["ExportFilters", "ExportResult", "count_documents", "export", "make_title", "topic_file_name"]
