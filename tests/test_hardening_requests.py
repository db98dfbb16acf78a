""" Hostile requests and authentication that cannot be used against the server (issue 11): log
lines cannot be forged, deep or non-standard JSON is a 400, admin writes need a content type a
web page cannot send cross-site, repeated credential headers are refused, a user name does not
leak by timing, password checks cannot starve the loop, and failed logins are throttled per
client address. Everything goes over real HTTP to real servers. """

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import statistics
import sys
import time

import httpx
import pytest
import trio

from zato.builtin.security import store_definition
from zato.odb import ODB, sqlite_url
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, run_server

SERVICES = '''
from zato.server.service import Service

class Echo(Service):
    name = "hardening.echo"

    def handle(self):
        self.response.payload = {"got": self.request.payload, "other": self.request.http.headers.get("x-other")}

class Raise(Service):
    name = "hardening.raise"

    def handle(self):
        raise ValueError(self.request.raw_request)
'''

USER, PASSWORD = "hardening.user", "hardening-pa55-e81c"
API_KEY = "hardening-k3y-4f0b"
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \d+ \S+: ")
FORGED = "2026-12-01 00:00:00,000 INFO 1 zato.admin: FORGED"
DEEP = b"[" * 100_000 + b"]" * 100_000
CONSTANTS = (b"NaN", b"Infinity", b"-Infinity")
NOT_JSON = tuple(b'{"a": [1, %s]}' % constant for constant in CONSTANTS)


def prepare(server_dir) -> None:
    """ The services in pickup/, a Basic Auth and an API key definition, and channels. """
    (server_dir / "pickup" / "hardening.py").write_text(SERVICES, "utf-8")
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    try:
        store_definition(odb, "hardening.basic", type="basic_auth", username=USER, password=PASSWORD)
        store_definition(odb, "hardening.key", type="apikey", password=API_KEY)
        for name, service, security, data_format in (("/api/echo", "hardening.echo", None, "json"),
                                                     ("/api/raise", "hardening.raise", None, "text"),
                                                     ("/api/basic", "hardening.echo", "hardening.basic", "json"),
                                                     ("/api/key", "hardening.echo", "hardening.key", "json")):
            odb.put_object("channel_rest", name, {"url_path": name, "service": service, "data_format": data_format,
                                                  "security": security})
    finally:
        odb.close()


@pytest.fixture
def hardened_dir(server_dir):
    prepare(server_dir)
    return server_dir


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def client_from(address: str, base_url: str, **kwargs) -> httpx.AsyncClient:
    """ A client whose connections come from `address` (any 127.x.y.z is this machine). """
    return httpx.AsyncClient(base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address=address),
                             timeout=30, **kwargs)


def raw_request(address: str, head: bytes, body: bytes = b"") -> bytes:
    """ One request sent byte for byte (paths and headers no client library would send). """
    host, port = address.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + (b"content-length: %d\r\n" % len(body)) + b"connection: close\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_error(reply: httpx.Response, status: int, *words: str) -> None:
    assert reply.status_code == status, (reply.status_code, reply.text[:500])
    body = reply.json()
    assert body["result"] == "Error" and body["cid"] == reply.headers["x-zato-cid"]
    for word in words:
        assert word in body["details"], (word, body["details"])


# ################################################################################################
# Log forging


