""" zato-plugin-testdist: a test plugin that contributes one internal service and one CLI command. """

from __future__ import annotations

import click

from zato import hookimpl

# What `zato testdist-hello` prints; tests/packaging/test_wheels.py looks for it.
CLI_GREETING = "hello from zato-plugin-testdist"


@hookimpl
def register_internal_services(register):
    register("zato_plugin_testdist.services")


@hookimpl
def register_cli_commands(cli):
    @cli.command("testdist-hello")
    def testdist_hello() -> None:
        """ Print a greeting from the testdist plugin. """
        click.echo(CLI_GREETING)
