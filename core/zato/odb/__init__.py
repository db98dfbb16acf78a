""" The configuration database: every configured object (REST channels, security definitions,
outgoing connections, scheduler jobs...) as one row of one generic table, typed by its object
type's schema (`zato.objects`).

SQLite in the server directory is the default (WAL); PostgreSQL is supported. The schema is
managed by Alembic (`zato/odb/migrations`); `ODB.upgrade()` brings any older database to the
current revision. All calls here are blocking: the server makes them from worker threads
(`trio.to_thread.run_sync`), never on the trio loop.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import (
    JSON, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, UniqueConstraint, create_engine,
    event, inspect, select, text,
)
from sqlalchemy.engine import Connection, Engine

from zato.common.files import PRIVATE_FILE, create_file, tighten

logger = logging.getLogger("zato.odb")

# The newest migration in zato/odb/migrations/versions (a test checks they agree).
HEAD_REVISION = "0005"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

metadata = MetaData()

objects_table = Table(
    "zato_object", metadata,
    Column("id", Integer, primary_key=True),
    Column("type", String(200), nullable=False),
    Column("name", String(400), nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    UniqueConstraint("type", "name", name="uq_zato_object_type_name"),
    Index("ix_zato_object_type", "type"),
)


class ObjectExists(Exception):
    pass


class ObjectNotFound(LookupError):
    pass


class VersionConflict(Exception):
    """ The object changed since the caller read it. """


@dataclass
class Change:
    """ One step of a batch applied in a single transaction (enmasse). """
    action: str  # create, update, delete
    object_type: str
    name: str
    data: dict[str, Any] | None = None
    is_active: bool = True


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def prepare_sqlite_file(database: str) -> None:
    """ Creates an SQLite database file 0600 before SQLite opens it, or takes from an existing one
    (and its -wal, -shm and -journal files) what 0600 does not allow, logging that it did: it
    holds password hashes. SQLite gives the files it creates next to a database the database
    file's mode, so they are 0600 too. """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not os.path.exists(database):
        try:
            create_file(database, PRIVATE_FILE, append=True).close()
        except FileNotFoundError:
            return  # no such directory: SQLite's own error says which file it could not open
    for suffix in ("", "-wal", "-shm", "-journal"):
        tighten(database + suffix, PRIVATE_FILE)


def open_engine(url: str) -> Engine:
    engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        prepare_sqlite_file(engine.url.database or "")
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()
    return engine


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """ Only JSON-able values reach the database; name, is_active and _meta live in columns. """
    data = {key: value for key, value in data.items() if key not in ("name", "is_active", "_meta")}
    return json.loads(json.dumps(data))


def _active(data: dict[str, Any], default: bool) -> bool:
    value = data.get("is_active", default)
    return bool(default if value is None else value)


