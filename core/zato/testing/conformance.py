""" The conformance kit: the suites every outgoing connection type and every listener type pass,
against their real remote end. Its reference is docs/conformance.md (each check, the protocols,
the versions); a check that fails says which behaviour is missing and links to its section there.

Outgoing connections (`zato.registry.OutgoingConnectionType`) pass `OutgoingConnectionConformance`:
connect, ping, reconnect after an outage, live edit, delete, unknown names, bad config, close on
shutdown. A plugin runs it against its real remote end:

```python
from zato.testing.conformance import OutgoingConnectionConformance

class TestSMTPConformance(OutgoingConnectionConformance):
    connection_type = "smtp"            # OutgoingConnectionType.name
    object_type = "email_smtp"          # its ObjectType.name
    conformance_version = "1.0"         # the kit this suite was written against (optional)

    @pytest.fixture
    async def peer(self):               # a `Peer` (below) around a real server on 127.0.0.1
        ...
```

The suite starts a Zato server in-process with every installed plugin, creates the connection
through the admin API (secrets through their own call), and drives the peer. `server_settings`
sets server.conf values in the suite's servers (both suites have it), e.g. an opt-in plugin
switched on in `[deploy_internal]` by its module, as `zato.plugins.switch_on_line` spells it:
`server_settings = {"deploy_internal": {"zato_plugin_ibm_mq": True}}`.

Listener channels (`zato.registry.ListenerType`) pass `ListenerConformance` the same way, with a
`source` fixture (a `ListenerSource`) around their real backend: start, live edit, delete,
backend down then back, bad definitions, a failing service, a stop with an item in hand. The
reference listener type, on queues in RAM (`MemoryBroker`, like trio's `MemoryListener`), is
`memory_listener_type()`; tests/test_listeners.py runs the suite against it. A listener plugin
declares the request attribute it adds (`register_request_attributes`: `self.request.memory`).

Versions (`CONFORMANCE_VERSION`, "major.minor"): a new check or a stricter check bumps the minor
version; a changed `Peer` or `ListenerSource` protocol (a method added, removed or asked to do
something else) bumps the major version. A suite declaring `conformance_version` with an older
major version is skipped, saying what to update; a check newer than the declared version says so
when it fails. The changelog is in docs/conformance.md.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
import weakref
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, NoReturn, Protocol
from urllib.parse import quote

import httpx
import pytest
import trio

from zato.registry import Kind
from zato.testing._servers import admin_auth, create_test_server_dir, run_server

CONFORMANCE_VERSION = "1.0"
""" The kit's version: the minor part grows with a new or stricter check, the major part with a
changed `Peer` or `ListenerSource` protocol (docs/conformance.md#versions). """

DOCS = "docs/conformance.md"


# ################################################################################################
# Checks, versions, failure messages


class ConformanceFailure(AssertionError):
    """ A check of the kit failed: the message names the check, the behaviour that is missing,
    the likely fix and the section of docs/conformance.md about it. """


@dataclass(frozen=True)
class Check:
    """ One check of a suite (a `test_*` method): `anchor` is its section in docs/conformance.md,
    `title` the behaviour it proves, `since` the kit version that added it or made it stricter. """
    anchor: str
    title: str
    since: str = "1.0"

    @property
    def link(self) -> str:
        return f"{DOCS}#{self.anchor}"


def check(anchor: str, title: str, since: str = "1.0") -> Callable[[Any], Any]:
    """ Marks a suite's test method as the check `title`, documented at docs/conformance.md#`anchor`. """
    def mark(function: Any) -> Any:
        function.conformance_check = Check(anchor, title, since)
        return function
    return mark


def conformance_checks(suite: type) -> dict[str, Check]:
    """ The checks of a suite class: test method name -> its `Check` (None for a test a subclass
    added without marking it). """
    return {name: getattr(getattr(suite, name), "conformance_check", None)
            for name in dir(suite) if name.startswith("test_") and callable(getattr(suite, name))}


def parse_version(version: Any) -> tuple[int, int]:
    """ "1.0" -> (1, 0); ValueError naming the expected spelling otherwise. """
    match = re.fullmatch(r"(\d+)\.(\d+)", str(version).strip()) if isinstance(version, (str, int, float)) else None
    if match is None:
        raise ValueError(f"conformance_version = {version!r} is not a version of the conformance kit: use "
                         f"\"major.minor\", such as {CONFORMANCE_VERSION!r} (zato.testing.conformance.CONFORMANCE_VERSION)")
    return int(match[1]), int(match[2])


def version_problem(declared: Any, kit: str = CONFORMANCE_VERSION) -> str | None:
    """ Why a suite declaring `conformance_version = declared` should not run against this kit
    (its major version differs), or None if it should (None declared: it runs). """
    if declared is None:
        return None
    major, _ = parse_version(declared)
    kit_major, _ = parse_version(kit)
    if major < kit_major:
        return (f"this suite was written against conformance kit {declared} (conformance_version) but the kit is "
                f"{kit}: a new major version changes the Peer/ListenerSource protocol, so its checks would fail for "
                f"the wrong reasons; update your peer or source as {DOCS}#changelog says for every version up to "
                f"{kit_major}.0, then set conformance_version = \"{kit}\"")
    if major > kit_major:
        return (f"this suite was written against conformance kit {declared} (conformance_version) but this Zato has "
                f"kit {kit}: upgrade Zato to one with kit {major}.x, or set conformance_version to a {kit_major}.x "
                f"version and follow that kit's protocols")
    return None


def _one_line(exc: BaseException) -> str:
    """ "Type: text" of an exception on one line (an assertion pytest rewrote spans several). """
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class _Suite:
    """ What both suites share: the version gate and the failure messages. """
    conformance_version: str | None = None  # the kit version a subclass was written against, e.g. "1.0"
    _current_check: Check | None = None

    @pytest.fixture(autouse=True)
    def _conformance_kit_check(self, request: Any) -> None:
        """ Records which check runs (for its failure messages) and skips the kit's checks for a
        suite written against another major version of the kit. """
        current = getattr(request.function, "conformance_check", None)
        if request.instance is not None:
            request.instance._current_check = current
        if current is None:
            return  # a test of the plugin's own in the subclass: not the kit's business
        try:
            problem = version_problem(self.conformance_version)
        except ValueError as exc:
            pytest.fail(f"{type(self).__name__}: {exc}", pytrace=False)
        if problem:
            pytest.skip(f"{type(self).__name__}: {problem}")

    def fail(self, what: str, fix: str, cause: BaseException | None = None) -> NoReturn:
        """ Fails the running check: `what` went wrong (with the reply or error text), `fix` is
        what to change; the message names the check and links to its section. """
        current = self._current_check
        detail = f" [{_one_line(cause)}]" if cause is not None and _one_line(cause) not in what else ""
        if current is None:
            message = f"conformance kit: {what}{detail}; {fix} (see {DOCS})"
        else:
            message = f"check {current.title!r}: {what}{detail}; {fix} (see {current.link})"
            declared = self.conformance_version
            if declared is not None and parse_version(current.since) > parse_version(declared):
                message += (f" [this check is new or stricter in kit {current.since}, after the {declared} this "
                            f"suite declares: see {DOCS}#changelog]")
        raise ConformanceFailure(message) from cause

    def expect(self, condition: Any, what: str, fix: str) -> None:
        """ `fail(what, fix)` unless `condition`. """
        if not condition:
            self.fail(what, fix)

    async def in_thread(self, function: Callable[[Any], Any], argument: Any, what: str, fix: str) -> Any:
        """ `function(argument)` in a worker thread (a Peer's or a source's method); an exception
        it raises fails the check with `what` and `fix`, the exception's text appended. """
        try:
            return await trio.to_thread.run_sync(function, argument)
        except Exception as exc:
            self.fail(f"{what} [{_one_line(exc)}]", fix, exc)


# ################################################################################################
# Outgoing connections


class Peer(Protocol):
    """ What a plugin's `peer` fixture yields for `OutgoingConnectionConformance`: the real remote
    end of its connection type, driven by the suite (docs/conformance.md#the-peer-protocol). The
    methods that take a connection get the object the OutgoingConnectionType's
    `create(server, definition)` returned, as services see it (`self.out.<accessor>[name]`). """

    def definition(self, name: str) -> dict[str, Any]:
        """ The fields of a connection that reaches this peer, as POSTed to the admin API (the
        suite adds "name"): no secrets, which `secrets` gives. """

    def secrets(self) -> dict[str, str]:
        """ Secret field -> value, each set through the admin API's secrets call after the
        definition is created ({} if the connection type has none). """

    def use(self, connection: Any) -> None:
        """ A real round trip through `connection` (runs in a worker thread): write and read back,
        send and check receipt. Raises if it fails: the suite expects it to fail while the peer is
        stopped and to work again after `start`. """

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        """ `definition` (name included) changed so that it still reaches this peer but in a way
        `check_edit` can see (another database, user, path prefix): a live edit. """

    def check_edit(self, connection: Any) -> None:
        """ Asserts that `connection` works as the edited definition says (runs in a worker
        thread): the change `edited` made is what the remote end sees. """

    def assert_closed(self, connection: Any) -> None:
        """ Asserts that `connection` released what it held (sockets, pools), ideally as the remote
        end sees it (its client list); it is called after the connection was replaced, deleted or
        the server stopped. """

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        """ (definition, field) pairs the admin API must refuse with a 400 whose errors name that
        field: a missing required field, a wrong type, a secret in the body. """

    async def stop(self) -> None:
        """ The remote end goes away: connections through it fail, ping reports it. """

    async def start(self) -> None:
        """ It comes back at the same address, with the same state (users, passwords). """


def _with_settings(base_dir: Path, settings: dict[str, dict[str, Any]], **config: dict[str, Any]) -> Path:
    merged = {section: dict(values) for section, values in settings.items()}
    for section, values in config.items():
        merged.setdefault(section, {}).update(values)
    return create_test_server_dir(base_dir, **merged)


class OutgoingConnectionConformance(_Suite):
    """ The suite every outgoing connection type passes (docs/conformance.md#outgoing-checks). A
    subclass names its `connection_type` and `object_type` and provides a `peer` fixture (a `Peer`
    around a real remote end); `server_settings` sets server.conf values in its servers;
    `conformance_version` says which version of the kit it was written against. """
    connection_type: str = ""
    object_type: str = ""
    name = "conformance connection"
    server_settings: dict[str, dict[str, Any]] = {}     # server.conf section -> {key: value}

    @pytest.fixture
    async def zato(self, tmp_path):
        """ A running server (graceful_timeout short, so replaced connections close quickly) and an
        admin client. """
        base_dir = _with_settings(tmp_path / "server", self.server_settings, main={"graceful_timeout": 0.3})
        async with run_server(base_dir) as server:
            # admin writes need Content-Type: application/json, with or without a body
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as client:
                client.server = server
                yield client

    def url(self, name: str = "") -> str:
        return f"/zato/api/objects/{self.object_type}" + (f"/{quote(name, safe='')}" if name else "")

    def _types(self) -> str:
        return (f"connection_type = {self.connection_type!r} must be your OutgoingConnectionType.name and "
                f"object_type = {self.object_type!r} its ObjectType.name")

    async def create(self, zato: Any, peer: Peer, name: str | None = None) -> Any:
        """ Creates the connection through the admin API (its secrets through their own call) and
        returns the connection object the server built. """
        name = name or self.name
        reply = await zato.post(self.url(), json={**peer.definition(name), "name": name})
        self.expect(reply.status_code == 201,
                    f"creating the connection from Peer.definition({name!r}) through the admin API answered "
                    f"{reply.status_code}: {reply.text}",
                    f"Peer.definition must return fields your ObjectType accepts (no 'name', no secrets: "
                    f"Peer.secrets gives those); a 404 means {self._types()}")
        for secret, value in peer.secrets().items():
            reply = await zato.put(f"{self.url(name)}/secrets/{secret}", json={"value": value})
            self.expect(reply.status_code == 204,
                        f"setting secret {secret!r} from Peer.secrets through the admin API answered "
                        f"{reply.status_code}: {reply.text}",
                        "Peer.secrets must name only fields your ObjectType declares as secrets")
        try:
            return self.connection(zato, name)
        except LookupError as exc:
            self.fail(f"the server has no connection {name!r} after it was created",
                      f"{self._types()}; the connection could not be built if your OutgoingConnectionType's "
                      f"create(server, definition) raised (the server log says why)", exc)

    def connection(self, zato: Any, name: str | None = None) -> Any:
        """ The connection object the server holds under `name` (LookupError if there is none). """
        server = zato.server
        outconn_type = server.registry.get(Kind.OUTGOING_CONNECTION_TYPES, self.connection_type)
        return server.outgoing.map(outconn_type.accessor)[name or self.name]

    async def ping(self, zato: Any, name: str | None = None) -> dict[str, Any]:
        """ The admin API's ping of the connection: {"ok": True, ...} or {"ok": False, "error": ...}. """
        reply = await zato.post(f"/zato/api/outgoing/{self.connection_type}/{quote(name or self.name, safe='')}/ping")
        self.expect(reply.status_code == 200,
                    f"the admin API's ping of the connection answered {reply.status_code}: {reply.text}",
                    f"{self._types()}; a 404 naming the connection means it could not be built")
        return reply.json()

    _USE_FIX = ("the object your OutgoingConnectionType's create(server, definition) returns must reach the peer "
                "Peer.definition describes, and Peer.use must make a real round trip through it")

    # ############################################################################################

    @check("connects-and-is-used", "a new connection connects and is used")
    async def test_connects_and_is_used(self, zato, peer):
        """ Proves that a connection created through the admin API (Peer.definition, then
        Peer.secrets) is built by the OutgoingConnectionType's `create(server, definition)`, that
        its `ping()` succeeds while the peer is up, and that a real round trip (Peer.use) works
        through it. To pass: `create` returns a working connection for the definition and its
        secrets, `ping()` returns without raising when the remote end answers. """
        connection = await self.create(zato, peer)
        ping = await self.ping(zato)
        self.expect(ping["ok"], f"the ping of a new connection to a running peer failed: {ping.get('error')!r}",
                    "your connection's ping() must return without raising while the remote end answers (a cheap "
                    "real round trip: NOOP, PING, SELECT 1); check that create(server, definition) reads every "
                    "field Peer.definition and Peer.secrets set")
        await self.in_thread(peer.use, connection, "a round trip through a new connection (Peer.use) failed",
                             self._USE_FIX)

    @check("outage-and-reconnect", "ping reports an outage and the connection reconnects when the peer is back")
    async def test_ping_reports_an_outage_and_it_reconnects_when_the_peer_is_back(self, zato, peer):
        """ Proves that while the peer is down (Peer.stop) the admin API's ping says so with an
        error text and a round trip fails, and that once it is back (Peer.start, same address) the
        same connection object works again within 15 s, with no edit or restart, and ping is ok.
        To pass: the connection's `ping()` makes a real round trip and raises (with a message)
        when it cannot; a use after an outage drops the broken socket and reconnects (a pool
        replaces dead connections) instead of failing for ever. """
        connection = await self.create(zato, peer)
        await self.in_thread(peer.use, connection, "a round trip before the outage (Peer.use) failed", self._USE_FIX)
        await peer.stop()
        ping = await self.ping(zato)
        self.expect(not ping["ok"], f"ping says ok while the peer is stopped: {ping}",
                    "your connection's ping() must make a real round trip to the remote end (not report a cached "
                    "state or an open socket) and raise when it fails; Peer.stop must really take the peer away")
        self.expect(ping["error"], f"ping failed while the peer is stopped but without an error text: {ping}",
                    "the exception your connection's ping() raises must say what went wrong (its str() is the error)")
        try:
            await trio.to_thread.run_sync(peer.use, connection)
        except Exception:
            pass
        else:
            self.fail("a round trip through the connection (Peer.use) worked while the peer was stopped",
                      "Peer.stop must make the remote end unreachable, and the connection must not answer from a "
                      "cache: Peer.use must reach the peer")
        await peer.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                await trio.to_thread.run_sync(peer.use, connection)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.fail(f"the connection did not work again within 15 s after the peer came back (Peer.start): "
                              f"Peer.use still fails [{_one_line(exc)}]",
                              "your connection must notice a broken socket and reconnect on a later use (or its pool "
                              "must replace dead connections) instead of failing for ever; Peer.start must bring the "
                              "peer back at the same address", exc)
                await trio.sleep(0.2)
        ping = await self.ping(zato)
        self.expect(ping["ok"], f"round trips work again after the outage but ping still fails: {ping.get('error')!r}",
                    "your connection's ping() must reconnect as a use does, not report the broken connection")

    @check("live-edit", "a live edit rebuilds the connection")
    async def test_a_live_edit_rebuilds_the_connection(self, zato, peer):
        """ Proves that a PUT of a changed definition (Peer.edited) replaces the connection with a
        new object built for the new definition (Peer.use and Peer.check_edit pass through it), and
        that the replaced one is closed once graceful_timeout (0.3 s here) is over
        (Peer.assert_closed). To pass: the OutgoingConnectionType's `create(server, definition)`
        builds a new connection from every field it is given (no cache keyed by name), and the
        connection's `close()` releases its sockets and pools. """
        old = await self.create(zato, peer)
        await self.in_thread(peer.use, old, "a round trip before the edit (Peer.use) failed", self._USE_FIX)
        edited = peer.edited({**peer.definition(self.name), "name": self.name})
        reply = await zato.put(self.url(self.name), json=edited)
        self.expect(reply.status_code == 200,
                    f"the PUT of Peer.edited's definition answered {reply.status_code}: {reply.text}",
                    "Peer.edited must return a whole valid definition (it gets one, name included) that your "
                    "ObjectType accepts")
        new = self.connection(zato)
        self.expect(new is not old,
                    "after the PUT of the edited definition the server still holds the old connection object",
                    "your OutgoingConnectionType's create(server, definition) must build a new connection for the new "
                    "definition, not return a cached one")
        await self.in_thread(peer.use, new, "a round trip through the rebuilt connection (Peer.use) failed",
                             self._USE_FIX)
        await self.in_thread(peer.check_edit, new,
                             "the rebuilt connection does not work as the edited definition says (Peer.check_edit)",
                             "create(server, definition) must use every field of the definition it gets (Peer.edited "
                             "changed one); Peer.check_edit must check what Peer.edited changed")
        await trio.sleep(0.6)  # past graceful_timeout: the replaced connection is closed
        await self._assert_closed(peer, old, "the connection replaced by the edit was not closed after graceful_timeout")

    async def _assert_closed(self, peer: Peer, connection: Any, what: str) -> None:
        try:
            peer.assert_closed(connection)
        except Exception as exc:
            self.fail(f"{what} (Peer.assert_closed) [{_one_line(exc)}]",
                      "your connection's close() must release what it holds (sockets, pools, threads) - the server "
                      "calls it when a connection is replaced, deleted or the server stops; a connection without "
                      "close() is never closed", exc)

    @check("delete", "a deleted connection is gone and closed")
    async def test_a_deleted_connection_is_gone_and_closed(self, zato, peer):
        """ Proves that after a DELETE of the definition the server no longer has the connection (a
        lookup raises LookupError "no outgoing connection '<name>'") and that the connection is
        closed (Peer.assert_closed). To pass: the connection's `close()` releases what it holds. """
        connection = await self.create(zato, peer)
        await self.in_thread(peer.use, connection, "a round trip before the delete (Peer.use) failed", self._USE_FIX)
        reply = await zato.delete(self.url(self.name))
        self.expect(reply.status_code == 204, f"the DELETE of the definition answered {reply.status_code}: {reply.text}",
                    f"{self._types()}")
        pattern = f"no outgoing connection {self.name!r}"
        try:
            self.connection(zato)
        except LookupError as exc:
            self.expect(re.search(pattern, str(exc)),
                        f"a lookup of the deleted connection raised LookupError({str(exc)!r}), which does not say "
                        f"{pattern!r}",
                        "a facade or accessor of your connection type must raise the server's LookupError for a name "
                        "it does not have")
        else:
            self.fail("the server still has the connection after the DELETE of its definition",
                      "a deleted definition must remove its connection: do not keep connections by name outside the "
                      "server's map (your OutgoingConnectionType's create is called once per definition)")
        await trio.sleep(0.6)
        await self._assert_closed(peer, connection, "the deleted connection was not closed after graceful_timeout")

    @check("unknown-names", "an unknown name lists the ones that exist")
    async def test_unknown_names_list_the_ones_that_exist(self, zato, peer):
        """ Proves that looking up a name the server does not have raises LookupError listing the
        names it has. To pass: nothing to do unless the connection type has its own lookup (a
        `facade`): then it must raise the server's LookupError, or one that lists the names. """
        await self.create(zato, peer)
        try:
            self.connection(zato, "no such connection")
        except LookupError as exc:
            self.expect(repr(self.name) in str(exc),
                        f"a lookup of an unknown name raised LookupError({str(exc)!r}), which does not list the "
                        f"existing connection {self.name!r}",
                        "a lookup of a name that does not exist must say which names do (the server's map does so)")
        else:
            self.fail("a lookup of a connection that does not exist did not raise LookupError",
                      "an accessor or facade of your connection type must raise LookupError for an unknown name")

    @check("bad-config", "a bad definition is refused naming the field")
    async def test_bad_config_is_refused_naming_the_field(self, zato, peer):
        """ Proves that every definition of Peer.bad_definitions is refused by the admin API with a
        400 whose errors name the field given with it. To pass: the ObjectType's fields (type,
        required, minimum, choices, secret) or its `check=` refuse it with {"field": ..., "error":
        ...}; a secret in the body is refused for secret fields. """
        for definition, field_name in peer.bad_definitions():
            reply = await zato.post(self.url(), json={"name": "bad", **definition})
            self.expect(reply.status_code == 400,
                        f"the admin API accepted the bad definition {definition} from Peer.bad_definitions "
                        f"(answered {reply.status_code}: {reply.text}), which must be refused naming {field_name!r}",
                        f"your ObjectType must refuse it: declare the field {field_name!r} with its type, required=True, "
                        f"minimum or secret=True, or refuse it in the ObjectType's check= with "
                        f"{{'field': {field_name!r}, 'error': ...}}")
            try:
                named = {e["field"] for e in reply.json()["errors"]}
            except (KeyError, TypeError, ValueError) as exc:
                self.fail(f"the bad definition {definition} was refused, but the 400's body is not "
                          f"{{'errors': [{{'field': ..., 'error': ...}}, ...]}}: {reply.text}",
                          "refuse it through the ObjectType (its fields or check=), whose errors carry a field each",
                          exc)
            self.expect(field_name in named,
                        f"the bad definition {definition} was refused, but its errors name {sorted(map(str, named))}, "
                        f"not {field_name!r}: {reply.text}",
                        f"the refusal must carry {{'field': {field_name!r}, ...}}: a field's own validation does, "
                        f"and so must the errors your ObjectType's check= returns")

    @check("server-stop", "connections close when the server stops")
    async def test_connections_close_when_the_server_stops(self, tmp_path, peer):
        """ Proves that a connection in use is closed when its server stops (Peer.assert_closed).
        To pass: the connection's `close()` releases what it holds; it is called once the calls
        in flight are over. """
        base_dir = _with_settings(tmp_path / "stopping", self.server_settings)
        async with run_server(base_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as zato:
                zato.server = server
                connection = await self.create(zato, peer)
                await self.in_thread(peer.use, connection, "a round trip through the connection (Peer.use) failed",
                                     self._USE_FIX)
        await self._assert_closed(peer, connection, "the connection was not closed when the server stopped")


# ################################################################################################
# Listener channels: the reference listener type, on queues in RAM


class MemoryBroker:
    """ Named queues in RAM that outlive the servers using them, so a test can see what a server
    left behind (messages given back, never acknowledged). A message a receiver took stays
    "unacked" until `ack`; `nack`, and a receiver closed with messages it did not ack, put them
    back at the head of their queue, as a real broker redelivers them. `stop()` makes the broker
    unreachable (receivers waiting fail, new ones cannot open) until `start()`. Listener
    definitions name a broker by its `name`, looked up in this process. """

    instances: "weakref.WeakValueDictionary[str, MemoryBroker]" = weakref.WeakValueDictionary()

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"memory-broker-{uuid.uuid4().hex[:8]}"
        self.queues: dict[str, deque[MemoryMessage]] = defaultdict(deque)
        self.unacked: dict[str, dict[int, MemoryMessage]] = defaultdict(dict)
        self.dead_letters: dict[str, list[Any]] = defaultdict(list)
        self.is_up = True
        self.opened = 0  # receivers opened, ever
        self._ids = itertools.count(1)
        self._changed = trio.Event()
        MemoryBroker.instances[self.name] = self

    def put(self, queue: str, payload: Any) -> None:
        self.queues[queue].append(MemoryMessage(next(self._ids), queue, payload))
        self._wake()

    def pending(self, queue: str) -> list[Any]:
        """ Payloads not acknowledged yet: taken (in delivery order), then queued. """
        return [m.payload for m in self.unacked[queue].values()] + [m.payload for m in self.queues[queue]]

    def stop(self) -> None:
        self.is_up = False
        self._wake()

    def start(self) -> None:
        self.is_up = True
        self._wake()

    def check_up(self, queue: str) -> None:
        if not self.is_up:
            raise ConnectionError(f"memory broker {self.name!r} is down (queue {queue!r})")

    def give_back(self, message: "MemoryMessage") -> None:
        if self.unacked[message.queue].pop(message.id, None) is not None:
            self.queues[message.queue].appendleft(message)
            self._wake()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@dataclass
class MemoryMessage:
    id: int
    queue: str
    payload: Any
    deliveries: int = 0


@dataclass(frozen=True)
class MemoryDelivery:
    """ `self.request.memory` in a service a memory listener invoked. """
    broker: str
    queue: str
    message_id: int
    deliveries: int  # 1 the first time, more after a nack or a receiver that went away


class MemoryReceiver:
    """ A receiver of one memory listener definition: {"broker", "queue", "service"}. """

    def __init__(self, broker: MemoryBroker, definition: dict[str, Any]) -> None:
        self.broker = broker
        self.queue = definition["queue"]
        self.service = definition["service"]
        self.held: dict[int, MemoryMessage] = {}
        # redeliver_attempts: the broker redelivers what is given back, as MQ does after a
        # backout (Invocation.delivery_count), at most that many deliveries in all
        self.redeliver_attempts = int(definition.get("redeliver_attempts") or 0)
        if self.redeliver_attempts:
            from zato.server.listeners import FailurePolicy
            self.failure_policy = FailurePolicy(attempts=self.redeliver_attempts, backoff=None)

    async def receive(self) -> MemoryMessage:
        await trio.lowlevel.checkpoint()  # trio's rule: an async call is always a checkpoint
        while True:  # cancel-safe: a message is taken only after the last checkpoint
            self.broker.check_up(self.queue)
            queue = self.broker.queues[self.queue]
            if queue:
                message = queue.popleft()
                message.deliveries += 1
                self.broker.unacked[self.queue][message.id] = self.held[message.id] = message
                return message
            await self.broker.wait_for_change()

    def to_invocation(self, message: MemoryMessage) -> Any:
        from zato.server.listeners import Invocation
        return Invocation(self.service, message.payload, attributes={"memory": MemoryDelivery(
            self.broker.name, self.queue, message.id, message.deliveries)},
            delivery_count=message.deliveries - 1 if self.redeliver_attempts else None)

    async def ack(self, message: MemoryMessage) -> None:
        self.broker.unacked[self.queue].pop(message.id, None)
        self.held.pop(message.id, None)

    async def nack(self, message: MemoryMessage, error: BaseException) -> None:
        self.held.pop(message.id, None)
        self.broker.give_back(message)

    async def dead_letter(self, message: MemoryMessage, error: BaseException | None) -> None:
        self.broker.dead_letters[self.queue].append(message.payload)

    def close(self) -> None:
        for message in reversed(list(self.held.values())):  # what it did not ack goes back, in order
            self.broker.give_back(message)
        self.held.clear()


@asynccontextmanager
async def open_memory_receiver(server: Any, definition: dict[str, Any]) -> AsyncIterator[MemoryReceiver]:
    broker = MemoryBroker.instances.get(definition["broker"])
    if broker is None:
        raise LookupError(f"no memory broker named {definition['broker']!r} in this process")
    broker.check_up(definition["queue"])
    broker.opened += 1
    receiver = MemoryReceiver(broker, definition)
    try:
        yield receiver
    finally:
        receiver.close()


def _check_memory_listener(data: dict[str, Any], *, partial: bool = False) -> list[dict[str, str]]:
    queue = data.get("queue")
    if isinstance(queue, str) and not all(c.isalnum() or c in "._-" for c in queue):
        return [{"field": "queue", "error": f"{queue!r} is not a queue name: use letters, digits, '.', '_', '-'"}]
    return []


def _validate_memory_listener(definition: dict[str, Any]) -> list[dict[str, str]]:
    broker = definition.get("broker")
    if broker not in MemoryBroker.instances:
        known = ", ".join(sorted(MemoryBroker.instances)) or "none"
        return [{"field": "broker", "error": f"no memory broker named {broker!r} in this process (there are: "
                                             f"{known}); create a zato.testing.conformance.MemoryBroker first"}]
    return []


def memory_object_type(name: str = "memory_listener") -> Any:
    """ The object type of memory listener definitions. """
    from zato.registry import Field, ObjectType
    return ObjectType(name, (
        Field("broker", required=True, description="The name of a MemoryBroker in this process"),
        Field("queue", required=True, min_length=1, description="The queue to take messages from",
              example="orders"),
        Field("service", required=True, references="service", description="The service each message goes to"),
        Field("redeliver_attempts", "int", default=0, minimum=0,
              description="0: the core retries a failing item in place; N: the broker redelivers what is given back "
                          "(as an MQ backout), at most N deliveries in all, then the dead letter"),
    ), description="A listener on a queue in RAM (the test kit's reference listener)", check=_check_memory_listener)


def memory_listener_type(name: str = "memory", object_type: str = "memory_listener", *,
                         failure_policy: Any = None, restart: Any = None, placement: str = "every_worker") -> Any:
    """ The reference listener type: takes messages from a `MemoryBroker` queue. Register it with
    `memory_object_type(object_type)` from a plugin's `register_channel_types`. """
    from zato.registry import ListenerType
    return ListenerType(name, object_type, "Messages from a queue in RAM (the test kit's reference listener)",
                        open=open_memory_receiver, validate=_validate_memory_listener, placement=placement,
                        failure_policy=failure_policy, restart=restart)


class MemorySource:
    """ The `ListenerSource` of the memory listener type, around one `MemoryBroker`. """
    request_attribute = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()

    def definition(self, name: str, service: str) -> dict[str, Any]:
        return {"broker": self.broker.name, "queue": f"queue-{uuid.uuid4().hex[:6]}", "service": service}

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        return {**definition, "queue": definition["queue"] + "-edited"}

    async def put(self, definition: dict[str, Any], payload: dict[str, Any]) -> None:
        self.broker.put(definition["queue"], payload)

    def pending(self, definition: dict[str, Any]) -> list[Any]:
        return self.broker.pending(definition["queue"])

    def dead_letters(self, definition: dict[str, Any]) -> list[Any] | None:
        return self.broker.dead_letters[definition["queue"]]

    async def stop(self) -> None:
        self.broker.stop()

    async def start(self) -> None:
        self.broker.start()

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        good = self.definition("bad", RECORD_SERVICE)
        return [({**good, "queue": "no spaces allowed"}, "queue"),  # the object type's check: 400
                ({k: v for k, v in good.items() if k != "service"}, "service"),  # the schema: 400
                ({**good, "broker": "no such broker"}, "broker")]  # the listener type's validate: 400


# ################################################################################################
# Listener channels: the suite


class ListenerSource(Protocol):
    """ What a listener plugin's `source` fixture yields for `ListenerConformance`: its real
    backend, driven by the suite (docs/conformance.md#the-listenersource-protocol). Definitions
    are dicts as POSTed to the admin API; the suite adds "name". """
    request_attribute: str
    """ The attribute the listener adds to `self.request` ("ibm_mq": `self.request.ibm_mq`), as the
    plugin registers it with `register_request_attributes`. """

    def definition(self, name: str, service: str) -> dict[str, Any]:
        """ Fields (no secrets) of a definition invoking `service` and listening on a place of its
        own (a new queue, topic or directory each call, so that tests do not see each other's items). """

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        """ `definition` changed to listen somewhere else on the same backend (a live edit); the
        old place keeps existing, so that the suite can put an item there and see nobody takes it. """

    async def put(self, definition: dict[str, Any], payload: dict[str, Any]) -> None:
        """ Sends `payload` (a JSON object) where `definition` listens; its listener must give the
        service the same object as `self.request.payload`. """

    def pending(self, definition: dict[str, Any]) -> list[Any]:
        """ Payloads the backend still holds where `definition` listens, not acknowledged (taken
        ones first, then queued), as the backend itself says. """

    def dead_letters(self, definition: dict[str, Any]) -> list[Any] | None:
        """ Payloads in its dead-letter destination; None if the listener has none (it logs them). """

    async def stop(self) -> None:
        """ The backend goes away: open receivers fail, new ones cannot open. """

    async def start(self) -> None:
        """ It comes back, with what it held. """

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        """ (definition, the field the refusal must name) pairs that the admin API must refuse
        (400 naming the field, or 409 with the field in "details"), and that the runtime must not
        run when stored by other means. """


RECORD_SERVICE = "listener.conformance.record"
FAIL_SERVICE = "listener.conformance.fail"
SLOW_SERVICE = "listener.conformance.slow"

LISTENER_SERVICES = f'''
import trio

from zato.server.service import Service
from zato.testing.conformance import listener_log


class Record(Service):
    name = {RECORD_SERVICE!r}

    async def handle(self):
        nested = await self.invoke({RECORD_SERVICE + ".nested"!r})
        listener_log(self.server).record(self, "done", nested=nested)


class Nested(Service):
    """ Invoked by Record: what a service a listener's service invokes gets. """
    name = {RECORD_SERVICE + ".nested"!r}

    async def handle(self):
        self.response.payload = sorted(name for name, value in self.request.attributes.items() if value is not None)


class Fail(Service):
    name = {FAIL_SERVICE!r}

    async def handle(self):
        listener_log(self.server).record(self, "failed")
        raise RuntimeError("the listener conformance suite's service fails on purpose")


class Slow(Service):
    """ Sleeps `payload["sleep"]` seconds (an item in hand when a test stops or edits). """
    name = {SLOW_SERVICE!r}

    async def handle(self):
        log = listener_log(self.server)
        log.record(self, "started")
        await trio.sleep(float(self.request.payload.get("sleep", 0.5)))
        log.record(self, "done")
'''


@dataclass
class ListenerCall:
    """ One service call the suite's services saw. """
    service: str
    outcome: str  # started, done, failed
    channel: str
    payload: Any
    attributes: dict[str, Any]  # each read as `self.request.<name>`
    cid: str
    nested: Any = None  # the attribute names a service this one invoked got


@dataclass
class ListenerLog:
    calls: list[ListenerCall] = field(default_factory=list)

    def record(self, service: Any, outcome: str, nested: Any = None) -> None:
        request = service.request
        attributes = {name: getattr(request, name) for name in request.attributes}
        self.calls.append(ListenerCall(service.name, outcome, request.channel, request.payload, attributes,
                                       service.cid, nested))

    def of(self, item_id: str, outcome: str = "done") -> list[ListenerCall]:
        return [call for call in self.calls
                if isinstance(call.payload, dict) and call.payload.get("id") == item_id and call.outcome == outcome]


_listener_logs: "weakref.WeakKeyDictionary[Any, ListenerLog]" = weakref.WeakKeyDictionary()


def listener_log(server: Any) -> ListenerLog:
    """ What the suite's services saw in `server`. """
    log = _listener_logs.get(server)
    if log is None:
        log = _listener_logs[server] = ListenerLog()
    return log


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """ Polls `check()` until it returns something true (returned), failing with `what` at `timeout`. """
    deadline = trio.current_time() + timeout
    while True:
        value = check()
        if value:
            return value
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await trio.sleep(0.02)


class ListenerConformance(_Suite):
    """ The suite every listener type passes (docs/conformance.md#listener-checks). A subclass
    names its `listener_type` and `object_type` and provides a `source` fixture (a
    `ListenerSource` around a real backend). The suite starts servers in-process (override
    `listener_server_dir` to prepare their directory), deploys its services through the admin API
    and creates definitions through it. Its timeouts follow the listener type's failure policy and
    restart back-off. `conformance_version` says which version of the kit it was written against. """
    listener_type: str = ""
    object_type: str = ""
    name = "conformance listener"
    graceful_timeout = 3.0
    server_settings: dict[str, dict[str, Any]] = {}     # server.conf section -> {key: value}

    @pytest.fixture
    def listener_server_dir(self, tmp_path: Path) -> Callable[..., Path]:
        """ `make(name, **main)`: a server directory for the suite's servers. """
        def make(name: str, **main: Any) -> Path:
            return _with_settings(tmp_path / name, self.server_settings,
                                  main={"graceful_timeout": self.graceful_timeout, **main})
        return make

    @asynccontextmanager
    async def serve(self, base_dir: Path) -> AsyncIterator[Any]:
        """ A running server and an admin client (`client.server`) with the suite's services deployed. """
        async with run_server(base_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as client:
                client.server = server
                reply = await client.post("/zato/api/deploy/listener_conformance_services.py",
                                          content=LISTENER_SERVICES.encode(), headers={"content-type": "text/x-python"})
                self.expect(reply.status_code == 200,
                            f"deploying the suite's services answered {reply.status_code}: {reply.text}",
                            "the suite's servers must allow hot deployment through the admin API: do not switch it "
                            "off in server_settings or listener_server_dir")
                yield client

    @pytest.fixture
    async def zato(self, listener_server_dir):
        async with self.serve(listener_server_dir("server")) as client:
            yield client

    # Helpers

    def url(self, name: str = "") -> str:
        return f"/zato/api/objects/{self.object_type}" + (f"/{quote(name, safe='')}" if name else "")

    def runtime(self, zato: Any) -> Any:
        return zato.server.channels[self.listener_type]

    async def create(self, zato: Any, source: ListenerSource, service: str, name: str | None = None) -> dict[str, Any]:
        """ Creates a definition from `source.definition(name, service)` through the admin API. """
        name = name or self.name
        definition = {**source.definition(name, service), "name": name}
        reply = await zato.post(self.url(), json=definition)
        self.expect(reply.status_code == 201,
                    f"creating the definition from ListenerSource.definition({name!r}, {service!r}) through the admin "
                    f"API answered {reply.status_code}: {reply.text}",
                    f"ListenerSource.definition must return fields your ObjectType accepts (no 'name', no secrets), "
                    f"invoking the service it is given; a 404 means object_type = {self.object_type!r} must be your "
                    f"ListenerType's object type")
        return definition

    async def state(self, zato: Any, name: str | None = None) -> dict[str, Any] | None:
        """ The listener's entry in GET /zato/api/listeners. """
        reply = await zato.get("/zato/api/listeners")
        self.expect(reply.status_code == 200, f"GET /zato/api/listeners answered {reply.status_code}: {reply.text}",
                    "the listeners' admin route must be on (the listeners plugin)")
        for state in reply.json()["listeners"]:
            if state["listener_type"] == self.listener_type and state["name"] == (name or self.name):
                return state
        return None

    _STATE_FIXES = {
        "running": "your ListenerType's open(server, definition) must open the receiver (an async context manager) "
                   "without raising while the backend is up; the listener's last_error says why it did not, and a "
                   "missing entry means listener_type = {listener_type!r} is not your ListenerType.name",
        "stopped": "the receiver's receive() must be cancellable (an await that is a trio checkpoint) and its context "
                   "must exit when the definition is deactivated, deleted or replaced",
        "backing_off": "while the backend is down (ListenerSource.stop) the receiver's receive() must raise, not wait "
                       "for ever, and open(server, definition) must raise too: the runtime then backs off and reopens it",
    }

    async def wait_state(self, zato: Any, state: str, name: str | None = None,
                         timeout: float | None = None, fix: str = "") -> dict[str, Any]:
        """ The listener's entry once it is in `state`; fails the check (with `fix`, or what usually
        keeps a listener from that state) if it is not within `timeout`. """
        wait = timeout or self.restart_wait(zato)
        deadline = trio.current_time() + wait
        while True:
            found = await self.state(zato, name)
            if found is not None and found["state"] == state:
                return found
            if trio.current_time() > deadline:
                self.fail(f"listener {name or self.name!r} is not {state} within {wait:g} s: {found}",
                          fix or self._STATE_FIXES.get(state, "see the listener's last_error").format(
                              listener_type=self.listener_type))
            await trio.sleep(0.02)

    async def wait_for(self, check: Callable[[], Any], what: str, fix: str, timeout: float = 10.0) -> Any:
        """ `wait_until(check, what, timeout)`, failing the running check with `fix`. """
        try:
            return await wait_until(check, what, timeout)
        except AssertionError as exc:
            self.fail(str(exc), fix)

    def restart_wait(self, zato: Any) -> float:
        """ Long enough for a few restarts of the listener type's back-off. """
        return 5 + 3 * self.runtime(zato).restart.maximum

    def delivery_wait(self, zato: Any) -> float:
        """ Long enough for every attempt of the listener type's failure policy. """
        policy = self.runtime(zato).policy
        wait = policy.backoff.maximum if policy.backoff is not None else 0.0
        return 5 + policy.attempts * (wait + (policy.timeout or 1))

    _DELIVERY_FIX = ("your receiver's receive() must return the item ListenerSource.put sent, and its "
                     "to_invocation(item) an Invocation of the definition's service with the payload as sent")
    _ACK_FIX = ("your receiver's ack(item) must acknowledge the item in the backend once its service returned, and "
                "ListenerSource.pending must list what the backend still holds")

    # The suite

    @check("listener-start", "a definition starts and its items reach its service")
    async def test_a_definition_starts_and_its_items_reach_its_service(self, zato, source):
        """ Proves that a definition created through the admin API starts (state running), that an
        item put where it listens (ListenerSource.put) reaches its service once, with the payload,
        the channel's name and the plugin's request attribute (ListenerSource.request_attribute,
        not given to services that service invokes), that it is acknowledged (ListenerSource.pending
        empty) and counted. To pass: the ListenerType's `open(server, definition)` opens a receiver
        whose `receive()` returns the item, `to_invocation(item)` gives
        `Invocation(service, payload, attributes={request_attribute: ...})` and `ack(item)`
        acknowledges it; the plugin registers the attribute (`register_request_attributes`). """
        definition = await self.create(zato, source, RECORD_SERVICE)
        await self.wait_state(zato, "running")
        await source.put(definition, {"id": "first"})
        log = listener_log(zato.server)
        calls = await self.wait_for(lambda: log.of("first"), "the service got the item", self._DELIVERY_FIX)
        self.expect(len(calls) == 1, f"the service got the item {len(calls)} times: {calls}",
                    "receive() must return an item once (take it from the backend, do not just peek at it)")
        [call] = calls
        self.expect(call.channel == self.name, f"the service's self.request.channel is {call.channel!r}, not the "
                    f"definition's name {self.name!r}", "the runtime sets it: do not set the channel in to_invocation")
        self.expect(call.payload == {"id": "first"}, f"the service's self.request.payload is {call.payload!r}, not "
                    "the {'id': 'first'} ListenerSource.put sent", "to_invocation(item) must give the payload as sent "
                    "(JSON decoded to the same object)")
        attribute = source.request_attribute
        self.expect(attribute in call.attributes,
                    f"the service has no self.request.{attribute}: its request attributes are {sorted(call.attributes)}",
                    f"register it from the plugin (register_request_attributes: register({attribute!r}, ...)) and give "
                    f"it in to_invocation: Invocation(..., attributes={{{attribute!r}: ...}}); "
                    f"ListenerSource.request_attribute must name it")
        await self.wait_for(lambda: source.pending(definition) == [], "the item is acknowledged", self._ACK_FIX)
        await self.wait_for(lambda: self.runtime(zato).states()[0]["succeeded"], "it is counted",
                            "the runtime counts an item once its service returned and ack(item) returned: ack must not "
                            "raise or hang")
        state = await self.state(zato)
        self.expect(call.attributes[attribute] is not None, f"the service's self.request.{attribute} is None",
                    f"to_invocation(item) must give the item's details under {attribute!r} in Invocation(attributes=...)")
        self.expect(call.nested == [], f"a service the listener's service invokes has channel attributes: {call.nested}",
                    "give the attributes only through Invocation(attributes=...), never on a shared object: the "
                    "runtime keeps them to the listener's own invocation")
        counts = (state["received"], state["succeeded"], state["failed"], state["dead_lettered"])
        self.expect(counts == (1, 1, 0, 0),
                    f"the listener counts (received, succeeded, failed, dead_lettered) = {counts}, not (1, 1, 0, 0), "
                    f"for one item its service handled: {state}",
                    "receive() must return each item once and ack(item) must not raise")

    @check("listener-live-edit", "a live edit replaces the receiver, losing nothing and handling nothing twice")
    async def test_a_live_edit_replaces_the_receiver_losing_nothing_and_handling_nothing_twice(self, zato, source):
        """ Proves that a PUT of an edited definition (ListenerSource.edited) lets the item in hand
        finish and be acknowledged on the old receiver, then the new receiver listens where the new
        definition says, while nothing takes items from the old place any more, and no item is
        handled twice. To pass: the receiver's `receive()` is cancellable, `ack(item)` works while
        the old receiver is being stopped, its context (`open`) closes it when it exits, and
        `open(server, definition)` listens where the definition it gets says. """
        old = await self.create(zato, source, SLOW_SERVICE)
        await self.wait_state(zato, "running")
        log = listener_log(zato.server)
        await source.put(old, {"id": "in hand", "sleep": 0.5})
        await self.wait_for(lambda: log.of("in hand", "started"), "the slow service started", self._DELIVERY_FIX)
        new = {**source.edited(old), "name": self.name}
        reply = await zato.put(self.url(self.name), json=new)
        self.expect(reply.status_code == 200,
                    f"the PUT of ListenerSource.edited's definition answered {reply.status_code}: {reply.text}",
                    "ListenerSource.edited must return a whole valid definition (it gets one) listening elsewhere on "
                    "the same backend")
        await self.wait_for(lambda: log.of("in hand"), "the item in hand is finished on the old receiver",
                            "an edit stops the old receiver gracefully: the item in hand finishes and is acked; "
                            "your receiver must not abort it when receive() is cancelled")
        await source.put(new, {"id": "after the edit", "sleep": 0})
        await self.wait_for(lambda: log.of("after the edit"), "the new definition's receiver took an item",
                            "open(server, definition) must listen where the edited definition says (ListenerSource."
                            "edited changed it), and ListenerSource.put must send where the definition it gets listens")
        await source.put(old, {"id": "to the old place", "sleep": 0})
        await trio.sleep(0.3)
        done = [c.payload["id"] for c in log.calls if c.outcome == "done"]
        self.expect(done == ["in hand", "after the edit"],
                    f"the services finished {done}, not ['in hand', 'after the edit']: an item put where the old "
                    f"definition listened, after the edit, was handled, or an item was lost or handled twice",
                    "the old receiver must stop listening once the definition is edited: close it (and what it "
                    "holds in the backend) when open's context exits")
        started = log.of("in hand", "started")
        self.expect(len(started) == 1, f"the item in hand was handled {len(started)} times across the edit",
                    "ack(item) on the old receiver must work while it is being stopped, so that the backend does not "
                    "deliver the item again to the new one")
        pending = source.pending(old)
        self.expect(pending == [{"id": "to the old place", "sleep": 0}],
                    f"where the old definition listened the backend holds {pending}, not only the item put there after "
                    f"the edit",
                    "the item in hand must be acknowledged there (ack before the receiver closes) and nothing taken "
                    "after the edit")
        pending = source.pending(new)
        self.expect(pending == [], f"where the new definition listens the backend still holds {pending}", self._ACK_FIX)

    @check("listener-deactivate-delete", "a deactivated or deleted definition stops listening")
    async def test_a_deactivated_or_deleted_definition_stops_listening(self, zato, source):
        """ Proves that a PATCH of is_active=False stops the listener (state stopped) and leaves
        the items that arrive in the backend, that activating it again takes what waited, and that
        a DELETE stops it for good. To pass: the receiver's `receive()` is cancellable and its
        context closes it without taking (or dropping) what the backend holds; a new `open` for
        the same definition takes what waited. """
        definition = await self.create(zato, source, RECORD_SERVICE)
        await self.wait_state(zato, "running")
        reply = await zato.patch(self.url(self.name), json={"is_active": False})
        self.expect(reply.status_code == 200, f"a PATCH of is_active=False answered {reply.status_code}: {reply.text}",
                    "your ObjectType must allow is_active (every object type has it unless it replaces the fields)")
        await self.wait_state(zato, "stopped")
        await self._nothing_taken(zato, source, definition, "while inactive", "deactivated")
        reply = await zato.patch(self.url(self.name), json={"is_active": True})
        self.expect(reply.status_code == 200, f"a PATCH of is_active=True answered {reply.status_code}: {reply.text}",
                    "your ObjectType must allow is_active")
        log = listener_log(zato.server)
        await self.wait_for(lambda: log.of("while inactive"), "active again, it takes what waited",
                            "a new open(server, definition) for the same definition must take what waited in the backend")
        reply = await zato.delete(self.url(self.name))
        self.expect(reply.status_code == 204, f"the DELETE of the definition answered {reply.status_code}: {reply.text}",
                    "the definition must be deletable through the admin API")
        await self.wait_state(zato, "stopped")
        await self._nothing_taken(zato, source, definition, "after the delete", "deleted")

    async def _nothing_taken(self, zato: Any, source: ListenerSource, definition: dict[str, Any], item_id: str,
                             how: str) -> None:
        await source.put(definition, {"id": item_id})
        await trio.sleep(0.3)
        log = listener_log(zato.server)
        self.expect(not log.of(item_id), f"an item put after the definition was {how} reached its service",
                    "the receiver must stop taking items once its context exits: close it there (and its "
                    "subscription or consumer in the backend)")
        pending = source.pending(definition)
        self.expect(pending == [{"id": item_id}],
                    f"after the definition was {how} the backend holds {pending}, not the item put since",
                    "a stopped receiver must leave items in the backend (not take and drop them); "
                    "ListenerSource.pending must list them")

    @check("listener-backend-down", "a backend that goes down is reopened with back-off when it is back")
    async def test_a_backend_that_goes_down_is_reopened_with_back_off_when_it_is_back(self, zato, source):
        """ Proves that when the backend goes away (ListenerSource.stop) the listener reports it
        (state backing_off, with last_error, last_error_at and next_attempt_at), keeps trying while
        it is down, runs again once it is back (ListenerSource.start) keeping the last error, and
        that items flow again. To pass: the receiver's `receive()` raises when the backend goes
        away (it does not hang), `open(server, definition)` raises while it is down and succeeds
        once it is back. """
        definition = await self.create(zato, source, RECORD_SERVICE)
        await self.wait_state(zato, "running")
        await source.stop()
        state = await self.wait_state(zato, "backing_off")
        self.expect(state["last_error"] and state["last_error_at"] and state["next_attempt_at"] >= state["last_error_at"],
                    f"backing off, the listener's state lacks last_error, last_error_at or a next_attempt_at after "
                    f"it: {state}",
                    "the exception receive() or open raises must say what went wrong (its str() is last_error)")
        first = state["restarts"]
        await self.wait_for(lambda: self.runtime(zato).states()[0]["restarts"] > first,
                            "it keeps trying while the backend is down", self._STATE_FIXES["backing_off"],
                            self.restart_wait(zato))
        await source.start()
        state = await self.wait_state(zato, "running", fix="open(server, definition) must succeed again once the "
                                      "backend is back (ListenerSource.start must bring it back at the same address)")
        self.expect(state["last_error"], f"running again, the listener's state lost its last error: {state}",
                    "the runtime keeps it; a receiver must not clear it")
        await source.put(definition, {"id": "after the outage"})
        log = listener_log(zato.server)
        await self.wait_for(lambda: log.of("after the outage"), "items flow again",
                            "the reopened receiver must take items again: " + self._DELIVERY_FIX)

    @check("listener-bad-definition", "a bad definition is refused naming the field")
    async def test_a_bad_definition_is_refused_naming_the_field(self, zato, source):
        """ Proves that every definition of ListenerSource.bad_definitions is refused by the admin
        API (400 whose errors name the field, or 409 naming it in "details") and does not run, and
        that the same definitions stored without the admin API (an older version, enmasse, a hand
        edit) are not run either: refused at reload with an error naming the field, or listed as
        invalid with a problem naming it. To pass: the ObjectType's fields and `check=`, or the
        ListenerType's `validate(definition)`, refuse each one with {"field": ..., "error": ...}. """
        fix = ("your ObjectType's fields (type, required, minimum) or check=, or your ListenerType's "
               "validate(definition), must refuse it with {{'field': {field!r}, 'error': ...}}")
        for number, (definition, field_name) in enumerate(source.bad_definitions()):
            name = f"bad {number}"
            reply = await zato.post(self.url(), json={**definition, "name": name})
            self.expect(reply.status_code in (400, 409),
                        f"the admin API accepted the bad definition {definition} from ListenerSource.bad_definitions "
                        f"(answered {reply.status_code}: {reply.text}), which must be refused naming {field_name!r}",
                        fix.format(field=field_name))
            body = reply.json()
            named = {e["field"] for e in body.get("errors", [])} if reply.status_code == 400 else body["details"]
            self.expect(field_name in named,
                        f"the bad definition {definition} was refused ({reply.status_code}) but the refusal names "
                        f"{named!r}, not {field_name!r}: {body}", fix.format(field=field_name))
            state = await self.state(zato, name)
            self.expect(state is None, f"the refused definition {definition} runs: {state}",
                        "the runtime must not start a definition the admin API refused (a core bug: report it)")
        # Stored without the admin API (an older version, enmasse, a hand edit): not run either.
        for number, (definition, field_name) in enumerate(source.bad_definitions()):
            await trio.to_thread.run_sync(zato.server.odb.put_object, self.object_type, f"stored {number}",
                                          {k: v for k, v in definition.items() if k != "name"})
        reply = await zato.post("/zato/api/config/reload")
        self.expect(reply.status_code in (200, 204), f"POST /zato/api/config/reload answered {reply.status_code}: "
                    f"{reply.text}", "a reload must not fail on bad definitions: validate must return errors, not raise")
        for number, (definition, field_name) in enumerate(source.bad_definitions()):
            state = await self.state(zato, f"stored {number}")
            error = zato.server.config_errors.get(f"{self.object_type}:stored {number}", "")
            self.expect((state is None and field_name in error) or (
                state["state"] == "invalid" and any(field_name in problem for problem in state["problems"])),
                f"the bad definition {definition}, stored without the admin API, is neither refused at reload with an "
                f"error naming {field_name!r} (config error: {error!r}) nor listed as invalid with a problem naming it "
                f"(state: {state})",
                "the same validation must refuse it when it is loaded: put the rule in the ObjectType's fields or "
                "check=, or the ListenerType's validate(definition), not only in a service or the admin API")

    @check("listener-failing-service", "a failing service is retried, then dead-lettered")
    async def test_a_failing_service_is_retried_then_dead_lettered(self, zato, source):
        """ Proves that an item whose service keeps failing is tried as often as the listener
        type's failure policy says (attempts), then dead-lettered once, counted, no longer held by
        the backend, and found in its dead-letter destination (ListenerSource.dead_letters, or
        None if the listener has none). To pass: the receiver's `dead_letter(item, error)` moves the
        item to the dead-letter destination (or logs it) and `ack(item)` then removes it; `receive()`
        does not hand the item out again while the runtime retries it. """
        definition = await self.create(zato, source, FAIL_SERVICE)
        await self.wait_state(zato, "running")
        await source.put(definition, {"id": "doomed"})
        policy = self.runtime(zato).policy
        state = await self.wait_for(lambda: [s for s in self.runtime(zato).states() if s["dead_lettered"] == 1],
                                    "the item is dead-lettered",
                                    "after the failure policy's last attempt the runtime calls your receiver's "
                                    "dead_letter(item, error): it must not raise", self.delivery_wait(zato))
        failed = len(listener_log(zato.server).of("doomed", "failed"))
        self.expect(failed == policy.attempts,
                    f"the failing service ran {failed} times, the failure policy's attempts are {policy.attempts}",
                    "receive() must not return the item again while the runtime retries it in place (a backend that "
                    "redelivers counts deliveries: Invocation(delivery_count=...))")
        state = await self.state(zato)
        counts = (state["received"], state["failed"], state["retried"], state["succeeded"], state["dead_lettered"])
        expected = (1, policy.attempts, policy.attempts - 1, 0, 1)
        self.expect(counts == expected,
                    f"the listener counts (received, failed, retried, succeeded, dead_lettered) = {counts}, not "
                    f"{expected}: {state}", "receive() must return the item once; dead_letter and ack must not raise")
        pending = source.pending(definition)
        self.expect(pending == [], f"the backend still holds the dead-lettered item: {pending}",
                    "after dead_letter(item, error) the runtime calls ack(item): it must remove the item from the backend")
        dead = source.dead_letters(definition)
        self.expect(dead is None or dead == [{"id": "doomed"}],
                    f"the dead-letter destination holds {dead}, not the one failed item [{{'id': 'doomed'}}]",
                    "dead_letter(item, error) must put the payload there once (ListenerSource.dead_letters returns "
                    "None if your listener has no dead-letter destination)")

    @check("listener-stop-finishes", "a stop finishes the item in hand")
    async def test_a_stop_finishes_the_item_in_hand(self, listener_server_dir, source):
        """ Proves that when the server stops with an item in hand that can finish within
        graceful_timeout, its service finishes, the item is acknowledged and the listener ends
        stopped. To pass: `receive()` is cancellable and `ack(item)` still works while the server
        stops; the receiver's context closes it only after that. """
        async with self.serve(listener_server_dir("stopping")) as zato:
            definition = await self.create(zato, source, SLOW_SERVICE)
            await self.wait_state(zato, "running")
            log = listener_log(zato.server)
            await source.put(definition, {"id": "in hand", "sleep": 0.5})
            await self.wait_for(lambda: log.of("in hand", "started"), "the slow service started", self._DELIVERY_FIX)
            runtime = self.runtime(zato)
        finished = len(log.of("in hand"))
        self.expect(finished == 1, f"the item in hand finished {finished} times during the stop, not once "
                    f"(graceful_timeout {self.graceful_timeout:g} s)",
                    "a stop cancels receive() only: the receiver must not cut off the item in hand")
        pending = source.pending(definition)
        self.expect(pending == [], f"after the stop the backend still holds {pending}",
                    "ack(item) must work while the server stops: close the backend connection only when the "
                    "receiver's context exits")
        states = [s["state"] for s in runtime.states()]
        self.expect(states == ["stopped"], f"after the stop the listener's states are {states}, not ['stopped']",
                    "the receiver's context must exit once receive() is cancelled")

    @check("listener-stop-gives-back", "a stop gives back the item that cannot finish in time")
    async def test_a_stop_gives_back_the_item_that_cannot_finish_in_time(self, listener_server_dir, source):
        """ Proves that when the server stops with an item in hand that cannot finish within
        graceful_timeout (0.3 s here), its service is cancelled and the item is given back to the
        backend (still pending, to be delivered again) and counted as nacked. To pass: the
        receiver's `nack(item, error)` gives the item back (or its close gives back what it did
        not acknowledge) instead of dropping it. """
        async with self.serve(listener_server_dir("stopping", graceful_timeout=0.3)) as zato:
            definition = await self.create(zato, source, SLOW_SERVICE)
            await self.wait_state(zato, "running")
            log = listener_log(zato.server)
            await source.put(definition, {"id": "too slow", "sleep": 30})
            await self.wait_for(lambda: log.of("too slow", "started"), "the slow service started", self._DELIVERY_FIX)
            runtime = self.runtime(zato)
        self.expect(not log.of("too slow"), "the 30 s service finished during a stop with graceful_timeout 0.3 s",
                    "the runtime cancels it at graceful_timeout (a core bug: report it)")
        pending = source.pending(definition)
        self.expect(pending == [{"id": "too slow", "sleep": 30}],
                    f"the item that could not finish was not given back: the backend holds {pending}",
                    "nack(item, error) must give the item back to the backend (or the receiver's close must give "
                    "back what it did not ack), so that it is delivered again later")
        nacked = runtime.states()[0]["nacked"]
        self.expect(nacked == 1, f"the listener counts {nacked} nacked items, not 1",
                    "nack(item, error) must not raise")
