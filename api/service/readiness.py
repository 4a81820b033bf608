"""Whether this worker can serve: the database answers and each registered model's serving version loads."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from model_store.store import Store

log = logging.getLogger("candor.ready")
RETRY_FAILED_SECONDS = 10.0
"""A version that failed to load is tried again by the first probe after this long (not by every probe)."""


class ModelReadiness:
    """Whether the serving version (production, else latest) of every registered model loads in this worker.

    A version that loaded once is not loaded again by later probes (versions are immutable and were verified
    against their sha256), so after the first probe each costs a few queries. An empty registry is ready."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = store.registry
        self._loaded: set[Any] = set()
        self._failed_at: dict[Any, float] = {}
        self._lock = threading.Lock()

    def unloadable(self) -> list[str]:
        """Names of the models whose serving version cannot be loaded."""
        failing = []
        for summary in self.registry.list_models():
            number = summary["production_version"] or summary["latest_version"]
            if number is not None and not self._loads(summary["name"], number):
                failing.append(summary["name"])
        return failing

    def serves(self, summary: dict[str, Any]) -> bool:
        """Whether a model (its ``list_models`` summary) has a serving version that loads."""
        number = summary["production_version"] or summary["latest_version"]
        return number is not None and self._loads(summary["name"], number)

    def version_loads(self, name: str, number: int) -> bool:
        """Whether that version of the model loads (a failure is logged and retried later)."""
        return self._loads(name, number)

    def _loads(self, name: str, number: int) -> bool:
        info = self.registry.resolve(name, number)
        key = info.cache_key
        with self._lock:
            if key in self._loaded:
                return True
            failed_at = self._failed_at.get(key)
            if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_SECONDS:
                return False
        try:
            self.registry.load(info)
        except Exception:
            log.warning("readiness: %s version %s cannot be loaded", name, number, exc_info=True)
            with self._lock:
                self._failed_at[key] = time.monotonic()
            return False
        with self._lock:
            self._loaded.add(key)
            self._failed_at.pop(key, None)
        return True

    def not_ready(self) -> str | None:
        """Why the server is not ready, or None: the database is unreachable or a model cannot be loaded."""
        if not self.store.ping():
            return "The database is unreachable."
        try:
            failing = self.unloadable()
        except SQLAlchemyError:
            log.warning("readiness: the database failed during the model check", exc_info=True)
            return "The database is unreachable."
        if failing:
            return f"{len(failing)} registered model(s) cannot be loaded; the server log names them."
        return None
