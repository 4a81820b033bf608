"""Content-addressed blobs of explanation records: big arrays (attention weights) kept out of a record's body.

A record's explanation holds, in place of each such array, a reference ``{"blob_sha256", "dtype", "shape",
"byte_order": "little", "bytes", "encoding"}``; the blob is the array's little-endian bytes in C order, stored
once under its sha256 in ``audit_blobs`` in the transaction that appends the record. The record's hash covers
the reference, so the chain binds every blob; ``verify`` checks that each referenced blob exists and still
hashes to its key (the chain walk itself is ``AuditTrail.verify``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from model_store.audit import AuditTrail, RecordDraft
from model_store.errors import Conflict, NotFound
from model_store.tables import AuditBlobRow, RecordRow, utcnow

REF_KEY = "blob_sha256"
BIG_ENDIAN = sys.byteorder == "big"
PARALLEL_BYTES = 1 << 20
WITHOUT_ARRAYS = frozenset({"tokens", "words", "prediction", "params", "library_versions"})
"""Envelope keys whose values never hold arrays: ``arrays_replaced`` keeps them as they are (a note's 128
token objects would otherwise be walked and copied twice per answer)."""
VERIFY_BATCH = 200


@dataclasses.dataclass(frozen=True)
class Blob:
    sha256: str
    data: memoryview
    """The array's bytes, without a copy (the array stays alive as long as the blob)."""


class EncodedArray(dict[str, Any]):
    """An array's JSON form as sent (e.g. its base64 object; a plain JSON object to orjson) that still holds
    the array, so a record stores the array's bytes without decoding what was sent."""

    def __init__(self, array: np.ndarray, **fields: Any) -> None:
        super().__init__(**fields)
        self.array = array


