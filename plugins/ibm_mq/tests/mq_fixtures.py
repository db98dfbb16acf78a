""" What the plugin's tests share: a stand-in queue manager under the real `ibmmq` layer, a
server directory with the plugin switched on, the article's objects and helpers. """

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import trio

from zato.plugin_api import admin_auth, create_test_server_dir
from zato_plugin_ibm_mq.client import reset_library
from zato_plugin_ibm_mq.testing import QueueManagerStandIn, installed

API = "/zato/api"
USER, PASSWORD = "app", "passw0rd"
QUEUES = ("DEV.QUEUE.1", "DEV.QUEUE.2", "DEV.QUEUE.3")
BACKOUT_QUEUE = "DEV.BACKOUT.Q"
DEAD_LETTER_QUEUE = "DEV.DEAD.LETTER.QUEUE"

# The article's services (../shared/seeds/004, the last article) as published; its text lost what
# stood inside links and the start of some lines, filled minimally and marked `# filled:`.
ARTICLE_SERVICES = '''
# -*- coding: utf-8 -*-

# Zato
from zato.server.service import Service

class APIMQChannel(Service):
    """ Receives messages from IBM MQ queues.
    """ # filled: the docstring's end
    name = 'api.mq.channel' # filled: the name

    def handle(self):

        # Our handle method is invoked for each message taken off a queue
        # and we can access the message as below.

        # Here is the business data received
        data = self.request.ibm_mq.data # filled: the right-hand side

        # Here is how you can access lower-level details,
        # such as MQMD or CorrelId.
        mqmd = self.request.ibm_mq.mqmd
        correl_id = self.request.ibm_mq.correlation_id

        # Let's log the message and some of its details
        self.logger.info('Data: %s', data) # filled: the line breaks and `self.logger.info(`
        self.logger.info('Sent by: %s', mqmd.PutApplName)
        self.logger.info('CorrelId: %s', correl_id)

class APIMQProducer(Service):
    """ Sends messages to IBM MQ queues.
    """ # filled: the docstring's end
    name = 'api.mq.producer' # filled: the name

    def handle(self):

        # Message to send as received on input,
        # without any transformations or deserialisation,
        # hence it is considered 'raw'.
        msg = self.request.raw_request

        # Outgoing connection to use
        conn = 'My MQ Connection'

        # Queue to send the message to
        queue = 'DEV.QUEUE.2'

        # Send the message
        self.outgoing.ibm_mq.send(msg, conn, queue)

        # And that's it, the message is already sent!
'''


def make_queue_manager(**options: Any) -> QueueManagerStandIn:
    """ QM1 as the article configures it: localhost(1414), channel DEV.APP.SVRCONN, user app. """
    qm = QueueManagerStandIn("QM1", channels=["DEV.APP.SVRCONN"], listeners=["localhost(1414)"],
                             users={USER: PASSWORD}, dead_letter_queue=DEAD_LETTER_QUEUE, **options)
    for name in QUEUES:
        qm.define_queue(name, backout_threshold=3, backout_queue=BACKOUT_QUEUE)
    qm.define_queue(BACKOUT_QUEUE)
    return qm


class StandIn:
    """ A context manager: the stand-in installed for this process, the client library reloaded. """

    def __init__(self, qm: QueueManagerStandIn) -> None:
        self.qm = qm
        self._installed = installed(qm)

    def __enter__(self) -> QueueManagerStandIn:
        self._installed.__enter__()
        reset_library()
        return self.qm

    def __exit__(self, *exc: Any) -> None:
        reset_library()
        self._installed.__exit__(*exc)


def mq_server_dir(base: Path, **config: Any) -> Path:
    """ A server with the plugin switched on as the article says: [component_enabled] ibm_mq = True. """
    return create_test_server_dir(base, main={"graceful_timeout": 2}, component_enabled={"ibm_mq": True}, **config)


DEFINITION = {"name": "QM1 dev", "host": "localhost", "port": 1414, "queue_manager": "QM1",
              "channel": "DEV.APP.SVRCONN", "username": USER, "password": PASSWORD}


def admin_client(server: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                             headers={"content-type": "application/json"})


async def create(client: httpx.AsyncClient, object_type: str, **data: Any) -> dict[str, Any]:
    """ Creates an object through the admin API; a password is set with its own call, as in Zato. """
    password = data.pop("password", None)
    reply = await client.post(f"{API}/objects/{object_type}", json=data)
    assert reply.status_code == 201, reply.text
    if password is not None:
        name = quote(data["name"], safe="")
        secret = await client.put(f"{API}/objects/{object_type}/{name}/secrets/password", json={"value": password})
        assert secret.status_code in (200, 204), secret.text
    return reply.json()


async def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    with trio.fail_after(timeout):
        while True:
            value = predicate()
            if value:
                return value
            await trio.sleep(0.02)


