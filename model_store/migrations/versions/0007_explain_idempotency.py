"""Idempotent explanations: an API key's ``Idempotency-Key`` names the record its first answer became.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "explain_idempotency",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_explain_idempotency_record_id", "explain_idempotency", ["record_id"])


def downgrade() -> None:
    op.drop_index("ix_explain_idempotency_record_id", table_name="explain_idempotency")
    op.drop_table("explain_idempotency")
