""" `transition_to`: moving a business object from one state to another from a service.

    from zato_bst import transition_to

    class MyService(Service):
        def handle(self):
            with transition_to(self, 'Order', 123, 'ready'):
                ...  # runs only if the order may move to 'ready'; the move is made if it raises nothing

    class MyAsyncService(Service):
        async def handle(self):
            async with transition_to(self, 'Order', 123, 'ready'):
                ...

On entry the object's current state is read and the definition of its object type is asked
whether it may move (`Definition.can_transition`, state names case-insensitive); if not,
`TransitionRefused` is raised before the block runs. When the block ends without an exception the
move is written as a compare-and-set against the state read on entry, with its history row; if
another move of the same object came in between, `TransitionConflict` (the block's own effects
are the service's business). A block that raises leaves the state as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zato.common.exception import BadRequest, Conflict
from zato.plugin_api import PluginState

PLUGIN_NAME = "bst"

__all__ = ["BSTError", "BSTNotEnabled", "TransitionConflict", "TransitionRefused", "transition_to"]


class BSTError(BadRequest):
    """ A transition that cannot even be considered: no definition for the object type, a missing
    object id... (a REST caller gets 400 with the message). """

    def __init__(self, msg: str, cid: str | None = None) -> None:
        super().__init__(cid, msg)


class TransitionRefused(BSTError):
    """ The definition does not allow the move (400 for a REST caller); raised before the block runs. """

    def __init__(self, msg: str, cid: str | None = None, *, plan: "Plan | None" = None) -> None:
        super().__init__(msg, cid)
        self.plan = plan


class TransitionConflict(Conflict):
    """ Another transition of the same object was committed between the read and the write (409). """

    def __init__(self, msg: str, cid: str | None = None) -> None:
        super().__init__(cid, msg)


class BSTNotEnabled(RuntimeError):
    """ The bst plugin is switched off in this server. """


def _make_store(server: Any) -> Any:
    from zato_plugin_bst.store import Store
    if server.odb is None:
        raise BSTNotEnabled("business state transitions need the configuration database, which this server has "
                            "not opened yet")
    return Store(server.odb.engine, server_name=str(server.name), pid=int(server.pid))


STORE = PluginState[Any](PLUGIN_NAME)


def require_enabled(server: Any) -> None:
    plugins = getattr(server, "plugins", None)
    names = plugins.enabled_names() if plugins is not None else []
    if PLUGIN_NAME not in names:
        raise BSTNotEnabled(f"business state transitions are switched off in server {server.name!r}: the bst plugin "
                            f"(zato-plugin-bst) is not enabled; set `zato_plugin_bst = True` under [deploy_internal] "
                            f"in config/server.conf and restart the server")


def store_of(server: Any) -> Any:
    """ The plugin's store in this server process (made on first use). """
    require_enabled(server)
    return STORE.get_or_create(server, lambda: _make_store(server))


def definition_of(server: Any, object_type: str, def_name: str | None = None) -> Any:
    from zato_plugin_bst.definitions import definition_for
    try:
        return definition_for(server, object_type, def_name)
    except LookupError as exc:
        detail = str(exc.args[0]) if exc.args else ""
        which = f"definition {def_name!r}" if def_name else "definition"
        raise BSTError(detail or f"no BST {which} for object type {object_type!r}; deploy one (pickup/*.bst, "
                                 f"or the admin API's bst_definition objects)") from None


def _state_name(definition: Any, name: str | None) -> str | None:
    """ The state's name as the definition spells it (names are case-insensitive), else as given. """
    if name is None:
        return None
    try:
        state = definition.state(name)
    except (LookupError, ValueError):
        return name
    if state is None:
        return name
    return state if isinstance(state, str) else getattr(state, "name", name)


def _allowed_from(definition: Any, state: str | None) -> list[str]:
    allowed = getattr(definition, "allowed_from", None)
    try:
        found = allowed(state) if callable(allowed) else (allowed or {}).get(state)
    except (LookupError, ValueError, TypeError):
        return []
    return [getattr(item, "name", item) for item in (found or ())]


@dataclass
class Plan:
    """ One transition as checked: what `with transition_to(...) as plan` gives the block. """
    object_type: str
    object_id: str
    def_name: str
    def_version: Any
    state_old: str | None
    state_new: str
    can_transition: bool
    reason: str
    force: bool = False
    seen: int | None = None  # the stored version read; None: the object had no state
    definition: Any = field(default=None, repr=False)
    history: dict[str, Any] | None = None  # the history row, once committed

    def result(self) -> dict[str, Any]:
        """ What the REST API answers (Zato's fields). """
        return {"can_transition": self.can_transition, "state_old": self.state_old, "state_new": self.state_new,
                "reason": self.reason}


def _own_reason(p: Plan) -> Plan:
    """ A refusal of this module's (not the definition's): say what the definition allows. """
    where = "no state" if p.state_old is None else repr(p.state_old)
    allowed = ", ".join(_allowed_from(p.definition, p.state_old)) or "none"
    p.reason += f"; allowed from {where}: {allowed}"
    return p


