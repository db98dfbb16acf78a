""" The service test kit (`zato.testing.ServiceTester` and its pytest fixtures): services run
through the server's own invocation pipeline without a server, outgoing connections answer with
canned responses, and a user's project tests its services with the fixtures alone. """

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from zato.server.service import Int, Service
from zato.server.service.simpleio import InputError, OutputError
from zato.testing import CannedHTTP, CannedResponse, CannedSMTP, ServiceTester, UnknownService


class GetUser(Service):
    name = "test.user.get"

    class SimpleIO:
        input_required = "user_id", Int("limit")
        input_optional = "is_active",
        output_required = "user_id", "name"
        output_optional = Int("limit"),

    def handle(self):
        self.response.payload.user_id = self.request.input.user_id
        self.response.payload.name = f"user {self.request.input.user_id}"
        self.response.payload.limit = self.request.input.limit


class AsyncGetUser(GetUser):
    name = "test.user.get-async"

    async def handle(self):
        await trio.sleep(0)
        super().handle()


class Orders(Service):
    name = "test.orders"

    def handle_GET(self):
        self.response.payload = {"method": "GET", "id": self.request.http.params.get("id"),
                                 "request_id": self.request.http.headers.get("x-request-id")}

    async def handle_POST(self):
        self.response.status_code = 201
        self.response.headers["Location"] = f"/orders/{self.request.payload['id']}"
        self.response.payload = {"method": "POST", "created": self.request.payload["id"]}

    def handle(self):
        self.response.payload = {"method": None}


class Caller(Service):
    """ A plain service invoking an async one and a plain one, by name. """
    name = "test.caller"

    def handle(self):
        first = self.invoke("test.user.get-async", {"user_id": 1, "limit": 2})
        second = self.invoke("test.user.get", {"user_id": 3, "limit": 4})
        self.response.payload = {"names": [first["name"], second["name"]], "cid": self.cid}


class AsyncCaller(Service):
    name = "test.async-caller"

    async def handle(self):
        self.response.payload = await self.invoke("test.user.get", {"user_id": 9, "limit": 1})


class CallsMissing(Service):
    name = "test.calls-missing"

    def handle(self):
        self.invoke("no.such.service")


class BadOutput(Service):
    name = "test.bad-output"

    class SimpleIO:
        output_required = "user_id", "name"

    def handle(self):
        self.response.payload = {"user_id": "not a number"}


# ################################################################################################


async def test_a_plain_service_runs_with_its_simpleio(zato_invoke):
    result = await zato_invoke(GetUser, {"user_id": "7", "limit": "10", "extra": "dropped"})
    assert result.payload == {"user_id": 7, "name": "user 7", "limit": 10}
    assert result.status_code == 200 and result.service == "test.user.get" and len(result.cid) == 24


async def test_an_async_service_runs_on_the_loop(zato_service_tester):
    zato_service_tester.add(AsyncGetUser)
    result = await zato_service_tester.invoke("test.user.get-async", {"user_id": 1, "limit": 2})
    assert result.payload == {"user_id": 1, "name": "user 1", "limit": 2}


def test_the_sync_variant_works_in_plain_tests(zato_invoke_sync):
    assert zato_invoke_sync(AsyncGetUser, {"user_id": 5, "limit": 1}).payload["name"] == "user 5"
    assert zato_invoke_sync(GetUser, {"user_id": 6, "limit": 1}).payload["name"] == "user 6"


async def test_the_sync_variant_says_what_to_use_inside_an_async_test(zato_invoke_sync):
    with pytest.raises(RuntimeError, match=r"await tester\.invoke"):
        zato_invoke_sync(GetUser, {"user_id": 1, "limit": 1})


async def test_simpleio_errors_list_every_field_and_name_the_service(zato_invoke):
    with pytest.raises(InputError) as info:
        await zato_invoke(GetUser, {"user_id": "abc", "is_active": "maybe"})
    assert {e["name"] for e in info.value.errors} == {"user_id", "limit", "is_active"}
    assert "user_id: expected an integer, got 'abc'" in str(info.value)
    assert "limit: missing (it is required)" in str(info.value)
    assert any("test.user.get" in note for note in info.value.__notes__)

    with pytest.raises(OutputError) as info:
        await zato_invoke(BadOutput)
    assert {e["name"] for e in info.value.errors} == {"user_id", "name"}


