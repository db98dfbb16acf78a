""" Fixtures of the redis plugin's tests: real `redis-server` processes (zato_plugin_redis.testing).

A missing redis-server binary skips the test locally, with the reason, and fails it in CI (the
CI environment variable set), where .ci/run installs it.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import pytest

from zato_plugin_redis.testing import RedisServer, RedisUnavailable

PASSWORD = "redis-test-password"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def start_redis(**options: Any) -> RedisServer:
    try:
        server = RedisServer(**options)
    except RedisUnavailable as exc:
        if on_ci():
            pytest.fail(f"redis-server is required in CI: {exc}")
        pytest.skip(str(exc))
    try:
        return server.start()
    except BaseException:
        server.close()
        raise


@pytest.fixture
def redis_server():
    """ A redis-server with no password. """
    server = start_redis()
    yield server
    server.close()


@pytest.fixture
def redis_with_password():
    """ A redis-server that wants `PASSWORD` (requirepass). """
    server = start_redis(password=PASSWORD)
    yield server
    server.close()


def client_ids(server: RedisServer) -> set[int]:
    """ The ids of the clients connected to `server` now (CLIENT LIST), this check's own excluded. """
    with server.client() as admin:
        own = admin.client_id()
        return {int(client["id"]) for client in admin.client_list()} - {own}


def wait_until_gone(server: RedisServer, ids: set[int], timeout: float = 10.0) -> None:
    """ Waits until none of the client `ids` is connected to `server` (a disconnect reaches the
    server within milliseconds; the bound is generous for a busy machine). """
    deadline = time.monotonic() + timeout
    while True:
        left = ids & client_ids(server)
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"clients {sorted(left)} are still connected to {server} after {timeout} s")
        time.sleep(0.05)


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """ `check()`'s result once it stops raising, or its last exception after `timeout` seconds. """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
