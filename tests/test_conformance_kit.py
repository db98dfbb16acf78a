""" The conformance kit itself (zato.testing.conformance, docs/conformance.md): the outgoing suite
passes against a reference connection type in RAM; run (in a pytest of its own) against the same
type broken on purpose - connections never closed, bad definitions accepted - its failures name the
check, the missing behaviour and the fix, with a link to the check's section; a suite written
against an older major version of the kit is skipped saying what to update; every check of both
suites has a docstring and a section in docs/conformance.md, so that the kit and its reference
cannot drift apart. """

from __future__ import annotations

import re
import textwrap
import uuid
from pathlib import Path

import pytest

from zato.testing.conformance import (
    CONFORMANCE_VERSION, Check, ConformanceFailure, ListenerConformance, OutgoingConnectionConformance,
    conformance_checks, parse_version, version_problem,
)

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
SUITES = (OutgoingConnectionConformance, ListenerConformance)

# ################################################################################################
# A reference outgoing connection type on a store in RAM, with the faults a plugin can have

MEMORY_OUTGOING = '''
""" Outgoing connections to a `MemoryEndpoint` (a dict in RAM) of this process, looked up by name.
ZATO_TEST_MEMORY_OUTGOING_BROKEN (comma-separated) breaks it on purpose: "never_closed" (close()
does nothing), "accepts_bad" (no minimum on `retries`). """

import os

from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, hookimpl

BROKEN = set(filter(None, os.environ.get("ZATO_TEST_MEMORY_OUTGOING_BROKEN", "").split(",")))
ENDPOINTS = {}


class MemoryEndpoint:
    """ The remote end: keys and values, reachable while `is_up`, with the connections open to it. """

    def __init__(self, name, token):
        self.name, self.token = name, token
        self.data = {}
        self.is_up = True
        self.open = set()
        ENDPOINTS[name] = self


class MemoryConnection:
    def __init__(self, server, definition):
        self.endpoint_name = definition["endpoint"]
        self.prefix = definition["prefix"]
        self.token = definition.get("token")
        self.closed = False

    def endpoint(self):
        endpoint = ENDPOINTS.get(self.endpoint_name)
        if endpoint is None or not endpoint.is_up:
            raise ConnectionError(f"memory endpoint {self.endpoint_name!r} is not reachable")
        if self.token != endpoint.token:
            raise PermissionError("wrong token")
        endpoint.open.add(id(self))
        return endpoint

    def ping(self):
        self.endpoint()

    def set(self, key, value):
        self.endpoint().data[f"{self.prefix}:{key}"] = value

    def get(self, key):
        return self.endpoint().data.get(f"{self.prefix}:{key}")

    def close(self):
        if "never_closed" in BROKEN:
            return
        self.closed = True
        endpoint = ENDPOINTS.get(self.endpoint_name)
        if endpoint is not None:
            endpoint.open.discard(id(self))


ENDPOINT = ObjectType("outgoing_memory", (
    Field("name", required=True),
    Field("endpoint", required=True, description="The name of a MemoryEndpoint in this process"),
    Field("prefix", required=True, description="What keys are stored under"),
    Field("retries", "int", default=0, minimum=None if "accepts_bad" in BROKEN else 0),
    Field("token", secret=True),
))


@hookimpl
def register_connectors(register):
    register(Connector(ENDPOINT, OutgoingConnectionType("memory_out", "outgoing_memory", "out.memory",
                                                        MemoryConnection)))
'''

