""" `self.cache` as in Zato: the default cache, `get_cache('builtin', name)`, expiry with the
extend-on-get/set options of the start-up article, LRU eviction, max_item_size, and a cache
shared by the workers of a two-worker server (eventually consistent, as Zato's). """

from __future__ import annotations

import time

import pytest

from core_test_helpers import admin_post, unique_module_name
from zato.builtin.cache import Cache, CacheItemTooLarge
from zato.testing import ServerProcess, create_test_server_dir, run_server, set_config_value

SERVICES = '''
from zato.server.service import Service

class DefaultCache(Service):
    """ A plain `def` service: runs in a thread. """
    name = "cache.test.default"

    def handle(self):
        cache = self.cache.default
        previous = cache.set("greeting", "hello")
        again = cache.set("greeting", "hello again")
        details = cache.get("greeting", details=True)
        cache["counter"] = 1
        self.response.payload = {
            "name": cache.name, "previous": previous, "again": again, "value": cache.get("greeting"),
            "missing": cache.get("nope"), "missing_default": cache.get("nope", "fallback"),
            "has": cache.has_key("greeting"), "in": "counter" in cache, "hits": details.hits,
            "details_value": details.value, "deleted": cache.delete("greeting"), "after_delete": cache.get("greeting"),
            "delete_missing": cache.delete("greeting"), "keys": sorted(cache.keys()),
        }

class AsyncCache(Service):
    """ An `async def` service reaches the same caches. """
    name = "cache.test.async"

    async def handle(self):
        cache = self.cache.get_cache("builtin", self.request.payload["cache"])
        cache.set("k", {"nested": [1, 2]}, expiry=self.request.payload.get("expiry", 0))
        self.response.payload = {"name": cache.name, "value": cache.get("k"), "len": len(cache)}

class Op(Service):
    """ One cache operation, named by the payload; answers with this worker's pid. """
    name = "cache.test.op"

    def handle(self):
        import os
        p = self.request.payload
        cache = self.cache.get_cache("builtin", p.get("cache", "default"))
        args = p.get("args", [])
        try:
            result = getattr(cache, p["op"])(*args, **p.get("kwargs", {}))
        except Exception as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
        self.response.payload = {"pid": os.getpid(), "result": result}

class Missing(Service):
    name = "cache.test.missing"

    def handle(self):
        try:
            self.cache.get_cache("builtin", "no.such.cache")
        except KeyError as exc:
            unknown = str(exc)
        try:
            self.cache.get_cache("memcached", "x")
        except KeyError as exc:
            memcached = str(exc)
        self.response.payload = {"unknown": unknown, "memcached": memcached}
'''

# The start-up article's create_cache callable, as printed (its closing lines restored)
STARTUP_CALLABLE = '''
from zato.common import CACHE, SERVER_STARTUP

def create_cache(ctx):
    """ This is the callable that is invoked when the server is started.
    """
    # type: (PhaseCtx)

    if ctx.phase == SERVER_STARTUP.PHASE.AFTER_STARTED:

        # Server object where all our services are deployed to already
        server = ctx.kwargs['server'] # type: ParallelServer

        # Service to invoke
        service = 'zato.cache.builtin.create'

        # Input data to the service
        request = {
            'cluster_id': server.cluster_id,
            'name': 'my.cache',
            'is_active': True,
            'is_default': False,
            'max_size': 10000,
            'max_item_size': 10000,
            'extend_expiry_on_get': True,
            'extend_expiry_on_set': True,
            'cache_type': CACHE.TYPE.BUILTIN,
        }

        # Create a cache object by invoke the service
        server.invoke(service, request)
'''


@pytest.fixture
def cache_server_dir(server_dir):
    (server_dir / "pickup" / "cache_services.py").write_text(SERVICES, "utf-8")
    return server_dir


# ################################################################################################
# One worker, in-process


async def test_the_default_cache_exists_without_configuration(cache_server_dir):
    async with run_server(cache_server_dir) as server:
        assert "default" not in [c["name"] for c in await server.invoke("zato.cache.builtin.get-list")]
        out = await server.invoke("cache.test.default")
        assert out == {"name": "default", "previous": None, "again": "hello", "value": "hello again",
                       "missing": None, "missing_default": "fallback", "has": True, "in": True, "hits": 1,
                       "details_value": "hello again", "deleted": "hello again", "after_delete": None,
                       "delete_missing": None, "keys": ["counter"]}
        listed = {c["name"]: c for c in await server.invoke("zato.cache.builtin.get-list")}
        assert listed["default"]["is_default"] is True and listed["default"]["current_size"] == 1


