""" BST definitions: the plain-text format parsed (roots, force stop, transitions, names without
case), what may follow what and why not, every error of the format with its line, several
definitions in one text, the bst_definition object type's check, and the definitions a running
server uses and deploys from .bst files. """

from __future__ import annotations

import json

import httpx
import pytest
import trio

from zato.plugin_api import DeploymentError, admin_auth, create_test_server_dir, run_server
from zato_plugin_bst.definitions import (
    BST_DEFINITION, DEPLOYABLE, OBJECT_TYPE, Definition, DefinitionError, DefinitionNotFound, check_definition,
    definition_for, definitions_of, deploy_file, parse, undeploy_file,
)

from bst_fixtures import CUSTOMERS, ORDERS  # noqa: E402

INVOICES = """\
# invoices follow their own flow
Invoices
========
Objects: Invoice
Draft: Issued
Issued: Paid, Overdue
Overdue: Paid
"""


def orders() -> Definition:
    [definition] = parse(ORDERS)
    return definition


# ################################################################################################
# The format


def test_orders_parsed():
    definition = orders()
    assert definition.name == "Orders"
    assert definition.version == 1
    assert definition.objects == ("Order", "Priority order")
    assert definition.states == ("New", "Submitted", "Ready", "Sent", "Confirmed", "Rejected", "Updated",
                                 "Canceled", "Timed out")
    assert dict(definition.transitions) == {
        "new": ("submitted",), "submitted": ("ready",), "ready": ("sent",), "sent": ("confirmed", "rejected"),
        "rejected": ("updated",), "updated": ("ready",)}
    assert definition.roots == ("new",)
    assert definition.force_stop == ("canceled", "timed out")
    assert definition.text == ORDERS


def test_state_names_without_case():
    definition = orders()
    assert definition.state("ready") == "Ready"
    assert definition.state("TIMED OUT") == "Timed out"
    assert definition.state(" sent ") == "Sent"
    assert definition.state("Shipped") is None
    assert definition.covers("priority ORDER") and not definition.covers("Invoice")


def test_allowed_transitions():
    definition = orders()
    assert definition.can_transition(None, "new") == (True, "")
    assert definition.can_transition("new", "SUBMITTED") == (True, "")
    assert definition.can_transition("Sent", "rejected") == (True, "")
    assert definition.can_transition("updated", "ready") == (True, "")
    # a force-stop state from any state, a final state included
    assert definition.can_transition("Submitted", "canceled") == (True, "")
    assert definition.can_transition("Confirmed", "Timed out") == (True, "")
    # with force: anywhere, from any state, none or one the definition does not have
    assert definition.can_transition("Confirmed", "new", force=True) == (True, "")
    assert definition.can_transition(None, "Sent", force=True) == (True, "")
    assert definition.can_transition("Lost", "ready", force=True) == (True, "")


def test_refused_transitions_say_why():
    definition = orders()
    allowed, reason = definition.can_transition("submitted", "sent", object_type="Order")
    assert not allowed
    assert reason == ("Order cannot go from Submitted to Sent; from Submitted it may go to: Ready "
                      "(or a force-stop state: Canceled, Timed out)")
    allowed, reason = definition.can_transition(None, "Ready", object_type="Priority order")
    assert not allowed
    assert "Priority order has no state yet" in reason and "root state: New" in reason
    allowed, reason = definition.can_transition("confirmed", "Ready", object_type="Order")
    assert not allowed and "Confirmed is a final state" in reason and "Canceled, Timed out" in reason
    allowed, reason = definition.can_transition("New", "Shipped")
    assert not allowed and "'Shipped'" in reason and "New, Submitted, Ready" in reason
    allowed, reason = definition.can_transition("Lost", "Ready")
    assert not allowed and "'Lost'" in reason and "forced" in reason
    # without object_type, a definition of two object types names itself
    assert definition.can_transition("New", "Sent")[1].startswith("An object of Orders cannot go from New to Sent")
    with_force_stop = definition.can_transition("Sent", "Updated", force=True)
    assert with_force_stop == (True, "")


def test_allowed_from():
    definition = orders()
    assert definition.allowed_from(None) == ["New"]
    assert definition.allowed_from("sent") == ["Confirmed", "Rejected", "Canceled", "Timed out"]
    assert definition.allowed_from("CONFIRMED") == ["Canceled", "Timed out"]
    assert definition.allowed_from("Shipped") == []


