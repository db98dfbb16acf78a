""" The REST API of BST through real HTTP: the REST channels of the package's enmasse file (imported
with `zato enmasse import` into the running server), behind their Basic Auth definition, and the
article's curl against a channel without one. """

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import httpx
import trio

from bst_fixtures import admin, bst_server, invoke

from zato_plugin_bst import REST_CHANNELS

PASSWORD = "bst-s3cret-pw"
USER = "bst.api"
README = Path(__file__).resolve().parents[1] / "README.md"
ZATO = Path(sys.executable).with_name("zato")


async def import_channels(server, env):
    done = await trio.run_process([str(ZATO), "enmasse", "import", str(server.test_base_dir), str(REST_CHANNELS)],
                                  capture_stdout=True, capture_stderr=True, check=False, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    return done.stdout.decode()


def test_the_readme_holds_the_packages_enmasse_file():
    text = README.read_text("utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert REST_CHANNELS.read_text("utf-8") in blocks


async def test_rest_api_behind_the_enmasse_files_security(tmp_path, monkeypatch):
    monkeypatch.setenv("BST_API_PASSWORD", PASSWORD)  # the server (in this process) reads $BST_API_PASSWORD
    async with bst_server(tmp_path) as server:
        out = await import_channels(server, {**os.environ})
        assert "create     channel_rest  bst.transition" in out, out
        assert "create     security      bst.api" in out, out

        async with httpx.AsyncClient(base_url=server.address, timeout=30) as anonymous, \
                httpx.AsyncClient(base_url=server.address, timeout=30, auth=(USER, PASSWORD)) as client, \
                httpx.AsyncClient(base_url=server.address, timeout=30, auth=(USER, "wrong")) as wrong:
            cust = {"object_type": "Customer", "object_id": 2, "state_new": "Consent given"}
            for path in ("/bst/transition", "/bst/can-transition", "/bst/mass-transition", "/bst/get-history",
                         "/bst/get-definition-list", "/bst/get-definition", "/bst/get-current-state-info",
                         "/bst/export"):
                # a wrong password once only: the server slows down repeated failures from one address
                for caller in (anonymous, wrong) if path == "/bst/transition" else (anonymous,):
                    reply = await caller.post(path, json=cust)
                    assert reply.status_code == 401, (path, reply.text)
                    assert reply.headers["www-authenticate"].startswith("Basic")
            assert (await invoke(server, "zato.bst.get-current-state-info",
                                 {"object_type": "Customer", "object_id": 2})).json()["state"] is None

            # can-transition changes nothing
            reply = await client.post("/bst/can-transition", json=cust)
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"can_transition": True, "state_old": None, "state_new": "Consent given",
                                    "reason": ""}
            # the article's answer
            reply = await client.post("/bst/transition", json=cust)
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"can_transition": True, "state_old": None, "state_new": "Consent given",
                                    "reason": ""}
            # again: refused, with why, and nothing changes
            reply = await client.post("/bst/transition", json={**cust, "object_id": "2"})
            assert reply.status_code == 200
            body = reply.json()
            assert body["can_transition"] is False and body["state_old"] == "Consent given"
            assert body["reason"] == ("Customer cannot go from Consent given to Consent given; from Consent given it "
                                      "may go to: Consent confirmed, Consent withdrawn")
            reply = await client.post("/bst/can-transition", json={**cust, "state_new": "consent WITHDRAWN"})
            assert reply.json() == {"can_transition": True, "state_old": "Consent given",
                                    "state_new": "Consent withdrawn", "reason": ""}
            reply = await client.post("/bst/transition", json={**cust, "state_new": "Consent withdrawn",
                                                               "user_ctx": {"by": "web"}, "def_name": "customer consent",
                                                               "def_version": 1})
            assert reply.json()["can_transition"] is True, reply.text
            reply = await client.post("/bst/transition", json={**cust, "state_new": "Consent given again",
                                                               "def_version": 7})
            assert reply.json()["can_transition"] is False
            assert "definition 'Customer consent' is at version 1, not 7" in reply.json()["reason"]
            assert reply.json()["reason"].endswith("; allowed from 'Consent withdrawn': Consent given again")
            reply = await client.post("/bst/transition", json={**cust, "state_new": "Consent confirmed",
                                                               "force": True})
            assert reply.json()["can_transition"] is True

            # input errors: 400 with the field
            reply = await client.post("/bst/transition", json={"object_type": "Customer", "state_new": "x"})
            assert reply.status_code == 400
            assert reply.json()["errors"] == [{"name": "object_id", "error": "missing (it is required)"}]
            reply = await client.post("/bst/transition", json={**cust, "object_type": "Invoice"})
            assert reply.status_code == 400
            assert "no active BST definition applies to object type 'Invoice'" in reply.json()["details"]

            # history, oldest first, every field
            reply = await client.get("/bst/get-history", params={"object_type": "Customer", "object_id": 2})
            assert reply.status_code == 200, reply.text
            rows = reply.json()
            assert [(r["state_old"], r["state_new"], r["forced"]) for r in rows] == [
                (None, "Consent given", False), ("Consent given", "Consent withdrawn", False),
                ("Consent withdrawn", "Consent confirmed", True)]
            assert rows[1]["user_ctx"] == {"by": "web"} and rows[0]["user_ctx"] is None
            assert all(r["def_name"] == "Customer consent" and r["def_version"] == 1 and r["cid"] for r in rows)
            assert all(r["time"].endswith("+00:00") for r in rows)
            reply = await client.post("/bst/get-current-state-info", json={"object_type": "customer", "object_id": 2})
            info = reply.json()
            assert (info["state"], info["def_name"], info["def_version"], info["time"]) == (
                "Consent confirmed", "Customer consent", 1, rows[-1]["time"])

            # mass-transition: each on its own
            items = [{"object_type": "Order", "object_id": n, "state_new": "New"} for n in (1, 2)] + [
                {"object_type": "Order", "object_id": 3, "state_new": "Ready"},
                {"object_type": "Nothing", "object_id": 4, "state_new": "New"}]
            reply = await client.post("/bst/mass-transition", json=items)
            assert reply.status_code == 200, reply.text
            results = reply.json()
            assert [r["can_transition"] for r in results] == [True, True, False, False]
            assert results[0] == {"can_transition": True, "state_old": None, "state_new": "New", "reason": ""}
            assert "it may only go to a root state: New" in results[2]["reason"]
            assert "no active BST definition applies to object type 'Nothing'" in results[3]["reason"]
            reply = await client.post("/bst/mass-transition", json={"items": [
                {"object_type": "Order", "object_id": 1, "state_new": "Submitted"}]})
            assert reply.json()[0]["state_old"] == "New" and reply.json()[0]["can_transition"] is True

            # definitions
            reply = await client.get("/bst/get-definition-list")
            assert reply.json() == [{"name": "Customer consent", "version": 1, "objects": ["Customer"]},
                                    {"name": "Orders", "version": 1, "objects": ["Order", "Priority order"]}]
            reply = await client.get("/bst/get-definition", params={"name": "orders"})
            assert reply.status_code == 200, reply.text
            definition = reply.json()
            assert definition["name"] == "Orders" and definition["roots"] == ["New"]
            assert definition["force_stop"] == ["Canceled", "Timed out"]
            assert definition["transitions"]["Sent"] == ["Confirmed", "Rejected"]
            reply = await client.get("/bst/get-definition", params={"name": "Nope"})
            assert reply.status_code == 404 and "no BST definition named 'Nope'" in reply.json()["details"]

            # exports: JSON with where objects are, diagrams
            reply = await client.post("/bst/export", json={"name": "Orders"})
            assert reply.status_code == 200, reply.text
            exported = reply.json()
            assert exported["counts"]["New"] == 1 and exported["counts"]["Submitted"] == 1
            assert exported["total"] == 2
            assert sorted((i["object_id"], i["state"]) for i in exported["items"]) == [("1", "Submitted"),
                                                                                       ("2", "New")]
            reply = await client.post("/bst/export", json={"object_type": "Order", "format": "svg",
                                                           "colors": {"current": "#ff0000"}, "size": "8,5",
                                                           "tz": "Europe/Warsaw"})
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"].startswith("image/svg+xml")
            assert b"<svg" in reply.content and b"#ff0000" in reply.content and b"1 object" in reply.content
            reply = await client.get("/bst/export", params={"name": "Orders", "format": "png"})
            assert reply.status_code == 200 and reply.content.startswith(b"\x89PNG")
            reply = await client.post("/bst/export", json={"name": "Orders", "format": "svg", "tz": "Mars/Base"})
            assert reply.status_code == 400 and "unknown time zone 'Mars/Base'" in reply.json()["details"]
            reply = await client.post("/bst/export", json={"name": "Orders", "format": "gif"})
            assert reply.status_code == 400 and "not one of json, svg, png" in reply.json()["details"]


