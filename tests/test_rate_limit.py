""" API rate limiting (the `rate_limit` plugin): definitions and their errors, address matching
(IPv4, IPv6, trusted proxies), the approximate and exact backends with a deterministic clock,
limits on security definitions, REST channels and services in that order, the 429 and 403
replies and log lines, the rate-limiting article's scenario (shared/seeds/002_*.txt), and
exactness under concurrency across worker processes and servers sharing one database. """

from __future__ import annotations

import ipaddress
import sys
import time
import urllib.parse

import httpx
import pytest
import trio
from alembic import command
from sqlalchemy import inspect, select
from trio.testing import MockClock

from zato.builtin.rate_limit import (
    LIMITED_TYPES, SERVICE_SETTINGS_TYPE, AddressNotAllowed, AddressResolver, ApproximateLimiter, DatabaseLimiter,
    DefinitionError, ObjectLimits, RateLimitExceeded, counters_table, definition_problems, parse_definition,
    rate_limits, unreachable_lines,
)
from zato.builtin.rest import CHANNEL_REST
from zato.builtin.security import SECURITY, store_definition
from zato.objects import ObjectValidationError, validate
from zato.odb import ODB, alembic_config, installed_branch, sqlite_url
from zato.registry import Kind
from zato.server.http import HTTPRequest
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, run_server, set_config_value

# The rate-limiting article's service, verbatim.
SAMPLE_SERVICE = '''# -*- coding: utf-8 -*-

# Zato
from zato.server.service import Service

class Sample(Service):
    name = 'api.sample'

    def handle(self):

        # Return a simple string on response
        self.response.payload = 'Hello there!\\n'
'''

HELPER_SERVICES = '''
import os
from zato.builtin.rate_limit import RateLimitError
from zato.server.service import Service

class Pid(Service):
    """ Which worker process answered. """
    name = "test.pid"

    def handle(self):
        self.response.payload = {"pid": os.getpid()}

class CallsSample(Service):
    """ Invokes the article's service from inside a service and says what happened. """
    name = "test.calls.sample"

    def handle(self):
        try:
            self.response.payload = {"inner": self.invoke("api.sample")}
        except RateLimitError as exc:
            self.response.payload = {"refused": type(exc).__name__, "status": exc.status}
'''

USER, PASSWORD = "my.user", "password"  # the article's
HELLO = "Hello there!\n"
RATE_FIELDS = ("is_rate_limit_active", "rate_limit_type", "rate_limit_def", "rate_limit_check_parent_def")


def limits(definition: str, kind: str = "APPROXIMATE") -> dict:
    return {"is_rate_limit_active": True, "rate_limit_type": kind, "rate_limit_def": definition}


def prepare(server_dir, *, channels: dict[str, dict] | None = None, security: dict[str, dict] | None = None,
            services: dict[str, dict] | None = None, url: str | None = None) -> None:
    """ The article's service and the helpers in pickup/; objects stored as the admin API stores
    them (`channels`: url path -> extra fields; a channel is named after its path). """
    (server_dir / "pickup" / "sample.py").write_text(SAMPLE_SERVICE, "utf-8")
    (server_dir / "pickup" / "helpers.py").write_text(HELPER_SERVICES, "utf-8")
    odb = ODB(url or sqlite_url(server_dir / "work" / "zato.db"))
    try:
        odb.upgrade()
        for name, fields in (security or {}).items():
            store_definition(odb, name, **{"type": "basic_auth", "username": USER, "password": PASSWORD, **fields})
        for path, fields in (channels or {}).items():
            odb.put_object("channel_rest", path, {"url_path": path, "service": "api.sample", "methods": ["GET"],
                                                  "data_format": "json", **fields})
        for name, fields in (services or {}).items():
            odb.put_object("service_settings", name, fields)
    finally:
        odb.close()


def assert_refused(reply: httpx.Response, status: int, phrase: str) -> str:
    """ Zato's JSON error body with the cid, and not a word about the limit. Returns the cid. """
    assert reply.status_code == status, reply.text
    cid = reply.headers["x-zato-cid"]
    assert reply.json() == {"result": "Error", "cid": cid, "details": f"Error {status} {phrase}"}
    assert "/m" not in reply.text and "/d" not in reply.text and "line" not in reply.text
    return cid


def log_lines(caplog, cid: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "zato.rate_limit" and cid in r.getMessage()]


# ################################################################################################
# Definitions


def test_definition_lines_parse_in_order_with_their_numbers():
    lines = parse_definition("""
        # partners
        10.1.2.3     = 5/m
        172.16.0.0/12 = 1000/h   # the VPN
        2001:db8::/32 = 20/d
        ::1 = *

        10.9.9.9/8 = 7/m
        * = 100/m
    """)
    assert [(line.number, line.rate) for line in lines] == [(3, "5/m"), (4, "1000/h"), (5, "20/d"), (6, "*"),
                                                            (8, "7/m"), (9, "100/m")]
    assert lines[0].network == ipaddress.ip_network("10.1.2.3/32") and lines[0].limit == 5 and lines[0].window == 60
    assert lines[1].text == "172.16.0.0/12 = 1000/h" and lines[1].window == 3600  # no comment in the text
    assert lines[2].network == ipaddress.ip_network("2001:db8::/32") and lines[2].window == 86400
    assert lines[3].limit is None
    assert lines[4].network == ipaddress.ip_network("10.0.0.0/8")  # host bits allowed, as in Zato
    assert lines[5].network is None and lines[5].limit == 100
    assert parse_definition("") == [] and parse_definition(None) == [] and parse_definition("# only\n\n") == []
    assert parse_definition("* = 0/d")[0].limit == 0