class ODB:
    """ Reads and writes configuration objects. """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)

    # ############################################################################################
    # Schema

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "alembic_version" not in tables:
                return "0001" if "zato_object" in tables else None  # made before migrations existed
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self) -> str:
        """ Migrates the database to the newest revision; cheap when it is already there.
        Returns what it did, for the log. """
        from sqlalchemy.exc import DBAPIError
        try:
            revision = self.current_revision()
        except DBAPIError as exc:  # the first connection of a start: say which database and where it is set
            from zato.config import ConfigError
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise ConfigError(
                f"cannot open the configuration database {self.engine.url.render_as_string(hide_password=True)}: "
                f"{reason}; check [odb] url in server.conf (empty: work/zato.db) and that the database "
                f"is running and accepts this user") from None
        if revision == HEAD_REVISION:
            return f"at revision {HEAD_REVISION}"
        from alembic import command
        from alembic.config import Config

        with self.engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            if revision is not None and "alembic_version" not in inspect(conn).get_table_names():
                command.stamp(config, revision)
            command.upgrade(config, "head")
        done = f"migrated from {revision or 'an empty database'} to revision {HEAD_REVISION}"
        logger.info("configuration database %s", done)
        return done

    create_schema = upgrade

    # ############################################################################################
    # Reading

    def list_objects(self, object_type: str, *, active_only: bool = True) -> list[dict[str, Any]]:
        query = select(objects_table).where(objects_table.c.type == object_type)
        if active_only:
            query = query.where(objects_table.c.is_active.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(objects_table.c.id)).mappings().all()
        return [self._as_object(row) for row in rows]

    def list_all(self, *, active_only: bool = True) -> list[tuple[str, dict[str, Any]]]:
        """ Every object as (type, object), in creation order. """
        query = select(objects_table)
        if active_only:
            query = query.where(objects_table.c.is_active.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(objects_table.c.id)).mappings().all()
        return [(row["type"], self._as_object(row)) for row in rows]

    def get_object(self, object_type: str, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = self._row(conn, object_type, name)
        if row is None:
            raise ObjectNotFound(f"no {object_type} named {name!r}")
        return self._as_object(row)

    # ############################################################################################
    # Writing

    def put_object(self, object_type: str, name: str, data: dict[str, Any], *, is_active: bool = True) -> None:
        """ Creates the object, or replaces its data if it exists. """
        with self.engine.begin() as conn:
            if self._row(conn, object_type, name) is None:
                self._insert(conn, object_type, name, data, is_active)
            else:
                self._update(conn, object_type, name, data, is_active)

    def create_object(self, object_type: str, name: str, data: dict[str, Any], *, is_active: bool = True) -> dict:
        with self.engine.begin() as conn:
            if self._row(conn, object_type, name) is not None:
                raise ObjectExists(f"a {object_type} named {name!r} exists already")
            self._insert(conn, object_type, name, data, is_active)
            return self._as_object(self._row(conn, object_type, name))

    def update_object(self, object_type: str, name: str, data: dict[str, Any], *, is_active: bool = True,
                      expected_version: int | None = None) -> dict:
        with self.engine.begin() as conn:
            row = self._row(conn, object_type, name)
            if row is None:
                raise ObjectNotFound(f"no {object_type} named {name!r}")
            if expected_version is not None and row["version"] != expected_version:
                raise VersionConflict(f"{object_type} {name!r} is at version {row['version']}, "
                                      f"not {expected_version}: read it again and retry")
            self._update(conn, object_type, name, data, is_active)
            return self._as_object(self._row(conn, object_type, name))

    def delete_object(self, object_type: str, name: str) -> None:
        with self.engine.begin() as conn:
            deleted = conn.execute(objects_table.delete().where(
                objects_table.c.type == object_type, objects_table.c.name == name)).rowcount
        if not deleted:
            raise ObjectNotFound(f"no {object_type} named {name!r}")

    def apply(self, changes: Iterable[Change]) -> int:
        """ Applies every change in one transaction: all of them, or none. """
        count = 0
        with self.engine.begin() as conn:
            for change in changes:
                if change.action == "create":
                    self._insert(conn, change.object_type, change.name, change.data or {}, change.is_active)
                elif change.action == "update":
                    self._update(conn, change.object_type, change.name, change.data or {}, change.is_active)
                elif change.action == "delete":
                    conn.execute(objects_table.delete().where(objects_table.c.type == change.object_type,
                                                              objects_table.c.name == change.name))
                else:
                    raise ValueError(f"unknown change {change.action!r}")
                count += 1
        return count

    # ############################################################################################

    @staticmethod
    def _row(conn: Connection, object_type: str, name: str) -> Any:
        return conn.execute(select(objects_table).where(
            objects_table.c.type == object_type, objects_table.c.name == name)).mappings().first()

    @staticmethod
    def _insert(conn: Connection, object_type: str, name: str, data: dict[str, Any], is_active: bool) -> None:
        now = _now()
        conn.execute(objects_table.insert().values(type=object_type, name=name, is_active=_active(data, is_active),
                                                   data=_json_safe(data), created=now, updated=now, version=1))

    @staticmethod
    def _update(conn: Connection, object_type: str, name: str, data: dict[str, Any], is_active: bool) -> None:
        conn.execute(objects_table.update().where(
            objects_table.c.type == object_type, objects_table.c.name == name).values(
            is_active=_active(data, is_active), data=_json_safe(data), updated=_now(),
            version=objects_table.c.version + 1))

    @staticmethod
    def _as_object(row: Any) -> dict[str, Any]:
        obj = dict(row["data"])
        obj.update(name=row["name"], is_active=row["is_active"])
        obj["_meta"] = {"id": row["id"], "version": row["version"], "updated": row["updated"].isoformat()
                        if row["updated"] else None}
        return obj

    def close(self) -> None:
        self.engine.dispose()
