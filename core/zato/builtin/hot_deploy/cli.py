""" `zato deploy BASE_DIR FILE` and `zato undeploy BASE_DIR FILE_NAME`: hot deployment from the
command line, through the admin API of the running server. """

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import click

from zato.builtin.hot_deploy.files import InvalidFileName, check_file_name


@click.command("deploy")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def deploy_command(base_dir: str, file: str) -> None:
    """ Deploy FILE (a .py file of services, or a file a plugin deploys, such as .bst) to the server
    running in BASE_DIR, without a restart.

    It is saved in the pickup directory under its own name. If it does not import, nothing
    changes, the error (file and line) is printed and the exit code is 1. """
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    paths = server_paths(base_dir)
    name = os.path.basename(file)
    try:
        check_file_name(name, None)  # the server says which suffixes its plugins deploy
    except InvalidFileName as exc:
        raise click.ClickException(str(exc)) from None
    source = Path(file).read_bytes()
    status, _, body = admin_request(paths, "POST", f"/zato/api/deploy/{quote(name)}", source,
                                    content_type="text/x-python")
    if status != 200:
        raise click.ClickException(describe_error(status, body))
    result = json.loads(body)
    services = ", ".join(result["services"]) or "no services"
    if result["unchanged"]:
        click.echo(f"{name} is already deployed with this content: {services}")
        return
    click.echo(f"deployed {name} in {result['took_ms']:.1f} ms: {services}")
    if result["undeployed"]:
        click.echo(f"undeployed (no longer in {name}): {', '.join(result['undeployed'])}")


@click.command("undeploy")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("file_name")
def undeploy_command(base_dir: str, file_name: str) -> None:
    """ Undeploy the services of FILE_NAME (e.g. my_services.py) and remove it from the pickup
    directory of the server running in BASE_DIR. """
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    paths = server_paths(base_dir)
    try:
        check_file_name(file_name, None)
    except InvalidFileName as exc:
        raise click.ClickException(str(exc)) from None
    status, _, body = admin_request(paths, "DELETE", f"/zato/api/deploy/{quote(file_name)}")
    if status != 200:
        raise click.ClickException(describe_error(status, body))
    names = json.loads(body)["undeployed"]
    click.echo(f"undeployed {file_name}: {', '.join(names) or 'no services'}")
