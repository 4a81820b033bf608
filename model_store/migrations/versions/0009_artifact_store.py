"""Content-addressed artifacts: a version names its files by sha256 (``artifact_files``), and the
``database`` artifact store keeps each blob in parts (``artifact_parts``). Existing versions keep a null
``artifact_files`` and load from their directory as before.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _begin_on_sqlite(connection: sa.Connection) -> None:
    """Both changes in the migration's transaction on SQLite too (its driver begins one only before a write,
    so DDL outside one would commit at once), as in 0008."""
    if connection.dialect.name != "sqlite":
        return
    driver = connection.connection.dbapi_connection
    if not getattr(driver, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade() -> None:
    _begin_on_sqlite(op.get_bind())
    op.add_column("model_versions", sa.Column("artifact_files", sa.JSON, nullable=True))
    op.create_table(
        "artifact_parts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    named = op.get_bind().execute(
        sa.text("SELECT count(*) FROM model_versions WHERE artifact_files IS NOT NULL")
    )
    if named.scalar():
        raise RuntimeError(
            "Versions registered since 0009 name their files by sha256: downgrading would lose them."
        )
    op.drop_table("artifact_parts")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("artifact_files")
