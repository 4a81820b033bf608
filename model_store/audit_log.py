"""The audit log's Merkle tree: integrating recorded leaves, proofs, and signed checkpoints.

A record is committed with its leaf hash and no place in the tree, so writers never wait on one another for
a position. Integration (any process may run it; one at a time, on the head row's lock, in one short
transaction) gives the records written so far their leaf indexes in the order they were written, stores the
tree's new hashes (tlog's stored hashes: O(1) per leaf amortised), moves the head to the new size and root,
and, when this process holds the signing key, signs a checkpoint of the new tree. It runs every few
seconds in each server process (``Integrator``) and on demand before anything that needs the tree current
(a proof, a checkpoint, verification, an export).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from candor_verify import merkle
from candor_verify.checkpoint import Checkpoint, open_checkpoint, signed
from candor_verify.note import NoteError, Signer
from model_store.audit import HEAD, LOCK_HEAD, RECORDS
from model_store.db import insert_many
from model_store.errors import InvalidInput, NotFound
from model_store.sqlite_turns import take_write_turn
from model_store.tables import AuditCheckpointRow, AuditHeadRow, AuditTreeRow

log = logging.getLogger("candor.audit")
INTEGRATE_BATCH = 50_000
"""Most leaves one integration transaction takes (a larger backlog is integrated in several)."""
TREE = cast(Table, AuditTreeRow.__table__)
SET_LEAF_INDEXES = (
    update(RECORDS)
    .where(RECORDS.c.seq.between(bindparam("first_seq"), bindparam("last_seq")))
    .where(RECORDS.c.leaf_index.is_(None))
    .values(leaf_index=RECORDS.c.seq + bindparam("to_leaf_index"))
)
"""A run of consecutive pending records gets consecutive leaf indexes in one statement."""


def _runs(seqs: list[int], first_index: int) -> list[dict[str, int]]:
    """``seqs`` (ascending) as runs of consecutive values, each with what turns its seqs into the leaf
    indexes from ``first_index`` on."""
    runs: list[dict[str, int]] = []
    for offset, seq in enumerate(seqs):
        if runs and runs[-1]["last_seq"] == seq - 1:
            runs[-1]["last_seq"] = seq
        else:
            runs.append({"first_seq": seq, "last_seq": seq, "to_leaf_index": first_index + offset - seq})
    return runs


class HashCache:
    """A ``read(indexes)`` over the stored hashes: the database's, and those an integration is adding."""

    def __init__(self, session: Session, base: int) -> None:
        self.session = session
        self.base = base
        self.new: list[bytes] = []
        self.known: dict[int, bytes] = {}

    def __call__(self, indexes: Sequence[int]) -> list[bytes]:
        wanted = [i for i in indexes if i < self.base and i not in self.known]
        if wanted:
            rows = self.session.execute(select(TREE.c.index, TREE.c.hash).where(TREE.c.index.in_(wanted)))
            self.known.update((int(i), bytes(h)) for i, h in rows)
        try:
            return [self.known[i] if i < self.base else self.new[i - self.base] for i in indexes]
        except (KeyError, IndexError) as exc:
            raise LookupError(f"the audit tree's stored hash {exc} is missing") from exc


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session], signer: Signer | None = None) -> None:
        self.sessions = sessions
        self.signer = signer

    # -- integrating --------------------------------------------------------------------------------------
    def integrate(self) -> int:
        """Give every record written so far its place in the tree; the tree size after."""
        while True:
            with self.sessions.begin() as session:
                size, more = self._integrate(session)
            if not more:
                return size

    def _integrate(self, session: Session) -> tuple[int, bool]:
        pending_query = select(RECORDS.c.seq, RECORDS.c.leaf_hash).where(RECORDS.c.leaf_index.is_(None))
        if session.execute(pending_query.limit(1)).first() is None and not self._unsigned(session):
            return self.size(session), False  # nothing to do: no lock taken
        take_write_turn(session)
        head = session.execute(LOCK_HEAD.returning(HEAD.c.seq, HEAD.c.hash)).one()
        size, root = int(head.seq), bytes.fromhex(head.hash)
        pending = session.execute(pending_query.order_by(RECORDS.c.seq).limit(INTEGRATE_BATCH)).all()
        if pending:
            base = merkle.stored_hash_count(size)
            read = HashCache(session, base)
            leaves = [bytes.fromhex(leaf_hex) for _, leaf_hex in pending]
            read.new = merkle.stored_hashes_for_leaves(size, leaves, read)
            insert_many(session, TREE, ("index", "hash"), list(enumerate(read.new, start=base)))
            session.execute(SET_LEAF_INDEXES, _runs([int(seq) for seq, _ in pending], size))
            size += len(pending)
            root = merkle.tree_root(size, read)
            session.execute(update(HEAD).where(HEAD.c.id == 1).values(seq=size, hash=root.hex()))
        self._sign(session, size, root)
        return size, len(pending) == INTEGRATE_BATCH

    def _unsigned(self, session: Session) -> bool:
        """Whether this process could sign a checkpoint of the tree as it stands and none exists yet."""
        if self.signer is None:
            return False
        size = self.size(session)
        return session.get(AuditCheckpointRow, size) is None

    def _sign(self, session: Session, size: int, root: bytes) -> None:
        """Sign a checkpoint of the tree of ``size`` leaves and ``root`` (the head, under its lock)."""
        if self.signer is None or session.get(AuditCheckpointRow, size) is not None:
            return
        note = signed(Checkpoint(self.signer.name, size, root), self.signer)
        session.add(AuditCheckpointRow(tree_size=size, root=root.hex(), note=note))

    # -- reading ------------------------------------------------------------------------------------------
    @staticmethod
    def size(session: Session) -> int:
        return int(session.execute(select(HEAD.c.seq).where(HEAD.c.id == 1)).scalar_one())

    def root(self, size: int, session: Session) -> bytes:
        return merkle.tree_root(size, HashCache(session, merkle.stored_hash_count(size)))

    def head(self) -> dict[str, Any]:
        """The tree's size and root (hex) as last integrated."""
        with self.sessions() as session:
            row = session.get(AuditHeadRow, 1)
            if row is None:
                raise LookupError("the audit_head row is created by migration 0002")
            return {"tree_size": row.seq, "root": row.hash}

    def checkpoint(self, tree_size: int | None = None) -> dict[str, Any] | None:
        """The signed checkpoint of ``tree_size`` (None: the latest), or None when there is none."""
        with self.sessions() as session:
            query = select(AuditCheckpointRow)
            if tree_size is None:
                query = query.order_by(AuditCheckpointRow.tree_size.desc()).limit(1)
            else:
                query = query.where(AuditCheckpointRow.tree_size == tree_size)
            row = session.scalars(query).first()
            if row is None:
                return None
            return {"tree_size": row.tree_size, "root": row.root, "note": row.note}

    def checkpoint_verifies(self, checkpoint: dict[str, Any]) -> bool:
        """Whether ``checkpoint``'s note is signed by this log's key and states its size and root (True
        when this process holds no key: nothing to check it with)."""
        if self.signer is None:
            return True
        try:
            opened = open_checkpoint(checkpoint["note"], self.signer.verifier)
        except NoteError:
            return False
        return opened.size == checkpoint["tree_size"] and opened.root.hex() == checkpoint["root"]

    def current_checkpoint(self) -> dict[str, Any] | None:
        """Integrate what is pending, then the latest checkpoint (None when none was ever signed)."""
        self.integrate()
        return self.checkpoint()

    def leaf(self, record_id: str, models: frozenset[str] | None = None) -> tuple[int, bytes]:
        """A record's leaf index and hash, integrating it first if it is pending; NotFound when there is no
        such record, it was purged, or it explains a model outside ``models`` (None: every model)."""
        purged = and_(RECORDS.c.body.is_(None), RECORDS.c.chunk_sha256.is_(None)).label("purged")
        columns = (RECORDS.c.leaf_index, RECORDS.c.leaf_hash, RECORDS.c.model_name, purged)
        for attempt in range(2):
            with self.sessions() as session:
                row = session.execute(select(*columns).where(RECORDS.c.id == record_id)).first()
            if row is None or row.purged or (models is not None and row.model_name not in models):
                raise NotFound(f"No explanation record '{record_id}'.")
            if row.leaf_index is not None:
                return int(row.leaf_index), bytes.fromhex(row.leaf_hash)
            if attempt == 0:
                self.integrate()
        raise LookupError(f"record {record_id} could not be integrated")

    def inclusion(self, leaf_index: int, tree_size: int) -> list[bytes]:
        with self.sessions() as session:
            size = self.size(session)
            if not leaf_index < tree_size <= size:
                raise InvalidInput.field(
                    "tree_size", f"Must be above the leaf's index {leaf_index} and at most the tree's {size}."
                )
            read = HashCache(session, merkle.stored_hash_count(size))
            return merkle.prove_inclusion(leaf_index, tree_size, read)

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        with self.sessions() as session:
            size = self.size(session)
            if not 0 < old_size <= new_size:
                raise InvalidInput.field("from", "Must be at least 1 and at most `to`.")
            if new_size > size:
                raise InvalidInput.field("to", f"Must be at most the tree's size {size}.")
            read = HashCache(session, merkle.stored_hash_count(size))
            return merkle.prove_consistency(old_size, new_size, read)


class Integrator:
    """A daemon thread integrating the log every ``every`` seconds (a server process runs one)."""

    def __init__(self, audit_log: AuditLog, every: float) -> None:
        self.audit_log = audit_log
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="candor-audit-integrator", daemon=True)

    def start(self) -> Integrator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.audit_log.integrate()
            except Exception:  # the database may be briefly unreachable; the next round retries
                log.warning("audit log integration failed", exc_info=True)