def test_no_request_can_forge_a_log_line_or_put_raw_control_bytes_in_the_log(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    prepare(server_dir)
    with ServerProcess(server_dir) as process:
        forged_path = FORGED.replace(" ", "%20").encode()
        raw_request(process.address, b"GET /nolog%0A" + forged_path + b" HTTP/1.1\r\nhost: x")
        raw_request(process.address, b"GET /nolog%0D%0A" + forged_path + b"%00%1b[31m%E2%80%A8x HTTP/1.1\r\nhost: x")
        raw_request(process.address, b"GET /nolog?q=%0A" + forged_path + b" HTTP/1.1\r\nhost: x")
        reply = raw_request(process.address, b"POST /api/raise HTTP/1.1\r\nhost: x",
                            f"boom\n{FORGED}-IN-A-TRACEBACK\x00\x1b[0m\u2028{FORGED}".encode())
        assert b" 500 " in reply.split(b"\r\n", 1)[0]
    for log in (server_dir / "logs" / "server.log", process.console_file):
        text = log.read_text("utf-8")
        assert "\x00" not in text and "\x1b" not in text and "\u2028" not in text, log
        for line in text.split("\n"):
            assert not line or RECORD.match(line) or line[0] == " ", (log, line)
            assert not line.startswith(FORGED.rsplit(":", 1)[0]), (log, line)
        assert "FORGED" in text  # escaped, not dropped
    text = (server_dir / "logs" / "server.log").read_text("utf-8")
    assert "\\n2026-12-01 00:00:00,000 INFO 1 zato.admin: FORGED" in text  # what was sent, readable
    assert "  Traceback (most recent call last):" in text and "  ValueError: boom" in text  # still a traceback
    assert "\\x00\\x1b[0m\\u2028" in text


def test_the_formatter_escapes_every_control_character_and_indents_tracebacks():
    from zato.server.logs import LOG_FORMAT, SafeFormatter
    formatter = SafeFormatter(LOG_FORMAT)
    try:
        raise ValueError("bad\nsecond line")
    except ValueError:
        record = logging.LogRecord("zato.test", logging.ERROR, __file__, 1, "user sent %s",
                                   ("a\x00b\x7fc\x85d\u2029e\tf\r",), exc_info=sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert lines[0].endswith("user sent a\\x00b\\x7fc\\x85d\\u2029e\\tf\\r")
    assert all(line.startswith("  ") for line in lines[1:]) and "  ValueError: bad" in lines
    assert "  second line" in lines


# ################################################################################################
# JSON


def test_one_json_parser_refuses_deep_nesting_and_nan_and_is_as_fast_as_json_loads():
    from zato.server.http import HTTPError, parse_json
    body = json.dumps({"name": "x", "items": [{"id": n, "tags": ["a", "b"], "price": 1.5} for n in range(20)]}).encode()
    assert parse_json(body) == json.loads(body)
    for bad in (DEEP, *NOT_JSON):
        with pytest.raises(HTTPError) as info:
            parse_json(bad)
        assert info.value.status == 400
    import timeit
    ours, theirs = [], []
    for _ in range(7):  # interleaved, the best of each: the machine is shared
        ours.append(timeit.timeit(lambda: parse_json(body), number=1000))
        theirs.append(timeit.timeit(lambda: json.loads(body), number=1000))
    assert min(ours) < min(theirs) * 2, (min(ours), min(theirs))


async def test_deep_json_and_nan_are_refused_with_400_everywhere_a_caller_sends_json(hardened_dir):
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                     headers={"content-type": "application/json"}) as client:
            channel = b'{"name": "nan.channel", "url_path": "/api/nan", "service": "hardening.echo", "timeout": %s}'
            for url in ("/api/echo", "/zato/api/objects/channel_rest", "/zato/api/invoke/hardening.echo"):
                assert_error(await client.post(url, content=DEEP), 400, "nested too deeply")
                for constant in CONSTANTS:
                    body = channel % constant if "objects" in url else b'{"a": [1, %s]}' % constant
                    assert_error(await client.post(url, content=body), 400, "not valid JSON",
                                 constant.decode().lstrip("-"))
            assert (await client.get("/zato/api/objects/channel_rest/nan.channel")).status_code == 404
            reply = await client.post("/api/echo", json={"a": [1, 2.5]})
            assert reply.status_code == 200 and reply.json()["got"] == {"a": [1, 2.5]}


# ################################################################################################
# CSRF: admin writes need a content type no web page can send cross-site without a preflight


async def test_admin_writes_need_application_json_and_deploy_needs_a_source_type(hardened_dir):
    channel = json.dumps({"name": "csrf.channel", "url_path": "/api/csrf", "service": "hardening.echo"}).encode()
    url = "/zato/api/objects/channel_rest"
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            for headers in ({"content-type": "text/plain"}, {}, {"content-type": "application/x-www-form-urlencoded"},
                            {"content-type": "multipart/form-data; boundary=x"}):
                assert_error(await client.post(url, content=channel, headers=headers), 415,
                             "Content-Type: application/json")
            assert (await client.get(f"{url}/csrf.channel")).status_code == 404  # nothing was created
            assert (await client.get("/api/csrf")).status_code == 404
            reply = await client.post(url, content=channel, headers={"content-type": "application/json; charset=utf-8"})
            assert reply.status_code in (200, 201), reply.text

            # body-less writes are simple requests too
            assert_error(await client.delete(f"{url}/csrf.channel"), 415, "Content-Type: application/json")
            assert (await client.get(f"{url}/csrf.channel")).status_code == 200
            assert_error(await client.post("/zato/api/config/reload"), 415)
            assert_error(await client.put("/zato/api/objects/security/hardening.basic/secrets/password",
                                          content=b'{"value": "x"}', headers={"content-type": "text/plain"}), 415)
            assert (await client.get("/api/basic", auth=(USER, PASSWORD))).status_code == 200  # unchanged

            # admin invoke runs services: every method; what a browser sends (Origin, Sec-Fetch-*) needs
            # the type, and so does a body sent as text/plain by anyone
            for method in ("GET", "POST", "DELETE"):
                for browser in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"},
                                {"sec-fetch-mode": "no-cors"}):
                    assert_error(await client.request(method, "/zato/api/invoke/hardening.echo", headers=browser),
                                 415, "Content-Type: application/json")
                    assert_error(await client.request(method, "/zato/api/invoke/hardening.echo", content=b"{}",
                                                      headers={**browser, "content-type": "text/plain"}), 415)
            assert_error(await client.post("/zato/api/invoke/hardening.echo", content=b"{}",
                                           headers={"content-type": "text/plain"}), 415)
            reply = await client.post("/zato/api/invoke/hardening.echo", json={"x": 1},
                                      headers={"origin": "https://evil.example"})
            assert reply.status_code == 200 and reply.json()["got"] == {"x": 1}
            # a program that sends no type at all, as Zato's own zato.client.APIClient does: allowed for invoke only
            reply = await client.post("/zato/api/invoke/hardening.echo", content=b'{"x": 2}')
            assert reply.status_code == 200 and reply.json()["got"] == {"x": 2}

            # the deploy upload's body is Python source: text/x-python or application/octet-stream
            source = b'from zato.server.service import Service\nclass C(Service):\n    name = "csrf.deployed"\n' \
                     b'    def handle(self):\n        self.response.payload = "ok"\n'
            for headers in ({"content-type": "text/plain"}, {}, {"content-type": "application/json"}):
                assert_error(await client.post("/zato/api/deploy/csrf.py", content=source, headers=headers), 415,
                             "text/x-python")
            assert "csrf.deployed" not in server.services
            for content_type in ("text/x-python", "application/octet-stream"):
                reply = await client.post("/zato/api/deploy/csrf.py", content=source,
                                          headers={"content-type": content_type})
                assert reply.status_code == 200, reply.text
            assert "csrf.deployed" in server.services

            # without credentials it is still a 401 first
            reply = await client.post(url, content=channel, headers={"content-type": "text/plain"}, auth=None)
            assert reply.status_code == 401