async def test_the_start_up_articles_cache_is_reached_by_get_cache(cache_server_dir):
    module = unique_module_name("my_startup")
    (cache_server_dir / "lib" / f"{module}.py").write_text(STARTUP_CALLABLE, "utf-8")
    set_config_value(cache_server_dir, "misc", "startup_callable", f"{module}.create_cache")
    async with run_server(cache_server_dir) as server:
        out = await server.invoke("cache.test.async", {"cache": "my.cache"})
        assert out == {"name": "my.cache", "value": {"nested": [1, 2]}, "len": 1}
        listed = {c["name"]: c for c in await server.invoke("zato.cache.builtin.get-list")}
        assert listed["my.cache"]["extend_expiry_on_get"] is True and listed["my.cache"]["current_size"] == 1
        # created again (a restart of the callable, an edit): its keys stay
        await server.invoke("zato.cache.builtin.create", {"name": "my.cache", "max_size": 5})
        assert (await server.invoke("cache.test.op", {"cache": "my.cache", "op": "get", "args": ["k"]}))["result"] \
            == {"nested": [1, 2]}


async def test_unknown_caches_and_types_say_what_exists_and_how_to_create_one(cache_server_dir):
    async with run_server(cache_server_dir) as server:
        out = await server.invoke("cache.test.missing")
        assert "no built-in cache named 'no.such.cache'" in out["unknown"]
        assert "zato.cache.builtin.create" in out["unknown"]
        assert "only 'builtin' caches exist" in out["memcached"]


async def test_expiry_and_a_value_over_max_item_size(cache_server_dir):
    async with run_server(cache_server_dir) as server:
        await server.invoke("zato.cache.builtin.create", {"name": "small", "max_item_size": 5, "max_size": 2})
        op = {"cache": "small", "op": "set"}
        refused = (await server.invoke("cache.test.op", {**op, "args": ["k", "123456"]}))["result"]
        assert refused["error"] == "CacheItemTooLarge"
        assert "value of key 'k' is 6 characters, over this cache's max_item_size of 5" in refused["message"]
        assert "raise max_item_size" in refused["message"]

        # LRU: a third key evicts the least recently used one
        for key in ("a", "b"):
            await server.invoke("cache.test.op", {**op, "args": [key, key]})
        await server.invoke("cache.test.op", {"cache": "small", "op": "get", "args": ["a"]})
        await server.invoke("cache.test.op", {**op, "args": ["c", "c"]})
        keys = (await server.invoke("cache.test.op", {"cache": "small", "op": "keys"}))["result"]
        assert sorted(keys) == ["a", "c"]

        await server.invoke("cache.test.op", {**op, "args": ["t", "v"], "kwargs": {"expiry": 0.3}})
        assert (await server.invoke("cache.test.op", {"cache": "small", "op": "has_key", "args": ["t"]}))["result"]
        started = time.monotonic()
        while (await server.invoke("cache.test.op", {"cache": "small", "op": "has_key", "args": ["t"]}))["result"]:
            assert time.monotonic() - started < 5
        assert time.monotonic() - started >= 0.2


async def test_bad_create_requests_are_refused_naming_the_field(cache_server_dir):
    from zato.common.exception import BadRequest
    async with run_server(cache_server_dir) as server:
        with pytest.raises(BadRequest, match="max_size = 0 is out of range"):
            await server.invoke("zato.cache.builtin.create", {"name": "x", "max_size": 0})
        with pytest.raises(BadRequest, match="extend_expiry_on_get: expected true or false"):
            await server.invoke("zato.cache.builtin.create", {"name": "x", "extend_expiry_on_get": "sometimes"})
        with pytest.raises(BadRequest, match="needs `name`"):
            await server.invoke("zato.cache.builtin.create", {"max_size": 3})


async def test_self_cache_names_the_line_that_switches_the_cache_plugin_on(server_dir):
    (server_dir / "pickup" / "uses_cache.py").write_text(
        "from zato.server.service import Service\n\n"
        "class UsesCache(Service):\n    name = 'uses.cache'\n\n"
        "    def handle(self):\n        self.cache.default.get('x')\n", "utf-8")
    set_config_value(server_dir, "deploy_internal", "zato.builtin.cache", "False")
    async with run_server(server_dir) as server:
        assert "cache" not in server.plugins.enabled_names()
        with pytest.raises(AttributeError) as raised:
            await server.invoke("uses.cache")
        assert "self.cache" in str(raised.value) and "zato.builtin.cache = True" in str(raised.value)


# ################################################################################################
# The expiry rules, on a clock the test moves


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_extend_expiry_on_get_keeps_a_read_key_alive():
    clock = Clock()
    extending = Cache("on", extend_expiry_on_get=True, clock=clock)
    fixed = Cache("off", extend_expiry_on_get=False, clock=clock)
    for cache in (extending, fixed):
        cache.set("k", "v", expiry=10)
    for _ in range(3):
        clock.now += 6
        extending.get("k"), fixed.get("k")
    assert extending.get("k") == "v"  # 18 s after the set, read every 6 s
    assert fixed.get("k") is None and not fixed.has_key("k")
    details = extending.get("k", details=True)
    assert details.expiry == 10 and details.expires_at > time.time() + 9


