""" `zato enmasse`: import and export a server's configuration objects as YAML (zato.enmasse).

    zato enmasse import DIR FILE.yaml [--dry-run] [--delete-missing]
    zato enmasse export DIR [--secrets omit|env] > FILE.yaml
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

EXIT_PROBLEMS = 1


def _open_store(base_dir: str) -> Any:
    from zato.config import ConfigError
    from zato.enmasse import ServerConfigStore
    from zato.plugins import PluginLoadError
    from zato.registry import RegistrationError
    try:
        return ServerConfigStore(base_dir)
    except (FileNotFoundError, ConfigError, PluginLoadError, RegistrationError) as exc:
        raise click.ClickException(str(exc)) from None


def _fail(problems: list[Any]) -> NoReturn:
    for problem in problems:
        click.echo(str(problem), err=True)
    count = len(problems)
    click.echo(f"{count} problem{'s' if count != 1 else ''}; nothing was changed", err=True)
    raise SystemExit(EXIT_PROBLEMS)


@click.group()
def enmasse() -> None:
    """ Configuration as code: a server's objects (security, REST channels, every plugin's types)
    imported from and exported to one YAML file. """


@enmasse.command("import")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan (create / update / delete / unchanged) and change nothing.")
@click.option("--delete-missing", is_flag=True,
              help="Delete objects of the types the file holds that are not in the file.")
def import_command(base_dir: str, file: str, dry_run: bool, delete_missing: bool) -> None:
    """ Import FILE into the server in BASE_DIR: all of it or, on any problem, nothing. A running
    server reloads the changed objects in every worker. """
    from zato.enmasse import EnmasseError, apply_plan, plan_import

    store = _open_store(base_dir)
    try:
        try:
            plan = plan_import(store, file, delete_missing=delete_missing, shown=file)
        except EnmasseError as exc:
            _fail(exc.problems)
        type_width = max((len(step.object_type) for step in plan.steps), default=0)
        for step in plan.steps:
            click.echo(step.describe(type_width))
        if dry_run:
            click.echo(f"dry run: {plan.summary()}; nothing was changed")
            return
        if not plan.changes:
            click.echo(f"nothing to change: {plan.summary(done=True)}")
            return
        try:
            apply_plan(store, plan)
        except EnmasseError as exc:
            _fail(exc.problems)
        click.echo(f"imported: {plan.summary(done=True)}")
        _reload_running_server(store.paths, plan.changed_types)
    finally:
        store.close()


def _reload_running_server(paths: Any, types: list[str]) -> None:
    """ Tells a server running in the directory to re-read the changed types in every worker. """
    from zato.cli.admin_client import admin_request, describe_error
    from zato.server.main import pid_alive
    from zato.server.server import read_runtime_file

    info = read_runtime_file(paths) or {}
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid):
        click.echo(f"no server is running in {paths.base_dir}; it uses the changes when it starts")
        return
    address = info.get("address", "?")
    try:
        status, _, body = admin_request(paths, "POST", "/zato/api/config/reload",
                                        json.dumps({"types": types}).encode(), timeout=30)
    except click.ClickException as exc:
        click.echo(f"warning: the server in {paths.base_dir} (pid {pid}, {address}) did not answer ({exc.message}); "
                   f"it uses the changes when it starts", err=True)
        return
    if status != 200:
        raise click.ClickException(
            f"the configuration database was changed, but the server at {address} could not reload it: "
            f"{describe_error(status, body)}. Restart it (`zato stop {paths.base_dir}`, then `zato start`)")
    click.echo(f"the server running at {address} reloaded {', '.join(types)} (every worker is notified)")


@enmasse.command("export")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--secrets", "secrets_mode", type=click.Choice(["omit", "env"]), default="omit", show_default=True,
              help="omit: leave secrets out (a comment names them); env: write them as $ZATO_SECRET_... "
                   "references and list the variables on stderr. Never in clear.")
def export_command(base_dir: str, secrets_mode: str) -> None:
    """ Write every configuration object of the server in BASE_DIR to stdout as enmasse YAML. """
    from zato.enmasse import EnmasseError, export_config

    store = _open_store(base_dir)
    try:
        result = export_config(store, secrets=secrets_mode)
    except EnmasseError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(result.text, nl=False)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.omitted:
        click.echo("secrets left out (set them after importing, or export with --secrets env):", err=True)
        for where in result.omitted:
            click.echo(f"  {where}", err=True)
    if result.variables:
        click.echo("the file names these environment variables; set them on the server that imports it:", err=True)
        for variable, where in result.variables:
            click.echo(f"  {variable}  ({where})", err=True)
