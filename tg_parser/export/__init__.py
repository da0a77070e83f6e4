from tg_parser.export.writer import ExportFilters, ExportResult, export, make_title, topic_file_name

__all__ = ["ExportFilters", "ExportResult", "export", "make_title", "topic_file_name"]
