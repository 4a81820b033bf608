"""Idempotent job submission: a key's ``Idempotency-Key`` names one job, with the hash of its request.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("jobs", sa.Column("request_sha256", sa.String(64), nullable=True))
    op.create_index("ix_jobs_key_idempotency", "jobs", ["key_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_key_idempotency", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("request_sha256")
        batch.drop_column("idempotency_key")
