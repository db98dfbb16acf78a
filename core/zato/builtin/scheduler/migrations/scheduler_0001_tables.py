""" Scheduler job state and run history: the lease of the process that schedules, the next due
time of each job, and each job's runs (one row per claimed firing, unique per job and due time,
which is what keeps a firing from running twice). The same tables are defined with SQLAlchemy
Core in zato/builtin/scheduler/store.py (a test checks they agree).

The first revision of the `scheduler` plugin's branch (`register_migrations`). Until the tables
moved here they were the core's revision 0003: a database at 0003, 0004 or 0005 is stamped with
this revision instead (`zato.odb.LEGACY_REVISIONS`), keeping its rows.

Revision ID: scheduler_0001
Branch: scheduler (version table alembic_version_scheduler), run after the core's chain
"""
import sqlalchemy as sa
from alembic import op

revision = "scheduler_0001"
down_revision = None
branch_labels = ("scheduler",)
depends_on = None  # a branch of its own: upgraded after the core's chain (zato.odb._migrations)


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
