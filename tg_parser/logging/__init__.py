from tg_parser.logging.setup import json_line, new_run_id, redact, register_secrets, setup_logging

__all__ = ["json_line", "new_run_id", "redact", "register_secrets", "setup_logging"]