def test_to_dict():
    data = orders().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "name": "Orders", "version": 1, "objects": ["Order", "Priority order"],
        "states": ["New", "Submitted", "Ready", "Sent", "Confirmed", "Rejected", "Updated", "Canceled", "Timed out"],
        "transitions": {"New": ["Submitted"], "Submitted": ["Ready"], "Ready": ["Sent"],
                        "Sent": ["Confirmed", "Rejected"], "Rejected": ["Updated"], "Updated": ["Ready"]},
        "roots": ["New"], "force_stop": ["Canceled", "Timed out"]}


def test_several_definitions_in_one_text():
    text = ORDERS + "\n\n" + INVOICES + "\n"
    orders_def, invoices = parse(text)
    assert orders_def.name == "Orders" and invoices.name == "Invoices"
    assert invoices.objects == ("Invoice",)
    assert invoices.roots == ("draft",) and invoices.force_stop == ()
    assert invoices.allowed_from("issued") == ["Paid", "Overdue"]
    # each keeps its own section of the text, which parses alone to the same definition
    assert orders_def.text == ORDERS
    assert invoices.text == INVOICES.split("\n", 1)[1]
    assert parse(invoices.text) == [invoices]


def test_several_roots_and_comments():
    text = "Tickets\n---\nObjects: Ticket\n# two ways in\nOpened: Assigned\nImported: Assigned\n\n# blank lines inside are fine\n" \
           "Assigned: Closed\n"
    [tickets] = parse(text)
    assert tickets.roots == ("opened", "imported")
    assert tickets.allowed_from(None) == ["Opened", "Imported"]


def test_same_spelling_kept_as_first_seen():
    [definition] = parse("Docs\n----\nObjects: Doc\nDraft: Review\nreview: published\n")
    assert definition.states == ("Draft", "Review", "published")
    assert definition.to_dict()["transitions"] == {"Draft": ["Review"], "Review": ["published"]}


# ################################################################################################
# Errors, each with its line


@pytest.mark.parametrize("text, line, words", [
    ("Orders\nObjects: Order\nNew: Sent\n", 1, "not followed by an underline"),
    ("------\nObjects: Order\n", 1, "no definition name above it"),
    ("Orders\n------\nNew: Sent\n", 1, "no 'Objects:' line"),
    ("Orders\n------\nObjects: Order\nNew: Sent\nObjects: Invoice\n", 5, "a second 'Objects:' line"),
    ("Orders\n------\nObjects: Order\nNew: Sent\nSent: Done\nNew: Done\n", 6, "defined twice"),
    ("Orders\n------\nObjects: Order\nNew: Sent, Ready, sent\n", 4, "twice"),
    ("Orders\n------\nObjects: Order, order\nNew: Sent\n", 3, "lists object type 'order' twice"),
    ("Orders\n------\nObjects: Order\nNew Sent\n", 4, "has no ':'"),
    ("Orders\n------\nObjects: Order\nNew: Sent\nSent: Done\nLimbo: Void\nVoid: Limbo\n", 6, "cannot be reached"),
    ("Orders\n------\nObjects: Order\nNew: Sent\nSent: Ready\nReady: Sent\nLoop: Other\nOther: Loop\n", 7,
     "cannot be reached"),
    ("Orders\n------\nObjects: Order\nA: B\nB: A\n", 1, "no root state"),
    ("Orders\n------\nObjects: Order\nNew: Sent, Canceled\nForce stop: Canceled\n", 5,
     "force-stop state and also a normal state (line 4)"),
    ("Orders\n------\nObjects: Order\nNew: Sent\nForce stop: Canceled\nForce stop: Timed out\n", 6,
     "a second 'Force stop:' line"),
    ("Orders\n------\nObjects: Order\nNew: Sent,, Ready\n", 4, "empty state name"),
    ("Orders\n------\nObjects: Order\n: Sent\n", 4, "no state name before the ':'"),
    ("Orders\n------\nObjects: Order\nNew:\n", 4, "lists no state"),
    ("Orders\n------\nObjects:\nNew: Sent\n", 3, "lists no object type"),
    ("Orders\n------\nObjects: Order\n", 1, "has no transitions"),
    ("Orders\n------\nObjects: Order\nForce stop: Canceled\n", 1, "has no transitions"),
    ("Orders\n------\nObjects: Order\nNew: Sent\n\nOrders\n------\nObjects: Invoice\nA: B\n", 6,
     "a second definition named 'Orders'"),
    ("Orders\n------\nObjects: Order\nNew: Sent\n\nMore orders\n-----------\nObjects: Invoice, ORDER\nA: B\n", 8,
     "object type 'ORDER' is listed by definition 'Orders' and again by 'More orders'"),
    ("Orders\n------\nObjects: Order\nNew: Sent\n\nInvoices\nObjects: Invoice\nA: B\n", 6,
     "not followed by an underline"),
    ("Orders\n------\nObjects: Order\nNew: Sent: Done\n", 4, "'Sent: Done' has a ':'"),
    ("Bad: name\n------\nObjects: Order\nNew: Sent\n", 1, "may not contain ':'"),
])
def test_errors_name_their_line(text, line, words):
    with pytest.raises(DefinitionError) as info:
        parse(text, file="orders.bst")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.line == line, error
    assert words in error.message, error.message
    assert str(error).startswith(f"line {line}: ")
    assert error.file == "orders.bst"


