""" The published `zato-websocket-client` package (1.6.1), unchanged, speaking Zato's WSX protocol
to a WebSocket channel of our server: a session with Basic Auth credentials, `invoke` of the
channel's service, a wrong secret, requests from the server answered by `on_request_callback`
(from a service and from the admin API), WebSocket pings answered by ws4py, and pub/sub: through a
second channel, whose service is Zato's gateway `helpers.web-sockets-gateway`, the client subscribes
to a topic and its callback gets the messages published to it as `zwsx.psrq` requests.

The client (gevent and ws4py) clashes with our `zato` package, so it lives in its own virtual
environment, built from PyPI and cached under pytest's cache directory, keyed by the recipe and
the interpreter, as in test_zato_client.py (whose helpers this module reuses).

The server runs as a real process (`ServerProcess`); the security definition and the channel are
created through the admin API once its port is known (the gateway channel and the topic too),
and a script run with the environment's interpreter drives the client and prints what it saw, as
JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from test_zato_client import CLIENT_TIMEOUT, INSTALL_TIMEOUT, NETWORK_ERRORS, on_ci, run
from zato.testing import ADMIN_PASSWORD, ServerProcess, create_test_server_dir

pytestmark = pytest.mark.slow

ADMIN_USER = "admin"
USER, SECRET = "compat.wsx.user", "compat-wsx-s3cret"
CLIENT_ID, WRONG_CLIENT_ID = "compat-wsx-client", "compat-wsx-wrong-secret"
SUBSCRIBER_ID = "compat-wsx-subscriber"
CHANNEL_PATH, GATEWAY_PATH = "/compat/wsx", "/compat/wsx-gateway"
GATEWAY_CHANNEL = "compat.wsx.gateway"
TOPIC = "/compat/wsx/news"
PING_INTERVAL = 0.5  # short, so that the script sees a few WebSocket pings answered by ws4py

# Each step is the arguments of `pip install` in the new environment, in order. ws4py does the
# handshake and the frames, so its version is pinned too.
RECIPE: tuple[tuple[str, ...], ...] = (
    ("zato-websocket-client==1.6.1", "ws4py==0.6.0"),
)
CHECK_IMPORT = "from zato.websocket.client import Client, Config"

# ################################################################################################
# What the server runs: the channel's service, in its pickup directory

SERVICES = '''
from zato.server.service import Service


class Echo(Service):
    """ Echoes its request and the connection; with `ask` in the request, it asks the client
    first and returns the client's answer too. """
    name = "compat.wsx.echo"

    def handle(self):
        wsx = self.request.wsx
        payload = self.request.payload
        answer = wsx.invoke_client(payload["ask"]) if "ask" in payload else None
        self.response.payload = {"echo": payload, "answer": answer, "channel": wsx.channel_name,
                                 "pub_client_id": wsx.pub_client_id, "ext_client_id": wsx.ext_client_id,
                                 "user": wsx.user, "cid": self.cid}
'''

# ################################################################################################
# What the client runs: zato-websocket-client, in its own environment

CLIENT_SCRIPT = '''
import base64, json, sys
from gevent import sleep
from zato.websocket.client import Client, Config

ws_address, admin_address, admin_user, admin_password, user, secret, client_id, wrong_client_id, \\
    ping_wait, gateway_address, subscriber_id, topic_name = sys.argv[1:13]
requests_seen = {client_id: [], wrong_client_id: [], subscriber_id: []}


def answering(name):
    def on_request(request):
        requests_seen[name].append({"id": request.id, "data": request.data,
                                    "msg_type": request.msg_impl["meta"].get("msg_type")})
        return {"answered_by": name, "request": request.data}
    return on_request


def describe(response):
    if response is None:
        return None
    return {"is_ok": response.is_ok, "status": response.status, "data": response.data, "id": response.id,
            "in_reply_to": response.in_reply_to, "msg_type": response.msg_impl["meta"].get("msg_type")}


def admin(method, path, body=None):
    import urllib.request  # after gevent patched the socket module, so the client's greenlets run meanwhile
    request = urllib.request.Request(admin_address + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", "Basic " + base64.b64encode(
        (admin_user + ":" + admin_password).encode()).decode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return {"status": reply.status, "body": json.loads(reply.read())}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode("utf-8", "replace")}


def config(name, the_secret, address=ws_address):
    return Config(client_name="compat " + name, client_id=name, address=address, username=user,
                  secret=the_secret, on_request_callback=answering(name), wait_time=10)


def wait_for_deliveries(name, count, timeout=15):
    """ Until the callback of `name` has seen `count` zwsx.psrq requests, or `timeout` seconds. """
    for _ in range(int(timeout / 0.05)):
        if len([r for r in requests_seen[name] if r["msg_type"] == "zwsx.psrq"]) >= count:
            return True
        sleep(0.05)
    return False


