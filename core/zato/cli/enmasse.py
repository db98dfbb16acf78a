""" `zato enmasse`: import and export a server's configuration objects as YAML (zato.enmasse).

    zato enmasse import DIR FILE.yaml [--dry-run] [--delete-missing]
    zato enmasse export DIR [--secrets omit|env] [--format ours|zato] > FILE.yaml

Zato's spelling works too, for scripts written for Zato 3.2:

    zato enmasse DIR --import --input FILE.yaml [--replace-odb-objects]
    zato enmasse DIR --export [--output FILE.yaml]      (Zato's format)
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
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


ZATO_STYLE = "zato-style"  # the hidden command that Zato's spelling (`zato enmasse DIR --import`) runs
ZATO_ACTIONS = ("--import", "--export", "--export-odb")


class _EnmasseGroup(click.Group):
    """ Our subcommands, and Zato's spelling, whose first argument is the server directory. """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        zato_style = bool(args) and args[0] not in self.commands and (
            not args[0].startswith("-") or any(arg in ZATO_ACTIONS for arg in args))
        return super().parse_args(ctx, [ZATO_STYLE, *args] if zato_style else args)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] == ZATO_STYLE:  # named as typed: "Try 'zato enmasse DIR --help'"
            return "DIR", self.commands[ZATO_STYLE], args[1:]
        return super().resolve_command(ctx, args)


class _ZatoStyleCommand(click.Command):
    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("zato enmasse", "DIR --import --input FILE [--replace-odb-objects] | "
                                              "DIR --export [--output FILE]")