@pytest.mark.parametrize(("line", "expected"), [
    ("10.0.0.1 5/m", "expected SOURCE = LIMIT, e.g. `* = 100/m`"),
    ("10.0.0.1 = 5/m = 6/m", "expected SOURCE = LIMIT"),
    ("= 5/m", "both sides of `=` are needed"),
    ("10.0.0.1 =", "both sides of `=` are needed"),
    ("10.0.0.256 = 5/m", "'10.0.0.256' is not `*`, an IP address (10.1.2.3, 2001:db8::1) or a CIDR network"),
    ("10.0.0.0/33 = 5/m", "'10.0.0.0/33' is not `*`, an IP address"),
    ("2001:db8::/129 = 5/m", "'2001:db8::/129' is not `*`"),
    ("localhost = 5/m", "'localhost' is not `*`"),
    ("any = 5/m", "'any' is not `*`"),
    ("* = 5", "the limit '5' is not N/m, N/h, N/d (requests per minute, hour or day) or `*` (no limit)"),
    ("* = /m", "the limit '/m' is not N/m"),
    ("* = 1,000/d", "the number of requests '1,000' is not a whole number (write 1000, not 1,000 or 1e3)"),
    ("* = -1/m", "the number of requests '-1' is not a whole number"),
    ("* = 1.5/m", "the number of requests '1.5' is not a whole number"),
    ("* = 5/s", "the unit 's' is not one of m (per minute), h (per hour) or d (per day)"),
    ("* = 5/M", "the unit 'M' is not one of m"),
    ("* = 5/min", "the unit 'min' is not one of m"),
])
def test_an_invalid_line_says_which_line_and_what_to_write(line, expected):
    with pytest.raises(DefinitionError) as error:
        parse_definition(f"* = *\n\n{line}")
    assert error.value.errors[0][0] == 3
    assert f"line 3: `{line}`: {expected}" in str(error.value)


def test_every_invalid_line_is_reported_at_once():
    with pytest.raises(DefinitionError) as error:
        parse_definition("10.0.0.1 = 5/s\n* = 100/m\nnope\n")
    assert [number for number, _ in error.value.errors] == [1, 3]
    assert str(error.value).startswith("line 1: `10.0.0.1 = 5/s`: the unit 's'")
    assert "line 3: `nope`: expected SOURCE = LIMIT" in str(error.value)


def test_definition_problems_are_field_errors_as_the_admin_api_lists_them():
    assert definition_problems(limits("* = 5/m")) == []
    assert definition_problems(limits("* = 5/m", "exact")) == []  # any case
    assert definition_problems({}) == []  # no limits at all
    assert definition_problems({"rate_limit_def": "* = 5/m"}) == []  # not active: fine too
    assert definition_problems(limits("* = 5/m", "FAST")) == [
        {"field": "rate_limit_type", "error": "'FAST' is not one of APPROXIMATE, EXACT"}]
    assert definition_problems(limits("# nothing yet")) == [
        {"field": "rate_limit_def", "error": "empty, so every request would be refused (403); add lines of "
                                             "SOURCE = LIMIT, e.g. `* = 100/m` or `10.0.0.0/8 = 5000/h`"}]
    assert definition_problems(limits("* = 5/m\n10.0.0.0/8 = 5/w")) == [
        {"field": "rate_limit_def", "error": "line 2: `10.0.0.0/8 = 5/w`: the unit 'w' is not one of m (per minute), "
                                             "h (per hour) or d (per day)"}]


def test_lines_that_can_never_apply_are_found():
    lines = parse_definition("10.0.0.0/8 = 5/m\n10.1.0.0/16 = 9/m\n2001:db8::/32 = 1/m\n* = 100/m\n127.0.0.1 = *")
    assert [(line.number, earlier.number) for line, earlier in unreachable_lines(lines)] == [(2, 1), (5, 4)]


def test_rate_limit_fields_are_the_same_on_every_object_type():
    def fields(object_type):
        return [(f.name, f.type, f.default, f.description) for f in object_type.fields if f.name in RATE_FIELDS]
    assert [f[0] for f in fields(SERVICE_SETTINGS_TYPE)] == list(RATE_FIELDS)
    assert fields(CHANNEL_REST) == fields(SECURITY) == fields(SERVICE_SETTINGS_TYPE)
    assert LIMITED_TYPES == ("security", "channel_rest", "service_settings")  # the order of the checks


# ################################################################################################
# Addresses


def test_the_first_matching_line_wins_and_an_unmatched_address_gets_none():
    matcher = ObjectLimits("channel_rest", "c", "APPROXIMATE", "approximate", None, parse_definition("""
        10.1.2.3 = 1/m
        10.0.0.0/8 = 2/m
        2001:db8::/32 = 3/m
        ::1 = 4/m
        127.0.0.1 = *
    """))
    rates = {address: (line.rate if line else None) for address in (
        "10.1.2.3", "10.1.2.4", "2001:db8:0:1::5", "2001:db9::5", "::1", "127.0.0.1", "::ffff:10.1.2.3",
        "::ffff:127.0.0.1", "192.0.2.1", "fe80::1%eth0", "not-an-address", None)
        for line in [matcher.match(address)]}
    assert rates == {"10.1.2.3": "1/m", "10.1.2.4": "2/m", "2001:db8:0:1::5": "3/m", "2001:db9::5": None, "::1": "4/m",
                     "127.0.0.1": "*", "::ffff:10.1.2.3": "1/m", "::ffff:127.0.0.1": "*", "192.0.2.1": None,
                     "fe80::1%eth0": None, "not-an-address": None, None: None}
    anyone = ObjectLimits("security", "s", "APPROXIMATE", "approximate", None, parse_definition("* = 5/m"))
    assert anyone.match(None).rate == "5/m" and anyone.match("2001:db8::1").rate == "5/m"  # * matches internal calls


def request_from(peer: str | None, *forwarded: str, header: bytes = b"x-forwarded-for") -> HTTPRequest:
    scope = {"headers": [(header, value.encode()) for value in forwarded]}
    headers = {header.decode(): forwarded[-1]} if forwarded else {}
    return HTTPRequest("GET", "/", b"", headers, b"", (peer, 50000) if peer else None, "cid", scope=scope)


