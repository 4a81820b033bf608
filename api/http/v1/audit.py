"""The audit log over HTTP (``audit:read``): read, list, export and replay explanation records; the signed
checkpoint and its verifier key, inclusion and consistency proofs, and the log's verification."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Response, stream_with_context
from flask.views import MethodView

from api.http.auth import caller_models
from api.http.context import candor
from api.http.jsonio import dumps_bytes, json_response
from api.http.schemas.audit import (
    ConsistencyQuerySchema,
    ConsistencySchema,
    ProofQuerySchema,
    ProofSchema,
    RecordExportQuerySchema,
    RecordPageQuerySchema,
    RecordPageSchema,
    RecordSchema,
    ReplayRequestSchema,
    ReplaySchema,
    VerifySchema,
)
from api.http.streaming import csv_trailer, guarded, jsonl_trailer
from api.http.v1.blueprint import Blueprint
from api.schemas.common import ProblemSchema
from model_store.errors import InvalidInput

blp = Blueprint("audit", __name__, url_prefix="/v1", description="The audit log of explanations")

CSV_COLUMNS = (
    "seq",
    "id",
    "recorded_at",
    "kind",
    "model_name",
    "model_version",
    "key_id",
    "status",
    "seed",
    "request_sha256",
    "reference_sha256",
    "leaf_index",
    "prev_hash",
    "hash",
    "quality",
    "warnings",
)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == "seq" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput.field("cursor", "Not a cursor this service issued.")


class AuditView(MethodView):
    required_scope = "audit:read"


@blp.route("/explanations")
class Records(AuditView):
    @blp.arguments(RecordPageQuerySchema, location="query")
    @blp.response(200, RecordPageSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any]):  # type: ignore[no-untyped-def]
        """Record summaries in chain order, filtered, one page at a time (follow ``next_cursor``)."""
        after = decode_cursor(query["cursor"]) if query.get("cursor") else 0
        items, next_seq = candor().records.page(query, caller_models(), after, query["limit"])
        return json_response(
            {"items": items, "next_cursor": encode_cursor(next_seq) if next_seq is not None else None}
        )


@blp.route("/explanations/export")
class RecordsExport(AuditView):
    @blp.arguments(RecordExportQuerySchema, location="query")
    @blp.response(
        200,
        description="Every matching record, streamed: JSON Lines (full records) or CSV (a row each). A "
        'failure once the stream has begun ends it with a last line: {"error": <problem document>} in JSON '
        "Lines, a row #error,<problem document as JSON> in CSV.",
        content_type="application/x-ndjson",
    )
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any]):  # type: ignore[no-untyped-def]
        """Export records without loading them all in memory (``format=jsonl|csv``)."""
        if query["format"] == "csv":
            records = candor().records.stream(query, caller_models())
            lines: Iterator[bytes] = (line.encode() for line in _csv_lines(records))
            body, mimetype = guarded(lines, csv_trailer), "text/csv"
        else:
            exported = candor().records.export(query, caller_models())
            lines = (dumps_bytes(line) + b"\n" for line in exported)
            body, mimetype = guarded(lines, jsonl_trailer), "application/x-ndjson"
        filename = f"explanations.{query['format']}"
        return Response(
            stream_with_context(body),
            mimetype=mimetype,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def _csv_lines(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        row = []
        for column in CSV_COLUMNS:
            value = record.get(column)
            row.append(orjson.dumps(value).decode() if isinstance(value, dict | list) else value)
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


@blp.route("/explanations/<record_id>")
class Record(AuditView):
    @blp.response(200, RecordSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, record_id: str):  # type: ignore[no-untyped-def]
        """One record as stored (the canonical body its hash covers) with its hash. Records cannot be changed
        or deleted: PUT, PATCH and DELETE answer 405."""
        return json_response(candor().records.get(record_id, caller_models()))


@blp.route("/explanations/<record_id>/blobs/<digest>")
class RecordBlob(AuditView):
    @blp.response(
        200,
        description="The blob's bytes: the array's little-endian values in C order; the record's reference "
        "states its dtype and shape (numpy.frombuffer(body, dtype).reshape(shape)).",
        content_type="application/octet-stream",
    )
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    def get(self, record_id: str, digest: str):  # type: ignore[no-untyped-def]
        """A blob the record refers to (big attention weights are kept out of the record's body, each as a
        reference ``{"blob_sha256", "dtype", "shape", ...}`` its hash covers). 404 unless the record refers
        to this blob (``digest``: its sha256); 409 if the stored bytes no longer hash to it."""
        data = candor().records.blob(record_id, digest, caller_models())
        return Response(data, mimetype="application/octet-stream", headers={"ETag": f'"{digest}"'})


@blp.route("/explanations/<record_id>/replay")
class Replay(AuditView):
    @blp.arguments(ReplayRequestSchema, required=False)
    @blp.response(200, ReplaySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def post(self, body: dict[str, Any], record_id: str):  # type: ignore[no-untyped-def]
        """Recompute a recorded explanation with the recorded model version, options and seed, and compare
        it with the record (nothing new is recorded)."""
        instances = (body or {}).get("instances")
        return json_response(candor().records.replay(record_id, instances, caller_models()))


@blp.route("/audit/verify")
class Verify(AuditView):
    @blp.response(200, VerifySchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Recompute every leaf of the log from its record's stored bytes, rebuild the root and compare it
        with the head, the stored tree and the latest signed checkpoint, and check every part and blob a
        record refers to: ``ok``, how many leaves were checked, the first break, the head and the checkpoint.

        The log is one for every model, so the verdict speaks of every model's records: a key limited to
        some models gets a 403."""
        return json_response(candor().records.verify(caller_models()))


