""" A stand-in for IBM MQ's C extension (`ibmmq.ibmmqc`) backed by in-process queue managers.

IBM's `ibmmq` package is a Python layer (QueueManager, Queue, MD, GMO, PMO, OD, CNO, CSP, MQMIError ...)
over a C extension, `ibmmq.ibmmqc`, that calls the MQ client library (libmqm_r). This module provides a
pure-Python replacement for that C extension: the same verbs (MQCONNX, MQOPEN, MQPUT, MQGET, MQCMIT ...)
taking and returning the same packed structures and (CompCode, Reason) tuples, answered by
`QueueManagerStandIn` objects living in this process. The real `ibmmq` Python layer runs unchanged on top,
so code written against `ibmmq` is tested through the same calls it makes against a real queue manager.

Typical use in a test::

    qm = QueueManagerStandIn('QM1', channels=['DEV.APP.SVRCONN'], listeners=['localhost(1414)'],
                             users={'app': 'passw0rd'}, dead_letter_queue='DEV.DEAD.LETTER.QUEUE')
    qm.define_queue('DEV.QUEUE.1', max_depth=100, backout_threshold=3, backout_queue='DEV.BACKOUT')
    ibmmq = install(qm)                     # `import ibmmq` now works and reaches QM1
    conn = ibmmq.connect('QM1', 'DEV.APP.SVRCONN', 'localhost(1414)', 'app', 'passw0rd')
    ...
    uninstall(qm)

What is emulated:

* Connections (MQCONN, MQCONNX): local bindings or client connections; the channel name, the connection
  name (`host(port)`, a comma-separated list is tried in order, or the MQSERVER variable) and the user and
  password in the MQCSP are checked against the stand-in's configuration. Handle sharing as on
  Multiplatforms: MQCNO_HANDLE_SHARE_NONE (MQCONN's default) binds a handle to the connecting thread,
  and one such handle per thread and queue manager; MQCNO_HANDLE_SHARE_BLOCK (which `ibmmq`'s
  connect_with_options adds unless told otherwise) serialises calls across threads; ..._NO_BLOCK fails a
  concurrent call with MQRC_CALL_IN_PROGRESS.
* Local queues with MAXDEPTH, MAXMSGL, DEFPRTY, DEFPSIST, BOTHRESH, BOQNAME, INHIBIT GET/PUT, readable
  through MQINQ (and INHIBIT GET/PUT settable through MQSET); the queue manager's name, dead-letter queue,
  command level and a few more attributes through MQINQ.
* MQPUT / MQPUT1 with MsgId generation, default / no / passed context, priority and persistence "as queue
  definition", expiry; MQGET with wait (blocking on a condition variable: any number of threads may put
  and get concurrently), matching by MsgId / CorrelId, priority-then-FIFO delivery, browse first / next,
  truncation (MQRC_TRUNCATED_MSG_FAILED / _ACCEPTED, as the `ibmmq` layer's automatic retry expects).
* Units of work per connection (MQPMO_SYNCPOINT, MQGMO_SYNCPOINT, MQGMO_SYNCPOINT_IF_PERSISTENT):
  uncommitted puts are invisible to getters, messages got under syncpoint are invisible to other getters;
  MQCMIT makes both final; MQBACK discards the puts and puts the got messages back at their original
  position with BackoutCount + 1. A normal MQDISC commits (as a real queue manager does); a broken
  connection (`stop()`, `break_connections()`) backs out.
* Restarts: `stop()` breaks every connection (every call on an existing handle, including an MQGET
  waiting for a message, fails with MQRC_CONNECTION_BROKEN) and refuses new connections with
  MQRC_Q_MGR_NOT_AVAILABLE until `start()`. Committed messages survive (in memory).

What is not emulated: TLS, channel exits, CCDTs, clustering, remote / alias / model queues, dynamic
queues, publish/subscribe (MQSUB, topics), message properties and message handles, asynchronous
consume (MQCB, MQCTL), XA transactions (MQBEGIN answers as a queue manager with no resource managers),
groups and segmentation, data conversion (MQGMO_CONVERT returns the message as it was put), report
messages, dead-letter queue processing (messages are never moved by the queue manager itself: as with a
real queue manager, honouring BOTHRESH / BOQNAME is the application's job), persistence on disk.
A client connection to a stopped queue manager fails with MQRC_Q_MGR_NOT_AVAILABLE (2059); a connection
name no stand-in listens on fails with MQRC_HOST_NOT_AVAILABLE (2538), as a real client does.
"""

from __future__ import annotations

import ctypes
import getpass
import importlib
import importlib.metadata
import itertools
import os
import struct
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = [
    'QueueManagerStandIn', 'StandInMessage', 'install', 'uninstall', 'installed', 'c_module',
]

# ################################################################################################################################
# Constants used before `ibmmq` can be imported (the Python layer reads them while it is being imported).

_STRUC_VERSIONS = {'cno': 8, 'csp': 3, 'sco': 7, 'cd': 13, 'gmo': 4, 'pmo': 3, 'od': 4, 'sts': 2, 'sd': 1}
_CMDLEVEL = 940
_MQCC_OK, _MQCC_WARNING, _MQCC_FAILED = 0, 1, 2

# ################################################################################################################################

def _ibmmq():
    """ The real `ibmmq` package, imported over the stand-in C module. """
    if 'ibmmq' not in sys.modules or sys.modules.get('ibmmq.ibmmqc') is not _C_MODULE:
        _put_c_module_in_place()
    return sys.modules['ibmmq']

def _text(value: bytes | str | None) -> str:
    """ An MQCHAR field as a str: up to the first NUL, trailing blanks removed. """
    if value is None:
        return ''
    if isinstance(value, str):
        return value.strip()
    return value.split(b'\0', 1)[0].decode('utf8', 'replace').strip()

def _blank(value: str, length: int) -> bytes:
    """ A str as an MQCHAR field of `length`, blank-padded as a queue manager returns it. """
    return value.encode('utf8')[:length].ljust(length, b' ')

def _ptr_field(obj: Any, name: str) -> bytes | None:
    """ Reads a string the `ibmmq` layer passed by pointer (its `_set_ptr_field` convention). """
    address = getattr(obj, name, 0)
    length = getattr(obj, '_' + name + 'Length', 0)
    if not address or length <= 0:
        return None
    return ctypes.string_at(address, length)

# ################################################################################################################################

