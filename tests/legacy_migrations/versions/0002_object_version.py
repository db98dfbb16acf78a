""" A version number per object, incremented on every change (optimistic concurrency for the
admin API, and a cheap way for workers to see what changed).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("zato_object") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.create_index("ix_zato_object_type", ["type"])


def downgrade() -> None:
    with op.batch_alter_table("zato_object") as batch:
        batch.drop_index("ix_zato_object_type")
        batch.drop_column("version")
