""" Scheduler job state and run history: the lease of the process that schedules, the next due
time of each job, and each job's runs (one row per claimed firing, unique per job and due time,
which is what keeps a firing from running twice). The same tables are defined with SQLAlchemy
Core in zato/builtin/scheduler.py (a test checks they agree).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zato_scheduler_lease",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(400), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("acquired", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "zato_scheduler_state",
        sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("job_created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule_key", sa.String(64), nullable=False),
        sa.Column("anchor", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "zato_scheduler_run",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("job_name", sa.String(400), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("due_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("missed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cid", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(400), nullable=True),
        sa.Column("requested", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.UniqueConstraint("job_id", "due_time", name="uq_zato_scheduler_run_job_due"),
    )
    op.create_index("ix_zato_scheduler_run_job", "zato_scheduler_run", ["job_id", "id"])
    op.create_index("ix_zato_scheduler_run_outcome", "zato_scheduler_run", ["outcome"])


def downgrade() -> None:
    op.drop_index("ix_zato_scheduler_run_outcome", table_name="zato_scheduler_run")
    op.drop_index("ix_zato_scheduler_run_job", table_name="zato_scheduler_run")
    op.drop_table("zato_scheduler_run")
    op.drop_table("zato_scheduler_state")
    op.drop_table("zato_scheduler_lease")