def test_forwarded_for_counts_only_from_trusted_proxies():
    untrusting = AddressResolver([])
    assert untrusting.address_of(request_from("10.0.0.5", "192.0.2.7")) == "10.0.0.5"  # anyone can send the header
    assert untrusting.address_of(request_from(None)) is None

    resolver = AddressResolver(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert resolver.address_of(request_from("192.0.2.9", "192.0.2.7")) == "192.0.2.9"  # not a proxy we trust
    assert resolver.address_of(request_from("127.0.0.1")) == "127.0.0.1"  # a trusted peer without the header
    assert resolver.address_of(request_from("127.0.0.1", "192.0.2.7")) == "192.0.2.7"
    # a client's own entries to the left of the first untrusted hop are not believed
    assert resolver.address_of(request_from("127.0.0.1", "6.6.6.6, 192.0.2.7, 10.1.1.1")) == "192.0.2.7"
    assert resolver.address_of(request_from("127.0.0.1", "6.6.6.6", "192.0.2.7")) == "192.0.2.7"  # two header lines
    assert resolver.address_of(request_from("::1", "[2001:db8::7]:443")) == "2001:db8::7"
    assert resolver.address_of(request_from("::1", "2001:db8::7")) == "2001:db8::7"
    assert resolver.address_of(request_from("127.0.0.1", "192.0.2.7:5555")) == "192.0.2.7"
    assert resolver.address_of(request_from("127.0.0.1", "10.2.2.2, 10.3.3.3")) == "10.2.2.2"  # all trusted
    # a malformed entry: the request counts against the last trusted hop
    assert resolver.address_of(request_from("127.0.0.1", "unknown, 10.3.3.3")) == "10.3.3.3"
    assert resolver.address_of(request_from("127.0.0.1", "garbage")) == "127.0.0.1"
    other_header = AddressResolver(["127.0.0.1"], "X-Real-IP")
    assert other_header.address_of(request_from("127.0.0.1", "192.0.2.8", header=b"x-real-ip")) == "192.0.2.8"
    assert other_header.address_of(request_from("127.0.0.1", "192.0.2.8")) == "127.0.0.1"

    with pytest.raises(ValueError, match=r"\[rate_limit\] trusted_proxies: 'proxy.local' is not an IP address"):
        AddressResolver(["127.0.0.1", "proxy.local"])


# ################################################################################################
# Backends, with time under the test's control


async def test_approximate_backend_counts_fixed_windows():
    clock = MockClock()  # frozen at 0 until jumped
    limiter = ApproximateLimiter(clock=clock.current_time)
    assert [await limiter.hit("a", 3, 60) for _ in range(5)] == [True, True, True, False, False]
    assert await limiter.hit("b", 1, 60)  # keys are independent
    clock.jump(59)
    assert not await limiter.hit("a", 3, 60)  # the same minute
    clock.jump(1)
    assert [await limiter.hit("a", 3, 60) for _ in range(4)] == [True, True, True, False]  # a new minute
    assert await limiter.hit("day", 2, 86400) and await limiter.hit("day", 2, 86400)
    clock.jump(3600)
    assert not await limiter.hit("day", 2, 86400)  # calendar days, not minutes
    assert not await limiter.hit("zero", 0, 60)
    assert limiter.statistics() == {"counters": 3}  # a limit of 0 counts nothing
    assert await limiter.prune() == 2  # "a" and "b": their minute is over
    assert limiter.statistics() == {"counters": 1}


def migrated(url: str) -> str:
    odb = ODB(url)
    odb.upgrade()
    odb.close()
    return url


async def test_exact_backend_counts_in_the_database(database_url):
    clock = MockClock()
    clock.jump(1_700_000_000)  # 2023-11-14 22:13:20 UTC
    limiter = DatabaseLimiter(migrated(database_url), clock=clock.current_time)
    try:
        assert [await limiter.hit("k1", 2, 60) for _ in range(4)] == [True, True, False, False]
        assert await limiter.hit("k2", 1, 3600) and not await limiter.hit("k2", 1, 3600)
        assert not await limiter.hit("k3", 0, 60)
        with limiter.engine.connect() as conn:
            rows = {row.key: (row.window_start, row.hits, row.expires_at)
                    for row in conn.execute(select(counters_table))}
        assert rows == {"k1": (1_699_999_980, 2, 1_700_000_040), "k2": (1_699_999_200, 1, 1_700_002_800)}
        clock.jump(40)  # the next minute
        assert [await limiter.hit("k1", 2, 60) for _ in range(3)] == [True, True, False]
        assert not await limiter.hit("k2", 1, 3600)  # still the same hour
        clock.jump(3600)
        assert await limiter.prune() == 2
        assert await limiter.hit("k1", 2, 60)  # a pruned key starts again
    finally:
        limiter.close()


async def test_exact_backend_never_lets_one_request_too_many_through_concurrent_connections(database_url):
    clock = MockClock()
    url = migrated(database_url)
    limiters = [DatabaseLimiter(url, clock=clock.current_time) for _ in range(3)]  # three pools, as three processes
    allowed = []

    async def hit(limiter):
        allowed.append(await limiter.hit("shared", 25, 86400))

    try:
        async with trio.open_nursery() as nursery:
            for index in range(90):
                nursery.start_soon(hit, limiters[index % 3])
    finally:
        for limiter in limiters:
            limiter.close()
    assert allowed.count(True) == 25 and allowed.count(False) == 65


def test_the_branch_creates_the_counter_table_and_removes_it_on_downgrade(database_url):
    odb = ODB(database_url)
    odb.upgrade()
    config = alembic_config(None, installed_branch("rate_limit"))  # the plugin's own branch (register_migrations)
    try:
        with odb.engine.connect() as conn:
            columns = {c["name"]: c for c in inspect(conn).get_columns("zato_rate_limit_counter")}
            indexes = [i["column_names"] for i in inspect(conn).get_indexes("zato_rate_limit_counter")]
        assert set(columns) == {c.name for c in counters_table.columns}
        assert not any(c["nullable"] for c in columns.values()) and ["expires_at"] in indexes
        with odb.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        with odb.engine.connect() as conn:
            assert "zato_rate_limit_counter" not in inspect(conn).get_table_names()
        with odb.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "heads")
        with odb.engine.connect() as conn:
            assert "zato_rate_limit_counter" in inspect(conn).get_table_names()
    finally:
        odb.close()


