"""The byte form of audit records: canonical JSON, drafts and their stored bytes with their leaf hash.

A record's stored bytes are canonical JSON (sorted keys, no spaces); its leaf hash is SHA-256(0x00 || them)
(RFC 9162). Drafts are turned into stored records where they are made (job workers do it in parallel); the
trail (``model_store.audit``) and a job's chunks (``model_store.audit_chunks``) store them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Any

import numpy as np
import orjson

CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def json_default(value: Any) -> Any:
    """What orjson cannot write itself: numpy scalars as Python numbers, sets and tuples as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """The one byte form a record is stored and hashed in."""
    return orjson.dumps(value, default=json_default, option=CANONICAL)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leaf_hash_hex(body: bytes) -> str:
    """The record's leaf hash (RFC 9162: SHA-256 of 0x00 and its stored bytes), hex."""
    return hashlib.sha256(b"\x00" + body).hexdigest()


def serialised(content: dict[str, Any]) -> dict[str, bytes]:
    """``content`` with each value in its canonical JSON. Job workers serialise their rows' records (and
    parts) this way, in parallel, so the runner only frames them."""
    return {
        key: value if isinstance(value, bytes) else canonical_json(value) for key, value in content.items()
    }


def framed(content: dict[str, Any]) -> dict[str, Any]:
    """Serialised values (bytes) embedded as they are: the body's bytes are those of the plain values."""
    return {
        key: orjson.Fragment(value) if isinstance(value, bytes) else value for key, value in content.items()
    }


@dataclasses.dataclass(frozen=True)
class RecordDraft:
    """A record before it is written: the indexed fields, the rest of its content and the parts it names
    (``model_store.record_format``); a value may be serialised already (bytes of its canonical JSON)."""

    id: str
    kind: str
    model_name: str | None
    model_version: int | None
    key_id: str | None
    status: str
    content: dict[str, Any]
    parts: dict[str, Any] = dataclasses.field(default_factory=dict)


INDEXED = ("id", "kind", "model_name", "model_version", "key_id", "status")


@dataclasses.dataclass(frozen=True)
class StoredRecord:
    """A record in its stored form: its stored bytes, their leaf hash, its row's columns (but the body) and
    the stored bytes of the parts it names, by digest."""

    body: bytes
    leaf_hash: str
    row: dict[str, Any]
    parts: dict[str, bytes]


def stored_form(draft: RecordDraft, now: dt.datetime) -> StoredRecord:
    """``draft`` as stored at ``now``: canonical JSON of its content, indexed fields, time and the digests
    of its parts (computed where the draft is made: job workers do it in parallel)."""
    parts, named = {}, {}
    for name, value in draft.parts.items():
        data = value if isinstance(value, bytes) else canonical_json(value)
        named[name] = digest = sha256_hex(data)
        parts[digest] = data
    indexed = {name: getattr(draft, name) for name in INDEXED}
    content = {**framed(draft.content), **indexed, "recorded_at": now}
    body = canonical_json({**content, "parts": named} if named else content)
    leaf = leaf_hash_hex(body)
    row = {**indexed, "recorded_at": now, "hash": leaf, "leaf_hash": leaf}
    return StoredRecord(body, leaf, row, parts)
