from tg_parser.config.settings import Settings, load_settings, requested_log_format

__all__ = ["Settings", "load_settings", "requested_log_format"]
