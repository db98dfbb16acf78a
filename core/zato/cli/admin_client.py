""" Calling a local server's admin API from the command line, with the token the server wrote to
work/cli-token (no admin password needed on the same machine, for the same user).

The public home of the CLI's admin client: the `zato` command and every plugin's commands
(`register_cli_commands`) use it::

    from zato.cli.admin_client import admin_request, describe_error, server_paths

    status, _, body = admin_request(server_paths(base_dir), "GET", "/zato/api/scheduler/jobs")
    if status >= 300:
        raise click.ClickException(describe_error(status, body))
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click


# Sent as "true" to admin invoke: a 500 then says what the service raised (type, message, file:line)
# besides the cid; the essentials plugin's admin_invoke reads it (the core imports no plugin).
ERROR_DETAILS_HEADER = "X-Zato-Error-Details"


def server_paths(base_dir: str) -> Any:
    """ The `zato.server.server.ServerPaths` of a server directory, or a `click.ClickException`
    saying how to create one. """
    from zato.server.server import ServerPaths
    paths = ServerPaths(base_dir)
    if not paths.server_conf.exists():
        raise click.ClickException(
            f"{paths.base_dir} is not a server directory ({paths.server_conf} is missing); "
            f"create one with `zato quickstart create {base_dir}`")
    return paths


def admin_request(paths: Any, method: str, path: str, body: bytes | None = None,
                  content_type: str = "application/json", timeout: float = 60.0,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """ (status, headers, body) of one admin API call to the server running in `paths`;
    `headers` are sent as well. """
    from zato.server.server import read_cli_token, read_runtime_file
    info = read_runtime_file(paths)
    token = read_cli_token(paths)
    if not info or not token:
        raise click.ClickException(f"no server is running in {paths.base_dir}; start it with `zato start {paths.base_dir}`")
    request = urllib.request.Request(info["address"] + path, data=body, method=method)
    request.add_header("X-Zato-CLI-Token", token)
    request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError as exc:
        raise click.ClickException(f"cannot reach the server at {info['address']}: {exc}") from None


def describe_error(status: int, body: bytes) -> str:
    """ One line (plus one per listed error) saying what an admin API call's error reply said. """
    try:
        data = json.loads(body)
        details = data.get("details", "")
        errors = data.get("errors")
        where = (data.get("exception") or {}).get("where")
        if where:  # admin invoke, asked for details: where the service raised
            details += f" (at {where})"
        if errors:
            details += "\n" + "\n".join(f"  {e.get('name', e.get('file', '?'))}: {e.get('error', e)}" for e in errors)
        return f"HTTP {status} (cid {data.get('cid', '?')}): {details}"
    except (ValueError, AttributeError):
        return f"HTTP {status}: {body[:500].decode('utf-8', 'replace')}"


__all__ = ["ERROR_DETAILS_HEADER", "admin_request", "describe_error", "server_paths"]
