""" The `apispec` plugin: OpenAPI and AsyncAPI documents of the server's REST channels, pub/sub
topics and WebSocket channels, built from what it holds now.

`GET /zato/apispec/openapi.json` is the OpenAPI 3.1 document of the user's REST channels
(`openapi.py`), `GET /zato/apispec/asyncapi.json` the AsyncAPI 3 document of its pub/sub topics
and WebSocket channels (`asyncapi.py`); both take the same filters, `include`/`exclude` (service
name patterns, repeated or comma-separated) and `tags`, and are built per request, so a channel or
a service changed through the admin API, enmasse or a hot deploy is described at once.
`model.py` is what both share (SimpleIO as JSON Schema, docstrings, tags, examples, filters).

Who may read them is `[apispec] access` of server.conf: `admin` (the admin credentials, the
default), `public` (anyone), or the name of a security definition checked instead. The local
CLI's token is always accepted, so `zato apispec DIR` works whatever the setting.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import click

from zato import hookimpl
from zato.server.admin_auth import check_admin
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

from .model import split_patterns

logger = logging.getLogger("zato.apispec")

PLUGIN = "apispec"
PREFIX = "/zato/apispec"
OPENAPI_PATH = f"{PREFIX}/openapi.json"
ASYNCAPI_PATH = f"{PREFIX}/asyncapi.json"
ADMIN, PUBLIC = "admin", "public"
CHANNEL = "zato.apispec"
FORMATS = ("openapi", "asyncapi")


# ################################################################################################
# server.conf


def _check_access(value: str) -> None:
    if not value.strip():
        raise ValueError("empty; say admin, public or the name of a security definition")


@hookimpl
def register_server_config(register):
    from zato.registry import Setting
    register(PLUGIN, {
        "access": Setting(ADMIN, check=_check_access, allowed="admin, public or the name of a security definition",
                          doc="Who may read /zato/apispec/openapi.json and asyncapi.json: admin (the admin "
                              "credentials), public (anyone) or a security definition's name"),
    }, doc="API descriptions (GET /zato/apispec/openapi.json and asyncapi.json): who may read them")


async def check_access(request: HTTPRequest) -> str | None:
    """ Lets the request read the descriptions, or raises 401/403 (400 for a credential header
    sent twice): the local CLI's token always passes; otherwise `[apispec] access` decides. """
    server = request.server
    if request.headers.get("x-zato-cli-token") is not None:
        return await check_admin(request)
    section = server.config.get(PLUGIN) or {}
    access = str(section.get("access") or ADMIN).strip()
    if access.lower() == PUBLIC:
        return None
    if access.lower() == ADMIN:
        return await check_admin(request)
    return await server.authenticate(request, access)


def _filters(request: HTTPRequest) -> dict[str, list[str] | None]:
    """ include, exclude and tags from the query string, each repeated and/or comma-separated. """
    values: dict[str, list[str]] = {"include": [], "exclude": [], "tags": []}
    try:
        text = request.query_string.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "Error 400 Bad Request: the query string is not UTF-8") from None
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in values:
            values[key].append(value)
    return {key: split_patterns(found) for key, found in values.items()}


# ################################################################################################
# The routes


async def serve_openapi(request: HTTPRequest) -> HTTPResponse:
    from .openapi import build_openapi, rest_channels
    request.trace.channel = CHANNEL
    await check_access(request)
    filters = _filters(request)
    server = request.server
    await _import_services(server, sorted({channel.get("service") or "" for channel in rest_channels(server)}))
    return HTTPResponse.json(build_openapi(server, **filters))


async def _import_services(server: Any, names: list[str]) -> None:
    """ Imports, in a worker thread, those of the services `names` deployed from the start-up cache
    and not imported yet: the documents read their classes, and an import blocks. """
    from .openapi import load_service_classes
    if any((entry := server.services.entries.get(name)) is not None and entry.cls is None for name in names):
        import trio
        await trio.to_thread.run_sync(load_service_classes, server, names)


async def serve_asyncapi(request: HTTPRequest) -> HTTPResponse:
    from .asyncapi import build_asyncapi, service_names  # imported on first use
    request.trace.channel = CHANNEL
    await check_access(request)
    filters = _filters(request)
    server = request.server
    await _import_services(server, service_names(server))
    return HTTPResponse.json(build_asyncapi(server, **filters))


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_FILTER_PARAMETERS = [
    {"name": "include", "in": "query", "required": False, "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string"}},
     "description": "Service name patterns (fnmatch: api.*) to describe, repeated or comma-separated; all if none"},
    {"name": "exclude", "in": "query", "required": False, "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string"}},
     "description": "Service name patterns to leave out, repeated or comma-separated"},
    {"name": "tags", "in": "query", "required": False, "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string"}},
     "description": "Only services with one of these tags (api_tags, or Zato's @tag docstring sections); "
                    "public: all"},
]
_ACCESS = ("Who may read it is [apispec] access of server.conf: admin (the admin credentials, the default), "
           "public (anyone, no credentials), or the name of a security definition checked instead; the local "
           "CLI's token always passes.")
_FORBIDDEN = {"description": "The credentials do not pass the security definition of [apispec] access",
              "content": _ERROR}

