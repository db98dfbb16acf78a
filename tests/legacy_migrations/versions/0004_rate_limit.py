""" Exact rate-limit counters shared by every server process (the `rate_limit` plugin).

One row per counter (`zato.builtin.rate_limit.counters_table`, which a test compares with this
table): the key names the object, a digest of its definition and the line; the row holds the
current fixed window and its hits.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


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
