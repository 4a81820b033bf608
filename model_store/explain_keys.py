"""Idempotency keys of explanation requests: which record an API key's ``Idempotency-Key`` answered with.

A key is claimed in the transaction that appends its record, so the two commit together or not at all; two
requests racing with one key meet at the table's primary key, and the loser's transaction (record included)
rolls back."""

from __future__ import annotations

import dataclasses

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from model_store.tables import ExplainKeyRow, utcnow


@dataclasses.dataclass(frozen=True)
class Idempotency:
    """A request's ``Idempotency-Key`` and the sha256 of the request it was sent with."""

    key: str
    request_sha256: str


@dataclasses.dataclass(frozen=True)
class KeyedRecord:
    """What an ``Idempotency-Key`` names: the sha256 of the request it came with and that answer's record."""

    request_sha256: str
    record_id: str


class ExplainKeys:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def find(self, key_id: str, idempotency_key: str) -> KeyedRecord | None:
        """The record ``key_id`` got for ``idempotency_key``, if it sent one."""
        with self.sessions() as session:
            row = session.execute(
                select(ExplainKeyRow.request_sha256, ExplainKeyRow.record_id).where(
                    ExplainKeyRow.key_id == key_id, ExplainKeyRow.idempotency_key == idempotency_key
                )
            ).first()
        return KeyedRecord(row.request_sha256, row.record_id) if row is not None else None

    @staticmethod
    def claim(session: Session, key_id: str, idempotency_key: str, keyed: KeyedRecord) -> None:
        """Claim ``idempotency_key`` for ``keyed`` in ``session``'s transaction; an ``IntegrityError`` here or
        at commit when ``key_id`` has claimed it already (on PostgreSQL after the other claim commits)."""
        session.execute(
            insert(ExplainKeyRow).values(
                key_id=key_id,
                idempotency_key=idempotency_key,
                request_sha256=keyed.request_sha256,
                record_id=keyed.record_id,
                created_at=utcnow(),
            )
        )
