""" The scheduler's tables (the same as its migration branch, scheduler/migrations; a test compares
them) and `SchedulerStore`, its reads and writes. Every call blocks: the scheduler makes them in a
worker thread. Claims are fenced by the core's lease (`zato.server.placement`).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator, Mapping

from sqlalchemy import (
    Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint, bindparam,
    delete, func, insert, select, update,
)
from sqlalchemy.engine import Connection, Engine

from zato.odb import InsertIgnoringConflicts, in_chunks, objects_table
from zato.server.placement import Lease, LeaseLost
from zato.server.plugin_state import PluginState

from .jobs import KIND, LEASE_NAME, OBJECT_TYPE, OUTCOME, _iso, _utc

STORE = PluginState["SchedulerStore"]("scheduler.store")

# ################################################################################################
# The tables (the same as the scheduler branch's migrations; a test compares them)

metadata = MetaData()

state_table = Table(
    "zato_scheduler_state", metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=False),
    Column("job_created", DateTime(timezone=True), nullable=True),
    Column("schedule_key", String(64), nullable=False),
    Column("anchor", DateTime(timezone=True), nullable=True),
    Column("next_due", DateTime(timezone=True), nullable=True),
    Column("last_due", DateTime(timezone=True), nullable=True),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("updated", DateTime(timezone=True), nullable=False),
)

run_table = Table(
    "zato_scheduler_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("job_name", String(400), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("due_time", DateTime(timezone=True), nullable=True),
    Column("missed", Integer, nullable=False, server_default="0"),
    Column("cid", String(64), nullable=False),
    Column("holder", String(400), nullable=True),
    Column("requested", DateTime(timezone=True), nullable=False),
    Column("started", DateTime(timezone=True), nullable=True),
    Column("finished", DateTime(timezone=True), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("error", Text, nullable=True),
    UniqueConstraint("job_id", "due_time", name="uq_zato_scheduler_run_job_due"),
    Index("ix_zato_scheduler_run_job", "job_id", "id"),
    Index("ix_zato_scheduler_run_outcome", "outcome"),
)


# ################################################################################################
# The database


# LeaseLost (re-exported): this process no longer holds the scheduler's lease, another one schedules now


Fingerprint = tuple[int, int, int, str | None]


class SchedulerStore:
    """ The scheduler's reads and writes (all blocking: called from worker threads). """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Statements made once: a claim runs for every firing, and building them costs more than
        # running them.
        self._insert_runs = InsertIgnoringConflicts(engine.dialect, run_table, (run_table.c.job_id, run_table.c.id))
        self.lease_of_scheduler = Lease(engine, LEASE_NAME)  # the core's fenced lease, zato_lease
        self._versions = select(objects_table.c.id, objects_table.c.version).where(
            objects_table.c.id.in_(bindparam("f_ids", expanding=True)), objects_table.c.type == OBJECT_TYPE)
        self._fingerprint = select(
            func.count(), func.coalesce(func.sum(objects_table.c.id), 0),
            func.coalesce(func.sum(objects_table.c.version), 0), func.max(objects_table.c.updated)).where(
            objects_table.c.type == OBJECT_TYPE)
        self._move_states = update(state_table).where(state_table.c.job_id == bindparam("k_job_id")).values(
            next_due=bindparam("k_next_due"), last_due=bindparam("k_last_due"), runs=bindparam("k_runs"),
            updated=bindparam("k_updated"))
        self._finish = update(run_table).where(run_table.c.id == bindparam("k_id")).values(
            finished=bindparam("k_finished"), duration_ms=bindparam("k_duration_ms"), outcome=bindparam("k_outcome"),
            error=bindparam("k_error"))

    # ############################################################################################
    # Jobs

    def read_jobs(self) -> tuple[Fingerprint, list[dict[str, Any]]]:
        """ Every job (active or not) as stored, with its row's `created`, and the fingerprint of
        the jobs read just before them (a change in between is seen as a change by `poll`). """
        with self.engine.connect() as conn:
            fingerprint = self._current_fingerprint(conn)
            rows = conn.execute(select(objects_table).where(objects_table.c.type == OBJECT_TYPE)
                                .order_by(objects_table.c.id)).mappings().all()
        jobs = []
        for row in rows:
            obj = dict(row["data"])
            obj.update(name=row["name"], is_active=row["is_active"])
            obj["_meta"] = {"id": row["id"], "version": row["version"], "created": _utc(row["created"])}
            jobs.append(obj)
        return fingerprint, jobs

    def _current_fingerprint(self, conn: Connection) -> Fingerprint:
        """ What changes whenever any job is created, edited, (de)activated or deleted (computed by
        the database: cheap with many jobs). """
        count, ids, versions, updated = conn.execute(self._fingerprint).one()
        if isinstance(updated, str):
            updated = datetime.fromisoformat(updated)
        return int(count), int(ids), int(versions), _iso(updated)

    def _changed_jobs(self, conn: Connection, versions: Mapping[int, int]) -> set[int]:
        """ Of the jobs (id -> version they were read at), those since edited, deactivated or deleted. """
        ids = list(versions)
        current: dict[int, int] = {}
        for chunk in in_chunks(ids):
            current.update(conn.execute(self._versions, {"f_ids": chunk}).all())
        return {job_id for job_id, version in versions.items() if current.get(job_id) != version}

    def read_states(self) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(state_table)).mappings().all()
        return {row["job_id"]: {key: (_utc(value) if isinstance(value, datetime) else value)
                                for key, value in row.items()} for row in rows}

    # ############################################################################################
    # The lease

    def acquire(self, holder: str, now: datetime, seconds: float) -> int | None:
        """ Takes the lease if it is free or expired (or ours); returns its new epoch, else None.
        Runs left `running` by an earlier holder are then marked lost. """
        epoch = self.lease_of_scheduler.acquire(holder, seconds, now)
        if epoch is None:
            return None
        try:
            self.mark_lost_runs(holder, epoch, now)
        except LeaseLost:
            return None
        return epoch

    def mark_lost_runs(self, holder: str, epoch: int, now: datetime) -> int:
        """ What a new holder does first: runs left `running` by an earlier one are `lost` (fenced:
        raises `LeaseLost`). """
        with self._fenced(holder, epoch) as conn:
            return conn.execute(update(run_table).where(run_table.c.outcome == OUTCOME.RUNNING,
                                                        run_table.c.holder != holder).values(
                outcome=OUTCOME.LOST, finished=now,
                error="lost: the server running it stopped or lost the scheduler's lease before it finished")).rowcount

    def renew(self, holder: str, epoch: int, now: datetime, seconds: float) -> bool:
        return self.lease_of_scheduler.renew(holder, epoch, seconds, now)

    def release(self, holder: str, epoch: int, now: datetime) -> None:
        """ Lets another process take over at once (a clean stop). """
        self.lease_of_scheduler.release(holder, epoch, now)

    def lease(self) -> dict[str, Any] | None:
        """ Who schedules, until when (the admin API's `lease`). """
        current = self.lease_of_scheduler.current()
        return None if current is None else {key: current[key] for key in ("holder", "epoch", "acquired", "expires")}

    @contextmanager
    def _fenced(self, holder: str, epoch: int) -> Iterator[Connection]:
        """ A transaction that commits only while `holder` still holds the lease at `epoch`
        (`zato.server.placement.Lease.fenced`); raises `LeaseLost`. """
        with self.lease_of_scheduler.fenced(holder, epoch) as conn:
            yield conn

    # ############################################################################################
    # Scheduling

    def save_states(self, holder: str, epoch: int, versions: Mapping[int, int], states: list[dict[str, Any]],
                    finished: list[int], forget_history_of: list[int], now: datetime) -> bool:
        """ Writes new schedule states (jobs new or changed), deactivates `finished` jobs and
        forgets the state and history of deleted jobs. False, writing nothing, if any of those
        jobs changed since it was read at its version in `versions`. """
        with self._fenced(holder, epoch) as conn:
            if self._changed_jobs(conn, versions):
                return False
            if states:
                conn.execute(delete(state_table).where(state_table.c.job_id.in_([s["job_id"] for s in states])))
                conn.execute(insert(state_table), [{**s, "updated": now} for s in states])
            if forget_history_of:
                conn.execute(delete(run_table).where(run_table.c.job_id.in_(forget_history_of),
                                                     run_table.c.outcome != OUTCOME.RUNNING))
            self._deactivate(conn, finished, now)
            existing = select(objects_table.c.id).where(objects_table.c.type == OBJECT_TYPE)
            conn.execute(delete(state_table).where(state_table.c.job_id.not_in(existing)))
            conn.execute(delete(run_table).where(run_table.c.job_id.not_in(existing),
                                                 run_table.c.outcome != OUTCOME.RUNNING))
        return True

    @staticmethod
    def _deactivate(conn: Connection, job_ids: list[int], now: datetime) -> None:
        if job_ids:
            conn.execute(update(objects_table).where(objects_table.c.id.in_(job_ids),
                                                     objects_table.c.is_active.is_(True)).values(
                is_active=False, version=objects_table.c.version + 1, updated=now))

    def claim(self, holder: str, epoch: int, versions: Mapping[int, int], plans: list["Plan"], now: datetime
              ) -> tuple[dict[int, int], set[int]]:
        """ Claims firings: one run row per plan (unique per job and due time), the jobs' next due
        times moved on, finished jobs deactivated, all in one fenced transaction. A job edited,
        deactivated or deleted since it was read (at its version in `versions`) is not claimed.
        Returns (job id -> run id of the plans claimed, the ids of the jobs that changed). Raises
        `LeaseLost`. """
        with self._fenced(holder, epoch) as conn:
            changed = self._changed_jobs(conn, versions)
            plans = [p for p in plans if p.job_id not in changed]
            inserted = self._insert_runs(conn, [{
                "job_id": p.job_id, "job_name": p.job_name, "kind": p.kind, "due_time": p.due_time,
                "missed": p.missed, "cid": p.cid, "holder": holder, "requested": now,
                "started": now if p.outcome == OUTCOME.RUNNING else None,
                "finished": None if p.outcome == OUTCOME.RUNNING else now,
                "outcome": p.outcome, "error": p.error} for p in plans])
            claimed = {row[0]: row[1] for row in inserted}
            moved = [{"k_job_id": p.job_id, "k_next_due": p.next_due, "k_last_due": p.due_time, "k_runs": p.runs,
                      "k_updated": now} for p in plans if p.job_id in claimed]
            if moved:
                conn.execute(self._move_states, moved)
            self._deactivate(conn, [p.job_id for p in plans if p.finished and p.job_id in claimed], now)
        return claimed, changed

    def finish(self, records: list[dict[str, Any]]) -> None:
        """ Records how runs ended (one transaction for many). """
        if not records:
            return
        with self.engine.begin() as conn:
            conn.execute(self._finish, [{f"k_{key}": value for key, value in record.items()} for record in records])

    def pending_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(
                select(run_table.c.id, run_table.c.job_id, run_table.c.job_name, run_table.c.cid)
                .where(run_table.c.outcome == OUTCOME.PENDING).order_by(run_table.c.id).limit(limit)).mappings()]

    def start_pending(self, holder: str, epoch: int, decisions: list[dict[str, Any]], now: datetime) -> None:
        """ Starts (or skips, with the reason) runs asked for with execute now. """
        if not decisions:
            return
        with self._fenced(holder, epoch) as conn:
            conn.execute(update(run_table).where(run_table.c.id == bindparam("k_id"),
                                                 run_table.c.outcome == OUTCOME.PENDING).values(
                outcome=bindparam("k_outcome"), error=bindparam("k_error"), holder=holder,
                started=bindparam("k_started"), finished=bindparam("k_finished")),
                [{"k_id": d["id"], "k_outcome": d["outcome"], "k_error": d.get("error"),
                  "k_started": now if d["outcome"] == OUTCOME.RUNNING else None,
                  "k_finished": None if d["outcome"] == OUTCOME.RUNNING else now} for d in decisions])

    def poll(self) -> tuple[Fingerprint, bool]:
        """ What the scheduling process looks at every `poll_seconds`: the jobs' fingerprint and
        whether a run was asked for. """
        with self.engine.connect() as conn:
            fingerprint = self._current_fingerprint(conn)
            pending = conn.execute(select(run_table.c.id).where(run_table.c.outcome == OUTCOME.PENDING)
                                   .limit(1)).first() is not None
        return fingerprint, pending

    def prune(self, keep: int) -> int:
        """ Keeps the newest `keep` finished runs of each job. """
        rank = func.row_number().over(partition_by=run_table.c.job_id, order_by=run_table.c.id.desc()).label("rank")
        ranked = select(run_table.c.id, rank).where(
            run_table.c.outcome.not_in((OUTCOME.PENDING, OUTCOME.RUNNING))).subquery()
        with self.engine.begin() as conn:
            return conn.execute(delete(run_table).where(
                run_table.c.id.in_(select(ranked.c.id).where(ranked.c.rank > keep)))).rowcount

    # ############################################################################################
    # For the admin API

    def add_manual(self, job_id: int, job_name: str, cid: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(run_table).values(job_id=job_id, job_name=job_name, kind=KIND.MANUAL, due_time=None,
                                                  missed=0, cid=cid, requested=now, outcome=OUTCOME.PENDING))

    def history(self, job_id: int, limit: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(run_table).where(run_table.c.job_id == job_id)
                                .order_by(run_table.c.id.desc()).limit(limit)).mappings().all()
        return [run_view(row) for row in rows]

    def last_runs(self) -> dict[int, dict[str, Any]]:
        newest = select(func.max(run_table.c.id)).group_by(run_table.c.job_id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(run_table).where(run_table.c.id.in_(newest))).mappings().all()
        return {row["job_id"]: run_view(row) for row in rows}


def run_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """ One run as the history API shows it. """
    return {"cid": row["cid"], "job": row["job_name"], "kind": row["kind"], "due_time": _iso(row["due_time"]),
            "missed": row["missed"], "requested": _iso(row["requested"]), "started": _iso(row["started"]),
            "finished": _iso(row["finished"]),
            "duration_ms": round(row["duration_ms"], 3) if row["duration_ms"] is not None else None,
            "outcome": row["outcome"], "error": row["error"], "server": row["holder"]}


def store_of(server: Any) -> SchedulerStore:
    return STORE.get_or_create(server, lambda: SchedulerStore(server.odb.engine))
