"""API keys: generated once, shown once, stored only as a SHA-256 hash.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching);
lookups go by the hash, comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from app.store.control import API_KEYS, ControlStore
from pipelines.lance_tables import sql_str

KEY_PREFIX = "frk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    org_id: int
    event_id: int | None
    name: str
    active: bool


class KeyStore:
    def __init__(self, control: ControlStore) -> None:
        self.control = control

    def create(self, org_id: int, event_id: int | None = None, name: str = "") -> tuple[str, ApiKey]:
        """A new key (the clear text is returned once and never stored)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = secrets.token_hex(8)
        row = {
            "key_id": key_id,
            "org_id": int(org_id),
            "event_id": None if event_id is None else int(event_id),
            "key_hash": hash_key(key),
            "name": name,
            "active": True,
            "created_at": datetime.now(UTC),
        }
        self.control.upsert(API_KEYS, [row])
        return key, ApiKey(key_id, int(org_id), row["event_id"], name, True)

    def deactivate(self, key_id: str) -> None:
        rows = self.control.rows(API_KEYS, f"key_id = {sql_str(key_id)}", 1)
        if not rows:
            raise ValueError(f"no API key {key_id}")
        self.control.upsert(API_KEYS, [{**rows[0], "active": False}])

    def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        rows = self.control.rows(API_KEYS, f"key_hash = {sql_str(digest)}", 1)
        if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest):
            return None
        r = rows[0]
        return ApiKey(r["key_id"], r["org_id"], r["event_id"], r["name"] or "", bool(r["active"]))