# ################################################################################################
# A server: the article's scenario, every object type and their order


async def test_article_scenario_a_user_limit_and_an_endpoint_limit(server_dir, caplog):
    """ "Allow this user N requests a day anywhere, but each endpoint at most M a minute". """
    prepare(server_dir, security={"my.user": limits("* = 5/d")},
            channels={"/api/sample": {"security": "my.user", **limits("* = 3/m")},
                      "/api/sample2": {"security": "my.user", **limits("* = 3/m")}})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=(USER, PASSWORD)) as client:
            replies = [await client.get("/api/sample") for _ in range(4)]
            assert [r.text for r in replies[:3]] == [HELLO] * 3
            endpoint_cid = assert_refused(replies[3], 429, "Too Many Requests")

            second = [await client.get("/api/sample2") for _ in range(3)]
            assert second[0].text == HELLO  # the other endpoint: its own limit, the same user
            user_cid = assert_refused(second[1], 429, "Too Many Requests")  # the user's 5 a day are used up
            assert_refused(second[2], 429, "Too Many Requests")

    # the log says which object, which line, the address and the cid; the caller saw none of it
    assert log_lines(caplog, endpoint_cid) == [
        f"cid={endpoint_cid} Max. rate limit of 3/m reached for channel_rest '/api/sample' (rate_limit_def line 1: "
        f"`* = 3/m`, approximate); request from 127.0.0.1 refused with 429"]
    assert log_lines(caplog, user_cid) == [
        f"cid={user_cid} Max. rate limit of 5/d reached for security 'my.user' (rate_limit_def line 1: `* = 5/d`, "
        f"approximate); request to channel '/api/sample2' from 127.0.0.1 refused with 429"]


async def test_checks_run_security_then_channel_then_service_and_a_refusal_never_counts_later(server_dir, caplog):
    prepare(server_dir, security={"my.user": limits("* = 2/d")},
            channels={"/api/sample": {"security": "my.user", **limits("* = 3/d")}},
            services={"api.sample": limits("* = 4/d", "EXACT")})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as admin, \
                httpx.AsyncClient(base_url=server.address, auth=(USER, PASSWORD)) as client:
            async def edit(object_type, name, definition):
                reply = await admin.patch(f"/zato/api/objects/{object_type}/{urllib.parse.quote(name, safe='')}",
                                          json={"rate_limit_def": definition}, auth=admin_auth())
                assert reply.status_code == 200, reply.text

            async def refused_by(reply):
                cid = assert_refused(reply, 429, "Too Many Requests")
                [line] = log_lines(caplog, cid)
                return line.split(" reached for ", 1)[1].split(" (", 1)[0]

            assert [(await client.get("/api/sample")).text for _ in range(2)] == [HELLO] * 2
            assert await refused_by(await client.get("/api/sample")) == "security 'my.user'"
            # editing the user's definition resets its counters; the refused request was not
            # counted by the channel (2 of 3 used) nor by the service (2 of 4)
            await edit("security", "my.user", "* = 100/d")
            assert (await client.get("/api/sample")).text == HELLO
            assert await refused_by(await client.get("/api/sample")) == "channel_rest '/api/sample'"
            # nor was the request the channel refused counted by the service (3 of 4)
            await edit("channel_rest", "/api/sample", "* = 100/d")
            assert (await client.get("/api/sample")).text == HELLO
            assert await refused_by(await client.get("/api/sample")) == "service_settings 'api.sample'"
            await edit("service_settings", "api.sample", "* = 5/d")  # editing resets: 5 more
            assert [(await client.get("/api/sample")).status_code for _ in range(6)] == [200] * 5 + [429]


async def test_an_unauthenticated_caller_cannot_use_up_a_users_limit(server_dir):
    prepare(server_dir, security={"my.user": limits("* = 2/d", "EXACT")},
            channels={"/api/sample": {"security": "my.user", **limits("* = 100/d")}})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            for _ in range(5):
                assert (await client.get("/api/sample", auth=(USER, "wrong"))).status_code == 401
                assert (await client.get("/api/sample")).status_code == 401
            assert [(await client.get("/api/sample", auth=(USER, PASSWORD))).status_code for _ in range(3)] == \
                [200, 200, 429]