def test_errors_say_how_to_fix():
    for text, hint in [
        ("Orders\n------\nNew: Sent\n", "e.g. 'Objects: Order, Priority order'"),
        ("Orders\n------\nObjects: Order\nNew: Sent\nSent: Done\nNew: Done\n", "list all its next states on one"),
        ("Orders\n------\nObjects: Order\nNew: Sent, Canceled\nForce stop: Canceled\n",
         "remove it from the 'Force stop:' line or from line 4"),
    ]:
        with pytest.raises(DefinitionError) as info:
            parse(text)
        assert hint in info.value.message


def test_empty_text():
    for text in ("", "\n\n# only a comment\n"):
        with pytest.raises(DefinitionError) as info:
            parse(text)
        assert "no definition" in info.value.message


# ################################################################################################
# The configuration object type


def test_object_type():
    assert BST_DEFINITION.name == OBJECT_TYPE == "bst_definition"
    assert BST_DEFINITION.field("name").required and BST_DEFINITION.field("text").required
    assert BST_DEFINITION.field("description").default == ""
    assert BST_DEFINITION.field("is_active").type == "bool" and BST_DEFINITION.field("is_active").default is True
    assert BST_DEFINITION.check is check_definition


def test_check_definition():
    check = BST_DEFINITION.check
    assert check({"name": "Orders", "text": ORDERS}, partial=False) == []
    assert check({"text": ORDERS}, partial=True) == []
    assert check({"name": "Orders"}, partial=True) == []  # a partial change leaving the text alone
    [error] = check({"name": "Orders", "text": ORDERS.replace("Ready: Sent", "Ready Sent")}, partial=False)
    assert error["field"] == "text" and error["error"].startswith("line 6: ") and "has no ':'" in error["error"]
    [error] = check({"name": "Purchases", "text": ORDERS}, partial=False)
    assert error["field"] == "text" and "'Orders'" in error["error"] and "'Purchases'" in error["error"]
    [error] = check({"name": "Orders", "text": ORDERS + "\n" + INVOICES}, partial=False)
    assert "holds 2 definitions" in error["error"] and "'Invoices'" in error["error"]
    [error] = check({"name": "Orders", "text": 12}, partial=False)
    assert "expected text" in error["error"]


# ################################################################################################
# In a running server


def server_dir(tmp_path):
    # only the plugin under test (enclog, on without an [enclog] section, would start and drop the
    # records of getLogger('enclog'); nothing here writes them)
    return create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 2}, plugins={"enclog": False})


async def _reload(server) -> None:
    await server.notify("config.objects.changed", {"types": [OBJECT_TYPE]})


