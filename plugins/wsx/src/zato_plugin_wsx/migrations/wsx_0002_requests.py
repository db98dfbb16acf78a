""" Requests between servers sharing the database, and outgoing connections (the `wsx` plugin):

* `zato_wsx_request` holds what a process of one server asks the process of another server
  holding a WebSocket connection to do (invoke it, disconnect it, deliver a pub/sub message to
  it, broadcast to a channel's clients, call through an outgoing connection); the holder reads
  and deletes the rows addressed to it and answers in `zato_wsx_reply`.
* `zato_wsx_outgoing` - one row per live outgoing connection (`outgoing_wsx`), written by the
  process holding it: its state, last error and holder, refreshed like the connection rows.

The same tables are defined with SQLAlchemy Core in zato_plugin_wsx/registry.py.

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
    op.create_table(
        "zato_wsx_outgoing",
        sa.Column("name", sa.String(400), primary_key=True),
        sa.Column("address", sa.String(1000), nullable=False),
        sa.Column("state", sa.String(40), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("server_name", sa.String(200), nullable=False),
        sa.Column("server_dir", sa.String(1000), nullable=False),
        sa.Column("server_pid", sa.Integer, nullable=False),
        sa.Column("worker_index", sa.Integer, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("zato_wsx_outgoing")
    op.drop_index("ix_zato_wsx_request_holder", table_name="zato_wsx_request")
    op.drop_table("zato_wsx_request")
