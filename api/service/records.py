"""The audit trail as an API key sees it: the records of the models its allowlist names (``models``: the
allowlist, None for every model). What the audit routes call; plain Python like the rest of the service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from api.service.explanations import ExplanationService
from api.service.recording import with_recorded_arrays
from model_store.array_codec import digests
from model_store.audit import RecordFilter
from model_store.audit_blobs import AuditBlobs, verify_trail
from model_store.errors import Forbidden, NotFound

Allowlist = frozenset[str] | None


class Records:
    def __init__(self, service: ExplanationService) -> None:
        self.service = service
        self.store = service.store

    def get(self, record_id: str, models: Allowlist) -> dict[str, Any]:
        """The record, or 404 when it does not exist or explains a model the key may not see."""
        record = self.store.audit.get(record_id)
        if models is not None and record.get("model_name") not in models:
            raise NotFound(f"No explanation record '{record_id}'.")
        return record

    def with_arrays(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with the arrays it keeps as blobs read back in (a picture needs their values)."""
        record["explanation"] = with_recorded_arrays(self.store.sessions, record.get("explanation"))
        return record

    def page(
        self, query: dict[str, Any], models: Allowlist, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Record summaries after sequence number ``after``, filtered by ``query``; the next page's start."""
        return self.store.audit.page(_filters(query, models), after, limit)

    def stream(self, query: dict[str, Any], models: Allowlist) -> Iterator[dict[str, Any]]:
        """Every matching record, read in batches."""
        return self.store.audit.stream(_filters(query, models))

    def blob(self, record_id: str, digest: str, models: Allowlist) -> bytes:
        """A blob the record refers to, checked against its sha256 (404 unless the record names it)."""
        record = self.get(record_id, models)
        if digest not in digests(record.get("explanation")):
            raise NotFound(f"The record '{record_id}' refers to no blob '{digest}'.")
        return AuditBlobs(self.store.sessions).checked(digest)

    def replay(self, record_id: str, instances: list[Any] | None, models: Allowlist) -> dict[str, Any]:
        self.get(record_id, models)
        return self.service.replay(record_id, instances)

    def verify(self, models: Allowlist) -> dict[str, Any]:
        """The chain walk and the blob check. The chain is one for every model, so its verdict speaks of
        every model's records: a key limited to some models gets a 403."""
        if models is not None:
            raise Forbidden(
                "The audit chain covers every model's records; verifying it needs a key without a model "
                "allowlist."
            )
        return verify_trail(self.store.audit, self.store.sessions)


def _filters(query: dict[str, Any], models: Allowlist) -> RecordFilter:
    return RecordFilter(
        model=query.get("model"),
        version=query.get("version"),
        kind=query.get("kind"),
        since=query.get("since"),
        until=query.get("until"),
        models=models,
    )
