""" The server survives its users' code: `sys.exit()`, `SystemExit` and `KeyboardInterrupt` from
services and modules, deadlines that hold for plain `def` services, a default timeout, a share
of the thread pool per service, and slow imports that hold up no other deployment. """

from __future__ import annotations

import textwrap
import time

import httpx
import pytest
import trio

from zato.odb import ODB, sqlite_url
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, run_server

SERVICES = '''
import sys
import threading
import time

import trio
from zato.server.service import Service

GATE = threading.Event()  # opened by the test's last request (t.open-gate)


class SysExit(Service):
    name = "t.sys-exit"

    def handle(self):
        sys.exit(3)


class AsyncSystemExit(Service):
    name = "t.async-system-exit"

    async def handle(self):
        raise SystemExit(4)


class AsyncKeyboardInterrupt(Service):
    name = "t.async-keyboard-interrupt"

    async def handle(self):
        raise KeyboardInterrupt


class SyncKeyboardInterrupt(Service):
    name = "t.sync-keyboard-interrupt"

    def handle(self):
        raise KeyboardInterrupt


class ExitInInit(Service):
    name = "t.exit-in-init"

    def __init__(self):
        raise SystemExit(5)

    def handle(self):
        pass


class ExitInAfterHandle(Service):
    name = "t.exit-in-after-handle"

    async def handle(self):
        self.response.payload = {"ok": True}

    async def after_handle(self):
        raise SystemExit(6)


class SlowSync(Service):
    """ Pure Python sleeping in its thread: no call into the server would notice a deadline. """
    name = "t.slow-sync"

    def handle(self):
        time.sleep(3)
        self.response.payload = {"slept": True}


class Forever(Service):
    name = "t.forever"

    async def handle(self):
        await trio.sleep_forever()


class Hangs(Service):
    """ Blocks its thread until the test opens the gate. """
    name = "t.hangs"

    def handle(self):
        GATE.wait(30)
        self.response.payload = {"released": True}


class OpenGate(Service):
    name = "t.open-gate"

    def handle(self):
        GATE.set()


class Hello(Service):
    name = "t.hello"

    def handle(self):
        self.response.payload = {"hello": "world"}
'''

CHANNELS = {
    "sys-exit": {"url_path": "/t/sys-exit", "service": "t.sys-exit"},
    "async-system-exit": {"url_path": "/t/async-system-exit", "service": "t.async-system-exit"},
    "async-keyboard-interrupt": {"url_path": "/t/async-keyboard-interrupt", "service": "t.async-keyboard-interrupt"},
    "sync-keyboard-interrupt": {"url_path": "/t/sync-keyboard-interrupt", "service": "t.sync-keyboard-interrupt"},
    "exit-in-init": {"url_path": "/t/exit-in-init", "service": "t.exit-in-init"},
    "exit-in-after-handle": {"url_path": "/t/exit-in-after-handle", "service": "t.exit-in-after-handle"},
    "slow-sync": {"url_path": "/t/slow-sync", "service": "t.slow-sync", "timeout": 0.5},
    "forever": {"url_path": "/t/forever", "service": "t.forever"},
    "hangs": {"url_path": "/t/hangs", "service": "t.hangs"},
    "open-gate": {"url_path": "/t/open-gate", "service": "t.open-gate"},
    "hello": {"url_path": "/t/hello", "service": "t.hello"},
}


def _prepare(server_dir, services: str = SERVICES) -> None:
    (server_dir / "pickup" / "t_fatal.py").write_text(textwrap.dedent(services))
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.upgrade()
    for name, channel in CHANNELS.items():
        odb.put_object("channel_rest", name, channel)
    odb.close()


@pytest.fixture
def hardened_dir(tmp_path):
    return create_test_server_dir(tmp_path / "server", main={
        "graceful_timeout": 2, "service_timeout": 1, "sync_service_threads": 6, "max_threads_per_service": 2,
        "thread_wait_timeout": 0.3})


FATAL_PATHS = ["/t/sys-exit", "/t/async-system-exit", "/t/async-keyboard-interrupt", "/t/sync-keyboard-interrupt",
               "/t/exit-in-init", "/t/exit-in-after-handle"]


@pytest.mark.parametrize("path", FATAL_PATHS)
async def test_a_service_cannot_stop_the_server(hardened_dir, path, caplog):
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
            for _ in range(2):  # and again: the first one changed nothing
                reply = await client.get(path)
                assert reply.status_code == 500, reply.text
                cid = reply.headers["x-zato-cid"]
                assert reply.json() == {"result": "Error", "cid": cid, "details": "Error 500 Internal Server Error"}
                assert f"cid={cid}" in caplog.text and "Traceback" in caplog.text
                assert (await client.get("/t/hello")).json() == {"hello": "world"}
            assert "cannot stop the server" in caplog.text


def test_a_service_cannot_stop_a_real_server_process(hardened_dir):
    """ One worker, nothing to restart it: the process itself must survive `sys.exit()`. """
    _prepare(hardened_dir)
    with ServerProcess(hardened_dir) as process:
        for path in FATAL_PATHS:
            assert httpx.get(process.address + path, timeout=10).status_code == 500
        assert httpx.get(process.address + "/t/hello", timeout=10).json() == {"hello": "world"}
        assert process.process.poll() is None


async def test_invoking_a_fatal_service_from_code_raises_an_exception(hardened_dir):
    from zato.server.server import ServiceAborted
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        with pytest.raises(ServiceAborted, match="t.sys-exit raised SystemExit"):
            await server.invoke_service("t.sys-exit")


# ################################################################################################
# Modules


BAD_MODULES = {
    "keyboard_interrupt.py": "raise KeyboardInterrupt\n",
    "system_exit.py": "import sys\nsys.exit(2)\n",
}


