""" The `sql` plugin: SQL connection pools for services, as in Zato.

    with self.outgoing.sql.get("CRM").session() as session:   # commits, or rolls back on error
        session.execute(text("UPDATE ..."))

Each `outgoing_sql` object (name, is_active, engine, host, port, db_name with driver options as
a query string, username, password set separately, pool_size, `extra` lines for
`sqlalchemy.create_engine`) becomes a SQLAlchemy engine, reached by services as
`self.outgoing.sql.get(name)` or `self.out.sql[name]`. See README.md.

Importing this module stays cheap (it runs at every start): SQLAlchemy's ORM is imported when
the first connection is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, ZatoSpelling, hookimpl
from zato_plugin_sql._config import (
    DEFAULT_POOL_SIZE, ENGINES, OBJECT_TYPE, SQLConfigError, check_definition, check_object, engine_settings,
    parse_extra, valid_engine_arguments,
)

__all__ = ["ENGINES", "OBJECT_TYPE", "OUTGOING_SQL", "SQLConfigError", "SQLConnection", "TransactionalSession",
           "check_definition", "check_object", "connect", "engine_settings", "parse_extra", "valid_engine_arguments"]

FIELDS = (
    Field("name", required=True, description="The name services use: self.outgoing.sql.get(name), self.out.sql[name]"),
    Field("is_active", "bool", default=True, description="An inactive pool is not built"),
    Field("engine", required=True, example="postgresql",
          description=f"{', '.join(ENGINES)}, or a SQLAlchemy dialect+driver name such as postgresql+psycopg2"),
    Field("host", example="127.0.0.1", description="Where the database runs (not used by sqlite)"),
    Field("port", "int", minimum=1, maximum=65535, example=5432, description="Its TCP port; empty for the driver's default (not used by sqlite)"),
    Field("db_name", example="mydb?application_name=crm",
          description="Database name, with driver options as a query string (mydb?charset=utf8, or ?service_name=X "
                      "alone); for sqlite the file's path, relative to the server directory"),
    Field("username", example="zato", description="User to connect as"),
    Field("password", secret=True, description="Set with PUT /zato/api/objects/outgoing_sql/{name}/secrets/password; "
                                               "stored encrypted"),
    Field("pool_size", "int", default=DEFAULT_POOL_SIZE, minimum=0,
          description="Connections kept open; 0 keeps none (a new connection each time)"),
    Field("extra", example="echo=True\nmax_overflow=5",
          description="One key=value per line, passed to sqlalchemy.create_engine (echo, max_overflow, "
                      "isolation_level, pool_recycle, connect_args...); values are typed: True/False, None, numbers, "
                      "Python literals, else text"),
)
# The admin API and enmasse refuse a bad `extra` key (or port, query string...) through the object
# type's own check, in a core that has it (ObjectType.check); otherwise the build refuses it.
_CHECKS = {"check": check_object} if "check" in {f.name for f in dataclasses.fields(ObjectType)} else {}
OUTGOING_SQL = ObjectType(OBJECT_TYPE, FIELDS, description="An SQL connection pool (SQLAlchemy)", **_CHECKS,
                          zato=ZatoSpelling("outconn_sql", ignored=("id", "cluster_id", "engine_display_name",
                                                                    "version", "password_type")))


def connect(server: Any, definition: dict[str, Any]) -> Any:
    """ Builds one connection pool (runs in a worker thread; nothing connects yet). """
    from zato_plugin_sql._connection import SQLConnection
    return SQLConnection(server, definition)


def __getattr__(name: str) -> Any:
    if name in ("SQLConnection", "TransactionalSession"):  # imported on first use: it brings in the ORM
        from zato_plugin_sql import _connection
        return getattr(_connection, name)
    raise AttributeError(f"module 'zato_plugin_sql' has no attribute {name!r}")


@hookimpl
def register_connectors(register):
    register(Connector(OUTGOING_SQL, OutgoingConnectionType(
        "sql", OBJECT_TYPE, "out.sql", connect, "SQL connection pools (SQLAlchemy)")))
