""" Security definitions on REST channels: HTTP Basic Auth and API keys in a header (the
`security` plugin), secrets kept only as scrypt hashes, and the rate-limiting article's
`curl http://my.user:password@localhost:PORT/api/sample` (shared/seeds/002_*.txt). """

from __future__ import annotations

import base64
import logging
import shutil

import httpx
import pytest
import trio
from sqlalchemy import select

from zato.builtin.security import (
    DEFAULT_APIKEY_HEADER, SecurityDefinitionError, prepare_secret_fields, security_state, store_definition,
)
from zato.odb import ODB, objects_table, sqlite_url
from zato.registry import Kind
from zato.passwords import verify_password
from zato.server.http import HTTPError, HTTPRequest
from zato.testing import admin_auth, run_server, set_config_value

# The rate-limiting article's service, verbatim.
SEED_SERVICE = '''# -*- coding: utf-8 -*-

# Zato
from zato.server.service import Service

class Sample(Service):
    name = 'api.sample'

    def handle(self):

        # Return a simple string on response
        self.response.payload = 'Hello there!\\n'
'''

USER, PASSWORD = "my.user", "password"  # the article's
API_KEY = "k3y-0f-the-test-client-7b1c9f"
DISTINCT_PASSWORD = "s3cr3t-Pa55-of-the-tests-91e2"  # found in no other text: searched for in files and logs


def odb_of(server_dir) -> ODB:
    return ODB(sqlite_url(server_dir / "work" / "zato.db"))


def prepare(server_dir, definitions: dict[str, dict], channels: dict[str, str | None], *,
            clear: dict[str, dict] | None = None) -> None:
    """ The seed service in pickup/, definitions stored as the plugin stores them (`clear`:
    written as they are, bypassing hashing), and one GET channel per path naming a definition. """
    (server_dir / "pickup" / "sample.py").write_text(SEED_SERVICE, "utf-8")
    odb = odb_of(server_dir)
    try:
        for name, fields in definitions.items():
            store_definition(odb, name, **fields)
        for name, data in (clear or {}).items():
            odb.put_object("security", name, data)
        for path, security in channels.items():
            odb.put_object("channel_rest", path, {"url_path": path, "service": "api.sample", "methods": ["GET"],
                                                  "data_format": "json", "security": security})
    finally:
        odb.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_refused(reply: httpx.Response, challenge: str | None) -> None:
    assert reply.status_code == 401, reply.text
    body = reply.json()
    assert body == {"result": "Error", "cid": reply.headers["x-zato-cid"], "details": "Error 401 Unauthorized"}
    assert reply.headers.get("www-authenticate") == challenge
    assert "Hello there" not in reply.text


BASIC_DEF = {"type": "basic_auth", "username": USER, "password": PASSWORD}
APIKEY_DEF = {"type": "apikey", "password": API_KEY}


# ################################################################################################