@pytest.mark.parametrize("file_name", sorted(BAD_MODULES))
async def test_a_module_that_exits_at_import_is_rejected_by_hot_deployment(hardened_dir, file_name, caplog):
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=10, auth=admin_auth()) as client:
            reply = await client.post(f"/zato/api/deploy/{file_name}", content=BAD_MODULES[file_name],
                                      headers={"content-type": "text/x-python"})
            assert reply.status_code == 400, reply.text
            assert reply.json()["line"] is not None
            # and from the pickup directory, through the watcher
            (hardened_dir / "pickup" / f"watched_{file_name}").write_text(BAD_MODULES[file_name])
            with trio.fail_after(10):
                while f"watched_{file_name}" not in caplog.text:
                    await trio.sleep(0.05)
            await trio.sleep(0.3)
            assert (await client.get("/t/hello")).json() == {"hello": "world"}


@pytest.mark.parametrize("file_name", sorted(BAD_MODULES))
def test_a_server_starts_with_a_module_that_exits_at_import(hardened_dir, file_name):
    _prepare(hardened_dir)
    (hardened_dir / "pickup" / file_name).write_text(BAD_MODULES[file_name])
    with ServerProcess(hardened_dir) as process:
        assert httpx.get(process.address + "/t/hello", timeout=10).json() == {"hello": "world"}
        assert file_name in process.output()


SLOW_MODULE = '''
import time
time.sleep(4)
from zato.server.service import Service

class Slow(Service):
    name = "t.slow-module"

    def handle(self):
        self.response.payload = {"slow": "module"}
'''

FAST_MODULE = '''
from zato.server.service import Service

class Fast(Service):
    name = "t.fast-module"

    def handle(self):
        self.response.payload = {"fast": "module"}
'''


async def test_a_slow_import_holds_up_no_other_deployment(hardened_dir, caplog):
    from zato.testing import set_config_value
    set_config_value(hardened_dir, "hot_deploy", "slow_import_warning", 0.5)
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=20, auth=admin_auth(),
                                     headers={"content-type": "text/x-python"}) as client:
            slow: dict = {}

            async def deploy_slow() -> None:
                slow["reply"] = await client.post("/zato/api/deploy/slow_module.py", content=SLOW_MODULE)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(deploy_slow)
                await trio.sleep(0.3)  # the slow one is importing
                started = time.monotonic()
                reply = await client.post("/zato/api/deploy/fast_module.py", content=FAST_MODULE)
                assert reply.status_code == 200, reply.text
                assert time.monotonic() - started < 2
                # the watcher is not held up either
                (hardened_dir / "pickup" / "watched_fast.py").write_text(FAST_MODULE.replace("t.fast-module",
                                                                                            "t.watched-fast"))
                with trio.fail_after(3):
                    while "t.watched-fast" not in server.services:
                        await trio.sleep(0.05)
                assert "slow_module" not in str(server.services.names())
            assert slow["reply"].status_code == 200
            assert "t.slow-module" in server.services
            assert "slow_module.py is still importing after 0.5 s" in caplog.text


async def test_an_import_past_its_timeout_is_rejected(hardened_dir):
    from zato.testing import set_config_value
    set_config_value(hardened_dir, "hot_deploy", "import_timeout", 1)
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=20, auth=admin_auth(),
                                     headers={"content-type": "text/x-python"}) as client:
            started = time.monotonic()
            reply = await client.post("/zato/api/deploy/slow_module.py", content=SLOW_MODULE)
            assert reply.status_code == 400, reply.text
            assert 0.9 < time.monotonic() - started < 3
            assert "did not import within 1 s" in reply.json()["details"]
            assert "t.slow-module" not in server.services


# ################################################################################################
# Deadlines and the thread pool


async def test_a_sync_service_past_its_channel_timeout_answers_504_at_the_deadline(hardened_dir, caplog):
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
            started = time.monotonic()
            reply = await client.get("/t/slow-sync")  # sleeps 3 s under a 0.5 s timeout
            took = time.monotonic() - started
            assert reply.status_code == 504 and 0.45 < took < 1.5, (reply.status_code, took)
            with trio.fail_after(6):  # the thread runs on; its result is discarded, and that is logged
                while "its response was discarded" not in caplog.text:
                    await trio.sleep(0.1)


async def test_the_default_timeout_applies_when_a_channel_sets_none(hardened_dir):
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        assert server.service_timeout == 1
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
            started = time.monotonic()
            reply = await client.get("/t/forever")
            assert reply.status_code == 504 and 0.9 < time.monotonic() - started < 2.5


async def test_a_hung_service_takes_only_its_share_of_threads(hardened_dir):
    """ Six threads, two per service: hung calls of one service get 503 with Retry-After once its
    two threads are taken, and other services keep answering at once. """
    from zato.testing import set_config_value
    set_config_value(hardened_dir, "main", "service_timeout", 0)  # the hung calls stay hung
    _prepare(hardened_dir)
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=20) as client:
            replies: list[httpx.Response] = []

            async def hang() -> None:
                replies.append(await client.get("/t/hangs"))

            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(hang)
                await trio.sleep(0.3)
                started = time.monotonic()
                busy = await client.get("/t/hangs")
                assert busy.status_code == 503, busy.text
                assert busy.headers["retry-after"] == "1"
                assert "t.hangs is busy" in busy.json()["details"]
                assert 0.25 < time.monotonic() - started < 1.5
                for _ in range(5):
                    started = time.monotonic()
                    assert (await client.get("/t/hello")).json() == {"hello": "world"}
                    assert time.monotonic() - started < 0.5
                assert (await client.get("/t/open-gate")).status_code == 200
            assert [reply.json() for reply in replies] == [{"released": True}] * 2
