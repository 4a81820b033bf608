"""The audit trail becomes a Merkle-tree log: each record is a leaf (RFC 9162), signed checkpoints replace
the chain's head, shared record parts are stored once, a batch job's rows are stored once per chunk.

The version 1 chain is verified first (every body hashes to its hash, links to the one before, the sequence
has no gap, a purged prefix is anchored by its checkpoint record) and the migration stops, changing nothing,
when it does not. Then every remaining v1 record becomes a leaf in chain order, its stored bytes unchanged
(the leaf hash is SHA-256(0x00 || body)), and the head row holds the tree's size and root.

Revision ID: 0008
Revises: 0007
"""

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from candor_verify import merkle

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")
GENESIS = "0" * 64
BATCH = 2000


class ChainBroken(RuntimeError):
    """The v1 chain does not verify: nothing is migrated."""


RECORDS = sa.table(
    "explanation_records",
    sa.column("seq"),
    sa.column("id"),
    sa.column("prev_hash"),
    sa.column("hash"),
    sa.column("body"),
)


def _rows(connection: sa.Connection, *columns: str) -> Iterator[Any]:
    after = 0
    while True:
        query = sa.select(*(RECORDS.c[name] for name in columns)).where(RECORDS.c.seq > after)
        rows = connection.execute(query.order_by(RECORDS.c.seq).limit(BATCH)).all()
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].seq


def _anchor(connection: sa.Connection, first: int) -> str | None:
    """The hash the record before ``first`` had, as a checkpoint record of the purge names it."""
    bodies = connection.execute(sa.text("SELECT body FROM explanation_records WHERE kind = 'checkpoint'"))
    for (body,) in bodies:
        purged = json.loads(body).get("purged") or {}
        if purged.get("through_seq") == first - 1 and isinstance(purged.get("through_hash"), str):
            return str(purged["through_hash"])
    return None


def _verified_leaves(connection: sa.Connection) -> list[tuple[int, bytes]]:
    """Check the v1 chain and return each record's (seq, leaf hash) in chain order, in one read of the
    bodies."""
    head_seq, head_hash = connection.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    first = connection.execute(sa.text("SELECT min(seq) FROM explanation_records")).scalar()
    if first is None:
        if head_seq != 0:
            raise ChainBroken(f"the v1 audit chain's records are missing (its head is record {head_seq})")
        return []
    expected_prev = GENESIS if first == 1 else _anchor(connection, first)
    if expected_prev is None:
        raise ChainBroken(f"v1 records before {first} are missing (no checkpoint names them)")
    expected_seq, leaves = first, []
    for row in _rows(connection, "seq", "id", "prev_hash", "hash", "body"):
        if row.seq != expected_seq:
            raise ChainBroken(f"v1 record {expected_seq} is missing")
        body = row.body.encode()
        if hashlib.sha256(body).hexdigest() != row.hash:
            raise ChainBroken(f"v1 record {row.seq} ({row.id}): its body does not match its hash")
        if row.prev_hash != expected_prev:
            raise ChainBroken(f"v1 record {row.seq} ({row.id}) does not link to the record before it")
        leaves.append((row.seq, merkle.leaf_hash(body)))
        expected_seq, expected_prev = row.seq + 1, row.hash
    if expected_seq - 1 != head_seq:
        raise ChainBroken(
            f"the v1 chain ends at record {expected_seq - 1}, not at its recorded head {head_seq}"
        )
    if expected_prev != head_hash:
        raise ChainBroken(f"v1 record {head_seq}'s hash differs from the chain's recorded head")
    return leaves