@blp.route("/audit/checkpoint")
class AuditCheckpoint(AuditView):
    @blp.response(
        200,
        description="The latest checkpoint as a C2SP signed note (tlog-checkpoint: origin, tree size, base64 "
        "root hash; signed with Ed25519 by the key GET /v1/audit/key names).",
        content_type="text/plain",
    )
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """The log's latest signed checkpoint (made every few seconds while the log grows, and now if the
        tree grew since). Public to every ``audit:read`` key, as in Certificate Transparency."""
        return Response(candor().records.checkpoint(), mimetype="text/plain")


@blp.route("/audit/key")
class AuditKey(AuditView):
    @blp.response(
        200,
        description="The verifier key: <name>+<key id, 8 hex digits>+<base64(0x01 || Ed25519 public key)>.",
        content_type="text/plain",
    )
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """The verifier key of the log's checkpoints (also printed by ``candor audit key``): keep it, and
        check every checkpoint against it."""
        return Response(candor().records.verifier_key() + "\n", mimetype="text/plain")


@blp.route("/explanations/<record_id>/proof")
class RecordProof(AuditView):
    @blp.arguments(ProofQuerySchema, location="query")
    @blp.response(200, ProofSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any], record_id: str):  # type: ignore[no-untyped-def]
        """The record's inclusion proof (RFC 9162 2.1.3) in the tree of ``tree_size`` leaves (default: the
        latest checkpoint's), with the signed checkpoint of that size when one was made."""
        proof = candor().records.proof(record_id, query.get("tree_size"), caller_models())
        return json_response(proof)


@blp.route("/audit/consistency")
class AuditConsistency(AuditView):
    @blp.arguments(ConsistencyQuerySchema, location="query")
    @blp.response(200, ConsistencySchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any]):  # type: ignore[no-untyped-def]
        """The consistency proof (RFC 9162 2.1.4) that the tree of ``from`` leaves is a prefix of the tree of
        ``to`` leaves (default: the latest checkpoint's), with the signed checkpoint of ``to``."""
        return json_response(candor().records.consistency(query["from_"], query.get("to")))