async def listener_state(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    states = (await client.get(f"{API}/listeners")).json()["listeners"]
    return next(state for state in states if state["name"] == name)


# Services that record what they were given, one JSON line each in a file the test reads
# (`recording_services`, `recorded`): two servers in one process may append to the same file
RECORDING_SERVICES = '''
import json
import os
import time

from zato.server.service import Service

RECORD = {record!r}
SERVER = {server_name!r}
DELAY = {delay!r}
HOLD = {hold!r}


def record(request):
    mq = request.ibm_mq
    line = json.dumps({{"server": SERVER, "data": mq.data if isinstance(mq.data, str) else mq.data.decode("latin-1"),
                       "msg_id": mq.msg_id.hex(), "correlation_id": mq.correlation_id.hex(), "queue": mq.queue,
                       "backout_count": mq.backout_count, "put_appl_name": mq.mqmd.PutApplName.decode().strip()}})
    with open(RECORD, "a", encoding="utf-8") as f:
        f.write(line + "\\n")


class Record(Service):
    name = "mq.record"

    def handle(self):
        record(self.request)


class Slow(Service):
    name = "mq.slow"

    def handle(self):
        time.sleep(DELAY)
        record(self.request)


class Fail(Service):
    name = "mq.fail"

    def handle(self):
        record(self.request)
        raise ValueError("mq.fail fails on purpose")


class Hold(Service):
    """ Records each message; on HOLD's first delivery waits (up to 5 s) for the file `release`
    next to RECORD and fails: the message is in hand while the test stops the queue manager. """
    name = "mq.hold"

    def handle(self):
        mq = self.request.ibm_mq
        if mq.data == HOLD and mq.backout_count == 0:
            folder = os.path.dirname(RECORD)
            open(os.path.join(folder, "holding"), "w").close()
            deadline = time.monotonic() + 5
            while not os.path.exists(os.path.join(folder, "release")) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise RuntimeError("the queue manager went away while this message was in hand")
        record(self.request)


class Send(Service):
    """ Puts {{"queue", "data", ...}} through the outgoing connection 'out' (or "conn"). """
    name = "mq.send"

    def handle(self):
        given = dict(self.request.payload)
        conn = given.pop("conn", "out")
        msg_id = self.outgoing.ibm_mq.send(given.pop("data"), conn, given.pop("queue"), **given)
        self.response.payload = {{"msg_id": msg_id.hex() if msg_id else None}}
'''


def recording_services(base: Path, record: Path, server_name: str = "server", delay: float = 0.0,
                       hold: str = "m-0050") -> Path:
    """ Writes the recording services into `base`'s pickup folder; returns `record`, their file. """
    (base / "pickup" / "mq_recording.py").write_text(RECORDING_SERVICES.format(
        record=str(record), server_name=server_name, delay=delay, hold=hold))
    return record


def recorded(record: Path) -> list[dict[str, Any]]:
    """ What the recording services recorded, in order. """
    import json
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line.strip()]


class no_mq_library:
    """ A context manager: this process as one without IBM's MQ client (libmqm_r.so), whatever
    the tests before imported: the `ibmmq` layer is taken out of sys.modules (so `import ibmmq`
    runs again, and fails on its C extension) and put back after, the client library reloaded. """

    @staticmethod
    def _ours(name: str, module: Any, package_dir: str) -> bool:
        import os
        return name.split(".")[0] in ("ibmmq", "ibmmqc", "pymqi") or \
            os.path.dirname(getattr(module, "__file__", None) or "") == package_dir

    def __enter__(self) -> None:
        import importlib.util
        import os
        import sys
        spec = importlib.util.find_spec("ibmmq")
        self._package_dir = os.path.dirname(spec.origin) if spec and spec.origin else "-"
        self._saved = {n: m for n, m in sys.modules.items() if self._ours(n, m, self._package_dir)}
        for name in self._saved:
            del sys.modules[name]
        reset_library()

    def __exit__(self, *exc: Any) -> None:
        import sys
        reset_library()
        for name, module in list(sys.modules.items()):
            if self._ours(name, module, self._package_dir):
                del sys.modules[name]
        sys.modules.update(self._saved)


class server_log:
    """ A context manager: what logs/server.log would get, the records that reach the root logger
    (`zato start` puts server.log's handler there; pytest's caplog also listens on loggers that
    do not propagate, like logs/ibm-mq.log's, so it cannot tell them apart). """

    def __init__(self) -> None:
        import logging

        class _Keep(logging.Handler):
            def __init__(self, records: list[logging.LogRecord]) -> None:
                super().__init__(logging.INFO)
                self.records = records

            def emit(self, record: logging.LogRecord) -> None:
                self.records.append(record)

        self.records: list[logging.LogRecord] = []
        self._handler = _Keep(self.records)

    def __enter__(self) -> "server_log":
        import logging
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
        root.addHandler(self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        import logging
        root = logging.getLogger()
        root.removeHandler(self._handler)
        root.setLevel(self._level)

    def messages(self, logger: str | None = None, level: int = 0) -> list[str]:
        return [r.getMessage() for r in self.records if (logger is None or r.name == logger) and r.levelno >= level]

    @property
    def text(self) -> str:
        return "\n".join(self.messages())