results = {}

wrong = Client(config(wrong_client_id, secret + "-wrong"))
wrong.run(max_wait=1.5)  # returns at max_wait: it never authenticates
results["wrong_authenticated"] = wrong.is_authenticated
results["wrong_token"] = wrong.auth_token
try:
    results["wrong_invoke"] = {"returned": describe(wrong.invoke({"x": 1}))}
except Exception as exc:
    results["wrong_invoke"] = {"raised": "%s: %s" % (type(exc).__name__, exc)}
results["wrong_listed"] = admin("GET", "/zato/api/wsx/connections?ext_client_id=" + wrong_client_id)

client = Client(config(client_id, secret))
client.run(max_wait=10)
results["authenticated"] = client.is_authenticated
results["token"] = client.auth_token
results["invoke"] = describe(client.invoke({"customer_id": 123, "name": "Jane"}))
results["ask"] = describe(client.invoke({"ask": {"question": "ready?"}}))

listed = admin("GET", "/zato/api/wsx/connections?ext_client_id=" + client_id)
results["listed"] = listed
pub_client_id = listed["body"]["connections"][0]["pub_client_id"] if listed["status"] == 200 and \\
    listed["body"]["connections"] else "(not listed)"
results["admin_invoke"] = admin("POST", "/zato/api/wsx/connections/%s/invoke" % pub_client_id,
                                {"data": {"from": "admin"}, "timeout": 10})

sleep(float(ping_wait))  # several pings, each answered by ws4py with a pong
results["after_pings"] = describe(client.invoke({"still": "here"}))
results["listed_after_pings"] = admin("GET", "/zato/api/wsx/connections?ext_client_id=" + client_id)

subscriber = Client(config(subscriber_id, secret, gateway_address))
subscriber.run(max_wait=10)
results["subscriber_authenticated"] = subscriber.is_authenticated
results["subscribed"] = describe(subscriber.invoke({"service": "zato.pubsub.pubapi.subscribe-wsx",
                                                    "request": {"topic_name": topic_name}}))
results["published"] = admin("POST", "/zato/api/invoke/zato.pubsub.publish.publish",
                             {"topic_name": topic_name, "data": {"order": 1}, "priority": 7})
results["first_delivered"] = wait_for_deliveries(subscriber_id, 1)
results["client_published"] = describe(subscriber.invoke({  # Zato's name for publish, through the gateway
    "service": "zato.pubsub.pubapi.publish-message", "request": {"topic_name": topic_name, "data": "from a client"}}))
results["second_delivered"] = wait_for_deliveries(subscriber_id, 2)
results["after_deliveries"] = describe(subscriber.invoke({"service": "zato.ping"}))
results["subscriber_listed"] = admin("GET", "/zato/api/wsx/connections?ext_client_id=" + subscriber_id)