class _MQIError(Exception):
    """ Raised inside the stand-in to end an MQI call with a completion and reason code. """
    def __init__(self, reason: int, comp: int = _MQCC_FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.comp = comp

# ################################################################################################################################

@dataclass(eq=False)
class _Message:
    """ One message on a local queue. `state` is 'available', 'put' (uncommitted put) or 'got' (got under
    syncpoint, not yet committed); `uow` is the connection whose unit of work holds it. """
    seq: int
    data: bytes
    md: Any
    put_at: float
    queue: Any = None
    state: str = 'available'
    uow: Any = None

    def sort_key(self) -> tuple[int, int]:
        return (-self.md.Priority, self.seq)

    def expired(self, now: float) -> bool:
        return self.md.Expiry > 0 and (now - self.put_at) * 10 >= self.md.Expiry

    def remaining_expiry(self, now: float) -> int:
        if self.md.Expiry <= 0:
            return self.md.Expiry
        return max(1, self.md.Expiry - int((now - self.put_at) * 10))


@dataclass(frozen=True)
class StandInMessage:
    """ A snapshot of a message on a stand-in queue: its body and its MQMD (an `ibmmq.MD`). """
    data: bytes
    md: Any
    committed: bool

    @property
    def msg_id(self) -> bytes:
        return self.md.MsgId

    @property
    def correl_id(self) -> bytes:
        return self.md.CorrelId

    @property
    def backout_count(self) -> int:
        return self.md.BackoutCount


@dataclass(eq=False)
class _LocalQueue:
    """ A local queue definition and its messages, in arrival order. """
    name: str
    max_depth: int
    max_msg_length: int
    default_priority: int
    default_persistence: int
    backout_threshold: int
    backout_queue: str
    description: str
    inhibit_get: bool = False
    inhibit_put: bool = False
    messages: list[_Message] = field(default_factory=list)
    open_input: int = 0
    open_output: int = 0
    exclusive_holder: Any = None


@dataclass(eq=False)
class _Handle:
    """ An open object (queue or the queue manager itself) under a connection. """
    hobj: int
    queue: _LocalQueue | None
    options: int
    browse_cursor: tuple[int, int] | None = None
    browse_message: _Message | None = None


@dataclass(eq=False)
class _Connection:
    """ A connection handle (Hconn) and its unit of work. """
    hconn: int
    qm: 'QueueManagerStandIn'
    thread_id: int
    sharing: str                        # 'none', 'block' or 'no_block'
    user: str
    appl_name: str
    is_client: bool
    broken: bool = False
    handles: dict[int, _Handle] = field(default_factory=dict)
    uow: list[_Message] = field(default_factory=list)
    call_lock: threading.Lock = field(default_factory=threading.Lock)

# ################################################################################################################################

_handle_numbers = itertools.count(0x1000001)
_msg_id_counter = itertools.count(time.time_ns() // 1000)
_seq_numbers = itertools.count(1)

class _Registry:
    """ The queue managers the stand-in C module serves and the connections to them. """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.queue_managers: dict[str, QueueManagerStandIn] = {}
        self.connections: dict[int, _Connection] = {}
        self.callback = None

    def find_by_name(self, name: str) -> 'QueueManagerStandIn | None':
        with self.lock:
            if name:
                return self.queue_managers.get(name)
            # The default queue manager: the first one installed.
            return next(iter(self.queue_managers.values()), None)

    def find_by_listener(self, host: str, port: int) -> 'QueueManagerStandIn | None':
        with self.lock:
            for qm in self.queue_managers.values():
                if (host, port) in qm._listeners:
                    return qm
        return None

_registry = _Registry()

# ################################################################################################################################

def _parse_conn_names(conn_name: str) -> list[tuple[str, int]]:
    """ 'host(port),host2(port2)' -> [(host, port), ...]; the port defaults to 1414 as in MQ. """
    out = []
    for item in conn_name.split(','):
        item = item.strip()
        if not item:
            continue
        if '(' in item and item.endswith(')'):
            host, port = item[:-1].split('(', 1)
            try:
                port_number = int(port.strip())
            except ValueError:
                continue
        else:
            host, port_number = item, 1414
        out.append((_normalise_host(host), port_number))
    return out

def _normalise_host(host: str) -> str:
    host = host.strip().lower()
    return 'localhost' if host in ('127.0.0.1', '::1', 'localhost') else host

# ################################################################################################################################

class QueueManagerStandIn:
    """ An in-process queue manager answering the stand-in C module's MQI calls.

    `name` is the queue manager name; `channels` the server-connection channels client connections may use;
    `listeners` the connection names (`host(port)`) it listens on (localhost and 127.0.0.1 are the same host);
    `users` a {user: password} mapping: when given, every connection (client or bindings) must present one
    of them in its MQCSP, else MQRC_NOT_AUTHORIZED; `dead_letter_queue` the DEADQ attribute (the queue is
    defined if it does not exist). Queues are defined with `define_queue`.
    """

    def __init__(self, name: str = 'QM1', *, channels: Iterable[str] = ('DEV.APP.SVRCONN',),
                 listeners: Iterable[str] = ('localhost(1414)',), users: dict[str, str] | None = None,
                 dead_letter_queue: str = '', description: str = '') -> None:
        if not name or len(name) > 48:
            raise ValueError(f'A queue manager name must be 1-48 characters, got {name!r}')
        self.name = name
        self.channels = {channel.strip() for channel in channels}
        self._listeners = set()
        for listener in listeners:
            parsed = _parse_conn_names(listener)
            if not parsed:
                raise ValueError(f'Listener {listener!r} of {name} is not of the form host(port)')
            self._listeners.update(parsed)
        self.users = dict(users or {})
        self.description = description
        self.dead_letter_queue = dead_letter_queue
        self.running = True
        self._cond = threading.Condition(threading.RLock())
        self._queues: dict[str, _LocalQueue] = {}
        if dead_letter_queue:
            self.define_queue(dead_letter_queue, max_depth=999999999)

    def __repr__(self) -> str:
        state = 'running' if self.running else 'stopped'
        return f'<QueueManagerStandIn {self.name} {state}, queues={sorted(self._queues)}>'

    # ----- administration --------------------------------------------------------------------------------------------------

    def define_queue(self, name: str, *, max_depth: int = 5000, max_msg_length: int = 4194304,
                     default_priority: int = 0, default_persistent: bool = False, backout_threshold: int = 0,
                     backout_queue: str = '', description: str = '', inhibit_get: bool = False,
                     inhibit_put: bool = False, replace: bool = False) -> None:
        """ Defines a local queue, like DEFINE QLOCAL(name) MAXDEPTH(..) BOTHRESH(..) BOQNAME(..).
        Redefining an existing queue needs replace=True, which keeps its messages (as REPLACE does). """
        if not name or len(name) > 48:
            raise ValueError(f'A queue name must be 1-48 characters, got {name!r}')
        persistence = 1 if default_persistent else 0
        with self._cond:
            existing = self._queues.get(name)
            if existing and not replace:
                raise ValueError(f'Queue {name} already exists on {self.name}; pass replace=True to redefine it')
            queue = _LocalQueue(name=name, max_depth=max_depth, max_msg_length=max_msg_length,
                                default_priority=default_priority, default_persistence=persistence,
                                backout_threshold=backout_threshold, backout_queue=backout_queue,
                                description=description, inhibit_get=inhibit_get, inhibit_put=inhibit_put)
            if existing:
                queue.messages = existing.messages
            self._queues[name] = queue

    def delete_queue(self, name: str) -> None:
        """ Deletes a queue and its messages (DELETE QLOCAL(name) PURGE). """
        with self._cond:
            self._queue(name)
            del self._queues[name]

    def queues(self) -> list[str]:
        with self._cond:
            return sorted(self._queues)

    def _queue(self, name: str) -> _LocalQueue:
        try:
            return self._queues[name]
        except KeyError:
            raise KeyError(f'No queue {name!r} on queue manager {self.name}; known: {sorted(self._queues)}') from None

    # ----- test helpers ---------------------------------------------------------------------------------------------------

    def put(self, queue: str, data: bytes | str, *, appl_name: str = 'StandIn', **md_fields: Any) -> Any:
        """ Puts a committed message on `queue` as another application would (default context, PutApplName
        `appl_name`, as MQ Explorer puts 'MQ Explorer 9.1.5'), MQMD fields given by name (CorrelId=b'..', Priority=5, Format=CMQC.MQFMT_STRING ...).
        Returns the message's MQMD (an `ibmmq.MD`, with its generated MsgId). Raises `ibmmq.MQMIError`
        as MQPUT would (MQRC_Q_FULL ...). """
        ibmmq = _ibmmq()
        if isinstance(data, str):
            data = data.encode('utf8')
            md_fields.setdefault('Format', ibmmq.CMQC.MQFMT_STRING)
            md_fields.setdefault('CodedCharSetId', 1208)
        md = ibmmq.MD(**md_fields)
        with self._cond:
            try:
                message = self._put_message(self._queue(queue), md, ibmmq.PMO(), data, None, appl_name,
                                            getpass.getuser())
            except _MQIError as e:
                raise ibmmq.MQMIError(e.comp, e.reason) from None
        return _copy_md(message.md)

    def messages(self, queue: str, *, include_uncommitted: bool = False) -> list[StandInMessage]:
        """ The messages on `queue` in delivery order (priority, then arrival), without removing them.
        Uncommitted puts and messages got under syncpoint are included only if asked for. """
        now = time.monotonic()
        with self._cond:
            q = self._queue(queue)
            out = []
            for message in sorted(q.messages, key=_Message.sort_key):
                committed = message.state == 'available'
                if message.expired(now) or not (committed or include_uncommitted):
                    continue
                out.append(StandInMessage(data=message.data, md=_copy_md(message.md), committed=committed))
            return out

    def depth(self, queue: str) -> int:
        """ CURDEPTH as a queue manager reports it: uncommitted puts and gets are counted. """
        now = time.monotonic()
        with self._cond:
            return sum(1 for message in self._queue(queue).messages if not message.expired(now))

    def clear(self, queue: str) -> None:
        """ Removes every message from `queue` (CLEAR QLOCAL). """
        with self._cond:
            self._queue(queue).messages.clear()

    def connection_count(self) -> int:
        """ How many connections are open to this queue manager. """
        with _registry.lock:
            return sum(1 for conn in _registry.connections.values() if conn.qm is self and not conn.broken)

    # ----- restarts -------------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """ Stops the queue manager (endmqm -i): every connection is broken and its unit of work backed out;
        calls on existing handles, also those waiting in MQGET, fail with MQRC_CONNECTION_BROKEN; new
        connections fail with MQRC_Q_MGR_NOT_AVAILABLE until `start()`. """
        with self._cond:
            self.running = False
        self.break_connections()

    def start(self) -> None:
        """ Starts the queue manager again (strmqm). Committed messages are still there. """
        with self._cond:
            self.running = True

    def break_connections(self) -> None:
        """ Breaks every connection as a network failure would, leaving the queue manager running: units of
        work are backed out, further calls on those handles fail with MQRC_CONNECTION_BROKEN. """
        with _registry.lock:
            connections = [conn for conn in _registry.connections.values() if conn.qm is self]
        with self._cond:
            for conn in connections:
                if not conn.broken:
                    conn.broken = True
                    self._end_uow(conn, commit=False)
                    self._close_all(conn)
            self._cond.notify_all()

    # ----- MQI, called with self._cond held -------------------------------------------------------------------------------

    def _end_uow(self, conn: _Connection, *, commit: bool) -> None:
        for message in conn.uow:
            queue = message.queue
            if message.state == 'put':
                if commit:
                    message.state = 'available'
                else:
                    queue.messages.remove(message)
            elif message.state == 'got':
                if commit:
                    queue.messages.remove(message)
                else:
                    message.state = 'available'
                    message.md.BackoutCount += 1
            message.uow = None
        conn.uow.clear()
        self._cond.notify_all()

    def _close_all(self, conn: _Connection) -> None:
        for handle in list(conn.handles.values()):
            self._release(conn, handle)
        conn.handles.clear()

    def _release(self, conn: _Connection, handle: _Handle) -> None:
        queue = handle.queue
        if queue is None:
            return
        if handle.options & _open_input_mask():
            queue.open_input -= 1
        if handle.options & _cmqc().MQOO_OUTPUT:
            queue.open_output -= 1
        if queue.exclusive_holder is handle:
            queue.exclusive_holder = None

    def _open(self, conn: _Connection, od: Any, options: int) -> _Handle:
        CMQC = _cmqc()
        if od.ObjectType == CMQC.MQOT_Q_MGR:
            name = _text(od.ObjectName)
            if name and name != self.name:
                raise _MQIError(CMQC.MQRC_UNKNOWN_OBJECT_NAME)
            if options & ~(CMQC.MQOO_INQUIRE | CMQC.MQOO_FAIL_IF_QUIESCING):
                raise _MQIError(CMQC.MQRC_OPTION_NOT_VALID_FOR_TYPE)
            od.ResolvedQMgrName = self.name.encode()
            return _Handle(hobj=next(_handle_numbers), queue=None, options=options)

        if od.ObjectType != CMQC.MQOT_Q:
            raise _MQIError(CMQC.MQRC_OBJECT_TYPE_ERROR)
        qm_name = _text(od.ObjectQMgrName)
        if qm_name and qm_name != self.name:
            raise _MQIError(CMQC.MQRC_UNKNOWN_REMOTE_Q_MGR)
        queue = self._queues.get(_text(od.ObjectName))
        if queue is None:
            raise _MQIError(CMQC.MQRC_UNKNOWN_OBJECT_NAME)

        input_options = options & (CMQC.MQOO_INPUT_AS_Q_DEF | CMQC.MQOO_INPUT_SHARED | CMQC.MQOO_INPUT_EXCLUSIVE)
        if input_options & (input_options - 1):
            raise _MQIError(CMQC.MQRC_OPTIONS_ERROR)
        if not options & (_open_input_mask() | CMQC.MQOO_BROWSE | CMQC.MQOO_OUTPUT | CMQC.MQOO_INQUIRE
                          | CMQC.MQOO_SET):
            raise _MQIError(CMQC.MQRC_OPTIONS_ERROR)

        handle = _Handle(hobj=next(_handle_numbers), queue=queue, options=options)
        if input_options:
            if queue.exclusive_holder is not None:
                raise _MQIError(CMQC.MQRC_OBJECT_IN_USE)
            if input_options & CMQC.MQOO_INPUT_EXCLUSIVE:
                if queue.open_input:
                    raise _MQIError(CMQC.MQRC_OBJECT_IN_USE)
                queue.exclusive_holder = handle
            queue.open_input += 1
        if options & CMQC.MQOO_OUTPUT:
            queue.open_output += 1
        od.ResolvedQName = queue.name.encode()
        od.ResolvedQMgrName = self.name.encode()
        return handle

    def _put_message(self, queue: _LocalQueue, md: Any, pmo: Any, data: bytes, conn: _Connection | None,
                     appl_name: str, user: str) -> _Message:
        CMQC = _cmqc()
        if queue.inhibit_put:
            raise _MQIError(CMQC.MQRC_PUT_INHIBITED)
        if len(data) > queue.max_msg_length:
            raise _MQIError(CMQC.MQRC_MSG_TOO_BIG_FOR_Q)
        if len(queue.messages) >= queue.max_depth:
            raise _MQIError(CMQC.MQRC_Q_FULL)
        if md.Priority < CMQC.MQPRI_PRIORITY_AS_Q_DEF:
            raise _MQIError(CMQC.MQRC_PRIORITY_ERROR)
        if md.Persistence not in (CMQC.MQPER_NOT_PERSISTENT, CMQC.MQPER_PERSISTENT, CMQC.MQPER_PERSISTENCE_AS_Q_DEF):
            raise _MQIError(CMQC.MQRC_PERSISTENCE_ERROR)
        if md.Expiry <= 0 and md.Expiry != CMQC.MQEI_UNLIMITED:
            raise _MQIError(CMQC.MQRC_EXPIRY_ERROR)
        options = pmo.Options
        if (options & CMQC.MQPMO_SYNCPOINT) and (options & CMQC.MQPMO_NO_SYNCPOINT):
            raise _MQIError(CMQC.MQRC_OPTIONS_ERROR)

        if options & CMQC.MQPMO_NEW_MSG_ID or md.MsgId.strip(b'\0') == b'':
            md.MsgId = _new_msg_id(self.name)
        if options & CMQC.MQPMO_NEW_CORREL_ID:
            md.CorrelId = _new_msg_id(self.name)
        _fill_context(md, options, appl_name, user)

        stored = _copy_md(md)
        warning = 0
        if stored.Priority == CMQC.MQPRI_PRIORITY_AS_Q_DEF:
            stored.Priority = queue.default_priority
        elif stored.Priority > 9:
            stored.Priority = 9
            warning = CMQC.MQRC_PRIORITY_EXCEEDS_MAXIMUM
        if stored.Persistence == CMQC.MQPER_PERSISTENCE_AS_Q_DEF:
            stored.Persistence = queue.default_persistence
        stored.BackoutCount = 0

        message = _Message(seq=next(_seq_numbers), data=bytes(data), md=stored, put_at=time.monotonic(), queue=queue)
        if conn is not None and options & CMQC.MQPMO_SYNCPOINT:
            message.state = 'put'
            message.uow = conn
            conn.uow.append(message)
        queue.messages.append(message)
        pmo.ResolvedQName = queue.name.encode()
        pmo.ResolvedQMgrName = self.name.encode()
        self._cond.notify_all()
        if warning:
            raise _MQIError(warning, _MQCC_WARNING)
        return message

    def _find(self, queue: _LocalQueue, md: Any, gmo: Any, handle: _Handle) -> _Message | None:
        CMQC = _cmqc()
        now = time.monotonic()
        expired = [m for m in queue.messages if m.state == 'available' and m.expired(now)]
        for message in expired:
            queue.messages.remove(message)

        match = gmo.MatchOptions
        msg_id = md.MsgId if match & CMQC.MQMO_MATCH_MSG_ID and md.MsgId.strip(b'\0') else None
        correl_id = md.CorrelId if match & CMQC.MQMO_MATCH_CORREL_ID and md.CorrelId.strip(b'\0') else None
        after = handle.browse_cursor if gmo.Options & CMQC.MQGMO_BROWSE_NEXT else None

        best = None
        for message in queue.messages:
            if message.state != 'available':
                continue
            if msg_id is not None and message.md.MsgId != msg_id:
                continue
            if correl_id is not None and message.md.CorrelId != correl_id:
                continue
            key = message.sort_key()
            if after is not None and key <= after:
                continue
            if best is None or key < best.sort_key():
                best = message
        return best

    def _get(self, conn: _Connection, handle: _Handle, md: Any, gmo: Any, length: int) -> tuple[bytes, int, int]:
        """ MQGET: returns (data, data_length, reason); `md` and `gmo` are updated in place. """
        CMQC = _cmqc()
        queue = handle.queue
        options = gmo.Options
        browse = options & (CMQC.MQGMO_BROWSE_FIRST | CMQC.MQGMO_BROWSE_NEXT | CMQC.MQGMO_BROWSE_MSG_UNDER_CURSOR)
        under_cursor = options & CMQC.MQGMO_MSG_UNDER_CURSOR
        if queue is None:
            raise _MQIError(CMQC.MQRC_NOT_OPEN_FOR_INPUT)
        if browse and not handle.options & CMQC.MQOO_BROWSE:
            raise _MQIError(CMQC.MQRC_NOT_OPEN_FOR_BROWSE)
        if not browse and not handle.options & _open_input_mask():
            raise _MQIError(CMQC.MQRC_NOT_OPEN_FOR_INPUT)
        if (options & CMQC.MQGMO_SYNCPOINT) and (options & CMQC.MQGMO_NO_SYNCPOINT):
            raise _MQIError(CMQC.MQRC_OPTIONS_ERROR)
        if length < 0:
            raise _MQIError(CMQC.MQRC_BUFFER_LENGTH_ERROR)
        if options & CMQC.MQGMO_BROWSE_FIRST:
            handle.browse_cursor = None

        wait = options & CMQC.MQGMO_WAIT
        if wait and gmo.WaitInterval < 0 and gmo.WaitInterval != CMQC.MQWI_UNLIMITED:
            raise _MQIError(CMQC.MQRC_WAIT_INTERVAL_ERROR)
        deadline = None
        if wait and gmo.WaitInterval != CMQC.MQWI_UNLIMITED:
            deadline = time.monotonic() + gmo.WaitInterval / 1000

        while True:
            if conn.broken:
                raise _MQIError(CMQC.MQRC_CONNECTION_BROKEN)
            if queue.inhibit_get:
                raise _MQIError(CMQC.MQRC_GET_INHIBITED)
            if queue.name not in self._queues or self._queues[queue.name] is not queue:
                raise _MQIError(CMQC.MQRC_Q_DELETED)
            if under_cursor:
                message = handle.browse_message
                if message is None or message.state != 'available' or message not in queue.messages:
                    raise _MQIError(CMQC.MQRC_NO_MSG_UNDER_CURSOR)
            else:
                message = self._find(queue, md, gmo, handle)
            if message is not None:
                break
            if not wait:
                raise _MQIError(CMQC.MQRC_NO_MSG_AVAILABLE)
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise _MQIError(CMQC.MQRC_NO_MSG_AVAILABLE)
            self._cond.wait(timeout)

        data_length = len(message.data)
        truncated = data_length > length
        reason = 0
        if truncated:
            if not options & CMQC.MQGMO_ACCEPT_TRUNCATED_MSG:
                _fill_md_for_get(md, message, time.monotonic())
                gmo.ResolvedQName = queue.name.encode()
                gmo.ReturnedLength = length
                return message.data[:length], data_length, CMQC.MQRC_TRUNCATED_MSG_FAILED
            reason = CMQC.MQRC_TRUNCATED_MSG_ACCEPTED

        _fill_md_for_get(md, message, time.monotonic())
        gmo.ResolvedQName = queue.name.encode()
        gmo.ReturnedLength = min(length, data_length)
        if browse:
            handle.browse_cursor = message.sort_key()
            handle.browse_message = message
        else:
            syncpoint = options & CMQC.MQGMO_SYNCPOINT or (
                options & CMQC.MQGMO_SYNCPOINT_IF_PERSISTENT and message.md.Persistence == CMQC.MQPER_PERSISTENT)
            if syncpoint:
                message.state = 'got'
                message.uow = conn
                conn.uow.append(message)
            else:
                queue.messages.remove(message)
            if handle.browse_message is message:
                handle.browse_message = None
        return message.data[:length], data_length, reason

    def _inquire(self, handle: _Handle, selectors: list[int]) -> tuple[list[int], bytes]:
        CMQC = _cmqc()
        from mqinq import get_attr_length  # The `ibmmq` layer's own table of attribute lengths.
        if handle.queue is not None and not handle.options & CMQC.MQOO_INQUIRE:
            raise _MQIError(CMQC.MQRC_NOT_OPEN_FOR_INQUIRE)
        values = self._queue_attrs(handle.queue) if handle.queue is not None else self._qm_attrs()
        int_attrs, char_attrs = [], b''
        for selector in selectors:
            if selector not in values:
                raise _MQIError(CMQC.MQRC_SELECTOR_ERROR)
            value = values[selector]
            if CMQC.MQIA_FIRST <= selector <= CMQC.MQIA_LAST:
                int_attrs.append(value)
            else:
                char_attrs += _blank(value, get_attr_length(selector))
        return int_attrs, char_attrs

    def _queue_attrs(self, queue: _LocalQueue) -> dict[int, Any]:
        CMQC = _cmqc()
        return {
            CMQC.MQCA_Q_NAME: queue.name,
            CMQC.MQCA_Q_DESC: queue.description,
            CMQC.MQCA_BACKOUT_REQ_Q_NAME: queue.backout_queue,
            CMQC.MQIA_Q_TYPE: CMQC.MQQT_LOCAL,
            CMQC.MQIA_MAX_Q_DEPTH: queue.max_depth,
            CMQC.MQIA_CURRENT_Q_DEPTH: len(queue.messages),
            CMQC.MQIA_MAX_MSG_LENGTH: queue.max_msg_length,
            CMQC.MQIA_BACKOUT_THRESHOLD: queue.backout_threshold,
            CMQC.MQIA_HARDEN_GET_BACKOUT: CMQC.MQQA_BACKOUT_HARDENED,
            CMQC.MQIA_DEF_PRIORITY: queue.default_priority,
            CMQC.MQIA_DEF_PERSISTENCE: queue.default_persistence,
            CMQC.MQIA_INHIBIT_GET: CMQC.MQQA_GET_INHIBITED if queue.inhibit_get else CMQC.MQQA_GET_ALLOWED,
            CMQC.MQIA_INHIBIT_PUT: CMQC.MQQA_PUT_INHIBITED if queue.inhibit_put else CMQC.MQQA_PUT_ALLOWED,
            CMQC.MQIA_OPEN_INPUT_COUNT: queue.open_input,
            CMQC.MQIA_OPEN_OUTPUT_COUNT: queue.open_output,
            CMQC.MQIA_SHAREABILITY: CMQC.MQQA_SHAREABLE,
            CMQC.MQIA_DEF_INPUT_OPEN_OPTION: CMQC.MQOO_INPUT_SHARED,
            CMQC.MQIA_MSG_DELIVERY_SEQUENCE: CMQC.MQMDS_PRIORITY,
            CMQC.MQIA_USAGE: CMQC.MQUS_NORMAL,
        }

    def _qm_attrs(self) -> dict[int, Any]:
        CMQC = _cmqc()
        return {
            CMQC.MQCA_Q_MGR_NAME: self.name,
            CMQC.MQCA_Q_MGR_DESC: self.description,
            CMQC.MQCA_DEAD_LETTER_Q_NAME: self.dead_letter_queue,
            CMQC.MQCA_Q_MGR_IDENTIFIER: f'{self.name}_{id(self):016x}',
            CMQC.MQIA_COMMAND_LEVEL: _CMDLEVEL,
            CMQC.MQIA_PLATFORM: CMQC.MQPL_UNIX,
            CMQC.MQIA_MAX_PRIORITY: 9,
            CMQC.MQIA_MAX_MSG_LENGTH: 4194304,
            CMQC.MQIA_SYNCPOINT: CMQC.MQSP_AVAILABLE,
            CMQC.MQIA_CODED_CHAR_SET_ID: 819,
        }

    def _set(self, handle: _Handle, selectors: list[int], int_attrs: list[int]) -> None:
        CMQC = _cmqc()
        if handle.queue is None or not handle.options & CMQC.MQOO_SET:
            raise _MQIError(CMQC.MQRC_NOT_OPEN_FOR_SET)
        settable = {CMQC.MQIA_INHIBIT_GET: 'inhibit_get', CMQC.MQIA_INHIBIT_PUT: 'inhibit_put'}
        if any(s not in settable for s in selectors) or len(int_attrs) != len(selectors):
            raise _MQIError(CMQC.MQRC_SELECTOR_ERROR)
        for selector, value in zip(selectors, int_attrs):
            setattr(handle.queue, settable[selector], value in (CMQC.MQQA_GET_INHIBITED, CMQC.MQQA_PUT_INHIBITED))
        self._cond.notify_all()

# ################################################################################################################################

def _cmqc():
    return _ibmmq().CMQC

def _open_input_mask() -> int:
    CMQC = _cmqc()
    return CMQC.MQOO_INPUT_AS_Q_DEF | CMQC.MQOO_INPUT_SHARED | CMQC.MQOO_INPUT_EXCLUSIVE

def _copy_md(md: Any) -> Any:
    return _ibmmq().MD().unpack(md.pack())

def _new_msg_id(qm_name: str) -> bytes:
    """ 24 bytes, unique in this process, shaped as MQ's: 'AMQ ' + queue manager name (12) + a counter. """
    return b'AMQ ' + qm_name.encode()[:12].ljust(12, b' ') + struct.pack('>Q', next(_msg_id_counter))

def _fill_context(md: Any, options: int, appl_name: str, user: str) -> None:
    """ Context fields as a queue manager sets them for MQPMO_DEFAULT_CONTEXT / MQPMO_NO_CONTEXT;
    MQPMO_SET_*_CONTEXT and MQPMO_PASS_*_CONTEXT keep what the application gave. """
    CMQC = _cmqc()
    if options & (CMQC.MQPMO_SET_ALL_CONTEXT | CMQC.MQPMO_PASS_ALL_CONTEXT):
        return
    if options & CMQC.MQPMO_NO_CONTEXT:
        md.UserIdentifier = md.AccountingToken = md.ApplIdentityData = b''
        md.PutApplType = CMQC.MQAT_NO_CONTEXT
        md.PutApplName = md.PutDate = md.PutTime = md.ApplOriginData = b''
        return
    if not options & (CMQC.MQPMO_SET_IDENTITY_CONTEXT | CMQC.MQPMO_PASS_IDENTITY_CONTEXT):
        md.UserIdentifier = _blank(user, 12)
        md.AccountingToken = b'\x16' + b'\0' * 30 + b'\xff'
        md.ApplIdentityData = b' ' * 32
    now = time.time()
    stamp = time.gmtime(now)
    md.PutApplType = CMQC.MQAT_UNIX
    md.PutApplName = _blank(appl_name[-28:], 28)
    md.PutDate = time.strftime('%Y%m%d', stamp).encode()
    md.PutTime = (time.strftime('%H%M%S', stamp) + f'{int(now * 100) % 100:02d}').encode()
    md.ApplOriginData = b'    '

def _fill_md_for_get(md: Any, message: _Message, now: float) -> None:
    """ The MQMD MQGET returns: the stored message's, with the remaining expiry. """
    md.unpack(message.md.pack())
    md.Expiry = message.remaining_expiry(now)

def _default_appl_name() -> str:
    return os.path.basename(sys.argv[0] or sys.executable) or 'python'

# ################################################################################################################################
# The verbs of the C module. Each returns the tuple the C extension returns; see the `ibmmq` layer's callers.

def _connection(hconn: int) -> _Connection:
    CMQC = _cmqc()
    with _registry.lock:
        conn = _registry.connections.get(hconn)
    if conn is None:
        raise _MQIError(CMQC.MQRC_HCONN_ERROR)
    if conn.broken:
        raise _MQIError(CMQC.MQRC_CONNECTION_BROKEN)
    if conn.sharing == 'none' and conn.thread_id != threading.get_ident():
        raise _MQIError(CMQC.MQRC_HCONN_ERROR)
    return conn

class _Call:
    """ Enters an MQI call on a connection: thread checks, serialisation of shared handles. """

    def __init__(self, hconn: int) -> None:
        self.conn = _connection(hconn)
        self.locked = False

    def __enter__(self) -> _Connection:
        conn = self.conn
        if conn.sharing == 'no_block':
            if not conn.call_lock.acquire(blocking=False):
                raise _MQIError(_cmqc().MQRC_CALL_IN_PROGRESS)
        else:
            conn.call_lock.acquire()
        if conn.broken:
            conn.call_lock.release()
            raise _MQIError(_cmqc().MQRC_CONNECTION_BROKEN)
        self.locked = True
        return conn

    def __exit__(self, *exc_info: Any) -> None:
        if self.locked:
            self.conn.call_lock.release()

def _mqi(fallback_head: tuple):
    """ Turns a _MQIError into the C module's (..., CompCode, Reason) tail, `fallback_head` before it. """
    def decorator(func):
        def wrapper(*args):
            try:
                return func(*args)
            except _MQIError as e:
                return fallback_head + (e.comp, e.reason)
        wrapper.__name__ = func.__name__
        wrapper.__doc__ = func.__doc__
        return wrapper
    return decorator

@_mqi((0,))
def MQCONN(name):
    """ MQCONN(QMgrName) -> (Hconn, CompCode, Reason). A local bindings connection, not shared. """
    return _connect(name, None, None, None)

@_mqi((0,))
def MQCONNX(name, cno, cd, csp, sco=None, bno=None):
    """ MQCONNX(QMgrName, MQCNO, MQCD, MQCSP, MQSCO, MQBNO) -> (Hconn, CompCode, Reason). """
    return _connect(name, cno, cd, csp)

def _connect(name, cno_bytes, cd_bytes, csp_bytes):
    ibmmq = _ibmmq()
    CMQC = ibmmq.CMQC
    name = _text(name)
    options = 0
    appl_name = _default_appl_name()
    if cno_bytes:
        cno = ibmmq.CNO().unpack(cno_bytes)
        options = cno.Options
        if _text(getattr(cno, 'ApplName', b'')):
            appl_name = _text(cno.ApplName)
    share = options & (CMQC.MQCNO_HANDLE_SHARE_NONE | CMQC.MQCNO_HANDLE_SHARE_BLOCK | CMQC.MQCNO_HANDLE_SHARE_NO_BLOCK)
    if share & (share - 1):
        raise _MQIError(CMQC.MQRC_OPTIONS_ERROR)
    sharing = {CMQC.MQCNO_HANDLE_SHARE_BLOCK: 'block', CMQC.MQCNO_HANDLE_SHARE_NO_BLOCK: 'no_block'}.get(share, 'none')

    channel = conn_name = None
    if cd_bytes:
        cd = ibmmq.CD().unpack(cd_bytes)
        channel, conn_name = _text(cd.ChannelName), _text(cd.ConnectionName)
    elif options & CMQC.MQCNO_CLIENT_BINDING or os.environ.get('MQSERVER'):
        server = os.environ.get('MQSERVER', '')
        parts = server.split('/')
        if len(parts) != 3:
            raise _MQIError(CMQC.MQRC_Q_MGR_NAME_ERROR)
        channel, conn_name = parts[0].strip(), parts[2].strip()

    if channel is None:
        qm = _registry.find_by_name(name)
        if qm is None:
            raise _MQIError(CMQC.MQRC_Q_MGR_NAME_ERROR)
    else:
        qm = None
        for host, port in _parse_conn_names(conn_name or ''):
            qm = _registry.find_by_listener(host, port)
            if qm is not None:
                break
        if qm is None:
            raise _MQIError(CMQC.MQRC_HOST_NOT_AVAILABLE)
        if name not in ('', '*') and name.lstrip('*') != qm.name:
            raise _MQIError(CMQC.MQRC_Q_MGR_NAME_ERROR)

    if not qm.running:
        raise _MQIError(CMQC.MQRC_Q_MGR_NOT_AVAILABLE)
    if channel is not None and channel not in qm.channels:
        raise _MQIError(CMQC.MQRC_UNKNOWN_CHANNEL_NAME)

    user = password = None
    if csp_bytes:
        csp = ibmmq.CSP().unpack(csp_bytes)
        if csp.AuthenticationType == CMQC.MQCSP_AUTH_USER_ID_AND_PWD:
            raw_user, raw_password = _ptr_field(csp, 'CSPUserId'), _ptr_field(csp, 'CSPPassword')
            user = raw_user.decode('utf8') if raw_user is not None else ''
            password = raw_password.decode('utf8') if raw_password is not None else ''
        elif csp.AuthenticationType != CMQC.MQCSP_AUTH_NONE:
            raise _MQIError(CMQC.MQRC_NOT_AUTHORIZED)
    if qm.users:
        if user is None or qm.users.get(user) != password:
            raise _MQIError(CMQC.MQRC_NOT_AUTHORIZED)

    thread_id = threading.get_ident()
    with _registry.lock:
        if sharing == 'none':
            for conn in _registry.connections.values():
                if (conn.qm is qm and conn.sharing == 'none' and conn.thread_id == thread_id
                        and not conn.broken):
                    return (conn.hconn, _MQCC_WARNING, CMQC.MQRC_ALREADY_CONNECTED)
        conn = _Connection(hconn=next(_handle_numbers), qm=qm, thread_id=thread_id, sharing=sharing,
                           user=user or getpass.getuser(), appl_name=appl_name, is_client=channel is not None)
        _registry.connections[conn.hconn] = conn
    return (conn.hconn, _MQCC_OK, 0)

@_mqi(())
def MQDISC(hconn):
    """ MQDISC(Hconn) -> (CompCode, Reason). Commits the unit of work, closes every object. """
    with _registry.lock:
        conn = _registry.connections.get(hconn)
        if conn is not None and conn.broken:
            # The `ibmmq` layer forgets the handle on MQRC_CONNECTION_BROKEN; so does the stand-in.
            del _registry.connections[hconn]
            raise _MQIError(_cmqc().MQRC_CONNECTION_BROKEN)
    with _Call(hconn) as conn:
        with conn.qm._cond:
            conn.qm._end_uow(conn, commit=True)
            conn.qm._close_all(conn)
        with _registry.lock:
            _registry.connections.pop(conn.hconn, None)
    return (_MQCC_OK, 0)

@_mqi((0, b''))
def MQOPEN(hconn, od_bytes, options):
    """ MQOPEN(Hconn, MQOD, Options) -> (Hobj, MQOD, CompCode, Reason). """
    with _Call(hconn) as conn:
        od = _ibmmq().OD().unpack(od_bytes)
        with conn.qm._cond:
            handle = conn.qm._open(conn, od, options)
            conn.handles[handle.hobj] = handle
        return (handle.hobj, od.pack(), _MQCC_OK, 0)

@_mqi(())
def MQCLOSE(hconn, hobj, options):
    """ MQCLOSE(Hconn, Hobj, Options) -> (CompCode, Reason). """
    with _Call(hconn) as conn:
        with conn.qm._cond:
            handle = conn.handles.pop(hobj, None)
            if handle is None:
                raise _MQIError(_cmqc().MQRC_HOBJ_ERROR)
            conn.qm._release(conn, handle)
    return (_MQCC_OK, 0)

def _handle(conn: _Connection, hobj: int) -> _Handle:
    handle = conn.handles.get(hobj)
    if handle is None:
        raise _MQIError(_cmqc().MQRC_HOBJ_ERROR)
    return handle

@_mqi((b'', b''))
def MQPUT(hconn, hobj, md_bytes, pmo_bytes, msg):
    """ MQPUT(Hconn, Hobj, MQMD, MQPMO, Buffer) -> (MQMD, MQPMO, CompCode, Reason). """
    ibmmq = _ibmmq()
    with _Call(hconn) as conn:
        md, pmo = ibmmq.MD().unpack(md_bytes), ibmmq.PMO().unpack(pmo_bytes)
        with conn.qm._cond:
            handle = _handle(conn, hobj)
            if handle.queue is None or not handle.options & ibmmq.CMQC.MQOO_OUTPUT:
                raise _MQIError(ibmmq.CMQC.MQRC_NOT_OPEN_FOR_OUTPUT)
            if conn.qm._queues.get(handle.queue.name) is not handle.queue:
                raise _MQIError(ibmmq.CMQC.MQRC_Q_DELETED)
            return _put_and_pack(conn, handle.queue, md, pmo, msg)

def _put_and_pack(conn, queue, md, pmo, msg):
    try:
        conn.qm._put_message(queue, md, pmo, msg or b'', conn, conn.appl_name, conn.user)
    except _MQIError as e:
        if e.comp != _MQCC_WARNING:
            raise
        return (md.pack(), pmo.pack(), e.comp, e.reason)
    return (md.pack(), pmo.pack(), _MQCC_OK, 0)

@_mqi((b'', b''))
def MQPUT1(hconn, od_bytes, md_bytes, pmo_bytes, msg):
    """ MQPUT1(Hconn, MQOD, MQMD, MQPMO, Buffer) -> (MQMD, MQPMO, CompCode, Reason). """
    ibmmq = _ibmmq()
    with _Call(hconn) as conn:
        od = ibmmq.OD().unpack(od_bytes)
        md, pmo = ibmmq.MD().unpack(md_bytes), ibmmq.PMO().unpack(pmo_bytes)
        with conn.qm._cond:
            handle = conn.qm._open(conn, od, ibmmq.CMQC.MQOO_OUTPUT)
            try:
                return _put_and_pack(conn, handle.queue, md, pmo, msg)
            finally:
                conn.qm._release(conn, handle)

@_mqi((b'', b'', b'', 0))
def MQGET(hconn, hobj, md_bytes, gmo_bytes, length):
    """ MQGET(Hconn, Hobj, MQMD, MQGMO, BufferLength) -> (Buffer, MQMD, MQGMO, DataLength, CompCode, Reason). """
    ibmmq = _ibmmq()
    with _Call(hconn) as conn:
        md, gmo = ibmmq.MD().unpack(md_bytes), ibmmq.GMO().unpack(gmo_bytes)
        with conn.qm._cond:
            handle = _handle(conn, hobj)
            data, data_length, reason = conn.qm._get(conn, handle, md, gmo, length)
        comp = _MQCC_WARNING if reason else _MQCC_OK
        return (data, md.pack(), gmo.pack(), data_length, comp, reason)

@_mqi(())
def MQCMIT(hconn):
    """ MQCMIT(Hconn) -> (CompCode, Reason). """
    with _Call(hconn) as conn:
        with conn.qm._cond:
            conn.qm._end_uow(conn, commit=True)
    return (_MQCC_OK, 0)

@_mqi(())
def MQBACK(hconn):
    """ MQBACK(Hconn) -> (CompCode, Reason). """
    with _Call(hconn) as conn:
        with conn.qm._cond:
            conn.qm._end_uow(conn, commit=False)
    return (_MQCC_OK, 0)

@_mqi(())
def MQBEGIN(hconn):
    """ MQBEGIN(Hconn) -> (CompCode, Reason): no XA resource managers here. """
    CMQC = _cmqc()
    with _Call(hconn) as conn:
        if conn.is_client:
            raise _MQIError(CMQC.MQRC_ENVIRONMENT_ERROR)
        if conn.sharing != 'none':
            raise _MQIError(CMQC.MQRC_HCONN_ERROR)
    return (_MQCC_WARNING, CMQC.MQRC_NO_EXTERNAL_PARTICIPANTS)

@_mqi(([], b''))
def MQINQ(hconn, hobj, selectors, int_attrs, int_count=0, char_count=0, char_length=0):
    """ MQINQ(Hconn, Hobj, Selectors, IntAttrs, IntAttrCount, CharAttrCount, CharAttrLength)
    -> (IntAttrs, CharAttrs, CompCode, Reason). """
    with _Call(hconn) as conn:
        with conn.qm._cond:
            ints, chars = conn.qm._inquire(_handle(conn, hobj), list(selectors))
    return (ints, chars, _MQCC_OK, 0)

@_mqi(())
def MQSET(hconn, hobj, selectors, int_attrs, char_attrs):
    """ MQSET(Hconn, Hobj, Selectors, IntAttrs, CharAttrs) -> (CompCode, Reason). """
    with _Call(hconn) as conn:
        with conn.qm._cond:
            conn.qm._set(_handle(conn, hobj), list(selectors), list(int_attrs))
    return (_MQCC_OK, 0)

@_mqi((b'',))
def MQSTAT(hconn, status_type, sts_bytes):
    """ MQSTAT(Hconn, Type, MQSTS) -> (MQSTS, CompCode, Reason): nothing asynchronous to report. """
    with _Call(hconn):
        pass
    return (sts_bytes, _MQCC_OK, 0)

def MQLOGCF(level, filename=None):
    """ Native trace configuration: nothing to configure here. """
    return None

def MQCBINIT(callback):
    """ Receives the `ibmmq` layer's callback proxy; asynchronous consume is not emulated. """
    _registry.callback = callback

def _not_supported(head: tuple, verb: str):
    def func(*args):
        return head + (_MQCC_FAILED, 2298)    # MQRC_FUNCTION_NOT_SUPPORTED
    func.__name__ = verb
    func.__doc__ = f'{verb} is not emulated by the stand-in: it fails with MQRC_FUNCTION_NOT_SUPPORTED.'
    return func

_UNSUPPORTED = {
    'MQCB': (), 'MQCTL': (), 'MQSUB': (b'', 0), 'MQSUBRQ': (b'',), 'MQCRTMH': (0,), 'MQDLTMH': (),
    'MQSETMP': (), 'MQDLTMP': (), 'MQINQMP': (None, 0, b''),
}

# ################################################################################################################################

def _build_c_module() -> types.ModuleType:
    module = types.ModuleType('ibmmq.ibmmqc', 'Stand-in for IBM MQ\'s C extension; see ' + __name__ + '.')
    module.__file__ = __file__
    try:
        # `ibmmq` refuses a C module whose version differs from its own.
        module.__version__ = importlib.metadata.version('ibmmq')
    except importlib.metadata.PackageNotFoundError:
        module.__version__ = '0'
    module.__cmdlevel__ = _CMDLEVEL
    module.__mqbuild__ = 'standin'
    module.__strucversions__ = dict(_STRUC_VERSIONS)
    module.__standin__ = True
    for verb in (MQCONN, MQCONNX, MQDISC, MQOPEN, MQCLOSE, MQPUT, MQPUT1, MQGET, MQCMIT, MQBACK, MQBEGIN,
                 MQINQ, MQSET, MQSTAT, MQLOGCF, MQCBINIT):
        setattr(module, verb.__name__, verb)
    for verb, head in _UNSUPPORTED.items():
        setattr(module, verb, _not_supported(head, verb))
    return module

_C_MODULE = _build_c_module()

def c_module() -> types.ModuleType:
    """ The stand-in C module (what `ibmmq.ibmmqc` is once installed). """
    return _C_MODULE

def _put_c_module_in_place() -> None:
    """ Makes `import ibmmq` use the stand-in C module, also if `ibmmq` was imported before. """
    sys.modules['ibmmq.ibmmqc'] = _C_MODULE
    ibmmq = sys.modules.get('ibmmq')
    if ibmmq is None:
        ibmmq = importlib.import_module('ibmmq')
    # Re-point every module of the `ibmmq` layer that holds a reference to another C module.
    package_dir = os.path.dirname(ibmmq.__file__)
    for module in list(sys.modules.values()):
        module_file = getattr(module, '__file__', None) or ''
        if os.path.dirname(module_file) == package_dir and getattr(module, 'ibmmqc', _C_MODULE) is not _C_MODULE:
            module.ibmmqc = _C_MODULE
    ibmmq.ibmmqc = _C_MODULE

# ################################################################################################################################

def install(*queue_managers: QueueManagerStandIn) -> types.ModuleType:
    """ Makes `import ibmmq` work in this process over the stand-in C module, registers `queue_managers`
    (the first one ever registered is the default queue manager for an empty name) and returns the
    `ibmmq` module. Installing the same stand-in twice is harmless; two different stand-ins with one name,
    or listening on one connection name, are an error. """
    with _registry.lock:
        for qm in queue_managers:
            existing = _registry.queue_managers.get(qm.name)
            if existing is not None and existing is not qm:
                raise ValueError(f'Another stand-in queue manager named {qm.name} is installed; uninstall it first')
            for other in _registry.queue_managers.values():
                if other is not qm and other._listeners & qm._listeners:
                    raise ValueError(f'Queue managers {other.name} and {qm.name} both listen on '
                                     f'{sorted(other._listeners & qm._listeners)}; give them different listeners')
        for qm in queue_managers:
            _registry.queue_managers[qm.name] = qm
    return _ibmmq()

def uninstall(*queue_managers: QueueManagerStandIn) -> None:
    """ Breaks the connections to `queue_managers` and stops serving them. `ibmmq` stays importable. """
    for qm in queue_managers:
        qm.break_connections()
        with _registry.lock:
            if _registry.queue_managers.get(qm.name) is qm:
                del _registry.queue_managers[qm.name]
            for hconn in [h for h, conn in _registry.connections.items() if conn.qm is qm]:
                del _registry.connections[hconn]

class installed:
    """ `with installed(qm) as ibmmq:` - `install` on entry, `uninstall` on exit. """

    def __init__(self, *queue_managers: QueueManagerStandIn) -> None:
        self.queue_managers = queue_managers

    def __enter__(self) -> types.ModuleType:
        return install(*self.queue_managers)

    def __exit__(self, *exc_info: Any) -> None:
        uninstall(*self.queue_managers)