# ################################################################################################
# Ambiguous credentials


async def test_a_credential_header_sent_twice_is_refused(hardened_dir):
    async with run_server(hardened_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=30) as client:
            assert (await client.get("/api/key", headers={"X-API-Key": API_KEY})).status_code == 200
            for keys in ((API_KEY, API_KEY), ("wrong", API_KEY), (API_KEY, "wrong")):
                reply = await client.get("/api/key", headers=[("X-API-Key", key) for key in keys])
                assert_error(reply, 400, "X-API-Key", "more than once")
            reply = await client.get("/api/basic", headers=[("authorization", basic(USER, "wrong")),
                                                            ("authorization", basic(USER, PASSWORD))])
            assert_error(reply, 400, "Authorization", "more than once")

            admin = basic(*admin_auth())
            json_type = ("content-type", "application/json")
            reply = await client.get("/zato/api/objects", headers=[("authorization", "Basic eA=="),
                                                                   ("authorization", admin)])
            assert_error(reply, 400, "Authorization", "more than once")
            reply = await client.post("/zato/api/invoke/hardening.echo", headers=[
                ("x-zato-cli-token", "x"), ("x-zato-cli-token", server.cli_token), json_type])
            assert_error(reply, 400, "X-Zato-CLI-Token", "more than once")
            # what services see is unchanged: other repeated headers, the last value
            reply = await client.post("/api/echo", headers=[("x-other", "1"), ("x-other", "2"), json_type],
                                      content=b"{}")
            assert reply.status_code == 200 and reply.json()["other"] == "2"


# ################################################################################################
# Timing, starvation, throttling


async def test_a_wrong_admin_user_name_takes_as_long_as_a_wrong_password(hardened_dir):
    async with run_server(hardened_dir) as server:
        times: dict[str, list[float]] = {"user": [], "password": []}
        for attempt in range(9):
            for kind, auth in (("user", ("no-such-admin", "x")), ("password", (admin_auth()[0], "wrong"))):
                # each attempt from its own address, so that the throttle plays no part
                async with client_from(f"127.0.{1 + attempt}.{2 if kind == 'user' else 3}", server.address) as client:
                    started = time.perf_counter()
                    reply = await client.get("/zato/api/objects", auth=auth)
                    times[kind].append(time.perf_counter() - started)
                    assert reply.status_code == 401
        user, password = statistics.median(times["user"]), statistics.median(times["password"])
        assert max(user, password) / min(user, password) < 3, (user, password)


