"""Parts: what many version 2 records share (a model reference, params, library versions, options), stored
once in ``audit_parts`` under the sha256 of their canonical JSON and named by it in each record."""

from __future__ import annotations

from typing import Any, cast

import orjson
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from model_store.stored_form import sha256_hex
from model_store.tables import AuditPartRow, utcnow

PARTS = cast(Table, AuditPartRow.__table__)


def parts_of(body: dict[str, Any]) -> dict[str, str]:
    parts = body.get("parts")
    return parts if isinstance(parts, dict) else {}


class PartCache:
    """Parts read from the database, kept by digest (they never change: a digest names one value)."""

    def __init__(self, limit: int = 1024) -> None:
        self.values: dict[str, Any] = {}
        self.limit = limit

    def resolve(self, session: Session, digests: set[str]) -> dict[str, Any]:
        missing = sorted(digests - self.values.keys())
        if missing:
            rows = session.execute(select(PARTS.c.sha256, PARTS.c.body).where(PARTS.c.sha256.in_(missing)))
            if len(self.values) > self.limit:
                self.values.clear()
            for sha, body in rows:
                if sha256_hex(body.encode()) == sha:  # a changed part is left out: the record fails to read
                    self.values[sha] = orjson.loads(body)
        return {digest: self.values[digest] for digest in digests if digest in self.values}


def write_parts(session: Session, parts: dict[str, bytes]) -> None:
    """Store parts in the caller's transaction; one already stored is kept (same digest, same bytes)."""
    if not parts:
        return
    now = utcnow()
    rows = [{"sha256": sha, "body": data.decode(), "created_at": now} for sha, data in sorted(parts.items())]
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(AuditPartRow).on_conflict_do_nothing(index_elements=["sha256"]), rows)
