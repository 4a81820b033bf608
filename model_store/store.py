"""One object owning the engine, registry, key store and audit trail of a data dir and database URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from model_store.artifacts import ArtifactStore, open_backend
from model_store.audit import AuditTrail
from model_store.audit_log import AuditLog
from model_store.db import make_engine, make_session_factory
from model_store.keys import KeyStore
from model_store.migrate import upgrade_to_head
from model_store.registry import ModelRegistry


class Store:
    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        cache_size: int = 8,
        migrate: bool = True,
        artifact_store: str = "",
    ) -> None:
        """``artifact_store``: where versions' files are stored (``CANDOR_ARTIFACT_STORE``): empty for
        ``<data_dir>/artifacts``, ``database``, or an fsspec URL; one that names no usable store raises
        ``ArtifactStoreConfigError`` here."""
        self.engine = make_engine(database_url)
        try:
            self.sessions = make_session_factory(self.engine)
            backend = open_backend(artifact_store, data_dir, self.sessions)  # before touching the database
            if migrate:
                upgrade_to_head(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.registry = ModelRegistry(self.sessions, ArtifactStore(data_dir, backend), cache_size)
        self.keys = KeyStore(self.sessions)
        self.audit = AuditTrail(self.sessions)
        self.audit_log = AuditLog(self.sessions)
        """The records' Merkle tree; its ``signer`` is set by whoever holds the checkpoint signing key."""

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.engine.dispose()
