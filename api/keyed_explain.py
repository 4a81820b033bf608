"""Explanations sent with an ``Idempotency-Key``: computed and recorded once per API key and key, and
answered again from that record when the same request comes back (a client retrying after a lost answer),
so a decision's explanation is recorded once however often its client retries."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from api.idempotency import IDEMPOTENCY_HEADER
from api.recording import OUT_OF_LINE_KINDS, keyed_request_sha256
from api.service import ExplanationService
from model_store.audit_blobs import AuditBlobs, with_arrays
from model_store.errors import InvalidInput
from model_store.explain_keys import ExplainKeys, KeyedRecord
from model_store.store import Store


def explain_keyed(
    service: ExplanationService,
    method: str,
    name: str,
    version: str,
    instances: list[Any],
    options: dict[str, Any],
    key_id: str,
    idempotency_key: str,
) -> tuple[dict[str, Any], bool]:
    """The envelope for this request, and whether it is the one recorded earlier under ``idempotency_key``
    (then read back from its record, not computed again). The same key with another request is a 422 naming
    the header; a request that fails records nothing and leaves the key unused."""
    keys = ExplainKeys(service.store.sessions)
    earlier = keys.find(key_id, idempotency_key)
    if earlier is None:
        try:
            explanation = service.explain(
                method, name, version, instances, options, key_id, idempotency_key=idempotency_key
            )
            return explanation.to_dict(), False
        except IntegrityError:  # a request with the same key committed first: answer as it did
            earlier = keys.find(key_id, idempotency_key)
            if earlier is None:
                raise
    if not _same_request(earlier, method, name, version, instances, options):
        raise InvalidInput.field(
            IDEMPOTENCY_HEADER,
            "Already used by this key for a different request: use a new key for a new explanation.",
        )
    return recorded_envelope(service.store, earlier.record_id), True


def _same_request(
    earlier: KeyedRecord, method: str, name: str, version: str, instances: list[Any], options: dict[str, Any]
) -> bool:
    try:
        return earlier.request_sha256 == keyed_request_sha256(method, name, version, instances, options)
    except TypeError:  # orjson's JSONEncodeError (too deep, an int past 64 bits): never what was recorded
        return False


def recorded_envelope(store: Store, record_id: str) -> dict[str, Any]:
    """The explanation a record holds, as its client received it: attention weights kept as blobs are read
    back (checked against their sha256) and encoded as the request asked."""
    record = store.audit.get(record_id)
    envelope: dict[str, Any] = record["explanation"]
    if record["kind"] not in OUT_OF_LINE_KINDS:
        return envelope
    from explainers.attention import as_sent  # torch loads only for text models

    return as_sent(with_arrays(envelope, AuditBlobs(store.sessions).checked))