async def test_http_requests_reach_handle_method_and_params_reach_simpleio(zato_invoke):
    result = await zato_invoke(Orders, {"id": 5}, http_method="post")
    assert result.status_code == 201 and result.headers == {"Location": "/orders/5"}
    assert result.payload == {"method": "POST", "created": 5}
    result = await zato_invoke(Orders, http_method="GET", params={"id": "9"}, headers={"X-Request-Id": "r1"})
    assert result.payload == {"method": "GET", "id": "9", "request_id": "r1"}  # header names as channels give them
    assert (await zato_invoke(Orders)).payload == {"method": None}  # no HTTP method: handle()
    result = await zato_invoke(GetUser, {"limit": 3}, http_method="GET", params={"user_id": "4"})
    assert result.payload == {"user_id": 4, "name": "user 4", "limit": 3}


async def test_services_invoke_other_services_of_the_tester(zato_service_tester):
    tester = zato_service_tester
    assert tester.add(GetUser, AsyncGetUser, Caller, AsyncCaller) == [
        "test.user.get", "test.user.get-async", "test.caller", "test.async-caller"]
    result = await tester.invoke(Caller, cid="a" * 24)
    assert result.payload == {"names": ["user 1", "user 3"], "cid": "a" * 24}
    assert (await tester.invoke(AsyncCaller)).payload == {"user_id": 9, "name": "user 9", "limit": 1}


async def test_unknown_services_are_reported_with_what_the_tester_has(zato_service_tester):
    zato_service_tester.add(GetUser, CallsMissing)
    with pytest.raises(UnknownService, match=r"no service 'nope' in this ServiceTester \(it has: "
                                             r"test.calls-missing, test.user.get\); add it with tester.add"):
        await zato_service_tester.invoke("nope")
    with pytest.raises(UnknownService, match="no service 'no.such.service'"):
        await zato_service_tester.invoke(CallsMissing)  # from inside a service too


class StartsWork(Service):
    name = "test.starts-work"

    def handle(self):
        self.response.payload = {"started": self.invoke_async("test.background", {"n": 1})}


class Background(Service):
    name = "test.background"

    async def handle(self):
        await trio.sleep(0.01)
        await self.email.smtp["Audit"].conn.send({"cid": self.cid, "n": self.request.payload["n"]})


async def test_background_work_is_done_when_invoke_returns(zato_service_tester):
    audit = zato_service_tester.outgoing("email.smtp", "Audit", CannedSMTP())
    zato_service_tester.add(Background)
    result = await zato_service_tester.invoke(StartsWork)
    assert audit.sent == [{"cid": result.payload["started"], "n": 1}]


class FansOut(Service):
    name = "test.fans-out"

    def handle(self):
        self.response.payload = {"cid": self.patterns.fanout.invoke(
            {"test.user.get": {"user_id": 1, "limit": 1}, "test.user.get-async": {"user_id": 2, "limit": 1}},
            "test.fan-in")}


class FanIn(Service):
    name = "test.fan-in"

    def handle(self):
        names = sorted(item["response"]["name"] for item in self.request.payload)
        self.email.smtp["Audit"].conn.send(names)


async def test_patterns_run_in_the_tester(zato_service_tester):
    audit = zato_service_tester.outgoing("email.smtp", "Audit", CannedSMTP())
    zato_service_tester.add(GetUser, AsyncGetUser, FanIn)
    await zato_service_tester.invoke(FansOut)
    assert audit.sent == [["user 1", "user 2"]]


async def test_timeouts_cancel_async_services():
    class Sleeps(Service):
        name = "test.sleeps"

        async def handle(self):
            await trio.sleep(30)

    with ServiceTester(Sleeps) as tester, trio.fail_after(10):
        with pytest.raises(trio.TooSlowError):
            await tester.invoke(Sleeps, timeout=0.05)


async def test_services_from_files_get_the_names_a_server_gives_them(tmp_path):
    path = tmp_path / "billing.py"
    path.write_text(textwrap.dedent('''
        from zato.server.service import Service

        class CreateInvoice(Service):
            def handle(self):
                self.response.payload = {"invoice": self.request.payload["amount"] * 2}
    '''))
    with ServiceTester(path) as tester:
        assert tester.server.services.names() == ["billing.create-invoice"]
        assert (await tester.invoke("billing.create-invoice", {"amount": 21})).payload == {"invoice": 42}


