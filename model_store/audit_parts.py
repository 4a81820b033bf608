"""Parts: what many version 2 records share (a model reference, params, library versions, options), stored
once in ``audit_parts`` under the sha256 of their canonical JSON and named by it in each record."""

from __future__ import annotations

from typing import Any, cast

import orjson
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from model_store.db import insert_missing
from model_store.stored_form import sha256_hex
from model_store.tables import AuditPartRow, utcnow

PARTS = cast(Table, AuditPartRow.__table__)


def parts_of(body: dict[str, Any]) -> dict[str, str]:
    parts = body.get("parts")
    return parts if isinstance(parts, dict) else {}


class PartCache:
    """Parts read from the database (checked against their digest), kept by digest with their stored text:
    they never change, a digest names one value."""

    def __init__(self, limit: int = 1024) -> None:
        self.entries: dict[str, tuple[str, Any]] = {}
        self.limit = limit

    def resolve(self, session: Session, digests: set[str]) -> dict[str, Any]:
        """The value of each of ``digests`` that is stored unchanged (a missing or changed one is left out:
        the record naming it fails to read)."""
        return {digest: value for digest, (_, value) in self._read(session, digests).items()}

    def texts(self, session: Session, digests: set[str]) -> dict[str, str]:
        """The stored text of each of ``digests`` that is stored unchanged."""
        return {digest: text for digest, (text, _) in self._read(session, digests).items()}

    def _read(self, session: Session, digests: set[str]) -> dict[str, tuple[str, Any]]:
        missing = sorted(digests - self.entries.keys())
        if missing:
            rows = session.execute(select(PARTS.c.sha256, PARTS.c.body).where(PARTS.c.sha256.in_(missing)))
            if len(self.entries) > self.limit:
                self.entries.clear()
            for sha, body in rows:
                if sha256_hex(body.encode()) == sha:
                    self.entries[sha] = (body, orjson.loads(body))
        return {digest: self.entries[digest] for digest in digests if digest in self.entries}


def write_parts(session: Session, parts: dict[str, bytes]) -> None:
    """Store parts in the caller's transaction; one already stored is kept (same digest, same bytes)."""
    if not parts:
        return
    now = utcnow()
    rows = [{"sha256": sha, "body": data.decode(), "created_at": now} for sha, data in sorted(parts.items())]
    insert_missing(session, AuditPartRow, rows)