async def test_basic_auth_lets_the_right_user_in_and_refuses_everyone_else(server_dir, caplog):
    caplog.set_level(logging.DEBUG)
    prepare(server_dir, {"sample.basic": BASIC_DEF,
                         "sample.realm": {**BASIC_DEF, "realm": 'My "Orders" API'}},
            {"/api/sample": "sample.basic", "/api/realm": "sample.realm", "/api/open": None})
    challenge = 'Basic realm="API"'
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/api/sample", auth=(USER, PASSWORD))
            assert reply.status_code == 200 and reply.text == "Hello there!\n"
            assert (await client.get("/api/open")).text == "Hello there!\n"  # no security: open

            assert_refused(await client.get("/api/sample", auth=(USER, "wrong")), challenge)
            assert_refused(await client.get("/api/sample", auth=(USER, PASSWORD + "x")), challenge)
            assert_refused(await client.get("/api/sample", auth=(USER, "")), challenge)
            assert_refused(await client.get("/api/sample", auth=("other.user", PASSWORD)), challenge)
            assert_refused(await client.get("/api/sample", auth=(USER.upper(), PASSWORD)), challenge)
            assert_refused(await client.get("/api/sample"), challenge)  # no Authorization header
            for malformed in ("Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                              "Basic", "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
                              "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
                assert_refused(await client.get("/api/sample", headers={"authorization": malformed}), challenge)

            # the realm comes from the definition, quoted
            assert_refused(await client.get("/api/realm"), 'Basic realm="My \\"Orders\\" API"')
            assert (await client.get("/api/realm", auth=(USER, PASSWORD))).status_code == 200

    assert "refused the request to /api/sample: wrong password for user 'my.user'" in caplog.text
    assert "unknown user name" in caplog.text and "no Authorization header" in caplog.text
    assert "not Basic base64(user:password)" in caplog.text
    assert PASSWORD + "x" not in caplog.text and base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() \
        not in caplog.text  # secrets never reach the log


async def test_seed_article_curl_with_credentials_in_the_url(server_dir):
    prepare(server_dir, {"my.user": BASIC_DEF}, {"/api/sample": "my.user"})
    async with run_server(server_dir) as server:
        port = server.address.rsplit(":", 1)[1]
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/api/sample"
        async with httpx.AsyncClient() as client:  # credentials in the URL, as curl takes them
            reply = await client.get(url)
            assert reply.status_code == 200 and reply.text == "Hello there!\n"
            assert_refused(await client.get(url.replace(f":{PASSWORD}@", ":nope@")), 'Basic realm="API"')

        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed; the same request was made with httpx above")
        done = await trio.run_process([curl, "-s", url], capture_stdout=True)
        assert done.stdout == b"Hello there!\n"
        done = await trio.run_process([curl, "-s", "-i", url.replace(f":{PASSWORD}@", ":nope@")],
                                      capture_stdout=True)
        head = done.stdout.decode().lower()
        assert head.startswith("http/1.1 401") and 'www-authenticate: basic realm="api"' in head
        assert "x-zato-cid:" in head


async def test_apikey_in_its_header(server_dir):
    prepare(server_dir, {
        "client.default": APIKEY_DEF,
        "client.custom": {"type": "apikey", "header": "X-My-Client-Key", "password": "other-key"},
        "client.zato32": {"type": "apikey", "username": "Zato-Apikey", "password": "third-key"},  # Zato 3.2 form
    }, {"/api/default": "client.default", "/api/custom": "client.custom", "/api/zato32": "client.zato32"})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/api/default", headers={"X-API-Key": API_KEY})
            assert reply.status_code == 200 and reply.text == "Hello there!\n"
            assert (await client.get("/api/default", headers={"x-api-key": API_KEY})).status_code == 200
            assert_refused(await client.get("/api/default", headers={"X-API-Key": API_KEY[:-1]}), "zato-apikey")
            assert_refused(await client.get("/api/default", headers={"X-API-Key": ""}), "zato-apikey")
            assert_refused(await client.get("/api/default"), "zato-apikey")
            assert_refused(await client.get("/api/default", headers={"X-Other-Key": API_KEY}), "zato-apikey")
            assert_refused(await client.get("/api/default", auth=("X-API-Key", API_KEY)), "zato-apikey")

            assert (await client.get("/api/custom", headers={"X-My-Client-Key": "other-key"})).status_code == 200
            assert_refused(await client.get("/api/custom", headers={"X-API-Key": "other-key"}), "zato-apikey")
            # another definition's key does not open this channel
            assert_refused(await client.get("/api/custom", headers={"X-My-Client-Key": API_KEY}), "zato-apikey")

            assert (await client.get("/api/zato32", headers={"Zato-Apikey": "third-key"})).status_code == 200


async def test_authenticate_returns_the_user_name(server_dir):
    prepare(server_dir, {"sample.basic": BASIC_DEF, "client.default": APIKEY_DEF}, {})
    async with run_server(server_dir) as server:
        def request(headers: dict[str, str]) -> HTTPRequest:
            return HTTPRequest("GET", "/x", b"", headers, b"", None, "cid-of-a-test-request", server=server)

        assert await server.authenticate(request(basic(USER, PASSWORD)), "sample.basic") == USER
        assert await server.authenticate(request({"x-api-key": API_KEY}), "client.default") == "client.default"
        with pytest.raises(HTTPError) as refused:
            await server.authenticate(request(basic(USER, "wrong")), "sample.basic")
        assert refused.value.status == 401


async def test_inactive_definition_refuses_every_request(server_dir, caplog):
    prepare(server_dir, {"sample.basic": {**BASIC_DEF, "is_active": False}}, {"/api/sample": "sample.basic"})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/api/sample", auth=(USER, PASSWORD))
    assert reply.status_code == 401 and reply.json()["cid"] == reply.headers["x-zato-cid"]
    assert "security definition 'sample.basic' does not exist or is inactive" in caplog.text


async def test_definition_of_a_disabled_plugins_type_refuses_every_request(server_dir, caplog):
    prepare(server_dir, {"sample.basic": BASIC_DEF}, {"/api/sample": "sample.basic"})
    set_config_value(server_dir, "plugins", "security", "False")
    async with run_server(server_dir) as server:
        assert "security" not in server.plugins.enabled_names()
        assert "basic_auth" not in server.registry.items(Kind.SECURITY_TYPES)
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/api/sample", auth=(USER, PASSWORD))
    assert reply.status_code == 401 and "Hello there" not in reply.text
    assert "has type 'basic_auth', which no enabled plugin provides" in caplog.text


# ################################################################################################
# Secrets at rest


def stored_rows(server_dir) -> dict[str, dict]:
    odb = odb_of(server_dir)
    try:
        with odb.engine.connect() as conn:
            rows = conn.execute(select(objects_table).where(objects_table.c.type == "security")).mappings().all()
    finally:
        odb.close()
    return {row["name"]: dict(row["data"]) for row in rows}


def secret_url(name: str) -> str:
    return f"/zato/api/objects/security/{name}/secrets/password"


async def test_secrets_are_stored_only_as_scrypt_hashes(server_dir):
    prepare(server_dir, {"sample.basic": {**BASIC_DEF, "password": DISTINCT_PASSWORD}, "client.default": APIKEY_DEF},
            {})
    rows = stored_rows(server_dir)
    assert set(rows["sample.basic"]) == {"type", "username", "password", "direction"}
    assert set(rows["client.default"]) == {"type", "password", "direction"}  # the header is X-API-Key when not given
    assert rows["sample.basic"]["direction"] == "inbound"
    for row, secret in ((rows["sample.basic"], DISTINCT_PASSWORD), (rows["client.default"], API_KEY)):
        assert row["password"].startswith("scrypt$") and verify_password(secret, row["password"])
        # nowhere in the database files either (the table, its WAL, anything)
        for path in (server_dir / "work").glob("zato.db*"):
            assert secret.encode() not in path.read_bytes(), path
    # the same secret hashes differently each time (a fresh salt)
    again = prepare_secret_fields({"name": "x", **BASIC_DEF, "password": DISTINCT_PASSWORD})["password"]
    assert again != rows["sample.basic"]["password"] and verify_password(DISTINCT_PASSWORD, again)


async def test_secrets_set_through_the_admin_api_are_hashed_and_apply_at_once(server_dir, caplog):
    caplog.set_level(logging.DEBUG)
    prepare(server_dir, {}, {"/api/sample": "sample.basic"})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/zato/api/objects/security", auth=admin_auth(),
                                      json={"name": "sample.basic", "type": "basic_auth", "username": USER})
            assert reply.status_code == 201, reply.text
            # no password yet: refused, whatever the caller sends
            assert_refused(await client.get("/api/sample", auth=(USER, "")), 'Basic realm="API"')

            reply = await client.put(secret_url("sample.basic"), auth=admin_auth(), json={"value": DISTINCT_PASSWORD})
            assert reply.status_code == 204, reply.text
            assert (await client.get("/api/sample", auth=(USER, DISTINCT_PASSWORD))).text == "Hello there!\n"
            reply = await client.get("/zato/api/objects/security/sample.basic", auth=admin_auth())
            assert reply.json()["secrets_set"] == ["password"] and DISTINCT_PASSWORD not in reply.text
    assert "has no password set" in caplog.text
    row = stored_rows(server_dir)["sample.basic"]
    assert verify_password(DISTINCT_PASSWORD, row["password"]) and DISTINCT_PASSWORD not in caplog.text


