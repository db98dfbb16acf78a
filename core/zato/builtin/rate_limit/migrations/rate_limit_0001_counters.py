""" Exact rate-limit counters shared by every server process (the `rate_limit` plugin).

One row per counter (`zato.builtin.rate_limit.counters_table`, which a test compares with this
table): the key names the object, a digest of its definition and the line; the row holds the
current fixed window and its hits.

The first revision of the `rate_limit` plugin's branch (`register_migrations`). Until the table
moved here it was the core's revision 0004: a database at 0004 or 0005 is stamped with this
revision instead (`zato.odb.LEGACY_REVISIONS`), keeping its rows.

Revision ID: rate_limit_0001
Branch: rate_limit (version table alembic_version_rate_limit), run after the core's chain
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "rate_limit_0001"
down_revision = None
branch_labels = ("rate_limit",)
depends_on = None  # a branch of its own: upgraded after the core's chain (zato.odb._migrations)


def upgrade() -> None:
    op.create_table(
        "zato_rate_limit_counter",
        sa.Column("key", sa.String(1000), primary_key=True),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_zato_rate_limit_counter_expires_at", "zato_rate_limit_counter", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_zato_rate_limit_counter_expires_at", table_name="zato_rate_limit_counter")
    op.drop_table("zato_rate_limit_counter")
