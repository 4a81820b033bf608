"""API keys: shown once at creation, stored as a sha256, compared in constant time."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from model_store.errors import InvalidInput
from model_store.tables import ApiKeyRow, as_utc, utcnow

SCOPES = ("explain", "models:write", "audit:read", "admin")
PREFIX = "cnd"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the key's public id, its name and scopes."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, name: str, scopes: list[str]) -> tuple[str, Principal]:
        """A new key; the returned token is the only time the secret exists outside the caller."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise InvalidInput.field("scopes", f"Choose from {', '.join(SCOPES)}.")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            session.add(
                ApiKeyRow(key_id=key_id, name=name, secret_sha256=_digest(secret), scopes=sorted(scopes))
            )
        return f"{PREFIX}_{key_id}_{secret}", Principal(key_id, name, frozenset(scopes))

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isalnum():
            return None
        with self.sessions() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == parts[1]))
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
                return None
            return Principal(row.key_id, row.name, frozenset(row.scopes))

    def list(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()
            return [
                {
                    "key_id": r.key_id,
                    "name": r.name,
                    "scopes": r.scopes,
                    "created_at": as_utc(r.created_at),
                    "revoked": r.revoked_at is not None,
                }
                for r in rows
            ]

    def revoke(self, key_id: str) -> bool:
        with self.sessions.begin() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id))
            if row is None:
                return False
            row.revoked_at = utcnow()
            return True