async def test_a_clear_secret_in_the_database_is_refused_until_set_again(server_dir, caplog):
    clear_secret = "clear-text-secret-4411"
    prepare(server_dir, {}, {"/api/sample": "sample.basic"},
            clear={"sample.basic": {"type": "basic_auth", "username": USER, "password": clear_secret},
                   "bad.hash": {"type": "apikey", "password": "scrypt$not-a-hash"}})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/api/sample", auth=(USER, clear_secret))
            assert_refused(reply, 'Basic realm="API"')
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any(e.startswith("security definition 'sample.basic' holds its password in clear") for e in errors), \
                errors  # said at start ...
            assert any(e.startswith(f"cid={reply.headers['x-zato-cid']} security definition 'sample.basic' holds "
                                    f"its password in clear") for e in errors), errors  # ... and per request
            assert "security definition 'bad.hash' has a password that is not a valid scrypt hash" in caplog.text
            assert "PUT /zato/api/objects/security/sample.basic/secrets/password" in caplog.text
            assert clear_secret not in caplog.text

            # set again through its own call: hashed, and the definition works at once
            reply = await client.put(secret_url("sample.basic"), auth=admin_auth(), json={"value": "new-password"})
            assert reply.status_code == 204, reply.text
            assert (await client.get("/api/sample", auth=(USER, "new-password"))).status_code == 200
            assert_refused(await client.get("/api/sample", auth=(USER, clear_secret)), 'Basic realm="API"')
    row = stored_rows(server_dir)["sample.basic"]
    assert verify_password("new-password", row["password"]) and row["username"] == USER