@click.group(cls=_EnmasseGroup)
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
    server reloads the changed objects in every worker. FILE may be in Zato 3.2's enmasse format
    (http_soap, def_sec, ...): Zato-only fields are reported and ignored. """
    _import(base_dir, file, dry_run=dry_run, delete_missing=delete_missing)


def _import(base_dir: str, file: str, *, dry_run: bool = False, delete_missing: bool = False,
            refuse_updates: bool = False) -> None:
    """ `refuse_updates`: Zato's import without --replace-odb-objects, which refuses to change
    objects that exist already (an identical one is fine: importing twice changes nothing). """
    from zato.enmasse import UPDATE, EnmasseError, apply_plan, plan_import

    store = _open_store(base_dir)
    try:
        try:
            plan = plan_import(store, file, delete_missing=delete_missing, shown=file)
        except EnmasseError as exc:
            _fail(exc.problems)
        for note in plan.notes:
            click.echo(f"note: {note}")
        type_width = max((len(step.object_type) for step in plan.steps), default=0)
        for step in plan.steps:
            click.echo(step.describe(type_width))
        for warning in plan.warnings:
            click.echo(f"warning: {warning}", err=True)
        updates = [step for step in plan.steps if step.action == UPDATE]
        if refuse_updates and updates:
            for step in updates:
                click.echo(f"{file}:{step.line}: {step.object_type} {step.name!r} already exists and differs "
                           f"({', '.join(step.changed)})", err=True)
            click.echo(f"{len(updates)} object(s) already exist; add --replace-odb-objects to update them (as in "
                       f"Zato), or use `zato enmasse import {base_dir} {file}`; nothing was changed", err=True)
            raise SystemExit(EXIT_PROBLEMS)
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
@click.option("--format", "export_format", type=click.Choice(["ours", "zato"]), default="ours", show_default=True,
              help="ours: our type and field names; zato: Zato 3.2's enmasse keys and field names, for Zato to "
                   "import (types Zato has no counterpart of are left out, with a warning).")
def export_command(base_dir: str, secrets_mode: str, export_format: str) -> None:
    """ Write every configuration object of the server in BASE_DIR to stdout as enmasse YAML. """
    _export(base_dir, secrets_mode, export_format, None)


def _export(base_dir: str, secrets_mode: str, export_format: str, output: str | None) -> None:
    """ The export to stdout, or to `output`; what the user should know goes to stderr. """
    from zato.enmasse import EnmasseError, export_config

    store = _open_store(base_dir)
    try:
        result = export_config(store, secrets=secrets_mode, format=export_format)
    except EnmasseError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    if output is None:
        click.echo(result.text, nl=False)
    else:
        try:
            with open(output, "w", encoding="utf-8") as file:
                file.write(result.text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        click.echo(f"exported to {output}", err=True)
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


# ################################################################################################
# Zato's spelling: zato enmasse DIR --import --input FILE / --export [--output FILE]

# Zato's options that have no counterpart here -> what to use instead
ZATO_UNSUPPORTED = {
    "export_local": "--export-local (merging local files) is Zato's and not supported here; the file you import is "
                    "the one source, see `zato enmasse import --help`",
    "clean_odb": "--clean-odb is Zato's and not supported here; `zato enmasse import DIR FILE --delete-missing` "
                 "deletes the objects of the file's types that the file does not hold",
    "include_type": "--include-type is Zato's and not supported here; `zato enmasse export DIR` writes every object",
    "include_name": "--include-name is Zato's and not supported here; `zato enmasse export DIR` writes every object",
    "ignore_missing_defs": "--ignore-missing-defs is Zato's and not supported here; a file naming objects that exist "
                           "neither in it nor in the database is refused, with the object and field to fix",
    "env_file": "--env-file is Zato's and not supported here; set the variables in the environment of the server "
                "(a $NAME value is read from it)",
    "server_url": "--server-url is Zato's and not supported here: enmasse works on the server directory, and a "
                  "running server reloads what changed",
    "rbac_sleep": "--rbac-sleep is Zato's and not supported here: there are no RBAC objects",
    "cols_width": "--cols-width is Zato's and not supported here: problems are printed one a line",
}


@enmasse.command(ZATO_STYLE, cls=_ZatoStyleCommand, hidden=True)
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--import", "do_import", is_flag=True, help="Import --input FILE (Zato's spelling).")
@click.option("--export", "--export-odb", "do_export", is_flag=True, help="Export, in Zato's format, to --output FILE.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False), help="The file to import.")
@click.option("--output", "output_file", type=click.Path(dir_okay=False),
              help="The file to export to (default, as in Zato: zato-export-<time>.yml here).")
@click.option("--replace-odb-objects", "--replace", "replace", is_flag=True,
              help="Update objects that exist already (without it they are refused, as in Zato).")
@click.option("--format", "--dump-format", "dump_format", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("--exit-on-missing-file", is_flag=True, help="If --input does not exist, exit with status 0.")
@click.option("--export-local", is_flag=True, hidden=True)
@click.option("--clean-odb", is_flag=True, hidden=True)
@click.option("--include-type", hidden=True)
@click.option("--include-name", hidden=True)
@click.option("--ignore-missing-defs", is_flag=True, hidden=True)
@click.option("--env-file", hidden=True)
@click.option("--server-url", hidden=True)
@click.option("--rbac-sleep", hidden=True)
@click.option("--cols-width", hidden=True)
def zato_style_command(base_dir: str, do_import: bool, do_export: bool, input_file: str | None,
                       output_file: str | None, replace: bool, dump_format: str, exit_on_missing_file: bool,
                       **unsupported: Any) -> None:
    """ Zato's `zato enmasse DIR --import --input FILE` and `--export`. """
    for option, given in unsupported.items():
        if given not in (None, False) and not (option in ("include_type", "include_name") and given == "all"):
            raise click.UsageError(ZATO_UNSUPPORTED[option])
    if do_import == do_export:
        raise click.UsageError("give one of --import (with --input FILE) or --export (Zato's spelling), or use "
                               "`zato enmasse import DIR FILE` / `zato enmasse export DIR`")
    if dump_format == "json":
        raise click.UsageError("--format json is Zato's and not supported here: enmasse files are YAML")
    if do_import:
        if not input_file:
            raise click.UsageError("--import needs --input FILE, the file to import")
        if not os.path.exists(input_file):
            if exit_on_missing_file:
                click.echo(f"{input_file} does not exist; nothing to import (--exit-on-missing-file)")
                return
            raise click.UsageError(f"--input {input_file}: no such file")
        _import(base_dir, input_file, refuse_updates=not replace)
        return
    if replace or input_file:
        raise click.UsageError("--replace-odb-objects and --input go with --import, not --export")
    output = output_file or "zato-export-{}.yml".format(re.sub("[.:]", "_", datetime.now().isoformat()))
    _export(base_dir, "omit", "zato", output)