results["requests_seen"] = requests_seen
subscriber.stop()
client.stop()
wrong.stop()
sleep(0.2)
sys.stdout.write(json.dumps(results) + "\\n")
sys.stdout.flush()
'''

# ################################################################################################
# The client's environment. test_zato_client.py's own builder is tied to its recipe (its RECIPE,
# CHECK_IMPORT and cache directory are module globals), so this one takes them as arguments.


def recipe_key(recipe: tuple[tuple[str, ...], ...], check: str) -> str:
    text = json.dumps({"python": sys.version_info[:2], "recipe": recipe, "check": check})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def install_failed(label: str, what: str, result: subprocess.CompletedProcess[str]) -> None:
    """ The package index unreachable: a skip on a developer's machine, a failure on CI; any other
    failure is a failure. """
    message = (f"building the {label} environment failed at `{what}` (exit code {result.returncode})\n"
               f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}")
    unreachable = bool(NETWORK_ERRORS.search(result.stdout + result.stderr))
    if unreachable and not on_ci():
        pytest.skip(f"the package index seems unreachable; {message}")
    pytest.fail(("CI is set, so this is an error, not a skip: " if unreachable else "") + message, pytrace=False)


def environment_python(config: pytest.Config, label: str, recipe: tuple[tuple[str, ...], ...], check: str) -> Path:
    """ The interpreter of a virtual environment built by `recipe` (pip install steps), reused while
    `check` runs in it; a lock file keeps two pytest runs from building it at once. """
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache_dir = Path(cache.mkdir(f"{label}-venv"))
    else:  # -p no:cacheprovider
        cache_dir = Path(tempfile.gettempdir()) / "zato-compat-venvs" / f"{label}-venv"
        cache_dir.mkdir(parents=True, exist_ok=True)
    venv = cache_dir / recipe_key(recipe, check)
    python = venv / "bin" / "python"
    with open(cache_dir / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / "recipe-done").exists() and run([python, "-I", "-c", check], cwd=venv, timeout=60).returncode == 0:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        result = run([sys.executable, "-m", "venv", venv], cwd=cache_dir, timeout=120)
        if result.returncode != 0:
            install_failed(label, f"{sys.executable} -m venv {venv}", result)
        for step in recipe:
            command = [python, "-m", "pip", "install", "--disable-pip-version-check", *step]
            result = run(command, cwd=venv, timeout=INSTALL_TIMEOUT)
            if result.returncode != 0:
                install_failed(label, " ".join(map(str, command[1:])), result)
        result = run([python, "-I", "-c", check], cwd=venv, timeout=60)
        if result.returncode != 0:
            install_failed(label, f"python -c {check!r}", result)
        (venv / "recipe-done").write_text(json.dumps(recipe))
    return python


@pytest.fixture(scope="module")
def client_python(request: pytest.FixtureRequest) -> Path:
    """ The interpreter of a virtual environment with zato-websocket-client 1.6.1. """
    return environment_python(request.config, "zato-websocket-client", RECIPE, CHECK_IMPORT)


# ################################################################################################


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """ A server process with the channel's service, a Basic Auth definition, the channel and the
    gateway's channel, on the server's own (free) port, and the topic. """
    server_dir = create_test_server_dir(tmp_path_factory.mktemp("compat-wsx") / "server", main={"graceful_timeout": 3})
    (server_dir / "pickup" / "compat_wsx_services.py").write_text(textwrap.dedent(SERVICES), "utf-8")
    with ServerProcess(server_dir) as process:
        with httpx.Client(base_url=process.address, auth=(ADMIN_USER, ADMIN_PASSWORD), timeout=30) as api:
            reply = api.post("/zato/api/objects/security",
                             json={"name": "compat.wsx.basic", "type": "basic_auth", "username": USER})
            assert reply.status_code == 201, reply.text
            reply = api.put("/zato/api/objects/security/compat.wsx.basic/secrets/password", json={"value": SECRET})
            assert reply.status_code == 204, reply.text
            port = urlsplit(process.address).port
            reply = api.post("/zato/api/objects/channel_web_socket", json={
                "name": "compat.wsx", "address": f"ws://127.0.0.1:{port}{CHANNEL_PATH}", "service": "compat.wsx.echo",
                "security": "compat.wsx.basic", "ping_interval": PING_INTERVAL, "pings_missed_threshold": 2})
            assert reply.status_code == 201, reply.text
            reply = api.post("/zato/api/objects/channel_web_socket", json={
                "name": GATEWAY_CHANNEL, "address": f"ws://127.0.0.1:{port}{GATEWAY_PATH}",
                "service": "helpers.web-sockets-gateway", "security": "compat.wsx.basic"})
            assert reply.status_code == 201, reply.text
            reply = api.post("/zato/api/objects/pubsub_topic", json={"name": TOPIC})
            assert reply.status_code == 201, reply.text
        yield process


@pytest.fixture(scope="module")
def results(client_python: Path, server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("wsx-client")
    script = work / "wsx_client_calls.py"
    script.write_text(textwrap.dedent(CLIENT_SCRIPT), "utf-8")
    port = urlsplit(server.address).port
    ws_address, gateway_address = f"ws://127.0.0.1:{port}{CHANNEL_PATH}", f"ws://127.0.0.1:{port}{GATEWAY_PATH}"
    completed = run([client_python, "-I", script, ws_address, server.address, ADMIN_USER, ADMIN_PASSWORD, USER, SECRET,
                     CLIENT_ID, WRONG_CLIENT_ID, PING_INTERVAL * 5, gateway_address, SUBSCRIBER_ID, TOPIC],
                    cwd=work, timeout=CLIENT_TIMEOUT)
    assert completed.returncode == 0 and completed.stdout.strip(), \
        f"the zato-websocket-client script failed:\n{completed.stderr[-6000:]}\nserver:\n{server.output(6000)}"
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    found["client_log"] = completed.stderr
    return found


# ################################################################################################


def test_a_session_with_the_right_secret_then_invoke_gets_the_services_response(results):
    assert results["authenticated"] is True and results["token"].startswith("zwsxt."), results["client_log"][-3000:]
    response = results["invoke"]
    assert response["is_ok"] is True and response["status"] == 200 and response["msg_type"] == "zwsx.rspok", response
    assert response["in_reply_to"].startswith("zato.ws.client.invs.")
    data = response["data"]
    assert data["echo"] == {"customer_id": 123, "name": "Jane"} and data["answer"] is None
    assert data["channel"] == "compat.wsx" and data["ext_client_id"] == CLIENT_ID and data["user"] == USER
    assert data["pub_client_id"].startswith("ws.") and data["cid"] == response["id"]


def test_a_wrong_secret_never_authenticates_and_invoke_raises(results):
    assert results["wrong_authenticated"] is False and results["wrong_token"] is None
    assert results["wrong_invoke"] == {"raised": "Exception: Client is not authenticated"}
    assert results["wrong_listed"] == {"status": 200, "body": {"connections": []}}
    # The library hands every frame without in_reply_to to on_request_callback, so the refusal
    # (zwsx.merr, then the connection is closed) reaches it, as it does with Zato.
    seen = results["requests_seen"][WRONG_CLIENT_ID]
    assert [(r["msg_type"], r["data"]) for r in seen] == [
        ("zwsx.merr", "You are not authorized to access this resource")], seen


def test_a_service_asks_the_client_and_its_callback_answers(results):
    response = results["ask"]
    assert response["is_ok"] is True, response
    # The client puts its callback's answer in data.response; invoke_client returns that data.
    assert response["data"]["answer"] == {"response": {"answered_by": CLIENT_ID, "request": {"question": "ready?"}}}
    assert {"question": "ready?"} in [r["data"] for r in results["requests_seen"][CLIENT_ID]]


def test_the_admin_api_lists_the_client_and_invokes_its_callback(results):
    listed = results["listed"]
    assert listed["status"] == 200, listed
    [row] = listed["body"]["connections"]
    assert row["ext_client_id"] == CLIENT_ID and row["ext_client_name"] == f"compat {CLIENT_ID}"
    assert row["channel_name"] == "compat.wsx" and row["user"] == USER
    assert row["pub_client_id"] == results["invoke"]["data"]["pub_client_id"]
    invoked = results["admin_invoke"]
    assert invoked == {"status": 200, "body": {"response": {"answered_by": CLIENT_ID, "request": {"from": "admin"}}}}
    seen = results["requests_seen"][CLIENT_ID]
    assert [r["msg_type"] for r in seen] == ["zwsx.rqc", "zwsx.rqc"] and seen[1]["data"] == {"from": "admin"}


def test_ws4py_answers_the_servers_pings_and_the_connection_lives_on(results):
    response = results["after_pings"]
    assert response["is_ok"] is True and response["data"]["echo"] == {"still": "here"}, response
    [row] = results["listed_after_pings"]["body"]["connections"]
    assert row["pings_missed"] == 0 and row["pub_client_id"] == results["invoke"]["data"]["pub_client_id"]


def test_through_the_gateway_the_client_subscribes_and_its_callback_gets_each_message_as_psrq(results):
    assert results["subscriber_authenticated"] is True, results["client_log"][-3000:]
    subscribed = results["subscribed"]
    assert subscribed["is_ok"] is True and subscribed["msg_type"] == "zwsx.rspok", subscribed
    sub_key = subscribed["data"]["sub_key"]
    assert sub_key.startswith("zpsk.wsx.")
    published = results["published"]
    assert published["status"] == 200 and published["body"]["msg_id"].startswith("zpsm"), published
    msg_id = published["body"]["msg_id"]
    assert results["first_delivered"] is True and results["second_delivered"] is True, results["requests_seen"]
    seen = results["requests_seen"][SUBSCRIBER_ID]
    assert [r["msg_type"] for r in seen] == ["zwsx.psrq", "zwsx.psrq"], seen
    first, second = seen
    # RequestFromZato.id is the frame's meta.id, the message's id; .data is the message.
    assert first["id"] == msg_id
    message = first["data"]
    assert message["msg_id"] == msg_id and message["topic_name"] == TOPIC and message["data"] == {"order": 1}
    assert message["sub_key"] == sub_key and message["priority"] == 7 and message["has_gd"] is True
    assert message["delivery_count"] == 1 and message["mime_type"] == "application/json" and message["size"] == 12
    assert message["expiration"] > 0 and message["pub_time_iso"] < message["expiration_time_iso"]
    client_published = results["client_published"]
    assert client_published["is_ok"] is True and client_published["data"]["msg_id"] == second["id"], client_published
    assert second["data"]["data"] == "from a client" and second["data"]["mime_type"] == "text/plain"
    assert second["data"]["sub_key"] == sub_key and second["data"]["topic_name"] == TOPIC
    # The callback's answers went back as client-responses to zpsm... ids; the server ignores them
    # and the session goes on.
    assert results["after_deliveries"]["is_ok"] is True and results["after_deliveries"]["data"] == {"pong": "zato"}
    [row] = results["subscriber_listed"]["body"]["connections"]
    assert row["channel_name"] == GATEWAY_CHANNEL and TOPIC in row["subscriptions"]