async def test_definitions_of_a_server(tmp_path):
    base_dir = server_dir(tmp_path)
    async with run_server(base_dir) as server:
        assert definitions_of(server) == {}
        with pytest.raises(DefinitionNotFound) as info:
            definition_for(server, "Order")
        assert "'Order'" in str(info.value) and "(none)" in str(info.value)

        [invoices] = parse(INVOICES)
        await trio.to_thread.run_sync(server.odb.put_object, OBJECT_TYPE, "Orders",
                                      {"name": "Orders", "text": ORDERS, "description": ""})
        await trio.to_thread.run_sync(server.odb.put_object, OBJECT_TYPE, "Invoices",
                                      {"name": "Invoices", "text": invoices.text, "description": ""})
        await trio.to_thread.run_sync(server.odb.put_object, OBJECT_TYPE, "Broken",
                                      {"name": "Broken", "text": "Broken\n---\nNew: Sent\n", "description": ""})
        await _reload(server)

        found = definitions_of(server)
        assert sorted(found) == ["Invoices", "Orders"]  # the broken one is left out
        assert found["Orders"].version == 1
        assert definitions_of(server)["Orders"] is found["Orders"]  # parsed once per version
        assert definition_for(server, "priority order").name == "Orders"
        assert definition_for(server, "INVOICE").name == "Invoices"
        assert definition_for(server, "Order", "orders").name == "Orders"
        assert definition_for(server, None, "Invoices").name == "Invoices"
        with pytest.raises(DefinitionNotFound) as info:
            definition_for(server, "Shipment")
        assert "'Shipment'" in str(info.value) and "Invoice (Invoices)" in str(info.value)
        with pytest.raises(DefinitionNotFound) as info:
            definition_for(server, "Order", "Refunds")
        assert "'Refunds'" in str(info.value) and "Invoices, Orders" in str(info.value)
        with pytest.raises(DefinitionNotFound) as info:
            definition_for(server, "Order", "Invoices")
        assert "applies to: Invoice" in str(info.value)

        # an edit: a new version, parsed again
        changed = ORDERS.replace("Rejected: Updated", "Rejected: Updated, Canceled by customer")
        await trio.to_thread.run_sync(server.odb.put_object, OBJECT_TYPE, "Orders",
                                      {"name": "Orders", "text": changed, "description": ""})
        await _reload(server)
        orders_def = definition_for(server, "Order")
        assert orders_def.version == 2
        assert orders_def.allowed_from("rejected")[:2] == ["Updated", "Canceled by customer"]

        # inactive: not used
        await trio.to_thread.run_sync(lambda: server.odb.put_object(
            OBJECT_TYPE, "Orders", {"name": "Orders", "text": changed, "is_active": False}, is_active=False))
        await _reload(server)
        assert sorted(definitions_of(server)) == ["Invoices"]


async def test_deploy_and_undeploy_bst_files(tmp_path):
    assert DEPLOYABLE.suffix == ".bst" and DEPLOYABLE.deploy is deploy_file and DEPLOYABLE.undeploy is undeploy_file
    base_dir = server_dir(tmp_path)
    async with run_server(base_dir) as server:
        source = (ORDERS + "\n" + INVOICES).encode()
        assert await deploy_file(server, "shop.bst", source) == ["Orders", "Invoices"]
        stored = await trio.to_thread.run_sync(server.odb.get_object, OBJECT_TYPE, "Invoices")
        assert stored["description"] == "deployed from shop.bst"
        assert stored["text"] == INVOICES.split("\n", 1)[1]
        assert check_definition(stored) == []
        assert sorted(definitions_of(server)) == ["Invoices", "Orders"]  # this worker re-read them
        assert definition_for(server, "Order").version == 1

        # the same file again: nothing is written
        assert await deploy_file(server, "shop.bst", source) == ["Orders", "Invoices"]
        assert (await trio.to_thread.run_sync(server.odb.get_object, OBJECT_TYPE, "Orders"))["_meta"]["version"] == 1

        # a changed file: the changed definition updated, the one it no longer holds deleted
        edited = ORDERS.replace("Updated: Ready", "Updated: Ready, Sent")
        assert await deploy_file(server, "shop.bst", edited.encode()) == ["Orders"]
        orders_def = definition_for(server, "Order")
        assert orders_def.version == 2 and orders_def.allowed_from("updated")[:2] == ["Ready", "Sent"]
        assert sorted(definitions_of(server)) == ["Orders"]

        # a bad file is refused with its name and line; what was deployed stays
        with pytest.raises(DeploymentError) as info:
            await deploy_file(server, "bad.bst", b"Refunds\n-------\nObjects: Refund\nNew Done\n")
        assert info.value.file == "bad.bst" and info.value.line == 4
        assert str(info.value).startswith("bad.bst:4: ") and "has no ':'" in str(info.value)
        with pytest.raises(DeploymentError) as info:
            await deploy_file(server, "latin.bst", "Zamówienia\n---\n".encode("latin-1"))
        assert "UTF-8" in str(info.value) and info.value.file == "latin.bst"
        assert sorted(definitions_of(server)) == ["Orders"]

        # another file's definitions are its own
        assert await deploy_file(server, "billing.bst", INVOICES.encode()) == ["Invoices"]
        assert await undeploy_file(server, "shop.bst") == ["Orders"]
        assert sorted(definitions_of(server)) == ["Invoices"]
        assert await undeploy_file(server, "shop.bst") == []
        assert await undeploy_file(server, "billing.bst") == ["Invoices"]
        assert definitions_of(server) == {}


