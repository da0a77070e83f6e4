"""API keys: `tgp_<key id>_<secret>`. Only the SHA-256 of the secret is stored; a presented key is
found by its public id and its secret compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from tg_parser.db.base import Database
from tg_parser.errors import InvalidInput
from tg_parser.stores.api import ApiStore

SCOPES = ("read", "write", "admin")
_KEY = re.compile(r"^tgp_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret_hash: str
    token: str  # shown once, never stored


def generate() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, hash_secret(secret), f"tgp_{key_id}_{secret}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def create_key(db: Database, name: str, scope: str) -> tuple[str, dict[str, object]]:
    """Create a key; returns its token (to show once) and its stored row without the hash."""
    if not valid_name(name):
        raise InvalidInput(
            f"{name!r} is not a key name",
            "use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    if scope not in SCOPES:
        raise InvalidInput(f"{scope!r} is not a scope", "use read, write or admin")
    store = ApiStore(db)
    exists = InvalidInput(
        f"a key named {name!r} exists already", "choose another name, or revoke the old key first"
    )
    if store.get_key_by_name(name) is not None:
        raise exists
    new = generate()
    try:
        store.add_key(new.key_id, name, scope, new.secret_hash)
    except Exception:
        # Another process created the name between the check and the insert: the unique index refused it.
        if store.get_key_by_name(name) is not None:
            raise exists from None
        raise
    row = store.get_key_by_name(name) or {}
    return new.token, {k: v for k, v in row.items() if k != "secret_hash"}


def allows(granted: str, needed: str) -> bool:
    """Scopes are ordered: write includes read, admin includes both."""
    return SCOPES.index(granted) >= SCOPES.index(needed)