async def test_the_articles_curl(tmp_path):
    async with bst_server(tmp_path) as server:
        async with admin(server) as client:
            reply = await client.post("/zato/api/objects/channel_rest", json={
                "name": "bst.transition", "url_path": "/bst/transition", "service": "zato.bst.transition"})
            assert reply.status_code == 201, reply.text
        (tmp_path / "cust.json").write_text(json.dumps(
            {"object_type": "Customer", "object_id": 2, "state_new": "Consent given"}))
        done = await trio.run_process(["curl", "-s", f"{server.address}/bst/transition", "-d", "@cust.json"],
                                      cwd=str(tmp_path), capture_stdout=True, check=True)
        assert json.loads(done.stdout) == {"can_transition": True, "state_old": None, "state_new": "Consent given",
                                           "reason": ""}
        assert (await invoke(server, "zato.bst.get-current-state-info",
                             {"object_type": "Customer", "object_id": "2"})).json()["state"] == "Consent given"


async def test_a_lost_race_is_a_409(tmp_path):
    """ Two transitions of one object through the REST API while a service holds it mid-move. """
    async with bst_server(tmp_path) as server:
        async with admin(server) as client:
            reply = await client.post("/zato/api/objects/channel_rest", json={
                "name": "bst.transition", "url_path": "/bst/transition", "service": "zato.bst.transition"})
            assert reply.status_code == 201, reply.text
        assert (await invoke(server, "bst.test.move", {"object_type": "Order", "object_id": 77,
                                                       "state_new": "New"})).status_code == 200
        results = {}

        async def slow():
            # reads 'New', then waits in its block until the REST call below moved the order
            results["service"] = await invoke(server, "bst.test.move", {
                "object_type": "Order", "object_id": 77, "state_new": "Submitted", "barrier": 2,
                "barrier_name": "rest"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            while not server.plugin_state.get("test.bst.barriers"):
                await trio.sleep(0.01)
            async with httpx.AsyncClient(base_url=server.address, timeout=30) as client:
                results["rest"] = await client.post("/bst/transition", json={
                    "object_type": "Order", "object_id": 77, "state_new": "Canceled"})
            await trio.to_thread.run_sync(server.plugin_state["test.bst.barriers"]["rest"].wait, 20)
        assert results["rest"].status_code == 200 and results["rest"].json()["can_transition"] is True
        assert results["service"].status_code == 409, results["service"].text
        assert "is now in 'Canceled'" in results["service"].json()["details"]
