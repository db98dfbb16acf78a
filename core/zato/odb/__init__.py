""" The configuration database: every configured object (REST channels, security definitions,
outgoing connections, scheduler jobs...) as one row of one generic table, typed by its object
type's schema (`zato.objects`).

SQLite in the server directory is the default (WAL); PostgreSQL is supported. The schema is
managed by Alembic: the core's chain (`zato/odb/migrations`) and a branch per plugin that brings
tables of its own (`register_migrations`, zato/odb/_migrations.py); `ODB.upgrade()` brings any
older database to the current revisions. All calls here are blocking: the server makes them
from worker threads (`trio.to_thread.run_sync`), never on the trio loop.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import (
    JSON, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, UniqueConstraint, create_engine,
    event, inspect, select, text,
)
from sqlalchemy.engine import Connection, Engine

from zato.common.files import PRIVATE_FILE, create_file, tighten
from zato.odb._migrations import (
    CORE, CORE_BRANCH, LEGACY_REVISIONS, MIGRATIONS, Branch, MigrationError, adopt_legacy, alembic_config, branches_of,
    check_branch, installed_branch, installed_migrations, is_current, stamp_core, stored_revisions, upgrade_branch,
)  # re-exported

logger = logging.getLogger("zato.odb")

# The newest revision of the core's own chain, zato/odb/migrations/versions (a test checks they
# agree). The built-ins' tables are in branches of their own (zato/odb/_migrations.py).
HEAD_REVISION = "0006"  # 0003-0005 belonged to the old single chain (LEGACY_REVISIONS)

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


# ################################################################################################
# SQL helpers for every table of the server's database (the built-ins' too)

SQLITE_BUSY_TIMEOUT_MS = 10000
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
IN_CHUNK = 500  # ids per IN (...) list: well under every database's limit on bound parameters


def set_sqlite_pragmas(dbapi_conn: Any, synchronous: str | None = None) -> None:
    """ What every SQLite connection of the server uses, on a driver (`sqlite3`) connection: WAL
    (readers do not wait for a writer), a 10 s busy timeout (a writer waits its turn instead of
    failing at once) and, if given, `synchronous`: FULL syncs the WAL at each commit (nothing
    committed is lost, not even when the machine dies), NORMAL does not (lost only when the machine
    dies, not when the process does), unset is SQLite's default. """
    _check_synchronous(synchronous)
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if synchronous is not None:
            cursor.execute(f"PRAGMA synchronous={synchronous}")
    finally:
        cursor.close()


def _check_synchronous(synchronous: str | None) -> None:
    if synchronous is not None and synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"synchronous is one of {', '.join(SQLITE_SYNCHRONOUS)}, not {synchronous!r}")


def open_engine(url: str, *, synchronous: str | None = None) -> Engine:
    """ An engine on the server's database (`[odb] url`). On SQLite the file is made 0600 first
    and each connection gets `set_sqlite_pragmas(..., synchronous)`: an engine whose writes need
    another durability than the configuration's (pub/sub FULL, rate-limit counters NORMAL) says so
    here. Elsewhere, connections are checked before use (`pool_pre_ping`). """
    engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        _check_synchronous(synchronous)  # now, not at the first connection
        prepare_sqlite_file(engine.url.database or "")

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            set_sqlite_pragmas(dbapi_conn, synchronous)
    return engine


def in_chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """ `items` in slices of at most `size`, one `IN (...)` list each. """
    for start in range(0, len(items), size):
        yield items[start:start + size]