def test_extend_expiry_on_set_and_expiry_zero_follow_zato():
    clock = Clock()
    extending = Cache("on", extend_expiry_on_set=True, clock=clock)
    fixed = Cache("off", extend_expiry_on_set=False, clock=clock)
    for cache in (extending, fixed):
        cache.set("k", 1, expiry=10)
        clock.now += 8
        cache.set("k", 2, expiry=10)  # extends to 10 s from now, or keeps the first deadline
        clock.now -= 8
    clock.now += 15
    assert extending.get("k") == 2 and fixed.get("k") is None

    cache = Cache("zero", clock=clock)
    cache.set("k", 1, expiry=5)
    cache.set("k", 2)  # expiry 0: the key no longer expires (Zato)
    clock.now += 100
    assert cache.get("k") == 2
    assert cache.expire("k", 1) is True
    clock.now += 2
    assert cache.get("k") is None and cache.expire("k", 1) is False


def test_values_are_checked_when_set():
    cache = Cache("c", max_item_size=10)
    with pytest.raises(CacheItemTooLarge, match="13 characters as JSON"):
        cache.set("k", {"a": "12345"})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        cache.set("k", object())
    with pytest.raises(TypeError, match="a key is a str or an int"):
        cache.set(("a", "b"), 1)
    with pytest.raises(ValueError, match="expiry is seconds"):
        cache.set("k", 1, expiry=-1)
    cache.set("b", b"\x00\xff")
    assert cache.get("b") == b"\x00\xff"


def test_operations_on_matching_keys():
    cache = Cache("m")
    for key in ("order.1", "order.2", "customer.1"):
        cache.set(key, key)
    assert cache.get_by_prefix("order.") == {"order.1": "order.1", "order.2": "order.2"}
    assert sorted(cache.get_by_suffix(".1")) == ["customer.1", "order.1"]
    assert cache.get_contains_all(["order", "2"]) == {"order.2": "order.2"}
    assert cache.set_by_regex(r"order\.\d", "x", return_found=True) == {"order.1": "order.1", "order.2": "order.2"}
    assert cache.delete_by_prefix("order.", return_found=True) == {"order.1": "x", "order.2": "x"}
    assert cache.keys() == ["customer.1"]


def test_changes_from_another_worker_converge_on_the_later_write():
    """ What the notification handler applies: the later of two writes wins in both workers,
    whichever order they arrive in. """
    sent_a: list = []
    sent_b: list = []
    worker_a = Cache("shared", replicate=sent_a.append)
    worker_b = Cache("shared", replicate=sent_b.append)
    worker_a.set("k", "from a")
    worker_b.set("k", "from b")  # later
    worker_b.apply_remote(sent_a[-1][1:])
    worker_a.apply_remote(sent_b[-1][1:])
    assert worker_a.get("k") == worker_b.get("k") == "from b"
    worker_a.delete("k")
    worker_b.apply_remote(sent_a[-1][1:])
    assert not worker_b.has_key("k")


# ################################################################################################
# Two workers


def every_worker_sees(address: str, payload: dict, expected, timeout: float = 10.0) -> float:
    """ Seconds until both workers answer `payload` (an Op) with `expected`. """
    started = time.monotonic()
    seen: dict[int, object] = {}
    while len(seen) < 2 or any(value != expected for value in seen.values()):
        out = admin_post(address, "cache.test.op", payload)
        seen[out["pid"]] = out["result"]
        assert time.monotonic() - started < timeout, f"after {timeout} s the workers see {seen}, not {expected!r}"
    return time.monotonic() - started


def test_the_workers_of_a_server_share_a_cache(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    (base / "pickup" / "cache_services.py").write_text(SERVICES, "utf-8")
    with ServerProcess(base) as server:
        get = {"op": "get", "args": ["shared.key"]}
        every_worker_sees(server.address, get, None)

        admin_post(server.address, "cache.test.op", {"op": "set", "args": ["shared.key", {"v": 1}]})
        first = every_worker_sees(server.address, get, {"v": 1})
        admin_post(server.address, "cache.test.op", {"op": "set", "args": ["shared.key", "v2"]})
        every_worker_sees(server.address, get, "v2")
        admin_post(server.address, "cache.test.op", {"op": "delete", "args": ["shared.key"]})
        every_worker_sees(server.address, get, None)

        # a named cache, created through one worker, expiring in every worker
        admin_post(server.address, "zato.cache.builtin.create", {"name": "named", "max_size": 100})
        admin_post(server.address, "cache.test.op", {"cache": "named", "op": "set", "args": ["t", "x"],
                                                     "kwargs": {"expiry": 1.5}})
        every_worker_sees(server.address, {"cache": "named", "op": "has_key", "args": ["t"]}, True)
        every_worker_sees(server.address, {"cache": "named", "op": "has_key", "args": ["t"]}, False)

        admin_post(server.address, "cache.test.op", {"op": "set", "args": ["c1", 1]})
        admin_post(server.address, "zato.cache.builtin.clear", {"name": "default"})
        every_worker_sees(server.address, {"op": "keys"}, [])
    print(f"\ntwo workers: a set through one worker was seen by both within {first:.3f} s")