OPENAPI_OPENAPI = {"get": {
    "operationId": "apispec_openapi", "tags": ["apispec"],
    "summary": "The OpenAPI 3.1 document of this server's REST channels (the user's APIs)",
    "description": "Built per request from the active REST channels, their services' SimpleIO and docstrings, "
                   "security definitions and rate limits. " + _ACCESS,
    "parameters": _FILTER_PARAMETERS,
    "responses": {"200": {"description": "The document", "content": {"application/json": {"schema": {
        "type": "object", "required": ["openapi", "info", "paths"]}}}},
        "403": _FORBIDDEN}}}

ASYNCAPI_OPENAPI = {"get": {
    "operationId": "apispec_asyncapi", "tags": ["apispec"],
    "summary": "The AsyncAPI 3 document of this server's pub/sub topics and WebSocket channels",
    "description": "Built per request from the pub/sub topics and WebSocket channels and the services behind "
                   "them. " + _ACCESS,
    "parameters": _FILTER_PARAMETERS,
    "responses": {"200": {"description": "The document", "content": {"application/json": {"schema": {
        "type": "object", "required": ["asyncapi"]}}}},
        "403": _FORBIDDEN}}}


@hookimpl
def register_http_routes(register):
    register(OPENAPI_PATH, serve_openapi, openapi=OPENAPI_OPENAPI)
    register(ASYNCAPI_PATH, serve_asyncapi, openapi=ASYNCAPI_OPENAPI)


# ################################################################################################
# The command line: zato apispec DIR


def _write(document: Any, target: Any) -> None:
    from pathlib import Path
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, "utf-8")


@click.command("apispec")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "format_", type=click.Choice(FORMATS), default="openapi", show_default=True,
              help="openapi: the REST channels; asyncapi: pub/sub topics and WebSocket channels.")
@click.option("--include", multiple=True, help="Service name patterns to describe (api.*), repeatable or "
                                               "comma-separated; all if not given.")
@click.option("--exclude", multiple=True, help="Service name patterns to leave out, repeatable or comma-separated.")
@click.option("--tags", multiple=True, help="Only services with one of these tags, repeatable or comma-separated "
                                            "(public: all, as in Zato).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the document to this file (YAML if it ends in .yaml or .yml) instead of stdout.")
@click.option("--dir", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Zato's spelling: write openapi.json (or asyncapi.json) into this directory.")
@click.option("--delete-dir", is_flag=True, default=False, hidden=True)
@click.option("--with-internal", is_flag=True, default=False, hidden=True)
@click.option("--with-api-invoke", is_flag=True, default=False, hidden=True)
@click.option("--with-rest-channels", is_flag=True, default=False, hidden=True)
@click.option("--api-invoke-path", default=None, hidden=True)
@click.option("--file", "zato_file", default=None, hidden=True)
@click.option("--delete-file", is_flag=True, default=False, hidden=True)
@click.option("--verbose", "--store-log", "--store-config", "zato_base", is_flag=True, default=False, hidden=True)
def apispec_command(base_dir: str, format_: str, include: tuple[str, ...], exclude: tuple[str, ...],
                    tags: tuple[str, ...], output: str | None, out_dir: str | None, delete_dir: bool,
                    with_internal: bool, with_api_invoke: bool, with_rest_channels: bool,
                    api_invoke_path: str | None, zato_file: str | None, delete_file: bool, zato_base: bool) -> None:
    """ The OpenAPI (or AsyncAPI) document of the server running in BASE_DIR, from its live state. """
    from pathlib import Path
    from urllib.parse import urlencode

    from zato.cli import zato_note
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    if with_internal:
        zato_note("--with-internal", "ignored; every REST channel is described, whatever its service (the admin "
                                     "API's own routes are in /zato/api/openapi.json)")
    if with_api_invoke or api_invoke_path:
        zato_note("--with-api-invoke/--api-invoke-path", "ignored; there is no generic invoke endpoint for users "
                                                         "here (the admin API's invoke is in /zato/api/openapi.json)")
    if with_rest_channels:
        zato_note("--with-rest-channels", "ignored; REST channels are what the OpenAPI document describes")
    if zato_file and not output:
        output = zato_file  # Zato's `zato openapi --file`
    if delete_file:
        zato_note("--delete-file", "ignored; the file is replaced")
    query = [(key, value) for key, given in (("include", include), ("exclude", exclude), ("tags", tags))
             for value in split_patterns(given) or ()]
    path = (OPENAPI_PATH if format_ == "openapi" else ASYNCAPI_PATH) + (f"?{urlencode(query)}" if query else "")
    status, _, body = admin_request(server_paths(base_dir), "GET", path)
    if status >= 300:
        raise click.ClickException(describe_error(status, body))
    document = json.loads(body)
    if out_dir:
        target_dir = Path(out_dir)
        if delete_dir and target_dir.is_dir():
            import shutil
            shutil.rmtree(target_dir)
        target = target_dir / f"{format_}.json"
        _write(document, target)
        click.echo(f"Output saved to {target}", err=True)
    if output:
        _write(document, output)
        click.echo(f"Output saved to {output}", err=True)
    if not out_dir and not output:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@hookimpl
def register_cli_commands(cli):
    cli.add_command(apispec_command)
