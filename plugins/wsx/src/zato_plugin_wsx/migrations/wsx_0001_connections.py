""" WebSocket connections of every process sharing the database (the `wsx` plugin).

* `zato_wsx_connection` - one row per open session, written by the process that holds it when
  the session opens and deleted when it closes; `last_seen` is refreshed by its holder, so rows of
  a process that died stop being listed and are deleted.
* `zato_wsx_reply` - the answer to an admin API call (invoke, disconnect) that the holder of a
  connection made on behalf of another process, which reads and deletes it.

The same tables are defined with SQLAlchemy Core in zato_plugin_wsx/registry.py.

Revision ID: wsx_0001
Branch: wsx (version table alembic_version_wsx), run after the core's chain
"""
import sqlalchemy as sa
from alembic import op

revision = "wsx_0001"
down_revision = None
branch_labels = ("wsx",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zato_wsx_connection",
        sa.Column("pub_client_id", sa.String(64), primary_key=True),
        sa.Column("channel_name", sa.String(400), nullable=False),
        sa.Column("ext_client_id", sa.String(400), nullable=True),
        sa.Column("ext_client_name", sa.String(400), nullable=True),
        sa.Column("peer_address", sa.String(200), nullable=False),
        sa.Column("peer_fqdn", sa.String(400), nullable=True),
        sa.Column("forwarded_for", sa.String(400), nullable=True),
        sa.Column("local_address", sa.String(200), nullable=False),
        sa.Column("user", sa.String(400), nullable=True),
        sa.Column("connection_time", sa.String(40), nullable=False),
        sa.Column("pings_missed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("subscriptions", sa.Text, nullable=False, server_default="{}"),
        sa.Column("server_name", sa.String(200), nullable=False),
        sa.Column("server_dir", sa.String(1000), nullable=False),
        sa.Column("server_pid", sa.Integer, nullable=False),
        sa.Column("worker_index", sa.Integer, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_index("ix_zato_wsx_connection_holder", "zato_wsx_connection", ["server_name", "server_pid"])
    op.create_table(
        "zato_wsx_reply",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("zato_wsx_reply")
    op.drop_index("ix_zato_wsx_connection_holder", table_name="zato_wsx_connection")
    op.drop_table("zato_wsx_connection")
