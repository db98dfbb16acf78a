""" Leases of the configuration database (`zato_lease`): which process runs the work that runs in
exactly one process among all sharing the database (the scheduler, `one_process` tasks and
listeners), until when, and the epoch that fences its writes (zato.server.placement).

The core's chain goes from 0002 to 0006: 0003-0005 were the old single chain's revisions of the
built-ins' tables (now their own branches), and a database still stamped with one of those is
adopted first (`zato.odb._migrations.LEGACY_REVISIONS`), so the ids must not be reused.

Revision ID: 0006
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zato_lease",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(400), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("acquired", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("zato_lease")