PEER = '''
import uuid

import pytest

from zato.testing.conformance import OutgoingConnectionConformance
from {module} import MemoryEndpoint


class MemoryPeer:
    """ The suite's `Peer` for the reference type: a MemoryEndpoint with a token. """

    def __init__(self):
        self.endpoint = MemoryEndpoint(f"endpoint-{{uuid.uuid4().hex[:8]}}", token=uuid.uuid4().hex)

    def definition(self, name):
        return {{"endpoint": self.endpoint.name, "prefix": "first"}}

    def secrets(self):
        return {{"token": self.endpoint.token}}

    def use(self, connection):
        key, value = uuid.uuid4().hex, uuid.uuid4().hex
        connection.set(key, value)
        assert connection.get(key) == value

    def edited(self, definition):
        return {{**definition, "prefix": "edited"}}

    def check_edit(self, connection):
        key = uuid.uuid4().hex
        connection.set(key, "edited")
        assert self.endpoint.data.get(f"edited:{{key}}") == "edited", "not stored under the edited prefix"

    def assert_closed(self, connection):
        assert connection.closed, "close() was not called or did not close it"
        assert id(connection) not in self.endpoint.open, "the endpoint still has it open"

    def bad_definitions(self):
        return [({{"prefix": "p"}}, "endpoint"), ({{"endpoint": self.endpoint.name, "prefix": "p", "retries": -1}}, "retries"),
                ({{"endpoint": self.endpoint.name, "prefix": "p", "token": "in the body"}}, "token")]

    async def stop(self):
        self.endpoint.is_up = False

    async def start(self):
        self.endpoint.is_up = True


@pytest.fixture
def peer():
    return MemoryPeer()


class TestMemoryConformance(OutgoingConnectionConformance):
    connection_type = "memory_out"
    object_type = "outgoing_memory"
    conformance_version = {version!r}
'''


def install(plugin_site) -> str:
    return plugin_site.add("memory_outgoing", MEMORY_OUTGOING)


class TestMemoryOutgoingConformance(OutgoingConnectionConformance):
    """ The outgoing suite against the reference type, working: the broken runs below fail only
    for what was broken. """
    connection_type = "memory_out"
    object_type = "outgoing_memory"
    conformance_version = CONFORMANCE_VERSION

    @pytest.fixture
    def peer(self, plugin_site):
        module = install(plugin_site)
        namespace: dict = {}
        exec(compile(PEER.format(module=module, version=CONFORMANCE_VERSION), "<peer>", "exec"), namespace)
        return namespace["MemoryPeer"]()


def run_suite(pytester, plugin_site, monkeypatch, broken: str, *args: str, version: str = CONFORMANCE_VERSION):
    """ The outgoing suite against the reference type broken as `broken` says, in a pytest process
    of its own (the plugin reads the fault when the server loads it). """
    monkeypatch.setenv("ZATO_TEST_MEMORY_OUTGOING_BROKEN", broken)
    module = install(plugin_site)
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(**{f"test_broken_{uuid.uuid4().hex[:6]}": PEER.format(module=module, version=version)})
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfs", "--tb=short", *args, timeout=120)


def failure_of(output: str, test: str) -> str:
    """ The ConformanceFailure message pytest printed for `test` (one line, in the test's section). """
    match = re.search(rf"_{{3,}} TestMemoryConformance\.{test} _{{3,}}\n(.*?)(?=\n_{{3,}} |\n={{3,}} )", output, re.S)
    assert match, f"no failure section for {test} in:\n{output}"
    found = re.search(r"ConformanceFailure: (.*)", match[1])
    assert found, f"no ConformanceFailure for {test} in:\n{match[1]}"
    return found[1]


def test_a_broken_connection_type_fails_naming_the_behaviour_and_the_fix(pytester, plugin_site, monkeypatch):
    result = run_suite(pytester, plugin_site, monkeypatch, "never_closed,accepts_bad")
    output = result.stdout.str()
    result.assert_outcomes(passed=3, failed=4)  # only what was broken fails
    assert set(re.findall(r"^FAILED \S+::TestMemoryConformance::(test_\w+)", output, re.M)) == {
        "test_a_live_edit_rebuilds_the_connection", "test_a_deleted_connection_is_gone_and_closed",
        "test_connections_close_when_the_server_stops", "test_bad_config_is_refused_naming_the_field"}, output

    message = failure_of(output, "test_a_live_edit_rebuilds_the_connection")
    assert message.startswith("check 'a live edit rebuilds the connection': the connection replaced by the edit "
           "was not closed after graceful_timeout (Peer.assert_closed)"), message
    assert "close() was not called or did not close it" in message, message  # the peer's own words
    assert "your connection's close() must release what it holds" in message, message
    assert "(see docs/conformance.md#live-edit)" in message, message

    message = failure_of(output, "test_a_deleted_connection_is_gone_and_closed")
    assert "check 'a deleted connection is gone and closed': the deleted connection was not closed" in message, message
    assert "docs/conformance.md#delete" in message, message

    message = failure_of(output, "test_connections_close_when_the_server_stops")
    assert "check 'connections close when the server stops': the connection was not closed when the server " \
           "stopped" in message, message
    assert "docs/conformance.md#server-stop" in message, message

    message = failure_of(output, "test_bad_config_is_refused_naming_the_field")
    assert "check 'a bad definition is refused naming the field': the admin API accepted the bad definition" in message
    assert "'retries': -1" in message and "answered 201" in message, message  # the definition and the reply
    assert "must be refused naming 'retries'" in message, message
    assert "declare the field 'retries' with its type, required=True, minimum or secret=True" in message, message
    assert "docs/conformance.md#bad-config" in message, message
    assert "assert " not in message, message  # a message, not a repr of a bare assert