class InsertIgnoringConflicts:
    """ An INSERT into `table` that skips the rows breaking a unique constraint (another process
    inserted them first), built once so that its statement is compiled once:
    `insert(conn, rows)` returns the rows inserted, as tuples of the `returning` columns.

    SQLite and PostgreSQL: one `INSERT ... ON CONFLICT DO NOTHING RETURNING` (`conflict_on`: the
    columns of the constraint, None for any). Other databases: one savepoint per row. """

    def __init__(self, dialect: Any, table: Table, returning: Sequence[Any],
                 conflict_on: Sequence[str] | None = None) -> None:
        """ `dialect`: the engine's (`engine.dialect`). """
        self.table = table
        self.returning = tuple(returning)
        self._insert_returning = bool(getattr(dialect, "insert_returning", False))
        self._statement: Any = None
        if dialect.name in ("sqlite", "postgresql"):
            if dialect.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            self._statement = dialect_insert(table).on_conflict_do_nothing(
                index_elements=list(conflict_on) if conflict_on else None).returning(*self.returning)

    def __call__(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> list[Any]:
        if not rows:
            return []
        if self._statement is not None:
            return list(conn.execute(self._statement, rows[0] if len(rows) == 1 else list(rows)).all())
        from sqlalchemy.exc import IntegrityError
        inserted = []
        for row in rows:
            try:
                with conn.begin_nested():
                    if self._insert_returning:
                        inserted.extend(conn.execute(self.table.insert().returning(*self.returning), row).all())
                    else:
                        result = conn.execute(self.table.insert(), row)
                        keys = dict(zip((c.key for c in self.table.primary_key.columns),
                                        result.inserted_primary_key or ()))
                        inserted.append(tuple(row.get(c.key, keys.get(c.key)) for c in self.returning))
            except IntegrityError:
                continue
        return inserted


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
        """ The core chain's revision ("0001" for a database made before migrations existed). """
        with self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "alembic_version" not in tables:
                return "0001" if "zato_object" in tables else None  # made before migrations existed
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def revisions(self, migrations: Mapping[str, Any] | None = None) -> dict[str, frozenset[str]]:
        """ The stored revisions of the core's chain ("zato") and of each branch in `migrations`
        (branch label -> directory; None: every installed plugin's), empty where none is stored. """
        branches = branches_of(installed_migrations() if migrations is None else migrations)
        with self.engine.connect() as conn:
            return stored_revisions(conn, branches)[0]

    def upgrade(self, migrations: Mapping[str, Any] | None = None) -> str:
        """ Migrates the core's chain, then each branch of `migrations` (branch label -> the
        directory of its revision scripts, as plugins register them with `register_migrations`:
        the server passes those of its enabled plugins; None: every installed plugin's) to its
        newest revisions; cheap when they are there already. A branch not named is not touched:
        a plugin switched off keeps its tables, upgraded when it is switched on again. A database
        at the core's old revisions 0003-0005 is stamped, not rebuilt (`LEGACY_REVISIONS`).
        Returns what it did, for the log. """
        from sqlalchemy.exc import DBAPIError

        from zato.config import ConfigError
        branches = branches_of(installed_migrations() if migrations is None else migrations)
        try:
            with self.engine.connect() as conn:
                before, _ = stored_revisions(conn, branches)
        except DBAPIError as exc:  # the first connection of a start: say which database and where it is set
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise ConfigError(
                f"cannot open the configuration database {self.engine.url.render_as_string(hide_password=True)}: "
                f"{reason}; check [odb] url in server.conf (empty: work/zato.db) and that the database "
                f"is running and accepts this user") from None
        if is_current(before, branches, HEAD_REVISION):
            return f"at revisions {_describe(before)}"

        try:
            with self.engine.begin() as conn:
                before, has_objects = stored_revisions(conn, branches)  # again, in the migrating transaction
                if not before[CORE_BRANCH] and has_objects:
                    stamp_core(conn, "0001")  # made before migrations existed
                adopted = adopt_legacy(conn)
                for branch in [CORE, *branches]:
                    upgrade_branch(conn, branch)
                after, _ = stored_revisions(conn, branches)
        except MigrationError as exc:
            raise ConfigError(str(exc)) from None
        if not any(before.values()) and not has_objects:
            done = f"migrated an empty database to {_describe(after)}"
        else:
            done = "migrated " + ", ".join(
                f"{label} from {_revs(before[label]) or 'nothing'} to {_revs(revisions)}"
                for label, revisions in after.items() if revisions != before[label])
            if adopted:
                done += f" (adopted from the core's old revision {adopted}, every row kept)"
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


def _revs(revisions: Iterable[str]) -> str:
    return "+".join(sorted(revisions))


def _describe(revisions: Mapping[str, Iterable[str]]) -> str:
    return ", ".join(f"{label} {_revs(revs) or '(none)'}" for label, revs in revisions.items())
