""" `zato.plugin_api`, the one module plugin authors import from: the plugins under plugins/ use
nothing else of `zato` (checked on their sources, so it cannot decay), every name it lists
exists, loading it does not load the test kit, and the helpers it offers behave as documented
(the dual-mode `BlockingCalls`, the test kit's `ExternalProcess`). """

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import trio

import zato.plugin_api as plugin_api
from zato.plugin_api import BlockingCallError, BlockingCalls, ExternalProcess, OutgoingError, ProcessExited

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCES = sorted((REPO / "plugins").glob("*/src/**/*.py"))

# Besides zato.plugin_api, the Zato-compatible paths that service code imports from
SERVICE_PATHS = ("zato.server.service", "zato.common.api", "zato.common.exception", "zato.common.pubsub")


def zato_imports(source: str) -> list[tuple[int, str]]:
    """ (line, module) of every import of a `zato` module in `source`, at any depth (function-level
    imports too). `from zato import x` counts as `zato.x`. """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names
                         if alias.name == "zato" or alias.name.startswith("zato."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "zato":
                found.extend((node.lineno, f"zato.{alias.name}") for alias in node.names)
            elif node.module.startswith("zato."):
                found.append((node.lineno, node.module))
    return found


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    return [(line, module) for line, module in zato_imports(source)
            if module != "zato.plugin_api" and module not in SERVICE_PATHS]


def test_the_checker_sees_every_kind_of_import():
    source = textwrap.dedent("""
        import zato.registry
        from zato import hookimpl
        from zato.server.outgoing import OutgoingError
        from zato.plugin_api import Field
        from zato.server.service import Service
        from zato_plugin_x import y
        from . import sibling

        def later():
            from zato.objects import is_env_reference
    """)
    assert forbidden_imports(source) == [(2, "zato.registry"), (3, "zato.hookimpl"), (4, "zato.server.outgoing"),
                                         (11, "zato.objects")]


def test_plugins_import_only_the_plugin_api():
    assert len({path.parts[len(REPO.parts) + 1] for path in PLUGIN_SOURCES}) >= 3  # redis, smtp, sql at least
    problems = [f"{path.relative_to(REPO)}:{line} imports {module}"
                for path in PLUGIN_SOURCES for line, module in forbidden_imports(path.read_text("utf-8"))]
    assert not problems, ("plugins import from zato.plugin_api only (and the service paths "
                          f"{', '.join(SERVICE_PATHS)}); add what they need there instead:\n" + "\n".join(problems))


def test_every_listed_name_exists_and_is_in_the_docstring():
    assert len(plugin_api.__all__) == len(set(plugin_api.__all__))
    for name in plugin_api.__all__:
        assert getattr(plugin_api, name) is not None, name
        assert name in plugin_api.__doc__, f"{name} is exported but not in zato.plugin_api's docstring (the index)"
    with pytest.raises(AttributeError, match="has no attribute 'Nope'.*__all__"):
        plugin_api.Nope  # noqa: B018
    from zato.testing import run_server
    from zato.testing.conformance import OutgoingConnectionConformance
    assert plugin_api.run_server is run_server
    assert plugin_api.OutgoingConnectionConformance is OutgoingConnectionConformance


def test_loading_it_does_not_load_the_test_kit():
    """ A server imports it with every plugin; the test kit (pytest, httpx...) stays out. """
    code = "import sys, zato.plugin_api; print(sorted(m for m in sys.modules if m.startswith('zato.testing')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# ################################################################################################
# BlockingCalls: plain `def` blocks, `async def` gets an awaitable


def test_a_plain_caller_gets_the_result_in_its_own_thread():
    calls = BlockingCalls("outgoing test 'A'", threads=2)
    assert calls.call(lambda a, b: (a + b, threading.get_ident()), 1, 2) == (3, threading.get_ident())
    calls.refuse_on_loop("outgoing test 'A': session()", "use something else")  # not on the loop: no error


async def test_an_async_caller_gets_an_awaitable_run_in_a_limited_worker_thread():
    calls = BlockingCalls("outgoing test 'A'", threads=2)
    lock, in_use, peak = threading.Lock(), [0], [0]

    def hold(number: int) -> tuple[int, int]:
        with lock:
            in_use[0] += 1
            peak[0] = max(peak[0], in_use[0])
        time.sleep(0.1)
        with lock:
            in_use[0] -= 1
        return number, threading.get_ident()

    results = []

    async def one(number: int) -> None:
        results.append(await calls.call(hold, number))

    async with trio.open_nursery() as nursery:
        for number in range(6):
            nursery.start_soon(one, number)
    assert sorted(number for number, _ in results) == list(range(6))
    assert threading.get_ident() not in {ident for _, ident in results}
    assert peak[0] == 2  # this resource's limit, not trio's default of 40


async def test_an_async_caller_gets_the_native_async_variant_when_there_is_one():
    calls = BlockingCalls("outgoing test 'A'")

    async def natively(value: int) -> str:
        return f"async {value}"

    assert await calls.call(lambda value: f"thread {value}", 1, on_loop=natively) == "async 1"
    assert await trio.to_thread.run_sync(lambda: calls.call(lambda value: f"thread {value}", 2, on_loop=natively)) \
        == "thread 2"


async def test_a_blocking_call_on_the_loop_is_refused_naming_it_and_what_to_do():
    calls = BlockingCalls("outgoing test 'A'")
    with pytest.raises(BlockingCallError) as info:
        calls.refuse_on_loop("outgoing test 'A': session()", "use `await conn.run(fn)`")
    assert str(info.value) == ("outgoing test 'A': session() blocks, and this is an async def handle on the trio "
                               "loop; use `await conn.run(fn)`")
    assert isinstance(info.value, OutgoingError) and isinstance(info.value, RuntimeError)
    await trio.to_thread.run_sync(calls.refuse_on_loop, "x", "y")  # from a worker thread it may block


# ################################################################################################
# ExternalProcess: start, wait until it answers, SIGTERM then SIGKILL


def test_a_process_that_exits_before_answering_says_so_with_its_output(tmp_path):
    process = ExternalProcess([sys.executable, "-c", "print('no config here'); raise SystemExit(3)"],
                              name="the tool", output=tmp_path / "out.log")
    with pytest.raises(ProcessExited, match=r"^the tool exited with 3:\nno config here"):
        process.start().wait_until(lambda: False, timeout=30)


def test_a_process_that_does_not_answer_is_stopped_and_times_out(tmp_path):
    process = ExternalProcess([sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"],
                              name="the tool", output=tmp_path / "out.log").start()
    with pytest.raises(TimeoutError, match=r"^the tool did not answer within 0.5 s:\nstarting"):
        process.wait_until(lambda: (tmp_path / "out.log").read_text() == "never", timeout=0.5)
    assert not process.running


def test_stop_kills_what_ignores_sigterm_and_its_children(tmp_path):
    ready = tmp_path / "ready"
    code = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(ready)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    process = ExternalProcess([sys.executable, "-c", code], name="stubborn").start()
    child = int(process.wait_until(lambda: ready.exists() and ready.read_text(), timeout=30))
    started = time.monotonic()
    assert process.stop(timeout=0.5) == -9
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.monotonic() < deadline, "the child survived"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
