"""The ``database`` artifact store: each blob in rows of a few MiB (``artifact_parts``), written in one
transaction and read a part at a time, so a large weight file is never one value in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from model_store.blob_backends import CHUNK_BYTES, BlobMissing, blob_key, mismatch
from model_store.tables import ArtifactPartRow as Part


class DatabaseBackend:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def exists(self, sha256: str) -> bool:
        blob_key(sha256)
        with self.sessions() as session:
            return self._part(session, sha256, 0) is not None

    def put(self, sha256: str, chunks: Iterable[bytes]) -> None:
        if self.exists(sha256):
            return
        try:
            with self.sessions.begin() as session:
                digest = hashlib.sha256()
                for part, data in enumerate(_parts(chunks)):
                    digest.update(data)
                    session.execute(insert(Part), [{"sha256": sha256, "part": part, "data": data}])
                if digest.hexdigest() != sha256:
                    raise mismatch()  # rolls the parts back
        except sa_exc.IntegrityError:
            if not self.exists(sha256):  # not another host storing the same blob at the same time
                raise

    def chunks(self, sha256: str) -> Iterator[bytes]:
        blob_key(sha256)
        part = 0
        with self.sessions() as session:
            while (data := self._part(session, sha256, part)) is not None:
                yield data
                part += 1
        if part == 0:
            raise BlobMissing()

    def local_path(self, sha256: str) -> Path | None:
        return None

    @staticmethod
    def _part(session: Session, sha256: str, part: int) -> bytes | None:
        query = select(Part.data).where(Part.sha256 == sha256, Part.part == part)
        data = session.scalar(query)
        return None if data is None else bytes(data)


def _parts(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` regrouped into parts of ``CHUNK_BYTES`` (the last one shorter), without copying a chunk that
    is already a whole part; one empty part for no bytes, so an empty file is stored too."""
    pending = b""
    emitted = False
    for chunk in chunks:
        pending = pending + chunk if pending else chunk
        view, start = memoryview(pending), 0
        while len(pending) - start >= CHUNK_BYTES:  # slices of a view: no copy of the remainder per part
            yield bytes(view[start : start + CHUNK_BYTES])
            start += CHUNK_BYTES
            emitted = True
        pending = bytes(view[start:]) if start else pending
    if pending or not emitted:
        yield pending
