""" Requests between servers sharing the database (the `wsx` plugin): `zato_wsx_request` holds
what a process of one server asks the process of another server holding a WebSocket connection
to do (invoke it, disconnect it, deliver a pub/sub message to it, broadcast to a channel's
clients); the holder reads and deletes the rows addressed to it and answers in `zato_wsx_reply`.

The same table is defined with SQLAlchemy Core in zato_plugin_wsx/registry.py.

Revision ID: wsx_0002
Branch: wsx
"""
import sqlalchemy as sa
from alembic import op

revision = "wsx_0002"
down_revision = "wsx_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zato_wsx_request",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("holder_name", sa.String(200), nullable=False),
        sa.Column("holder_pid", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_index("ix_zato_wsx_request_holder", "zato_wsx_request", ["holder_name", "holder_pid"])


def downgrade() -> None:
    op.drop_index("ix_zato_wsx_request_holder", table_name="zato_wsx_request")
    op.drop_table("zato_wsx_request")