async def test_admin_api_checks_definitions(tmp_path):
    base_dir = server_dir(tmp_path)
    async with run_server(base_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            bad = ORDERS.replace("Sent: Confirmed, Rejected", "Sent: Confirmed, Rejected, confirmed")
            response = await client.post(f"/zato/api/objects/{OBJECT_TYPE}", json={"name": "Orders", "text": bad})
            assert response.status_code == 400, response.text
            assert "line 7: " in response.text and "twice" in response.text
            response = await client.post(f"/zato/api/objects/{OBJECT_TYPE}", json={"name": "Orders", "text": ORDERS})
            assert response.status_code in (200, 201), response.text
        with trio.fail_after(10):
            while "Orders" not in definitions_of(server):
                await trio.sleep(0.05)
        assert definition_for(server, "Priority order").name == "Orders"


async def test_bst_files_in_pickup_deployed_at_start(tmp_path):
    base_dir = server_dir(tmp_path)
    (base_dir / "pickup" / "shop.bst").write_text(ORDERS + "\n" + INVOICES, "utf-8")
    async with run_server(base_dir) as server:
        with trio.fail_after(20):
            while sorted(definitions_of(server)) != ["Invoices", "Orders"]:
                await trio.sleep(0.05)
        stored = await trio.to_thread.run_sync(server.odb.get_object, OBJECT_TYPE, "Orders")
        assert stored["description"] == "deployed from shop.bst" and stored["text"] == ORDERS


def final_states_lines(caplog):
    return [record.getMessage() for record in caplog.records
            if record.name == "zato.bst" and record.levelname == "INFO" and "final states" in record.getMessage()]


def test_final_states_are_the_states_only_on_the_right():
    assert orders().final_states == ("Confirmed",)
    [typo] = parse(ORDERS.replace("Sent: Confirmed, Rejected", "Sent: Confirmd, Rejected"))
    assert typo.final_states == ("Confirmd",)  # no error: a new final state
    [left] = parse(ORDERS.replace("Submitted: Ready", "Submittd: Ready"))
    assert left.roots == ("new", "submittd") and left.final_states == ("Submitted", "Confirmed")


async def test_deploy_and_the_admin_check_log_each_definitions_final_states_in_one_info_line(tmp_path, caplog):
    # a typo on the right of `State: next` makes a new final state, not an error: the line shows it
    caplog.set_level("INFO", logger="zato.bst")
    typo = ORDERS.replace("Sent: Confirmed, Rejected", "Sent: Confirmd, Rejected")
    async with run_server(server_dir(tmp_path)) as server:
        caplog.clear()
        assert await deploy_file(server, "shop.bst", (typo + "\n" + INVOICES).encode()) == ["Orders", "Invoices"]
        assert final_states_lines(caplog) == [
            "shop.bst: BST definition 'Orders': final states (a typo of a state's name makes a new one): Confirmd; "
            "force stop: Canceled, Timed out",
            "shop.bst: BST definition 'Invoices': final states (a typo of a state's name makes a new one): Paid"]

        caplog.clear()
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            response = await client.post(f"/zato/api/objects/{OBJECT_TYPE}",
                                         json={"name": "Customer consent", "text": CUSTOMERS})
            assert response.status_code == 201, response.text
        [line] = final_states_lines(caplog)
        assert line == (f"{OBJECT_TYPE}: BST definition 'Customer consent': final states (a typo of a state's name "
                        f"makes a new one): Consent confirmed, Consent given again")