async def test_user_config_and_server_config_reach_services(tmp_path):
    class ReadsConfig(Service):
        name = "test.reads-config"

        def handle(self):
            self.response.payload = {"api": self.config.user.crm.address,
                                     "threads": self.server.config.main.sync_service_threads,
                                     "base_dir": self.server.base_dir}

    with ServiceTester(ReadsConfig, user_config={"user": {"crm": {"address": "https://crm.example.com"}}},
                       config={"main": {"sync_service_threads": 3}}, base_dir=tmp_path / "srv") as tester:
        payload = (await tester.invoke(ReadsConfig)).payload
    assert payload == {"api": "https://crm.example.com", "threads": 3, "base_dir": str((tmp_path / "srv").resolve())}
    with pytest.raises(ValueError, match=r"unknown key 'sync_servce_threads' in \[main\] \(did you mean "
                                         r"'sync_service_threads'\?\)"):
        ServiceTester(config={"main": {"sync_servce_threads": 3}})


PLUGIN_WITH_CONFIG = '''
from zato import hookimpl

@hookimpl
def register_server_config(register):
    register("kit_test", {"retries": 1})
'''


def test_installed_plugins_are_loaded_only_when_named(plugin_site):
    plugin_site.add("kittest", PLUGIN_WITH_CONFIG)

    class ReadsRetries(Service):
        name = "test.reads-retries"

        def handle(self):
            self.response.payload = {"retries": self.server.config.kit_test.retries}

    with ServiceTester(ReadsRetries, plugins=("kittest",), config={"kit_test": {"retries": "3"}}) as tester:
        assert tester.invoke_sync(ReadsRetries).payload == {"retries": 3}  # typed by the plugin's declaration
    with pytest.raises(ValueError, match=r"unknown section \[kit_test\]"):
        ServiceTester(config={"kit_test": {"retries": "3"}})
    with pytest.raises(ValueError, match="no such plugin installed: nope; installed: .*kittest"):
        ServiceTester(plugins=("nope",))


class UsesKVDB(Service):
    name = "test.uses-kvdb"

    def handle(self):
        self.kvdb.conn.set("last", self.request.payload)


def test_the_kvdb_is_what_the_test_gives(zato_service_tester, zato_invoke_sync):
    with pytest.raises(AttributeError, match="self.kvdb needs the redis plugin"):
        zato_invoke_sync(UsesKVDB, "x")

    class Store:
        def __init__(self):
            self.conn = self
            self.data = {}

        def set(self, key, value):
            self.data[key] = value

    store = zato_service_tester.set_kvdb(Store())
    zato_invoke_sync(UsesKVDB, "y")
    assert store.data == {"last": "y"}


def test_a_default_tester_cleans_up_its_directory():
    tester = ServiceTester()
    base_dir = Path(tester.server.base_dir)
    assert base_dir.is_dir()
    tester.close()
    assert not base_dir.exists()


# ################################################################################################
# Canned outgoing connections


class SyncData(Service):
    """ The seed article's scheduler service (002), without e-mail and Redis. """
    name = "api.scheduler.sync"

    def handle(self):
        rest_out_name = "My Data Source"
        rest_conn = self.out.plain_http[rest_out_name].conn
        data = rest_conn.get(self.cid).text
        self.response.payload = {"synced": data}


async def test_the_seed_sync_service_reads_a_canned_http_answer(zato_service_tester, zato_invoke):
    source = zato_service_tester.outgoing("out.plain_http", "My Data Source", CannedHTTP(text="new data", status_code=200))
    result = await zato_invoke(SyncData)
    assert result.payload == {"synced": "new data"}
    assert [(call.method, call.cid) for call in source.calls] == [("GET", result.cid)]


class Notify(Service):
    """ Reads a CRM over HTTP and mails what it found. """
    name = "test.notify"

    def handle(self):
        crm = self.out.plain_http.get("CRM").conn
        customer = crm.get(self.cid, {"id": self.request.payload["id"]}).data
        created = crm.post(self.cid, {"note": "notified"}, {"id": customer["id"]}, headers={"X-Source": "zato"})
        self.email.smtp["Mail"].conn.send({"to": customer["email"], "subject": "Hello"})
        self.response.payload = {"status": created.status_code, "ok": created.ok, "note_id": created.json()["note_id"]}


class AsyncNotify(Notify):
    name = "test.notify-async"

    async def handle(self):
        crm = self.out.plain_http["CRM"].conn
        customer = (await crm.get(self.cid, {"id": self.request.payload["id"]})).data
        created = await crm.post(self.cid, {"note": "notified"}, {"id": customer["id"]})
        assert await self.email.smtp["Mail"].conn.send({"to": customer["email"]})
        self.response.payload = {"status": created.status_code}