async def _p50_ping(address: str, count: int = 25) -> float:
    async with client_from("127.0.0.1", address) as client:
        took = []
        for _ in range(count):
            started = time.perf_counter()
            assert (await client.get("/zato/ping")).status_code == 200
            took.append(time.perf_counter() - started)
            await trio.sleep(0.01)
    return statistics.median(took)


# The attackers run in a process of their own: measured from the test's own trio loop, their 16
# clients' work would slow the pinger as much as the server, and the test would measure itself.
ATTACKERS = """
import sys, trio, httpx

async def main(address, seconds):
    attempts = 0

    async def attack(index):
        nonlocal attempts
        for round_ in range(1000):  # a new address each time: the throttle plays no part here
            transport = httpx.AsyncHTTPTransport(local_address=f"127.{10 + index}.{round_ // 200}.{1 + round_ % 200}")
            async with httpx.AsyncClient(base_url=address, transport=transport, timeout=30) as client:
                attempts += 1
                reply = await client.get("/zato/api/objects", auth=("admin", f"wrong-{round_}"))
                assert reply.status_code == 401, reply.status_code

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for index in range(16):
                nursery.start_soon(attack, index)
    print(attempts, flush=True)

trio.run(main, sys.argv[1], float(sys.argv[2]))
"""


async def test_wrong_admin_passwords_cannot_starve_the_loop(tmp_path):
    import subprocess
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 3})
    with ServerProcess(server_dir) as process:
        baseline = await _p50_ping(process.address)
        attackers = subprocess.Popen([sys.executable, "-c", ATTACKERS, process.address, "4"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            await trio.sleep(1.0)  # the attackers' process started and is at it
            loaded = await _p50_ping(process.address)
            out, err = await trio.to_thread.run_sync(attackers.communicate, None, 30)
        finally:
            if attackers.poll() is None:
                attackers.kill()
        assert attackers.returncode == 0, err
        attempts = int(out.split()[-1])
    assert attempts > 16  # every attacker was at it, some more than once
    assert loaded < max(baseline * 8, baseline + 0.02), (baseline, loaded, attempts)


async def test_failed_logins_are_throttled_per_address_and_logged_once_per_burst(hardened_dir, caplog):
    from zato.passwords import LoginThrottle
    caplog.set_level(logging.INFO)
    throttle = LoginThrottle()
    async with run_server(hardened_dir) as server:
        admin_user = admin_auth()[0]
        for url, user, right, attacker, other in (
                ("/zato/api/objects", admin_user, admin_auth()[1], "127.0.0.5", "127.0.0.6"),
                ("/api/basic", USER, PASSWORD, "127.0.0.7", "127.0.0.8")):
            took = []
            async with client_from(attacker, server.address) as client:
                for attempt in range(throttle.free_failures + 4):
                    started = time.perf_counter()
                    assert (await client.get(url, auth=(user, f"wrong-{attempt}"))).status_code == 401
                    took.append(time.perf_counter() - started)
            for failures, seconds in enumerate(took):  # failures before this attempt
                assert seconds >= throttle.delay_after(failures) * 0.9, (url, took)
            assert took[-1] > took[throttle.free_failures - 1] + 0.5, (url, took)
            assert took[-1] <= throttle.max_delay + 2

            async with client_from(other, server.address) as client:  # the right password elsewhere: at once
                started = time.perf_counter()
                assert (await client.get(url, auth=(user, right))).status_code == 200
                # (one scrypt run, not the attacker's next delay)
                assert time.perf_counter() - started < throttle.delay_after(len(took)), (url, took)
            lines = [r.getMessage() for r in caplog.records if attacker in r.getMessage() and "failed logins" in
                     r.getMessage()]
            assert len(lines) == 1, lines  # once per burst, not once per attempt
            assert "delayed" in lines[0]


def test_the_throttle_forgets_quiet_addresses_and_its_memory_is_bounded():
    from zato.passwords import LoginThrottle
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0], max_clients=100)
    for _ in range(throttle.free_failures):
        assert throttle.delay("10.0.0.1") == 0
        throttle.failed("10.0.0.1", "the admin API")
    delays = []
    for _ in range(12):
        delays.append(throttle.delay("10.0.0.1"))
        throttle.failed("10.0.0.1", "the admin API")
    assert delays == sorted(delays) and 0 < delays[0] < delays[3] and delays[-1] == throttle.max_delay
    assert throttle.delay("10.0.0.2") == 0  # other addresses are not affected
    now[0] += throttle.quiet_period + 1
    assert throttle.delay("10.0.0.1") == 0  # forgotten after a quiet period
    for n in range(10_000):  # an attacker with many addresses
        throttle.failed(f"10.1.{n // 250}.{n % 250}", "the admin API")
    assert len(throttle) <= 100
