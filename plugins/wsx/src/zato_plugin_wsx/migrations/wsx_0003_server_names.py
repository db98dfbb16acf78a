""" The servers' own names and the subscription times of WebSocket clients (the `wsx` plugin):

* `server_config_name` of `zato_wsx_connection` and `zato_wsx_outgoing` - the name of the server
  holding the connection (`[main] name` of its server.conf), which the admin API lists as
  `server_name` beside its host (`server_name` of the rows, whom requests are addressed to).
  Rows written before it have none: the host is listed.
* `zato_wsx_subscription` - when each WebSocket client (a pub/sub endpoint `wsx/<channel>/<client_id>`)
  subscribed to each topic, kept as long as its subscription, so that a client reconnecting lists
  the times of subscriptions older than its connection.

The same tables are defined with SQLAlchemy Core in zato_plugin_wsx/registry.py.

Revision ID: wsx_0003
Branch: wsx
"""
import sqlalchemy as sa
from alembic import op

revision = "wsx_0003"
down_revision = "wsx_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("zato_wsx_connection", sa.Column("server_config_name", sa.String(200), nullable=True))
    op.add_column("zato_wsx_outgoing", sa.Column("server_config_name", sa.String(200), nullable=True))
    op.create_table(
        "zato_wsx_subscription",
        sa.Column("endpoint_name", sa.String(400), primary_key=True),
        sa.Column("topic_name", sa.String(400), primary_key=True),
        sa.Column("subscribed_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("zato_wsx_subscription")
    with op.batch_alter_table("zato_wsx_outgoing") as batch:
        batch.drop_column("server_config_name")
    with op.batch_alter_table("zato_wsx_connection") as batch:
        batch.drop_column("server_config_name")
