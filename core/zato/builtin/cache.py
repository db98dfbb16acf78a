""" The `cache` plugin: Zato's built-in caches, for services as `self.cache`.

    self.cache.default.set('customer.1', {'name': 'Ann'}, expiry=60)   # seconds; 0: never expires
    self.cache.default.get('customer.1')                              # the value, or None
    self.cache.get_cache('builtin', 'my.cache').delete('customer.1')

A cache called `default` exists without configuration; more are created with the internal
service `zato.cache.builtin.create` (name, max_size, max_item_size, extend_expiry_on_get,
extend_expiry_on_set, is_default: the fields of Zato's start-up article). Each cache is an LRU
cache of at most `max_size` keys whose values are at most `max_item_size` characters (str,
bytes; anything else as JSON): a bigger value is refused with `CacheItemTooLarge`.

A server's workers share each cache as Zato's workers do: every change (set, delete, expire,
clear, and the expiry extended by a read) is applied at once in the worker that made it and
sent through the notification transport to the other workers, which apply it shortly after
(milliseconds). It is eventually consistent within a server, as in Zato: a read in another
worker right after a set may still see the old value. Of two writes of one key made at once
in two workers, the later one (by the clock) wins in every worker. Values travel as JSON, so
they must be JSON-serialisable (bytes are allowed). Expiry is counted by each worker on its
own monotonic clock; expired keys are dropped when read and every few seconds.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Iterator

import trio

from zato import hookimpl
from zato.server.plugin_state import PluginState

logger = logging.getLogger("zato.cache")

PLUGIN = "cache"
DEFAULT_CACHE = "default"  # Zato's name of the default cache
CACHE_TYPE = "builtin"
STATE_CHANGED = "cache.builtin.state_changed"  # the notification carrying changes to the other workers
SWEEP_SECONDS = 5.0  # how often expired keys are dropped (Zato's interval)
MAX_ITEM_SIZE_LIMIT = 8 * 1024 * 1024  # a change must fit one notification line (16 MiB)

CACHES = PluginState["CacheAPI"](PLUGIN)


class CacheItemTooLarge(ValueError):
    """ A value over its cache's `max_item_size`. """


class CacheNotFound(KeyError):
    """ `get_cache` of a cache that does not exist. """

    def __str__(self) -> str:
        return str(self.args[0])


# ################################################################################################
# One cache


class EntryDetails:
    """ What `get(key, details=True)` returns: the value and its metadata, as Zato's `Entry`.
    Times are seconds since the epoch (0.0: never); `expiry` is the entry's lifetime in seconds. """
    __slots__ = ("key", "value", "expiry", "expires_at", "hits", "last_read", "prev_read", "last_write",
                 "prev_write")

    def __init__(self, key: Any, entry: "_Entry", now: float, wall: float) -> None:
        self.key = key
        self.value = entry.value
        self.expiry = entry.expiry
        self.expires_at = wall + (entry.expires_at - now) if entry.expires_at else 0.0
        self.hits = entry.hits
        self.last_read, self.prev_read = entry.last_read, entry.prev_read
        self.last_write, self.prev_write = entry.last_write, entry.prev_write

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"<EntryDetails {self.key!r} hits={self.hits} expiry={self.expiry}>"


class _Entry:
    __slots__ = ("value", "expiry", "expires_at", "hits", "last_read", "prev_read", "last_write", "prev_write",
                 "version")

    def __init__(self, value: Any, expiry: float, expires_at: float, wall: float, version: tuple) -> None:
        self.value = value
        self.expiry = expiry
        self.expires_at = expires_at  # on the cache's monotonic clock; 0.0: never
        self.hits = 0
        self.last_read = self.prev_read = self.prev_write = 0.0
        self.last_write = wall
        self.version = version  # (time.time(), pid) of the write: the later write wins in every worker


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__zato_bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_object(data: dict) -> Any:
    if len(data) == 1 and "__zato_bytes__" in data:
        return base64.b64decode(data["__zato_bytes__"])
    return data


def decode_value(encoded: str) -> Any:
    return json.loads(encoded, object_hook=_json_object)


