from tg_parser.logging.setup import new_run_id, redact, register_secrets, setup_logging

__all__ = ["new_run_id", "redact", "register_secrets", "setup_logging"]