@pytest.mark.parametrize("service", [Notify, AsyncNotify])
async def test_canned_answers_in_order_and_recorded_calls(zato_service_tester, service):
    tester = zato_service_tester
    crm = tester.outgoing("out.plain_http", "CRM", CannedHTTP(answers=[
        {"id": 5, "email": "ann@example.com"},
        CannedResponse(json={"note_id": 77}, status_code=201),
    ]))
    mail = tester.outgoing("email.smtp", "Mail", CannedSMTP())
    result = await tester.invoke(service, {"id": 5})
    assert result.payload["status"] == 201
    assert [(c.method, c.params, c.data) for c in crm.calls] == [
        ("GET", {"id": 5}, None), ("POST", {"id": 5}, {"note": "notified"})]
    assert mail.sent[0]["to"] == "ann@example.com"
    with pytest.raises(AssertionError, match=r"CannedHTTP 'CRM': call 3 \(GET\) but only 2 answers were given"):
        await tester.invoke(service, {"id": 5})


async def test_canned_handlers_answer_by_request_and_simulate_failures(zato_service_tester):
    def crm(call):
        if call.params["id"] == 0:
            raise ConnectionError("CRM is down")
        return {"id": call.params["id"], "email": f"{call.params['id']}@example.com", "note_id": 1}

    tester = zato_service_tester
    tester.outgoing("out.plain_http", "CRM", CannedHTTP(handler=crm))
    mail = tester.outgoing("email.smtp", "Mail", CannedSMTP())
    assert (await tester.invoke(Notify, {"id": 3})).payload == {"status": 200, "ok": True, "note_id": 1}
    assert mail.sent == [{"to": "3@example.com", "subject": "Hello"}]
    with pytest.raises(ConnectionError, match="CRM is down"):
        await tester.invoke(Notify, {"id": 0})


async def test_missing_connections_say_which_exist(zato_service_tester):
    zato_service_tester.outgoing("out.plain_http", "Other", CannedHTTP(text="x"))
    with pytest.raises(LookupError, match=r"no outgoing connection 'My Data Source' in out.plain_http; known: 'Other'"):
        await zato_service_tester.invoke(SyncData)


def test_canned_responses_look_like_http_responses():
    response = CannedResponse(json={"a": 1}, status_code=404, headers={"X-Id": "1"})
    assert response.text == '{"a": 1}' and response.content == b'{"a": 1}' and response.data == {"a": 1}
    assert response.headers["x-id"] == "1" and response.headers.get("CONTENT-TYPE") == "application/json"
    assert not response.ok and response.json() == {"a": 1}
    assert CannedResponse("plain").data is None
    with pytest.raises(ValueError, match="not both"):
        CannedResponse("a", json={})
    with pytest.raises(ValueError, match="one of"):
        CannedHTTP(text="a", answers=["b"])


# ################################################################################################
# A user's own project


USER_SERVICES = '''
from zato.server.service import Service

class SyncData(Service):
    name = "api.scheduler.sync"

    class SimpleIO:
        input_required = "source",
        output_required = "item_count",

    def handle(self):
        conn = self.out.plain_http[self.request.input.source].conn
        items = conn.get(self.cid, {"since": "today"}).data
        self.response.payload.item_count = len(items)
'''

USER_TESTS = '''
import pytest
from zato.server.service.simpleio import InputError
from zato.testing import CannedHTTP

from my_services import SyncData


def test_sync_counts_new_items(zato_service_tester, zato_invoke_sync):
    source = zato_service_tester.outgoing("out.plain_http", "My Data Source", CannedHTTP(json=[1, 2, 3]))
    result = zato_invoke_sync(SyncData, {"source": "My Data Source"})
    assert result.payload == {"item_count": 3}
    assert source.last_call.params == {"since": "today"}


@pytest.mark.trio
async def test_sync_needs_a_source(zato_invoke):
    with pytest.raises(InputError, match="source: missing"):
        await zato_invoke(SyncData, {})


def test_this_one_fails_on_purpose(zato_invoke_sync):
    zato_invoke_sync("api.unknown")
'''


def test_a_users_project_tests_its_services_with_the_fixtures(tmp_path):
    """ Written as in a user's own project: the fixtures come from the installed zato-core (its
    `pytest11` entry point), nothing is imported from this repository's tests. """
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_services.py").write_text(textwrap.dedent(USER_SERVICES))
    (project / "test_my_services.py").write_text(textwrap.dedent(USER_TESTS))
    env = {**os.environ, "PYTHONPATH": str(project)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", str(project)],
                         cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert "1 failed, 2 passed" in run.stdout, run.stdout + run.stderr
    assert "UnknownService: no service 'api.unknown' in this ServiceTester (it has: " in run.stdout