def _carry_into_the_log(connection: sa.Connection, leaves: list[tuple[int, bytes]]) -> None:
    """Every v1 record a leaf, in chain order; the tree's stored hashes; the head's size and root."""
    stored: list[bytes] = []

    def read(indexes: Any) -> list[bytes]:
        return [stored[i] for i in indexes]

    for index, (_, leaf) in enumerate(leaves):
        stored.extend(merkle.stored_hashes_for_leaf(index, leaf, read))
    update = sa.text(
        "UPDATE explanation_records SET leaf_index = :leaf_index, leaf_hash = :leaf_hash WHERE seq = :seq"
    )
    for start in range(0, len(leaves), BATCH):
        rows = [
            {"seq": seq, "leaf_index": start + i, "leaf_hash": leaf.hex()}
            for i, (seq, leaf) in enumerate(leaves[start : start + BATCH])
        ]
        connection.execute(update, rows)
    tree = sa.table("audit_tree", sa.column("index"), sa.column("hash"))
    for start in range(0, len(stored), BATCH):
        rows = [{"index": start + i, "hash": h} for i, h in enumerate(stored[start : start + BATCH])]
        connection.execute(sa.insert(tree), rows)
    root = merkle.tree_root(len(leaves), read)
    connection.execute(
        sa.text("UPDATE audit_head SET seq = :size, hash = :root WHERE id = 1"),
        {"size": len(leaves), "root": root.hex()},
    )


def _begin_on_sqlite(connection: sa.Connection) -> None:
    """Put the DDL below in the migration's transaction on SQLite too: its driver begins one only before a
    write, so DDL run outside one commits at once and a failure part way would leave a half-migrated
    database. IMMEDIATE takes the write lock first: nothing is written between verifying and carrying."""
    if connection.dialect.name != "sqlite":
        return
    driver = connection.connection.dbapi_connection
    if not getattr(driver, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade() -> None:
    connection = op.get_bind()
    _begin_on_sqlite(connection)
    try:
        leaves = _verified_leaves(connection)
    except ChainBroken as exc:
        raise ChainBroken(f"The v1 audit chain does not verify, so nothing was migrated: {exc}") from None
    # The leaf columns are added in place (nullable: SQLite needs no copy of the table for them) and filled;
    # the other changes then take the one copy of the table SQLite makes (batch mode).
    op.add_column("explanation_records", sa.Column("leaf_hash", sa.String(64), nullable=True))
    op.add_column("explanation_records", sa.Column("leaf_index", SEQ, nullable=True))
    op.add_column("explanation_records", sa.Column("chunk_sha256", sa.String(64), nullable=True))
    op.add_column("explanation_records", sa.Column("chunk_offset", sa.BigInteger, nullable=True))
    op.add_column("explanation_records", sa.Column("chunk_length", sa.Integer, nullable=True))
    op.create_table(
        "audit_tree",
        sa.Column("index", SEQ, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", SEQ, primary_key=True, autoincrement=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_parts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_chunks",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("has_refs", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "job_chunks",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("chunk", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
    )
    _carry_into_the_log(connection, leaves)
    with op.batch_alter_table("explanation_records") as batch:
        batch.alter_column("body", existing_type=sa.Text, nullable=True)
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=True)
        batch.alter_column("leaf_hash", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_records_leaf_index", ["leaf_index"])
    op.create_index("ix_records_chunk", "explanation_records", ["chunk_sha256"])
    op.create_index(
        "ix_records_unsequenced",
        "explanation_records",
        ["seq"],
        sqlite_where=sa.text("leaf_index IS NULL"),
        postgresql_where=sa.text("leaf_index IS NULL"),
    )
    if connection.dialect.name == "postgresql":  # SQLite numbers an INTEGER PRIMARY KEY itself
        op.execute("CREATE SEQUENCE explanation_records_seq_seq OWNED BY explanation_records.seq")
        op.execute(
            "SELECT setval('explanation_records_seq_seq', "
            "coalesce((SELECT max(seq) FROM explanation_records), 0) + 1, false)"
        )
        op.execute(
            "ALTER TABLE explanation_records "
            "ALTER COLUMN seq SET DEFAULT nextval('explanation_records_seq_seq')"
        )


def downgrade() -> None:
    raise NotImplementedError("The audit log cannot be turned back into a v1 chain.")
