""" Alembic environment: run programmatically by `zato.odb.ODB.upgrade` with a connection, once
for the core's chain and once per plugin branch, each with its own version table
(`zato.odb._migrations.alembic_config`). """

from alembic import context

from zato.odb import metadata

attributes = context.config.attributes
connection = attributes["connection"]
context.configure(connection=connection, target_metadata=metadata if attributes.get("core_chain", True) else None,
                  version_table=attributes.get("version_table", "alembic_version"), render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
