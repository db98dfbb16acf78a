""" Configuration objects in a running server: loaded from the database at start, reloaded in
every worker when any of them changes, and handed to the channel types that use them.

`server.config_objects[type][name]` holds each active object as runtimes use it: `$NAME`
fields read from the environment, encrypted secrets decrypted. An object whose environment
variable is missing is left out and logged with its type, name, field and variable (the
others keep working); `server.config_errors` keeps those messages.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import trio

from zato.objects import ObjectEnvError, SecretBox, runtime_view
from zato.plugins import await_maybe

logger = logging.getLogger("zato.config")

CHANGED = "config.objects.changed"  # the notification every worker handles


def secret_box(server: Any) -> SecretBox:
    box = server.plugin_state.get("core.secret_box")
    if box is None:
        box = server.plugin_state["core.secret_box"] = SecretBox(server.paths.config_dir / "secret.key")
    return box


def read_objects(server: Any, types: set[str] | None = None) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """ Blocking: every active object (of `types`, or all) as runtimes use it, and the errors. """
    schemas = server.registry.items("object_types")
    box = secret_box(server)
    objects: dict[str, dict[str, dict]] = {name: {} for name in (types or ())}
    errors: dict[str, str] = {}
    for object_type, obj in server.odb.list_all():
        if types is not None and object_type not in types:
            continue
        try:
            view = runtime_view(schemas.get(object_type), obj, box)
        except (ObjectEnvError, ValueError) as exc:
            errors[f"{object_type}:{obj['name']}"] = str(exc)
            logger.error("%s; this object is not used until that is fixed", exc)
            continue
        objects.setdefault(object_type, {})[obj["name"]] = view
    return objects, errors


async def load_all(server: Any) -> None:
    """ At start: every active object. """
    server.config_objects, server.config_errors = await trio.to_thread.run_sync(read_objects, server)


async def reload(server: Any, types: Iterable[str] | None = None) -> None:
    """ After a change: re-reads the objects of `types` (all if None) and re-applies the channel
    types that use them. Other objects and runtimes are left as they are. """
    wanted = set(types) if types else None
    objects, errors = await trio.to_thread.run_sync(read_objects, server, wanted)
    if wanted is None:
        server.config_objects, server.config_errors = objects, errors
        changed = set(objects) | {t.object_type for t in server.registry.values("channel_types")}
    else:
        current = dict(server.config_objects)
        for object_type in wanted:
            current[object_type] = objects.get(object_type, {})
        server.config_objects = current
        server.config_errors = {k: v for k, v in server.config_errors.items()
                                if k.split(":", 1)[0] not in wanted} | errors
        changed = wanted
    for channel_type in server.registry.values("channel_types"):
        if channel_type.object_type in changed:
            runtime = server.channels.get(channel_type.name)
            if runtime is not None:
                await await_maybe(runtime.apply(list(server.config_objects.get(channel_type.object_type, {}).values())))
    await server.outgoing_connections.apply_object_types(changed)
    for hook_result in server.pm.hook.config_objects_changed(server=server, object_types=sorted(changed)):
        await await_maybe(hook_result)
    logger.info("configuration reloaded: %s", ", ".join(sorted(changed)) or "nothing")


async def on_changed(server: Any, payload: dict[str, Any] | None) -> None:
    """ The `config.objects.changed` notification handler (every worker). """
    await reload(server, (payload or {}).get("types"))
