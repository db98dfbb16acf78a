""" The scheduler's lease moves to the core's `zato_lease` (zato.server.placement), which every
`one_process` task and listener uses too: the row of `zato_scheduler_lease` is copied there
(holder, epoch and expiry kept, so that the epoch only grows), then the table is dropped.

Dropping it, rather than leaving it unused, also stops a server of an older version that still
shares the database from scheduling under a lease the new ones no longer look at: its claims,
fenced by the old table, then fail and it schedules nothing.

Revision ID: scheduler_0002
Revises: scheduler_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "scheduler_0002"
down_revision = "scheduler_0001"
branch_labels = None
depends_on = None

COLUMNS = "name, holder, epoch, acquired, expires"


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "zato_lease" in tables:  # the core's chain runs first; this branch alone (its own tests) has none
        op.execute(f"INSERT INTO zato_lease ({COLUMNS}) SELECT {COLUMNS} FROM zato_scheduler_lease "
                   f"WHERE name NOT IN (SELECT name FROM zato_lease)")
    op.drop_table("zato_scheduler_lease")


def downgrade() -> None:
    op.create_table(
        "zato_scheduler_lease",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(400), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("acquired", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "zato_lease" in tables:
        op.execute(f"INSERT INTO zato_scheduler_lease ({COLUMNS}) SELECT {COLUMNS} FROM zato_lease "
                   f"WHERE name = 'scheduler'")
