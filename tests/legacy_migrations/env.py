""" The core's Alembic chain as it was before the built-ins' tables moved into branches of their
own (revisions 0001-0005, commit 9c67d20), kept verbatim so that tests/test_migrations.py can make
databases exactly as that code made them. Not used by the server. """

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
