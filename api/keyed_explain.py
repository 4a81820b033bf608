"""Explanations sent with an ``Idempotency-Key``: computed and recorded once per API key and key, and
answered again from that record when the same request comes back (a client retrying after a lost answer),
so a decision's explanation is recorded once however often its client retries."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.exc import IntegrityError

from api.idempotency import IDEMPOTENCY_HEADER
from api.methods.registry import spec
from api.recording import keyed_request_sha256
from api.service import ExplanationService
from model_store.audit_blobs import AuditBlobs
from model_store.errors import Conflict, InvalidInput, NotFound
from model_store.explain_keys import ExplainKeys, Idempotency
from model_store.store import Store


@dataclasses.dataclass(frozen=True)
class ExplainRequest:
    """One explain request: ``version`` is the one to compute on, ``asked`` the version as the client named
    it (``production``, or KServe's ``default``), which is what a retry repeats."""

    method: str
    name: str
    version: str
    asked: str
    instances: list[Any]
    options: dict[str, Any]


def explain_keyed(
    service: ExplanationService, request: ExplainRequest, key_id: str, idempotency_key: str
) -> tuple[dict[str, Any], bool]:
    """The envelope for ``request``, and whether it is the one recorded earlier under ``idempotency_key``
    (then read back from its record, not computed again). The same key with another request is a 422 naming
    the header; a request that fails records nothing and leaves the key unused."""
    r = request
    try:
        sha = keyed_request_sha256(r.method, r.name, r.asked, r.instances, r.options)
    except (
        TypeError
    ):  # orjson's JSONEncodeError (too deep, an int past 64 bits): it cannot be recorded either
        return service.explain(r.method, r.name, r.version, r.instances, r.options, key_id).to_dict(), False
    keys = ExplainKeys(service.store.sessions)
    for _ in range(2):  # twice: the record a key named may be purged (its key with it) between two steps
        earlier = keys.find(key_id, idempotency_key)
        if earlier is None:
            try:
                idempotency = Idempotency(idempotency_key, sha)
                explanation = service.explain(
                    r.method, r.name, r.version, r.instances, r.options, key_id, idempotency=idempotency
                )
                return explanation.to_dict(), False
            except IntegrityError:  # a request with the same key committed first: answer as it did
                earlier = keys.find(key_id, idempotency_key)
                if earlier is None:
                    continue
        if earlier.request_sha256 != sha:
            raise InvalidInput.field(
                IDEMPOTENCY_HEADER,
                "Already used by this key for a different request: use a new key for a new explanation.",
            )
        envelope = recorded_envelope(service.store, earlier.record_id)
        if envelope is not None:
            return envelope, True
    raise Conflict("The explanation this Idempotency-Key named was purged while it was read; send it again.")


def recorded_envelope(store: Store, record_id: str) -> dict[str, Any] | None:
    """The explanation a record holds, as its client received it (the same JSON value; keys may come in
    another order), or None when the record is gone (purged). Attention weights kept as blobs are read back
    together, checked against their sha256 (a missing blob is a 404, a changed one a 409, as the record's
    plot answers), and encoded as the request asked."""
    try:
        record = store.audit.get(record_id)
    except NotFound:
        return None
    envelope: dict[str, Any] = record["explanation"]
    if not spec(record["kind"]).arrays_out_of_line:
        return envelope
    from explainers.attention import as_sent  # torch loads only for text models

    return as_sent(AuditBlobs(store.sessions).arrays_in(envelope))
