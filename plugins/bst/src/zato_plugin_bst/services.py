""" The REST API of business state transitions: internal services with Zato's names and fields.

External applications reach them through REST channels, behind security definitions like any
other channel (rest_channels.yaml in this package is an enmasse file creating all of them).

| service | input | output |
|---|---|---|
| zato.bst.transition | object_type, object_id, state_new; def_name, def_version, force, user_ctx | can_transition, state_old, state_new, reason |
| zato.bst.can-transition | the same | the same; nothing changes |
| zato.bst.mass-transition | a list of such items (or {"items": [...]}) | a list of such results |
| zato.bst.get-history | object_type, object_id | the transitions, oldest first |
| zato.bst.get-definition-list | - | name, version, objects of each definition |
| zato.bst.get-definition | name | the definition (`Definition.to_dict()`) |
| zato.bst.get-current-state-info | object_type, object_id | state, def_name, def_version, time |
| zato.bst.export | name (or object_type); format json, svg or png; colors, size, tz | JSON, or the diagram |

A refused transition answers `can_transition: false` with the reason (200, as Zato); a
transition that lost a race against another of the same object is a 409; a missing field or an
object type no definition covers a 400.
"""

from __future__ import annotations

from typing import Any

import trio

from zato.common.exception import BadRequest, NotFound
from zato.server.service import AsIs, Bool, Service, Text

from zato_plugin_bst import api


def _blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class _TransitionIO:
    input_required = Text("object_type"), AsIs("object_id"), Text("state_new")
    input_optional = Text("def_name"), AsIs("def_version"), Bool("force"), AsIs("user_ctx")


def _item(service: Service) -> dict[str, Any]:
    return dict(service.request.input)


class Transition(Service):
    """ Moves one object to `state_new` if its definition allows it. """
    name = "zato.bst.transition"
    SimpleIO = _TransitionIO

    async def handle(self):
        self.response.payload = await _blocking(api.transition, self.server, _item(self), cid=self.cid)


class CanTransition(Service):
    """ Whether the object could move to `state_new` now; nothing changes. """
    name = "zato.bst.can-transition"
    SimpleIO = _TransitionIO

    async def handle(self):
        self.response.payload = await _blocking(api.transition, self.server, _item(self), cid=self.cid, apply=False)


def _mass(server: Any, items: list[Any], cid: str) -> list[dict[str, Any]]:
    results = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(cid, f"item {index}: expected an object with object_type, object_id and state_new, "
                                  f"got {type(item).__name__}")
        try:
            results.append(api.transition(server, item, cid=cid))
        except (api.BSTError, api.TransitionConflict) as exc:
            results.append({"can_transition": False, "state_old": None, "state_new": item.get("state_new"),
                            "reason": str(exc)})
    return results


class MassTransition(Service):
    """ Many transitions, each on its own (one refused or lost does not stop the others). """
    name = "zato.bst.mass-transition"

    async def handle(self):
        payload = self.request.payload
        items = payload.get("items") if isinstance(payload, dict) else payload
        if not isinstance(items, list):
            raise BadRequest(self.cid, "expected a list of transitions (object_type, object_id, state_new, ...), "
                                       "or {\"items\": [...]}")
        self.response.payload = await _blocking(_mass, self.server, items, self.cid)


class _ObjectIO:
    input_required = Text("object_type"), AsIs("object_id")


def _history(server: Any, object_type: str, object_id: Any) -> list[dict[str, Any]]:
    try:
        rows = api.store_of(server).history(object_type, object_id)
    except ValueError as exc:
        raise api.BSTError(str(exc)) from None
    for row in rows:
        row.pop("id", None)
    return rows


class GetHistory(Service):
    """ The object's transitions, oldest first. """
    name = "zato.bst.get-history"
    SimpleIO = _ObjectIO

    async def handle(self):
        self.response.payload = await _blocking(_history, self.server, self.request.input.object_type,
                                                self.request.input.object_id)


def _state_info(server: Any, object_type: str, object_id: Any) -> dict[str, Any]:
    from zato_plugin_bst.store import iso
    try:
        current = api.store_of(server).current(object_type, object_id)
    except ValueError as exc:
        raise api.BSTError(str(exc)) from None
    info = {"object_type": object_type, "object_id": object_id, "state": None, "def_name": None,
            "def_version": None, "time": None}
    if current is not None:
        info.update(state=current.state, def_name=current.def_name, def_version=current.def_version,
                    time=iso(current.updated))
    return info


class GetCurrentStateInfo(Service):
    """ The object's state, its definition and when it last moved (all None if it never did). """
    name = "zato.bst.get-current-state-info"
    SimpleIO = _ObjectIO

    async def handle(self):
        self.response.payload = await _blocking(_state_info, self.server, self.request.input.object_type,
                                                self.request.input.object_id)


def _definitions(server: Any) -> list[Any]:
    from zato_plugin_bst.definitions import definitions_of
    api.require_enabled(server)
    found = definitions_of(server)
    return list(found.values()) if isinstance(found, dict) else list(found)


def _definition_named(server: Any, name: str, cid: str) -> Any:
    for definition in _definitions(server):
        if str(definition.name).lower() == str(name).lower():
            return definition
    known = ", ".join(sorted(str(d.name) for d in _definitions(server))) or "none"
    raise NotFound(cid, f"no BST definition named {name!r} (deployed: {known})")


class GetDefinitionList(Service):
    """ Every deployed definition: name, version, objects. """
    name = "zato.bst.get-definition-list"

    def handle(self):
        self.response.payload = [{"name": d.name, "version": d.version, "objects": list(d.objects)}
                                 for d in sorted(_definitions(self.server), key=lambda d: str(d.name).lower())]


class GetDefinition(Service):
    """ One definition, by name: its states, transitions, roots and force-stop states. """
    name = "zato.bst.get-definition"

    class SimpleIO:
        input_required = Text("name"),

    def handle(self):
        self.response.payload = _definition_named(self.server, self.request.input.name, self.cid).to_dict()


CONTENT_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


class Export(Service):
    """ A definition with its run-time state (where each of its objects is now): JSON, or a
    diagram (svg or png) with `colors`, `size` and `tz` as `export.diagram` takes them. """
    name = "zato.bst.export"

    class SimpleIO:
        input_optional = (Text("name"), Text("def_name"), Text("object_type"), Text("format"), AsIs("colors"),
                          AsIs("size"), Text("tz"))

    async def handle(self):
        given = self.request.input
        self.response.payload, content_type = await _blocking(self._export, given)
        if content_type:
            self.response.content_type = content_type

    def _export(self, given: Any) -> tuple[Any, str | None]:
        from zato_plugin_bst import export
        name = given.name or given.def_name
        if name:
            definition = _definition_named(self.server, name, self.cid)
        elif given.object_type:
            definition = api.definition_of(self.server, given.object_type)
        else:
            raise BadRequest(self.cid, "name (a definition's name) or object_type is required")
        states = api.store_of(self.server).objects_in(str(definition.name))
        fmt = (given.format or "json").lower()
        if fmt == "json":
            return export.definition_json(definition, states=states), None
        if fmt not in CONTENT_TYPES:
            raise BadRequest(self.cid, f"format {given.format!r} is not one of json, svg, png")
        options: dict[str, Any] = {"format": fmt, "states": states}
        if given.colors is not None:
            options["colors"] = given.colors
        if given.size is not None:
            options["size"] = given.size
        if given.tz:
            options["tz"] = given.tz
        try:
            return export.diagram(definition, **options), CONTENT_TYPES[fmt]
        except (ValueError, LookupError) as exc:
            raise BadRequest(self.cid, str(exc)) from None