def _regex_match(pattern: Any) -> Callable[[str], bool]:
    return re.compile(pattern).match  # type: ignore[return-value]


# How the *_by_* methods pick keys (Zato's names); only str keys are considered
MATCHERS: dict[str, Callable[[Any], Callable[[str], bool]]] = {
    "by_prefix": lambda data: lambda key: key.startswith(data),
    "by_suffix": lambda data: lambda key: key.endswith(data),
    "by_regex": _regex_match,
    "contains": lambda data: lambda key: data in key,
    "not_contains": lambda data: lambda key: data not in key,
    "contains_all": lambda data: lambda key: all(item in key for item in data),
    "contains_any": lambda data: lambda key: any(item in key for item in data),
}


class Cache:
    """ One built-in cache: an LRU mapping with expiry, shared with the server's other workers.
    Safe to use from `def` services (threads) and `async def` services alike; no call blocks on
    I/O (changes are sent to the other workers in the background). """

    def __init__(self, name: str, *, max_size: int = 10000, max_item_size: int = 10000,
                 extend_expiry_on_get: bool = True, extend_expiry_on_set: bool = True, is_active: bool = True,
                 is_default: bool = False, replicate: Callable[[list], None] | None = None,
                 implicit: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock  # seconds on a monotonic clock: expiry is counted on it
        self.max_size = max_size
        self.max_item_size = max_item_size
        self.extend_expiry_on_get = extend_expiry_on_get
        self.extend_expiry_on_set = extend_expiry_on_set
        self.is_active = is_active
        self.is_default = is_default
        self.implicit = implicit  # the `default` cache that exists without configuration
        self._replicate_to_others = replicate
        self._items: OrderedDict[Any, _Entry] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()
        self.hits = self.misses = self.set_ops = self.evictions = 0
        self._pid = os.getpid()

    # ############################################################################################
    # Configuration and statistics

    def update_config(self, **options: Any) -> None:
        with self._lock:
            for key, value in options.items():
                setattr(self, key, value)
            self._evict()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_size": self.max_size, "max_item_size": self.max_item_size,
                "extend_expiry_on_get": self.extend_expiry_on_get, "extend_expiry_on_set": self.extend_expiry_on_set,
                "is_active": self.is_active, "is_default": self.is_default, "cache_type": CACHE_TYPE,
                "current_size": len(self._items), "hits": self.hits, "misses": self.misses,
                "set_ops": self.set_ops, "evictions": self.evictions}

    def __repr__(self) -> str:
        return f"<Cache {self.name!r} size={len(self._items)}/{self.max_size}>"

    # ############################################################################################
    # Checks of what callers give

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise TypeError(f"cache {self.name!r}: a key is a str or an int, not {type(key).__name__} ({key!r:.80})")

    def _check_expiry(self, expiry: Any) -> float:
        if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or expiry < 0 or expiry != expiry:
            raise ValueError(f"cache {self.name!r}: expiry is seconds (a number, 0 for never), not {expiry!r}")
        return float(expiry)

    def _encode(self, key: Any, value: Any) -> str:
        """ The value as JSON (as it travels to the other workers), once its size is checked. """
        try:
            encoded = json.dumps(value, default=_json_default, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cache {self.name!r}: the value of key {key!r} cannot be stored: values are shared with "
                            f"the server's other workers as JSON and this one is not JSON-serialisable ({exc}); "
                            f"store str, bytes, numbers, lists or dicts") from None
        if isinstance(value, (str, bytes, bytearray)):
            size, unit = len(value), "characters" if isinstance(value, str) else "bytes"
        else:
            size, unit = len(encoded), "characters as JSON"
        if size > self.max_item_size:
            raise CacheItemTooLarge(f"cache {self.name!r}: the value of key {key!r} is {size} {unit}, over this "
                                    f"cache's max_item_size of {self.max_item_size}; store a smaller value or raise "
                                    f"max_item_size (zato.cache.builtin.create with name {self.name!r})")
        return encoded

    # ############################################################################################
    # Internals; called with self._lock held

    def _live(self, key: Any, now: float) -> _Entry | None:
        entry = self._items.get(key)
        if entry is not None and entry.expires_at and now >= entry.expires_at:
            del self._items[key]
            return None
        return entry

    def _evict(self) -> None:
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)
            self.evictions += 1

    def _replicate(self, change: list) -> None:
        if self._replicate_to_others is not None:
            self._replicate_to_others([self.name, *change])

    def _next_version(self, entry: _Entry | None) -> tuple:
        stamp = time.time()
        if entry is not None and entry.version[0] >= stamp:  # another worker's clock is ahead: still win
            stamp = entry.version[0] + 1e-6
        return (stamp, self._pid)

    def _set_entry(self, key: Any, value: Any, expiry: float, now: float, wall: float, version: tuple,
                   entry: _Entry | None) -> Any:
        """ Zato's rules: a new key gets `expiry`; an existing one without expiry gets it if given;
        one with expiry loses it with expiry 0, else gets the new one if `extend_expiry_on_set`
        (else its deadline stays). Returns the previous value (None for a new key). """
        self.set_ops += 1
        if entry is None:
            self._items[key] = _Entry(value, expiry, now + expiry if expiry else 0.0, wall, version)
            self._evict()
            return None
        previous = entry.value
        if not entry.expires_at:
            if expiry:
                entry.expiry, entry.expires_at = expiry, now + expiry
        elif not expiry:
            entry.expiry = entry.expires_at = 0.0
        elif self.extend_expiry_on_set:
            entry.expiry, entry.expires_at = expiry, now + expiry
        entry.value = value
        entry.prev_write, entry.last_write = entry.last_write, wall
        entry.version = version
        self._items.move_to_end(key)
        return previous

    def _read(self, key: Any, entry: _Entry, now: float, wall: float) -> None:
        self.hits += 1
        entry.hits += 1
        entry.prev_read, entry.last_read = entry.last_read, wall
        self._items.move_to_end(key)
        if self.extend_expiry_on_get and entry.expiry:
            entry.expires_at = now + entry.expiry
            self._replicate(["touch", key])

    def _matching(self, kind: str, data: Any, limit: int, now: float) -> list:
        make = MATCHERS.get(kind)
        if make is None:
            raise ValueError(f"unknown key matcher {kind!r}; known: {', '.join(MATCHERS)}")
        matches = make(data)
        out = []
        for key in list(self._items):
            if isinstance(key, str) and matches(key) and self._live(key, now) is not None:
                out.append(key)
                if limit and len(out) == limit:
                    break
        return out

    # ############################################################################################
    # Zato's API

    def get(self, key: Any, default: Any = None, details: bool = False) -> Any:
        """ The value of `key`, or `default` if there is none (or it expired). With `details`,
        an `EntryDetails` (value, expiry, hits, last_read...). A read extends the key's expiry
        if the cache has `extend_expiry_on_get`. """
        now, wall = self._clock(), time.time()
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                self.misses += 1
                return default
            self._read(key, entry, now, wall)
            return EntryDetails(key, entry, now, wall) if details else entry.value

    def has_key(self, key: Any, default: Any = None, details: bool = False) -> bool:
        """ True if `key` is in the cache and has not expired (it is not counted as a read). """
        with self._lock:
            return self._live(key, self._clock()) is not None

    def set(self, key: Any, value: Any, expiry: float = 0.0, details: bool = False) -> Any:
        """ Stores `value` under `key`, for `expiry` seconds (0: no expiry; see `_set_entry` for
        an existing key). Returns the previous value, or None. Raises `CacheItemTooLarge` for a
        value over `max_item_size`, TypeError for one that is not JSON-serialisable. """
        self._check_key(key)
        expiry = self._check_expiry(expiry)
        encoded = self._encode(key, value)
        now, wall = self._clock(), time.time()
        with self._lock:
            entry = self._live(key, now)
            version = self._next_version(entry)
            previous_details = EntryDetails(key, entry, now, wall) if details and entry is not None else None
            previous = self._set_entry(key, value, expiry, now, wall, version, entry)
            self._replicate(["set", key, encoded, expiry, list(version)])
        return previous_details if details else previous

    def delete(self, key: Any, raise_key_error: bool = True) -> Any:
        """ Removes `key`; returns its value, or None if there was none (as Zato does). """
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                return None
            del self._items[key]
            self._replicate(["delete", key, list(self._next_version(entry))])
            return entry.value

    def expire(self, key: Any, expiry: float = 0.0) -> bool:
        """ Makes `key` expire `expiry` seconds from now (0: now). True if the key was there. """
        expiry = self._check_expiry(expiry)
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            if entry is None:
                return False
            entry.expiry, entry.expires_at = expiry, now + expiry
            self._replicate(["expire", key, expiry])
            return True

    def clear(self) -> None:
        """ Removes every key, in every worker. """
        with self._lock:
            self._items.clear()
            self._replicate(["clear"])

    def delete_expired(self) -> list:
        """ Drops the keys that expired; returns them. Each worker does it on its own clock. """
        now = self._clock()
        with self._lock:
            expired = [key for key, entry in self._items.items() if entry.expires_at and now >= entry.expires_at]
            for key in expired:
                del self._items[key]
        return expired

    # Several keys at once: get_by_prefix, set_by_suffix, delete_by_regex, expire_contains...

    def _get_matching(self, kind: str, key: Any, details: bool = False, limit: int = 0) -> dict:
        now, wall = self._clock(), time.time()
        with self._lock:
            out = {}
            for found in self._matching(kind, key, limit, now):
                entry = self._items[found]
                self._read(found, entry, now, wall)
                out[found] = EntryDetails(found, entry, now, wall) if details else entry.value
            return out

    def _set_matching(self, kind: str, key: Any, value: Any, expiry: float = 0.0, return_found: bool = False,
                      details: bool = False, limit: int = 0) -> dict:
        expiry = self._check_expiry(expiry)
        encoded = self._encode(key, value)
        now, wall = self._clock(), time.time()
        with self._lock:
            out = {}
            for found in self._matching(kind, key, limit, now):
                entry = self._items[found]
                version = self._next_version(entry)
                previous = self._set_entry(found, value, expiry, now, wall, version, entry)
                if return_found:
                    out[found] = previous
                self._replicate(["set", found, encoded, expiry, list(version)])
            return out

    def _delete_matching(self, kind: str, key: Any, return_found: bool = False, limit: int = 0) -> dict:
        now = self._clock()
        with self._lock:
            out = {}
            for found in self._matching(kind, key, limit, now):
                entry = self._items.pop(found)
                if return_found:
                    out[found] = entry.value
                self._replicate(["delete", found, list(self._next_version(entry))])
            return out

    def _expire_matching(self, kind: str, key: Any, expiry: float = 0.0, limit: int = 0) -> list:
        expiry = self._check_expiry(expiry)
        now = self._clock()
        with self._lock:
            found_keys = self._matching(kind, key, limit, now)
            for found in found_keys:
                entry = self._items[found]
                entry.expiry, entry.expires_at = expiry, now + expiry
                self._replicate(["expire", found, expiry])
            return found_keys

    # Dict-like access, as Zato's caches offer it

    def __getitem__(self, key: Any) -> Any:
        return self.get(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Any) -> None:
        with self._lock:
            if self._live(key, self._clock()) is None:
                raise KeyError(key)
            self.delete(key)

    def __contains__(self, key: Any) -> bool:
        return self.has_key(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator:
        return iter(self.keys())

    def keys(self) -> list:
        now = self._clock()
        with self._lock:
            return [key for key, entry in self._items.items() if not entry.expires_at or now < entry.expires_at]

    def values(self) -> list:
        return [value for _, value in self.items()]

    def items(self) -> list:
        now = self._clock()
        with self._lock:
            return [(key, entry.value) for key, entry in self._items.items()
                    if not entry.expires_at or now < entry.expires_at]

    iterkeys, itervalues, iteritems = keys, values, items

    # ############################################################################################
    # Changes made in another worker

    def apply_remote(self, change: list) -> None:
        """ Applies one change another worker made (what `_replicate` sent), without sending it on. """
        op, args = change[0], change[1:]
        now, wall = self._clock(), time.time()
        with self._lock:
            if op == "set":
                key, encoded, expiry, version = args[0], args[1], args[2], tuple(args[3])
                entry = self._live(key, now)
                if entry is not None and entry.version > version:
                    return  # a later write is already here
                self._set_entry(key, decode_value(encoded), expiry, now, wall, version, entry)
            elif op == "delete":
                key, version = args[0], tuple(args[1])
                entry = self._items.get(key)
                if entry is not None and entry.version <= version:
                    del self._items[key]
            elif op == "expire":
                entry = self._live(args[0], now)
                if entry is not None:
                    entry.expiry, entry.expires_at = args[1], now + args[1]
            elif op == "touch":
                entry = self._live(args[0], now)
                if entry is not None and entry.expiry:
                    entry.expires_at = now + entry.expiry
            elif op == "clear":
                self._items.clear()
            else:
                logger.warning("cache %r: unknown change %r from another worker ignored (are all workers on one "
                               "version?)", self.name, op)


def _add_matching_methods() -> None:
    """ Zato's get_by_prefix ... expire_contains_any: one method per operation and matcher. """
    for kind in MATCHERS:
        for operation, implementation in (("get", Cache._get_matching), ("set", Cache._set_matching),
                                          ("delete", Cache._delete_matching), ("expire", Cache._expire_matching)):
            def method(self, *args, _kind=kind, _implementation=implementation, **kwargs):
                return _implementation(self, _kind, *args, **kwargs)
            method.__name__ = f"{operation}_{kind}"
            method.__qualname__ = f"Cache.{method.__name__}"
            method.__doc__ = f"{operation.capitalize()} the str keys that match ({kind.replace('_', ' ')}) `key`."
            setattr(Cache, method.__name__, method)


_add_matching_methods()


# ################################################################################################
# Every cache of a worker, and carrying changes to the other workers


class Replicator:
    """ Sends the changes made in this worker to the other workers, in the order they were made.
    Callers (threads or the trio loop) only append to a queue; one task sends. """

    MAX_BATCH = 200

    def __init__(self, server: Any) -> None:
        self.server = server
        self.pending: deque[list] = deque()
        self.enabled = True  # False once it is known that there is no other worker
        self._wakeup: trio.Event | None = None

    def push(self, change: list) -> None:
        if not self.enabled:
            return
        self.pending.append(change)
        token = getattr(self.server, "trio_token", None)
        if token is not None and self._wakeup is not None:
            try:
                token.run_sync_soon(self._wake, idempotent=True)
            except trio.RunFinishedError:
                pass

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        from zato.server.notify import LocalTransport
        self._wakeup = trio.Event()
        task_status.started()
        while True:
            if not self.pending:
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self.server.transport is None:  # set once tasks have started
                await trio.sleep(0.01)
            transport = self.server.transport
            if isinstance(transport, LocalTransport):  # one process: nobody to tell
                self.enabled = False
                self.pending.clear()
                continue
            while self.pending:
                batch = [self.pending.popleft() for _ in range(min(self.MAX_BATCH, len(self.pending)))]
                message = json.dumps({"action": STATE_CHANGED, "payload": {"changes": batch},
                                      "origin": self.server.pid}, separators=(",", ":")).encode()
                try:
                    await transport.publish(message)
                except Exception:
                    logger.exception("could not send %d cache change(s) to the other workers; they may differ from "
                                     "this one until the keys are set again", len(batch))


class CacheAPI:
    """ `self.cache`: Zato's CacheAPI. `default` is the default cache; `get_cache('builtin',
    name)` any other; `builtin` maps names to caches. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.replicator = Replicator(server)
        self.builtin: dict[str, Cache] = {}
        self.caches = {CACHE_TYPE: self.builtin}
        self._lock = threading.Lock()

    @property
    def default(self) -> Cache:
        """ The cache created with `is_default`, else the one called `default` (made on first use). """
        chosen = None
        for cache in list(self.builtin.values()):  # a copy: another thread may create a cache meanwhile
            if cache.is_default and cache.is_active and not cache.implicit:
                chosen = cache
        return chosen or self._implicit_default()

    def _implicit_default(self) -> Cache:
        cache = self.builtin.get(DEFAULT_CACHE)
        if cache is None:
            with self._lock:
                cache = self.builtin.get(DEFAULT_CACHE)
                if cache is None:
                    cache = self.builtin[DEFAULT_CACHE] = Cache(DEFAULT_CACHE, is_default=True, implicit=True,
                                                                replicate=self.replicator.push)
        return cache

    def get_cache(self, cache_type: str, name: str) -> Cache:
        """ A cache by its type (only `builtin` here: Zato's `CACHE.TYPE.BUILTIN`) and name. """
        if cache_type != CACHE_TYPE:
            raise CacheNotFound(f"cache type {cache_type!r} is not available here; only {CACHE_TYPE!r} caches exist "
                                f"(from zato.common import CACHE; CACHE.TYPE.BUILTIN)")
        cache = self._implicit_default() if name == DEFAULT_CACHE else self.builtin.get(name)
        if cache is None:
            raise CacheNotFound(f"no built-in cache named {name!r}; existing: {', '.join(sorted(self.builtin)) or 'none'}"
                                f" (create it with the service zato.cache.builtin.create, e.g. from a start-up "
                                f"callable, docs/services.md)")
        if not cache.is_active:
            raise CacheNotFound(f"built-in cache {name!r} is not active (is_active=False); create it again with "
                                f"is_active=True to use it")
        return cache

    def get_builtin_cache(self, name: str) -> Cache:
        return self.get_cache(CACHE_TYPE, name)

    # Called through notifications, in every worker

    def create(self, name: str, options: dict[str, Any]) -> Cache:
        """ Creates a cache, or changes the settings of an existing one, keeping its keys. """
        with self._lock:
            cache = self.builtin.get(name)
            if cache is None:
                cache = self.builtin[name] = Cache(name, replicate=self.replicator.push, **options)
            else:
                cache.update_config(implicit=False, **options)
        return cache

    def delete(self, name: str) -> None:
        with self._lock:
            self.builtin.pop(name, None)

    def apply_remote(self, changes: list) -> None:
        for change in changes:
            name = change[0]
            cache = self._implicit_default() if name == DEFAULT_CACHE else self.builtin.get(name)
            if cache is None:
                logger.debug("a change to cache %r that this worker does not have was ignored", name)
                continue
            cache.apply_remote(change[1:])


def api_of(server: Any) -> CacheAPI:
    return CACHES.get_or_create(server, lambda: CacheAPI(server))


def caches_of(server: Any) -> dict[str, Cache]:
    """ Every built-in cache of this worker, by name. """
    return api_of(server).builtin


# ################################################################################################
# Hooks


FIELDS = ("max_size", "max_item_size", "extend_expiry_on_get", "extend_expiry_on_set", "is_active", "is_default")


def _create(server: Any, payload: dict[str, Any]) -> None:
    options = {key: payload[key] for key in FIELDS if key in payload}
    api_of(server).create(payload["name"], options)


def _delete(server: Any, payload: dict[str, Any]) -> None:
    api_of(server).delete(payload["name"])


def _state_changed(server: Any, payload: dict[str, Any]) -> None:
    api_of(server).apply_remote(payload.get("changes") or [])


def _service_cache(service: Any) -> CacheAPI:
    return api_of(service.server)


@hookimpl
def register_internal_services(register):
    register("zato.builtin.services_cache")


@hookimpl
def register_notification_handlers(register):
    register("cache.builtin.create", _create)
    register("cache.builtin.delete", _delete)
    register(STATE_CHANGED, _state_changed)


@hookimpl
def register_service_attributes(register):
    register("cache", _service_cache)


@hookimpl
def register_tasks(register, server):
    api = api_of(server)

    async def sweep(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        while True:
            await trio.sleep(SWEEP_SECONDS)
            for cache in list(api.builtin.values()):
                expired = cache.delete_expired()
                if expired:
                    logger.debug("cache %r: %d expired key(s) dropped", cache.name, len(expired))

    register("replicate", api.replicator.run)
    register("sweep-expired", sweep)