async def test_service_limits_apply_whatever_the_channel(server_dir, caplog):
    # HTTP callers from 127.0.0.1: 4 a day; callers without an address (not over a REST channel): 1
    prepare(server_dir, channels={"/api/sample": {}, "/api/calls": {"service": "test.calls.sample"}},
            services={"api.sample": limits("127.0.0.1 = 4/d\n* = 1/d"), "test.pid": limits("127.0.0.1 = *")})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert (await client.get("/api/sample")).text == HELLO  # 127.0.0.1: 1
            # from a service invoked over REST: the caller's address is still known
            assert (await client.get("/api/calls")).json() == {"inner": HELLO}  # 127.0.0.1: 2
            # the admin API's invoke is not a REST channel: no address, so line 2
            reply = await client.post("/zato/api/invoke/api.sample", auth=admin_auth())
            assert reply.status_code == 200 and reply.text == HELLO
            with pytest.raises(RateLimitExceeded) as refused:
                await server.invoke("api.sample")  # line 2 again: over
            assert refused.value.status == 429 and refused.value.line.number == 2
            assert "Max. rate limit of 1/d reached for service_settings 'api.sample' (rate_limit_def line 2: " \
                   "`* = 1/d`, approximate); request through channel 'invoke' from (none: not an HTTP request) " \
                   "refused with 429" in caplog.text
            with pytest.raises(RateLimitExceeded):
                await server.invoke_service("api.sample", channel="scheduler")
            # an address no line matches: only `*` lines match callers without one
            with pytest.raises(AddressNotAllowed) as refused:
                await server.invoke("test.pid")
            assert refused.value.status == 403
            assert "address (none: not an HTTP request) matches no line of the rate_limit_def of service_settings " \
                   "'test.pid' (line 1: `127.0.0.1 = *`); request through channel 'invoke' refused with 403" \
                   in caplog.text

            assert [(await client.get("/api/sample")).text for _ in range(2)] == [HELLO] * 2  # 127.0.0.1: 3, 4
            cid = assert_refused(await client.get("/api/sample"), 429, "Too Many Requests")
            assert "request through channel '/api/sample' from 127.0.0.1 refused with 429" in log_lines(caplog, cid)[0]
            assert (await client.get("/api/calls")).json() == {"refused": "RateLimitExceeded", "status": 429}


async def test_an_address_no_line_matches_is_refused_with_403_and_ipv6_is_matched(tmp_path, caplog):
    server_dir = create_test_server_dir(tmp_path / "server", main={"host": "[::1]", "graceful_timeout": 3})
    prepare(server_dir, channels={"/api/v4": limits("10.0.0.0/8 = 5/m\n127.0.0.1 = 5/m"),
                                  "/api/v6": limits("10.0.0.0/8 = *\n::1/128 = 2/m\n* = 100/m"),
                                  "/api/v6net": limits("2001:db8::/32 = *\nfe80::/10 = 1/m")})
    async with run_server(server_dir) as server:
        assert server.address.startswith("http://[::1]:")
        async with httpx.AsyncClient(base_url=server.address) as client:
            cid = assert_refused(await client.get("/api/v4"), 403, "Forbidden")
            assert log_lines(caplog, cid) == [
                f"cid={cid} address ::1 matches no line of the rate_limit_def of channel_rest '/api/v4' (line 1: "
                f"`10.0.0.0/8 = 5/m`; line 2: `127.0.0.1 = 5/m`); request refused with 403"]
            assert [(await client.get("/api/v6")).status_code for _ in range(3)] == [200, 200, 429]
            assert_refused(await client.get("/api/v6net"), 403, "Forbidden")


async def test_forwarded_for_from_a_trusted_proxy_counts_the_client(server_dir, caplog):
    prepare(server_dir, channels={"/api/sample": limits("2001:db8::/32 = 1/m\n10.0.0.0/8 = 2/m\n127.0.0.1 = *")})
    set_config_value(server_dir, "rate_limit", "trusted_proxies", "127.0.0.1, 192.168.0.0/16")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            async def status(forwarded=None):
                headers = {"X-Forwarded-For": forwarded} if forwarded else {}
                return (await client.get("/api/sample", headers=headers)).status_code

            assert [await status("2001:db8::7") for _ in range(2)] == [200, 429]
            assert [await status("10.1.2.3, 192.168.1.1") for _ in range(3)] == [200, 200, 429]
            assert [await status() for _ in range(5)] == [200] * 5  # the proxy itself: no limit
            assert await status("192.0.2.1") == 403
    assert "Max. rate limit of 1/m reached for channel_rest '/api/sample' (rate_limit_def line 1: " \
           "`2001:db8::/32 = 1/m`, approximate); request from 2001:db8::7 refused with 429" in caplog.text
    assert "address 192.0.2.1 matches no line" in caplog.text


async def test_forwarded_for_is_ignored_without_trusted_proxies(server_dir):
    prepare(server_dir, channels={"/api/sample": limits("10.0.0.0/8 = *\n127.0.0.1 = 2/m")})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, headers={"X-Forwarded-For": "10.0.0.1"}) as client:
            assert [(await client.get("/api/sample")).status_code for _ in range(3)] == [200, 200, 429]


async def test_time_under_the_tests_control_in_a_server(server_dir):
    prepare(server_dir, channels={"/api/approx": limits("* = 2/m"), "/api/exact": limits("* = 2/h", "EXACT")})
    clock = MockClock()
    clock.jump(1_800_000_000)  # a whole hour: 2027-01-15 08:00:00 UTC
    async with run_server(server_dir) as server:
        rate_limits(server).set_clock(clock.current_time)
        async with httpx.AsyncClient(base_url=server.address) as client:
            async def statuses(path, count):
                return [(await client.get(path)).status_code for _ in range(count)]

            assert await statuses("/api/approx", 3) == [200, 200, 429]
            assert await statuses("/api/exact", 3) == [200, 200, 429]
            clock.jump(59)
            assert await statuses("/api/approx", 1) == [429]
            clock.jump(1)
            assert await statuses("/api/approx", 3) == [200, 200, 429]
            assert await statuses("/api/exact", 1) == [429]
            clock.jump(3540)
            assert await statuses("/api/exact", 3) == [200, 200, 429]

        # the periodic pruning forgets counters whose window is over
        state = rate_limits(server)
        with state.backends["exact"].engine.connect() as conn:
            assert len(conn.execute(select(counters_table)).all()) == 1
        assert state.backends["approximate"].statistics() == {"counters": 1}
        clock.jump(3600)
        await state.prune()
        assert state.backends["approximate"].statistics() == {"counters": 0}
        with state.backends["exact"].engine.connect() as conn:
            assert conn.execute(select(counters_table)).all() == []


