""" One SQL connection pool: a SQLAlchemy engine (lazily connecting, pre-pinging) and what
services use it through.

    with self.outgoing.sql.get("CRM").session() as session:     # a plain `def handle`
        session.execute(text("INSERT ..."))                     # committed at the end of the block,
                                                                 # rolled back if it raises
    rows = await self.outgoing.sql.get("CRM").run(fetch, 1)     # an `async def handle`: fetch(session, 1)
                                                                 # runs in a worker thread

Database drivers block, so they never run on the trio loop: plain services call them from their
own worker thread; async services hand a function to `.run()`, which runs it in a worker thread,
at most as many at once as the pool hands out connections.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from sqlalchemy import create_engine, literal_column, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from zato.plugin_api import BlockingCalls, OutgoingError
from zato_plugin_sql._config import EngineSettings, SQLConfigError, driver_missing_hint, engine_settings

logger = logging.getLogger("zato.outgoing.sql")


class TransactionalSession(Session):
    """ A SQLAlchemy `Session` that, used as a context manager, commits when its block succeeds
    and rolls back when it raises, then closes (returning its connection to the pool).
    `contextlib.closing(session)` and explicit `session.commit()`, as in Zato, work too. """

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> None:
        try:
            if type_ is None:
                self.commit()
            else:
                try:
                    self.rollback()
                except SQLAlchemyError:  # the block's own error is the one worth raising
                    logger.warning("rollback after %s failed too", type_.__name__, exc_info=True)
        finally:
            self.close()


class SQLConnection:
    """ An outgoing SQL connection pool, what `self.outgoing.sql.get(name)` returns.

    * `session()` - a `TransactionalSession` (a context manager that commits or rolls back);
    * `connection()` - a Core `Connection` in a transaction (`engine.begin()`): committed at
      the end of the `with` block, rolled back if it raises;
    * `run(fn, *args)` - `fn(session, *args)` in a session as above; awaitable from an
      `async def handle` (it runs in a worker thread), a plain call from a plain one;
    * `engine` - the SQLAlchemy engine itself (`.pool.engine` and `.impl` too, as in Zato);
    * `ping()` - `SELECT 1`; `close()` - releases every pooled connection.

    Nothing connects until first use; connections are checked before each use
    (`pool_pre_ping`), so after the database restarts the next call reconnects.
    """

    def __init__(self, server: Any, definition: Mapping[str, Any]) -> None:
        self.name = definition["name"]
        base_dir = Path(server.base_dir) if server is not None else None
        self.settings: EngineSettings = engine_settings(definition, base_dir)
        self.drivername = self.settings.drivername
        self.closed = False
        # Log lines (echo=True) name the connection: sqlalchemy.engine.Engine.<name>
        kwargs = {"logging_name": self.name, "pool_logging_name": self.name, **self.settings.kwargs}
        _keep_echo_in_server_log(self.settings, kwargs)
        try:
            self.engine = create_engine(self.settings.url, **kwargs)
        except ImportError as exc:  # ModuleNotFoundError, or a driver whose native library is missing
            raise OutgoingError(f"outgoing sql {self.name!r}: the {self.drivername} driver is not installed "
                                f"(no module {exc.name!r}); {driver_missing_hint(self.drivername, exc.name)}") from None
        except (TypeError, SQLAlchemyError) as exc:  # a value of the right key that the dialect refuses
            raise SQLConfigError(self.name, [{"field": "extra", "error": f"create_engine refused it: {exc}"}]) from None
        self._sessions = sessionmaker(bind=self.engine, class_=TransactionalSession, expire_on_commit=False)
        # run() from async services: at most as many calls in worker threads as the pool hands out connections
        self._calls = BlockingCalls(f"outgoing sql {self.name!r}", threads=self.settings.concurrency)

    # ############################################################################################
    # What services use

    def session(self) -> TransactionalSession:
        """ A new session; `with conn.session() as session:` commits or rolls back at the end. """
        self._check_usable("session()")
        return self._sessions()

    def connection(self) -> Any:
        """ `with conn.connection() as connection:` a Core connection in a transaction, committed
        at the end of the block or rolled back if it raises. For commit-as-you-go use
        `conn.engine.connect()`. """
        self._check_usable("connection()")
        return self.engine.begin()

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """ `fn(session, *args)` in a session that commits or rolls back; returns what `fn`
        returns. From an `async def handle` it returns an awaitable and `fn` runs in a worker
        thread (at most as many at once as the pool has connections); from a plain `def handle`
        it runs `fn` at once in the service's own thread. """
        return self._calls.call(self._run, fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self.session() as session:
            return fn(session, *args)

    @property
    def pool(self) -> "SQLConnection":
        """ Zato's `self.outgoing.sql.get(name).pool.engine`. """
        return self

    @property
    def impl(self) -> Any:
        return self.engine

    # ############################################################################################
    # What the server uses

    def ping(self) -> None:
        """ `SELECT 1` (with `FROM DUAL` where the dialect needs it) on a pooled connection. """
        self._check_usable("ping()")
        try:
            with self.engine.connect() as connection:
                connection.execute(select(literal_column("1"))).scalar_one()
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise OutgoingError(f"outgoing sql {self.name!r}: SELECT 1 on {self.settings.safe_url} failed: "
                                f"{type(reason).__name__}: {str(reason).strip()}") from None

    def close(self) -> None:
        """ Closes every pooled connection; later calls raise an error saying the connection was
        replaced or deleted. """
        self.closed = True
        self.engine.dispose()

    def statistics(self) -> dict[str, Any]:
        """ The pool's state: its class, size and connections checked out now. """
        pool = self.engine.pool
        stats: dict[str, Any] = {"pool": type(pool).__name__, "status": pool.status(), "closed": self.closed}
        for name in ("size", "checkedout", "checkedin", "overflow"):
            if hasattr(pool, name):
                stats[name] = getattr(pool, name)()
        return stats

    def _check_usable(self, what: str) -> None:
        if self.closed:
            raise OutgoingError(f"outgoing sql {self.name!r} was closed (replaced by an edit, or deleted); get it "
                                f"again with self.outgoing.sql.get({self.name!r}) instead of keeping it")
        self._calls.refuse_on_loop(f"outgoing sql {self.name!r}: {what}",
                                   f"use `await self.outgoing.sql.get({self.name!r}).run(fn, *args)`, which runs "
                                   f"fn(session, *args) in a worker thread")

    def __repr__(self) -> str:
        return f"<SQLConnection {self.name!r} {self.settings.safe_url}{' closed' if self.closed else ''}>"


def _keep_echo_in_server_log(settings: EngineSettings, kwargs: Mapping[str, Any]) -> None:
    """ With `echo=True` SQLAlchemy adds its own handler printing to stdout unless the logger
    already has one; a NullHandler keeps its lines going only to the server's log (through the
    root logger), once. """
    pool_cls = kwargs.get("poolclass") or settings.url.get_dialect().get_pool_class(settings.url)
    loggers = [f"sqlalchemy.engine.Engine.{kwargs['logging_name']}",
               f"{pool_cls.__module__}.{pool_cls.__name__}.{kwargs['pool_logging_name']}"]
    for logger_name in loggers:
        target = logging.getLogger(logger_name)
        if not target.handlers:
            target.addHandler(logging.NullHandler())
