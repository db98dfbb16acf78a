""" Where BST keeps each object's current state and the history of its transitions: two tables in
the configuration database (`server.odb.engine`), made by the plugin's Alembic branch `bst`
(migrations/bst_0001_state.py). Every call blocks; from trio it runs in a worker thread.

An object is keyed by its object type in lower case and its id as text (`123` and `'123'` are one
object). A move is a compare-and-set: `UPDATE ... WHERE version = :seen` (or, for an object that
has no state yet, an INSERT that fails on the primary key), in one transaction with its history
row, so two concurrent moves of one object never both succeed; the loser gets `StateChanged`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

METADATA = sa.MetaData()

STATE = sa.Table(
    "zato_bst_state", METADATA,
    sa.Column("object_type", sa.String(200), primary_key=True),
    sa.Column("object_id", sa.String(400), primary_key=True),
    sa.Column("def_name", sa.String(200), nullable=False),
    sa.Column("def_version", sa.Integer, nullable=False),
    sa.Column("state", sa.String(400), nullable=False),
    sa.Column("updated", sa.DateTime(), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

HISTORY = sa.Table(
    "zato_bst_history", METADATA,
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


# Built once, executed with parameters: constructing a statement per call costs more than running it
_B = sa.bindparam
_CURRENT = sa.select(STATE).where(STATE.c.object_type == _B("b_type"), STATE.c.object_id == _B("b_id"))
_INSERT_STATE = sa.insert(STATE)
_UPDATE_STATE = sa.update(STATE).where(
    STATE.c.object_type == _B("b_type"), STATE.c.object_id == _B("b_id"), STATE.c.version == _B("b_seen")).values(
    def_name=_B("b_def_name"), def_version=_B("b_def_version"), state=_B("b_state"), updated=_B("b_updated"),
    version=_B("b_version"))
_INSERT_HISTORY = sa.insert(HISTORY)
_HISTORY = sa.select(HISTORY).where(HISTORY.c.object_type == _B("b_type"),
                                    HISTORY.c.object_id == _B("b_id")).order_by(HISTORY.c.id)


class StateChanged(Exception):
    """ The object's state changed between the read and the write (another move won). """


class _Lost(Exception):
    """ The compare-and-set matched no row. """


def object_key(object_type: str, object_id: Any) -> tuple[str, str]:
    """ How an object is stored: its type in lower case, its id as text. """
    if object_type is None or not str(object_type).strip():
        raise ValueError("object_type is required")
    if object_id is None or str(object_id) == "":
        raise ValueError("object_id is required")
    return str(object_type).strip().lower(), str(object_id)


def utc(value: datetime | None) -> datetime | None:
    """ A stored time (naive, UTC) as an aware UTC datetime. """
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    value = utc(value)
    return value.isoformat() if value is not None else None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Current:
    """ An object's current state, as read: `version` is what the next move compares against. """
    object_type: str
    object_id: str
    def_name: str
    def_version: int
    state: str
    updated: datetime
    version: int


class Store:
    """ The two tables on one engine; `server_name` and `pid` go into each history row. """

    def __init__(self, engine: Engine, *, server_name: str = "", pid: int = 0) -> None:
        self.engine = engine
        self.server_name = server_name
        self.pid = pid

    def current(self, object_type: str, object_id: Any) -> Current | None:
        object_type, object_id = object_key(object_type, object_id)
        with self.engine.connect() as conn:
            row = conn.execute(_CURRENT, {"b_type": object_type, "b_id": object_id}).first()
        if row is None:
            return None
        return Current(row.object_type, row.object_id, row.def_name, row.def_version, row.state,
                       utc(row.updated), row.version)

    def move(self, object_type: str, object_id: Any, *, seen: int | None, def_name: str, def_version: Any,
             state_old: str | None, state_new: str, forced: bool = False, user_ctx: Any = None,
             cid: str | None = None) -> dict[str, Any]:
        """ Moves the object to `state_new` if its state is still the one read with version `seen`
        (None: it had none), writing the history row in the same transaction. Returns the history
        row; raises `StateChanged` if another move came first. """
        object_type, object_id = object_key(object_type, object_id)
        now = _now()
        ctx = None if user_ctx is None else json.dumps(user_ctx, default=str)
        values = {"def_name": def_name, "def_version": int(def_version), "state": state_new, "updated": now}
        history = {"object_type": object_type, "object_id": object_id, "def_name": def_name,
                   "def_version": int(def_version), "state_old": state_old, "state_new": state_new,
                   "forced": bool(forced), "time": now, "user_ctx": ctx, "cid": cid,
                   "server_name": self.server_name, "server_pid": self.pid}
        row_id = None
        try:
            with self.engine.begin() as conn:
                if seen is None:
                    conn.execute(_INSERT_STATE, {"object_type": object_type, "object_id": object_id, "version": 1,
                                                 **values})
                else:
                    done = conn.execute(_UPDATE_STATE, {
                        "b_type": object_type, "b_id": object_id, "b_seen": seen, "b_version": seen + 1,
                        **{f"b_{key}": value for key, value in values.items()}})
                    if done.rowcount != 1:
                        raise _Lost()  # rolls the transaction back; the message is read after it
                row_id = conn.execute(_INSERT_HISTORY, history).inserted_primary_key[0]
        except (_Lost, sa.exc.IntegrityError):
            pass
        if row_id is None:
            # read outside the transaction: its connection is back in the pool
            raise StateChanged(self._changed(object_type, object_id, state_old, state_new))
        return self._history_row({"id": row_id, **history})

    def _changed(self, object_type: str, object_id: str, state_old: str | None, state_new: str) -> str:
        now = self.current(object_type, object_id)
        is_now = f"is now in {now.state!r}" if now is not None else "has no state"
        return (f"{object_type} {object_id!r} changed state while moving from {state_old!r} to {state_new!r}: "
                f"another transition came first and it {is_now}; read its state again and retry")

    def history(self, object_type: str, object_id: Any) -> list[dict[str, Any]]:
        """ The object's transitions, oldest first. """
        object_type, object_id = object_key(object_type, object_id)
        with self.engine.connect() as conn:
            rows = conn.execute(_HISTORY, {"b_type": object_type, "b_id": object_id}).mappings().all()
        return [self._history_row(dict(row)) for row in rows]

    def objects_in(self, def_name: str) -> list[dict[str, Any]]:
        """ Every object in a state of the definition `def_name`: object_type, object_id, state,
        last_transition_time (ISO, UTC), as `export.definition_json` and `export.diagram` take them. """
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(STATE).where(sa.func.lower(STATE.c.def_name) == def_name.lower())
                                .order_by(STATE.c.object_type, STATE.c.object_id)).all()
        return [{"object_type": row.object_type, "object_id": row.object_id, "state": row.state,
                 "last_transition_time": iso(row.updated)} for row in rows]

    @staticmethod
    def _history_row(row: dict[str, Any]) -> dict[str, Any]:
        ctx = row.get("user_ctx")
        return {"id": row["id"], "object_type": row["object_type"], "object_id": row["object_id"],
                "def_name": row["def_name"], "def_version": row["def_version"], "state_old": row["state_old"],
                "state_new": row["state_new"], "forced": bool(row["forced"]), "time": iso(row["time"]),
                "user_ctx": json.loads(ctx) if ctx is not None else None, "cid": row["cid"],
                "server_name": row["server_name"], "server_pid": row["server_pid"]}
