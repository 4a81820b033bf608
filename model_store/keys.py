"""API keys: shown once at creation, stored as a sha256, compared in constant time."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from model_store.errors import InvalidInput
from model_store.tables import ApiKeyRow, as_utc, utcnow

SCOPES = ("explain", "models:write", "audit:read", "admin")
PREFIX = "cnd"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the key's public id, its name, scopes and (optionally) the only models it may see."""

    key_id: str
    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def sees(self, model: str | None) -> bool:
        """Whether this key may see ``model`` (a key without an allowlist sees every model)."""
        return self.models is None or model in self.models

    def reaches(self, scopes: Iterable[str], models: Iterable[str] | None) -> bool:
        """Whether a key with ``scopes`` and ``models`` (None: every model) grants nothing this key lacks:
        each scope is one this key has, and its models lie within this key's allowlist."""
        if not all(self.has(scope) for scope in scopes):
            return False
        return self.models is None or (models is not None and set(models) <= self.models)


def _principal(row: ApiKeyRow) -> Principal:
    models = frozenset(row.models) if row.models is not None else None
    return Principal(row.key_id, row.name, frozenset(row.scopes), models)


def _describe(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "name": row.name,
        "scopes": row.scopes,
        "models": row.models,
        "created_at": as_utc(row.created_at),
        "rotated_at": as_utc(row.rotated_at) if row.rotated_at else None,
        "revoked": row.revoked_at is not None,
    }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, name: str, scopes: list[str], models: list[str] | None = None) -> tuple[str, Principal]:
        """A new key; the returned token is the only time the secret exists outside the caller. ``models``
        limits the key to those models (others answer 404 to it, as if they did not exist)."""
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise InvalidInput.field("scopes", f"Choose from {', '.join(SCOPES)}.")
        if not NAME.fullmatch(name):
            raise InvalidInput.field("name", "1-64 letters, digits, '.', ':', '_' or '-'.")
        if models is not None and (not models or not all(MODEL.fullmatch(m) for m in models)):
            raise InvalidInput.field("models", "One or more model names (letters, digits, '_' or '-').")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiKeyRow(
            key_id=key_id,
            name=name,
            secret_sha256=_digest(secret),
            scopes=sorted(set(scopes)),
            models=sorted(set(models)) if models is not None else None,
        )
        with self.sessions.begin() as session:
            session.add(row)
        return f"{PREFIX}_{key_id}_{secret}", _principal(row)

    def rotate(self, key_id: str) -> tuple[str, Principal] | None:
        """A new secret for an active key (same id, scopes and models); the old secret stops working now."""
        secret = secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id))
            if row is None or row.revoked_at is not None:
                return None
            row.secret_sha256 = _digest(secret)
            row.rotated_at = utcnow()
            return f"{PREFIX}_{key_id}_{secret}", _principal(row)

    def describe(self, key_id: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id))
            return _describe(row) if row is not None else None

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
            return _principal(row)

    def list(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()
            return [_describe(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self.sessions.begin() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id))
            if row is None:
                return False
            row.revoked_at = utcnow()
            return True
