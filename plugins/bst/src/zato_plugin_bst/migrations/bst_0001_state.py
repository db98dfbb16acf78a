""" Business state transitions (the `bst` plugin): each object's current state and the history of
its transitions.

* `zato_bst_state` - one row per (object_type lower-case, object_id as text): the definition and
  state the object is in, when it moved there and `version`, the counter that makes each move a
  compare-and-set (UPDATE ... WHERE version = :seen, or an INSERT that fails on the primary key).
* `zato_bst_history` - one row per transition, written in the same transaction as the state.

The same tables are defined with SQLAlchemy Core in zato_plugin_bst/store.py.

Revision ID: bst_0001
Branch: bst (version table alembic_version_bst), run after the core's chain
"""
import sqlalchemy as sa
from alembic import op

revision = "bst_0001"
down_revision = None
branch_labels = ("bst",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zato_bst_state",
        sa.Column("object_type", sa.String(200), primary_key=True),
        sa.Column("object_id", sa.String(400), primary_key=True),
        sa.Column("def_name", sa.String(200), nullable=False),
        sa.Column("def_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(400), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_zato_bst_state_def", "zato_bst_state", ["def_name", "state"])
    op.create_table(
        "zato_bst_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("object_type", sa.String(200), nullable=False),
        sa.Column("object_id", sa.String(400), nullable=False),
        sa.Column("def_name", sa.String(200), nullable=False),
        sa.Column("def_version", sa.Integer, nullable=False),
        sa.Column("state_old", sa.String(400), nullable=True),
        sa.Column("state_new", sa.String(400), nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("user_ctx", sa.Text, nullable=True),
        sa.Column("cid", sa.String(200), nullable=True),
        sa.Column("server_name", sa.String(200), nullable=False),
        sa.Column("server_pid", sa.Integer, nullable=False),
    )
    op.create_index("ix_zato_bst_history_object", "zato_bst_history", ["object_type", "object_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_zato_bst_history_object", table_name="zato_bst_history")
    op.drop_table("zato_bst_history")
    op.drop_index("ix_zato_bst_state_def", table_name="zato_bst_state")
    op.drop_table("zato_bst_state")
