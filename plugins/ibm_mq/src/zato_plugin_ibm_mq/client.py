""" The MQ client library (IBM's `ibmmq`, else `pymqi`: the same API) and one connection to a
queue manager, owned by a thread of its own.

MQ's rule is that a connection handle belongs to the thread that opened it, and MQI calls block
(MQGET waits for a message), so every call of a `QueueManagerConnection` runs in its own owner
thread, one after the other; the trio side awaits each call without holding a trio worker thread.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

import trio

logger = logging.getLogger("zato.ibm_mq")  # the summary: server.log
mq_logger = logging.getLogger("zato.ibm_mq.mq")  # low-level details: logs/ibm-mq.log only

LIBRARIES = ("ibmmq", "pymqi")  # in order of preference

# Reasons after which the connection is gone: it is dropped, and the next call connects again
CONNECTION_REASONS = {
    2009: "MQRC_CONNECTION_BROKEN", 2059: "MQRC_Q_MGR_NOT_AVAILABLE", 2538: "MQRC_HOST_NOT_AVAILABLE",
    2161: "MQRC_Q_MGR_QUIESCING", 2162: "MQRC_Q_MGR_STOPPING", 2202: "MQRC_CONNECTION_QUIESCING",
    2203: "MQRC_CONNECTION_STOPPING", 2018: "MQRC_HCONN_ERROR", 2019: "MQRC_HOBJ_ERROR",
    2195: "MQRC_UNEXPECTED_ERROR",
}

# What to do about the reasons users meet first
_ADVICE = {
    2035: "the queue manager refused the user or the password (MQRC_NOT_AUTHORIZED): check the definition's "
          "username and password, and the channel's CHLAUTH and CONNAUTH rules",
    2058: "no queue manager of that name answers at that address (MQRC_Q_MGR_NAME_ERROR): check queue_manager",
    2059: "the queue manager is not available (MQRC_Q_MGR_NOT_AVAILABLE): is it running, and its listener?",
    2538: "nothing answers at that host and port (MQRC_HOST_NOT_AVAILABLE): check host, port and the listener",
    2540: "the queue manager has no such server-connection channel (MQRC_UNKNOWN_CHANNEL_NAME): check channel",
    2085: "the queue does not exist on that queue manager (MQRC_UNKNOWN_OBJECT_NAME): check the queue's name",
    2053: "the queue is full (MQRC_Q_FULL): consumers are behind, or its MAXDEPTH is too low",
    2009: "the connection to the queue manager broke (MQRC_CONNECTION_BROKEN); it is opened again",
}


class MQUnavailable(RuntimeError):
    """ Neither `ibmmq` nor `pymqi` can be loaded (usually: IBM's MQ client, libmqm, is missing). """


class MQError(Exception):
    """ An MQI call failed: `reason` is MQ's reason code, `reason_name` its MQRC_ name. """

    def __init__(self, message: str, reason: int | None = None, reason_name: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.reason_name = reason_name

    @property
    def connection_lost(self) -> bool:
        return self.reason in CONNECTION_REASONS


_library: Any = None
_library_error: str | None = None
_library_lock = threading.Lock()


def mq_library() -> Any:
    """ The MQ client module (`ibmmq`, else `pymqi`), imported once; `MQUnavailable` says what is
    missing and how to install it. """
    global _library, _library_error
    with _library_lock:
        if _library is not None:
            return _library
        if _library_error is not None:
            raise MQUnavailable(_library_error)
        problems = []
        for name in LIBRARIES:
            try:
                _library = importlib.import_module(name)
                logger.info("IBM MQ: using the %s client library %s", name, getattr(_library, "__version__", "?"))
                return _library
            except Exception as exc:  # ImportError, or OSError from a C library that does not load
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
        _library_error = (
            "IBM MQ connections are unavailable: no MQ client library could be loaded (" + "; ".join(problems) + "). "
            "Install IBM's MQ client (the redistributable client for Linux, which provides libmqm_r.so) and make it "
            "findable (e.g. LD_LIBRARY_PATH=/opt/mqm/lib64), then restart the server; `pip install ibmmq` brings the "
            "Python layer. The server runs without IBM MQ meanwhile.")
        raise MQUnavailable(_library_error)


def reset_library() -> None:
    """ Forgets the loaded library (tests switch between a stand-in and none). """
    global _library, _library_error
    with _library_lock:
        _library, _library_error = None, None
    with _outages_lock:
        _outages.clear()


def reason_name(mq: Any, reason: int) -> str:
    for name, value in vars(mq.CMQC).items():
        if name.startswith("MQRC_") and value == reason:
            return name
    return f"reason {reason}"


def as_mq_error(mq: Any, exc: Exception, what: str) -> MQError:
    """ `exc` (the library's MQMIError) as an MQError saying what failed, the reason code, its
    name and what to do. """
    reason = getattr(exc, "reason", None)
    if reason is None:
        return MQError(f"{what}: {type(exc).__name__}: {exc}")
    name = reason_name(mq, reason)
    advice = _ADVICE.get(reason)
    return MQError(f"{what}: MQ reason {reason} {name}" + (f": {advice}" if advice else ""), reason, name)


@dataclass(frozen=True)
class Endpoint:
    """ Where a definition's queue manager is and how to connect to it. """
    queue_manager: str
    channel: str
    host: str
    port: int
    username: str = ""
    password: str = ""
    ssl: bool = False
    ssl_cipher_spec: str = ""
    ssl_key_repository: str = ""

    @classmethod
    def of(cls, definition: dict[str, Any]) -> "Endpoint":
        return cls(definition["queue_manager"], definition["channel"], definition["host"], int(definition["port"]),
                   definition.get("username") or "", definition.get("password") or "", bool(definition.get("ssl")),
                   definition.get("ssl_cipher_spec") or "", definition.get("ssl_key_repository") or "")

    @property
    def conn_name(self) -> str:
        return f"{self.host}({self.port})"

    def __str__(self) -> str:
        return f"queue manager {self.queue_manager} at {self.conn_name} (channel {self.channel})"


_outages: set[tuple[str, Endpoint]] = set()
_outages_lock = threading.Lock()


class QueueManagerConnection:
    """ One connection to a queue manager. Every call runs in the owner thread, in order:
    `await conn.call(fn, *args)` from trio, `conn.call_blocking(fn, *args)` from another thread;
    `fn(qmgr, *args)` gets the connected `QueueManager` (connected on first use and after a
    connection-level failure). Calls after `close()` fail. """

    def __init__(self, endpoint: Endpoint, what: str) -> None:
        self.endpoint = endpoint
        self.what = what  # e.g. "channel_ibm_mq 'orders'": in every error and log line
        self.qmgr: Any = None
        self.queues: dict[tuple[str, int], Any] = {}  # (queue name, open options) -> Queue, open in this connection
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"ibm-mq {what}", daemon=True)
        self._thread.start()

    # ############################################################################################
    # The owner thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            job()
        self._disconnect()

    def connected(self) -> Any:
        """ In the owner thread: the connected QueueManager. """
        if self.qmgr is not None:
            return self.qmgr
        mq = mq_library()
        endpoint = self.endpoint
        cd = mq.CD()
        sco = None
        if endpoint.ssl:
            cd.SSLCipherSpec = endpoint.ssl_cipher_spec.encode()
            sco = mq.SCO()
            if endpoint.ssl_key_repository:
                sco.KeyRepository = endpoint.ssl_key_repository.encode()
        try:
            qmgr = mq.QueueManager(None)
            qmgr.connect_tcp_client(endpoint.queue_manager, cd, endpoint.channel, endpoint.conn_name,
                                    endpoint.username or None, endpoint.password or None, sco=sco)
        except mq.MQMIError as exc:
            error = as_mq_error(mq, exc, f"{self.what}: cannot connect to {endpoint}")
            if self._outage_begins():
                logger.error("%s", error)
            mq_logger.error("%s (connect: %s)", error, exc)
            raise error from None
        if self._outage_ends():
            logger.info("%s: connected to %s again", self.what, endpoint)
        mq_logger.info("%s: connected to %s as %r", self.what, endpoint, endpoint.username or "(no user)")
        self.qmgr = qmgr
        return qmgr

    # A channel's receiver is opened again after each failure, with a new connection: the outage
    # is kept per user of the connection and endpoint, so that server.log says once that it began
    # and once that it ended, not once per attempt
    @property
    def outage(self) -> bool:
        """ The last connect of this user of the endpoint failed (logged once until it works again). """
        with _outages_lock:
            return (self.what, self.endpoint) in _outages

    def _outage_begins(self) -> bool:
        with _outages_lock:
            began = (self.what, self.endpoint) not in _outages
            _outages.add((self.what, self.endpoint))
            return began

    def _outage_ends(self) -> bool:
        with _outages_lock:
            ended = (self.what, self.endpoint) in _outages
            _outages.discard((self.what, self.endpoint))
            return ended

    def open_queue(self, name: str, options: int) -> Any:
        """ In the owner thread: `name` open with `options`, kept open for later calls. """
        key = (name, options)
        found = self.queues.get(key)
        if found is None:
            mq = mq_library()
            found = self.queues[key] = mq.Queue(self.connected(), name, options)
            mq_logger.info("%s: opened queue %s (options %d)", self.what, name, options)
        return found

    def drop(self, reason: str) -> None:
        """ In the owner thread: forgets a connection that is gone (the next call connects again). """
        mq_logger.warning("%s: connection to %s dropped: %s", self.what, self.endpoint, reason)
        self.queues.clear()
        qmgr, self.qmgr = self.qmgr, None
        if qmgr is not None:
            try:
                qmgr.disconnect()
            except Exception:
                pass  # it is gone already

    def _disconnect(self) -> None:
        for queue_ in self.queues.values():
            try:
                queue_.close()
            except Exception:
                pass
        self.queues.clear()
        if self.qmgr is not None:
            try:
                self.qmgr.disconnect()
                mq_logger.info("%s: disconnected from %s", self.what, self.endpoint)
            except Exception as exc:
                mq_logger.warning("%s: disconnect from %s failed: %s", self.what, self.endpoint, exc)
            self.qmgr = None

    def _wrapped(self, fn: Callable[..., Any], args: tuple[Any, ...], what: str) -> Any:
        """ `fn(qmgr, *args)` in the owner thread; the library's errors as MQError, and a lost
        connection dropped. """
        mq = mq_library()
        try:
            return fn(self.connected(), *args)
        except mq.MQMIError as exc:
            error = as_mq_error(mq, exc, f"{self.what}: {what}")
            if error.connection_lost:
                self.drop(str(error))
            raise error from None

    # ############################################################################################
    # Calls

    async def call(self, fn: Callable[..., Any], *args: Any, what: str = "MQ call",
                   on_cancelled: Callable[[Any], None] | None = None) -> Any:
        """ Awaits `fn(qmgr, *args)` run in the owner thread. If the caller is cancelled while it
        runs, it runs to its end all the same and `on_cancelled(result)` runs after it, in the
        owner thread (a receiver backs out a message it got for nobody). """
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: dict[str, Any] = {}
        lock = threading.Lock()
        state = {"abandoned": False, "finished": False}

        def job() -> None:
            try:
                box["value"] = self._wrapped(fn, args, what)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                box["error"] = exc
            with lock:
                state["finished"] = True
                abandoned = state["abandoned"]
            if abandoned:
                self._undo(on_cancelled, box, what)
                return
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        self._submit(job)
        try:
            await done.wait()
        except BaseException:
            with lock:
                state["abandoned"] = True
                finished = state["finished"]
            if finished:  # it ended before the caller could take the result: undo it, in order
                self._submit(lambda: self._undo(on_cancelled, box, what))
            raise
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _undo(self, on_cancelled: Callable[[Any], None] | None, box: dict[str, Any], what: str) -> None:
        if on_cancelled is None or "value" not in box:
            return
        try:
            on_cancelled(box["value"])
        except Exception:
            mq_logger.exception("%s: undoing an abandoned %s failed", self.what, what)

    def call_blocking(self, fn: Callable[..., Any], *args: Any, what: str = "MQ call") -> Any:
        """ `fn(qmgr, *args)` run in the owner thread, from any other thread; blocks until done. """
        done = threading.Event()
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["value"] = self._wrapped(fn, args, what)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            done.set()

        self._submit(job)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def later(self, fn: Callable[["QueueManagerConnection"], None]) -> None:
        """ `fn(self)` in the owner thread after the calls already submitted; returns at once. """
        self._submit(lambda: fn(self))

    def _submit(self, job: Callable[[], None]) -> None:
        if self._closed:
            raise MQError(f"{self.what}: the connection is closed")
        self._jobs.put(job)

    def close(self) -> None:
        """ Disconnects after the calls already submitted (a normal MQDISC). Returns at once. """
        if not self._closed:
            self._closed = True
            self._jobs.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