def plan(server: Any, object_type: str, object_id: Any, state_new: str, *, def_name: str | None = None,
         def_version: Any = None, force: bool = False) -> Plan:
    """ Reads the object's state and checks the move (blocking). Never raises for a refusal: the
    plan says `can_transition` False and why. """
    from zato_plugin_bst.store import object_key
    if not state_new or not str(state_new).strip():
        raise BSTError("state_new is required: the state to move the object to")
    try:
        key_type, key_id = object_key(object_type, object_id)
    except ValueError as exc:
        raise BSTError(str(exc)) from None
    store = store_of(server)
    definition = definition_of(server, object_type, def_name)
    current = store.current(key_type, key_id)
    state_old = current.state if current is not None else None
    new = _state_name(definition, str(state_new))
    result = Plan(key_type, key_id, definition.name, definition.version, state_old, new, False, "",
                  bool(force), current.version if current is not None else None, definition)
    if def_version not in (None, "") and str(def_version) != str(definition.version):
        result.reason = (f"definition {definition.name!r} is at version {definition.version!r}, "
                         f"not {def_version!r}")
        return _own_reason(result)
    if current is not None and current.def_name.lower() != str(definition.name).lower():
        result.reason = (f"{object_type} {key_id!r} is in state {state_old!r} of definition {current.def_name!r}, "
                         f"not of {definition.name!r}")
        return _own_reason(result)
    can, reason = definition.can_transition(state_old, new, force=bool(force), object_type=str(object_type))
    result.can_transition, result.reason = bool(can), "" if can else (reason or "not allowed")
    return result


def refusal_message(p: Plan, object_type: str) -> str:
    """ What `TransitionRefused` says: the object, from which state to which, why and what is allowed. """
    where = "no state (a new object)" if p.state_old is None else repr(p.state_old)
    message = (f"{object_type} {p.object_id!r} may not move from {where} to {p.state_new!r} "
               f"(definition {p.def_name!r}, version {p.def_version}): {p.reason}")
    return message


def commit(server: Any, p: Plan, *, user_ctx: Any = None, cid: str | None = None) -> dict[str, Any]:
    """ Writes the move the plan checked (blocking): `TransitionConflict` if another came first. """
    from zato_plugin_bst.store import StateChanged
    try:
        p.history = store_of(server).move(p.object_type, p.object_id, seen=p.seen, def_name=p.def_name,
                                          def_version=p.def_version, state_old=p.state_old,
                                          state_new=p.state_new, forced=p.force, user_ctx=user_ctx, cid=cid)
    except StateChanged as exc:
        raise TransitionConflict(str(exc), cid) from None
    return p.history


def transition(server: Any, item: dict[str, Any], *, cid: str | None = None, apply: bool = True) -> dict[str, Any]:
    """ One transition as the REST API takes it (Zato's input fields), checked and, if `apply`
    and allowed, made; blocking. Returns Zato's output fields. """
    p = plan(server, item.get("object_type"), item.get("object_id"), item.get("state_new"),
             def_name=item.get("def_name") or None, def_version=item.get("def_version"),
             force=bool(item.get("force")))
    if apply and p.can_transition:
        commit(server, p, user_ctx=item.get("user_ctx"), cid=cid)
    return p.result()


class transition_to:
    """ `with transition_to(self, 'Order', 123, 'ready'):` in a plain `def handle`, `async with`
    in an `async def handle` (see the module's docstring). The block gets the `Plan`. """

    def __init__(self, service: Any, object_type: str, object_id: Any, state_new: str, *,
                 def_name: str | None = None, force: bool = False, user_ctx: Any = None) -> None:
        self.service = service
        self.server = service.server
        self.object_type, self.object_id, self.state_new = object_type, object_id, state_new
        self.def_name, self.force, self.user_ctx = def_name, force, user_ctx
        self.plan: Plan | None = None

    @property
    def cid(self) -> str | None:
        return getattr(self.service, "cid", None) or None

    def _plan(self) -> Plan:
        require_enabled(self.server)
        p = plan(self.server, self.object_type, self.object_id, self.state_new, def_name=self.def_name,
                 force=self.force)
        if not p.can_transition:
            raise TransitionRefused(refusal_message(p, self.object_type), self.cid, plan=p)
        self.plan = p
        return p

    def _commit(self) -> dict[str, Any]:
        assert self.plan is not None
        return commit(self.server, self.plan, user_ctx=self.user_ctx, cid=self.cid)

    def __enter__(self) -> Plan:
        from zato.plugin_api import in_trio_thread
        if in_trio_thread():
            raise TypeError("transition_to in an async def handle is `async with transition_to(...)`; a plain "
                            "`with` would block the trio loop")
        return self._plan()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self._commit()
        return False

    async def __aenter__(self) -> Plan:
        import trio
        require_enabled(self.server)
        return await trio.to_thread.run_sync(self._plan)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        import trio
        if exc_type is None:
            await trio.to_thread.run_sync(self._commit)
        return False
