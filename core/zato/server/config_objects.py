""" Configuration objects in a running server: loaded from the database at start, reloaded in
every worker when any of them changes, and handed to the channel types that use them.

`server.config_objects[type][name]` holds each active object as runtimes use it: checked
against its type's schema again (the database may hold what an older version, a hand edit or
another tool wrote), `$NAME` fields read from the environment, encrypted secrets decrypted. An
object that fails the schema, or whose environment variable is missing, is left out and logged
with its type, name, every bad field and what to do (the others keep working);
`server.config_errors` keeps those messages. Applying objects is isolated the same way: a channel
type, the outgoing connections or a `config_objects_changed` hook that fails is logged, and the
others are still applied.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import trio

from zato.objects import ObjectEnvError, ObjectValidationError, SecretBox, runtime_view, validate
from zato.plugins import await_maybe, hook_calls
from zato.registry import REFERENCES, Kind
from zato.server.plugin_state import PluginState

logger = logging.getLogger("zato.config")

CHANGED = "config.objects.changed"  # the notification every worker handles
ADMIN_OBJECTS = "/zato/api/objects"


SECRET_BOX = PluginState[SecretBox]("secret_box", missing="the secret box is made on first use")


def secret_box(server: Any) -> SecretBox:
    return SECRET_BOX.get_or_create(server, lambda: SecretBox(server.paths.config_dir / "secret.key"))


def read_objects(server: Any, types: set[str] | None = None) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """ Blocking: every active object (of `types`, or all) as runtimes use it, and the errors. """
    schemas = server.registry.items(Kind.OBJECT_TYPES)
    box = secret_box(server)
    objects: dict[str, dict[str, dict]] = {name: {} for name in (types or ())}
    errors: dict[str, str] = {}
    for object_type, obj in server.odb.list_all():
        if types is not None and object_type not in types:
            continue
        schema = schemas.get(object_type)
        try:
            checked = stored_view(schema, obj)
            view = runtime_view(schema, checked, box)
        except ObjectValidationError as exc:
            errors[f"{object_type}:{obj['name']}"] = message = (
                f"{object_type} {obj['name']!r} in the configuration database is not used: "
                f"{'; '.join(e['field'] + ': ' + e['error'] for e in exc.errors)}; correct it through the admin API "
                f"(PUT {ADMIN_OBJECTS}/{object_type}/NAME) or enmasse, or delete it")
            logger.error("%s", message)
            continue
        except (ObjectEnvError, ValueError) as exc:
            errors[f"{object_type}:{obj['name']}"] = str(exc)
            logger.error("%s; this object is not used until that is fixed", exc)
            continue
        except Exception as exc:  # whatever is stored, it never stops the server
            errors[f"{object_type}:{obj['name']}"] = message = (
                f"{object_type} {obj['name']!r} in the configuration database cannot be read "
                f"({type(exc).__name__}: {exc}); correct it through the admin API or enmasse, or delete it")
            logger.exception("%s", message)
            continue
        objects.setdefault(object_type, {})[obj["name"]] = view
    return objects, errors


def stored_view(object_type: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """ A stored object checked against its type's schema (stored secrets allowed), typed and with
    defaults filled in; keys the schema does not know (storage keys, fields of another version)
    are kept as they are. Raises `ObjectValidationError`. The type's own rules beyond the schema
    (`ObjectType.check`), and text outside a field's `choices` (harmless to compare, never a crash),
    are the plugin's to apply when it uses the object: the rate_limit plugin, for one, refuses
    every request a bad stored definition covers (fail closed) and says why; an SMTP connection
    with an unknown tls_mode is not built, and its ping says why. """
    if object_type is None:  # no enabled plugin provides the type: nothing uses it
        return dict(obj)
    known = {f.name for f in object_type.fields} | {"name", "is_active"}
    data = {key: value for key, value in obj.items() if key in known}
    return {**obj, **validate(object_type, data, allow_secrets=True, run_check=False, check_choices=False)}


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
        changed = set(objects) | {t.object_type for t in server.registry.values(Kind.CHANNEL_TYPES)}
    else:
        current = dict(server.config_objects)
        for object_type in wanted:
            current[object_type] = objects.get(object_type, {})
        server.config_objects = current
        server.config_errors = {k: v for k, v in server.config_errors.items()
                                if k.split(":", 1)[0] not in wanted} | errors
        changed = wanted
    affected = changed | referencing(server, changed)  # objects naming a changed one see it changed too
    for channel_type in server.registry.values(Kind.CHANNEL_TYPES):
        if channel_type.object_type in affected:
            runtime = server.channels.get(channel_type.name)
            if runtime is not None:
                await apply_channel_type(server, channel_type, runtime)
    try:
        await server.outgoing_connections.apply_object_types(affected)
    except Exception:
        logger.exception("outgoing connections of %s could not be rebuilt; the previous ones stay, the rest of the "
                         "configuration is applied", ", ".join(sorted(changed)))
    await _call_changed_hooks(server, sorted(changed))
    logger.info("configuration reloaded: %s", ", ".join(sorted(changed)) or "nothing")


def with_references(server: Any, object_type_name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """ `obj` as channel and outgoing connection runtimes get it: with `_references`, for each of
    its fields naming another configuration object (`Field.references`, a service aside), that
    object as this server holds it (active, `$NAME`s read, secrets decrypted), or None. A change
    of a referenced object re-applies the runtimes of the objects referencing it (`reload`), so a
    connection definition edited reaches every channel and connection using it. """
    fields = _reference_fields(server, object_type_name)
    if not fields:
        return obj
    return {**obj, REFERENCES: {field.name: server.config_objects.get(field.references, {}).get(obj.get(field.name))
                                for field in fields}}


def _reference_fields(server: Any, object_type_name: str) -> list[Any]:
    object_type = server.registry.items(Kind.OBJECT_TYPES).get(object_type_name)
    return [field for field in (object_type.fields if object_type else ())
            if field.references and field.references != "service"]


def referencing(server: Any, object_types: set[str]) -> set[str]:
    """ The object types with a field naming an object of one of `object_types`. """
    return {name for name in server.registry.items(Kind.OBJECT_TYPES)
            if any(field.references in object_types for field in _reference_fields(server, name))}


async def apply_channel_type(server: Any, channel_type: Any, runtime: Any) -> bool:
    """ Gives a channel type's runtime its active objects (`with_references`); a runtime that
    fails is logged (its previous state stays, the other channel types are applied). Returns
    whether it worked. """
    objects = [with_references(server, channel_type.object_type, obj)
               for obj in server.config_objects.get(channel_type.object_type, {}).values()]
    try:
        await await_maybe(runtime.apply(objects))
    except Exception:
        logger.exception("channel type %r (plugin %s) could not apply its %d %s object(s); they are not in use "
                         "until the plugin or the objects are fixed", channel_type.name,
                         _plugin_of(server, Kind.CHANNEL_TYPES, channel_type.name), len(objects), channel_type.object_type)
        return False
    return True


async def _call_changed_hooks(server: Any, object_types: list[str]) -> None:
    """ Every `config_objects_changed` implementation, one failing not stopping the others. """
    for call in hook_calls(server.pm, "config_objects_changed"):  # pluggy's order
        try:
            await await_maybe(call(server=server, object_types=object_types))
        except Exception:
            logger.exception("the config_objects_changed hook of plugin %s failed after a change of %s; the "
                             "other plugins were told", call.plugin_name, ", ".join(object_types))


def _plugin_of(server: Any, kind: Kind, name: str) -> str:
    try:
        return server.registry.plugin_of(kind, name)
    except KeyError:
        return "?"


async def on_changed(server: Any, payload: dict[str, Any] | None) -> None:
    """ The `config.objects.changed` notification handler (every worker). """
    await reload(server, (payload or {}).get("types"))
