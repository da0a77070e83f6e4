from tg_parser.logging.setup import (
    STDERR_LOCK,
    json_line,
    live_line,
    new_run_id,
    redact,
    register_secrets,
    setup_logging,
)

__all__ = [
    "STDERR_LOCK",
    "json_line",
    "live_line",
    "new_run_id",
    "redact",
    "register_secrets",
    "setup_logging",
]
