"""The audit trail as an API key sees it: the records of the models its allowlist names (``models``: the
allowlist, None for every model). What the audit routes call; plain Python like the rest of the service."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from api.service.explanations import ExplanationService
from api.service.recording import with_recorded_arrays
from model_store.array_codec import digests, kept_digests
from model_store.audit import RecordFilter
from model_store.audit_blobs import AuditBlobs, verify_trail
from model_store.errors import Forbidden, NotFound, Unavailable

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
        """``record`` with the arrays it keeps as blobs read back in (a picture needs their values); arrays
        kept by digest only are recomputed and must match their sha256 (409 otherwise), which needs the
        recorded inputs (404 for a record that kept only their sha256)."""
        record["explanation"] = with_recorded_arrays(self.store.sessions, record, self._recomputed)
        return record

    def _recomputed(self, record: dict[str, Any]) -> dict[str, Any]:
        if "instances" not in record["request"] and record["request"].get("instance_count") != 0:
            raise NotFound(
                f"The record '{record['id']}' kept the attention weights by digest only and the inputs by "
                "sha256 only (store_inputs: hash): there is nothing to draw. POST .../replay with the "
                "instances recomputes them."
            )
        return self.service.recomputed(record)

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
        explanation = record.get("explanation")
        if digest not in digests(explanation):
            raise NotFound(f"The record '{record_id}' refers to no blob '{digest}'.")
        if digest not in kept_digests(explanation):
            raise NotFound(
                f"The record '{record_id}' kept the weights '{digest}' by digest only (sha256, dtype and "
                "shape; CANDOR_AUDIT_ATTENTION=digest): their bytes were not stored. POST "
                f"/v1/explanations/{record_id}/replay recomputes and compares them; "
                "CANDOR_AUDIT_ATTENTION=full (or a manifest's audit_attention: full) keeps the weights."
            )
        return AuditBlobs(self.store.sessions).checked(digest)

    def export(self, query: dict[str, Any], models: Allowlist) -> Iterator[dict[str, Any]]:
        """The lines of a JSON Lines export in leaf order (the log integrated first): each record with its
        leaf index, leaf hash and stored bytes (base64), a purged one as its leaf hash alone, and each part
        a record names once, before the first record naming it."""
        self.store.audit_log.integrate()
        sent: set[str] = set()
        for row, stored, record, parts in self.store.audit.leaves(_filters(query, models)):
            for digest, body in parts.items():
                if digest not in sent:
                    sent.add(digest)
                    yield {"part": digest, "stored": _b64(body.encode())}
            line: dict[str, Any] = {
                "leaf_index": row.leaf_index,
                "leaf_hash": _b64(bytes.fromhex(row.leaf_hash)),
            }
            if stored is None:
                yield {**line, "purged": True}
            else:
                yield {**line, "stored": _b64(stored.encode()), "record": record}

    def checkpoint(self) -> str:
        """The latest signed checkpoint's note (the log integrated and signed first)."""
        checkpoint = self.store.audit_log.current_checkpoint()
        if checkpoint is None:
            raise Unavailable(
                "No signed checkpoint: this server holds no audit signing key (run `candor audit init`)."
            )
        return str(checkpoint["note"])

    def verifier_key(self) -> str:
        signer = self.store.audit_log.signer
        if signer is None:
            raise Unavailable("This server holds no audit signing key (run `candor audit init`).")
        return signer.verifier.key()

    def proof(self, record_id: str, tree_size: int | None, models: Allowlist) -> dict[str, Any]:
        """The record's inclusion proof in the tree of ``tree_size`` leaves (None: the latest
        checkpoint's), with the signed checkpoint of that size when there is one."""
        audit_log = self.store.audit_log
        leaf_index, leaf_hash = audit_log.leaf(record_id, models)  # 404 as ``get`` for a record not shown

        def latest() -> dict[str, Any] | None:  # integrate and sign first only when it lacks the leaf
            checkpoint = audit_log.checkpoint()
            if checkpoint is None or checkpoint["tree_size"] <= leaf_index:
                checkpoint = audit_log.current_checkpoint()
            return checkpoint

        tree_size, checkpoint = self._signed_size(tree_size, latest)
        path = audit_log.inclusion(leaf_index, tree_size)
        return {
            "leaf_index": leaf_index,
            "tree_size": tree_size,
            "leaf_hash": _b64(leaf_hash),
            "inclusion_path": [_b64(node) for node in path],
            "checkpoint": checkpoint["note"] if checkpoint is not None else None,
        }

    def consistency(self, old_size: int, new_size: int | None) -> dict[str, Any]:
        """The consistency proof between two tree sizes (``new_size`` None: the latest checkpoint's), with
        the signed checkpoint of the newer size when there is one."""
        new_size, checkpoint = self._signed_size(new_size, self.store.audit_log.current_checkpoint)
        path = self.store.audit_log.consistency(old_size, new_size)
        return {
            "from": old_size,
            "to": new_size,
            "consistency_path": [_b64(node) for node in path],
            "checkpoint": checkpoint["note"] if checkpoint is not None else None,
        }

    def _signed_size(
        self, size: int | None, latest: Callable[[], dict[str, Any] | None]
    ) -> tuple[int, dict[str, Any] | None]:
        """The tree size to prove against and its signed checkpoint (None when none was signed at it):
        ``size`` as asked, else the ``latest`` checkpoint's, else the head's."""
        if size is not None:
            return size, self.store.audit_log.checkpoint(size)
        checkpoint = latest()
        if checkpoint is not None:
            return int(checkpoint["tree_size"]), checkpoint
        return int(self.store.audit_log.head()["tree_size"]), None

    def replay(self, record_id: str, instances: list[Any] | None, models: Allowlist) -> dict[str, Any]:
        self.get(record_id, models)
        return self.service.replay(record_id, instances)

    def verify(self, models: Allowlist) -> dict[str, Any]:
        """The log's check and the blob check. The log is one for every model, so its verdict speaks of
        every model's records: a key limited to some models gets a 403."""
        if models is not None:
            raise Forbidden(
                "The audit log covers every model's records; verifying it needs a key without a model "
                "allowlist."
            )
        return verify_trail(self.store.audit_log)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _filters(query: dict[str, Any], models: Allowlist) -> RecordFilter:
    return RecordFilter(
        model=query.get("model"),
        version=query.get("version"),
        kind=query.get("kind"),
        since=query.get("since"),
        until=query.get("until"),
        models=models,
    )