async def test_a_secret_may_be_kept_in_the_environment(server_dir, monkeypatch, caplog):
    monkeypatch.setenv("ZATO_TEST_PARTNER_KEY", "key-from-the-environment")
    prepare(server_dir, {"partner": {"type": "apikey", "password": "$ZATO_TEST_PARTNER_KEY"}}, {"/api/sample": "partner"})
    assert stored_rows(server_dir)["partner"]["password"] == "$ZATO_TEST_PARTNER_KEY"  # the reference, as written
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            headers = {"x-api-key": "key-from-the-environment"}
            assert (await client.get("/api/sample", headers=headers)).status_code == 200
            assert_refused(await client.get("/api/sample", headers={"x-api-key": "$ZATO_TEST_PARTNER_KEY"}),
                           "zato-apikey")
            assert_refused(await client.get("/api/sample", headers={"x-api-key": "key-from-the"}), "zato-apikey")
            assert "partner" not in security_state(server).accepted  # a key from the environment is checked afresh
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "'partner'" in r.getMessage()
                and "refused the request" not in r.getMessage()]  # nothing wrong with the definition itself


# ################################################################################################
# Remembered verifications


async def test_verification_is_remembered_per_credential_and_stored_hash(server_dir):
    prepare(server_dir, {"sample.basic": BASIC_DEF}, {"/api/sample": "sample.basic"})
    async with run_server(server_dir) as server:
        verifier = security_state(server).verifier
        stored = server.config_objects["security"]["sample.basic"]["password"]
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert not verifier.is_known(USER, PASSWORD, stored)
            assert (await client.get("/api/sample", auth=(USER, PASSWORD))).status_code == 200
            assert verifier.is_known(USER, PASSWORD, stored)  # scrypt ran once; later requests look it up

            # many requests at once: the right password keeps working
            replies = []
            async with trio.open_nursery() as nursery:
                async def call() -> None:
                    replies.append(await client.get("/api/sample", auth=(USER, PASSWORD)))
                for _ in range(20):
                    nursery.start_soon(call)
            assert [r.status_code for r in replies] == [200] * 20

            # a wrong password is never remembered: refused every time
            for _ in range(3):
                assert_refused(await client.get("/api/sample", auth=(USER, "wrong")), 'Basic realm="API"')
            assert not verifier.is_known(USER, "wrong", stored)

            # a new password (a new hash): the old one stops working at once, although it was remembered
            reply = await client.put(secret_url("sample.basic"), auth=admin_auth(), json={"value": "changed"})
            assert reply.status_code == 204, reply.text
            assert_refused(await client.get("/api/sample", auth=(USER, PASSWORD)), 'Basic realm="API"')
            assert (await client.get("/api/sample", auth=(USER, "changed"))).status_code == 200
            new_stored = server.config_objects["security"]["sample.basic"]["password"]
            assert new_stored != stored and verifier.is_known(USER, "changed", new_stored)


async def test_a_header_that_passed_skips_the_checks_until_the_definition_changes(server_dir):
    prepare(server_dir, {"sample.basic": BASIC_DEF, "client.default": APIKEY_DEF},
            {"/api/sample": "sample.basic", "/api/default": "client.default"})
    header = basic(USER, PASSWORD)
    async with run_server(server_dir) as server:
        state = security_state(server)
        definition = server.config_objects["security"]["sample.basic"]
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert "sample.basic" not in state.accepted
            assert (await client.get("/api/sample", headers=header)).status_code == 200
            accepted = state.accepted["sample.basic"]
            assert accepted.definition is definition and accepted.user == USER
            # only a 32-byte MAC of the header is kept, never the header or the password
            assert [len(token) for token in accepted._tokens] == [32]
            assert not any(header["authorization"].encode() in token or PASSWORD.encode() in token
                           for token in accepted._tokens)

            # the next request with that header answers from it: no Verifier lookup, which would
            # have run scrypt again (the Verifier forgot it) and remembered it there anew
            state.verifier._known.clear()
            assert (await client.get("/api/sample", headers=header)).status_code == 200
            assert not state.verifier.is_known(USER, PASSWORD, definition["password"])

            # what the full check refuses is refused still, and nothing is remembered for it
            assert_refused(await client.get("/api/sample", auth=(USER, "wrong")), 'Basic realm="API"')
            reply = await client.get("/api/sample", headers=[("authorization", header["authorization"])] * 2)
            assert reply.status_code == 400 and "sent more than once" in reply.json()["details"]
            assert len(accepted._tokens) == 1

            # API keys alike
            assert (await client.get("/api/default", headers={"x-api-key": API_KEY})).status_code == 200
            assert state.accepted["client.default"].user == "client.default"
            assert_refused(await client.get("/api/default", headers={"x-api-key": API_KEY + "x"}), "zato-apikey")
            assert len(state.accepted["client.default"]._tokens) == 1

            # a new password: the remembered header is refused at once, the new one remembered anew
            reply = await client.put(secret_url("sample.basic"), auth=admin_auth(), json={"value": "changed"})
            assert reply.status_code == 204, reply.text
            assert_refused(await client.get("/api/sample", headers=header), 'Basic realm="API"')
            assert (await client.get("/api/sample", auth=(USER, "changed"))).status_code == 200
            renewed = state.accepted["sample.basic"]
            assert renewed is not accepted
            assert renewed.definition is server.config_objects["security"]["sample.basic"]


