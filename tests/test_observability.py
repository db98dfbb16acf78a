""" What the server tells about requests: one log line per request (cid, channel, service, status,
duration) and Prometheus metrics at /zato/metrics (per channel, per service, per worker or added
up across workers), with the endpoint's protection. """

from __future__ import annotations

import re
import textwrap
import time
import urllib.request
import uuid
from base64 import b64encode
from contextlib import contextmanager

import httpx
from prometheus_client.parser import text_string_to_metric_families

from zato.odb import ODB, sqlite_url
from zato.testing import ADMIN_PASSWORD, ServerProcess, admin_auth, create_test_server_dir, run_server, set_config_value

SERVICES = '''
import time
import trio
from zato.server.service import Service

class Slow(Service):
    name = "test.slow"
    def handle(self):
        time.sleep(0.03)
        self.response.payload = {"slept": True}

class Outer(Service):
    name = "test.outer"
    async def handle(self):
        self.response.payload = {"inner": await self.invoke("test.inner")}

class Inner(Service):
    name = "test.inner"
    async def handle(self):
        self.response.payload = {"ok": True}

class Fails(Service):
    name = "test.fails"
    def handle(self):
        raise ValueError("boom")

class Sleeps(Service):
    name = "test.sleeps"
    async def handle(self):
        await trio.sleep(30)
'''

CHANNELS = {
    "slow": {"url_path": "/test/slow", "service": "test.slow", "methods": ["GET"]},
    "outer": {"url_path": "/test/outer", "service": "test.outer", "methods": ["GET"]},
    "fails": {"url_path": "/test/fails", "service": "test.fails", "methods": ["GET"]},
    "sleeps": {"url_path": "/test/sleeps", "service": "test.sleeps", "methods": ["GET"], "timeout": 0.05},
}


def add_services_and_channels(base_dir) -> None:
    (base_dir / "pickup" / "observed.py").write_text(textwrap.dedent(SERVICES))
    odb = ODB(sqlite_url(base_dir / "work" / "zato.db"))
    for name, channel in CHANNELS.items():
        odb.put_object("channel_rest", name, channel)
    odb.close()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """ Every sample of a scrape: (sample name, its labels) -> value. """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict:
    reply = await client.get("/zato/metrics", auth=admin_auth())
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(reply.text)


# ################################################################################################
# The log line


async def test_each_request_is_logged_with_cid_channel_service_status_and_duration(server_dir, caplog):
    add_services_and_channels(server_dir)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            slow = await client.get("/test/slow")
            missing = await client.get(f"/scanner/{uuid.uuid4().hex}")
    assert slow.status_code == 200 and missing.status_code == 404

    lines = [r.getMessage() for r in caplog.records if r.name == "zato.request"]
    slow_line = next(line for line in lines if f"cid={slow.headers['x-zato-cid']} " in line)
    match = re.fullmatch(r"cid=(\w{24}) GET /test/slow channel=slow service=test.slow status=200 ([\d.]+) ms", slow_line)
    assert match, slow_line
    assert 30 <= float(match.group(2)) < 30_000  # the service sleeps 30 ms; the duration includes it

    missing_line = next(line for line in lines if f"cid={missing.headers['x-zato-cid']} " in line)
    assert re.fullmatch(r"cid=\w{24} GET /scanner/\w+ channel=- service=- status=404 [\d.]+ ms", missing_line), \
        missing_line

    # the record is what logger.info would have made there (the line is logged without the stack walk
    # of Logger.findCaller): the observer's file and function, an INFO record without exception
    record = next(r for r in caplog.records if r.name == "zato.request")
    assert (record.levelname, record.filename, record.funcName, record.exc_info) == \
        ("INFO", "observability.py", "__call__", None)
    assert record.lineno > 0 and record.msg.startswith("cid=%s ")


# ################################################################################################
# Metrics


