""" The configuration database: every configured object (REST channels, security definitions,
outgoing connections...) as one row of one generic table, typed by its object type's schema.

SQLite in the server directory is the default. All calls here are blocking: the server makes
them from worker threads (`trio.to_thread.run_sync`), never on the trio loop.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON, Boolean, Column, DateTime, Integer, MetaData, String, Table, UniqueConstraint, create_engine, event,
    select,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

objects_table = Table(
    "zato_object", metadata,
    Column("id", Integer, primary_key=True),
    Column("type", String(200), nullable=False),
    Column("name", String(400), nullable=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("data", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    UniqueConstraint("type", "name", name="uq_zato_object_type_name"),
)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def open_engine(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()
    return engine


class ODB:
    """ Reads and writes configuration objects. """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

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

    def put_object(self, object_type: str, name: str, data: dict[str, Any], *, is_active: bool = True) -> None:
        """ Creates the object, or replaces its data if it exists. """
        now = datetime.now(timezone.utc)
        data = json.loads(json.dumps(data))  # only JSON-able values reach the database
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(objects_table.c.id).where(objects_table.c.type == object_type, objects_table.c.name == name)
            ).scalar()
            if existing is None:
                conn.execute(objects_table.insert().values(
                    type=object_type, name=name, is_active=is_active, data=data, created=now, updated=now))
            else:
                conn.execute(objects_table.update().where(objects_table.c.id == existing).values(
                    is_active=is_active, data=data, updated=now))

    @staticmethod
    def _as_object(row: Any) -> dict[str, Any]:
        obj = dict(row["data"])
        obj.update(id=row["id"], name=row["name"], is_active=row["is_active"])
        return obj

    def close(self) -> None:
        self.engine.dispose()