def arrays_replaced(value: Any, replace: Callable[[np.ndarray, str], Any], path: str = "") -> Any:
    """``value`` (an envelope or a part of it) with every numpy array and ``EncodedArray`` replaced by
    ``replace(array, path)``; ``path`` names its place (``results.0.attention.5.weights``). The containers
    on the way are copied; ``value`` is left as it is."""
    if isinstance(value, EncodedArray):
        return replace(value.array, path)
    if isinstance(value, np.ndarray):
        return replace(value, path)
    if isinstance(value, dict):
        return {
            k: v if k in WITHOUT_ARRAYS else arrays_replaced(v, replace, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [arrays_replaced(v, replace, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous in little-endian byte order (no copy when it already is, as on x86 and ARM)."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and BIG_ENDIAN):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def blob_of(array: np.ndarray, encoding: str) -> tuple[Blob, dict[str, Any]]:
    """The blob of ``array`` and the reference a record keeps in its place (``encoding``: how the client
    received the values: json numbers, base64 or safetensors, all of these very bytes)."""
    little = little_endian(array)
    data = little.data.cast("B")
    sha = hashlib.sha256(data).hexdigest()
    ref: dict[str, Any] = {REF_KEY: sha, "dtype": little.dtype.name, "shape": list(little.shape)}
    ref.update(byte_order="little", bytes=data.nbytes, encoding=encoding)
    return Blob(sha, data), ref


def blobs_of(arrays: Sequence[np.ndarray], encoding: str) -> list[tuple[Blob, dict[str, Any]]]:
    """``blob_of`` each array; past ``PARALLEL_BYTES`` in total, half of them on a second thread (sha256
    releases the GIL, so a full attention map hashes in about half the time when a core is free)."""
    if sum(a.nbytes for a in arrays) < PARALLEL_BYTES or len(arrays) < 2:
        return [blob_of(a, encoding) for a in arrays]
    half = len(arrays) // 2
    second = _hasher().submit(lambda: [blob_of(a, encoding) for a in arrays[half:]])
    first = [blob_of(a, encoding) for a in arrays[:half]]
    return first + second.result()


@functools.cache
def _hasher() -> ThreadPoolExecutor:
    """One helper thread per process, made on first use (after a server's fork, never at import)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="candor-blob-hash")


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(REF_KEY), str)


def references(value: Any) -> Iterator[dict[str, Any]]:
    """Every blob reference inside ``value`` (a recorded explanation), depth first. Only the explanation
    holds references: a request's instances and options are the client's JSON and are never read as one."""
    if isinstance(value, dict):
        if is_reference(value):
            yield value
            return
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def array_of(ref: dict[str, Any], data: bytes) -> np.ndarray:
    """The array a reference names, from its blob's bytes."""
    return np.frombuffer(data, dtype=np.dtype(ref["dtype"]).newbyteorder("<")).reshape(ref["shape"])


def with_arrays(value: Any, load: Callable[[str], bytes]) -> Any:
    """``value`` (a recorded explanation) with every blob reference replaced by its array, read with
    ``load`` (e.g. ``AuditBlobs.checked``)."""
    if is_reference(value):
        return array_of(value, load(value[REF_KEY]))
    if isinstance(value, dict):
        return {k: with_arrays(v, load) for k, v in value.items()}
    if isinstance(value, list):
        return [with_arrays(v, load) for v in value]
    return value


def _reference_problem(ref: dict[str, Any], stored: bytes | None, known: dict[str, int]) -> str | None:
    """Why ``ref`` fails against its stored blob (None: it holds); ``known`` maps blobs already hashed to
    their size, and gains this one."""
    sha = ref[REF_KEY]
    if sha in known:
        size = known[sha]
    elif stored is None:
        return f"the blob {sha} is missing"
    elif hashlib.sha256(stored).hexdigest() != sha:
        return f"the blob {sha} does not match its sha256"
    else:
        size = known[sha] = len(stored)
    try:
        expected = math.prod(ref["shape"]) * np.dtype(ref["dtype"]).itemsize
    except (KeyError, TypeError, ValueError):
        return f"the reference to blob {sha} names no valid dtype and shape"
    if not size == ref.get("bytes") == expected:
        return f"the blob {sha} does not have the size its reference states"
    return None


def write(session: Session, blobs: Sequence[Blob]) -> None:
    """Store ``blobs`` in the caller's transaction; a blob already stored (same sha256) is kept as it is.
    Inserted in sha256 order, so two transactions sharing blobs cannot deadlock on them."""
    unique = {blob.sha256: blob for blob in blobs}
    if not unique:
        return
    now = utcnow()
    rows = [
        {"sha256": sha, "size": blob.data.nbytes, "data": blob.data, "created_at": now}
        for sha, blob in sorted(unique.items())
    ]
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(AuditBlobRow).on_conflict_do_nothing(index_elements=["sha256"]), rows)


def append_with_blobs(
    audit: AuditTrail, session: Session, drafts: Sequence[RecordDraft], blobs: Sequence[Blob]
) -> None:
    """Append ``drafts`` with the blobs their references name, in ``session``'s transaction:
    the blobs are written under the chain's lock, so no collection of unreferenced blobs runs between the
    two (``AuditBlobs.collect`` takes the same lock)."""
    if blobs:
        audit.lock(session)
        write(session, blobs)
    audit.append(drafts, session=session)


def _stored(session: Session, sha256s: Iterable[str]) -> dict[str, bytes]:
    """The stored bytes of each of ``sha256s`` that exists, a batch of them per query."""
    wanted = sorted(set(sha256s))
    found: dict[str, bytes] = {}
    for start in range(0, len(wanted), VERIFY_BATCH):
        query = select(AuditBlobRow.sha256, AuditBlobRow.data)
        rows = session.execute(query.where(AuditBlobRow.sha256.in_(wanted[start : start + VERIFY_BATCH])))
        found.update((str(sha), bytes(data)) for sha, data in rows)
    return found


class AuditBlobs:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def load(self, sha256s: Iterable[str]) -> dict[str, bytes]:
        """The stored bytes of each of ``sha256s`` that exists, read in one session, a batch per query."""
        with self.sessions() as session:
            return _stored(session, sha256s)

    def checked(self, sha256: str) -> bytes:
        """The blob's bytes; ``NotFound`` when it is missing, ``Conflict`` when they no longer hash to
        ``sha256`` (bytes the chain contradicts are never served)."""
        return self.all_checked([sha256])[sha256]

    def all_checked(self, sha256s: Iterable[str]) -> dict[str, bytes]:
        """``checked`` for many blobs, read together."""
        wanted = set(sha256s)
        stored = self.load(wanted)
        for sha in sorted(wanted):
            if sha not in stored:
                raise NotFound(f"The blob '{sha}' is missing: GET /v1/audit/verify reports the break.")
            if hashlib.sha256(stored[sha]).hexdigest() != sha:
                problem = f"The stored blob '{sha}' does not match its sha256"
                raise Conflict(f"{problem}: see GET /v1/audit/verify.")
        return stored

    def arrays_in(self, value: Any) -> Any:
        """``value`` (a recorded explanation) with its blob references replaced by their checked arrays,
        every blob read in one session."""
        stored = self.all_checked(ref[REF_KEY] for ref in references(value))
        return with_arrays(value, stored.__getitem__)

    def collect(self, audit: AuditTrail) -> int:
        """Delete the blobs no record refers to any more (after a purge); how many. Runs under the chain's
        lock, which a request takes before writing its blobs, so no blob can gain a reference meanwhile."""
        with self.sessions.begin() as session:
            audit.lock(session)
            keep: set[str] = set()
            for row, refs in _referring_records(session):
                if refs is None:  # its references cannot be known: delete nothing
                    raise ValueError(f"Record {row.seq}'s body is not JSON: see `candor audit verify`.")
                keep.update(ref[REF_KEY] for ref in refs)
            unreferenced = sorted(set(session.scalars(select(AuditBlobRow.sha256)).all()) - keep)
            for start in range(0, len(unreferenced), VERIFY_BATCH):
                batch = unreferenced[start : start + VERIFY_BATCH]
                session.execute(delete(AuditBlobRow).where(AuditBlobRow.sha256.in_(batch)))
        return len(unreferenced)

    def verify(self) -> dict[str, Any]:
        """Every blob referenced by a record exists, hashes to its sha256 and has the stated size; the
        first record (in chain order) whose reference fails is the break."""
        checked, known = 0, dict[str, int]()
        with self.sessions() as session:
            for row, refs in _referring_records(session):
                if refs is None:
                    continue  # the chain walk reports a body that is not JSON
                stored = _stored(session, {ref[REF_KEY] for ref in refs} - set(known))
                for ref in refs:
                    problem = _reference_problem(ref, stored.get(ref[REF_KEY]), known)
                    if problem is not None:
                        brk = {"seq": row.seq, "id": row.id, "reason": problem}
                        return {"checked": checked, "distinct": len(known), "first_break": brk}
                    checked += 1
        return {"checked": checked, "distinct": len(known), "first_break": None}


def _referring_records(session: Session) -> Iterator[tuple[Any, list[dict[str, Any]] | None]]:
    """Each record whose body mentions a blob reference, in chain order (read in batches), with its
    explanation's references (None when its body is not JSON)."""
    after = 0
    while True:
        rows = session.execute(
            select(RecordRow.seq, RecordRow.id, RecordRow.body)
            .where(RecordRow.seq > after, RecordRow.body.contains(f'"{REF_KEY}"'))
            .order_by(RecordRow.seq)
            .limit(VERIFY_BATCH)
        ).all()
        for row in rows:
            try:
                refs: list[dict[str, Any]] | None = list(
                    references(orjson.loads(row.body).get("explanation"))
                )
            except orjson.JSONDecodeError:
                refs = None
            yield row, refs
        if len(rows) < VERIFY_BATCH:
            return
        after = rows[-1].seq


def verify_trail(audit: AuditTrail, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """The chain walk and the blob check in one verdict: ``ok`` only when both pass; ``first_break`` is the
    chain's, else the blobs'; ``blobs`` tells how many references (and distinct blobs) were checked."""
    verdict = audit.verify()
    blobs = AuditBlobs(sessions).verify()
    first_break = verdict["first_break"] or blobs["first_break"]
    return {**verdict, "ok": first_break is None, "first_break": first_break, "blobs": blobs}