async def test_metrics_count_and_time_requests_per_channel_and_service(server_dir):
    add_services_and_channels(server_dir)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            for _ in range(3):
                assert (await client.get("/demo/hello", params={"name": "x"})).status_code == 200
            for _ in range(2):
                assert (await client.get("/test/slow")).status_code == 200
            scanned = [f"/wp-admin/{uuid.uuid4().hex}.php" for _ in range(5)]
            for path in scanned:
                assert (await client.get(path)).status_code == 404
            assert (await client.delete("/test/slow")).status_code == 405
            assert (await client.get("/test/fails")).status_code == 500
            assert (await client.get("/test/outer")).status_code == 200
            assert (await client.get("/test/sleeps")).status_code == 504
            text = (await client.get("/zato/metrics", auth=admin_auth())).text
            found = await scrape(client)

    requests = "zato_http_requests_total"
    assert value(found, requests, channel="demo.hello", service="demo.hello", status="200") == 3
    assert value(found, requests, channel="slow", service="test.slow", status="200") == 2
    assert value(found, requests, channel="-", service="-", status="404") == 5  # one series for every unknown path
    assert value(found, requests, channel="-", service="-", status="405") == 1
    assert value(found, requests, channel="fails", service="test.fails", status="500") == 1
    assert value(found, requests, channel="sleeps", service="test.sleeps", status="504") == 1
    assert value(found, requests, channel="zato.metrics", service="-", status="200") == 1  # the first scrape
    assert not any(path.split("/")[-1] in text for path in scanned)  # paths never become labels

    duration = "zato_http_request_duration_seconds"
    slow = {"channel": "slow", "service": "test.slow"}
    assert value(found, f"{duration}_count", **slow) == 2
    assert value(found, f"{duration}_bucket", le="0.025", **slow) == 0  # it sleeps 30 ms
    assert value(found, f"{duration}_bucket", le="+Inf", **slow) == 2
    assert value(found, f"{duration}_sum", **slow) >= 0.06
    buckets = sorted(float(dict(labels)["le"]) for name, labels in found if name == f"{duration}_bucket"
                     and dict(labels)["channel"] == "slow")
    assert buckets == [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf")]
    assert value(found, f"{duration}_count", channel="demo.hello", service="demo.hello") == 3

    # Services, whoever invoked them: test.inner only ever ran inside test.outer
    invocations = "zato_service_invocations_total"
    assert value(found, invocations, service="test.slow", outcome="ok") == 2
    assert value(found, invocations, service="test.inner", outcome="ok") == 1
    assert value(found, invocations, service="test.outer", outcome="ok") == 1
    assert value(found, invocations, service="test.fails", outcome="error") == 1
    assert value(found, invocations, service="test.sleeps", outcome="timeout") == 1
    assert value(found, "zato_service_duration_seconds_count", service="test.inner") == 1
    assert value(found, "zato_service_duration_seconds_bucket", service="test.slow", le="0.025") == 0
    assert value(found, "zato_service_duration_seconds_bucket", service="test.slow", le="+Inf") == 2


async def test_names_from_urls_never_become_labels(server_dir):
    """ The admin invoke endpoint takes a service name from its URL: names of services that do not
    exist are counted under service="-", with or without credentials. """
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            names = [f"probe.{uuid.uuid4().hex}" for _ in range(3)]
            for name in names:
                assert (await client.post(f"/zato/api/invoke/{name}")).status_code == 401
                assert (await client.post(f"/zato/api/invoke/{name}", auth=admin_auth())).status_code == 404
            assert (await client.post("/zato/api/invoke/zato.ping", auth=admin_auth())).status_code == 200
            reply = await client.get("/zato/metrics", auth=admin_auth())
    found = samples(reply.text)
    requests = "zato_http_requests_total"
    assert value(found, requests, channel="admin.invoke", service="-", status="401") == 3
    assert value(found, requests, channel="admin.invoke", service="-", status="404") == 3
    assert value(found, requests, channel="admin.invoke", service="zato.ping", status="200") == 1
    assert not any(name in reply.text for name in names)


async def test_openmetrics_is_served_to_scrapers_that_ask_for_it(server_dir):
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            await client.get("/demo/hello")
            reply = await client.get("/zato/metrics", auth=admin_auth(),
                                     headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.text.rstrip().endswith("# EOF")
    assert 'zato_http_requests_total{channel="demo.hello",service="demo.hello",status="200"} 1.0' in reply.text


async def test_without_the_metrics_plugin_nothing_is_collected_or_served(server_dir):
    set_config_value(server_dir, "plugins", "metrics", "False")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            await client.get("/demo/hello")
            assert (await client.get("/zato/metrics", auth=admin_auth())).status_code == 404
        assert server.app.observer.metrics is None


# ################################################################################################
# Protection


async def test_scrapes_need_the_admin_credentials_by_default(server_dir):
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            for auth in (None, ("admin", "wrong"), ("prometheus", ADMIN_PASSWORD)):
                reply = await client.get("/zato/metrics", auth=auth)
                assert reply.status_code == 401
                assert reply.headers["www-authenticate"].startswith("Basic ")
                assert "zato_http_requests_total" not in reply.text
            assert (await client.get("/zato/metrics", auth=admin_auth())).status_code == 200
            # The local CLI's token works as it does for the admin API
            reply = await client.get("/zato/metrics", headers={"x-zato-cli-token": server.cli_token})
            assert reply.status_code == 200


async def test_require_auth_false_opens_the_endpoint(server_dir):
    set_config_value(server_dir, "metrics", "require_auth", "False")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/zato/metrics")
    assert reply.status_code == 200 and "zato_http_requests_total" in reply.text


TOKEN_PLUGIN = '''
from zato import hookimpl
from zato.registry import SecurityType
from zato.server.http import HTTPError

def check(definition, request):
    if request.headers.get("x-metrics-token") != definition["token"]:
        raise HTTPError(401)
    return definition["name"]

@hookimpl
def register_security_types(register):
    register(SecurityType("metrics_test_token", check))
'''


async def test_a_security_definition_can_protect_the_endpoint_instead_of_the_admin_credentials(server_dir,
                                                                                              plugin_site):
    plugin_site.add("metricstoken", TOKEN_PLUGIN)
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("security", "prometheus", {"type": "metrics_test_token", "token": "scrape-me"})
    odb.close()
    set_config_value(server_dir, "metrics", "security", "prometheus")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert (await client.get("/zato/metrics", headers={"x-metrics-token": "wrong"})).status_code == 401
            assert (await client.get("/zato/metrics", auth=admin_auth())).status_code == 401  # not the admin's
            reply = await client.get("/zato/metrics", headers={"x-metrics-token": "scrape-me"})
    assert reply.status_code == 200 and "zato_http_requests_total" in reply.text


# ################################################################################################
# Several workers


@contextmanager
def started(process: ServerProcess):
    process.start(timeout=60)
    try:
        yield process
    finally:
        process.stop()


def _get(address: str, path: str, auth: bool = False) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{address}{path}", headers={"Connection": "close"})
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status, reply.read()


def test_with_several_workers_every_scrape_adds_up_all_workers(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    with started(ServerProcess(base)) as server:
        # Requests on new connections until both workers have answered some
        pids, hello = set(), 0
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            _, body = _get(server.address, "/zato/ping")
            pids.add(int(re.search(rb'"pid": (\d+)', body).group(1)))
            assert _get(server.address, "/demo/hello")[0] == 200
            hello += 1
        assert len(pids) == 2, "the kernel sent every connection to one worker"
        metrics_dir = base / "work" / "metrics"
        assert {p.name.split("_")[-1] for p in metrics_dir.glob("*.db")} >= {f"{pid}.db" for pid in pids}

        # Whichever worker answers a scrape, it reports every worker's requests
        for _ in range(6):
            status, body = _get(server.address, "/zato/metrics", auth=True)
            found = samples(body.decode())
            assert value(found, "zato_http_requests_total", channel="demo.hello", service="demo.hello",
                         status="200") == hello
            assert value(found, "zato_http_request_duration_seconds_count", channel="demo.hello",
                         service="demo.hello") == hello
            assert value(found, "zato_service_invocations_total", service="demo.hello", outcome="ok") == hello


def test_a_new_start_empties_the_shared_metrics(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    stale = base / "work" / "metrics" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from an earlier run")
    with started(ServerProcess(base)) as server:
        assert not stale.exists()
        status, body = _get(server.address, "/zato/metrics", auth=True)
    assert status == 200 and b"zato_http_requests_total" in body


def test_multiprocess_false_keeps_each_worker_to_its_own_metrics(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    set_config_value(base, "metrics", "multiprocess", "False")
    with started(ServerProcess(base)) as server:
        status, body = _get(server.address, "/zato/metrics", auth=True)
    assert status == 200 and b"zato_http_requests_total" in body
    assert not (base / "work" / "metrics").exists()