async def test_limits_read_from_the_environment(server_dir, monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_TEST_DEF", "* = 2/m")
    monkeypatch.setenv("RATE_LIMIT_TEST_KIND", "EXACT")
    prepare(server_dir, channels={"/api/sample": {"is_rate_limit_active": True,
                                                  "rate_limit_type": "$RATE_LIMIT_TEST_KIND",
                                                  "rate_limit_def": "$RATE_LIMIT_TEST_DEF"}})
    async with run_server(server_dir) as server:
        assert rate_limits(server).by_type["channel_rest"]["/api/sample"].kind == "EXACT"
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert [(await client.get("/api/sample")).status_code for _ in range(3)] == [200, 200, 429]


async def test_a_definition_stored_bypassing_the_checks_refuses_every_request_and_says_why(server_dir, caplog):
    """ The admin API and enmasse refuse such definitions; one written to the database by another
    tool, or stored while the plugin was switched off, is refused at load: fail closed. """
    prepare(server_dir, security={"my.user": {}},
            channels={"/api/sample": {"security": "my.user"}, "/api/bad-type": limits("* = 5/m", "FAST"),
                      "/api/inactive": {"rate_limit_def": "nonsense", "is_rate_limit_active": False},
                      "/api/empty": limits("")})
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    stored = odb.get_object("security", "my.user")
    odb.put_object("security", "my.user", {**stored, **limits("* = 5/m\n10.0.0.0/8 = 5/w")})
    odb.close()
    async with run_server(server_dir) as server:
        assert "security 'my.user' has rate limits that cannot be used: rate_limit_def: line 2: `10.0.0.0/8 = 5/w`: " \
               "the unit 'w' is not one of m (per minute), h (per hour) or d (per day). Every request it covers is " \
               "refused with 403 until it is fixed" in caplog.text
        assert "channel_rest '/api/bad-type' has rate limits that cannot be used: rate_limit_type: 'FAST' is not " \
               "one of APPROXIMATE, EXACT" in caplog.text
        assert "channel_rest '/api/empty' has rate limits that cannot be used: rate_limit_def: empty" in caplog.text
        assert "channel_rest '/api/inactive': rate_limit_def is not active and would not parse: line 1: `nonsense`" \
               in caplog.text
        async with httpx.AsyncClient(base_url=server.address, auth=(USER, PASSWORD)) as client:
            cid = assert_refused(await client.get("/api/sample"), 403, "Forbidden")
            assert f"cid={cid} security 'my.user' cannot check rate limits: rate_limit_def: line 2" in caplog.text
            assert_refused(await client.get("/api/bad-type"), 403, "Forbidden")
            assert_refused(await client.get("/api/empty"), 403, "Forbidden")
            assert (await client.get("/api/inactive")).text == HELLO

            # fixed through the admin API: live at once
            reply = await client.patch("/zato/api/objects/security/my.user", auth=admin_auth(),
                                       json={"rate_limit_def": "* = 5/m\n10.0.0.0/8 = 5/h"})
            assert reply.status_code == 200, reply.text
            assert (await client.get("/api/sample")).text == HELLO


def test_every_limited_type_refuses_a_bad_definition_when_it_is_validated():
    for object_type in (CHANNEL_REST, SECURITY, SERVICE_SETTINGS_TYPE):
        required = {"url_path": "/x", "service": "s"} if object_type is CHANNEL_REST else \
            {"type": "basic_auth"} if object_type is SECURITY else {}
        good = validate(object_type, {"name": "x", **required, **limits("* = 5/m")})
        assert good["rate_limit_def"] == "* = 5/m"
        with pytest.raises(ObjectValidationError) as error:
            validate(object_type, {"name": "x", **required, **limits("* = 5/m\n* = 5/x", "NOPE")})
        assert error.value.errors == [
            {"field": "rate_limit_type", "error": "'NOPE' is not one of APPROXIMATE, EXACT"},
            {"field": "rate_limit_def", "error": "line 2: `* = 5/x`: the unit 'x' is not one of m (per minute), "
                                                 "h (per hour) or d (per day)"}]
        # a partial change is checked for the fields it holds
        assert validate(object_type, {"is_rate_limit_active": True}, partial=True) == {"is_rate_limit_active": True}
        with pytest.raises(ObjectValidationError):
            validate(object_type, {"rate_limit_def": "* = 5/x"}, partial=True)
        # `$NAME` is read from the environment at load, and checked then
        assert validate(object_type, {"name": "x", **required, "is_rate_limit_active": "$ON",
                                      "rate_limit_type": "$KIND", "rate_limit_def": "$LIMITS"})["rate_limit_def"] == \
            "$LIMITS"


async def test_the_admin_api_refuses_a_bad_definition_saying_which_line(server_dir):
    prepare(server_dir, security={"my.user": {}}, channels={"/api/sample": {}})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as admin:
            reply = await admin.post("/zato/api/objects/service_settings", json={
                "name": "api.sample", **limits("127.0.0.1 = *\n10.0.0.0/8 = 100/m\n* = lots")})
            assert reply.status_code == 400
            assert reply.json()["errors"] == [{"field": "rate_limit_def", "error": "line 3: `* = lots`: the limit "
                                               "'lots' is not N/m, N/h, N/d (requests per minute, hour or day) or `*` "
                                               "(no limit)"}]
            assert "invalid service_settings 'api.sample': rate_limit_def: line 3" in reply.json()["details"]
            reply = await admin.patch("/zato/api/objects/channel_rest/%2Fapi%2Fsample",
                                      json={"rate_limit_def": "10.0.0.0/33 = 1/m"})
            assert reply.status_code == 400 and "line 1: `10.0.0.0/33 = 1/m`: '10.0.0.0/33' is not `*`" in reply.text
            reply = await admin.patch("/zato/api/objects/security/my.user", json={"rate_limit_type": "exactly"})
            assert reply.status_code == 400 and "'exactly' is not one of APPROXIMATE, EXACT" in reply.text
            reply = await admin.put("/zato/api/objects/security/my.user", json={
                "type": "basic_auth", "username": USER, **limits("")})
            assert reply.status_code == 400 and "empty, so every request would be refused (403)" in reply.text
            assert not rate_limits(server).is_active  # nothing was stored
            async with httpx.AsyncClient(base_url=server.address) as client:
                assert (await client.get("/api/sample")).text == HELLO


ENMASSE_FILE = """
security:
  - name: my.user
    type: basic_auth
    username: my.user
    password: $RATE_LIMIT_TEST_PASSWORD
    is_rate_limit_active: true
    rate_limit_type: EXACT
    rate_limit_def: "* = 1000/d"
channel_rest:
  - name: /api/sample
    url_path: /api/sample
    service: api.sample
    security: my.user
    is_rate_limit_active: true
    rate_limit_def: |
      127.0.0.1 = 2/m
      * = 5/m
service_settings:
  - name: api.sample
    is_rate_limit_active: true
    rate_limit_def: "* = 10000/h"
"""


async def test_limits_as_code_with_enmasse(server_dir, tmp_path, monkeypatch):
    from zato.enmasse import EnmasseError, ServerConfigStore, apply_plan, plan_import

    monkeypatch.setenv("RATE_LIMIT_TEST_PASSWORD", PASSWORD)
    prepare(server_dir)
    bad = tmp_path / "bad.yaml"
    bad.write_text(ENMASSE_FILE.replace("* = 5/m", "* = 5 per minute"), "utf-8")
    good = tmp_path / "config.yaml"
    good.write_text(ENMASSE_FILE, "utf-8")
    with ServerConfigStore(server_dir) as store:
        with pytest.raises(EnmasseError) as error:
            plan_import(store, bad)
        # the file's line of the field, then the definition's line
        assert str(error.value).endswith(":16: channel_rest '/api/sample': rate_limit_def: line 2: `* = 5 per minute`: "
                                         "the limit '5 per minute' is not N/m, N/h, N/d (requests per minute, hour or "
                                         "day) or `*` (no limit)")
        assert apply_plan(store, plan_import(store, good)) == 3
    async with run_server(server_dir) as server:
        state = rate_limits(server)
        assert {t: sorted(items) for t, items in state.by_type.items()} == {
            "security": ["my.user"], "channel_rest": ["/api/sample"], "service_settings": ["api.sample"]}
        assert state.by_type["security"]["my.user"].kind == "EXACT"
        async with httpx.AsyncClient(base_url=server.address, auth=(USER, PASSWORD)) as client:
            assert [(await client.get("/api/sample")).status_code for _ in range(3)] == [200, 200, 429]


async def test_objects_with_limits_through_the_admin_api(server_dir):
    prepare(server_dir)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as admin:
            types = {t["name"]: t for t in (await admin.get("/zato/api/objects")).json()}
            for object_type in LIMITED_TYPES:
                assert set(RATE_FIELDS) <= {f["name"] for f in types[object_type]["fields"]}
            reply = await admin.post("/zato/api/objects/channel_rest", json={
                "name": "sample", "url_path": "/api/sample", "service": "api.sample", **limits("* = 1/m")})
            assert reply.status_code == 201, reply.text
            assert reply.json()["rate_limit_def"] == "* = 1/m" and reply.json()["is_rate_limit_active"] is True
            reply = await admin.post("/zato/api/objects/service_settings", json={"name": "api.sample",
                                                                               **limits("* = 5/m", "EXACT")})
            assert reply.status_code == 201, reply.text
            assert rate_limits(server).by_type["service_settings"]["api.sample"].kind == "EXACT"
            assert set(server.rate_limits.service_checks) == {"api.sample"}
            assert [(await admin.get("/api/sample")).status_code for _ in range(2)] == [200, 429]
            # switched off: no limits, and the service check costs only a dictionary lookup again
            for object_type, name in (("channel_rest", "sample"), ("service_settings", "api.sample")):
                reply = await admin.patch(f"/zato/api/objects/{object_type}/{name}",
                                          json={"is_rate_limit_active": False})
                assert reply.status_code == 200, reply.text
            assert server.rate_limits.service_checks == {} and not rate_limits(server).is_active
            assert [(await admin.get("/api/sample")).status_code for _ in range(3)] == [200] * 3


BACKEND_PLUGIN = """
from zato import hookimpl
from zato.registry import RateLimiterBackend

HITS = []
FAILING = []

class RecordingLimiter:
    \"\"\" A backend as a plugin writes one: `hit` says whether one more request fits. \"\"\"
    def __init__(self, server):
        self.server = server
        self.counts = {}

    async def hit(self, key, limit, window_seconds):
        if FAILING:
            raise ConnectionError("the counter store is down")
        HITS.append((key, limit, window_seconds))
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key] <= limit

@hookimpl
def register_rate_limiter_backends(register):
    register(RateLimiterBackend("recording", RecordingLimiter, "counts in a dict, for a test"))
"""


async def test_a_backend_from_another_plugin_counts_exact_limits(server_dir, plugin_site, caplog):
    module_name = plugin_site.add("recorder", BACKEND_PLUGIN)
    prepare(server_dir, channels={"/api/sample": limits("10.0.0.0/8 = *\n* = 2/h", "EXACT"),
                                  "/api/approx": limits("* = 1/m")})
    set_config_value(server_dir, "rate_limit", "exact_backend", "recording")
    async with run_server(server_dir) as server:
        module = sys.modules[module_name]  # found through its entry point, imported by the server
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert [(await client.get("/api/sample")).status_code for _ in range(3)] == [200, 200, 429]
            assert [(await client.get("/api/approx")).status_code for _ in range(2)] == [200, 429]  # not recorded
            [key] = {key for key, _, _ in module.HITS}
            assert key.startswith("channel_rest:/api/sample:") and key.endswith(":2")  # object, digest, line
            assert module.HITS == [(key, 2, 3600)] * 3
            module.FAILING.append(True)
            cid = assert_refused(await client.get("/api/sample"), 503, "Service Unavailable")
    assert f"cid={cid} rate limiter backend 'recording' failed checking channel_rest '/api/sample': " \
           f"ConnectionError: the counter store is down; request from 127.0.0.1 refused with 503" in caplog.text


async def test_a_missing_backend_or_a_bad_proxy_stops_start_up_with_a_clear_error(server_dir):
    set_config_value(server_dir, "rate_limit", "exact_backend", "no-such-backend")
    with pytest.raises(Exception) as error:
        async with run_server(server_dir):
            pass
    assert "[rate_limit] exact_backend = no-such-backend: no enabled plugin registers a rate limiter backend named " \
           "'no-such-backend' (registered: approximate, exact" in str(error.value)

    set_config_value(server_dir, "rate_limit", "exact_backend", "exact")
    set_config_value(server_dir, "rate_limit", "trusted_proxies", "127.0.0.1, proxy.local")
    with pytest.raises(Exception) as error:
        async with run_server(server_dir):
            pass
    assert "server.conf: [rate_limit] trusted_proxies = ['127.0.0.1', 'proxy.local']: 'proxy.local' is not an IP " \
           "address or a CIDR network; allowed: IP addresses or CIDR networks" in str(error.value)


async def test_with_the_plugin_switched_off_nothing_is_limited(server_dir):
    prepare(server_dir, channels={"/api/sample": limits("* = 1/m")}, services={"api.sample": limits("* = 1/m")})
    set_config_value(server_dir, "plugins", "rate_limit", "False")
    async with run_server(server_dir) as server:
        assert rate_limits(server) is None and not server.rate_limits.is_active and server.rate_limits.service_checks == {}
        assert "approximate" not in server.registry.items(Kind.RATE_LIMITER_BACKENDS)
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert [(await client.get("/api/sample")).status_code for _ in range(3)] == [200] * 3


# ################################################################################################
# Several processes: exact limits are exact, approximate ones are per process. Servers share one
# database; on SQLite they are two servers of two workers each.


def today() -> int:
    return int(time.time() // 86400)


def pid_servers(tmp_path, count: int, url: str, channel: dict, *, workers: int = 1) -> list:
    """ `count` servers using the database at `url`, with /api/pid limited by `channel`. """
    server_dirs = []
    for index in range(count):
        server_dir = create_test_server_dir(tmp_path / f"server{index}", workers=workers,
                                            main={"graceful_timeout": 3})
        set_config_value(server_dir, "odb", "url", url)
        prepare(server_dir, url=url, channels={"/api/pid": {"service": "test.pid", **channel}} if index == 0 else None)
        server_dirs.append(server_dir)
    return server_dirs


async def hammer(addresses: list[str], requests: int, concurrency: int = 24) -> list[tuple[int, int | None]]:
    """ `requests` concurrent GETs of /api/pid spread over `addresses`, each on a new connection;
    (status, pid of the process that answered). """
    results: list[tuple[int, int | None]] = []
    limiter = trio.CapacityLimiter(concurrency)
    no_keepalive = httpx.Limits(max_keepalive_connections=0)

    async def one(client, address):
        async with limiter:
            reply = await client.get(f"{address}/api/pid", headers={"Connection": "close"})
        results.append((reply.status_code, reply.json().get("pid") if reply.status_code == 200 else None))

    async with httpx.AsyncClient(limits=no_keepalive, timeout=60) as client:
        async with trio.open_nursery() as nursery:
            for index in range(requests):
                nursery.start_soon(one, client, addresses[index % len(addresses)])
    return results


async def run_processes(server_dirs, requests: int) -> list[tuple[int, int | None]]:
    processes = [ServerProcess(d) for d in server_dirs]  # the database is migrated already: they start at once
    try:
        async with trio.open_nursery() as nursery:
            for process in processes:
                nursery.start_soon(trio.to_thread.run_sync, process.start)
        day = today()
        results = await hammer([p.address for p in processes], requests)
        if today() != day:
            pytest.skip("the requests straddled a UTC day boundary, so two windows were counted")
        return results
    finally:
        async with trio.open_nursery() as nursery:
            for process in processes:
                nursery.start_soon(trio.to_thread.run_sync, process.stop)


LIMIT = 30


def successes_by_process(results) -> dict[int, int]:
    counts: dict[int, int] = {}
    for status, pid in results:
        assert status in (200, 429), status
        if status == 200:
            counts[pid] = counts.get(pid, 0) + 1
    return counts


async def test_exact_limit_is_exact_across_workers_and_servers_sharing_sqlite(tmp_path):
    server_dirs = pid_servers(tmp_path, 2, sqlite_url(tmp_path / "shared.db"), limits(f"* = {LIMIT}/d", "EXACT"),
                              workers=2)
    results = await run_processes(server_dirs, 4 * LIMIT)
    by_process = successes_by_process(results)
    assert sum(by_process.values()) == LIMIT and len(results) == 4 * LIMIT, by_process
    assert len(by_process) >= 2  # several processes let requests through: they counted together


async def test_exact_limit_is_exact_across_servers_sharing_postgresql(tmp_path, postgres):
    server_dirs = pid_servers(tmp_path, 3, postgres.create_database(), limits(f"* = {LIMIT}/d", "EXACT"))
    results = await run_processes(server_dirs, 4 * LIMIT)
    by_process = successes_by_process(results)
    assert sum(by_process.values()) == LIMIT and len(results) == 4 * LIMIT, by_process
    assert len(by_process) == 3  # requests go round the servers: each let some through


async def test_approximate_limit_is_counted_in_each_process(tmp_path):
    server_dirs = pid_servers(tmp_path, 2, sqlite_url(tmp_path / "shared.db"), limits(f"* = {LIMIT}/d"))
    results = await run_processes(server_dirs, 4 * LIMIT)
    by_process = successes_by_process(results)
    assert list(by_process.values()) == [LIMIT, LIMIT], by_process  # each process: exactly its own limit