def test_a_connection_that_does_not_rebuild_on_an_edit_is_told_so(pytester, plugin_site, monkeypatch):
    # A factory caching connections by name (and token, so that setting the secret still builds a new
    # one): the edit of the prefix leaves the old object in place.
    module = install(plugin_site)
    plugin = plugin_site.root / f"{module}.py"
    plugin.write_text(plugin.read_text() + textwrap.dedent('''
        _CACHE = {}
        _build = MemoryConnection


        def cached(server, definition):
            key = (definition["name"], definition.get("token"))
            return _CACHE.setdefault(key, _build(server, definition))


        ENDPOINT_TYPE = OutgoingConnectionType("memory_out", "outgoing_memory", "out.memory", cached)


        @hookimpl
        def register_connectors(register):
            register(Connector(ENDPOINT, ENDPOINT_TYPE))
    '''))
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_cached=PEER.format(module=module, version=CONFORMANCE_VERSION))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tb=short", "-k", "live_edit", timeout=120)
    result.assert_outcomes(failed=1)
    message = failure_of(result.stdout.str(), "test_a_live_edit_rebuilds_the_connection")
    assert ("check 'a live edit rebuilds the connection': after the PUT of the edited definition the server still "
            "holds the old connection object; your OutgoingConnectionType's create(server, definition) must build a "
            "new connection for the new definition, not return a cached one (see docs/conformance.md#live-edit)"
            ) in message, message


def test_a_suite_written_against_an_older_major_version_is_skipped_saying_what_to_update(pytester, plugin_site,
                                                                                          monkeypatch):
    major, _ = parse_version(CONFORMANCE_VERSION)
    older = f"{major - 1}.9" if major > 0 else None
    assert older is not None
    result = run_suite(pytester, plugin_site, monkeypatch, "", version=older)
    result.assert_outcomes(skipped=len(conformance_checks(OutgoingConnectionConformance)))
    output = result.stdout.str()
    assert f"written against conformance kit {older} (conformance_version) but the kit is {CONFORMANCE_VERSION}" in output
    assert "docs/conformance.md#changelog" in output and f'conformance_version = "{CONFORMANCE_VERSION}"' in output


FORGETFUL_LISTENER = '''
""" The reference memory listener, whose nack forgets the item instead of giving it back. """

import dataclasses
from contextlib import asynccontextmanager

from zato import hookimpl
from zato.server.listeners import Backoff, FailurePolicy
from zato.testing.conformance import memory_listener_type, memory_object_type, open_memory_receiver


@asynccontextmanager
async def open_forgetful(server, definition):
    async with open_memory_receiver(server, definition) as receiver:
        async def nack(message, error):
            receiver.held.pop(message.id, None)
            receiver.broker.unacked[receiver.queue].pop(message.id, None)
        receiver.nack = nack
        yield receiver


@hookimpl
def register_object_types(register):
    register(memory_object_type())


@hookimpl
def register_request_attributes(register):
    register("memory", "the queue and delivery of the item")


@hookimpl
def register_channel_types(register):
    listener_type = memory_listener_type(failure_policy=FailurePolicy(attempts=3, backoff=Backoff(0.05, 0.2)),
                                         restart=Backoff(0.05, 0.3))
    register(dataclasses.replace(listener_type, open=open_forgetful))
'''

FORGETFUL_SUITE = '''
import pytest

from zato.testing.conformance import ListenerConformance, MemorySource


class TestForgetfulConformance(ListenerConformance):
    listener_type = "memory"
    object_type = "memory_listener"

    @pytest.fixture
    def source(self):
        return MemorySource()
'''