# ################################################################################################
# Preparing definitions for storage


def test_prepare_secret_fields_hashes_the_secret_and_checks_the_definition():
    prepared = prepare_secret_fields({"name": "a", **BASIC_DEF})
    assert prepared["password"] != PASSWORD and verify_password(PASSWORD, prepared["password"])
    zato32 = prepare_secret_fields({"name": "a", "type": "apikey", "username": "X-Key", "password": "k"})
    assert zato32["header"] == "X-Key" and "username" not in zato32  # Zato 3.2 kept the header in username
    assert prepare_secret_fields({"name": "a", "type": "apikey"}) == {"name": "a", "type": "apikey", "is_active": True,
                                                                      "direction": "inbound"}
    kept = prepared["password"]  # a hash, or a $NAME reference, is kept as it is
    assert prepare_secret_fields({"name": "a", **BASIC_DEF, "password": kept})["password"] == kept
    assert prepare_secret_fields({"name": "a", **BASIC_DEF, "password": "$MY_VAR"})["password"] == "$MY_VAR"

    errors = {
        "type 'jwt', which is not one of basic_auth, apikey": {"name": "a", "type": "jwt"},
        "needs a username": {"name": "a", "type": "basic_auth", "password": "p"},
        "must be a non-empty string": {"name": "a", "type": "basic_auth", "username": "u", "password": ""},
        "is not a valid HTTP header name": {"name": "a", "type": "apikey", "header": "X Key: 1", "password": "k"},
        "not a field of security": {"name": "a", "type": "apikey", "password_hash": "x"},
    }
    for message, definition in errors.items():
        with pytest.raises(SecurityDefinitionError, match=message) as raised:
            prepare_secret_fields(definition)
        assert "'a'" in str(raised.value)


async def test_outgoing_definitions_keep_their_password_encrypted_and_never_open_a_channel(server_dir, caplog):
    from zato.builtin.security import OutgoingCredentialsError, outgoing_credentials
    from zato.objects import SecretBox
    box = SecretBox(server_dir / "config" / "secret.key")
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    store_definition(odb, "to.partner", box=box, type="basic_auth", username="me", password="sent-pw",
                     direction="outgoing")
    store_definition(odb, "from.partner", type="basic_auth", username="them", password="checked-pw")
    odb.put_object("channel_rest", "misused", {"url_path": "/misused", "service": "demo.hello",
                                               "security": "to.partner"})
    stored = odb.get_object("security", "to.partner")["password"]
    odb.close()
    assert stored.startswith("enc:v1:") and "sent-pw" not in stored
    with pytest.raises(SecurityDefinitionError, match="stored encrypted"):
        prepare_secret_fields({"name": "x", "type": "basic_auth", "username": "u", "password": "p",
                               "direction": "outgoing"})
    async with run_server(server_dir) as server:
        assert outgoing_credentials(server, "to.partner") == {
            "type": "basic_auth", "username": "me", "password": "sent-pw", "header": None}
        with pytest.raises(OutgoingCredentialsError, match="inbound use"):
            outgoing_credentials(server, "from.partner")
        with pytest.raises(OutgoingCredentialsError, match="does not exist"):
            outgoing_credentials(server, "nope")
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert (await client.get("/misused", auth=("me", "sent-pw"))).status_code == 401
    assert "is for outgoing connections" in caplog.text
