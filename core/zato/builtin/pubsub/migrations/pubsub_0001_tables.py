""" Durable publish/subscribe messages and deliveries (the `pubsub` plugin, zato/builtin/pubsub/).

* `zato_pubsub_message` - one row per guaranteed-delivery (GD) message still waiting: for at least
  one subscription, or in a topic that had no subscription when it was published; deleted when
  every subscription has it (or dead-lettered it).
* `zato_pubsub_delivery` - one row per message per subscription queue (`sub_key`): the queue.
  A server claims rows with a lease (`claimed_by`, `claimed_until`) before delivering them and
  deletes them once delivered.
* `zato_pubsub_dead_letter` - deliveries that failed too many times, with a copy of the message.
* `zato_pubsub_topic_state` - per topic: the last message published (recorded at most about once a
  second per server), and how many messages were stored while their publisher knew no
  subscription of the topic (and how many of those were queued since).

The first revision of the `pubsub` plugin's branch (`register_migrations`). Until the tables moved
here they were the core's revision 0005: a database at 0005 is stamped with this revision instead
(`zato.odb.LEGACY_REVISIONS`), keeping its rows.

Revision ID: pubsub_0001
Branch: pubsub (version table alembic_version_pubsub), run after the core's chain
"""
import sqlalchemy as sa
from alembic import op

revision = "pubsub_0001"
down_revision = None
branch_labels = ("pubsub",)
depends_on = None  # a branch of its own: upgraded after the core's chain (zato.odb._migrations)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "zato_pubsub_message",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("msg_id", sa.String(200), nullable=False),
        sa.Column("topic_name", sa.String(400), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("data_format", sa.String(20), nullable=False),  # json, bytes
        sa.Column("mime_type", sa.String(200), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("pub_time", sa.Float, nullable=False),  # seconds since the epoch, UTC
        sa.Column("expiration", sa.BigInteger, nullable=False),  # milliseconds, as in Zato
        sa.Column("expiration_time", sa.Float, nullable=False),
        sa.Column("has_gd", sa.Boolean, nullable=False),
        sa.Column("correl_id", sa.String(400), nullable=True),
        sa.Column("in_reply_to", sa.String(400), nullable=True),
        sa.Column("ext_client_id", sa.String(400), nullable=True),
        sa.Column("published_by", sa.String(400), nullable=True),
        sa.Column("server_name", sa.String(200), nullable=True),
        sa.Column("server_pid", sa.Integer, nullable=True),
        sa.Column("zato_ctx", sa.Text, nullable=True),  # JSON
        sa.Column("user_ctx", sa.Text, nullable=True),  # JSON
        sa.UniqueConstraint("msg_id", name="uq_zato_pubsub_message_msg_id"),
    )
    op.create_index("ix_zato_pubsub_message_topic", "zato_pubsub_message", ["topic_name"])

    op.create_table(
        "zato_pubsub_delivery",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("msg_id", sa.String(200), nullable=False),
        sa.Column("sub_key", sa.String(200), nullable=False),
        sa.Column("topic_name", sa.String(400), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("pub_time", sa.Float, nullable=False),
        sa.Column("expiration_time", sa.Float, nullable=False),
        sa.Column("delivery_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.String(400), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.UniqueConstraint("msg_id", "sub_key", name="uq_zato_pubsub_delivery_msg_sub"),
    )
    # The order deliveries are claimed in: priority (higher first), then publication time.
    op.create_index("ix_zato_pubsub_delivery_order", "zato_pubsub_delivery",
                    ["sub_key", sa.text("priority DESC"), "pub_time", "id"])

    op.create_table(
        "zato_pubsub_dead_letter",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("msg_id", sa.String(200), nullable=False),
        sa.Column("sub_key", sa.String(200), nullable=False),
        sa.Column("topic_name", sa.String(400), nullable=False),
        sa.Column("message", sa.Text, nullable=False),  # JSON: every field of the message, data included
        sa.Column("delivery_count", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("dead_at", sa.Float, nullable=False),
        sa.UniqueConstraint("msg_id", "sub_key", name="uq_zato_pubsub_dead_letter_msg_sub"),
    )
    op.create_index("ix_zato_pubsub_dead_letter_sub_key", "zato_pubsub_dead_letter", ["sub_key"])

    op.create_table(
        "zato_pubsub_topic_state",
        sa.Column("topic_name", sa.String(400), primary_key=True),
        sa.Column("last_msg_id", sa.String(200), nullable=True),
        sa.Column("last_pub_time", sa.Float, nullable=True),
        sa.Column("last_data_prefix", sa.Text, nullable=True),
        sa.Column("last_published_by", sa.String(400), nullable=True),
        # messages stored while the publisher knew no subscription, and how many of those were queued since
        sa.Column("unrouted_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("routed_count", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("zato_pubsub_topic_state")
    op.drop_index("ix_zato_pubsub_dead_letter_sub_key", table_name="zato_pubsub_dead_letter")
    op.drop_table("zato_pubsub_dead_letter")
    op.drop_index("ix_zato_pubsub_delivery_order", table_name="zato_pubsub_delivery")
    op.drop_table("zato_pubsub_delivery")
    op.drop_index("ix_zato_pubsub_message_topic", table_name="zato_pubsub_message")
    op.drop_table("zato_pubsub_message")