def test_a_listener_that_loses_the_item_it_gives_back_is_told_to_fix_nack(pytester, plugin_site):
    from zato.plugins import DEFAULT_PLUGINS
    plugin_site.add("memory_listener", FORGETFUL_LISTENER)
    if "listeners" not in DEFAULT_PLUGINS:
        plugin_site.add("listeners", "from zato.builtin.listeners import register_http_routes\n")
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_forgetful=FORGETFUL_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tb=short", "-k", "stop_gives_back or "
                                           "definition_starts", timeout=120)
    result.assert_outcomes(passed=1, failed=1)  # what nack does not matter to passes
    output = result.stdout.str()
    found = re.search(r"ConformanceFailure: (.*)", output)
    assert found, output
    assert found[1] == (
        "check 'a stop gives back the item that cannot finish in time': the item that could not finish was not given "
        "back: the backend holds []; nack(item, error) must give the item back to the backend (or the receiver's "
        "close must give back what it did not ack), so that it is delivered again later "
        "(see docs/conformance.md#listener-stop-gives-back)"), found[1]


def test_versions_and_what_a_check_newer_than_the_declared_version_says():
    assert parse_version(CONFORMANCE_VERSION) >= (1, 0)
    assert version_problem(None) is None and version_problem(CONFORMANCE_VERSION) is None
    assert version_problem("1.7", kit="1.2") is None  # same major: it runs
    assert "upgrade Zato" in version_problem("3.0", kit="2.1")
    assert "update your peer or source" in version_problem("1.4", kit="2.0")
    with pytest.raises(ValueError, match="use \"major.minor\""):
        parse_version("one")

    suite = OutgoingConnectionConformance()
    suite.conformance_version = "1.0"
    suite._current_check = Check("live-edit", "a live edit rebuilds the connection", since="1.1")
    with pytest.raises(ConformanceFailure) as info:
        suite.fail("what broke", "how to fix it")
    assert str(info.value) == (
        "check 'a live edit rebuilds the connection': what broke; how to fix it (see docs/conformance.md#live-edit) "
        "[this check is new or stricter in kit 1.1, after the 1.0 this suite declares: see "
        "docs/conformance.md#changelog]")


# ################################################################################################
# The kit and its reference cannot drift apart


def anchors() -> set[str]:
    text = DOCS.read_text("utf-8")
    return set(re.findall(r'<a id="([^"]+)"></a>', text))


@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: suite.__name__)
def test_every_check_has_a_docstring_and_a_section_in_the_docs(suite):
    checks = conformance_checks(suite)
    assert len(checks) >= 7
    documented = anchors()
    for name, found in checks.items():
        assert found is not None, f"{suite.__name__}.{name} is not marked with @check(anchor, title)"
        doc = getattr(suite, name).__doc__ or ""
        assert "Proves" in doc and "To pass" in doc, f"{suite.__name__}.{name} needs a docstring: what it proves, " \
                                                     f"how to pass"
        assert found.anchor in documented, f"docs/conformance.md has no section <a id=\"{found.anchor}\"></a> for {name}"
        assert f"`{name}`" in DOCS.read_text("utf-8"), f"docs/conformance.md does not name {name}"
        assert parse_version(found.since) <= parse_version(CONFORMANCE_VERSION)
    assert len({c.anchor for c in checks.values()}) == len(checks), "two checks share an anchor"


def test_the_docs_name_the_kit_version_and_every_protocol_method():
    text = DOCS.read_text("utf-8")
    assert f"`CONFORMANCE_VERSION` is \"{CONFORMANCE_VERSION}\"" in text
    assert f"### {CONFORMANCE_VERSION}" in text  # its changelog entry
    assert {"changelog", "versions", "the-peer-protocol", "the-listenersource-protocol"} <= anchors()
    from zato.testing.conformance import ListenerSource, Peer
    for protocol in (Peer, ListenerSource):
        for name in [n for n in vars(protocol) if not n.startswith("_")] + list(vars(protocol).get("__annotations__", {})):
            assert f"`{protocol.__name__}.{name}" in text, f"docs/conformance.md does not describe {protocol.__name__}.{name}"
