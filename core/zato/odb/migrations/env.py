""" Alembic environment: run programmatically by `zato.odb.ODB.upgrade` with a connection. """

from alembic import context

from zato.odb import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
